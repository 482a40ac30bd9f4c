//! Relayed video: the owner encodes a channel once, and every instance that relays the
//! channel fans out the owner's H.264 chunks to its own video viewers (WebSocket video and
//! WebRTC alike) instead of encoding the relayed JPEG frames again.
//!
//! At a subscriber, a relayed channel's pipeline ([`VideoPipeline::relayed`]) is fed from the
//! owner's video subject for as long as it has subscribers: the feed renumbers each chunk as
//! the relayed frame of the same picture (so input maps through this instance's frames) and
//! forwards the pipeline's keyframe requests to the owner, at most one per
//! [`KEYFRAME_COALESCE`]. At the owner, the first request for a channel admits a second relay
//! viewer, in video mode, whose messages go to the video subject; leases that say `video`
//! keep it, and it leaves when none did for a lease expiry.
//!
//! Owns: the feeds (which channel's pipeline is fed, the frame numbers that map its chunks),
//! the owner's video relay viewers and their leases. Must not encode (the owner's pipeline
//! does) nor touch sockets: chunks go through the pipeline's ring, as encoded ones do.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use async_nats::{Client, Message};
use futures_util::StreamExt;

use super::config::LEASE_MISSES;
use super::wire::{
    self, ChannelSubjects, KeyRequest, VideoText, KIND_BINARY, KIND_HEADER, KIND_TEXT,
};
use super::Relay;
use crate::codec::pipeline::{FedChunk, KeyReason, VideoPipeline, KEYFRAME_COALESCE};
use crate::codec::VideoConfig;
use crate::host::LogLevel;
use crate::protocol::Mode;
use crate::registry::{lock, ChannelId, JoinOptions, Transport, ViewerCloser};
use crate::viewer::serve_relay;

/// Relayed frames whose numbers a feed keeps to place chunks (about 4 s at 30 fps).
const FRAME_NUMBERS: usize = 128;
/// How long a feed waits for the owner's first keyframe before its viewers go back to JPEG.
const FIRST_KEYFRAME_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The offer an owner's video relay viewer makes for its instance's encoder: H.264, which
/// every subscriber's viewers were offered (a subscriber checks its viewers' codecs itself).
const VIDEO_OFFER: &str = r#"{"type":"config","video":{"codecs":["avc1.42E01F"]}}"#;

/// One relayed channel's feed at a subscriber.
struct Feed {
    pipeline: Weak<VideoPipeline>,
    /// (owner's frame number, this instance's frame number, its ordinal), oldest first.
    frames: VecDeque<(u64, u64, u64)>,
}

/// The video of one channel the owner publishes.
pub(super) struct HeldVideo {
    closer: Arc<ViewerCloser>,
    /// Subscribing instance → when it last said it wants video.
    leases: HashMap<String, Instant>,
}

/// A relay's video state: its feeds as a subscriber, its video relay viewers as an owner.
#[derive(Default)]
pub(super) struct RelayVideo {
    feeds: Mutex<HashMap<String, Feed>>,
    held: Mutex<HashMap<String, HeldVideo>>,
}

impl Relay {
    /// Feeds `pipeline`, the video of relayed channel `key`, from the owner's video until the
    /// pipeline ends (its last subscriber left) or the feed does (the owner has no video for
    /// it, the bus client closed); then the pipeline is ended, and its viewers go back to
    /// JPEG.
    pub fn start_video_feed(self: &Arc<Self>, key: &str, pipeline: &Arc<VideoPipeline>) {
        lock(&self.video.feeds).insert(
            key.to_string(),
            Feed {
                pipeline: Arc::downgrade(pipeline),
                frames: VecDeque::new(),
            },
        );
        let relay = self.clone();
        let key = key.to_string();
        let pipeline = pipeline.clone();
        self.runtime.spawn(async move {
            feed(&relay, &key, &pipeline).await;
            pipeline.end();
            let mut feeds = lock(&relay.video.feeds);
            if feeds
                .get(&key)
                .is_some_and(|feed| feed.pipeline.ptr_eq(&Arc::downgrade(&pipeline)))
            {
                feeds.remove(&key);
            }
        });
    }

    /// Whether this instance has video viewers of relayed channel `key` (its leases say so).
    pub(super) fn wants_video(&self, key: &str) -> bool {
        lock(&self.video.feeds)
            .get(key)
            .and_then(|feed| feed.pipeline.upgrade())
            .is_some_and(|pipeline| !pipeline.is_ended())
    }

    /// The owner's frame `owner_seq` of `key` was pushed here as frame `seq` (ordinal
    /// `index`): a chunk of that picture is shown as that frame.
    pub(super) fn relayed_frame_number(&self, key: &str, owner_seq: u64, seq: u64, index: u64) {
        if let Some(feed) = lock(&self.video.feeds).get_mut(key) {
            if feed.frames.len() == FRAME_NUMBERS {
                feed.frames.pop_front();
            }
            feed.frames.push_back((owner_seq, seq, index));
        }
    }

    /// This instance's frame for the owner's frame `owner_seq`: the relayed frame of that
    /// picture, or the newest relayed before it (same geometry unless that very frame changed
    /// it).
    fn local_frame(&self, key: &str, owner_seq: u64) -> Option<(u64, u64)> {
        let feeds = lock(&self.video.feeds);
        let feed = feeds.get(key)?;
        feed.frames
            .iter()
            .rev()
            .find(|(owner, _, _)| *owner <= owner_seq)
            .map(|(_, seq, index)| (*seq, *index))
    }
}

/// Runs one feed until the pipeline or the stream ends.
async fn feed(relay: &Arc<Relay>, key: &str, pipeline: &Arc<VideoPipeline>) {
    let Some(client) = relay.client().await else {
        return;
    };
    let subjects = ChannelSubjects::new(&relay.config.subject_prefix, key);
    let Ok(mut video) = client.subscribe(subjects.video.clone()).await else {
        return;
    };
    let mut config: Option<VideoConfig> = None;
    // Since when a keyframe is awaited (`None`: one came): at the start, after a silence, and
    // from a new owner.
    let mut awaiting_key = Some(tokio::time::Instant::now());
    // When the last chunk came: a video that went silent for a lease expiry may have been let
    // go by the owner (its video relay viewer closed, the owner's session restarted).
    let mut last_chunk = tokio::time::Instant::now();
    let silence = relay.config.lease_interval * LEASE_MISSES;
    // Keyframe requests: one forwarded per `KEYFRAME_COALESCE`, the rest merged into it.
    let mut pending: Option<KeyReason> = Some(KeyReason::Join);
    let mut next_forward = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(relay.config.lease_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut owner = relay.followed_owner(key);
    loop {
        tokio::select! {
            message = video.next() => {
                let Some(message) = message else { return };
                match read(relay, key, &message, &mut config) {
                    Read::Chunk(chunk) if relay.registry().is_some_and(|registry| registry.is_private(key)) => {
                        // Private here: nothing of the page leaves. The owner's video still
                        // runs (it is not silent, nor without keyframes); the gap it leaves is
                        // one of lost chunks, after which the pipeline waits for a keyframe.
                        if chunk.key {
                            awaiting_key = None;
                        }
                        last_chunk = tokio::time::Instant::now();
                    }
                    Read::Chunk(chunk) => {
                        if chunk.key {
                            awaiting_key = None;
                        }
                        last_chunk = tokio::time::Instant::now();
                        if !pipeline.feed(chunk) {
                            return;
                        }
                        relay.counters.chunks_relayed.fetch_add(1, Ordering::Relaxed);
                    }
                    Read::Unavailable => {
                        relay.log(
                            LogLevel::Warn,
                            format!("relay: {key}: the owner has no video for it; its viewers here get JPEG"),
                        );
                        return;
                    }
                    Read::Nothing => {}
                }
            }
            reason = pipeline.key_request(), if pending.is_none() => {
                let Some(reason) = reason else { return };
                pending = Some(reason);
            }
            _ = tokio::time::sleep_until(next_forward), if pending.is_some() => {
                if let Some(reason) = pending.take() {
                    if forward_key_request(relay, &client, &subjects, key, reason).await {
                        next_forward = tokio::time::Instant::now() + KEYFRAME_COALESCE;
                    } else {
                        // No owner followed now: asked again once one is.
                        pending = Some(reason);
                        next_forward = tokio::time::Instant::now() + relay.config.lease_interval;
                    }
                }
            }
            _ = tick.tick() => {
                let Some(registry) = relay.registry() else { return };
                // Its viewers left, or the browser is here now (a local encoder serves the
                // viewers that ask again). A new session still looking its browser up, or
                // between sessions, keeps the feed.
                let gone = registry.channel(key).is_none() || registry.has_local_source(key);
                if pipeline.is_ended() || gone {
                    return;
                }
                // A new owner publishes nothing until asked; its stream starts at a keyframe.
                let now = tokio::time::Instant::now();
                let now_following = relay.followed_owner(key);
                if now_following != owner {
                    owner = now_following;
                    awaiting_key = Some(now);
                }
                if owner.is_none() {
                    // No owner to ask (lost, not found yet): its wait does not count.
                    awaiting_key = awaiting_key.map(|_| now);
                }
                if awaiting_key.is_none() && now.duration_since(last_chunk) >= silence {
                    // A still page sends nothing, but so does an owner that let the video go:
                    // one keyframe says which (and costs one picture per silence).
                    awaiting_key = Some(now);
                }
                if let Some(since) = awaiting_key {
                    if now.duration_since(since) >= FIRST_KEYFRAME_WAIT {
                        // No owner sends this channel's video (an older one, or one that
                        // refuses another viewer): its viewers are told and go back to JPEG.
                        relay.log(
                            LogLevel::Warn,
                            format!("relay: {key}: no video came from the owner; its viewers here get JPEG"),
                        );
                        return;
                    }
                    // A request may have gone before the owner's video could start (the owner
                    // still being found, the bus away): asked again until a keyframe came.
                    if pending.is_none() {
                        pending = Some(KeyReason::Join);
                    }
                }
            }
        }
    }
}

/// What a message of the owner's video gives the feed.
enum Read {
    Chunk(FedChunk),
    Unavailable,
    Nothing,
}

fn read(relay: &Relay, key: &str, message: &Message, config: &mut Option<VideoConfig>) -> Read {
    let kind = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(KIND_HEADER))
        .map(|kind| kind.as_str());
    match kind {
        Some(KIND_TEXT) => match wire::read_video_text(&message.payload) {
            VideoText::Config(new) => {
                *config = Some(new);
                Read::Nothing
            }
            VideoText::Unavailable => Read::Unavailable,
            VideoText::Other => Read::Nothing,
        },
        Some(KIND_BINARY) => {
            let Some(chunk) = wire::read_chunk(&message.payload) else {
                return Read::Nothing;
            };
            // Without its configuration, or a frame here to show it as, a chunk is of no use
            // (its gap makes the pipeline wait for the next keyframe).
            let Some(config) = config.as_ref() else {
                return Read::Nothing;
            };
            let local = relay.local_frame(key, chunk.seq).or_else(|| {
                let registry = relay.registry()?;
                let frame = registry.channel(key)?.latest_frame()?;
                Some((frame.seq, frame.index))
            });
            let Some((seq, index)) = local else {
                return Read::Nothing;
            };
            Read::Chunk(FedChunk {
                number: chunk.number,
                key: chunk.key,
                config: VideoConfig {
                    codec: config.codec.clone(),
                    width: config.width,
                    height: config.height,
                },
                seq,
                index,
                header: chunk.header,
                body: chunk.body,
            })
        }
        _ => Read::Nothing,
    }
}

/// Asks the owner this instance follows for a keyframe (which starts its video for the
/// channel if it does not publish it yet). False when no owner is followed now.
async fn forward_key_request(
    relay: &Relay,
    client: &Client,
    subjects: &ChannelSubjects,
    key: &str,
    reason: KeyReason,
) -> bool {
    let Some(owner) = relay.followed_owner(key) else {
        return false;
    };
    let request = KeyRequest {
        key: key.to_string(),
        instance: relay.instance.clone(),
        owner,
        reason: reason.into(),
    };
    let Ok(json) = serde_json::to_vec(&request) else {
        return false;
    };
    client
        .publish(subjects.key.clone(), json.into())
        .await
        .is_ok()
}

/// At the owner: answers keyframe requests for the channels it streams, starting their video
/// relay viewer when none runs, for as long as the subscription lives.
pub(super) async fn serve_key_requests(
    relay: Arc<Relay>,
    client: Client,
    mut requests: async_nats::Subscriber,
) {
    while let Some(message) = requests.next().await {
        let Ok(request) = serde_json::from_slice::<KeyRequest>(&message.payload) else {
            continue;
        };
        if request.owner != relay.instance
            || ChannelSubjects::new(&relay.config.subject_prefix, &request.key).key
                != message.subject.as_str()
        {
            continue;
        }
        // Only for a channel streamed to that instance: a request is no way to start one.
        if !relay.holds_lease(&request.key, &request.instance) {
            continue;
        }
        let Some(registry) = relay.registry() else {
            return;
        };
        let Ok(id) = ChannelId::from_key(&request.key) else {
            continue;
        };
        let video_subject = ChannelSubjects::new(&relay.config.subject_prefix, &request.key).video;
        if !registry.config().video {
            // Said to each asker (a feed that joins later must learn it too), and no video
            // relay viewer is started for nothing.
            let refusal = crate::protocol::error_message(
                "video_unavailable",
                "the instance with the browser does not send video",
            );
            publish_text(&client, &video_subject, refusal).await;
            continue;
        }
        renew_video(&relay, &request.key, &request.instance);
        if !publishing(&relay, &request.key) {
            start_video_viewer(&relay, &client, &registry, &id, &request.instance);
        }
        if let Some(pipeline) = registry
            .channel(&request.key)
            .and_then(|channel| channel.video_pipeline())
        {
            // A feed that joins a running video has missed its `video-config` (the video relay
            // viewer sends it only when it changes): said again before the keyframe asked for.
            if let Some(config) = pipeline.config() {
                publish_text(&client, &video_subject, config.message()).await;
            }
            pipeline.request_key(request.reason.into());
        }
    }
}

/// Publishes a TEXT message on a channel's video subject, as its video relay viewer would.
async fn publish_text(client: &Client, subject: &str, text: String) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(KIND_HEADER, KIND_TEXT);
    let _ = client
        .publish_with_headers(subject.to_string(), headers, text.into())
        .await;
}

/// Whether the owner publishes `key`'s video now.
fn publishing(relay: &Relay, key: &str) -> bool {
    lock(&relay.video.held)
        .get(key)
        .is_some_and(|held| !held.closer.is_cancelled())
}

/// `instance` wants `key`'s video (a request, or a lease that says so).
pub(super) fn renew_video(relay: &Relay, key: &str, instance: &str) {
    if let Some(held) = lock(&relay.video.held).get_mut(key) {
        held.leases.insert(instance.to_string(), Instant::now());
    }
}

/// Admits the video relay viewer of `id`: a viewer of the owner's own registry that asks for
/// video as a client would, and whose messages go to the channel's video subject.
fn start_video_viewer(
    relay: &Arc<Relay>,
    client: &Client,
    registry: &Arc<crate::registry::Registry>,
    id: &ChannelId,
    instance: &str,
) {
    let join = JoinOptions {
        mode: Mode::Extended,
        can_control: false,
        send_connected: false,
    };
    let slot = match registry.admit_with(id, Transport::Relay, join) {
        Ok(slot) => slot,
        Err(refused) => {
            relay.log(
                LogLevel::Warn,
                format!("relay: {}: cannot stream its video: {refused}", id.key),
            );
            return;
        }
    };
    // Asked as a client does: video off here, or an encoder that cannot start, is answered
    // with its documented error, which the subscriber's feed reads.
    registry.on_client_text(&slot.channel, &slot.link, VIDEO_OFFER);
    let closer = slot.closer.clone();
    let out = Arc::new(super::owner::BusOut::new(
        relay.clone(),
        client.clone(),
        ChannelSubjects::new(&relay.config.subject_prefix, &id.key).video,
    ));
    relay
        .runtime
        .spawn(serve_relay(registry.clone(), slot, out));
    relay
        .counters
        .video_streams_started
        .fetch_add(1, Ordering::Relaxed);
    let previous = lock(&relay.video.held).insert(
        id.key.clone(),
        HeldVideo {
            closer,
            leases: HashMap::from([(instance.to_string(), Instant::now())]),
        },
    );
    if let Some(previous) = previous {
        previous.closer.close(1000, "replaced");
    }
}

/// Lets go of the videos nobody asked for within `expiry`, and of those of channels no longer
/// streamed (`streamed` says which are).
pub(super) fn sweep_video(
    relay: &Relay,
    expiry: std::time::Duration,
    streamed: impl Fn(&str) -> bool,
) {
    let now = Instant::now();
    let mut released = Vec::new();
    lock(&relay.video.held).retain(|key, held| {
        held.leases
            .retain(|_, renewed| now.duration_since(*renewed) < expiry);
        let keep = !held.leases.is_empty() && !held.closer.is_cancelled() && streamed(key);
        if !keep {
            released.push(held.closer.clone());
        }
        keep
    });
    for closer in released {
        closer.close(1000, "no video subscriber");
    }
}

/// Video relay viewers running now.
pub(super) fn video_streaming(relay: &Relay) -> usize {
    lock(&relay.video.held)
        .values()
        .filter(|held| !held.closer.is_cancelled())
        .count()
}

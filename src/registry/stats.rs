//! Counters and snapshots: registry totals, and the stats of each channel and viewer.
//! Must not change state: it only reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{lock, Channel, ChannelId, Registry, SourceState, Transport};
use crate::codec::pipeline::PipelineStats;
use crate::frame::FrameMeta;
use crate::protocol::Mode;

/// The one list of a channel's counters (an X-macro: `$m` gets every row and expands it its own
/// way): `ChannelCounters` and `CounterSnapshot` here, the JS `ChannelStats` in `node`. Adding
/// a counter is one row here, plus the place that bumps it.
macro_rules! for_channel_counters {
    ($m:ident) => {
        $m! {
            #[doc = "Frames accepted from the source."]
            frames_in,
            #[doc = "Payloads refused as frames (not base64 images)."]
            frames_rejected,
            #[doc = "Pushes for a stale generation or an idle channel, ignored."]
            frames_stale,
            #[doc = "Frames dropped unseen while the channel was private (`setPrivacy`)."]
            frames_withheld,
            #[doc = "Bytes of accepted frames."]
            bytes_in,
            #[doc = "Client messages that failed validation (ignored in compat mode)."]
            malformed_messages,
            #[doc = "Inputs handed to the page."]
            inputs_relayed,
            #[doc = "Inputs dropped because the channel's input queue was full."]
            inputs_dropped,
            #[doc = "Inputs the page (toolset or DevTools) failed to apply."]
            inputs_failed,
            #[doc = "Inputs refused: not the controller, or a view-only viewer."]
            inputs_refused,
            #[doc = "Client messages over a viewer's rate limit, or refused by a full input queue."]
            inputs_rate_limited,
            #[doc = "Mouse moves replaced by a later move, or dropped to make room."]
            moves_coalesced,
            #[doc = "Viewers' replies to agent events handed to `onViewerReply`."]
            replies,
            #[doc = "Frames written to viewers of this channel that have left."]
            frames_sent_departed,
            #[doc = "Source starts requested."]
            starts,
            #[doc = "Source stops requested."]
            stops,
            #[doc = "Refinement screenshots asked of the source for the JPEG viewers of a quiet page."]
            jpeg_refinements,
        }
    };
}
pub(crate) use for_channel_counters;

/// The one list of the registry's lifetime totals (channels come and go; these do not); an
/// X-macro like `for_channel_counters`.
macro_rules! for_registry_totals {
    ($m:ident) => {
        $m! {
            #[doc = "Source starts requested since creation."]
            starts,
            #[doc = "Source stops requested since creation."]
            stops,
            #[doc = "Viewers admitted since creation."]
            viewers_admitted,
            #[doc = "Viewers gone since creation."]
            viewers_closed,
            #[doc = "Admissions refused by a limit."]
            admissions_refused,
            #[doc = "Of those: the registry was closed."]
            refused_closed,
            #[doc = "Of those: `maxViewersTotal`."]
            refused_viewers_total,
            #[doc = "Of those: `maxAgents`."]
            refused_agents,
            #[doc = "Of those: `maxViewersPerAgent`."]
            refused_viewers_per_agent,
        }
    };
}
pub(crate) use for_registry_totals;

/// Declares a set of atomic counters and its plain snapshot from one of the lists above.
macro_rules! counters_with_snapshot {
    ($counters:ident, $snapshot:ident, $what:literal; $( $(#[doc = $doc:tt])* $name:ident, )*) => {
        #[doc = concat!("Counters of ", $what, ", bumped where each event happens.")]
        #[derive(Debug, Default)]
        pub struct $counters {
            $( $(#[doc = $doc])* pub $name: AtomicU64, )*
        }

        #[doc = concat!("Counters of ", $what, ", read at one moment.")]
        #[derive(Debug, Clone, Default)]
        pub struct $snapshot {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl $counters {
            /// Adds every counter's value now to `into`'s.
            #[allow(dead_code)] // Used for channels only.
            pub fn add_to(&self, into: &Self) {
                $( into.$name.fetch_add(self.$name.load(Ordering::Relaxed), Ordering::Relaxed); )*
            }

            /// Every counter's value now (each read on its own: a snapshot, not a transaction).
            pub fn snapshot(&self) -> $snapshot {
                $snapshot {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                }
            }
        }
    };
}

macro_rules! channel_counters {
    ($($rows:tt)*) => {
        counters_with_snapshot!(ChannelCounters, ChannelCounterSnapshot, "one channel"; $($rows)*);
    };
}
for_channel_counters!(channel_counters);

macro_rules! registry_totals {
    ($($rows:tt)*) => {
        counters_with_snapshot!(RegistryTotals, RegistryTotalsSnapshot, "the registry's life"; $($rows)*);
    };
}
for_registry_totals!(registry_totals);

/// What channels and viewers that went away counted: registry-wide sums (`metrics`) add
/// these to the live ones, so a counter never goes back when a channel or viewer goes.
#[derive(Debug, Default)]
pub struct Retired {
    /// Counters of channels dropped.
    pub channels: ChannelCounters,
    /// Frames written to viewers gone.
    pub frames_sent: AtomicU64,
    /// Frames viewers gone skipped.
    pub frames_skipped: AtomicU64,
    /// Bytes written to viewers gone.
    pub bytes_sent: AtomicU64,
    /// Video chunks written to viewers gone.
    pub video_chunks_sent: AtomicU64,
}

/// [`Retired`] read at one moment.
#[derive(Debug, Clone, Copy)]
pub struct RetiredSnapshot {
    pub frames_sent: u64,
    pub frames_skipped: u64,
    pub bytes_sent: u64,
    pub video_chunks_sent: u64,
}

impl RetiredSnapshot {
    pub fn of(retired: &Retired) -> RetiredSnapshot {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        RetiredSnapshot {
            frames_sent: get(&retired.frames_sent),
            frames_skipped: get(&retired.frames_skipped),
            bytes_sent: get(&retired.bytes_sent),
            video_chunks_sent: get(&retired.video_chunks_sent),
        }
    }
}

impl Retired {
    /// Adds what a viewer that goes counted, its skipped frames as its stats count them (of
    /// a channel that published `frame_count` frames).
    pub fn viewer_gone(&self, viewer: &super::ViewerCounters, frame_count: u64) {
        let add = |into: &AtomicU64, from: &AtomicU64| {
            into.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        add(&self.frames_sent, &viewer.frames_sent);
        self.frames_skipped
            .fetch_add(frames_skipped_by(viewer, frame_count), Ordering::Relaxed);
        add(&self.bytes_sent, &viewer.bytes_sent);
        add(&self.video_chunks_sent, &viewer.video_chunks_sent);
    }
}

/// The frames a viewer skipped, of a channel that published `frame_count`: counted, and those
/// strictly between the one it is on and the newest (superseded already: it can never get
/// them).
fn frames_skipped_by(viewer: &super::ViewerCounters, frame_count: u64) -> u64 {
    viewer.frames_skipped.load(Ordering::Relaxed)
        + frame_count
            .saturating_sub(viewer.seen_index.load(Ordering::Relaxed))
            .saturating_sub(1)
}

/// Stats of one viewer.
#[derive(Debug, Clone)]
pub struct ViewerStats {
    /// Viewer id.
    pub id: u32,
    /// How its socket is served.
    pub transport: Transport,
    pub mode: Mode,
    /// Whether it may control the page.
    pub can_control: bool,
    /// Frames written.
    pub frames_sent: u64,
    /// Frames skipped as counted when it moved on (only grows; `frames_skipped` also counts
    /// those it is bound to skip, which may be taken back when it sends one of them).
    pub frames_skipped_counted: u64,
    /// Frames skipped (it was busy).
    pub frames_skipped: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// JSON messages written.
    pub messages_sent: u64,
    /// It receives video.
    pub video: bool,
    /// Video chunks written.
    pub video_chunks_sent: u64,
    /// Times it fell behind the video and skipped to a keyframe.
    pub video_lagged: u64,
    /// Its WebRTC peer, while it has one.
    pub webrtc: Option<crate::webrtc::peer::PeerFigures>,
    /// Reliable messages waiting in its queue.
    pub queued_messages: usize,
    /// Seconds since it joined.
    pub connected_secs: f64,
}

/// Stats of one channel.
#[derive(Debug, Clone)]
pub struct ChannelStats {
    /// Channel id.
    pub id: ChannelId,
    /// The channel is private now (`setPrivacy`).
    pub private: bool,
    /// Idle, running or lingering.
    pub source_state: SourceState,
    /// Current source generation.
    pub generation: u32,
    /// Last status broadcast.
    pub status: Option<String>,
    /// Current page URL.
    pub url: Option<String>,
    /// Sequence number of the newest frame.
    pub last_seq: u64,
    /// The viewer holding control.
    pub controller: Option<u32>,
    /// Events published to the channel (before `text_delta` merging).
    pub events_published: u64,
    /// Events sent (after merging).
    pub events_sent: u64,
    /// Events held in the resume ring.
    pub ring_events: usize,
    /// Inputs waiting to be relayed.
    pub pending_inputs: usize,
    /// Metadata of the newest frame.
    pub last_frame_meta: Option<FrameMeta>,
    /// The channel's counters.
    pub counters: ChannelCounterSnapshot,
    /// The video pipeline's figures, if video ever started on this channel.
    pub video: Option<PipelineStats>,
    pub viewers: Vec<ViewerStats>,
}

impl Registry {
    /// Stats of every channel.
    pub fn stats(&self) -> Vec<ChannelStats> {
        let channels: Vec<Arc<Channel>> = lock(&self.channels).values().cloned().collect();
        channels
            .iter()
            .map(|channel| {
                let state = lock(&channel.state);
                let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
                let mut viewers: Vec<ViewerStats> = state
                    .viewers
                    .iter()
                    .map(|(id, viewer)| {
                        let link = &viewer.link;
                        ViewerStats {
                            id: *id,
                            transport: viewer.transport,
                            mode: link.mode,
                            can_control: link.can_control,
                            frames_sent: get(&link.counters.frames_sent),
                            frames_skipped: frames_skipped_by(&link.counters, state.frame_count),
                            frames_skipped_counted: get(&link.counters.frames_skipped),
                            bytes_sent: get(&link.counters.bytes_sent),
                            messages_sent: get(&link.counters.messages_sent),
                            video: link.counters.video.load(Ordering::Relaxed),
                            video_chunks_sent: get(&link.counters.video_chunks_sent),
                            video_lagged: get(&link.counters.video_lagged),
                            webrtc: lock(&link.webrtc).as_ref().map(|peer| peer.figures()),
                            queued_messages: link.outbox.len(),
                            connected_secs: viewer.joined.elapsed().as_secs_f64(),
                        }
                    })
                    .collect();
                let events = lock(&channel.events);
                viewers.sort_by_key(|v| v.id);
                ChannelStats {
                    id: channel.id.clone(),
                    source_state: state.source,
                    generation: state.generation,
                    status: state.status.clone(),
                    url: state.url.clone(),
                    last_seq: if state.frame_count == 0 {
                        0
                    } else {
                        state.frame_seq
                    },
                    controller: state.controller,
                    private: state.privacy.is_some(),
                    events_published: events.published,
                    events_sent: events.sent,
                    ring_events: events.len(),
                    pending_inputs: channel.inputs.len(),
                    last_frame_meta: channel.frames.borrow().as_ref().map(|f| f.meta),
                    counters: channel.counters.snapshot(),
                    video: channel.video_pipeline().map(|pipeline| pipeline.stats()),
                    viewers,
                }
            })
            .collect()
    }
}

//! One channel's video pipeline: an OS thread of its own (encoding is CPU work that must not
//! stall the runtime's reactor threads) that takes the channel's newest frame, decodes it,
//! encodes it and broadcasts the chunk to the channel's video viewers.
//!
//! Owns: when the pipeline runs (from its first subscriber until its last one left; a
//! subscriber arriving while it winds down revives it), which frames are encoded (the newest:
//! frames that arrive during an encode are superseded, as for JPEG viewers), when a keyframe
//! is made — the first picture, one every `keyframe_interval`, on demand at most once per
//! [`KEYFRAME_COALESCE`] for joiners and once per [`LAG_KEYFRAME_COALESCE`] for viewers that
//! fell behind, and a refinement once the page is quiet — and the pipeline's statistics. The
//! broadcast ring bounds what a slow viewer costs. The worker owns the ring's sending end: when
//! it ends (its viewers left, the encoder failed repeatedly, or it panicked), subscribers see
//! the ring close. Must not touch sockets nor channel state: the channel offers frames, the
//! writers read chunks.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::h264::H264Encoder;
use super::picture::{Picture, PictureDecoder};
use super::{EncodeTimes, EncoderSettings, Quality, VideoChunk, VideoConfig, VideoEncoder};
use crate::frame::Frame;
use crate::sync::lock;

/// Least time between two keyframes forced for joiners.
pub const KEYFRAME_COALESCE: Duration = Duration::from_millis(300);
/// Least time between two keyframes forced only for viewers that fell behind: a viewer that
/// keeps falling behind must not make every viewer's stream all keyframes.
pub const LAG_KEYFRAME_COALESCE: Duration = Duration::from_secs(1);
/// Chunks the broadcast ring holds (about 3 s at 30 fps); a viewer further behind skips to
/// the next keyframe.
pub const CHUNK_RING: usize = 96;
/// Encode failures in a row after which the pipeline gives up (its viewers go back to JPEG).
const MAX_FAILURES_IN_A_ROW: u32 = 30;
/// After rate control skipped a picture, how long the page must stay unchanged before that
/// picture is encoded again (it would otherwise never be shown).
const SKIPPED_RETRY: Duration = Duration::from_millis(150);
/// Encode times kept for the percentiles.
const TIMING_SAMPLES: usize = 256;
/// Window of the rates in `stats()`.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// Where a pipeline is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineState {
    /// Encoding for its subscribers.
    Running,
    /// Its last subscriber left; the thread ends at its next look (a new subscriber revives it).
    Stopping,
    /// The thread ended.
    Stopped,
    /// The thread gave up: the encoder failed again and again, or panicked.
    Failed,
}

impl PipelineState {
    /// The name `stats()` reports.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineState::Running => "running",
            PipelineState::Stopping => "stopping",
            PipelineState::Stopped => "stopped",
            PipelineState::Failed => "failed",
        }
    }
}

/// Why a keyframe is wanted (a joiner's need outranks a laggard's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyReason {
    /// A viewer fell behind and skipped chunks.
    Lag,
    /// A WebRTC peer lost packets it could not recover and asked (PLI or FIR).
    Loss,
    /// A viewer joined.
    Join,
}

impl KeyReason {
    fn coalesce(self) -> Duration {
        match self {
            KeyReason::Lag | KeyReason::Loss => LAG_KEYFRAME_COALESCE,
            KeyReason::Join => KEYFRAME_COALESCE,
        }
    }
}

struct Control {
    state: PipelineState,
    /// The ring's sending end for new subscribers; taken when the worker ends.
    sender: Option<broadcast::Sender<Arc<VideoChunk>>>,
    /// The newest frame offered.
    latest: Option<Arc<Frame>>,
    /// A keyframe was asked for and not made yet, and the most urgent reason.
    key_wanted: Option<KeyReason>,
    /// The page's pictures were withdrawn (`clear`): the worker forgets its current one.
    cleared: bool,
    subscribers: usize,
}

#[derive(Default)]
struct Windows {
    encode_times: VecDeque<Duration>,
    frames_in: VecDeque<Instant>,
    /// (when, wire bytes) of the chunks of the last `RATE_WINDOW`.
    chunks_out: VecDeque<(Instant, usize)>,
    config: Option<Arc<VideoConfig>>,
    last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    frames_in: AtomicU64,
    chunks: AtomicU64,
    bytes: AtomicU64,
    keyframes_forced: AtomicU64,
    keyframes_periodic: AtomicU64,
    refinements: AtomicU64,
    key_requests: AtomicU64,
    decode_errors: AtomicU64,
    encode_errors: AtomicU64,
}

struct Shared {
    control: Mutex<Control>,
    wake: Condvar,
    windows: Mutex<Windows>,
    counters: Counters,
    settings: EncoderSettings,
    /// Set when the chunks are encoded on another instance and fed in here
    /// ([`VideoPipeline::relayed`]): no encoder thread runs.
    relayed: Option<RelayedInput>,
    /// Frames up to this number were withdrawn ([`VideoPipeline::clear`]): not taken, and
    /// their chunks (one being encoded, or waiting in the ring) not delivered.
    cleared_through: AtomicU64,
    /// The registry's histogram of encode times (none for a relayed pipeline).
    times: Option<Arc<EncodeTimes>>,
}

/// What a relayed pipeline keeps of the stream it is fed.
struct RelayedInput {
    /// Woken when a keyframe is wanted, for the feed to forward the request.
    key_wanted: tokio::sync::Notify,
    feed: Mutex<Feed>,
}

#[derive(Default)]
struct Feed {
    /// Number of the last chunk taken from the owner's stream.
    last_number: Option<u32>,
    /// Deltas are dropped until a keyframe: at the start, and after a chunk of the owner's
    /// stream went missing (none of the deltas that follow would decode).
    started: bool,
    /// The configuration of the chunks fed (the same `Arc` until it changes).
    config: Option<Arc<VideoConfig>>,
    /// Number of the last chunk sent here (this pipeline's own numbering, without gaps).
    chunk_number: u32,
}

/// A chunk encoded on another instance, as its stream carried it.
#[derive(Debug)]
pub struct FedChunk {
    /// Its number in the owner's stream.
    pub number: u32,
    /// A keyframe.
    pub key: bool,
    /// The configuration it needs (the owner's last `video-config`).
    pub config: VideoConfig,
    /// This instance's frame it shows (the relayed frame of the same picture, or the newest
    /// before it): its sequence number and ordinal.
    pub seq: u64,
    /// See `seq`.
    pub index: u64,
    /// Its 56-byte header as the owner sent it (numbers are rewritten here).
    pub header: [u8; crate::frame::BINARY_HEADER_LEN],
    /// The access unit.
    pub body: bytes::Bytes,
}

/// A channel's encoder and the broadcast of its chunks.
pub struct VideoPipeline {
    shared: Arc<Shared>,
}

/// A pipeline's figures, as `stats()` reports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineStats {
    /// `running`, `stopping`, `stopped` or `failed`.
    pub state: &'static str,
    /// The chunks are encoded on another instance (the relay's owner), not here.
    pub relayed: bool,
    /// Codec string of the stream, once a keyframe was made.
    pub codec: Option<String>,
    /// Coded size.
    pub width: u32,
    /// Coded height.
    pub height: u32,
    /// Video viewers.
    pub subscribers: u32,
    /// Frames offered per second (the last 2 s).
    pub fps_in: f64,
    /// Chunks made per second.
    pub fps_out: f64,
    /// Bits per second of chunks on the wire, per viewer.
    pub bitrate: f64,
    /// Decode + convert + encode time of one frame, median, ms.
    pub encode_ms_p50: f64,
    /// The same, 99th percentile.
    pub encode_ms_p99: f64,
    /// Frames offered in all.
    pub frames_in: u64,
    /// Chunks made in all.
    pub chunks: u64,
    /// Wire bytes of all chunks (once, not per viewer).
    pub bytes: u64,
    /// Keyframes made because a viewer joined or lagged.
    pub keyframes_forced: u64,
    /// Other keyframes: the first, one per interval, and the encoder's own at scene changes.
    pub keyframes_periodic: u64,
    /// Refinement keyframes of a quiet page.
    pub refinements: u64,
    /// Keyframe requests (coalesced into `keyframes_forced`).
    pub key_requests: u64,
    /// Frames whose image did not decode (skipped; the encoder went on).
    pub decode_errors: u64,
    /// Pictures the encoder failed on.
    pub encode_errors: u64,
    /// The last decode or encode failure (for the deployer, never sent to viewers).
    pub last_error: Option<String>,
}

/// A video viewer's hold on its channel's pipeline: its receiver of chunks and whether it
/// waits for a keyframe. Dropping it unsubscribes (the last one stops the pipeline).
pub struct VideoSubscription {
    pipeline: Arc<Shared>,
    /// The viewer's place in the broadcast ring.
    pub chunks: broadcast::Receiver<Arc<VideoChunk>>,
    /// Deltas are of no use until a keyframe: at the start and after a lag.
    pub awaiting_key: bool,
}

impl std::fmt::Debug for VideoSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoSubscription")
            .field("awaiting_key", &self.awaiting_key)
            .finish_non_exhaustive()
    }
}

/// Chunks a subscriber may have waiting before it counts as behind (about a second at
/// 30 fps): it then drops them and waits for a keyframe, instead of watching the past.
pub const VIDEO_BEHIND: usize = 30;

/// What a subscriber does with the chunk it just received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Deliver it.
    Deliver,
    /// Drop it: a delta while a keyframe is awaited.
    Skip,
    /// Drop it and the backlog: the subscriber was far behind and now waits for a keyframe.
    Behind,
}

impl VideoSubscription {
    /// Asks for a keyframe (coalesced with every other request).
    pub fn request_key(&self, reason: KeyReason) {
        self.pipeline.request_key(reason);
    }

    /// Decides about a received chunk (`key`: it is a keyframe), the same way for every kind of
    /// subscriber: far behind, skip the backlog and ask for a keyframe; waiting for a keyframe,
    /// skip deltas.
    pub fn admit(&mut self, chunk: &VideoChunk) -> Admit {
        let key = chunk.key;
        // A relayed pipeline's numbers are mapped from the owner's: its withdrawals are the
        // owner's to make.
        let withdrawn = self.pipeline.relayed.is_none()
            && chunk.seq <= self.pipeline.cleared_through.load(Ordering::Acquire);
        if withdrawn {
            // What follows it would not decode without it.
            self.awaiting_key = true;
            self.request_key(KeyReason::Join);
            return Admit::Skip;
        }
        if self.chunks.len() > VIDEO_BEHIND {
            self.chunks = self.chunks.resubscribe();
            self.lagged();
            return Admit::Behind;
        }
        if self.awaiting_key && !key {
            return Admit::Skip;
        }
        self.awaiting_key = false;
        Admit::Deliver
    }

    /// The ring overran this subscriber: nothing until a keyframe, which it asks for.
    pub fn lagged(&mut self) {
        self.awaiting_key = true;
        self.request_key(KeyReason::Lag);
    }
}

impl Drop for VideoSubscription {
    fn drop(&mut self) {
        let mut control = lock(&self.pipeline.control);
        control.subscribers = control.subscribers.saturating_sub(1);
        if control.subscribers == 0 && control.state == PipelineState::Running {
            if self.pipeline.relayed.is_some() {
                // No thread to wind down: the feed sees it ended and leaves the bus.
                self.pipeline.end(&mut control, PipelineState::Stopped);
            } else {
                control.state = PipelineState::Stopping;
            }
        }
        drop(control);
        self.pipeline.wake.notify_all();
    }
}

impl Shared {
    /// A running pipeline's state, before its first subscriber.
    fn new(
        settings: EncoderSettings,
        sender: broadcast::Sender<Arc<VideoChunk>>,
        latest: Option<Arc<Frame>>,
        relayed: Option<RelayedInput>,
        times: Option<Arc<EncodeTimes>>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            control: Mutex::new(Control {
                state: PipelineState::Running,
                sender: Some(sender),
                latest,
                key_wanted: None,
                cleared: false,
                subscribers: 0,
            }),
            wake: Condvar::new(),
            windows: Mutex::new(Windows::default()),
            counters: Counters::default(),
            settings,
            relayed,
            cleared_through: AtomicU64::new(0),
            times,
        })
    }

    fn request_key(&self, reason: KeyReason) {
        self.counters.key_requests.fetch_add(1, Ordering::Relaxed);
        let mut control = lock(&self.control);
        control.key_wanted = control.key_wanted.max(Some(reason));
        drop(control);
        self.wake.notify_all();
        if let Some(relayed) = &self.relayed {
            relayed.key_wanted.notify_one();
        }
    }

    /// Ends the pipeline: no new subscriber, and the ring closes once the worker's own
    /// sending end is gone too.
    fn end(&self, control: &mut Control, state: PipelineState) {
        control.state = state;
        control.sender = None;
        control.latest = None;
    }
}

impl VideoPipeline {
    /// Starts a pipeline with `settings` on its own thread, encoding from `latest` on.
    /// Each frame's encode time is recorded in `times` too.
    pub fn start(
        settings: EncoderSettings,
        latest: Option<Arc<Frame>>,
        times: Arc<EncodeTimes>,
    ) -> Result<Arc<Self>, String> {
        let encoder = H264Encoder::new(settings)?;
        Self::start_with(settings, latest, Box::new(encoder), times)
    }

    /// Starts a pipeline around `encoder`.
    fn start_with(
        settings: EncoderSettings,
        latest: Option<Arc<Frame>>,
        encoder: Box<dyn VideoEncoder>,
        times: Arc<EncodeTimes>,
    ) -> Result<Arc<Self>, String> {
        let (sender, _) = broadcast::channel(CHUNK_RING);
        let shared = Shared::new(settings, sender.clone(), latest, None, Some(times));
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("bsn-video".into())
            .spawn(move || run(thread_shared, encoder, sender))
            .map_err(|e| format!("video thread: {e}"))?;
        Ok(Arc::new(VideoPipeline { shared }))
    }

    /// A pipeline of chunks encoded on another instance (the relay's owner), fed with
    /// [`VideoPipeline::feed`]; its keyframe requests are for the feed to forward
    /// ([`VideoPipeline::key_request`]). It ends when its last subscriber leaves.
    pub fn relayed(settings: EncoderSettings) -> Arc<Self> {
        let (sender, _) = broadcast::channel(CHUNK_RING);
        let relayed = RelayedInput {
            key_wanted: tokio::sync::Notify::new(),
            feed: Mutex::new(Feed::default()),
        };
        Arc::new(VideoPipeline {
            shared: Shared::new(settings, sender, None, Some(relayed), None),
        })
    }

    /// Whether the pipeline ended (no new subscriber can join it).
    pub fn is_ended(&self) -> bool {
        !matches!(
            lock(&self.shared.control).state,
            PipelineState::Running | PipelineState::Stopping
        )
    }

    /// Ends the pipeline: its subscribers see their ring close (their writers say so and go
    /// back to JPEG). For a relayed pipeline whose stream went away.
    pub fn end(&self) {
        let mut control = lock(&self.shared.control);
        if matches!(
            control.state,
            PipelineState::Running | PipelineState::Stopping
        ) {
            self.shared.end(&mut control, PipelineState::Stopped);
        }
        drop(control);
        self.shared.wake.notify_all();
        if let Some(relayed) = &self.shared.relayed {
            relayed.key_wanted.notify_one();
        }
    }

    /// The configuration of the newest chunk, once one was made.
    pub fn config(&self) -> Option<Arc<VideoConfig>> {
        lock(&self.shared.windows).config.clone()
    }

    /// Asks for a keyframe, as a subscriber would (coalesced with every other request).
    pub fn request_key(&self, reason: KeyReason) {
        self.shared.request_key(reason);
    }

    /// The next keyframe request to forward to the instance that encodes, once one is made;
    /// `None` when the pipeline is not relayed or ended. The request is taken: one call, one
    /// forward (the owner's pipeline coalesces them again).
    pub async fn key_request(&self) -> Option<KeyReason> {
        let relayed = self.shared.relayed.as_ref()?;
        loop {
            {
                let mut control = lock(&self.shared.control);
                if !matches!(
                    control.state,
                    PipelineState::Running | PipelineState::Stopping
                ) {
                    return None;
                }
                if let Some(reason) = control.key_wanted.take() {
                    return Some(reason);
                }
            }
            relayed.key_wanted.notified().await;
        }
    }

    /// Feeds a chunk of the owner's stream to a relayed pipeline's subscribers, renumbered
    /// in this pipeline's stream. A delta after a gap in the owner's numbers would not decode:
    /// it and the deltas after it are dropped until a keyframe, which is asked for. False when
    /// the pipeline ended (or is not relayed).
    pub fn feed(&self, chunk: FedChunk) -> bool {
        let Some(relayed) = &self.shared.relayed else {
            return false;
        };
        let Some(sender) = lock(&self.shared.control).sender.clone() else {
            return false;
        };
        let mut feed = lock(&relayed.feed);
        let follows = feed
            .last_number
            .is_some_and(|last| last.wrapping_add(1) == chunk.number);
        feed.last_number = Some(chunk.number);
        let decodable = chunk.key || (feed.started && follows);
        if !decodable {
            feed.started = false;
            drop(feed);
            self.shared.request_key(KeyReason::Lag);
            return true;
        }
        feed.started = true;
        let config = match &feed.config {
            Some(current) if **current == chunk.config => current.clone(),
            _ => Arc::new(chunk.config),
        };
        feed.config = Some(config.clone());
        feed.chunk_number = feed.chunk_number.wrapping_add(1);
        let number = feed.chunk_number;
        drop(feed);
        if chunk.key {
            // What was asked for came (a request made since is asked again by its maker's
            // next lag).
            lock(&self.shared.control).key_wanted = None;
        }
        let chunk = VideoChunk::relayed(
            chunk.header,
            chunk.seq,
            chunk.index,
            number,
            chunk.key,
            config.clone(),
            chunk.body,
        );
        let counters = &self.shared.counters;
        counters.chunks.fetch_add(1, Ordering::Relaxed);
        counters
            .bytes
            .fetch_add(chunk.wire_len() as u64, Ordering::Relaxed);
        if chunk.key {
            counters.keyframes_periodic.fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        {
            let mut windows = lock(&self.shared.windows);
            windows.chunks_out.push_back((now, chunk.wire_len()));
            prune(&mut windows.chunks_out, now, |(t, _)| *t);
            windows.config = Some(config);
        }
        let _ = sender.send(Arc::new(chunk));
        true
    }

    /// A new subscription (asking for a keyframe), or `None` once the pipeline ended: the
    /// caller starts a new one.
    pub fn subscribe(&self) -> Option<VideoSubscription> {
        let mut control = lock(&self.shared.control);
        if !matches!(
            control.state,
            PipelineState::Running | PipelineState::Stopping
        ) {
            return None;
        }
        let chunks = control.sender.as_ref()?.subscribe();
        // The worker decides to end under this lock, so a pipeline still `Stopping` here has
        // not ended: it simply goes on.
        control.state = PipelineState::Running;
        control.subscribers += 1;
        drop(control);
        self.shared.request_key(KeyReason::Join);
        Some(VideoSubscription {
            pipeline: self.shared.clone(),
            chunks,
            awaiting_key: true,
        })
    }

    /// Hands the pipeline the channel's newest frame (a relayed pipeline encodes nothing).
    pub fn offer(&self, frame: &Arc<Frame>) {
        if self.shared.relayed.is_some() {
            return;
        }
        let mut control = lock(&self.shared.control);
        let live = matches!(
            control.state,
            PipelineState::Running | PipelineState::Stopping
        );
        // Under the lock `clear` takes: a withdrawn frame offered late is not taken.
        let withdrawn = frame.seq <= self.shared.cleared_through.load(Ordering::Acquire);
        if !live || withdrawn || control.latest.as_ref().is_some_and(|l| l.seq >= frame.seq) {
            return;
        }
        control.latest = Some(frame.clone());
        drop(control);
        self.shared.wake.notify_all();
        self.shared
            .counters
            .frames_in
            .fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut windows = lock(&self.shared.windows);
        windows.frames_in.push_back(now);
        prune(&mut windows.frames_in, now, |t| *t);
    }

    /// The page's pictures up to frame `through` were withdrawn (the session ended, the page
    /// went private): nothing of them is encoded again (no keyframe of it for a joiner, no
    /// refinement) nor delivered (a chunk being encoded, or in the ring) until a new frame
    /// comes.
    pub fn clear(&self, through: u64) {
        let mut control = lock(&self.shared.control);
        self.shared
            .cleared_through
            .fetch_max(through, Ordering::AcqRel);
        control.latest = None;
        control.cleared = true;
        drop(control);
        self.shared.wake.notify_all();
    }

    /// The pipeline's figures now.
    pub fn stats(&self) -> PipelineStats {
        let (state, subscribers) = {
            let control = lock(&self.shared.control);
            (control.state, control.subscribers)
        };
        let now = Instant::now();
        let mut windows = lock(&self.shared.windows);
        prune(&mut windows.frames_in, now, |t| *t);
        prune(&mut windows.chunks_out, now, |(t, _)| *t);
        let span = RATE_WINDOW.as_secs_f64();
        let mut times: Vec<Duration> = windows.encode_times.iter().copied().collect();
        times.sort_unstable();
        let percentile = |p: f64| -> f64 {
            if times.is_empty() {
                return 0.0;
            }
            let at = ((times.len() - 1) as f64 * p).round() as usize;
            times[at].as_secs_f64() * 1000.0
        };
        let c = &self.shared.counters;
        PipelineStats {
            state: state.as_str(),
            relayed: self.shared.relayed.is_some(),
            codec: windows.config.as_ref().map(|c| c.codec.clone()),
            width: windows.config.as_ref().map_or(0, |c| c.width),
            height: windows.config.as_ref().map_or(0, |c| c.height),
            subscribers: subscribers as u32,
            fps_in: windows.frames_in.len() as f64 / span,
            fps_out: windows.chunks_out.len() as f64 / span,
            bitrate: windows
                .chunks_out
                .iter()
                .map(|(_, b)| *b as f64)
                .sum::<f64>()
                * 8.0
                / span,
            encode_ms_p50: percentile(0.5),
            encode_ms_p99: percentile(0.99),
            frames_in: c.frames_in.load(Ordering::Relaxed),
            chunks: c.chunks.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            keyframes_forced: c.keyframes_forced.load(Ordering::Relaxed),
            keyframes_periodic: c.keyframes_periodic.load(Ordering::Relaxed),
            refinements: c.refinements.load(Ordering::Relaxed),
            key_requests: c.key_requests.load(Ordering::Relaxed),
            decode_errors: c.decode_errors.load(Ordering::Relaxed),
            encode_errors: c.encode_errors.load(Ordering::Relaxed),
            last_error: windows.last_error.clone(),
        }
    }
}

fn prune<T>(window: &mut VecDeque<T>, now: Instant, at: impl Fn(&T) -> Instant) {
    while window
        .front()
        .is_some_and(|e| now.duration_since(at(e)) > RATE_WINDOW)
    {
        window.pop_front();
    }
}

/// What the thread does next.
enum Job {
    /// Encode a new frame (a keyframe when `key`; `forced` when a viewer asked for it).
    Live {
        frame: Arc<Frame>,
        key: bool,
        forced: Option<KeyReason>,
    },
    /// The page did not change but a viewer needs a keyframe: the current picture again.
    Repeat(KeyReason),
    /// Rate control skipped the current picture and the page stayed still: encode it again.
    Retry,
    /// The page is quiet: the current picture as a refinement keyframe.
    Refine,
}

/// The encoder thread's own state.
struct Worker {
    shared: Arc<Shared>,
    sender: broadcast::Sender<Arc<VideoChunk>>,
    encoder: Box<dyn VideoEncoder>,
    decoder: PictureDecoder,
    picture: Picture,
    /// The frame `picture` holds.
    current: Option<Arc<Frame>>,
    /// Newest frame taken (encoded, or skipped as undecodable).
    taken_seq: u64,
    last_key_at: Option<Instant>,
    /// Last attempt at a forced keyframe (made or not): what coalescing counts from.
    last_forced_at: Option<Instant>,
    /// When the current picture was last encoded live.
    last_live_at: Option<Instant>,
    /// Rate control skipped the current picture at this time.
    skipped_at: Option<Instant>,
    /// The current picture has been refined (or refining it was tried).
    refined: bool,
    failures_in_a_row: u32,
    config: Option<Arc<VideoConfig>>,
    /// Number of the last chunk sent.
    chunk_number: u32,
}

fn run(
    shared: Arc<Shared>,
    encoder: Box<dyn VideoEncoder>,
    sender: broadcast::Sender<Arc<VideoChunk>>,
) {
    let worker = Worker {
        shared: shared.clone(),
        sender,
        encoder,
        decoder: PictureDecoder::default(),
        picture: Picture::default(),
        current: None,
        taken_seq: 0,
        last_key_at: None,
        last_forced_at: None,
        last_live_at: None,
        skipped_at: None,
        refined: false,
        failures_in_a_row: 0,
        config: None,
        chunk_number: 0,
    };
    // A panic in a codec must not leave viewers waiting on a thread that is gone: the worker
    // (and its sending end) is dropped while unwinding, and the pipeline is marked failed.
    let ended = catch_unwind(AssertUnwindSafe(move || {
        let mut worker = worker;
        while let Some(job) = worker.next_job() {
            worker.run_job(job);
        }
    }));
    if ended.is_err() {
        let mut control = lock(&shared.control);
        shared.end(&mut control, PipelineState::Failed);
        drop(control);
        lock(&shared.windows).last_error = Some("the video encoder panicked".into());
    }
}

impl Worker {
    /// Waits for the next job; `None` when the pipeline ends.
    fn next_job(&mut self) -> Option<Job> {
        let shared = self.shared.clone();
        let mut control: MutexGuard<'_, Control> = lock(&shared.control);
        loop {
            match control.state {
                PipelineState::Running => {}
                // Decided under the lock `subscribe` takes: no subscriber is lost.
                PipelineState::Stopping => {
                    shared.end(&mut control, PipelineState::Stopped);
                    return None;
                }
                PipelineState::Stopped | PipelineState::Failed => return None,
            }
            if self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW {
                shared.end(&mut control, PipelineState::Failed);
                return None;
            }
            if std::mem::take(&mut control.cleared) {
                self.current = None;
                self.skipped_at = None;
            }
            let now = Instant::now();
            let may_force = |reason: KeyReason| {
                self.last_forced_at
                    .is_none_or(|at| now >= at + reason.coalesce())
            };
            if let Some(frame) = control.latest.clone().filter(|f| f.seq > self.taken_seq) {
                let forced = control.key_wanted.filter(|reason| may_force(*reason));
                if forced.is_some() {
                    control.key_wanted = None;
                }
                let periodic = self
                    .last_key_at
                    .is_none_or(|at| now >= at + self.shared.settings.keyframe_interval);
                return Some(Job::Live {
                    frame,
                    key: forced.is_some() || periodic,
                    forced,
                });
            }
            let mut deadline: Option<Instant> = None;
            let mut wake_at = |at: Instant| deadline = Some(deadline.map_or(at, |d| d.min(at)));
            if self.current.is_some() {
                if let Some(reason) = control.key_wanted {
                    if may_force(reason) {
                        control.key_wanted = None;
                        return Some(Job::Repeat(reason));
                    }
                    if let Some(at) = self.last_forced_at {
                        wake_at(at + reason.coalesce());
                    }
                }
                if let Some(at) = self.skipped_at.map(|at| at + SKIPPED_RETRY) {
                    if now >= at {
                        return Some(Job::Retry);
                    }
                    wake_at(at);
                }
                let refine_after = self.shared.settings.refine_after;
                if !refine_after.is_zero() && !self.refined {
                    if let Some(at) = self.last_live_at.map(|at| at + refine_after) {
                        if now >= at {
                            return Some(Job::Refine);
                        }
                        wake_at(at);
                    }
                }
            }
            control = match deadline {
                Some(at) => {
                    let wait = at.saturating_duration_since(now);
                    shared
                        .wake
                        .wait_timeout(control, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => shared.wake.wait(control).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    fn run_job(&mut self, job: Job) {
        let started = Instant::now();
        let (key, quality, forced) = match job {
            Job::Live { frame, key, forced } => {
                self.taken_seq = frame.seq;
                let decoded = match frame.binary() {
                    Some(binary) => self.decoder.decode(&binary.body, &mut self.picture),
                    None => Err("the frame's base64 does not decode".into()),
                };
                if let Err(error) = decoded {
                    self.shared
                        .counters
                        .decode_errors
                        .fetch_add(1, Ordering::Relaxed);
                    lock(&self.shared.windows).last_error = Some(error);
                    if self.picture.width == 0 {
                        // The picture buffers no longer hold a picture.
                        self.current = None;
                    }
                    if let Some(reason) = forced {
                        self.keep_key_wanted(reason);
                    }
                    return;
                }
                self.current = Some(frame);
                self.refined = false;
                self.skipped_at = None;
                (key, Quality::Live, forced)
            }
            // A joiner on a quiet page gets the refined picture, not a blurrier one.
            Job::Repeat(reason) if self.refined => (true, Quality::Refine, Some(reason)),
            Job::Repeat(reason) => (true, Quality::Live, Some(reason)),
            Job::Retry => (false, Quality::Live, None),
            Job::Refine => {
                // Tried once per picture, whatever comes of it: a refinement that fails must
                // not be retried in a loop.
                self.refined = true;
                (true, Quality::Refine, None)
            }
        };
        if forced.is_some() {
            self.last_forced_at = Some(started);
        }
        let Some(frame) = self.current.clone() else {
            return;
        };
        let encoded = self.encoder.encode(&self.picture, key, quality);
        let shared = self.shared.clone();
        let counters = &shared.counters;
        let encoded = match encoded {
            Ok(Some(encoded)) => {
                self.failures_in_a_row = 0;
                encoded
            }
            Ok(None) => {
                // Rate control skipped the picture: encoded again once the page is still
                // (Retry); a keyframe asked for stays asked for.
                self.failures_in_a_row = 0;
                if quality == Quality::Live {
                    self.last_live_at = Some(Instant::now());
                    self.skipped_at = Some(Instant::now());
                }
                if let Some(reason) = forced {
                    self.keep_key_wanted(reason);
                }
                return;
            }
            Err(error) => {
                self.failures_in_a_row += 1;
                counters.encode_errors.fetch_add(1, Ordering::Relaxed);
                lock(&self.shared.windows).last_error = Some(error);
                if let Some(reason) = forced {
                    self.keep_key_wanted(reason);
                }
                return;
            }
        };
        let now = Instant::now();
        if quality == Quality::Live {
            self.last_live_at = Some(now);
            self.skipped_at = None;
        } else if forced.is_none() {
            counters.refinements.fetch_add(1, Ordering::Relaxed);
        }
        if encoded.key {
            self.last_key_at = Some(now);
            if forced.is_some() {
                counters.keyframes_forced.fetch_add(1, Ordering::Relaxed);
            } else if quality == Quality::Live {
                counters.keyframes_periodic.fetch_add(1, Ordering::Relaxed);
            }
            self.update_config(&encoded.data);
        } else if let Some(reason) = forced {
            self.keep_key_wanted(reason);
        }
        let Some(config) = self.config.clone() else {
            // No keyframe yet (the encoder's first picture is always one): nothing decodes.
            return;
        };
        self.chunk_number = self.chunk_number.wrapping_add(1);
        let chunk = VideoChunk::new(
            &frame,
            self.chunk_number,
            encoded,
            quality == Quality::Refine,
            config,
        );
        let wire = chunk.wire_len();
        counters.chunks.fetch_add(1, Ordering::Relaxed);
        counters.bytes.fetch_add(wire as u64, Ordering::Relaxed);
        {
            let mut windows = lock(&self.shared.windows);
            if windows.encode_times.len() == TIMING_SAMPLES {
                windows.encode_times.pop_front();
            }
            windows.encode_times.push_back(now - started);
            if let Some(times) = &self.shared.times {
                times.observe(now - started);
            }
            windows.chunks_out.push_back((now, wire));
            prune(&mut windows.chunks_out, now, |(t, _)| *t);
            windows.config = self.config.clone();
        }
        // No receiver is fine: the last viewer may have left during the encode.
        let _ = self.sender.send(Arc::new(chunk));
    }

    /// A forced keyframe did not come out: the request stands (coalescing still applies, as
    /// it counts from the attempt).
    fn keep_key_wanted(&self, reason: KeyReason) {
        let mut control = lock(&self.shared.control);
        control.key_wanted = control.key_wanted.max(Some(reason));
    }

    fn update_config(&mut self, keyframe: &[u8]) {
        let Some(codec) = self.encoder.codec_string(keyframe) else {
            return;
        };
        let config = VideoConfig {
            codec,
            width: self.picture.width,
            height: self.picture.height,
        };
        if self.config.as_deref() != Some(&config) {
            self.config = Some(Arc::new(config));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::picture::tests::fixture_jpeg;
    use crate::codec::{Encoded, FLAG_REFINE};
    use crate::frame::FrameMeta;
    use base64::Engine;
    use bytes::Bytes;

    fn frame(seq: u64) -> Arc<Frame> {
        let text = base64::engine::general_purpose::STANDARD.encode(fixture_jpeg());
        Arc::new(Frame::from_base64(
            seq,
            seq,
            Bytes::from(text),
            FrameMeta::default(),
        ))
    }

    fn settings() -> EncoderSettings {
        EncoderSettings {
            bitrate: 2_000_000,
            keyframe_interval: Duration::from_secs(60),
            refine_after: Duration::ZERO,
        }
    }

    /// A frame of `jpeg`.
    fn frame_of(seq: u64, jpeg: &[u8]) -> Arc<Frame> {
        let text = base64::engine::general_purpose::STANDARD.encode(jpeg);
        Arc::new(Frame::from_base64(
            seq,
            seq,
            Bytes::from(text),
            FrameMeta::default(),
        ))
    }

    /// An encoder that fails, or panics, on every picture.
    struct Broken {
        panics: bool,
    }

    impl VideoEncoder for Broken {
        fn encode(&mut self, _: &Picture, _: bool, _: Quality) -> Result<Option<Encoded>, String> {
            assert!(!self.panics, "codec bug");
            Err("broken encoder".into())
        }
        fn codec_string(&self, _: &[u8]) -> Option<String> {
            None
        }
    }

    fn recv(sub: &mut VideoSubscription) -> Arc<VideoChunk> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match sub.chunks.try_recv() {
                Ok(chunk) => return chunk,
                Err(broadcast::error::TryRecvError::Empty) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => panic!("no chunk: {e:?}"),
            }
        }
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A pipeline, a subscription, and the keyframe of the first picture it got. Subscribed
    /// before the picture exists: its request for a keyframe is what the first encode serves,
    /// so no second keyframe for joining (made when a join comes after an encode) follows it
    /// and a test sees only what it causes.
    fn started(
        settings: EncoderSettings,
    ) -> (Arc<VideoPipeline>, VideoSubscription, Arc<VideoChunk>) {
        let pipeline = VideoPipeline::start(settings, None, Arc::default()).unwrap();
        let mut sub = pipeline.subscribe().unwrap();
        pipeline.offer(&frame(1));
        let first = recv(&mut sub);
        assert!(first.key);
        (pipeline, sub, first)
    }

    #[test]
    fn a_joiner_gets_a_keyframe_of_a_still_page_and_joins_are_coalesced() {
        let pipeline = VideoPipeline::start(settings(), Some(frame(1)), Arc::default()).unwrap();
        let mut first = pipeline.subscribe().unwrap();
        let chunk = recv(&mut first);
        assert!(chunk.key);
        assert_eq!(chunk.seq, 1);
        assert!(chunk.config.codec.starts_with("avc1.42"));
        assert_eq!(
            chunk.head[chunk.ws_header_len + 52..chunk.ws_header_len + 56],
            [0, 0, 0, 1],
            "chunk number 1"
        );
        // 20 joiners at once on a page that does not change: each gets a keyframe, made far
        // fewer than 20 times.
        let joining = Instant::now();
        let mut joiners: Vec<_> = (0..20).map(|_| pipeline.subscribe().unwrap()).collect();
        let windows = (joining.elapsed().as_millis() / KEYFRAME_COALESCE.as_millis()) as u64;
        for joiner in &mut joiners {
            assert!(recv(joiner).key);
        }
        let stats = pipeline.stats();
        assert_eq!(stats.key_requests, 21);
        // The first picture's keyframe, and one per coalescing window the joins spanned
        // (a window may close in the middle of them).
        assert!(stats.keyframes_forced <= 3 + windows, "{stats:?}");
        assert_eq!(stats.subscribers, 21);
        drop(first);
        drop(joiners);
        wait_until("the pipeline to stop", || {
            pipeline.stats().state == "stopped"
        });
        assert!(
            pipeline.subscribe().is_none(),
            "a stopped pipeline takes nobody"
        );
    }

    #[test]
    fn new_frames_are_deltas_and_a_corrupt_frame_does_not_stop_the_encoder() {
        let (pipeline, mut sub, _) = started(settings());
        let garbage = Arc::new(Frame::from_base64(
            2,
            2,
            Bytes::from_static(b"/9j/AAAAAAAAAAAAAAAA"),
            FrameMeta::default(),
        ));
        pipeline.offer(&garbage);
        wait_until("the decode error", || pipeline.stats().decode_errors == 1);
        pipeline.offer(&frame(3));
        let next = recv(&mut sub);
        assert_eq!(next.seq, 3);
        assert!(pipeline.stats().last_error.is_some());
        assert_eq!(pipeline.stats().state, "running");
    }

    #[test]
    fn a_quiet_page_is_refined_once_even_at_the_highest_bitrate() {
        let settings = EncoderSettings {
            bitrate: 50_000_000,
            keyframe_interval: Duration::from_secs(60),
            refine_after: Duration::from_millis(100),
        };
        let (pipeline, mut sub, first) = started(settings);
        let is_refinement =
            |chunk: &VideoChunk| chunk.head[chunk.ws_header_len + 3] & FLAG_REFINE != 0;
        assert!(!is_refinement(&first));
        let refined = recv(&mut sub);
        assert!(refined.key, "a refinement is a keyframe");
        assert!(is_refinement(&refined));
        assert_eq!(refined.seq, 1, "of the same picture");
        // Three more refinement periods: nothing more is made for a picture already refined.
        std::thread::sleep(Duration::from_millis(300));
        let stats = pipeline.stats();
        assert_eq!(stats.refinements, 1, "{stats:?}");
        assert_eq!(stats.encode_errors, 0, "{stats:?}");
        assert!(sub.chunks.try_recv().is_err());
        // A joiner of the quiet page gets the refined picture again.
        let mut joiner = pipeline.subscribe().unwrap();
        let chunk = recv(&mut joiner);
        assert!(chunk.key && !chunk.body.is_empty());
    }

    #[test]
    fn a_new_size_starts_a_new_config_with_a_keyframe() {
        let (pipeline, mut sub, first) = started(settings());
        let mut picture = Picture::default();
        PictureDecoder::default()
            .decode(&fixture_jpeg(), &mut picture)
            .unwrap();
        assert_eq!(
            (first.config.width, first.config.height),
            (picture.width, picture.height)
        );
        let other = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/__test__/fixtures/frame-320x240.jpg"
        ))
        .unwrap();
        pipeline.offer(&frame_of(2, &other));
        let resized = recv(&mut sub);
        assert!(resized.key);
        assert!(!Arc::ptr_eq(&resized.config, &first.config));
        assert_eq!((resized.config.width, resized.config.height), (320, 240));
    }

    #[test]
    fn after_clear_a_joiner_gets_nothing_of_the_old_page_until_a_new_frame() {
        let (pipeline, _sub, _) = started(settings());
        pipeline.clear(0);
        let mut joiner = pipeline.subscribe().unwrap();
        std::thread::sleep(KEYFRAME_COALESCE * 2);
        assert!(
            joiner.chunks.try_recv().is_err(),
            "no keyframe of the withdrawn page"
        );
        pipeline.offer(&frame(5));
        let chunk = recv(&mut joiner);
        assert!(chunk.key);
        assert_eq!(chunk.seq, 5);
    }

    #[test]
    fn an_encoder_that_keeps_failing_or_panics_ends_the_pipeline_and_closes_the_ring() {
        for panics in [false, true] {
            let pipeline = VideoPipeline::start_with(
                settings(),
                None,
                Box::new(Broken { panics }),
                Arc::default(),
            )
            .unwrap();
            let mut sub = pipeline.subscribe().unwrap();
            for seq in 1..=(MAX_FAILURES_IN_A_ROW as u64 + 5) {
                pipeline.offer(&frame(seq));
                if pipeline.stats().state == "failed" {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            wait_until("the pipeline to fail", || {
                pipeline.stats().state == "failed"
            });
            assert!(matches!(
                sub.chunks.try_recv(),
                Err(broadcast::error::TryRecvError::Closed)
            ));
            assert!(pipeline.subscribe().is_none());
            assert!(pipeline.stats().last_error.is_some());
        }
    }

    #[test]
    fn a_subscriber_arriving_while_the_pipeline_winds_down_keeps_it() {
        let pipeline = VideoPipeline::start(settings(), Some(frame(1)), Arc::default()).unwrap();
        let sub = pipeline.subscribe().unwrap();
        drop(sub);
        // Either the worker had not looked yet (the pipeline goes on) or it had ended (none).
        match pipeline.subscribe() {
            Some(mut again) => {
                assert!(recv(&mut again).key);
                assert_eq!(pipeline.stats().state, "running");
            }
            None => assert_eq!(pipeline.stats().state, "stopped"),
        }
    }

    fn fed(number: u32, key: bool, seq: u64, width: u32) -> FedChunk {
        FedChunk {
            number,
            key,
            config: VideoConfig {
                codec: "avc1.42c01f".into(),
                width,
                height: 90,
            },
            seq,
            index: seq,
            header: [0u8; crate::frame::BINARY_HEADER_LEN],
            body: Bytes::from(vec![number as u8; 8]),
        }
    }

    fn number_of(chunk: &VideoChunk) -> u32 {
        let at = chunk.ws_header_len + crate::codec::CHUNK_NUMBER_AT;
        u32::from_be_bytes(chunk.head[at..at + 4].try_into().unwrap())
    }

    #[tokio::test]
    async fn a_relayed_pipeline_passes_the_owners_chunks_renumbered_and_waits_out_a_gap() {
        let pipeline = VideoPipeline::relayed(settings());
        let mut sub = pipeline.subscribe().unwrap();
        // The joiner's keyframe request is the feed's to forward.
        assert_eq!(pipeline.key_request().await, Some(KeyReason::Join));
        // Deltas before any keyframe would not decode.
        assert!(pipeline.feed(fed(40, false, 1, 160)));
        assert!(sub.chunks.try_recv().is_err());
        assert_eq!(pipeline.key_request().await, Some(KeyReason::Lag));
        for (number, key) in [(41, true), (42, false), (43, false)] {
            assert!(pipeline.feed(fed(number, key, u64::from(number), 160)));
        }
        let got: Vec<_> = (0..3).map(|_| sub.chunks.try_recv().unwrap()).collect();
        assert_eq!(
            got.iter().map(|c| number_of(c)).collect::<Vec<_>>(),
            vec![1, 2, 3],
            "its own numbers, without a gap"
        );
        assert!(got[0].key && !got[1].key);
        assert_eq!(got[1].seq, 42, "shown as this instance's frame");
        assert_eq!(&got[2].body[..], &[43u8; 8], "the owner's bytes");
        assert!(Arc::ptr_eq(&got[0].config, &got[2].config));
        // A chunk of the owner's stream went missing: the deltas after it are dropped and a
        // keyframe is asked for; the next keyframe goes on, numbered on from the last.
        assert!(pipeline.feed(fed(45, false, 45, 160)));
        assert!(pipeline.feed(fed(46, false, 46, 160)));
        assert!(sub.chunks.try_recv().is_err());
        assert_eq!(pipeline.key_request().await, Some(KeyReason::Lag));
        assert!(pipeline.feed(fed(47, true, 47, 320)));
        let after = sub.chunks.try_recv().unwrap();
        assert_eq!(number_of(&after), 4);
        assert_eq!(after.config.width, 320, "a new size, a new configuration");
        assert!(!Arc::ptr_eq(&after.config, &got[0].config));
        let stats = pipeline.stats();
        assert!(stats.relayed);
        assert_eq!((stats.chunks, stats.frames_in), (4, 0));
        // Frames offered to it are not encoded: it has no encoder.
        pipeline.offer(&frame(100));
        assert_eq!(pipeline.stats().frames_in, 0);
        // Its last subscriber leaves: it ends at once, and the feed learns it.
        drop(sub);
        assert!(pipeline.is_ended());
        assert_eq!(pipeline.key_request().await, None);
        assert!(!pipeline.feed(fed(48, false, 48, 320)));
        assert!(pipeline.subscribe().is_none());
    }

    #[tokio::test]
    async fn a_relayed_pipeline_whose_stream_went_away_closes_its_subscribers_rings() {
        let pipeline = VideoPipeline::relayed(settings());
        let mut sub = pipeline.subscribe().unwrap();
        let waiting = tokio::spawn({
            let pipeline = pipeline.clone();
            async move {
                assert_eq!(pipeline.key_request().await, Some(KeyReason::Join));
                pipeline.key_request().await
            }
        });
        tokio::task::yield_now().await;
        pipeline.end();
        assert_eq!(waiting.await.unwrap(), None, "a waiting feed is woken");
        assert!(matches!(
            sub.chunks.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
    }
}

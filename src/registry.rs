//! The registry: agent channels, their viewers, and the lifecycle of each channel's frame
//! source (idle → running → lingering → idle).
//!
//! Owns: admission limits, reference counting of viewers per channel, the start/stop edges sent
//! to the host (exactly one start per 0→1 transition, one stop per 1→0 after the linger), the
//! channel's sticky state (status, url, viewport, latest frame) that late joiners receive, the
//! sequence numbers of frames and events, the bounded reliable queue per viewer, the decisions
//! on client messages (who controls the page, whose input is relayed, rate limits, coordinate
//! mapping), the ordered input queue per channel, each channel's event log, and stats.
//! Must not touch sockets or WebSocket bytes (that is `viewer`), nor napi (that is `node_api`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::wall_clock_us;
use crate::events::{Event, EventError, EventLimits, EventLog, EventsAfter, Published};
use crate::frame::{check_base64_image, Frame, FrameGeometry, FrameMeta};
use crate::host::{ControlChange, Host, LogLevel, SourceRequest};
use crate::mailbox::{mailbox, Mailbox, Outbox, StickyKind};
use crate::protocol::{
    self, parse_client_message, parse_extended_message, ClientMessage, ErrorCode, ExtendedMessage,
    Mode,
};
use crate::takeover::{Enqueued, InputQueue, RateLimiter};
use crate::ws_codec::{CLOSE_GOING_AWAY, CLOSE_SLOW_CONSUMER};

/// Frame geometries kept per channel to map input from frames a viewer still shows.
const GEOMETRY_HISTORY: usize = 64;

/// Tunables of a registry; every limit is enforced, none grows memory without bound.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// How long a source keeps running after its last viewer left (a reload must not restart
    /// Chrome's encoder).
    pub linger: Duration,
    /// Viewers one channel accepts.
    pub max_viewers_per_agent: usize,
    /// Channels (agent or agent:thread keys) the registry holds.
    pub max_agents: usize,
    /// Viewers across all channels.
    pub max_viewers_total: usize,
    /// Largest client message accepted (bytes); larger closes with 1009.
    pub max_message_bytes: usize,
    /// Interval of server pings.
    pub heartbeat_interval: Duration,
    /// A viewer silent for this long (no data, no pong) is closed with 1001.
    pub heartbeat_timeout: Duration,
    /// Reliable messages (status, url, errors…) queued per viewer before it is closed 4001.
    pub max_queued_messages: usize,
    /// Inputs waiting to be relayed per channel; more are dropped and counted.
    pub max_pending_inputs: usize,
    /// Client messages per second a viewer may send (token bucket, one second of burst).
    pub max_inputs_per_second: u32,
    /// Input from a viewer allowed to control takes control when nobody holds it.
    pub implicit_control: bool,
    /// Limits of the agent event channel.
    pub events: EventLimits,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            linger: Duration::from_secs(3),
            max_viewers_per_agent: 100,
            max_agents: 1000,
            max_viewers_total: 10_000,
            max_message_bytes: 64 * 1024,
            heartbeat_interval: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(45),
            max_queued_messages: 256,
            max_pending_inputs: 256,
            max_inputs_per_second: 200,
            implicit_control: false,
            events: EventLimits::default(),
        }
    }
}

/// Which channel a viewer watches: an agent, or one thread of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelId {
    /// The channel's key, unambiguous by construction (`ChannelId::key_of`): the agent id, or
    /// `agentId:threadId` with any `%` and `:` of the agent id percent-encoded. For ids
    /// without those characters it is the key the TypeScript module uses.
    pub key: String,
    /// The agent.
    pub agent_id: String,
    /// The thread scope, if any.
    pub thread_id: Option<String>,
}

impl ChannelId {
    /// Longest agent or thread id, in bytes.
    pub const MAX_ID_BYTES: usize = 256;

    /// The id of peer-given ids, checked: 1 to 256 bytes each and no control characters.
    /// Otherwise ids are opaque, as in Mastra (Studio sends thread ids such as `thread/1 2`):
    /// the key keeps channels apart by its structure, not by refusing characters. The error
    /// is a message for the peer.
    pub fn checked(agent_id: &str, thread_id: Option<&str>) -> Result<ChannelId, String> {
        let check = |id: &str, name: &str| {
            if id.is_empty() || id.len() > Self::MAX_ID_BYTES {
                return Err(format!(
                    "{name} must be 1 to {} bytes long",
                    Self::MAX_ID_BYTES
                ));
            }
            if id.chars().any(char::is_control) {
                return Err(format!("{name} must not contain control characters"));
            }
            Ok(())
        };
        check(agent_id, "agentId")?;
        if let Some(thread_id) = thread_id {
            check(thread_id, "threadId")?;
        }
        Ok(ChannelId::new(agent_id, thread_id))
    }

    /// The id of `agent_id`, scoped to `thread_id` when given (and not empty).
    pub fn new(agent_id: &str, thread_id: Option<&str>) -> ChannelId {
        let thread_id = thread_id.filter(|t| !t.is_empty()).map(str::to_string);
        ChannelId {
            key: Self::key_of(agent_id, thread_id.as_deref()),
            agent_id: agent_id.to_string(),
            thread_id,
        }
    }

    /// The channel key of an agent (and thread): the agent id with `%` and `:` percent-encoded,
    /// then `:` and the thread id as it is. The first `:` always ends the agent part, so two
    /// different (agent, thread) pairs never share a key.
    pub fn key_of(agent_id: &str, thread_id: Option<&str>) -> String {
        let mut key = String::with_capacity(agent_id.len() + thread_id.map_or(0, |t| t.len() + 1));
        for c in agent_id.chars() {
            match c {
                '%' => key.push_str("%25"),
                ':' => key.push_str("%3A"),
                c => key.push(c),
            }
        }
        if let Some(thread) = thread_id.filter(|t| !t.is_empty()) {
            key.push(':');
            key.push_str(thread);
        }
        key
    }
}

/// Why a viewer is not admitted. Answered with HTTP 503 before the upgrade when possible,
/// else with close code 1013 (1001 when the registry is closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitError {
    /// `close()` was called.
    Closed,
    /// The channel has `max_viewers_per_agent` viewers.
    TooManyViewers,
    /// The registry holds `max_agents` channels.
    TooManyAgents,
    /// The registry holds `max_viewers_total` viewers.
    TooManyViewersTotal,
}

impl std::fmt::Display for AdmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AdmitError::Closed => "the stream registry is closed",
            AdmitError::TooManyViewers => "too many viewers for this agent",
            AdmitError::TooManyAgents => "too many agents are being streamed",
            AdmitError::TooManyViewersTotal => "too many viewers",
        })
    }
}

/// How a viewer's socket is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The socket was handed to Rust by file descriptor.
    Native,
    /// The socket stays in JS (TLS, no usable fd, or a drop-in `WSContext`).
    Bridged,
}

/// A message queued for one viewer's writer, in order.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A JSON TEXT message. `after_seq`: the newest frame when it was queued; the writer sends
    /// that frame first if it has not yet, so e.g. `{viewport}` follows its frame.
    Text {
        /// The JSON text.
        text: Bytes,
        /// Frame sequence number this message must follow.
        after_seq: u64,
    },
    /// Answer to a client ping.
    Pong(Bytes),
    /// Extended: replay the events after `last_seq`, then `resumed`, then the newest frame.
    Resume {
        /// The client's last sequence number (`None`: all held events).
        last_seq: Option<u64>,
    },
    /// Extended: `{"type":"snapshot"}` and the newest frame (waiting a little for one).
    Snapshot,
    /// Extended: new pacing of this viewer's frames.
    Pacing {
        /// New frame-rate cap (`Some(None)` removes it), if given.
        max_fps: Option<Option<f64>>,
        /// Ack pacing on/off, if given.
        ack: Option<bool>,
    },
}

/// How one viewer is asked to close: the first request wins; the token stops its tasks.
#[derive(Debug, Default)]
pub struct ViewerCloser {
    token: CancellationToken,
    request: Mutex<Option<(u16, String)>>,
}

impl ViewerCloser {
    /// Close with a close frame carrying `code` (first request wins).
    pub fn close(&self, code: u16, reason: &str) {
        let mut request = lock(&self.request);
        if request.is_none() && !self.token.is_cancelled() {
            *request = Some((code, reason.to_string()));
        }
        drop(request);
        self.token.cancel();
    }

    /// Drop the connection without a close frame (the peer is gone).
    pub fn abort(&self) {
        self.token.cancel();
    }

    /// Resolves when the viewer must stop. May be polled again after it resolved (the
    /// writer keeps one for its whole life).
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// Whether the viewer was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The close frame to send, if the close was requested with one.
    pub fn request(&self) -> Option<(u16, String)> {
        lock(&self.request).clone()
    }
}

/// Counters of one viewer, updated by its writer without locks.
#[derive(Debug, Default)]
pub struct ViewerCounters {
    /// Frames written to the socket.
    pub frames_sent: AtomicU64,
    /// Frames superseded before this viewer's writer got to them (counted when it moves on).
    pub frames_skipped: AtomicU64,
    /// Sequence number of the frame last written, or being written, to this viewer (at join:
    /// just below the newest frame, so that frame is sent at once). Stored only by its writer.
    pub seen_seq: AtomicU64,
    /// Ordinal (`Frame::index`) of that frame: skipped frames are counted in ordinals, since
    /// sequence numbers are shared with events.
    pub seen_index: AtomicU64,
    /// Bytes written (frames and messages, headers included).
    pub bytes_sent: AtomicU64,
    /// JSON messages written.
    pub messages_sent: AtomicU64,
}

/// How a viewer joins: its wire and its rights.
#[derive(Debug, Clone, Copy)]
pub struct JoinOptions {
    /// Compat or extended wire.
    pub mode: Mode,
    /// Whether it may ever control the page (`authorizeControl`).
    pub can_control: bool,
    /// Compat: queue `{status:'connected'}` first (the drop-in route sends its own).
    pub send_connected: bool,
}

impl JoinOptions {
    /// A compat viewer allowed to control, as Studio connects.
    pub fn compat(send_connected: bool) -> JoinOptions {
        JoinOptions {
            mode: Mode::Compat,
            can_control: true,
            send_connected,
        }
    }
}

/// What the registry and a viewer's tasks share about that viewer.
pub struct ViewerLink {
    /// Viewer id.
    pub id: u32,
    /// Its wire.
    pub mode: Mode,
    /// Whether it may control the page.
    pub can_control: bool,
    /// Its reliable queue (sticky state latest-wins).
    pub outbox: Outbox,
    /// Close control.
    pub closer: Arc<ViewerCloser>,
    /// Counters.
    pub counters: Arc<ViewerCounters>,
    /// Newest frame it acknowledged (ack pacing).
    pub acked_seq: AtomicU64,
    /// Woken on each ack.
    pub acked: Notify,
    limiter: Mutex<RateLimiter>,
}

impl ViewerLink {
    /// Queues a message for this viewer only; a full queue closes it (4001).
    pub fn send(&self, text: String) {
        let message = Outbound::Text {
            text: Bytes::from(text),
            after_seq: 0,
        };
        self.queue(message);
    }

    /// Queues any outbound item; a full queue closes the viewer (4001).
    pub fn queue(&self, message: Outbound) {
        if self.outbox.try_send(message).is_err() {
            self.close_slow();
        }
    }

    fn close_slow(&self) {
        self.closer
            .close(CLOSE_SLOW_CONSUMER, "slow consumer: message queue full");
    }

    /// Queues the newest value of a sticky kind: it replaces a value of that kind still
    /// waiting, so a burst of one kind never fills the queue.
    fn send_sticky(&self, kind: StickyKind, text: Bytes, after_seq: u64) {
        if self.outbox.send_sticky(kind, text, after_seq).is_err() {
            self.close_slow();
        }
    }

    /// Answers `{error, message}` in extended mode; compat viewers get no answers.
    fn answer_error(&self, code: &str, message: &str) {
        if self.mode == Mode::Extended {
            self.send(protocol::error_message(code, message));
        }
    }
}

struct ViewerEntry {
    transport: Transport,
    link: Arc<ViewerLink>,
    joined: Instant,
}

/// Everything a transport needs to serve one admitted viewer.
pub struct ViewerSlot {
    /// Viewer id, unique in the registry.
    pub id: u32,
    /// What the registry shares with this viewer's tasks.
    pub link: Arc<ViewerLink>,
    /// Extended: newest event number of the channel, changed on every event sent.
    pub events: watch::Receiver<u64>,
    /// Extended: the viewer gets the events after this number.
    pub event_cursor: u64,
    /// The channel watched.
    pub channel: Arc<Channel>,
    /// Reliable messages for this viewer, in order (sticky state latest-wins).
    pub outbox: Mailbox,
    /// Sender side of `outbox` (the reader queues pongs on it).
    pub outbox_tx: Outbox,
    /// The channel's latest frame; marked changed when there is one to send at once.
    pub frames: watch::Receiver<Option<Arc<Frame>>>,
    /// Close control.
    pub closer: Arc<ViewerCloser>,
    /// Counters.
    pub counters: Arc<ViewerCounters>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceState {
    Idle,
    Running,
    Lingering,
}

impl SourceState {
    fn name(self) -> &'static str {
        match self {
            SourceState::Idle => "idle",
            SourceState::Running => "running",
            SourceState::Lingering => "lingering",
        }
    }
}

struct ChannelState {
    viewers: HashMap<u32, ViewerEntry>,
    source: SourceState,
    generation: u32,
    status: Option<String>,
    url: Option<String>,
    viewport: Option<(f64, f64)>,
    /// Sequence number of the newest frame.
    frame_seq: u64,
    /// Frames published (the newest frame's `index`).
    frame_count: u64,
    /// The viewer holding control.
    controller: Option<u32>,
    /// (first frame seq, geometry) of the last geometry changes, oldest first.
    geometries: VecDeque<(u64, FrameGeometry)>,
    rejection_reported_for: u32,
    linger_timer: Option<AbortHandle>,
    /// Bumped on every entry into Lingering, so a timer of an earlier linger can tell.
    linger_epoch: u64,
}

/// Counters of one channel.
#[derive(Debug, Default)]
pub struct ChannelCounters {
    /// Frames accepted from the source.
    pub frames_in: AtomicU64,
    /// Payloads refused as frames (not base64 images).
    pub frames_rejected: AtomicU64,
    /// Pushes for a stale generation or an idle channel, ignored.
    pub frames_stale: AtomicU64,
    /// Bytes of accepted frames.
    pub bytes_in: AtomicU64,
    /// Client messages that failed validation.
    pub malformed_messages: AtomicU64,
    /// Inputs handed to the host.
    pub inputs_relayed: AtomicU64,
    /// Inputs dropped because the channel's input queue was full.
    pub inputs_dropped: AtomicU64,
    /// Inputs the host failed to apply.
    pub inputs_failed: AtomicU64,
    /// Inputs refused: not the controller, or a view-only viewer.
    pub inputs_refused: AtomicU64,
    /// Client messages over a viewer's rate, or inputs refused by a full queue.
    pub inputs_rate_limited: AtomicU64,
    /// Mouse moves replaced by a later move, or dropped from a full queue.
    pub moves_coalesced: AtomicU64,
    /// Source starts requested.
    pub starts: AtomicU64,
    /// Source stops requested.
    pub stops: AtomicU64,
}

/// One agent's (or agent thread's) stream: its viewers, its source state and its latest frame.
pub struct Channel {
    /// Which channel.
    pub id: ChannelId,
    state: Mutex<ChannelState>,
    frames: watch::Sender<Option<Arc<Frame>>>,
    /// Frames up to this number were withdrawn by `clear_page_state`: a publication still on
    /// its way must not bring one back, and writers must not wait for one.
    pub cleared_through: Arc<AtomicU64>,
    inputs: Arc<InputQueue>,
    /// The registry's sequence counter, shared by frames and events of every channel.
    seq_counter: Arc<AtomicU64>,
    events: Mutex<EventLog>,
    /// Changed whenever events were sent: a wake-up for extended writers, which then read the
    /// log (the value may lag; only the change matters).
    event_seq: watch::Sender<u64>,
    /// A fresh capture was asked of the source and no frame came since (one at a time).
    capture_requested: AtomicBool,
    /// Counters.
    pub counters: ChannelCounters,
}

impl Drop for Channel {
    fn drop(&mut self) {
        // Ends the channel's relay task.
        self.inputs.close();
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind, still consistent
    // enough to serve and to shut down; never let it take the process down.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Channel {
    fn source_request(&self, generation: u32) -> SourceRequest {
        SourceRequest {
            key: self.id.key.clone(),
            agent_id: self.id.agent_id.clone(),
            thread_id: self.id.thread_id.clone(),
            generation,
        }
    }

    /// A new sequence number (frames and events share them).
    fn next_seq(&self) -> u64 {
        self.seq_counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The newest sequence number given out by the registry.
    pub fn newest_seq(&self) -> u64 {
        self.seq_counter.load(Ordering::Relaxed)
    }

    /// The events after `after` (all held ones for `None`), at most `limit` (see
    /// `EventLog::after`).
    pub fn events_after(&self, after: Option<u64>, limit: usize) -> EventsAfter {
        let newest = self.newest_seq();
        lock(&self.events).after(after, newest, limit, Instant::now())
    }

    /// Runs `write` on the event log and wakes the extended writers if it sent events.
    fn write_events(&self, write: impl FnOnce(&mut EventLog, Instant) -> Published) -> Published {
        let published = write(&mut lock(&self.events), Instant::now());
        if published.sent > 0 {
            self.event_seq.send_replace(published.sent);
        }
        published
    }

    /// The newest frame, if any.
    pub fn latest_frame(&self) -> Option<Arc<Frame>> {
        self.frames.borrow().clone()
    }

    /// Counts a client message that is not valid for this protocol.
    pub fn count_malformed(&self) {
        self.counters
            .malformed_messages
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Makes `frame` the channel's latest, never replacing a newer one (publications made from
    /// runtime tasks may run out of order).
    fn publish(channel: &Channel, frame: Arc<Frame>) {
        if frame.seq <= channel.cleared_through.load(Ordering::Acquire) {
            return;
        }
        channel.frames.send_if_modified(|latest| {
            if latest
                .as_ref()
                .is_some_and(|current| current.seq >= frame.seq)
            {
                return false;
            }
            *latest = Some(frame);
            true
        });
    }

    /// Queues `text` for every viewer. A viewer whose queue is full is closed (4001): reliable
    /// messages are never dropped silently and never grow memory.
    fn broadcast(state: &mut ChannelState, text: String) {
        let text = Bytes::from(text);
        let after_seq = state.frame_seq;
        for viewer in state.viewers.values() {
            viewer.link.queue(Outbound::Text {
                text: text.clone(),
                after_seq,
            });
        }
    }

    /// Queues the newest value of a sticky kind for every viewer: latest-wins per viewer, so a
    /// burst of statuses, URLs or errors never closes a viewer that reads.
    fn broadcast_sticky(state: &mut ChannelState, kind: StickyKind, text: String) {
        let text = Bytes::from(text);
        let after_seq = state.frame_seq;
        for viewer in state.viewers.values() {
            viewer
                .link
                .send_sticky(kind.clone(), text.clone(), after_seq);
        }
    }

    /// Tells every viewer that the source reported `code`, with the fixed text for it (never
    /// the detail: that is for the log); latest-wins per code.
    fn broadcast_source_error(state: &mut ChannelState, code: &str) {
        Channel::broadcast_sticky(
            state,
            StickyKind::Error(code.to_string()),
            protocol::error_message(code, protocol::viewer_error_text(code)),
        );
    }

    /// The geometry of frame `seq` (the last change at or before it), for input mapping;
    /// `None` when `seq` is older than the kept history.
    fn geometry_at(state: &ChannelState, seq: u64) -> Option<FrameGeometry> {
        state
            .geometries
            .iter()
            .rev()
            .find(|(first, _)| *first <= seq)
            .map(|(_, geometry)| *geometry)
    }
}

/// Counters across the registry's life (channels come and go; these do not).
#[derive(Debug, Default)]
pub struct RegistryTotals {
    /// Source starts requested.
    pub starts: AtomicU64,
    /// Source stops requested.
    pub stops: AtomicU64,
    /// Viewers admitted.
    pub viewers_admitted: AtomicU64,
    /// Viewers gone.
    pub viewers_closed: AtomicU64,
    /// Admissions refused by a limit.
    pub admissions_refused: AtomicU64,
}

/// What a source push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Accepted and published with this sequence number.
    Published(u64),
    /// No channel with that key (no viewers): dropped.
    NoChannel,
    /// The push belongs to an older source session or the channel is idle: dropped.
    Stale,
    /// Not a base64 image: dropped, counted, viewers told once per session.
    Rejected(String),
}

/// Stats of one viewer.
#[derive(Debug, Clone)]
pub struct ViewerStats {
    /// Viewer id.
    pub id: u32,
    /// How its socket is served.
    pub transport: Transport,
    /// Its wire.
    pub mode: Mode,
    /// Whether it may control the page.
    pub can_control: bool,
    /// Frames written.
    pub frames_sent: u64,
    /// Frames skipped (it was busy).
    pub frames_skipped: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// JSON messages written.
    pub messages_sent: u64,
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
    /// `idle`, `running` or `lingering`.
    pub source_state: &'static str,
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
    /// Inputs refused (not the controller, view-only).
    pub inputs_refused: u64,
    /// Client messages over the rate limit, or refused by a full input queue.
    pub inputs_rate_limited: u64,
    /// Mouse moves coalesced or dropped for room.
    pub moves_coalesced: u64,
    /// Inputs waiting to be relayed.
    pub pending_inputs: usize,
    /// Metadata of the newest frame.
    pub last_frame_meta: Option<FrameMeta>,
    /// Frames accepted.
    pub frames_in: u64,
    /// Frames refused.
    pub frames_rejected: u64,
    /// Stale pushes ignored.
    pub frames_stale: u64,
    /// Bytes accepted.
    pub bytes_in: u64,
    /// Malformed client messages.
    pub malformed_messages: u64,
    /// Inputs relayed.
    pub inputs_relayed: u64,
    /// Inputs dropped (queue full).
    pub inputs_dropped: u64,
    /// Inputs the host failed to apply.
    pub inputs_failed: u64,
    /// Starts requested.
    pub starts: u64,
    /// Stops requested.
    pub stops: u64,
    /// Its viewers.
    pub viewers: Vec<ViewerStats>,
}

/// What the registry did to a channel's source under its lock, done after unlocking.
enum SourceEdge {
    Start(SourceRequest),
    Stop(SourceRequest),
}

/// All channels of one server.
pub struct Registry {
    config: RegistryConfig,
    host: Arc<dyn Host>,
    runtime: Handle,
    channels: Mutex<HashMap<String, Arc<Channel>>>,
    viewer_index: Mutex<HashMap<u32, Arc<Channel>>>,
    next_viewer_id: AtomicU32,
    next_generation: AtomicU32,
    /// Sequence numbers of frames and events; starts at the process start in microseconds
    /// since the epoch, so numbers of a restarted server are above the old ones.
    seq_counter: Arc<AtomicU64>,
    /// Sockets of released viewers still being drained after the server's close frame: they
    /// count against `max_viewers_total`, so a peer cannot pile them up.
    draining: AtomicUsize,
    closed: AtomicBool,
    /// Counters across the registry's life.
    pub totals: RegistryTotals,
}

impl Registry {
    /// A registry spawning its tasks on `runtime` and calling `host` on lifecycle edges.
    pub fn new(config: RegistryConfig, host: Arc<dyn Host>, runtime: Handle) -> Arc<Registry> {
        Arc::new(Registry {
            config,
            host,
            runtime,
            channels: Mutex::new(HashMap::new()),
            viewer_index: Mutex::new(HashMap::new()),
            next_viewer_id: AtomicU32::new(1),
            next_generation: AtomicU32::new(1),
            seq_counter: Arc::new(AtomicU64::new(wall_clock_us())),
            draining: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            totals: RegistryTotals::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The runtime the registry's tasks run on.
    pub fn runtime(&self) -> &Handle {
        &self.runtime
    }

    /// The host.
    pub fn host(&self) -> &Arc<dyn Host> {
        &self.host
    }

    /// Whether `close()` was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Whether a viewer for `id` would be admitted now (checked before the upgrade so a
    /// refusal is an HTTP 503; `admit` checks again).
    /// `count_refusal`: count a refusal in `admissions_refused` (the upgrade is answered 503).
    pub fn check_admission(&self, id: &ChannelId, count_refusal: bool) -> Result<(), AdmitError> {
        let verdict = self.admission_verdict(id);
        if verdict.is_err() && count_refusal {
            self.totals
                .admissions_refused
                .fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    fn admission_verdict(&self, id: &ChannelId) -> Result<(), AdmitError> {
        if self.is_closed() {
            return Err(AdmitError::Closed);
        }
        if self.connections() >= self.config.max_viewers_total {
            return Err(AdmitError::TooManyViewersTotal);
        }
        let channels = lock(&self.channels);
        match channels.get(&id.key) {
            Some(channel)
                if lock(&channel.state).viewers.len() >= self.config.max_viewers_per_agent =>
            {
                Err(AdmitError::TooManyViewers)
            }
            None if channels.len() >= self.config.max_agents => Err(AdmitError::TooManyAgents),
            _ => Ok(()),
        }
    }

    fn new_channel(self: &Arc<Self>, id: &ChannelId) -> Arc<Channel> {
        let inputs = Arc::new(InputQueue::new(self.config.max_pending_inputs));
        // Events numbered before the channel existed are unknown to it (resume says stale).
        let floor = self.seq_counter.load(Ordering::Relaxed);
        let channel = Arc::new(Channel {
            id: id.clone(),
            state: Mutex::new(ChannelState {
                viewers: HashMap::new(),
                source: SourceState::Idle,
                generation: 0,
                status: None,
                url: None,
                viewport: None,
                frame_seq: floor,
                frame_count: 0,
                controller: None,
                geometries: VecDeque::new(),
                rejection_reported_for: 0,
                linger_timer: None,
                linger_epoch: 0,
            }),
            frames: watch::Sender::new(None),
            cleared_through: Arc::new(AtomicU64::new(0)),
            inputs: inputs.clone(),
            seq_counter: self.seq_counter.clone(),
            events: Mutex::new(EventLog::new(self.config.events.clone(), floor)),
            event_seq: watch::Sender::new(floor),
            capture_requested: AtomicBool::new(false),
            counters: ChannelCounters::default(),
        });
        self.runtime.spawn(relay_inputs(
            Arc::downgrade(self),
            Arc::downgrade(&channel),
            inputs,
        ));
        channel
    }

    /// Admits a compat viewer allowed to control (see `admit_with`).
    pub fn admit(
        self: &Arc<Self>,
        id: &ChannelId,
        transport: Transport,
        send_connected: bool,
    ) -> Result<ViewerSlot, AdmitError> {
        self.admit_with(id, transport, JoinOptions::compat(send_connected))
    }

    /// Admits a viewer: registers it in its channel (creating the channel), queues what a
    /// joiner gets at once (compat: `{status:'connected'}` when `send_connected`; extended:
    /// `session-meta`; then the current status, url, viewport, then the newest frame) and
    /// starts the source on the 0→1 transition.
    pub fn admit_with(
        self: &Arc<Self>,
        id: &ChannelId,
        transport: Transport,
        join: JoinOptions,
    ) -> Result<ViewerSlot, AdmitError> {
        let refused = |error| {
            self.totals
                .admissions_refused
                .fetch_add(1, Ordering::Relaxed);
            Err(error)
        };
        if self.is_closed() {
            return refused(AdmitError::Closed);
        }
        if self.connections() >= self.config.max_viewers_total {
            return refused(AdmitError::TooManyViewersTotal);
        }
        let viewer_id = self.next_viewer_id.fetch_add(1, Ordering::Relaxed);
        let slot = {
            let mut channels = lock(&self.channels);
            // Again under the lock `close()` takes: a viewer admitted concurrently with it is
            // either refused here or closed by it.
            if self.is_closed() {
                return refused(AdmitError::Closed);
            }
            let channel = match channels.get(&id.key) {
                Some(channel) => channel.clone(),
                None => {
                    if channels.len() >= self.config.max_agents {
                        return refused(AdmitError::TooManyAgents);
                    }
                    let channel = self.new_channel(id);
                    channels.insert(id.key.clone(), channel.clone());
                    channel
                }
            };
            let mut state = lock(&channel.state);
            if state.viewers.len() >= self.config.max_viewers_per_agent {
                return refused(AdmitError::TooManyViewers);
            }
            // Room for the join messages on top of the reliable-message bound.
            let (outbox_tx, outbox) = mailbox(self.config.max_queued_messages.max(1) + 4);
            let mut join_messages = Vec::with_capacity(4);
            match join.mode {
                Mode::Extended => {
                    join_messages.push(protocol::session_meta_message(&protocol::SessionMeta {
                        agent_id: &channel.id.agent_id,
                        thread_id: channel.id.thread_id.as_deref(),
                        viewer_id,
                        can_control: join.can_control,
                        controller: state.controller,
                        status: state.status.as_deref(),
                        seq: channel.newest_seq(),
                        implicit_control: self.config.implicit_control,
                    }))
                }
                Mode::Compat if join.send_connected => {
                    join_messages.push(protocol::status_message("connected"))
                }
                Mode::Compat => {}
            }
            if let Some(status) = &state.status {
                join_messages.push(protocol::status_message(status));
            }
            if let Some(url) = &state.url {
                join_messages.push(protocol::url_message(url));
            }
            if let Some((width, height)) = state.viewport {
                join_messages.push(protocol::viewport_message(width, height));
            }
            for text in join_messages {
                // Cannot fail: the queue is new and has room for these.
                let _ = outbox_tx.try_send(Outbound::Text {
                    text: Bytes::from(text),
                    after_seq: 0,
                });
            }
            let mut frames = channel.frames.subscribe();
            let (seen_seq, seen_index) = match frames.borrow().as_ref() {
                Some(frame) => (frame.seq - 1, frame.index - 1),
                None => (state.frame_seq, state.frame_count),
            };
            if frames.borrow().is_some() {
                frames.mark_changed();
            }
            let closer = Arc::new(ViewerCloser::default());
            let counters = Arc::new(ViewerCounters::default());
            counters.seen_seq.store(seen_seq, Ordering::Relaxed);
            counters.seen_index.store(seen_index, Ordering::Relaxed);
            let link = Arc::new(ViewerLink {
                id: viewer_id,
                mode: join.mode,
                can_control: join.can_control,
                outbox: outbox_tx.clone(),
                closer: closer.clone(),
                counters: counters.clone(),
                acked_seq: AtomicU64::new(0),
                acked: Notify::new(),
                limiter: Mutex::new(RateLimiter::new(
                    self.config.max_inputs_per_second,
                    Instant::now(),
                )),
            });
            // Events from now on; a `resume` moves the cursor back. Marked changed so the
            // writer reads the log once: an event sent between these two lines still arrives.
            let mut events = channel.event_seq.subscribe();
            events.mark_changed();
            let event_cursor = lock(&channel.events).last_seq();
            state.viewers.insert(
                viewer_id,
                ViewerEntry {
                    transport,
                    link: link.clone(),
                    joined: Instant::now(),
                },
            );
            let edge = match state.source {
                SourceState::Idle => {
                    state.generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                    state.source = SourceState::Running;
                    Some(SourceEdge::Start(channel.source_request(state.generation)))
                }
                SourceState::Lingering => {
                    if let Some(timer) = state.linger_timer.take() {
                        timer.abort();
                    }
                    state.source = SourceState::Running;
                    None
                }
                SourceState::Running => None,
            };
            drop(state);
            if let Some(edge) = edge {
                self.apply(&channel, edge);
            }
            ViewerSlot {
                id: viewer_id,
                link,
                events,
                event_cursor,
                channel,
                outbox,
                outbox_tx,
                frames,
                closer,
                counters,
            }
        };
        lock(&self.viewer_index).insert(viewer_id, slot.channel.clone());
        self.totals.viewers_admitted.fetch_add(1, Ordering::Relaxed);
        Ok(slot)
    }

    fn apply(&self, channel: &Channel, edge: SourceEdge) {
        match edge {
            SourceEdge::Start(request) => {
                // A capture asked of an earlier session is not coming.
                channel.capture_requested.store(false, Ordering::Relaxed);
                channel.counters.starts.fetch_add(1, Ordering::Relaxed);
                self.totals.starts.fetch_add(1, Ordering::Relaxed);
                self.host.start_source(request);
            }
            SourceEdge::Stop(request) => {
                channel.counters.stops.fetch_add(1, Ordering::Relaxed);
                self.totals.stops.fetch_add(1, Ordering::Relaxed);
                self.host.stop_source(request);
            }
        }
    }

    /// Removes a viewer whose connection ended. On the 1→0 transition the source lingers, then
    /// stops; an idle channel with no viewers is forgotten.
    pub fn release(self: &Arc<Self>, channel: &Arc<Channel>, viewer_id: u32) {
        lock(&self.viewer_index).remove(&viewer_id);
        let mut channels = lock(&self.channels);
        let edge = {
            let mut state = lock(&channel.state);
            if state.viewers.remove(&viewer_id).is_none() {
                return;
            }
            self.totals.viewers_closed.fetch_add(1, Ordering::Relaxed);
            if state.controller == Some(viewer_id) {
                self.set_controller(channel, &mut state, None);
            }
            if !state.viewers.is_empty() {
                return;
            }
            match state.source {
                SourceState::Running if !self.config.linger.is_zero() && !self.is_closed() => {
                    state.source = SourceState::Lingering;
                    state.linger_epoch += 1;
                    let registry = Arc::downgrade(self);
                    let lingering = Arc::downgrade(channel);
                    let epoch = state.linger_epoch;
                    let linger = self.config.linger;
                    let timer = self.runtime.spawn(async move {
                        tokio::time::sleep(linger).await;
                        if let (Some(registry), Some(channel)) =
                            (registry.upgrade(), lingering.upgrade())
                        {
                            registry.linger_expired(&channel, epoch);
                        }
                    });
                    state.linger_timer = Some(timer.abort_handle());
                    None
                }
                SourceState::Running | SourceState::Lingering => {
                    state.source = SourceState::Idle;
                    forget_channel(&mut channels, channel);
                    Some(SourceEdge::Stop(channel.source_request(state.generation)))
                }
                SourceState::Idle => {
                    forget_channel(&mut channels, channel);
                    None
                }
            }
        };
        // Under the channels lock, like every edge: see `linger_expired`.
        if let Some(edge) = edge {
            self.apply(channel, edge);
        }
        drop(channels);
    }

    fn linger_expired(&self, channel: &Arc<Channel>, epoch: u64) {
        let mut channels = lock(&self.channels);
        let mut state = lock(&channel.state);
        if state.source != SourceState::Lingering
            || state.linger_epoch != epoch
            || !state.viewers.is_empty()
        {
            return;
        }
        state.source = SourceState::Idle;
        state.linger_timer = None;
        forget_channel(&mut channels, channel);
        let edge = SourceEdge::Stop(channel.source_request(state.generation));
        drop(state);
        // Still under the channels lock: the host sees stops and starts of a key in the order
        // the state changed (a start of a new channel for this key needs this lock).
        self.apply(channel, edge);
    }

    /// The source of `key` ended by itself (its browser crashed or went away): the channel
    /// goes idle and keeps its viewers; the next viewer or a `relaunch` starts a new session.
    /// False when `generation` is not the live session.
    pub fn source_ended(&self, key: &str, generation: u32) -> bool {
        let mut channels = lock(&self.channels);
        let Some(channel) = channels.get(key).cloned() else {
            return false;
        };
        let mut state = lock(&channel.state);
        if state.generation != generation || state.source == SourceState::Idle {
            return false;
        }
        if let Some(timer) = state.linger_timer.take() {
            timer.abort();
        }
        state.source = SourceState::Idle;
        if state.viewers.is_empty() {
            forget_channel(&mut channels, &channel);
        }
        true
    }

    /// Starts a new source session for an idle channel that still has viewers.
    fn restart_idle_source(&self, channel: &Arc<Channel>) {
        let channels = lock(&self.channels);
        let mut state = lock(&channel.state);
        if state.source != SourceState::Idle || state.viewers.is_empty() || self.is_closed() {
            return;
        }
        state.generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        state.source = SourceState::Running;
        let edge = SourceEdge::Start(channel.source_request(state.generation));
        drop(state);
        self.apply(channel, edge);
        drop(channels);
    }

    /// Whether `generation` is the live (running or lingering) source session of `key`.
    pub fn is_live(&self, key: &str, generation: u32) -> bool {
        self.with_live_source(key, Some(generation), |_, _| ())
            .is_some()
    }

    /// The channel for `key`, if it has viewers or a lingering source.
    pub fn channel(&self, key: &str) -> Option<Arc<Channel>> {
        lock(&self.channels).get(key).cloned()
    }

    /// The channel a viewer watches and what it shares with the viewer.
    pub fn viewer_link(&self, viewer_id: u32) -> Option<(Arc<Channel>, Arc<ViewerLink>)> {
        let channel = self.viewer_channel(viewer_id)?;
        let link = lock(&channel.state).viewers.get(&viewer_id)?.link.clone();
        Some((channel, link))
    }

    /// The channel a viewer watches.
    pub fn viewer_channel(&self, viewer_id: u32) -> Option<Arc<Channel>> {
        lock(&self.viewer_index).get(&viewer_id).cloned()
    }

    /// Locks the state of `key`'s channel if `generation` (when given) is its current source
    /// generation and its source is not idle.
    fn with_live_source<R>(
        &self,
        key: &str,
        generation: Option<u32>,
        f: impl FnOnce(&Arc<Channel>, &mut ChannelState) -> R,
    ) -> Option<R> {
        let channel = self.channel(key)?;
        let mut state = lock(&channel.state);
        let live =
            state.source != SourceState::Idle && generation.is_none_or(|g| g == state.generation);
        if !live {
            return None;
        }
        Some(f(&channel, &mut state))
    }

    /// Publishes a frame (base64 image text) from the source of `key`. `generation` `None`
    /// accepts it for whatever source is live (the drop-in `broadcastFrame`).
    pub fn push_frame(
        &self,
        key: &str,
        generation: Option<u32>,
        text: Bytes,
        meta: FrameMeta,
    ) -> PushOutcome {
        let Some(channel) = self.channel(key) else {
            return PushOutcome::NoChannel;
        };
        let outcome = self.with_live_source(key, generation, |channel, state| {
            if let Err(rejection) = check_base64_image(&text) {
                channel
                    .counters
                    .frames_rejected
                    .fetch_add(1, Ordering::Relaxed);
                if state.rejection_reported_for != state.generation {
                    state.rejection_reported_for = state.generation;
                    self.host.log(
                        LogLevel::Warn,
                        format!("{key}: the browser source sent an invalid frame: {rejection}"),
                    );
                    Channel::broadcast_source_error(state, ErrorCode::SCREENCAST_FAILED);
                }
                return PushOutcome::Rejected(rejection.to_string());
            }
            let seq = channel.next_seq();
            state.frame_seq = seq;
            state.frame_count += 1;
            channel.counters.frames_in.fetch_add(1, Ordering::Relaxed);
            channel
                .counters
                .bytes_in
                .fetch_add(text.len() as u64, Ordering::Relaxed);
            channel.capture_requested.store(false, Ordering::Relaxed);
            let frame = Arc::new(Frame::from_base64(seq, state.frame_count, text, meta));
            if state.geometries.back().map(|(_, g)| *g) != Some(frame.geometry) {
                if state.geometries.len() == GEOMETRY_HISTORY {
                    state.geometries.pop_front();
                }
                state.geometries.push_back((seq, frame.geometry));
            }
            if Handle::try_current().is_ok() {
                Channel::publish(channel, frame);
            } else {
                // Off the runtime (a push from the JS thread): publishing wakes every viewer's
                // writer, a cross-thread wake each; a runtime task does that instead, so the JS
                // thread's cost per frame does not grow with the number of viewers.
                let channel = channel.clone();
                self.runtime
                    .spawn(async move { Channel::publish(&channel, frame) });
            }
            // Queued now, in order with the source's other messages; each writer holds it
            // until it has sent this frame (`after_seq`).
            let size = (meta.device_width, meta.device_height);
            if size.0 > 0.0 && size.1 > 0.0 && state.viewport != Some(size) {
                state.viewport = Some(size);
                Channel::broadcast_sticky(
                    state,
                    StickyKind::Viewport,
                    protocol::viewport_message(size.0, size.1),
                );
            }
            PushOutcome::Published(seq)
        });
        outcome.unwrap_or_else(|| {
            channel
                .counters
                .frames_stale
                .fetch_add(1, Ordering::Relaxed);
            PushOutcome::Stale
        })
    }

    /// Sets and broadcasts the status of `key`'s source (`browser_starting`, `streaming`,
    /// `browser_closed`…). Returns false when stale or unknown.
    pub fn set_status(&self, key: &str, generation: Option<u32>, status: &str) -> bool {
        self.with_live_source(key, generation, |_, state| {
            state.status = Some(status.to_string());
            Channel::broadcast_sticky(state, StickyKind::Status, protocol::status_message(status));
        })
        .is_some()
    }

    /// Sets and broadcasts the page URL if it changed.
    pub fn set_url(&self, key: &str, generation: Option<u32>, url: &str) -> bool {
        self.with_live_source(key, generation, |_, state| {
            if state.url.as_deref() != Some(url) {
                state.url = Some(url.to_string());
                Channel::broadcast_sticky(state, StickyKind::Url, protocol::url_message(url));
            }
        })
        .is_some()
    }

    /// Reports an error of `key`'s source: viewers get `{error: code, message}` with the
    /// fixed text for `code` (`protocol::viewer_error_text`), never `detail`, which may hold
    /// an endpoint or a deployer's error text; `detail` goes to the host's log. Latest-wins
    /// per code for each viewer.
    pub fn broadcast_error(
        &self,
        key: &str,
        generation: Option<u32>,
        code: &str,
        detail: &str,
    ) -> bool {
        let sent = self
            .with_live_source(key, generation, |_, state| {
                Channel::broadcast_source_error(state, code);
            })
            .is_some();
        if sent {
            self.host
                .log(LogLevel::Warn, format!("{key}: {code}: {detail}"));
        }
        sent
    }

    /// Broadcasts a JSON text as it is (drop-in `broadcastStatus` of an arbitrary object).
    /// A `{status}` object also becomes the channel's sticky status.
    pub fn broadcast_json(&self, key: &str, json: &str) -> bool {
        let status = serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(String::from));
        self.with_live_source(key, None, |_, state| match status {
            Some(status) => {
                state.status = Some(status);
                Channel::broadcast_sticky(state, StickyKind::Status, json.to_string());
            }
            None => Channel::broadcast(state, json.to_string()),
        })
        .is_some()
    }

    /// Forgets the page state of `key` (url, viewport, latest frame): the browser session is
    /// over and the next one must send fresh data.
    pub fn clear_page_state(&self, key: &str) {
        if let Some(channel) = self.channel(key) {
            let mut state = lock(&channel.state);
            state.url = None;
            state.viewport = None;
            channel
                .cleared_through
                .store(state.frame_seq, Ordering::Release);
            channel.frames.send_replace(None);
        }
    }

    /// Number of viewers of `key`.
    pub fn viewer_count(&self, key: &str) -> usize {
        self.channel(key)
            .map_or(0, |channel| lock(&channel.state).viewers.len())
    }

    /// Whether `key`'s source is live and streaming.
    pub fn is_streaming(&self, key: &str) -> bool {
        self.channel(key).is_some_and(|channel| {
            let state = lock(&channel.state);
            state.source != SourceState::Idle && state.status.as_deref() == Some("streaming")
        })
    }

    /// Closes a viewer with a close frame carrying `code`, or, with `None`, just detaches it
    /// (drop-in `removeViewer`, a bridged socket that already closed). False if unknown.
    /// A detached viewer is released at once, so counts are exact when this returns.
    pub fn close_viewer(self: &Arc<Self>, viewer_id: u32, close: Option<(u16, &str)>) -> bool {
        let Some(channel) = self.viewer_channel(viewer_id) else {
            return false;
        };
        let state = lock(&channel.state);
        let Some(viewer) = state.viewers.get(&viewer_id) else {
            return false;
        };
        match close {
            Some((code, reason)) => viewer.link.closer.close(code, reason),
            None => viewer.link.closer.abort(),
        }
        drop(state);
        if close.is_none() {
            self.release(&channel, viewer_id);
        }
        true
    }

    /// Closes every viewer with 1001, stops every source, refuses new viewers. Writers get
    /// `CLOSE_GRACE` to send their close frame; then their tasks are cut.
    pub fn close(self: &Arc<Self>) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let channels: Vec<Arc<Channel>> = lock(&self.channels).values().cloned().collect();
        for channel in channels {
            {
                let mut channels = lock(&self.channels);
                let mut state = lock(&channel.state);
                for viewer in state.viewers.values() {
                    viewer
                        .link
                        .closer
                        .close(CLOSE_GOING_AWAY, "server shutting down");
                }
                if let Some(timer) = state.linger_timer.take() {
                    timer.abort();
                }
                let was_live = state.source != SourceState::Idle;
                state.source = SourceState::Idle;
                if state.viewers.is_empty() {
                    forget_channel(&mut channels, &channel);
                }
                let edge =
                    was_live.then(|| SourceEdge::Stop(channel.source_request(state.generation)));
                drop(state);
                if let Some(edge) = edge {
                    self.apply(&channel, edge);
                }
            };
        }
    }

    /// Handles one TEXT message of a viewer, in its mode: compat messages are inputs (invalid
    /// ones counted, never answered); extended messages are answered as docs/PROTOCOL.md says.
    pub fn on_client_text(self: &Arc<Self>, channel: &Arc<Channel>, link: &ViewerLink, text: &str) {
        match link.mode {
            Mode::Compat => match parse_client_message(text) {
                Ok(input) => {
                    if self.take_tokens(channel, link, 1, input.is_mouse_move()) {
                        self.submit_input(channel, link, input, false, None);
                    }
                }
                Err(_) => channel.count_malformed(),
            },
            Mode::Extended => self.on_extended_text(channel, link, text),
        }
    }

    /// Handles a binary message of a viewer: no mode accepts one.
    pub fn on_client_binary(&self, channel: &Channel, link: &ViewerLink) {
        channel.count_malformed();
        if self.take_tokens(channel, link, 1, false) {
            link.answer_error("bad_message", "binary messages are not accepted");
        }
    }

    fn on_extended_text(self: &Arc<Self>, channel: &Arc<Channel>, link: &ViewerLink, text: &str) {
        let message = match parse_extended_message(text) {
            Ok(ExtendedMessage::Ack { seq }) => {
                // Acks are paced by the frames they answer: no token.
                link.acked_seq.fetch_max(seq, Ordering::Relaxed);
                link.acked.notify_one();
                return;
            }
            Ok(message) => message,
            Err(error) => {
                channel.count_malformed();
                if self.take_tokens(channel, link, 1, false) {
                    link.answer_error("bad_message", &error.to_string());
                }
                return;
            }
        };
        let is_move =
            matches!(&message, ExtendedMessage::Input { input, .. } if input.is_mouse_move());
        // Messages that make the server do much (replay a ring, send a frame, tell every
        // viewer and the deployer) cost more of the viewer's budget.
        let cost = match &message {
            ExtendedMessage::Resume { .. } => 20,
            ExtendedMessage::SnapshotRequest => 10,
            ExtendedMessage::ControlRequest | ExtendedMessage::ControlRelease => 5,
            _ => 1,
        };
        if !self.take_tokens(channel, link, cost, is_move) {
            return;
        }
        match message {
            ExtendedMessage::Input {
                input,
                frame_pixels,
                frame_seq,
            } => self.submit_input(channel, link, input, frame_pixels, frame_seq),
            ExtendedMessage::Resume { last_seq } => link.queue(Outbound::Resume { last_seq }),
            ExtendedMessage::SnapshotRequest => {
                let no_frame = channel.latest_frame().is_none();
                if no_frame && !channel.capture_requested.swap(true, Ordering::Relaxed) {
                    let live = self.with_live_source(&channel.id.key, None, |channel, state| {
                        channel.source_request(state.generation)
                    });
                    if let Some(request) = live {
                        self.host.capture_frame(request);
                    }
                }
                link.queue(Outbound::Snapshot);
            }
            ExtendedMessage::Config { max_fps, ack } => {
                link.queue(Outbound::Pacing { max_fps, ack })
            }
            ExtendedMessage::ControlRequest => self.request_control(channel, link),
            ExtendedMessage::ControlRelease => {
                let mut state = lock(&channel.state);
                if state.controller == Some(link.id) {
                    self.set_controller(channel, &mut state, None);
                } else {
                    drop(state);
                    link.answer_error("not_controller", "this viewer does not hold control");
                }
            }
            ExtendedMessage::Ack { .. } => {}
        }
    }

    /// Takes `cost` tokens of the viewer's rate limit. Over the limit, a mouse move is dropped
    /// silently (the next one carries the position); anything else is answered
    /// `rate_limited`, at most once a second.
    fn take_tokens(&self, channel: &Channel, link: &ViewerLink, cost: u32, is_move: bool) -> bool {
        let now = Instant::now();
        let mut limiter = lock(&link.limiter);
        if limiter.try_take(now, cost) {
            return true;
        }
        channel
            .counters
            .inputs_rate_limited
            .fetch_add(1, Ordering::Relaxed);
        let report = !is_move && limiter.may_report(now);
        drop(limiter);
        if report {
            link.answer_error(
                "rate_limited",
                &format!(
                    "more than {} messages per second; some were dropped",
                    self.config.max_inputs_per_second
                ),
            );
        }
        false
    }

    /// Relays `input` of `link` if it may control the page now (taking control implicitly when
    /// configured), mapping frame-pixel coordinates to the page.
    fn submit_input(
        &self,
        channel: &Channel,
        link: &ViewerLink,
        input: ClientMessage,
        frame_pixels: bool,
        frame_seq: Option<u64>,
    ) {
        let mut input = input;
        let refusal = {
            let mut state = lock(&channel.state);
            let refusal = if !link.can_control {
                Some(("control_denied", "this viewer may only watch"))
            } else {
                match state.controller {
                    Some(holder) if holder == link.id => None,
                    Some(_) => Some(("not_controller", "another viewer controls the page")),
                    // Compat viewers can neither ask for control nor give it back: they act
                    // while nobody holds it, without taking it.
                    None if link.mode == Mode::Compat => None,
                    None if self.config.implicit_control => {
                        self.set_controller(channel, &mut state, Some(link.id));
                        None
                    }
                    None => Some((
                        "not_controller",
                        "send {\"type\":\"control-request\"} before input",
                    )),
                }
            };
            if refusal.is_none() && frame_pixels {
                if let ClientMessage::Mouse(mouse) = &mut input {
                    // The frame named, if its geometry is still known; else the last frame
                    // this viewer was sent.
                    let seen = link.counters.seen_seq.load(Ordering::Relaxed);
                    let geometry = frame_seq
                        .and_then(|seq| Channel::geometry_at(&state, seq))
                        .or_else(|| Channel::geometry_at(&state, seen));
                    if let Some(geometry) = geometry {
                        (mouse.x, mouse.y) = geometry.to_page(mouse.x, mouse.y);
                    }
                }
            }
            refusal
        };
        if let Some((code, message)) = refusal {
            channel
                .counters
                .inputs_refused
                .fetch_add(1, Ordering::Relaxed);
            link.answer_error(code, message);
            return;
        }
        let counters = &channel.counters;
        match channel.inputs.push(input) {
            Enqueued::Queued => {}
            Enqueued::Coalesced | Enqueued::MoveDropped | Enqueued::QueuedDroppingMove => {
                counters.moves_coalesced.fetch_add(1, Ordering::Relaxed);
            }
            Enqueued::Full => {
                counters.inputs_dropped.fetch_add(1, Ordering::Relaxed);
                counters.inputs_rate_limited.fetch_add(1, Ordering::Relaxed);
                let report = lock(&link.limiter).may_report(Instant::now());
                if report {
                    link.answer_error(
                        "rate_limited",
                        "the page is not keeping up with input; this input was dropped",
                    );
                }
            }
        }
    }

    fn request_control(&self, channel: &Channel, link: &ViewerLink) {
        if !link.can_control {
            link.answer_error("control_denied", "this viewer may only watch");
            return;
        }
        let mut state = lock(&channel.state);
        match state.controller {
            None => self.set_controller(channel, &mut state, Some(link.id)),
            Some(holder) if holder == link.id => {
                link.send(protocol::control_message(Some(holder), true));
            }
            // Answered under the lock, so it cannot arrive after a later `control` message.
            Some(holder) => link.send(protocol::control_busy_message(holder)),
        }
    }

    /// Gives control to `controller` (or nobody): every extended viewer is told, and the host
    /// (`onControlChange`). Called under the channel's state lock, so changes reach both in
    /// the order they happened.
    fn set_controller(&self, channel: &Channel, state: &mut ChannelState, controller: Option<u32>) {
        state.controller = controller;
        for (id, viewer) in &state.viewers {
            if viewer.link.mode == Mode::Extended {
                viewer.link.send(protocol::control_message(
                    controller,
                    controller == Some(*id),
                ));
            }
        }
        self.host.control_changed(ControlChange {
            key: channel.id.key.clone(),
            agent_id: channel.id.agent_id.clone(),
            thread_id: channel.id.thread_id.clone(),
            controller,
        });
    }

    /// Publishes an agent event (JSON object text) to the extended viewers of `key`: numbered,
    /// kept in the resume ring, `text_delta`s merged over the batch window. `Ok(false)` when
    /// the channel does not exist (nobody to tell).
    pub fn publish_event(self: &Arc<Self>, key: &str, json: String) -> Result<bool, EventError> {
        let event = Event::parse(json, self.config.events.max_event_bytes)?;
        let Some(channel) = self.channel(key) else {
            return Ok(false);
        };
        let published =
            channel.write_events(|log, now| log.publish(event, now, || channel.next_seq()));
        if let Some(epoch) = published.batch_started {
            let window = self.config.events.batch_window;
            let batching = Arc::downgrade(&channel);
            self.runtime.spawn(async move {
                tokio::time::sleep(window).await;
                if let Some(channel) = batching.upgrade() {
                    channel.write_events(|log, now| Published {
                        sent: log.flush_batch(epoch, now, || channel.next_seq()),
                        batch_started: None,
                    });
                }
            });
        }
        Ok(true)
    }

    /// Stats of every channel.
    pub fn stats(&self) -> Vec<ChannelStats> {
        let channels: Vec<Arc<Channel>> = lock(&self.channels).values().cloned().collect();
        channels
            .iter()
            .map(|channel| {
                let state = lock(&channel.state);
                let counters = &channel.counters;
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
                            // Frames strictly between the one it is on and the newest are
                            // superseded already: it can never get them.
                            frames_skipped: get(&link.counters.frames_skipped)
                                + state
                                    .frame_count
                                    .saturating_sub(get(&link.counters.seen_index))
                                    .saturating_sub(1),
                            bytes_sent: get(&link.counters.bytes_sent),
                            messages_sent: get(&link.counters.messages_sent),
                            queued_messages: link.outbox.len(),
                            connected_secs: viewer.joined.elapsed().as_secs_f64(),
                        }
                    })
                    .collect();
                let events = lock(&channel.events);
                viewers.sort_by_key(|v| v.id);
                ChannelStats {
                    id: channel.id.clone(),
                    source_state: state.source.name(),
                    generation: state.generation,
                    status: state.status.clone(),
                    url: state.url.clone(),
                    last_seq: if state.frame_count == 0 {
                        0
                    } else {
                        state.frame_seq
                    },
                    controller: state.controller,
                    events_published: events.published,
                    events_sent: events.sent,
                    ring_events: events.len(),
                    inputs_refused: get(&counters.inputs_refused),
                    inputs_rate_limited: get(&counters.inputs_rate_limited),
                    moves_coalesced: get(&counters.moves_coalesced),
                    pending_inputs: channel.inputs.len(),
                    last_frame_meta: channel.frames.borrow().as_ref().map(|f| f.meta),
                    frames_in: get(&counters.frames_in),
                    frames_rejected: get(&counters.frames_rejected),
                    frames_stale: get(&counters.frames_stale),
                    bytes_in: get(&counters.bytes_in),
                    malformed_messages: get(&counters.malformed_messages),
                    inputs_relayed: get(&counters.inputs_relayed),
                    inputs_dropped: get(&counters.inputs_dropped),
                    inputs_failed: get(&counters.inputs_failed),
                    starts: get(&counters.starts),
                    stops: get(&counters.stops),
                    viewers,
                }
            })
            .collect()
    }

    /// Viewers across all channels.
    pub fn viewer_total(&self) -> usize {
        lock(&self.viewer_index).len()
    }

    /// Viewers plus released sockets still draining: what `max_viewers_total` bounds.
    pub fn connections(&self) -> usize {
        self.viewer_total() + self.draining.load(Ordering::Relaxed)
    }

    /// Counts a socket drained after its viewer was released, until the guard drops; `None`
    /// when there is no room (the caller closes the socket at once).
    pub fn start_draining(self: &Arc<Self>) -> Option<DrainGuard> {
        let limit = self.config.max_viewers_total;
        self.draining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (self.viewer_total() + n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| DrainGuard {
                registry: self.clone(),
            })
    }
}

/// A socket being drained after its viewer's close (see `Registry::start_draining`).
pub struct DrainGuard {
    registry: Arc<Registry>,
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        self.registry.draining.fetch_sub(1, Ordering::AcqRel);
    }
}

fn forget_channel(channels: &mut HashMap<String, Arc<Channel>>, channel: &Arc<Channel>) {
    if channels
        .get(&channel.id.key)
        .is_some_and(|current| Arc::ptr_eq(current, channel))
    {
        channels.remove(&channel.id.key);
    }
}

/// Relays a channel's inputs to the host one at a time, in arrival order. Ends when the
/// channel is dropped.
async fn relay_inputs(registry: Weak<Registry>, channel: Weak<Channel>, inputs: Arc<InputQueue>) {
    while let Some(input) = inputs.pop().await {
        let (Some(registry), Some(channel)) = (registry.upgrade(), channel.upgrade()) else {
            return;
        };
        let request = {
            let state = lock(&channel.state);
            if state.source == SourceState::Idle {
                drop(state);
                // A source that ended by itself (its browser went away) starts again when a
                // viewer asks for it.
                if input == ClientMessage::Relaunch {
                    registry.restart_idle_source(&channel);
                }
                continue;
            }
            channel.source_request(state.generation)
        };
        channel
            .counters
            .inputs_relayed
            .fetch_add(1, Ordering::Relaxed);
        let host = registry.host.clone();
        drop(registry);
        if host.relay_input(request, input).await.is_err() {
            channel
                .counters
                .inputs_failed
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::host::{BridgedOutbound, HostFuture};
    use crate::protocol::ClientMessage;

    /// A host that records what the registry asked of it.
    #[derive(Default)]
    pub(crate) struct RecordingHost {
        pub starts: Mutex<Vec<SourceRequest>>,
        pub stops: Mutex<Vec<SourceRequest>>,
        pub inputs: Mutex<Vec<ClientMessage>>,
        pub bridged: Mutex<Vec<(u32, BridgedOutbound)>>,
        pub controls: Mutex<Vec<Option<u32>>>,
    }

    impl Host for RecordingHost {
        fn start_source(&self, request: SourceRequest) {
            lock(&self.starts).push(request);
        }
        fn stop_source(&self, request: SourceRequest) {
            lock(&self.stops).push(request);
        }
        fn relay_input(&self, _request: SourceRequest, input: ClientMessage) -> HostFuture {
            lock(&self.inputs).push(input);
            Box::pin(async { Ok(()) })
        }
        fn bridged_send(&self, viewer_id: u32, message: BridgedOutbound) -> HostFuture {
            lock(&self.bridged).push((viewer_id, message));
            Box::pin(async { Ok(()) })
        }
        fn control_changed(&self, change: ControlChange) {
            lock(&self.controls).push(change.controller);
        }
    }

    fn extended(can_control: bool) -> JoinOptions {
        JoinOptions {
            mode: Mode::Extended,
            can_control,
            send_connected: false,
        }
    }

    #[test]
    fn channel_ids_are_opaque_but_bounded() {
        assert_eq!(
            ChannelId::checked("agent", Some("t1")).map(|id| id.key),
            Ok("agent:t1".to_string())
        );
        for (agent, thread) in [
            ("", None),
            ("a\u{0}b", None),
            ("a\nb", None),
            ("a", Some("x\u{7f}y")),
            ("a", Some("")),
        ] {
            assert!(
                ChannelId::checked(agent, thread).is_err(),
                "{agent:?} {thread:?}"
            );
        }
        let long = "x".repeat(ChannelId::MAX_ID_BYTES + 1);
        assert!(ChannelId::checked(&long, None).is_err());
        for (agent, thread) in [
            ("agent.v2-ü", Some("thread:1")),
            ("a", Some("thread/1 2")),
            ("../etc", None),
            ("a:b", None),
            ("..", Some("..")),
        ] {
            let id = ChannelId::checked(agent, thread).expect("opaque ids are accepted");
            assert_eq!(id.agent_id, agent);
            assert_eq!(id.thread_id.as_deref(), thread);
        }
    }

    #[test]
    fn channel_keys_never_collide() {
        // Pairs that one `agentId:threadId` string would confuse.
        let ids = [
            ("a:b", None),
            ("a", Some("b")),
            ("a:b", Some("c")),
            ("a", Some("b:c")),
            ("a%3Ab", None),
            ("a%3Ab", Some("c")),
            ("a%", Some("3Ab")),
        ];
        let keys: std::collections::HashSet<String> = ids
            .iter()
            .map(|(agent, thread)| ChannelId::key_of(agent, *thread))
            .collect();
        assert_eq!(keys.len(), ids.len(), "{keys:?}");
        // Plain ids keep the TypeScript module's key.
        assert_eq!(
            ChannelId::key_of("agent-1", Some("thread/1 2")),
            "agent-1:thread/1 2"
        );
        assert_eq!(ChannelId::key_of("agent-1", None), "agent-1");
    }

    #[tokio::test]
    async fn one_controller_at_a_time_and_leaving_releases() {
        let (registry, host) = registry_with(RegistryConfig::default());
        let id = ChannelId::new("agent", None);
        let mut a = registry
            .admit_with(&id, Transport::Native, extended(true))
            .expect("admitted");
        let mut b = registry
            .admit_with(&id, Transport::Native, extended(true))
            .expect("admitted");
        let mut watcher = registry
            .admit_with(&id, Transport::Native, extended(false))
            .expect("admitted");
        let meta: serde_json::Value =
            serde_json::from_str(&drain_texts(&mut watcher)[0]).expect("json");
        assert_eq!(meta["type"], "session-meta");
        assert_eq!(meta["canControl"], false);
        drain_texts(&mut a);
        drain_texts(&mut b);
        let press = r#"{"type":"input","kind":"mouse","eventType":"mousePressed","x":1,"y":1}"#;
        // Input needs control first.
        registry.on_client_text(&b.channel, &b.link, press);
        assert!(drain_texts(&mut b)[0].contains("not_controller"));
        registry.on_client_text(&a.channel, &a.link, r#"{"type":"control-request"}"#);
        assert_eq!(
            drain_texts(&mut a),
            vec![r#"{"controller":1,"type":"control","you":true}"#]
        );
        assert_eq!(
            drain_texts(&mut b),
            vec![r#"{"controller":1,"type":"control","you":false}"#]
        );
        registry.on_client_text(&b.channel, &b.link, r#"{"type":"control-request"}"#);
        assert!(drain_texts(&mut b)[0].contains("control_busy"));
        registry.on_client_text(
            &watcher.channel,
            &watcher.link,
            r#"{"type":"control-request"}"#,
        );
        assert!(drain_texts(&mut watcher)
            .iter()
            .any(|t| t.contains("control_denied")));
        registry.on_client_text(&a.channel, &a.link, press);
        registry.on_client_text(&b.channel, &b.link, press);
        assert!(drain_texts(&mut b)[0].contains("not_controller"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(lock(&host.inputs).len(), 1, "only the controller's input");
        registry.release(&a.channel, a.id);
        assert_eq!(
            drain_texts(&mut b),
            vec![r#"{"controller":null,"type":"control","you":false}"#]
        );
        assert_eq!(*lock(&host.controls), vec![Some(1), None]);
        let stats = registry.stats();
        assert_eq!(stats[0].inputs_refused, 2);
    }

    #[tokio::test]
    async fn frame_pixels_map_to_the_page_through_the_frame_seen() {
        let (registry, host) = registry_with(RegistryConfig {
            implicit_control: true,
            ..RegistryConfig::default()
        });
        let id = ChannelId::new("agent", None);
        let viewer = registry
            .admit_with(&id, Transport::Native, extended(true))
            .expect("admitted");
        // 1x1 JPEG header claiming 320x240, shown on a 1280x960 page.
        let jpeg = [
            0xFFu8, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x00, 0xF0, 0x01, 0x40, 0x03, 0, 0, 0, 0,
        ];
        let text = base64::engine::general_purpose::STANDARD.encode(jpeg);
        use base64::Engine;
        let meta = FrameMeta {
            device_width: 1280.0,
            device_height: 960.0,
            ..FrameMeta::default()
        };
        let PushOutcome::Published(seq) = registry.push_frame("agent", None, text.into(), meta)
        else {
            panic!("published")
        };
        registry.on_client_text(
            &viewer.channel,
            &viewer.link,
            &format!(
                r#"{{"type":"input","kind":"mouse","eventType":"mousePressed","x":160,"y":120,"frameSeq":{seq}}}"#
            ),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let inputs = lock(&host.inputs).clone();
        assert!(
            matches!(&inputs[..], [ClientMessage::Mouse(m)] if (m.x, m.y) == (640.0, 480.0)),
            "{inputs:?}"
        );
        assert_eq!(registry.stats()[0].controller, Some(viewer.id));
    }

    #[tokio::test]
    async fn events_are_numbered_after_frames_and_rate_limits_answer() {
        let (registry, _host) = registry_with(RegistryConfig {
            max_inputs_per_second: 5,
            ..RegistryConfig::default()
        });
        let id = ChannelId::new("agent", None);
        let mut viewer = registry
            .admit_with(&id, Transport::Native, extended(true))
            .expect("admitted");
        drain_texts(&mut viewer);
        let PushOutcome::Published(frame_seq) =
            registry.push_frame("agent", None, JPEG.into(), FrameMeta::default())
        else {
            panic!("published")
        };
        assert_eq!(
            registry.publish_event("agent", r#"{"type":"tool_start"}"#.into()),
            Ok(true)
        );
        assert_eq!(
            registry.publish_event("nobody", r#"{"type":"tool_start"}"#.into()),
            Ok(false)
        );
        assert!(registry.publish_event("agent", "[]".into()).is_err());
        let events = viewer.channel.events_after(Some(frame_seq), 10);
        assert_eq!(events.events.len(), 1);
        assert!(events.events[0].seq > frame_seq);
        for _ in 0..20 {
            registry.on_client_text(&viewer.channel, &viewer.link, "{");
        }
        let answers = drain_texts(&mut viewer);
        assert_eq!(
            answers.iter().filter(|t| t.contains("bad_message")).count(),
            5
        );
        assert_eq!(
            answers
                .iter()
                .filter(|t| t.contains("rate_limited"))
                .count(),
            1
        );
        assert_eq!(registry.stats()[0].inputs_rate_limited, 15);
    }

    pub(crate) fn registry_with(config: RegistryConfig) -> (Arc<Registry>, Arc<RecordingHost>) {
        let host = Arc::new(RecordingHost::default());
        let registry = Registry::new(config, host.clone(), Handle::current());
        (registry, host)
    }

    fn drain_texts(slot: &mut ViewerSlot) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Outbound::Text { text, .. }) = slot.outbox.try_recv() {
            out.push(String::from_utf8(text.to_vec()).expect("utf8"));
        }
        out
    }

    const JPEG: &str = "/9j/4AAQSkZJRgABAQ==";

    #[tokio::test]
    async fn first_viewer_starts_once_last_viewer_stops_after_linger() {
        let config = RegistryConfig {
            linger: Duration::from_millis(50),
            ..RegistryConfig::default()
        };
        let (registry, host) = registry_with(config);
        let id = ChannelId::new("agent", None);
        let slots: Vec<ViewerSlot> = (0..50)
            .map(|_| {
                registry
                    .admit(&id, Transport::Native, true)
                    .expect("admitted")
            })
            .collect();
        assert_eq!(lock(&host.starts).len(), 1);
        assert_eq!(registry.viewer_count("agent"), 50);
        for slot in &slots {
            registry.release(&slot.channel, slot.id);
        }
        assert!(lock(&host.stops).is_empty(), "stop waits for the linger");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(lock(&host.stops).len(), 1);
        assert!(
            registry.channel("agent").is_none(),
            "idle channel forgotten"
        );
        assert_eq!(registry.totals.starts.load(Ordering::Relaxed), 1);
        assert_eq!(registry.totals.stops.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn rejoin_during_linger_keeps_the_source() {
        let config = RegistryConfig {
            linger: Duration::from_millis(80),
            ..RegistryConfig::default()
        };
        let (registry, host) = registry_with(config);
        let id = ChannelId::new("a", Some("t1"));
        assert_eq!(id.key, "a:t1");
        let first = registry
            .admit(&id, Transport::Native, true)
            .expect("admitted");
        registry.release(&first.channel, first.id);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = registry
            .admit(&id, Transport::Native, true)
            .expect("admitted");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(lock(&host.starts).len(), 1);
        assert!(lock(&host.stops).is_empty());
        registry.release(&second.channel, second.id);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(lock(&host.stops).len(), 1);
        // A new session gets a new generation, so late pushes of the old one are stale.
        let third = registry
            .admit(&id, Transport::Native, true)
            .expect("admitted");
        let starts = lock(&host.starts).clone();
        assert_eq!(starts.len(), 2);
        assert!(starts[1].generation > starts[0].generation);
        assert_eq!(
            registry.push_frame(
                "a:t1",
                Some(starts[0].generation),
                JPEG.into(),
                FrameMeta::default()
            ),
            PushOutcome::Stale
        );
        registry.release(&third.channel, third.id);
    }

    #[tokio::test]
    async fn late_joiner_gets_state_then_newest_frame() {
        let (registry, _host) = registry_with(RegistryConfig::default());
        let id = ChannelId::new("agent", None);
        let mut first = registry
            .admit(&id, Transport::Native, true)
            .expect("admitted");
        assert!(registry.set_status("agent", None, "browser_starting"));
        assert!(registry.set_status("agent", None, "streaming"));
        assert!(registry.set_url("agent", None, "https://example.test/"));
        let meta = FrameMeta {
            device_width: 800.0,
            device_height: 600.0,
            ..FrameMeta::default()
        };
        let PushOutcome::Published(seq) = registry.push_frame("agent", None, JPEG.into(), meta)
        else {
            panic!("published")
        };
        assert_eq!(
            drain_texts(&mut first),
            vec![
                r#"{"status":"connected"}"#,
                // Statuses are latest-wins per viewer: `browser_starting` was replaced before
                // this viewer read it.
                r#"{"status":"streaming"}"#,
                r#"{"url":"https://example.test/"}"#,
                r#"{"viewport":{"width":800,"height":600}}"#,
            ]
        );
        let mut late = registry
            .admit(&id, Transport::Native, true)
            .expect("admitted");
        assert_eq!(
            drain_texts(&mut late),
            vec![
                r#"{"status":"connected"}"#,
                r#"{"status":"streaming"}"#,
                r#"{"url":"https://example.test/"}"#,
                r#"{"viewport":{"width":800,"height":600}}"#,
            ]
        );
        assert!(late.frames.has_changed().expect("sender alive"));
        assert_eq!(late.frames.borrow().as_ref().map(|f| f.seq), Some(seq));
        assert_eq!(late.counters.seen_seq.load(Ordering::Relaxed), seq - 1);
        assert_eq!(late.counters.seen_index.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn invalid_frames_are_rejected_and_reported_once() {
        let (registry, _host) = registry_with(RegistryConfig::default());
        let id = ChannelId::new("agent", None);
        let mut slot = registry
            .admit(&id, Transport::Native, false)
            .expect("admitted");
        for _ in 0..3 {
            assert!(matches!(
                registry.push_frame("agent", None, "{\"oops\":1}".into(), FrameMeta::default()),
                PushOutcome::Rejected(_)
            ));
        }
        let texts = drain_texts(&mut slot);
        assert_eq!(texts.len(), 1);
        assert!(texts[0].contains("screencast_failed"));
        let stats = registry.stats();
        assert_eq!(stats[0].frames_rejected, 3);
        assert_eq!(stats[0].frames_in, 0);
    }

    #[tokio::test]
    async fn limits_refuse_admission() {
        let config = RegistryConfig {
            max_viewers_per_agent: 2,
            max_agents: 1,
            ..RegistryConfig::default()
        };
        let (registry, _host) = registry_with(config);
        let a = ChannelId::new("a", None);
        let _v1 = registry
            .admit(&a, Transport::Native, true)
            .expect("admitted");
        let _v2 = registry
            .admit(&a, Transport::Native, true)
            .expect("admitted");
        assert_eq!(
            registry.admit(&a, Transport::Native, true).err(),
            Some(AdmitError::TooManyViewers)
        );
        assert_eq!(
            registry.check_admission(&ChannelId::new("b", None), false),
            Err(AdmitError::TooManyAgents)
        );
        registry.close();
        assert_eq!(
            registry.admit(&a, Transport::Native, true).err(),
            Some(AdmitError::Closed)
        );
    }

    #[tokio::test]
    async fn full_queue_closes_the_slow_viewer_only() {
        let config = RegistryConfig {
            max_queued_messages: 3,
            ..RegistryConfig::default()
        };
        let (registry, _host) = registry_with(config);
        let id = ChannelId::new("agent", None);
        let stalled = registry
            .admit(&id, Transport::Native, false)
            .expect("admitted");
        let mut healthy = registry
            .admit(&id, Transport::Native, false)
            .expect("admitted");
        for i in 0..20 {
            // Messages that are not sticky state queue one by one.
            registry.broadcast_json("agent", &format!(r#"{{"note":{i}}}"#));
            drain_texts(&mut healthy);
        }
        assert!(stalled.closer.is_cancelled());
        assert_eq!(
            stalled.closer.request().map(|r| r.0),
            Some(CLOSE_SLOW_CONSUMER)
        );
        assert!(!healthy.closer.is_cancelled());
    }

    #[tokio::test]
    async fn bursts_of_sticky_state_are_latest_wins_and_close_nobody() {
        let config = RegistryConfig {
            max_queued_messages: 3,
            ..RegistryConfig::default()
        };
        let (registry, _host) = registry_with(config);
        let id = ChannelId::new("agent", None);
        let mut reading_late = registry
            .admit(&id, Transport::Native, false)
            .expect("admitted");
        for i in 0..500 {
            registry.set_url("agent", None, &format!("https://x.test/{i}"));
            registry.set_status("agent", None, if i % 2 == 0 { "a" } else { "b" });
            registry.broadcast_error("agent", None, "screencast_failed", &format!("detail {i}"));
            registry.broadcast_error("agent", None, "browser_crashed", "ws://secret-endpoint");
        }
        assert!(!reading_late.closer.is_cancelled());
        assert_eq!(
            drain_texts(&mut reading_late),
            vec![
                r#"{"url":"https://x.test/499"}"#.to_string(),
                r#"{"status":"b"}"#.to_string(),
                protocol::error_message(
                    "screencast_failed",
                    protocol::viewer_error_text("screencast_failed")
                ),
                protocol::error_message(
                    "browser_crashed",
                    protocol::viewer_error_text("browser_crashed")
                ),
            ]
        );
        // The next value of a kind taken already is queued again.
        registry.set_url("agent", None, "https://x.test/next");
        assert_eq!(
            drain_texts(&mut reading_late),
            vec![r#"{"url":"https://x.test/next"}"#.to_string()]
        );
    }

    #[tokio::test]
    async fn inputs_are_relayed_in_order_and_malformed_counted() {
        let (registry, host) = registry_with(RegistryConfig::default());
        let id = ChannelId::new("agent", None);
        let slot = registry
            .admit(&id, Transport::Native, false)
            .expect("admitted");
        for x in 0..5 {
            registry.on_client_text(
                &slot.channel,
                &slot.link,
                &format!(r#"{{"type":"mouse","eventType":"mousePressed","x":{x},"y":1}}"#),
            );
        }
        registry.on_client_text(&slot.channel, &slot.link, "garbage");
        registry.on_client_text(
            &slot.channel,
            &slot.link,
            r#"{"type":"mouse","eventType":"mouseMoved","x":-5,"y":1}"#,
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let xs: Vec<f64> = lock(&host.inputs)
            .iter()
            .map(|input| match input {
                ClientMessage::Mouse(m) => m.x,
                _ => -1.0,
            })
            .collect();
        assert_eq!(xs, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(registry.stats()[0].malformed_messages, 2);
    }

    #[tokio::test]
    async fn close_stops_sources_and_closes_viewers_with_1001() {
        let (registry, host) = registry_with(RegistryConfig::default());
        let slot = registry
            .admit(&ChannelId::new("agent", None), Transport::Native, true)
            .expect("admitted");
        registry.close();
        assert_eq!(slot.closer.request().map(|r| r.0), Some(CLOSE_GOING_AWAY));
        assert_eq!(lock(&host.stops).len(), 1);
        registry.release(&slot.channel, slot.id);
        assert!(registry.stats().is_empty());
        assert_eq!(lock(&host.stops).len(), 1, "no second stop");
    }
}

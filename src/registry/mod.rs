//! The registry: agent channels, their viewers, and the lifecycle of each channel's frame
//! source (idle → running → lingering → idle).
//!
//! Owns: admission limits, reference counting of viewers per channel, and the start/stop edges
//! sent to the host (exactly one start per 0→1 transition, one stop per 1→0 after the linger).
//! Its rooms: [`config`] (tunables and the option table the JS side reads), [`channel_id`]
//! (id rules and keys), [`channel`] (a channel's state and broadcast), [`viewer_link`] (what
//! the registry holds of one viewer), [`publish`] (what sources push: frames, status, url,
//! errors, events), [`control`] (client messages: control policy, rate limits, input relay),
//! [`control_lease`] (how long control lasts: idle release, the grace of a dropped
//! controller, `releaseControl`), [`privacy`] (the privacy blackout), [`replies`] (viewers'
//! answers to agent events), [`tabs`] (the agent's pages and `tab-select`), [`input_flow`] (token buckets and the coalescing input queue), [`event_log`] (agent
//! events: batching and the resume ring), [`stats`] (counters and snapshots).
//! Must not touch sockets or WebSocket bytes (that is `viewer`), nor napi (that is `node`).

pub(crate) mod channel;
pub(crate) mod channel_id;
pub(crate) mod config;
pub(crate) mod control;
pub(crate) mod control_lease;
pub mod event_log;
pub(crate) mod input_flow;
pub(crate) mod privacy;
pub(crate) mod publish;
pub(crate) mod replies;
pub(crate) mod stats;
pub(crate) mod tabs;
pub(crate) mod viewer_link;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};

use crate::clock::wall_clock_us;
use crate::frame::Frame;
use crate::host::{Host, SourceRequest};
use crate::mailbox::mailbox;
use crate::protocol::{self, ClientMessage, Mode, Status};
use crate::ws::codec::CLOSE_GOING_AWAY;

pub(crate) use crate::sync::lock;
use channel::ChannelState;
pub(crate) use channel::{Channel, SourceKind, SourceState, SOURCE_KIND_WAIT};
pub(crate) use channel_id::{AdmitError, ChannelId};
pub(crate) use config::RegistryConfig;
pub(crate) use control::{ControlRefusal, RemoteAsk, RemoteVerdict};
pub(crate) use event_log::EventLog;
pub(crate) use input_flow::{InputQueue, RateLimiter};
pub(crate) use publish::PushOutcome;
pub(crate) use stats::{
    ChannelCounters, ChannelStats, RegistryTotals, RetiredSnapshot, ViewerStats,
};
use viewer_link::ViewerEntry;
pub(crate) use viewer_link::{
    JoinOptions, Outbound, Transport, ViewerCloser, ViewerCounters, ViewerLink, ViewerSlot,
};

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
    /// WebRTC delivery, when configured (and video is on).
    pub(crate) webrtc: Option<crate::webrtc::WebRtc>,
    /// Scale-out over NATS, when configured.
    pub(crate) relay: Option<Arc<crate::relay::Relay>>,
    /// What the deployer made private (`setPrivacy`): kept while a channel does not exist,
    /// so its first viewer finds it private. Locked after `channels`.
    private: Mutex<privacy::PrivateSet>,
    /// What channels and viewers gone counted (see `stats::Retired`).
    pub(crate) retired: Arc<stats::Retired>,
    /// Retirements (a viewer or a channel leaving the live stats for `retired`) hold it
    /// shared, a metrics scrape exclusively: a scrape sees each count live or retired, never
    /// both or neither. Taken before any other lock.
    pub(crate) books: std::sync::RwLock<()>,
    /// Encode times of every channel's encoder, over the registry's life.
    pub(crate) encode_times: Arc<crate::codec::EncodeTimes>,
    /// Where this registry's `tracing` events go: its host's log (see `logging`).
    log_dispatch: tracing::Dispatch,
}

impl Registry {
    /// A registry spawning its tasks on `runtime` and calling `host` on lifecycle edges.
    pub fn new(config: RegistryConfig, host: Arc<dyn Host>, runtime: Handle) -> Arc<Registry> {
        let webrtc = config
            .webrtc
            .clone()
            .filter(|_| config.video)
            .map(|webrtc| {
                crate::webrtc::WebRtc::new(webrtc, u64::from(config.video_bitrate), runtime.clone())
            });
        let relay = config
            .relay
            .clone()
            .map(|relay| crate::relay::Relay::new(relay, runtime.clone()));
        let log_dispatch = crate::logging::dispatch_to(&host);
        let registry = Arc::new(Registry {
            webrtc,
            relay,
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
            private: Mutex::new(privacy::PrivateSet::default()),
            retired: Arc::default(),
            books: std::sync::RwLock::new(()),
            encode_times: Arc::default(),
            log_dispatch,
        });
        if let Some(relay) = &registry.relay {
            relay.start(Arc::downgrade(&registry));
        }
        registry
    }

    /// The dispatch of this registry's log lines (`logging::log!`).
    pub fn log_dispatch(&self) -> &tracing::Dispatch {
        &self.log_dispatch
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The runtime the registry's tasks run on.
    pub fn runtime(&self) -> &Handle {
        &self.runtime
    }

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
        if let (Err(error), true) = (&verdict, count_refusal) {
            self.count_refusal(error);
        }
        verdict
    }

    /// Counts a refused admission, in all and by its reason.
    fn count_refusal(&self, error: &AdmitError) {
        let totals = &self.totals;
        totals.admissions_refused.fetch_add(1, Ordering::Relaxed);
        let by_reason = match error {
            AdmitError::Closed => &totals.refused_closed,
            AdmitError::TooManyViewersTotal => &totals.refused_viewers_total,
            AdmitError::TooManyAgents => &totals.refused_agents,
            AdmitError::TooManyViewers => &totals.refused_viewers_per_agent,
        };
        by_reason.fetch_add(1, Ordering::Relaxed);
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
                source_kind: None,
                tenure: control_lease::Tenure::new(tokio::time::Instant::now()),
                privacy: lock(&self.private).reason_for(id),
                tabs: tabs::TabList::default(),
                owner_private: false,
            }),
            frames: watch::Sender::new(None),
            cleared_through: Arc::new(AtomicU64::new(0)),
            inputs: inputs.clone(),
            seq_counter: self.seq_counter.clone(),
            events: Mutex::new(EventLog::new(self.config.events.clone(), floor)),
            event_seq: watch::Sender::new(floor),
            capture_requested: AtomicBool::new(false),
            counters: ChannelCounters::default(),
            video: Mutex::new(None),
            source_decisions: watch::Sender::new(0),
            control_wake: Arc::new(Notify::new()),
            replies_in_flight: AtomicU32::new(0),
        });
        self.runtime.spawn(control_lease::watch_control(
            Arc::downgrade(self),
            Arc::downgrade(&channel),
            channel.control_wake.clone(),
        ));
        self.runtime.spawn(refine_when_quiet(
            Arc::downgrade(self),
            Arc::downgrade(&channel),
            channel.frames.subscribe(),
        ));
        self.runtime.spawn(relay_inputs(
            Arc::downgrade(self),
            Arc::downgrade(&channel),
            inputs,
        ));
        channel
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
            self.count_refusal(&error);
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
            let (outbox_tx, outbox) = mailbox(self.config.max_queued_messages.max(1) + 5);
            let mut join_messages = Vec::with_capacity(5);
            match join.mode {
                Mode::Extended => {
                    join_messages.push(protocol::session_meta_message(&protocol::SessionMeta {
                        agent_id: &channel.id.agent_id,
                        thread_id: channel.id.thread_id.as_deref(),
                        viewer_id,
                        can_control: join.can_control,
                        controller: state.controller,
                        status: match state.privacy {
                            Some(_) => Some(privacy::PRIVATE_STATUS),
                            None => state.status.as_deref(),
                        },
                        seq: channel.newest_seq(),
                        implicit_control: self.config.implicit_control,
                        webrtc: self.webrtc.as_ref().map(|webrtc| webrtc.client_json()),
                    }))
                }
                Mode::Compat if join.send_connected => {
                    join_messages.push(protocol::status_message(Status::CONNECTED))
                }
                Mode::Compat => {}
            }
            if let Some(status) = privacy::joiner_status(&state) {
                join_messages.push(status);
            }
            if let Some(url) = &state.url {
                join_messages.push(protocol::url_message(url));
            }
            if let Some((width, height)) = state.viewport {
                join_messages.push(protocol::viewport_message(width, height));
            }
            // Not to another instance's relay viewer: the relay carries no tabs.
            let tabs = (join.mode == Mode::Extended && transport != Transport::Relay)
                .then_some(state.tabs.message.as_ref())
                .flatten();
            if let Some(tabs) = tabs {
                join_messages.push(tabs.clone());
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
                webrtc: Mutex::new(None),
                video_requests: AtomicU64::new(0),
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
        let _books = self.retiring();
        lock(&self.viewer_index).remove(&viewer_id);
        let mut channels = lock(&self.channels);
        let edge = {
            let mut state = lock(&channel.state);
            let Some(viewer) = state.viewers.remove(&viewer_id) else {
                return;
            };
            self.totals.viewers_closed.fetch_add(1, Ordering::Relaxed);
            self.retired
                .viewer_gone(&viewer.link.counters, state.frame_count);
            channel.counters.frames_sent_departed.fetch_add(
                viewer.link.counters.frames_sent.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            if Channel::is_relayed(&state) && viewer.link.can_control {
                // The owner may have handed it control: it gives it back.
                if let Some(relay) = &self.relay {
                    let _ = relay.forward(&channel.id.key, viewer_id, &RemoteAsk::Leave, false);
                }
            }
            if state.controller == Some(viewer_id) {
                if state.tenure.reclaim.is_some() && !self.is_closed() {
                    // Kept for it through the grace period: it may come back and reclaim it.
                    state.tenure.left_at = Some(tokio::time::Instant::now());
                    channel.control_wake.notify_one();
                } else {
                    self.set_controller(channel, &mut state, None);
                }
            }
            if !state.viewers.is_empty() {
                return;
            }
            // A controller that left last keeps the session through its grace: reclaiming
            // needs the channel it holds control of.
            let linger = match state.tenure.left_at {
                Some(_) => self.config.linger.max(self.config.control_grace),
                None => self.config.linger,
            };
            match state.source {
                SourceState::Running if !linger.is_zero() && !self.is_closed() => {
                    state.source = SourceState::Lingering;
                    state.linger_epoch += 1;
                    let registry = Arc::downgrade(self);
                    let lingering = Arc::downgrade(channel);
                    let epoch = state.linger_epoch;
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
                    self.forget_channel(&mut channels, channel, &mut state);
                    Some(SourceEdge::Stop(channel.source_request(state.generation)))
                }
                SourceState::Idle => {
                    self.forget_channel(&mut channels, channel, &mut state);
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

    /// Removes `channel` (locked as `state`) from the registry. A controller kept through its
    /// grace period loses control now, everyone told: nobody is left to reclaim it, and the
    /// deployer's `onControlChange` must not wait for a change that would never come.
    fn forget_channel(
        &self,
        channels: &mut HashMap<String, Arc<Channel>>,
        channel: &Arc<Channel>,
        state: &mut ChannelState,
    ) {
        if state.controller.is_some() && !Channel::is_relayed(state) {
            let reason = Some(control_lease::reason::CONTROLLER_LEFT);
            self.change_controller(channel, state, None, reason);
        }
        if channels
            .get(&channel.id.key)
            .is_some_and(|current| Arc::ptr_eq(current, channel))
        {
            channels.remove(&channel.id.key);
            // Under the books (every caller holds them): out of the live stats, into the sums.
            channel.counters.add_to(&self.retired.channels);
        }
    }

    /// The books, shared: for a retirement (see `books`).
    fn retiring(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.books
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn linger_expired(&self, channel: &Arc<Channel>, epoch: u64) {
        let _books = self.retiring();
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
        self.forget_channel(&mut channels, channel, &mut state);
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
        let _books = self.retiring();
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
            self.forget_channel(&mut channels, &channel, &mut state);
        }
        drop(state);
        // A resume waiting for this session's kind waits no more.
        channel
            .source_decisions
            .send_modify(|n| *n = n.wrapping_add(1));
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

    /// Records where the browser of session `generation` of `key` is: here, or on another
    /// instance (then its viewers cannot control the page from here). False when stale.
    pub fn decide_source_kind(&self, key: &str, generation: u32, kind: SourceKind) -> bool {
        let decided = self
            .with_live_source(key, Some(generation), |channel, state| {
                state.source_kind = Some((generation, kind));
                channel.clone()
            })
            .inspect(|channel| {
                channel
                    .source_decisions
                    .send_modify(|n| *n = n.wrapping_add(1));
            });
        if kind == SourceKind::Local && decided.is_some() {
            // The browser is here now: a former owner's private status no longer holds.
            self.relayed_status_ended(key);
        }
        decided.is_some()
    }

    /// Whether `generation` is the live (running or lingering) source session of `key`.
    pub fn is_live(&self, key: &str, generation: u32) -> bool {
        self.with_live_source(key, Some(generation), |_, _| ())
            .is_some()
    }

    /// A viewer id no viewer has: how this instance names a viewer of another instance.
    pub fn reserve_viewer_id(&self) -> u32 {
        self.next_viewer_id.fetch_add(1, Ordering::Relaxed)
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

    /// Number of viewers of `key`.
    pub fn viewer_count(&self, key: &str) -> usize {
        self.channel(key)
            .map_or(0, |channel| lock(&channel.state).viewers.len())
    }

    /// Whether `key`'s channel has a live (running or lingering) source session.
    pub fn has_live_source(&self, key: &str) -> bool {
        self.channel(key)
            .is_some_and(|channel| lock(&channel.state).source != SourceState::Idle)
    }

    /// Whether `key`'s live source session is this instance's own (not relayed from another).
    pub fn has_local_source(&self, key: &str) -> bool {
        self.channel(key).is_some_and(|channel| {
            Channel::live_source_kind(&lock(&channel.state)) == Some(SourceKind::Local)
        })
    }

    /// Ends session `generation` of `key` and starts a new one for its viewers at once (the
    /// relay found the browser here after all). False when `generation` is not live.
    pub fn restart_source(&self, key: &str, generation: u32) -> bool {
        if !self.source_ended(key, generation) {
            return false;
        }
        if let Some(channel) = self.channel(key) {
            self.restart_idle_source(&channel);
        }
        true
    }

    /// Whether `key`'s source is live and streaming.
    pub fn is_streaming(&self, key: &str) -> bool {
        self.channel(key).is_some_and(|channel| {
            let state = lock(&channel.state);
            state.source != SourceState::Idle && state.status.as_deref() == Some(Status::STREAMING)
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
        if let Some(webrtc) = &self.webrtc {
            webrtc.close();
        }
        if let Some(relay) = &self.relay {
            relay.close();
        }
        let _books = self.retiring();
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
                    self.forget_channel(&mut channels, &channel, &mut state);
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

/// Once the channel's page has been quiet for `refine_after` (no new frame), asks the source
/// for one refinement of it — a screenshot at `refine_jpeg_quality` — when JPEG viewers
/// (compat, or extended without video) watch; video viewers get their own refinement from
/// the encoder. The refinement itself never asks for another. Ends when the channel is
/// dropped (its frame watch closes).
async fn refine_when_quiet(
    registry: Weak<Registry>,
    channel: Weak<Channel>,
    mut frames: watch::Receiver<Option<Arc<Frame>>>,
) {
    let Some((quiet, quality)) = registry
        .upgrade()
        .map(|r| (r.config.refine_after, r.config.refine_jpeg_quality))
    else {
        return;
    };
    if quiet.is_zero() || quality == 0 {
        return;
    }
    loop {
        if frames.changed().await.is_err() {
            return;
        }
        // Quiet: no newer frame for `quiet`.
        loop {
            tokio::select! {
                changed = frames.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(quiet) => break,
            }
        }
        let latest = frames.borrow_and_update().clone();
        if latest.is_none_or(|frame| frame.meta.refined) {
            continue;
        }
        let (Some(registry), Some(channel)) = (registry.upgrade(), channel.upgrade()) else {
            return;
        };
        let request = {
            let state = lock(&channel.state);
            let jpeg_viewers = state.viewers.values().any(|viewer| {
                viewer.link.mode == Mode::Compat
                    || !viewer.link.counters.video.load(Ordering::Relaxed)
            });
            if state.source == SourceState::Idle || !jpeg_viewers {
                continue;
            }
            channel.source_request(state.generation)
        };
        if registry.host.refine_frame(request, quality) {
            channel
                .counters
                .jpeg_refinements
                .fetch_add(1, Ordering::Relaxed);
        }
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

//! One channel: its locked state (source state, viewers, sticky status/url/viewport, controller,
//! geometry history), its counters, the newest frame, and broadcast to its viewers.
//! Must not decide lifecycle edges (the registry does) nor parse client messages (`control`).

use crate::sync::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::event_log::{EventLog, EventsAfter, Published};
use super::{ChannelCounters, ChannelId, InputQueue, Outbound, ViewerEntry};
use crate::codec::pipeline::VideoPipeline;
use crate::frame::{Frame, FrameGeometry};
use crate::host::SourceRequest;
use crate::mailbox::StickyKind;
use crate::protocol;

/// Frame geometries kept per channel to map input from frames a viewer still shows.
pub(super) const GEOMETRY_HISTORY: usize = 64;

/// Where a session's browser is, as the host decided it: it looks the browser up first (a
/// deployer's lookup may take a while), so a new session is undecided until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceKind {
    /// This instance has the browser.
    Local,
    /// The browser is on another instance: the session is a relay of its stream.
    Relayed,
}

/// How long a request that depends on where a new session's browser is (a resume from a
/// number placed elsewhere, video) waits for its host to say: past it, it is answered as for
/// a browser here.
pub const SOURCE_KIND_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a channel's source is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceState {
    /// No session: nobody watches, or the session ended by itself.
    Idle,
    /// A session runs and has viewers.
    Running,
    /// A session runs after its last viewer left, until the linger ends.
    Lingering,
}

pub(super) struct ChannelState {
    pub(super) viewers: HashMap<u32, ViewerEntry>,
    pub(super) source: SourceState,
    pub(super) generation: u32,
    pub(super) status: Option<String>,
    pub(super) url: Option<String>,
    pub(super) viewport: Option<(f64, f64)>,
    /// Sequence number of the newest frame.
    pub(super) frame_seq: u64,
    /// Frames published (the newest frame's `index`).
    pub(super) frame_count: u64,
    /// The viewer holding control.
    pub(super) controller: Option<u32>,
    /// (first frame seq, geometry) of the last geometry changes, oldest first.
    pub(super) geometries: VecDeque<(u64, FrameGeometry)>,
    pub(super) rejection_reported_for: u32,
    pub(super) linger_timer: Option<AbortHandle>,
    /// Bumped on every entry into Lingering, so a timer of an earlier linger can tell.
    pub(super) linger_epoch: u64,
    /// Where the browser of session `.0` is, once the host decided (see [`SourceKind`]); a
    /// relayed session's page cannot be controlled from here.
    pub(super) source_kind: Option<(u32, SourceKind)>,
    /// The current controller's tenure (see `control_lease`).
    pub(super) tenure: super::control_lease::Tenure,
    /// While the deployer keeps the page private (`setPrivacy`), its reason: no frame is
    /// taken in or sent, input is refused (see `privacy`).
    pub(super) privacy: Option<String>,
    /// The owner of this relayed channel told its private status (see `privacy`).
    pub(super) owner_private: bool,
    /// The source's pages, as last reported (see `tabs`).
    pub(super) tabs: super::tabs::TabList,
}

/// One agent's (or agent thread's) stream: its viewers, its source state and its latest frame.
pub struct Channel {
    /// Which channel.
    pub id: ChannelId,
    pub(super) state: Mutex<ChannelState>,
    pub(super) frames: watch::Sender<Option<Arc<Frame>>>,
    /// Frames up to this number were withdrawn by `clear_page_state`: a publication still on
    /// its way must not bring one back, and writers must not wait for one.
    pub cleared_through: Arc<AtomicU64>,
    pub(super) inputs: Arc<InputQueue>,
    /// The registry's sequence counter, shared by frames and events of every channel.
    pub(super) seq_counter: Arc<AtomicU64>,
    pub(super) events: Mutex<EventLog>,
    /// Changed whenever events were sent: a wake-up for extended writers, which then read the
    /// log (the value may lag; only the change matters).
    pub(super) event_seq: watch::Sender<u64>,
    /// A fresh capture was asked of the source and no frame came since (one at a time).
    pub(super) capture_requested: AtomicBool,
    pub counters: ChannelCounters,
    /// The video pipeline, while the channel has (or just had) video viewers.
    pub(super) video: Mutex<Option<Arc<VideoPipeline>>>,
    /// Changed when a session's source kind was decided or a session ended: a wake-up for
    /// [`Channel::decided_source_kind`] (only the change matters).
    pub(super) source_decisions: watch::Sender<u64>,
    /// Wakes the channel's control watchdog (`control_lease::watch_control`): control changed.
    pub(super) control_wake: Arc<tokio::sync::Notify>,
    /// Replies handed to the host and not answered yet (see `replies`).
    pub(super) replies_in_flight: std::sync::atomic::AtomicU32,
}

impl Drop for Channel {
    fn drop(&mut self) {
        // Ends the channel's relay task and its control watchdog.
        self.inputs.close();
        self.control_wake.notify_one();
    }
}

impl Channel {
    pub(super) fn source_request(&self, generation: u32) -> SourceRequest {
        SourceRequest {
            key: self.id.key.clone(),
            agent_id: self.id.agent_id.clone(),
            thread_id: self.id.thread_id.clone(),
            generation,
        }
    }

    /// A new sequence number (frames and events share them): one above the last, and never
    /// below the wall clock in microseconds. Numbers so follow time on every instance, which
    /// makes an owner's event numbers (kept by the relay on every instance) comparable with
    /// each instance's own: a hybrid logical clock, pushed forward by [`Channel::observe_seq`].
    pub(super) fn next_seq(&self) -> u64 {
        let now = crate::clock::wall_clock_us();
        let previous = self
            .seq_counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(last.saturating_add(1).max(now))
            })
            .unwrap_or_else(|last| last);
        previous.saturating_add(1).max(now)
    }

    /// A number given out elsewhere (an owner's event, relayed): later numbers here are above.
    pub(super) fn observe_seq(&self, seq: u64) {
        self.seq_counter.fetch_max(seq, Ordering::Relaxed);
    }

    /// The newest sequence number given out by the registry.
    pub fn newest_seq(&self) -> u64 {
        self.seq_counter.load(Ordering::Relaxed)
    }

    /// The events after `after` (all held ones for `None`), at most `limit` (see
    /// `EventLog::after`).
    pub fn events_after(&self, after: Option<u64>, limit: usize) -> EventsAfter {
        lock(&self.events).after(after, self.placeable_newest(), limit, Instant::now())
    }

    /// Whether the event log can place number `after` (else another instance's ring may).
    pub fn places(&self, after: u64) -> bool {
        lock(&self.events).places(after, self.placeable_newest())
    }

    /// The highest number a client may rightly hold: numbers follow the clock, so one above
    /// it is from another life (a number from an earlier one is below the log's floor).
    fn placeable_newest(&self) -> u64 {
        self.newest_seq().max(crate::clock::wall_clock_us())
    }

    /// Runs `write` on the event log and wakes the extended writers if it sent events.
    pub(super) fn write_events(
        &self,
        write: impl FnOnce(&mut EventLog, Instant) -> Published,
    ) -> Published {
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
    /// Whether `seq` can be the number of an event this channel sent: an event's number is
    /// never above the newest event's (numbers below the channel's start are not told apart:
    /// an old question may have left the ring and still be answered).
    pub fn event_numbered(&self, seq: u64) -> bool {
        seq > 0 && seq <= lock(&self.events).last_seq()
    }

    pub fn count_malformed(&self) {
        self.counters
            .malformed_messages
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Makes `frame` the channel's latest, never replacing a newer one (publications made from
    /// runtime tasks may run out of order).
    pub(super) fn publish(channel: &Channel, frame: Arc<Frame>) {
        if frame.seq <= channel.cleared_through.load(Ordering::Acquire) {
            return;
        }
        let offered = frame.clone();
        channel.frames.send_if_modified(|latest| {
            // Again under the watch's lock: a withdrawal (`clear_page_state`, privacy) that
            // came after the check above has its `send_replace(None)` after this.
            let withdrawn = frame.seq <= channel.cleared_through.load(Ordering::Acquire);
            if withdrawn
                || latest
                    .as_ref()
                    .is_some_and(|current| current.seq >= frame.seq)
            {
                return false;
            }
            *latest = Some(frame);
            true
        });
        // After the watch: a pipeline starting now reads the watch under the video lock, so
        // it either finds this frame there or is offered it here.
        let video = lock(&channel.video).clone();
        if let Some(video) = video {
            video.offer(&offered);
        }
    }

    /// Withdraws every picture up to the newest frame (`state` is this channel's, locked): the
    /// cached frame, frames still queued for viewers, the encoder's picture and chunks of
    /// them not sent yet. A publication still on its way cannot bring one back.
    pub(super) fn withdraw_pictures(&self, state: &ChannelState) {
        self.cleared_through
            .store(state.frame_seq, Ordering::Release);
        self.frames.send_replace(None);
        if let Some(video) = self.video_pipeline() {
            video.clear(state.frame_seq);
        }
    }

    /// The channel's video pipeline, if one runs.
    pub fn video_pipeline(&self) -> Option<Arc<VideoPipeline>> {
        lock(&self.video).clone()
    }

    /// Queues `text` for every viewer. A viewer whose queue is full is closed (4001): reliable
    /// messages are never dropped silently and never grow memory.
    pub(super) fn broadcast(state: &mut ChannelState, text: String) {
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
    pub(super) fn broadcast_sticky(state: &mut ChannelState, kind: StickyKind, text: String) {
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
    pub(super) fn broadcast_source_error(state: &mut ChannelState, code: &str) {
        Channel::broadcast_sticky(
            state,
            StickyKind::Error(code.to_string()),
            protocol::error_message(code, protocol::viewer_error_text(code)),
        );
    }

    /// Whether the live session's source is a relay from another instance.
    pub(super) fn is_relayed(state: &ChannelState) -> bool {
        Channel::live_source_kind(state) == Some(SourceKind::Relayed)
    }

    /// The kind of the live session's source, once decided.
    pub(super) fn live_source_kind(state: &ChannelState) -> Option<SourceKind> {
        match state.source_kind {
            Some((generation, kind))
                if state.source != SourceState::Idle && generation == state.generation =>
            {
                Some(kind)
            }
            _ => None,
        }
    }

    /// Whether a session runs whose host has not said yet where its browser is.
    pub fn source_undecided(&self) -> bool {
        let state = lock(&self.state);
        state.source != SourceState::Idle && Channel::live_source_kind(&state).is_none()
    }

    /// The kind of the live session's source, waiting up to `wait` for the host to decide it;
    /// `None` when there is no live session or it stayed undecided.
    pub async fn decided_source_kind(&self, wait: std::time::Duration) -> Option<SourceKind> {
        // Subscribed before the state is read: a decision after the read is a change seen.
        let mut decisions = self.source_decisions.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let state = lock(&self.state);
                if state.source == SourceState::Idle {
                    return None;
                }
                if let Some(kind) = Channel::live_source_kind(&state) {
                    return Some(kind);
                }
            }
            match tokio::time::timeout_at(deadline, decisions.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// The geometry of frame `seq` (the last change at or before it), for input mapping;
    /// `None` when `seq` is older than the kept history.
    pub(super) fn geometry_at(state: &ChannelState, seq: u64) -> Option<FrameGeometry> {
        state
            .geometries
            .iter()
            .rev()
            .find(|(first, _)| *first <= seq)
            .map(|(_, geometry)| *geometry)
    }
}

//! What the registry holds of one viewer: how it is served (`Transport`), its reliable queue's
//! sending end (`ViewerLink`), its closer and counters, and the `ViewerSlot` handed to the
//! viewer task at admission.
//! Must not touch sockets: the viewer task owns those.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::{lock, Channel, RateLimiter};
use crate::codec::pipeline::VideoSubscription;
use crate::frame::Frame;
use crate::mailbox::{Mailbox, Outbox, StickyKind};
use crate::protocol::{self, Mode};
use crate::ws::codec::CLOSE_SLOW_CONSUMER;

/// How a viewer's socket is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The socket was handed to Rust by file descriptor.
    Native,
    /// The socket stays in JS (TLS, no usable fd, or a drop-in `WSContext`).
    Bridged,
    /// No socket: the channel's stream to the other instances on the relay's bus.
    Relay,
}

/// A message queued for one viewer's writer, in order.
#[derive(Debug)]
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
    /// Extended: switch this viewer to video (its subscription to the channel's pipeline) or
    /// back to JPEG frames (`None`).
    Video(Option<VideoSubscription>),
    /// Extended: one of the viewer's WebRTC peers started (`true`) or stopped delivering
    /// pictures; JPEG frames on the socket stop while any delivers.
    WebRtcPictures(bool),
}

/// How one viewer is asked to close: the first request wins; the token stops its tasks.
#[derive(Debug, Default)]
pub struct ViewerCloser {
    pub(super) token: CancellationToken,
    pub(super) request: Mutex<Option<(u16, String)>>,
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
    /// Number of the event last written (extended): the relay viewer that replaces this one
    /// starts its events there.
    pub events_through: AtomicU64,
    /// Bytes written (frames and messages, headers included).
    pub bytes_sent: AtomicU64,
    /// JSON messages written.
    pub messages_sent: AtomicU64,
    /// The viewer receives video (it asked, and was subscribed).
    pub video: AtomicBool,
    /// Video chunks written.
    pub video_chunks_sent: AtomicU64,
    /// Times the viewer fell behind the video and skipped to a keyframe.
    pub video_lagged: AtomicU64,
}

impl ViewerCounters {
    /// Records the frame `seq` (ordinal `index`), shown as a JPEG, a video chunk or a WebRTC
    /// picture, as seen: input in frame pixels maps by its geometry, and frames skipped are
    /// counted from it. False if the viewer has it or a newer one. Stored by whichever of the
    /// viewer's deliveries shows pictures (its writer, or its WebRTC peer while that one does).
    pub fn mark_seen_at(&self, seq: u64, index: u64) -> bool {
        let seen = self.seen_seq.load(Ordering::Relaxed);
        if seq <= seen {
            return false;
        }
        let seen_index = self.seen_index.load(Ordering::Relaxed);
        let skipped = index.saturating_sub(seen_index).saturating_sub(1);
        self.seen_seq.store(seq, Ordering::Relaxed);
        self.seen_index.store(index, Ordering::Relaxed);
        self.frames_skipped.fetch_add(skipped, Ordering::Relaxed);
        true
    }
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
    /// A compat viewer allowed to control, as Studio connects (a test fixture).
    #[cfg(test)]
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
    pub counters: Arc<ViewerCounters>,
    /// Newest frame it acknowledged (ack pacing).
    pub acked_seq: AtomicU64,
    /// Woken on each ack.
    pub acked: Notify,
    pub(super) limiter: Mutex<RateLimiter>,
    /// Its WebRTC peer, while it has one (dropping the handle ends the peer).
    pub(super) webrtc: Mutex<Option<crate::webrtc::PeerHandle>>,
    /// Bumped on each of its video requests (`config.video`, on or off): an answer that had
    /// to wait is dropped when a later request came meanwhile.
    pub(super) video_requests: AtomicU64,
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

    pub(super) fn close_slow(&self) {
        self.closer
            .close(CLOSE_SLOW_CONSUMER, "slow consumer: message queue full");
    }

    /// Queues the newest value of a sticky kind: it replaces a value of that kind still
    /// waiting, so a burst of one kind never fills the queue.
    pub(super) fn send_sticky(&self, kind: StickyKind, text: Bytes, after_seq: u64) {
        if self.outbox.send_sticky(kind, text, after_seq).is_err() {
            self.close_slow();
        }
    }

    /// Answers `{error, message}` in extended mode; compat viewers get no answers.
    pub(super) fn answer_error(&self, code: &str, message: &str) {
        if self.mode == Mode::Extended {
            self.send(protocol::error_message(code, message));
        }
    }
}

pub(super) struct ViewerEntry {
    pub(super) transport: Transport,
    pub(super) link: Arc<ViewerLink>,
    pub(super) joined: Instant,
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
    pub counters: Arc<ViewerCounters>,
}

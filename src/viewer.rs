//! Viewer transport: serves one admitted viewer's connection, either a TCP socket handed over
//! from Node by file descriptor (`Sink::Tcp`) or a socket that stays in JS (`Sink::Bridged`).
//!
//! Owns: completing the WebSocket handshake (the `101` is written from Rust, echoing the
//! extended subprotocol), the reader task (decode client frames, answer pings, hand messages to
//! the registry, heartbeat timeout), the writer task (latest frame wins, per-viewer pacing by
//! frame rate or acks, reliable messages in order, the viewer's events pulled from the
//! channel's ring, resume and snapshot answers, vectored writes of a prebuilt header and the
//! shared payload, pings) and the close sequence. Must not touch registry state except through
//! `Registry::release`, `Registry::on_client_*` and the channel's read-only accessors.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::clock::sleep_until;
use crate::frame::Frame;
use crate::host::{BridgedOutbound, Host};
use crate::mailbox::{Mailbox, Outbox};
use crate::protocol::{self, Mode, EXTENDED_PROTOCOL};
use crate::registry::{
    Channel, Outbound, Registry, ViewerCloser, ViewerCounters, ViewerLink, ViewerSlot,
};
use crate::ws_codec::{
    close_payload, encode_frame, ClientFrame, Decoder, FrameHeader, CLOSE_GOING_AWAY, CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR, CLOSE_SLOW_CONSUMER, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT,
};

/// How long the handshake response may take to write.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a close frame may take to write before the socket is simply dropped.
const CLOSE_FRAME_TIMEOUT: Duration = Duration::from_millis(500);
/// After the server's close frame, how long the client's remaining bytes (up to its own close
/// frame and end of stream) are read and discarded. Closing a socket with unread data makes the
/// kernel send a reset, which can destroy the close frame before the client reads it.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Why a `Sec-WebSocket-Key` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadKey;

impl std::fmt::Display for BadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sec-WebSocket-Key must be the base64 of 16 bytes")
    }
}

/// Checks a `Sec-WebSocket-Key` (base64 of 16 bytes: 22 characters and `==`).
pub fn check_websocket_key(key: &str) -> Result<(), BadKey> {
    let bytes = key.as_bytes();
    let body_ok = bytes.len() == 24
        && bytes[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        && &bytes[22..] == b"==";
    if body_ok {
        Ok(())
    } else {
        Err(BadKey)
    }
}

/// The `101 Switching Protocols` response for a checked key, echoing `protocol` if chosen.
pub fn handshake_response(key: &str, protocol: Option<&str>) -> String {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let protocol =
        protocol.map_or_else(String::new, |p| format!("Sec-WebSocket-Protocol: {p}\r\n"));
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{protocol}\r\n"
    )
}

/// Where a viewer's writer sends its bytes.
pub enum Sink {
    /// A socket owned by Rust.
    Tcp(OwnedWriteHalf),
    /// A socket owned by JS, written through the host.
    Bridged {
        /// The viewer id the host knows the socket by.
        viewer_id: u32,
        /// The host.
        host: Arc<dyn Host>,
    },
}

/// Writes `head` then `body` with vectored writes (one syscall for both in the usual case).
async fn write_all_vectored(
    writer: &mut OwnedWriteHalf,
    head: &[u8],
    body: &[u8],
) -> io::Result<()> {
    let mut storage = [IoSlice::new(head), IoSlice::new(body)];
    let mut slices = &mut storage[..];
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let written = writer.write_vectored(slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

/// A writer stopped at a message boundary because the viewer is being closed gracefully: the
/// close frame may follow. Carried as an `io::Error` so `?` ends the writer's loop at once.
#[derive(Debug)]
struct ClosingAtBoundary;

impl std::fmt::Display for ClosingAtBoundary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the viewer is closing; stopped at a message boundary")
    }
}

impl std::error::Error for ClosingAtBoundary {}

fn closing_at_boundary() -> io::Error {
    io::Error::other(ClosingAtBoundary)
}

/// Whether the writer stopped where a close frame can follow (not mid-message).
fn at_message_boundary(result: &io::Result<()>) -> bool {
    match result {
        Ok(()) => true,
        Err(error) => error
            .get_ref()
            .is_some_and(|inner| inner.is::<ClosingAtBoundary>()),
    }
}

/// Runs a write unless the viewer is closed meanwhile (`cancelled` resolves). On a graceful
/// close (a close frame is requested) nothing new is started, and the message in progress may
/// finish within `CLOSE_FRAME_TIMEOUT`: both end the writer with `ClosingAtBoundary`, so the
/// close frame follows at most one more message. Otherwise, or if the message does not finish,
/// the cut write leaves the stream mid-frame, reported as `Interrupted`: no close frame.
async fn interruptible<C: Future<Output = ()>>(
    closer: &ViewerCloser,
    cancelled: Pin<&mut C>,
    write: impl Future<Output = io::Result<()>>,
) -> io::Result<()> {
    let graceful = || closer.request().is_some();
    if closer.is_cancelled() {
        return Err(if graceful() {
            closing_at_boundary()
        } else {
            io::ErrorKind::Interrupted.into()
        });
    }
    tokio::pin!(write);
    tokio::select! {
        biased;
        _ = cancelled => {}
        result = &mut write => return result,
    }
    if !graceful() {
        return Err(io::ErrorKind::Interrupted.into());
    }
    match tokio::time::timeout(CLOSE_FRAME_TIMEOUT, write).await {
        Ok(Ok(())) => Err(closing_at_boundary()),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(io::ErrorKind::Interrupted.into()),
    }
}

impl Sink {
    /// Writes one TEXT message whose header is already built (frames) or built here.
    async fn send_text(&mut self, header: &FrameHeader, text: &Bytes) -> io::Result<()> {
        match self {
            Sink::Tcp(writer) => write_all_vectored(writer, header.as_bytes(), text).await,
            Sink::Bridged { viewer_id, host } => host
                .bridged_send(*viewer_id, BridgedOutbound::Text(text.clone()))
                .await
                .map_err(io::Error::other),
        }
    }

    /// Writes one BINARY message: `head` (WebSocket header of `ws_header_len` bytes, then the
    /// frame header) and the shared image.
    async fn send_binary(
        &mut self,
        head: &[u8],
        ws_header_len: usize,
        body: &Bytes,
    ) -> io::Result<()> {
        match self {
            Sink::Tcp(writer) => write_all_vectored(writer, head, body).await,
            Sink::Bridged { viewer_id, host } => {
                // JS frames the message itself: it gets the payload (one copy, TLS path only).
                let mut payload = BytesMut::with_capacity(head.len() + body.len());
                payload.extend_from_slice(&head[ws_header_len..]);
                payload.extend_from_slice(body);
                host.bridged_send(*viewer_id, BridgedOutbound::Binary(payload.freeze()))
                    .await
                    .map_err(io::Error::other)
            }
        }
    }

    /// Writes a ping or pong. JS sockets answer pings themselves.
    async fn send_control(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        match self {
            Sink::Tcp(writer) => writer.write_all(&encode_frame(opcode, payload)).await,
            Sink::Bridged { .. } => Ok(()),
        }
    }

    /// Sends the close frame and ends the write side.
    async fn send_close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        match self {
            Sink::Tcp(writer) => {
                writer
                    .write_all(&encode_frame(OP_CLOSE, &close_payload(code, reason)))
                    .await?;
                writer.shutdown().await
            }
            Sink::Bridged { viewer_id, host } => host
                .bridged_send(
                    *viewer_id,
                    BridgedOutbound::Close {
                        code,
                        reason: reason.to_string(),
                    },
                )
                .await
                .map_err(io::Error::other),
        }
    }
}

/// The writer half of a viewer: what it needs besides the sink.
pub struct Writer {
    outbox: Mailbox,
    frames: watch::Receiver<Option<Arc<Frame>>>,
    closer: Arc<ViewerCloser>,
    counters: Arc<ViewerCounters>,
    heartbeat: Duration,
    cleared_through: Arc<AtomicU64>,
    link: Arc<ViewerLink>,
    channel: Arc<Channel>,
    /// Extended: newest event number of the channel (a change wakes the writer).
    events: watch::Receiver<u64>,
    /// Extended: the viewer has been sent the events up to here.
    event_cursor: u64,
    pacing: Pacing,
}

/// Longest wait of a message for the frame it follows; that frame is normally published within
/// microseconds, this only bounds the unforeseen.
const FRAME_ORDER_WAIT: Duration = Duration::from_secs(1);
/// How long a snapshot request waits for a first frame.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);
/// Events pulled from the ring at a time.
const EVENT_BATCH: usize = 64;

/// Per-viewer pacing of frames (extended `config`).
#[derive(Debug, Default)]
struct Pacing {
    /// Least time between two frames (`maxFps`).
    min_interval: Option<Duration>,
    /// One frame in flight: the next waits for the ack of the last.
    ack: bool,
    last_frame_at: Option<tokio::time::Instant>,
    last_frame_seq: u64,
}

/// Whether the writer may send a frame now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameGate {
    Open,
    Until(tokio::time::Instant),
    Ack,
}

impl Writer {
    fn frame_gate(&self) -> FrameGate {
        if self.pacing.ack
            && self.pacing.last_frame_seq > 0
            && self.link.acked_seq.load(Ordering::Relaxed) < self.pacing.last_frame_seq
        {
            return FrameGate::Ack;
        }
        if let (Some(interval), Some(last)) = (self.pacing.min_interval, self.pacing.last_frame_at)
        {
            if let Some(next) = last.checked_add(interval) {
                if next > tokio::time::Instant::now() {
                    return FrameGate::Until(next);
                }
            }
        }
        FrameGate::Open
    }

    /// Records `frame` as seen; false if the viewer has it or a newer one. Counts skipped frames.
    fn mark_seen(&self, frame: &Frame) -> bool {
        // Only this writer stores `seen_*`; the registry reads them for stats.
        let seen = self.counters.seen_seq.load(Ordering::Relaxed);
        if frame.seq <= seen {
            return false;
        }
        let seen_index = self.counters.seen_index.load(Ordering::Relaxed);
        let skipped = frame.index.saturating_sub(seen_index).saturating_sub(1);
        self.counters.seen_seq.store(frame.seq, Ordering::Relaxed);
        self.counters
            .seen_index
            .store(frame.index, Ordering::Relaxed);
        self.counters
            .frames_skipped
            .fetch_add(skipped, Ordering::Relaxed);
        true
    }

    /// Writes `frame` in this viewer's wire.
    async fn write_frame<C: Future<Output = ()>>(
        &mut self,
        sink: &mut Sink,
        cancelled: Pin<&mut C>,
        frame: &Frame,
    ) -> io::Result<()> {
        let written = match self.link.mode {
            Mode::Compat => {
                interruptible(
                    &self.closer,
                    cancelled,
                    sink.send_text(&frame.text_header, &frame.text),
                )
                .await?;
                frame.text_header.as_bytes().len() + frame.text.len()
            }
            Mode::Extended => {
                // A payload that does not decode was never an image: skip it.
                let Some(binary) = frame.binary() else {
                    return Ok(());
                };
                interruptible(
                    &self.closer,
                    cancelled,
                    sink.send_binary(&binary.head, binary.ws_header_len, &binary.body),
                )
                .await?;
                binary.head.len() + binary.body.len()
            }
        };
        self.pacing.last_frame_at = Some(tokio::time::Instant::now());
        self.pacing.last_frame_seq = frame.seq;
        self.counters.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_sent
            .fetch_add(written as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Sends the newest frame if this viewer has not seen it; counts the frames it skipped.
    async fn send_latest_frame<C: Future<Output = ()>>(
        &mut self,
        sink: &mut Sink,
        cancelled: Pin<&mut C>,
    ) -> io::Result<()> {
        let frame = self.frames.borrow_and_update().clone();
        let Some(frame) = frame else {
            return Ok(());
        };
        if !self.mark_seen(&frame) {
            return Ok(());
        }
        self.write_frame(sink, cancelled, &frame).await
    }

    /// Sends the newest frame even if this viewer has it (resume, snapshot).
    async fn resend_latest_frame<C: Future<Output = ()>>(
        &mut self,
        sink: &mut Sink,
        cancelled: Pin<&mut C>,
    ) -> io::Result<()> {
        let frame = self.frames.borrow_and_update().clone();
        if let Some(frame) = frame {
            self.mark_seen(&frame);
            self.write_frame(sink, cancelled, &frame).await?;
        }
        Ok(())
    }

    async fn send_message<C: Future<Output = ()>>(
        &mut self,
        sink: &mut Sink,
        cancelled: Pin<&mut C>,
        text: &Bytes,
    ) -> io::Result<()> {
        let header = FrameHeader::new(OP_TEXT, text.len());
        interruptible(&self.closer, cancelled, sink.send_text(&header, text)).await?;
        self.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_sent.fetch_add(
            (header.as_bytes().len() + text.len()) as u64,
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Sends the channel's events after `after` (all held ones for `None`) until none is left;
    /// tells the viewer `stale` first when some it needs were evicted. Returns how many were
    /// sent, whether it was stale, and the newest event number as of the last read (taken
    /// under the log's lock, so nothing published after it is skipped); the cursor ends at the
    /// last one sent.
    async fn send_events_after<C: Future<Output = ()>>(
        &mut self,
        sink: &mut Sink,
        mut cancelled: Pin<&mut C>,
        after: Option<u64>,
    ) -> io::Result<(usize, bool, u64)> {
        let mut after = after;
        let mut sent = 0;
        let mut stale = false;
        loop {
            let batch = self.channel.events_after(after, EVENT_BATCH);
            let newest = batch.last_seq;
            if let Some(oldest) = batch.stale {
                if !stale {
                    stale = true;
                    let message = protocol::stale_message(
                        "events after this point were dropped from the resume ring",
                        oldest,
                    );
                    self.send_message(sink, cancelled.as_mut(), &Bytes::from(message))
                        .await?;
                }
            }
            let count = batch.events.len();
            for event in batch.events {
                self.send_message(sink, cancelled.as_mut(), &event.text)
                    .await?;
                after = Some(event.seq);
                self.event_cursor = event.seq;
                sent += 1;
            }
            if count < EVENT_BATCH {
                return Ok((sent, stale, newest));
            }
        }
    }

    /// Answers `resume`: the held events after `last_seq` (or `stale`), `resumed`, the newest
    /// frame.
    async fn resume<C: Future<Output = ()>>(
        &mut self,
        sink: &mut Sink,
        mut cancelled: Pin<&mut C>,
        last_seq: Option<u64>,
    ) -> io::Result<()> {
        let (replayed, stale, newest) = self
            .send_events_after(sink, cancelled.as_mut(), last_seq)
            .await?;
        if replayed == 0 {
            // Nothing newer is held: from here on, events after the client's number (or, when
            // that number cannot be placed, after the newest event of that same read).
            self.event_cursor = match (stale, last_seq) {
                (false, Some(last)) => last,
                (false, None) => self.event_cursor,
                (true, _) => newest,
            };
        }
        let done = protocol::resumed_message(last_seq, replayed);
        self.send_message(sink, cancelled.as_mut(), &Bytes::from(done))
            .await?;
        self.resend_latest_frame(sink, cancelled).await
    }

    /// Answers `snapshot-request`: `{"type":"snapshot","seq":N}` and frame N, waiting up to
    /// `SNAPSHOT_WAIT` for a first frame.
    async fn snapshot<C: Future<Output = ()>>(
        &mut self,
        sink: &mut Sink,
        mut cancelled: Pin<&mut C>,
    ) -> io::Result<()> {
        let mut frame = self.frames.borrow().clone();
        if frame.is_none() {
            let wait = self.frames.wait_for(Option::is_some);
            frame = tokio::select! {
                biased;
                _ = cancelled.as_mut() => return Ok(()),
                got = tokio::time::timeout(SNAPSHOT_WAIT, wait) => match got {
                    Ok(Ok(latest)) => latest.clone(),
                    _ => None,
                },
            };
        }
        let Some(frame) = frame else {
            let message = protocol::error_message(
                "snapshot_unavailable",
                "the page has produced no frame yet",
            );
            return self
                .send_message(sink, cancelled, &Bytes::from(message))
                .await;
        };
        let announce = Bytes::from(protocol::snapshot_message(frame.seq));
        self.send_message(sink, cancelled.as_mut(), &announce)
            .await?;
        self.mark_seen(&frame);
        self.write_frame(sink, cancelled, &frame).await
    }

    async fn pump(&mut self, sink: &mut Sink) -> io::Result<()> {
        let start = tokio::time::Instant::now() + self.heartbeat;
        let mut ping = tokio::time::interval_at(start, self.heartbeat);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One cancellation future for the writer's life: re-creating it per frame registered
        // and unregistered a waiter (two lock round trips) for every frame of every viewer.
        let closer = self.closer.clone();
        let cancelled = closer.cancelled();
        tokio::pin!(cancelled);
        let extended = self.link.mode == Mode::Extended;
        let link = self.link.clone();
        loop {
            let gate = self.frame_gate();
            let wake_at = match gate {
                FrameGate::Until(at) => Some(at),
                _ => None,
            };
            tokio::select! {
                biased;
                _ = cancelled.as_mut() => return Ok(()),
                message = self.outbox.recv() => match message {
                    None => return Ok(()),
                    Some(Outbound::Text { text, after_seq }) => {
                        let seen = self.counters.seen_seq.load(Ordering::Relaxed);
                        if after_seq > seen && self.frame_gate() == FrameGate::Open {
                            // The frame this message follows may still be on its way to the
                            // watch (a JS push publishes from a runtime task): wait for it.
                            let cleared = self.cleared_through.clone();
                            let wait = self.frames.wait_for(|latest| {
                                latest.as_ref().is_some_and(|f| f.seq >= after_seq)
                                    || cleared.load(Ordering::Acquire) >= after_seq
                            });
                            let published = tokio::select! {
                                biased;
                                _ = cancelled.as_mut() => return Ok(()),
                                published = tokio::time::timeout(FRAME_ORDER_WAIT, wait) => {
                                    matches!(published, Ok(Ok(_)))
                                }
                            };
                            if published {
                                self.send_latest_frame(sink, cancelled.as_mut()).await?;
                            }
                        }
                        self.send_message(sink, cancelled.as_mut(), &text).await?;
                    }
                    Some(Outbound::Pong(payload)) => {
                        interruptible(&self.closer, cancelled.as_mut(), sink.send_control(OP_PONG, &payload))
                            .await?;
                    }
                    Some(Outbound::Resume { last_seq }) => {
                        self.resume(sink, cancelled.as_mut(), last_seq).await?;
                    }
                    Some(Outbound::Snapshot) => {
                        self.snapshot(sink, cancelled.as_mut()).await?;
                    }
                    Some(Outbound::Pacing { max_fps, ack }) => {
                        if let Some(max_fps) = max_fps {
                            // The parser bounds the rate; a value that still makes no duration
                            // means no cap, never a panic.
                            self.pacing.min_interval = max_fps
                                .and_then(|fps| Duration::try_from_secs_f64(1.0 / fps).ok());
                        }
                        if let Some(ack) = ack {
                            self.pacing.ack = ack;
                        }
                    }
                },
                // Pings and events before frames: a viewer whose frame writes take longer than
                // the frame interval always has a newer frame waiting (and frames are
                // latest-wins anyway), while pings keep it alive and events are reliable.
                _ = ping.tick() => {
                    interruptible(&self.closer, cancelled.as_mut(), sink.send_control(OP_PING, b"")).await?;
                }
                changed = self.events.changed(), if extended => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    self.events.borrow_and_update();
                    let cursor = self.event_cursor;
                    self.send_events_after(sink, cancelled.as_mut(), Some(cursor)).await?;
                }
                changed = self.frames.changed(), if gate == FrameGate::Open => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    self.send_latest_frame(sink, cancelled.as_mut()).await?;
                }
                _ = sleep_until(wake_at), if wake_at.is_some() => {}
                _ = link.acked.notified(), if gate == FrameGate::Ack => {}
            }
        }
    }

    /// Runs until the viewer is closed or its socket fails, then sends the requested close
    /// frame when the stream is still at a frame boundary. True if a close frame was sent.
    pub async fn run(mut self, mut sink: Sink) -> bool {
        let result = self.pump(&mut sink).await;
        let mut close_sent = false;
        if at_message_boundary(&result) {
            if let Some((code, reason)) = self.closer.request() {
                close_sent = matches!(
                    tokio::time::timeout(CLOSE_FRAME_TIMEOUT, sink.send_close(code, &reason)).await,
                    Ok(Ok(()))
                );
            }
        }
        self.closer.abort();
        close_sent
    }
}

/// Splits a slot into its writer and what the reader needs.
pub fn split_slot(
    registry: &Arc<Registry>,
    slot: ViewerSlot,
    heartbeat: Duration,
) -> (Writer, Reader, Arc<Channel>, u32) {
    let writer = Writer {
        cleared_through: slot.channel.cleared_through.clone(),
        outbox: slot.outbox,
        frames: slot.frames,
        closer: slot.closer.clone(),
        counters: slot.counters,
        heartbeat,
        link: slot.link.clone(),
        channel: slot.channel.clone(),
        events: slot.events,
        event_cursor: slot.event_cursor,
        pacing: Pacing::default(),
    };
    let reader = Reader {
        registry: registry.clone(),
        channel: slot.channel.clone(),
        link: slot.link,
        outbox: slot.outbox_tx,
        closer: slot.closer,
    };
    (writer, reader, slot.channel, slot.id)
}

/// The reader half of a native viewer.
pub struct Reader {
    registry: Arc<Registry>,
    channel: Arc<Channel>,
    link: Arc<ViewerLink>,
    outbox: Outbox,
    closer: Arc<ViewerCloser>,
}

/// The close code echoed for a client's close frame (RFC 6455 §7.4).
fn echo_code(code: Option<u16>) -> u16 {
    match code {
        None => CLOSE_NORMAL,
        Some(code @ (1000..=1003 | 1007..=1011 | 3000..=4999)) => code,
        Some(_) => CLOSE_PROTOCOL_ERROR,
    }
}

impl Reader {
    /// Reads client frames until close, error, heartbeat timeout or cancellation; hands the
    /// read half back (a server-initiated close drains it).
    pub async fn run(
        self,
        mut read: OwnedReadHalf,
        head: Bytes,
        max_message: usize,
        heartbeat_timeout: Duration,
    ) -> OwnedReadHalf {
        let mut decoder = Decoder::new(max_message);
        decoder.buffer_mut().extend_from_slice(&head);
        loop {
            loop {
                match decoder.next_frame() {
                    Ok(None) => break,
                    Ok(Some(ClientFrame::Text(text))) => {
                        self.registry
                            .on_client_text(&self.channel, &self.link, &text)
                    }
                    Ok(Some(ClientFrame::Binary(_))) => {
                        self.registry.on_client_binary(&self.channel, &self.link)
                    }
                    Ok(Some(ClientFrame::Ping(payload))) => {
                        if self.outbox.try_send(Outbound::Pong(payload)).is_err() {
                            self.closer
                                .close(CLOSE_SLOW_CONSUMER, "slow consumer: message queue full");
                            return read;
                        }
                    }
                    Ok(Some(ClientFrame::Pong(_))) => {}
                    Ok(Some(ClientFrame::Close(code, _))) => {
                        self.closer.close(echo_code(code), "");
                        return read;
                    }
                    Err(error) => {
                        self.closer.close(error.close_code(), &error.reason());
                        return read;
                    }
                }
            }
            let read_result = tokio::select! {
                biased;
                _ = self.closer.cancelled() => return read,
                result = tokio::time::timeout(heartbeat_timeout, read.read_buf(decoder.buffer_mut())) => result,
            };
            match read_result {
                Err(_elapsed) => {
                    self.closer.close(CLOSE_GOING_AWAY, "heartbeat timeout");
                    return read;
                }
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.closer.abort();
                    return read;
                }
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Serves a native viewer on an accepted socket whose HTTP upgrade request was already read
/// (by Node): writes the `101`, then runs reader and writer until the connection ends, then
/// releases the viewer. Must run inside the registry's runtime.
pub async fn serve_native(
    registry: Arc<Registry>,
    slot: ViewerSlot,
    stream: std::net::TcpStream,
    key: String,
    head: Bytes,
) {
    let config = registry.config().clone();
    let protocol = (slot.link.mode == Mode::Extended).then_some(EXTENDED_PROTOCOL);
    let (writer, reader, channel, viewer_id) =
        split_slot(&registry, slot, config.heartbeat_interval);
    let closer = reader.closer.clone();
    let release = ReleaseOnDrop {
        registry: registry.clone(),
        channel,
        viewer_id,
        closer: closer.clone(),
    };
    let served = async {
        stream.set_nonblocking(true)?;
        let stream = TcpStream::from_std(stream)?;
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let response = handshake_response(&key, protocol);
        tokio::time::timeout(HANDSHAKE_TIMEOUT, write.write_all(response.as_bytes()))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let (read, close_sent) = tokio::join!(
            reader.run(
                read,
                head,
                config.max_message_bytes,
                config.heartbeat_timeout
            ),
            writer.run(Sink::Tcp(write)),
        );
        io::Result::Ok(close_sent.then_some(read))
    };
    let lingering = served.await;
    drop(release);
    if let Ok(Some(read)) = lingering {
        // Counted against the viewer limit while it lasts; with no room, closed at once.
        if let Some(_draining) = registry.start_draining() {
            drain_until_closed(read).await;
        }
    }
}

/// Reads and discards what the client still sends after the server's close frame, until it
/// closes its side or `CLOSE_LINGER` passes.
async fn drain_until_closed(mut read: OwnedReadHalf) {
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Ok(n) = read.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Serves a JS-bridged viewer: only the writer runs in Rust; the JS socket's messages come in
/// through `Registry::on_client_text` and its close through `Registry::close_viewer`.
pub async fn serve_bridged(registry: Arc<Registry>, slot: ViewerSlot) {
    let heartbeat = registry.config().heartbeat_interval;
    let (writer, reader, channel, viewer_id) = split_slot(&registry, slot, heartbeat);
    let _release = ReleaseOnDrop {
        registry: registry.clone(),
        channel,
        viewer_id,
        closer: reader.closer.clone(),
    };
    let host = registry.host().clone();
    let sink = Sink::Bridged {
        viewer_id,
        host: host.clone(),
    };
    if !writer.run(sink).await {
        // Closed without a close frame (cut mid-message, or stopped): the JS socket must not
        // live on outside every limit.
        let _ = host
            .bridged_send(viewer_id, BridgedOutbound::Terminate)
            .await;
    }
}

/// Releases a viewer when dropped, including when its task panics: a bug must never leave a
/// phantom viewer that holds control or keeps its channel's source running.
struct ReleaseOnDrop {
    registry: Arc<Registry>,
    channel: Arc<Channel>,
    viewer_id: u32,
    closer: Arc<ViewerCloser>,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.closer.abort();
        self.registry.release(&self.channel, self.viewer_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameMeta;
    use crate::registry::tests::registry_with;
    use crate::registry::{ChannelId, RegistryConfig, Transport};
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::AsyncBufReadExt;
    use tokio_tungstenite::tungstenite::Message;

    const JPEG: &str = "/9j/4AAQSkZJRgABAQ==";

    #[test]
    fn websocket_key_checks() {
        assert!(check_websocket_key("dGhlIHNhbXBsZSBub25jZQ==").is_ok());
        assert!(check_websocket_key("short").is_err());
        assert!(check_websocket_key("dGhlIHNhbXBsZSBub25jZQ=x").is_err());
        assert!(handshake_response("dGhlIHNhbXBsZSBub25jZQ==", None)
            .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        let extended = handshake_response("dGhlIHNhbXBsZSBub25jZQ==", Some(EXTENDED_PROTOCOL));
        assert!(extended.ends_with("Sec-WebSocket-Protocol: browser-stream.v1\r\n\r\n"));
    }

    /// Accepts one TCP connection, reads its HTTP upgrade request like Node would, and hands
    /// the socket to `serve_native`.
    async fn accept_viewer(
        listener: &tokio::net::TcpListener,
        registry: &Arc<Registry>,
        id: &ChannelId,
    ) -> tokio::task::JoinHandle<()> {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut reader = tokio::io::BufReader::new(stream);
        let mut key = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("request line");
            if let Some(value) = line.strip_prefix("Sec-WebSocket-Key: ") {
                key = value.trim().to_string();
            }
            if line == "\r\n" {
                break;
            }
        }
        let stream = reader.into_inner().into_std().expect("std stream");
        let slot = registry
            .admit(id, Transport::Native, true)
            .expect("admitted");
        tokio::spawn(serve_native(
            registry.clone(),
            slot,
            stream,
            key,
            Bytes::new(),
        ))
    }

    type ClientSocket =
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

    /// A real WebSocket client connected to a viewer of `agent` served by `serve_native`.
    async fn connect_viewer(
        registry: &Arc<Registry>,
        agent: &str,
    ) -> (ClientSocket, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let url = format!("ws://{addr}/browser/{agent}/stream");
        let client = tokio::spawn(async move {
            tokio_tungstenite::connect_async(url)
                .await
                .expect("connect")
                .0
        });
        let served = accept_viewer(&listener, registry, &ChannelId::new(agent, None)).await;
        (client.await.expect("client task"), served)
    }

    #[tokio::test]
    async fn native_viewer_end_to_end() {
        let (registry, host) = registry_with(RegistryConfig {
            linger: Duration::ZERO,
            ..RegistryConfig::default()
        });
        let (mut ws, served) = connect_viewer(&registry, "agent").await;
        let first = ws.next().await.expect("message").expect("ok");
        assert_eq!(first, Message::Text(r#"{"status":"connected"}"#.into()));
        registry.set_status("agent", None, "streaming");
        registry.push_frame("agent", None, JPEG.into(), FrameMeta::default());
        assert_eq!(
            ws.next().await.expect("message").expect("ok"),
            Message::Text(r#"{"status":"streaming"}"#.into())
        );
        assert_eq!(
            ws.next().await.expect("message").expect("ok"),
            Message::Text(JPEG.into())
        );
        ws.send(Message::Text(
            r#"{"type":"keyboard","eventType":"char","text":"x"}"#.into(),
        ))
        .await
        .expect("send");
        ws.send(Message::Ping(Bytes::from_static(b"hi")))
            .await
            .expect("ping");
        assert_eq!(
            ws.next().await.expect("message").expect("ok"),
            Message::Pong(Bytes::from_static(b"hi"))
        );
        ws.close(None).await.expect("close");
        served.await.expect("served");
        assert_eq!(registry.viewer_count("agent"), 0);
        assert_eq!(host.inputs.lock().expect("lock").len(), 1);
        assert_eq!(host.stops.lock().expect("lock").len(), 1);
    }

    #[tokio::test]
    async fn graceful_close_finishes_the_frame_in_progress_then_sends_the_close_frame() {
        let (registry, _host) = registry_with(RegistryConfig::default());
        let (mut ws, served) = connect_viewer(&registry, "agent").await;
        let _connected = ws.next().await;
        // A frame far larger than the socket buffers: its write is still pending while the
        // client does not read.
        let big = format!("/9j/{}", "A".repeat(8 * 1024 * 1024));
        registry.push_frame("agent", None, big.clone().into(), FrameMeta::default());
        tokio::time::sleep(Duration::from_millis(100)).await;
        registry.close();
        let mut got_frame = false;
        let mut close_code = None;
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Text(text) if text.len() == big.len() => got_frame = true,
                Message::Close(Some(frame)) => close_code = Some(u16::from(frame.code)),
                _ => {}
            }
        }
        assert!(got_frame, "the frame in progress was finished");
        assert_eq!(close_code, Some(1001), "then the close frame");
        served.await.expect("served without a panic");
    }

    #[tokio::test]
    async fn oversized_message_closes_1009() {
        let (registry, _host) = registry_with(RegistryConfig {
            max_message_bytes: 1024,
            ..RegistryConfig::default()
        });
        let (mut ws, served) = connect_viewer(&registry, "agent").await;
        let _connected = ws.next().await;
        ws.send(Message::Text("x".repeat(4096).into()))
            .await
            .expect("send");
        let mut close_code = None;
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Close(Some(frame)) = message {
                close_code = Some(u16::from(frame.code));
            }
        }
        assert_eq!(close_code, Some(1009));
        served.await.expect("served");
        assert_eq!(registry.viewer_total(), 0);
    }
}

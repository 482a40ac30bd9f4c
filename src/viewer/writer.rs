//! The writer task of a viewer: latest frame wins, pacing by frame rate or acks, reliable
//! messages in order, the viewer's events pulled from the channel's ring, resume and snapshot
//! answers, pings, and the close frame at the end.
//! Must not read from the socket (the reader does) nor change channel state.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, watch};

use super::sink::{at_message_boundary, interruptible, Sink, CLOSE_FRAME_TIMEOUT};
use crate::clock::sleep_until;
use crate::codec::pipeline::{Admit, VideoSubscription};
use crate::codec::{VideoChunk, VideoConfig};
use crate::frame::Frame;
use crate::mailbox::Mailbox;
use crate::protocol::{self, Mode};
use crate::registry::{
    Channel, Outbound, SourceKind, ViewerCloser, ViewerCounters, ViewerLink, SOURCE_KIND_WAIT,
};
use crate::ws::codec::{FrameHeader, OP_PING, OP_PONG, OP_TEXT};

/// The writer half of a viewer: what it needs besides the sink.
pub struct Writer {
    pub(super) outbox: Mailbox,
    pub(super) frames: watch::Receiver<Option<Arc<Frame>>>,
    pub(super) closer: Arc<ViewerCloser>,
    pub(super) counters: Arc<ViewerCounters>,
    pub(super) heartbeat: Duration,
    pub(super) cleared_through: Arc<AtomicU64>,
    pub(super) link: Arc<ViewerLink>,
    pub(super) channel: Arc<Channel>,
    /// Extended: newest event number of the channel (a change wakes the writer).
    pub(super) events: watch::Receiver<u64>,
    /// Extended: the viewer has been sent the events up to here.
    pub(super) event_cursor: u64,
    pub(super) pacing: Pacing,
    /// Extended: the viewer's video, once it asked for it. JPEG frames stop then: on a link
    /// they fill, they would keep the first keyframe from ever getting through.
    pub(super) video: Option<VideoSubscription>,
    /// The decoder configuration last sent.
    pub(super) video_config: Option<Arc<VideoConfig>>,
    /// Extended: how many of the viewer's WebRTC peers show the pictures (no JPEG frames
    /// meanwhile). A count, not a flag: a replaced peer may end after its successor started.
    pub(super) webrtc_pictures: u32,
    /// The registry's relay, whose owner ring answers a resume this instance cannot place.
    pub(super) relay: Option<Arc<crate::relay::Relay>>,
}

/// The next chunk of `video` (never resolves without video).
async fn next_chunk(
    video: &mut Option<VideoSubscription>,
) -> Result<Arc<VideoChunk>, broadcast::error::RecvError> {
    match video {
        Some(video) => video.chunks.recv().await,
        None => std::future::pending().await,
    }
}

/// Longest wait of a message for the frame it follows; that frame is normally published within
/// microseconds, this only bounds the unforeseen.
pub(super) const FRAME_ORDER_WAIT: Duration = Duration::from_secs(1);
/// How long a snapshot request waits for a first frame.
pub(super) const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);
/// Events pulled from the ring at a time.
pub(super) const EVENT_BATCH: usize = 64;

/// Per-viewer pacing of frames (extended `config`).
#[derive(Debug, Default)]
pub(super) struct Pacing {
    /// Least time between two frames (`maxFps`).
    pub(super) min_interval: Option<Duration>,
    /// One frame in flight: the next waits for the ack of the last.
    pub(super) ack: bool,
    pub(super) last_frame_at: Option<tokio::time::Instant>,
    pub(super) last_frame_seq: u64,
}

/// Whether the writer may send a frame now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FrameGate {
    Open,
    Until(tokio::time::Instant),
    Ack,
}

impl Writer {
    pub(super) fn frame_gate(&self) -> FrameGate {
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
    pub(super) fn mark_seen(&self, frame: &Frame) -> bool {
        self.mark_seen_at(frame.seq, frame.index)
    }

    fn mark_seen_at(&self, seq: u64, index: u64) -> bool {
        self.counters.mark_seen_at(seq, index)
    }

    pub(super) async fn write_frame<C: Future<Output = ()>>(
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

    /// JPEG frames go to this viewer: it has no video.
    fn jpeg_frames(&self) -> bool {
        self.video.is_none() && self.webrtc_pictures == 0
    }

    /// Writes `chunk` unless the viewer waits for a keyframe and this is none; sends the
    /// `video-config` first when the stream's configuration changed.
    async fn write_chunk<C: Future<Output = ()>>(
        &mut self,
        sink: &mut Sink,
        mut cancelled: Pin<&mut C>,
        chunk: Arc<VideoChunk>,
    ) -> io::Result<()> {
        let Some(video) = self.video.as_mut() else {
            return Ok(());
        };
        match video.admit(&chunk) {
            Admit::Deliver => {}
            Admit::Skip => return Ok(()),
            Admit::Behind => {
                self.counters.video_lagged.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        let config_sent = self
            .video_config
            .as_ref()
            .is_some_and(|sent| Arc::ptr_eq(sent, &chunk.config));
        if !config_sent {
            let message = Bytes::from(chunk.config.message());
            self.send_message(sink, cancelled.as_mut(), &message)
                .await?;
            self.video_config = Some(chunk.config.clone());
        }
        interruptible(
            &self.closer,
            cancelled,
            sink.send_binary(&chunk.head, chunk.ws_header_len, &chunk.body),
        )
        .await?;
        self.mark_seen_at(chunk.seq, chunk.index);
        self.counters
            .video_chunks_sent
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_sent
            .fetch_add(chunk.wire_len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Sends the newest frame if this viewer has not seen it; counts the frames it skipped.
    pub(super) async fn send_latest_frame<C: Future<Output = ()>>(
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
    pub(super) async fn resend_latest_frame<C: Future<Output = ()>>(
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

    pub(super) async fn send_message<C: Future<Output = ()>>(
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

    /// Sends the channel's events after `after` (all held ones for `None`) that are newer than
    /// `floor`, until none is left; tells the viewer `stale` first when `report_stale` and
    /// some it needs were evicted. Returns how many were sent, whether it was stale, and the
    /// newest event number as of the last read (taken under the log's lock, so nothing
    /// published after it is skipped); the cursor ends at the last one sent.
    pub(super) async fn send_events_after<C: Future<Output = ()>>(
        &mut self,
        sink: &mut Sink,
        mut cancelled: Pin<&mut C>,
        after: Option<u64>,
        floor: u64,
        report_stale: bool,
    ) -> io::Result<(usize, bool, u64)> {
        let mut after = after;
        let mut sent = 0;
        let mut stale = false;
        loop {
            let batch = self.channel.events_after(after, EVENT_BATCH);
            let newest = batch.last_seq;
            if let Some(oldest) = batch.stale {
                if !stale && report_stale {
                    self.send_stale(sink, cancelled.as_mut(), oldest).await?;
                }
                stale = true;
            }
            let count = batch.events.len();
            for event in batch.events {
                after = Some(event.seq);
                if event.seq <= floor {
                    continue;
                }
                self.send_message(sink, cancelled.as_mut(), &event.text)
                    .await?;
                self.event_cursor = event.seq;
                self.counters
                    .events_through
                    .store(event.seq, Ordering::Relaxed);
                sent += 1;
            }
            if count < EVENT_BATCH {
                return Ok((sent, stale, newest));
            }
        }
    }

    async fn send_stale<C: Future<Output = ()>>(
        &mut self,
        sink: &mut Sink,
        cancelled: Pin<&mut C>,
        oldest: Option<u64>,
    ) -> io::Result<()> {
        let message = protocol::stale_message(
            "events after this point were dropped from the resume ring",
            oldest,
        );
        self.send_message(sink, cancelled, &Bytes::from(message))
            .await
    }

    /// Answers `resume`: the held events after `last_seq` (or `stale`), `resumed`, the newest
    /// frame.
    pub(super) async fn resume<C: Future<Output = ()>>(
        &mut self,
        sink: &mut Sink,
        mut cancelled: Pin<&mut C>,
        last_seq: Option<u64>,
    ) -> io::Result<()> {
        let unplaced = last_seq.filter(|last| !self.channel.places(*last));
        if let (Some(relay), Some(last)) = (self.relay.clone(), unplaced) {
            // Whether the owner's ring can answer depends on where the browser is, which a
            // new session knows only once its host looked the browser up.
            let kind = tokio::select! {
                biased;
                _ = cancelled.as_mut() => return Ok(()),
                kind = self.channel.decided_source_kind(SOURCE_KIND_WAIT) => kind,
            };
            if kind == Some(SourceKind::Relayed) {
                // Another instance's number, from before this one followed the channel: the
                // owner's ring may hold what came after it.
                let replay = tokio::select! {
                    biased;
                    _ = cancelled.as_mut() => return Ok(()),
                    replay = relay.ring_after(&self.channel.id.key, last) => replay,
                };
                if let Some(replay) = replay {
                    return self.resume_from_owner(sink, cancelled, last, replay).await;
                }
            }
        }
        // A number this log cannot place (evicted, before it knew the channel, another life)
        // replays all it holds after `stale`.
        let (replayed, stale, newest) = match unplaced {
            None => {
                self.send_events_after(sink, cancelled.as_mut(), last_seq, 0, true)
                    .await?
            }
            Some(_) => {
                let oldest = self
                    .channel
                    .events_after(None, 1)
                    .events
                    .first()
                    .map(|e| e.seq);
                self.send_stale(sink, cancelled.as_mut(), oldest).await?;
                let (sent, _, newest) = self
                    .send_events_after(sink, cancelled.as_mut(), None, 0, false)
                    .await?;
                (sent, true, newest)
            }
        };
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

    /// Answers `resume` from the owner's ring: its events after `last`, then those this
    /// instance received after them, `resumed`, the newest frame.
    async fn resume_from_owner<C: Future<Output = ()>>(
        &mut self,
        sink: &mut Sink,
        mut cancelled: Pin<&mut C>,
        last: u64,
        replay: crate::relay::ring::RingReplay,
    ) -> io::Result<()> {
        if let Some(oldest) = replay.stale {
            self.send_stale(sink, cancelled.as_mut(), oldest).await?;
        }
        let mut cursor = last;
        let mut replayed = 0;
        for (seq, text) in replay.events {
            if seq > cursor {
                self.send_message(sink, cancelled.as_mut(), &text).await?;
                cursor = seq;
                replayed += 1;
            }
        }
        // What arrived here meanwhile, past the owner's answer. This log may not place
        // `cursor` (then it reads from its oldest event): only newer events are sent, and its
        // gaps were the owner's to tell.
        let (local, _, newest) = self
            .send_events_after(sink, cancelled.as_mut(), Some(cursor), cursor, false)
            .await?;
        replayed += local;
        if local > 0 {
            cursor = self.event_cursor;
        } else if replay.stale.is_some() && replayed == 0 {
            // As on the local path: a number that cannot be placed does not stay the cursor
            // (it may be ahead of this instance's numbers).
            cursor = cursor.min(newest);
        }
        self.event_cursor = cursor;
        let done = protocol::resumed_message(Some(last), replayed);
        self.send_message(sink, cancelled.as_mut(), &Bytes::from(done))
            .await?;
        self.resend_latest_frame(sink, cancelled).await
    }

    /// Answers `snapshot-request`: `{"type":"snapshot","seq":N}` and frame N, waiting up to
    /// `SNAPSHOT_WAIT` for a first frame.
    pub(super) async fn snapshot<C: Future<Output = ()>>(
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

    pub(super) async fn pump(&mut self, sink: &mut Sink) -> io::Result<()> {
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
                        if after_seq > seen && self.frame_gate() == FrameGate::Open && self.jpeg_frames() {
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
                    Some(Outbound::Video(Some(subscription))) => {
                        // The newest picture as JPEG, if the viewer lacks it, while the keyframe
                        // is made: never a blank or stale screen meanwhile.
                        self.send_latest_frame(sink, cancelled.as_mut()).await?;
                        self.video = Some(subscription);
                        self.video_config = None;
                        self.counters.video.store(true, Ordering::Relaxed);
                    }
                    Some(Outbound::Video(None)) => {
                        let had_video = self.video.take().is_some();
                        self.counters.video.store(false, Ordering::Relaxed);
                        if had_video {
                            // Back to JPEG: the page as it is now, not as the last chunk was.
                            self.resend_latest_frame(sink, cancelled.as_mut()).await?;
                        }
                    }
                    Some(Outbound::WebRtcPictures(on)) => {
                        self.webrtc_pictures = if on {
                            self.webrtc_pictures.saturating_add(1)
                        } else {
                            self.webrtc_pictures.saturating_sub(1)
                        };
                        if !on && self.jpeg_frames() {
                            // Back to JPEG: the page as it is now.
                            self.resend_latest_frame(sink, cancelled.as_mut()).await?;
                        }
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
                    self.send_events_after(sink, cancelled.as_mut(), Some(cursor), 0, true).await?;
                }
                received = next_chunk(&mut self.video), if self.video.is_some() => match received {
                    Ok(chunk) => self.write_chunk(sink, cancelled.as_mut(), chunk).await?,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(video) = self.video.as_mut() {
                            video.lagged();
                        }
                        self.counters.video_lagged.fetch_add(1, Ordering::Relaxed);
                    }
                    // The pipeline gave up under this viewer (its encoder kept failing): the
                    // viewer is told, and gets JPEG frames again.
                    Err(broadcast::error::RecvError::Closed) => {
                        self.video = None;
                        self.counters.video.store(false, Ordering::Relaxed);
                        let message = protocol::error_message(
                            "video_failed",
                            "the video encoder stopped; JPEG frames follow",
                        );
                        self.send_message(sink, cancelled.as_mut(), &Bytes::from(message)).await?;
                        self.resend_latest_frame(sink, cancelled.as_mut()).await?;
                    }
                },
                changed = self.frames.changed(), if gate == FrameGate::Open && self.jpeg_frames() => {
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

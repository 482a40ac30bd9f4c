//! One viewer's WebRTC peer: its `Rtc` (str0m, sans-IO) driven by one runtime task, fed the
//! datagrams the endpoint routes to it, its timeouts, and its channel's video chunks, which it
//! packetizes into RTP. PLI and FIR become keyframe requests to the channel's one encoder
//! (coalesced there with every other viewer's). It tells the viewer, through `PeerEvents`,
//! when it connects, when pictures flow and why it ended.
//! Must not touch the viewer's socket or the registry: `PeerEvents` is its only way out.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::bwe::BweKind;
use str0m::media::{Frequency, KeyframeRequestKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::endpoint::{Datagram, Endpoint};
use crate::codec::pipeline::{Admit, KeyReason, VideoSubscription};
use crate::codec::VideoChunk;
use crate::sync::lock;

/// What a peer tells its viewer.
pub trait PeerEvents: Send + Sync {
    /// A JSON message for the viewer (`webrtc-state`).
    fn message(&self, text: String);
    /// The peer started (`true`) or stopped delivering pictures: the viewer's JPEG frames
    /// stop and resume with it.
    fn delivering(&self, on: bool);
    /// The picture of frame `seq` (ordinal `index`) went out: input in its pixels maps by it.
    fn shown(&self, seq: u64, index: u64);
}

/// Why a peer ended, as the viewer is told (`webrtc-state` `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The viewer sent `webrtc-close`, or left.
    Closed,
    /// A newer offer of the same viewer replaced it.
    Replaced,
    /// ICE and DTLS did not complete within `connectTimeoutMs`.
    ConnectTimeout,
    /// The viewer stopped answering consent checks.
    Disconnected,
    /// The channel's encoder stopped.
    VideoFailed,
    /// The registry is closing.
    ServerClosing,
    /// The WebRTC stack refused what the viewer sent.
    Failed,
}

impl EndReason {
    /// The reason's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Closed => "closed",
            EndReason::Replaced => "replaced",
            EndReason::ConnectTimeout => "connect_timeout",
            EndReason::Disconnected => "disconnected",
            EndReason::VideoFailed => "video_failed",
            EndReason::ServerClosing => "server_closing",
            EndReason::Failed => "failed",
        }
    }
}

/// `{"type":"webrtc-state","state":S,"reason":R|null}`.
pub fn state_message(state: &str, reason: Option<EndReason>) -> String {
    serde_json::json!({
        "type": "webrtc-state",
        "state": state,
        "reason": reason.map(EndReason::as_str),
    })
    .to_string()
}

/// A peer's figures, for `stats()`.
#[derive(Debug, Clone, Default)]
pub struct PeerFigures {
    /// `connecting`, `connected` or `closed`.
    pub state: &'static str,
    /// Round-trip time from RTCP, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Fraction of our packets the viewer reported lost.
    pub loss: Option<f32>,
    /// Transport-wide congestion control estimate (with `bandwidthEstimation`), bits/s.
    pub bandwidth_estimate: Option<u64>,
    /// Packets and bytes of RTP sent (retransmissions included).
    pub packets_sent: u64,
    pub bytes_sent: u64,
    /// NACKs, PLIs and FIRs the viewer sent.
    pub nacks: u64,
    pub plis: u64,
    pub firs: u64,
    /// Access units written, and those skipped (waiting for a keyframe, or behind).
    pub chunks_sent: u64,
    pub chunks_skipped: u64,
    /// Times the peer fell behind the encoder and skipped to a keyframe.
    pub lagged: u64,
}

/// What a peer's task and its handle share.
#[derive(Debug)]
pub struct PeerShared {
    pub(super) token: CancellationToken,
    pub(super) end: Mutex<Option<EndReason>>,
    pub(super) figures: Mutex<PeerFigures>,
}

impl PeerShared {
    pub(super) fn new(token: CancellationToken) -> Self {
        PeerShared {
            token,
            end: Mutex::new(None),
            figures: Mutex::new(PeerFigures {
                state: "connecting",
                ..PeerFigures::default()
            }),
        }
    }

    /// Ends the peer for `reason` (the first reason given wins).
    pub(super) fn end(&self, reason: EndReason) {
        lock(&self.end).get_or_insert(reason);
        self.token.cancel();
    }
}

/// A peer ready to run: its negotiated `Rtc` and what it sends.
pub(super) struct Peer {
    pub(super) id: u64,
    pub(super) rtc: Rtc,
    pub(super) mid: Mid,
    pub(super) pt: Pt,
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) inbox: mpsc::Receiver<Datagram>,
    pub(super) video: VideoSubscription,
    pub(super) events: Arc<dyn PeerEvents>,
    pub(super) shared: Arc<PeerShared>,
    pub(super) connect_timeout: Duration,
    /// Cancelled when the registry closes.
    pub(super) closing: CancellationToken,
    /// Bitrate the congestion controller aims for (`None`: no estimation, no pacing).
    pub(super) desired_bitrate: Option<u64>,
}

/// Running state of the task.
struct Progress {
    connected: bool,
    delivering: bool,
    /// RTP time origin.
    epoch: Instant,
}

impl Peer {
    /// Runs the peer until it ends, then tells the viewer why.
    pub(super) async fn run(mut self) {
        let mut progress = Progress {
            connected: false,
            delivering: false,
            epoch: Instant::now(),
        };
        let reason = self.drive(&mut progress).await;
        self.endpoint.remove_peer(self.id);
        self.rtc.disconnect();
        if progress.delivering {
            self.events.delivering(false);
        }
        lock(&self.shared.figures).state = "closed";
        self.events.message(state_message("closed", Some(reason)));
    }

    async fn drive(&mut self, progress: &mut Progress) -> EndReason {
        let connect_by = tokio::time::Instant::now() + self.connect_timeout;
        loop {
            let deadline = match self.drain(progress).await {
                Ok(deadline) => deadline,
                Err(reason) => return reason,
            };
            // The viewer closed its connection (a DTLS close alert).
            if !self.rtc.is_alive() {
                return EndReason::Disconnected;
            }
            // str0m asks for a time input at its deadline; far-off deadlines are capped so the
            // loop never computes an unrepresentable instant.
            let wake = tokio::time::Instant::from_std(
                deadline.min(Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                biased;
                _ = self.shared.token.cancelled() => {
                    return lock(&self.shared.end).unwrap_or(EndReason::Closed);
                }
                _ = self.closing.cancelled() => return EndReason::ServerClosing,
                datagram = self.inbox.recv() => {
                    let Some(datagram) = datagram else { return EndReason::Closed };
                    let Ok(contents) = datagram.data.as_slice().try_into() else {
                        // Neither STUN, DTLS nor RTP: nothing for this peer.
                        continue;
                    };
                    let input = Input::Receive(datagram.at, Receive {
                        proto: Protocol::Udp,
                        source: datagram.source,
                        destination: self.endpoint.local,
                        contents,
                    });
                    if self.rtc.handle_input(input).is_err() {
                        return EndReason::Failed;
                    }
                }
                chunk = self.video.chunks.recv(), if progress.connected => match chunk {
                    Ok(chunk) => {
                        if let Err(reason) = self.write_chunk(progress, &chunk) {
                            return reason;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.video.lagged();
                        lock(&self.shared.figures).lagged += 1;
                    }
                    Err(broadcast::error::RecvError::Closed) => return EndReason::VideoFailed,
                },
                _ = tokio::time::sleep_until(wake) => {
                    if self.rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                        return EndReason::Failed;
                    }
                }
                _ = tokio::time::sleep_until(connect_by), if !progress.connected => {
                    return EndReason::ConnectTimeout;
                }
            }
        }
    }

    /// Polls the `Rtc` until it only waits for time: sends what it transmits, handles its
    /// events. str0m requires this after every input.
    async fn drain(&mut self, progress: &mut Progress) -> Result<Instant, EndReason> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => return Ok(at),
                Ok(Output::Transmit(transmit)) => {
                    self.endpoint
                        .send(transmit.destination, &transmit.contents)
                        .await;
                }
                Ok(Output::Event(event)) => self.on_event(progress, event)?,
                Err(_) => return Err(EndReason::Failed),
            }
        }
    }

    fn on_event(&mut self, progress: &mut Progress, event: Event) -> Result<(), EndReason> {
        match event {
            Event::Connected => {
                progress.connected = true;
                progress.epoch = Instant::now();
                if let Some(bitrate) = self.desired_bitrate {
                    self.rtc
                        .bwe()
                        .set_desired_bitrate(str0m::bwe::Bitrate::bps(bitrate));
                }
                lock(&self.shared.figures).state = "connected";
                self.events.message(state_message("connected", None));
                // Deltas are of no use to a decoder that has none before them.
                self.video.awaiting_key = true;
                self.video.request_key(KeyReason::Join);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                return Err(EndReason::Disconnected);
            }
            Event::KeyframeRequest(request) => {
                {
                    let mut figures = lock(&self.shared.figures);
                    match request.kind {
                        KeyframeRequestKind::Pli => figures.plis += 1,
                        KeyframeRequestKind::Fir => figures.firs += 1,
                    }
                }
                self.video.request_key(KeyReason::Loss);
            }
            Event::PeerStats(stats) => {
                let mut figures = lock(&self.shared.figures);
                figures.rtt_ms = stats.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0);
                figures.loss = stats.egress_loss_fraction;
                if let Some(bwe) = stats.bwe_tx {
                    figures.bandwidth_estimate = Some(bwe.as_u64());
                }
            }
            Event::MediaEgressStats(stats) => {
                let mut figures = lock(&self.shared.figures);
                figures.packets_sent = stats.packets;
                figures.bytes_sent = stats.bytes;
                figures.nacks = stats.nacks;
                figures.plis = figures.plis.max(stats.plis);
                figures.firs = figures.firs.max(stats.firs);
                if stats.rtt.is_some() {
                    figures.rtt_ms = stats.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0);
                }
                if stats.loss.is_some() {
                    figures.loss = stats.loss;
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                lock(&self.shared.figures).bandwidth_estimate = Some(estimate.as_u64());
            }
            _ => {}
        }
        Ok(())
    }

    /// Packetizes `chunk` into RTP, unless the peer waits for a keyframe and it is none.
    fn write_chunk(
        &mut self,
        progress: &mut Progress,
        chunk: &VideoChunk,
    ) -> Result<(), EndReason> {
        match self.video.admit(chunk) {
            Admit::Deliver => {}
            Admit::Skip => {
                lock(&self.shared.figures).chunks_skipped += 1;
                return Ok(());
            }
            Admit::Behind => {
                let mut figures = lock(&self.shared.figures);
                figures.chunks_skipped += 1;
                figures.lagged += 1;
                return Ok(());
            }
        }
        let now = Instant::now();
        let ticks = now.duration_since(progress.epoch).as_micros() * 9 / 100;
        let rtp_time = MediaTime::new(ticks as u64, Frequency::NINETY_KHZ);
        let Some(writer) = self.rtc.writer(self.mid) else {
            return Err(EndReason::Failed);
        };
        // A zero playout delay asks the browser to show each picture as soon as it is
        // decoded, instead of buffering for smoothness: this is a live view of a screen.
        writer
            .playout_delay(MediaTime::ZERO, MediaTime::ZERO)
            .write(self.pt, now, rtp_time, &chunk.body[..])
            .map_err(|_| EndReason::Failed)?;
        if !progress.delivering {
            progress.delivering = true;
            self.events.delivering(true);
        }
        self.events.shown(chunk.seq, chunk.index);
        lock(&self.shared.figures).chunks_sent += 1;
        Ok(())
    }
}

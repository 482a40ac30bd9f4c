//! WebRTC delivery of a channel's video: the registry's one UDP endpoint, a peer per viewer
//! that asked (`webrtc-offer` on its extended WebSocket, so admission, auth and control are
//! the WebSocket's), and the answer to its offer. The server is ICE-lite: it offers its own
//! candidates in the answer and learns each viewer's address from the viewer's checks, so it
//! never sends to an address the viewer only named. Pictures come from the same encoder
//! subscription as WebSocket video; input and control stay on the WebSocket.
//! Must not touch WebSockets, the registry's state or the encoder's internals.

pub mod config;
mod endpoint;
pub mod peer;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::{Candidate, Output, Rtc, RtcConfig};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::config::WebRtcConfig;
use self::endpoint::{Endpoint, PEER_INBOX};
use self::peer::{EndReason, Peer, PeerEvents, PeerFigures, PeerShared};
use crate::codec::pipeline::VideoSubscription;
use crate::sync::lock;

/// Why an offer was refused: the code and message for the viewer, and the detail for the
/// deployer's log only.
#[derive(Debug)]
pub struct Refusal {
    pub code: &'static str,
    pub message: &'static str,
    pub detail: Option<String>,
}

fn refuse(code: &'static str, message: &'static str, detail: Option<String>) -> Refusal {
    Refusal {
        code,
        message,
        detail,
    }
}

/// Candidates one peer's viewer may trickle; more are refused (`too_many_candidates`).
pub const MAX_CANDIDATES_PER_PEER: u32 = 64;

/// Checks a trickled ICE candidate line (`candidate:…`, RFC 8839): a foundation, component,
/// `udp` or `tcp`, priority, an IP address or an mDNS name (`….local`, how browsers hide
/// local addresses), a port and `typ`. The server is ICE-lite: it learns a viewer's address
/// from the viewer's own checks and never sends to a candidate it was only told, so a valid
/// candidate is acknowledged by silence and otherwise unused.
pub fn check_candidate(line: &str) -> Result<(), &'static str> {
    let fields: Vec<&str> = line
        .strip_prefix("candidate:")
        .ok_or("a candidate starts with \"candidate:\"")?
        .split_whitespace()
        .collect();
    if fields.len() < 7 || fields[6] != "typ" {
        return Err(
            "a candidate has a foundation, component, protocol, priority, address, port and typ",
        );
    }
    let address = fields[4];
    if address.parse::<std::net::IpAddr>().is_ok() {
        Candidate::from_sdp_string(line).map_err(|_| "the candidate could not be parsed")?;
        return Ok(());
    }
    let mdns = address.len() <= 255
        && address.ends_with(".local")
        && address
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let port_ok = fields[5].parse::<u16>().is_ok();
    let proto_ok = matches!(fields[2].to_ascii_lowercase().as_str(), "udp" | "tcp");
    if mdns && port_ok && proto_ok {
        Ok(())
    } else {
        Err("the candidate's address is neither an IP address nor an mDNS name")
    }
}

/// A viewer's hold on its peer: dropping it ends the peer (`closed`).
#[derive(Debug)]
pub struct PeerHandle {
    shared: Arc<PeerShared>,
    candidates: std::sync::atomic::AtomicU32,
}

impl PeerHandle {
    /// Counts one trickled candidate: how many the viewer sent this peer, this one included.
    pub fn count_candidate(&self) -> u32 {
        self.candidates
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    /// Ends the peer for `reason`.
    pub fn end(&self, reason: EndReason) {
        self.shared.end(reason);
    }

    /// The peer's figures now.
    pub fn figures(&self) -> PeerFigures {
        lock(&self.shared.figures).clone()
    }
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        self.shared.end(EndReason::Closed);
    }
}

/// The registry's totals of WebRTC (`stats().webrtc`).
#[derive(Debug, Clone, Default)]
pub struct WebRtcFigures {
    /// The UDP port, once bound.
    pub port: Option<u16>,
    pub peers: u64,
    pub offers: u64,
    pub offers_refused: u64,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub datagrams_unrouted: u64,
    pub datagrams_dropped: u64,
    pub send_errors: u64,
}

/// The WebRTC side of one registry.
pub struct WebRtc {
    config: WebRtcConfig,
    /// The channels' encoder bitrate: the congestion controller's start and aim.
    video_bitrate: u64,
    /// `session-meta`'s `webrtc` value, made once.
    client: serde_json::Value,
    runtime: Handle,
    endpoint: Mutex<Option<Arc<Endpoint>>>,
    crypto: Arc<CryptoProvider>,
    /// One certificate for every peer: generating one per offer would make a hundred
    /// viewers joining at once a hundred key generations.
    cert: Mutex<Option<DtlsCert>>,
    peers: Arc<AtomicUsize>,
    next_peer: AtomicU64,
    offers: AtomicU64,
    offers_refused: AtomicU64,
    closed: CancellationToken,
}

/// Decrements the peer count when a peer task ends, however it ends.
struct PeerSlot(Arc<AtomicUsize>);

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The RTP header extension id str0m proposes for playout delay (an answer takes the offer's).
const PLAYOUT_DELAY_EXTENSION_ID: u8 = 12;

/// The mids of an offer's media sections (`a=mid:` lines), in order.
fn offered_mids(offer: &str) -> impl Iterator<Item = Mid> + '_ {
    offer
        .lines()
        .filter_map(|line| line.trim_end().strip_prefix("a=mid:"))
        .map(Mid::from)
}

/// The H.264 payload type to send: packetization mode 1 (the encoder's access units exceed a
/// packet), preferring Constrained Baseline, which is what the encoder makes.
fn pick_payload(rtc: &mut Rtc, mid: Mid) -> Option<Pt> {
    let writer = rtc.writer(mid)?;
    writer
        .payload_params()
        .filter(|params| params.spec().codec == Codec::H264)
        .filter(|params| params.spec().format.packetization_mode == Some(1))
        .max_by_key(|params| {
            let profile = params.spec().format.profile_level_id.unwrap_or(0);
            let baseline = (profile >> 16) == 0x42;
            let constrained = (profile >> 8) & 0x40 != 0;
            (baseline, constrained)
        })
        .map(|params| params.pt())
}

/// `{"type":"webrtc-answer","sdp":S}`.
pub fn answer_message(sdp: &str) -> String {
    serde_json::json!({ "type": "webrtc-answer", "sdp": sdp }).to_string()
}

impl WebRtc {
    /// WebRTC with `config`, for video of `video_bitrate` bits/s; nothing is bound until the
    /// first offer.
    pub fn new(config: WebRtcConfig, video_bitrate: u64, runtime: Handle) -> WebRtc {
        WebRtc {
            video_bitrate,
            client: config.client_json(),
            config,
            runtime,
            endpoint: Mutex::new(None),
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            cert: Mutex::new(None),
            peers: Arc::new(AtomicUsize::new(0)),
            next_peer: AtomicU64::new(1),
            offers: AtomicU64::new(0),
            offers_refused: AtomicU64::new(0),
            closed: CancellationToken::new(),
        }
    }

    /// What `session-meta` tells viewers (`{"iceServers":[…]}`).
    pub fn client_json(&self) -> &serde_json::Value {
        &self.client
    }

    /// The endpoint, bound on first use.
    fn endpoint(&self) -> Result<Arc<Endpoint>, Refusal> {
        let mut endpoint = lock(&self.endpoint);
        if let Some(endpoint) = endpoint.as_ref() {
            return Ok(endpoint.clone());
        }
        let bound = Endpoint::bind(&self.config, &self.runtime).map_err(|e| {
            refuse(
                "webrtc_unavailable",
                "WebRTC is not available on this server now",
                Some(format!(
                    "binding UDP {}:{} failed: {e}",
                    self.config.host, self.config.port
                )),
            )
        })?;
        *endpoint = Some(bound.clone());
        Ok(bound)
    }

    fn certificate(&self) -> Result<DtlsCert, Refusal> {
        let mut cert = lock(&self.cert);
        if let Some(cert) = cert.as_ref() {
            return Ok(cert.clone());
        }
        let made = self
            .crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| {
                refuse(
                    "webrtc_unavailable",
                    "WebRTC is not available on this server now",
                    Some("the DTLS certificate could not be generated".into()),
                )
            })?;
        *cert = Some(made.clone());
        Ok(made)
    }

    /// Answers `offer` with a peer that sends the channel's video to the viewer, or says why
    /// not. `video` subscribes to the channel's encoder; it is called only once the offer was
    /// negotiated, so a bad offer never starts an encoder. The peer runs until its handle is
    /// dropped, `parent` is cancelled (the viewer left), or the connection fails; `events`
    /// hears from it.
    pub fn open(
        &self,
        offer: &str,
        video: impl FnOnce() -> Option<VideoSubscription>,
        events: Arc<dyn PeerEvents>,
        parent: &CancellationToken,
    ) -> Result<(String, PeerHandle), Refusal> {
        self.offers.fetch_add(1, Ordering::Relaxed);
        let result = self.try_open(offer, video, events, parent);
        if result.is_err() {
            self.offers_refused.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn try_open(
        &self,
        offer: &str,
        video: impl FnOnce() -> Option<VideoSubscription>,
        events: Arc<dyn PeerEvents>,
        parent: &CancellationToken,
    ) -> Result<(String, PeerHandle), Refusal> {
        if self.closed.is_cancelled() {
            return Err(refuse(
                "webrtc_unavailable",
                "the server is shutting down",
                None,
            ));
        }
        // Taken before any work, so a burst of offers cannot exceed the bound.
        let taken = self.peers.fetch_add(1, Ordering::SeqCst);
        let slot = PeerSlot(self.peers.clone());
        if taken >= self.config.max_peers as usize {
            return Err(refuse(
                "webrtc_busy",
                "this server serves no more WebRTC viewers now; use WebSocket video",
                None,
            ));
        }
        let endpoint = self.endpoint()?;
        let (mut rtc, mid, pt, answer) = self.negotiate(offer, endpoint.local)?;
        let video = video()
            .ok_or_else(|| refuse("video_failed", "the video encoder could not start", None))?;
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let id = self.next_peer.fetch_add(1, Ordering::Relaxed);
        let (inbox_tx, inbox) = mpsc::channel(PEER_INBOX);
        endpoint.add_peer(id, ufrag, inbox_tx);
        let token = parent.child_token();
        let shared = Arc::new(PeerShared::new(token.clone()));
        let peer = Peer {
            id,
            rtc,
            mid,
            pt,
            endpoint,
            inbox,
            video,
            events,
            shared: shared.clone(),
            connect_timeout: self.config.connect_timeout,
            closing: self.closed.clone(),
            desired_bitrate: self
                .config
                .bandwidth_estimation
                .then_some(self.video_bitrate * 3 / 2),
        };
        self.runtime.spawn(async move {
            let _slot = slot;
            peer.run().await;
        });
        Ok((
            answer,
            PeerHandle {
                shared,
                candidates: std::sync::atomic::AtomicU32::new(0),
            },
        ))
    }

    /// An `Rtc` that answered `offer` with candidates at `local`, its video mid and H.264
    /// payload type, and the answer.
    fn negotiate(
        &self,
        offer_text: &str,
        local: std::net::SocketAddr,
    ) -> Result<(Rtc, Mid, Pt, String), Refusal> {
        let offer = SdpOffer::from_sdp_string(offer_text)
            .map_err(|e| refuse("bad_sdp", "the offer is not valid SDP", Some(e.to_string())))?;
        let bandwidth_estimation = self.config.bandwidth_estimation;
        let video_bitrate = self.video_bitrate;
        let cert = self.certificate()?;
        let mut builder = RtcConfig::new()
            .set_crypto_provider(self.crypto.clone())
            .set_dtls_cert(cert)
            .set_ice_lite(true)
            .clear_codecs()
            .enable_h264(true)
            // Lets each picture carry "show me at once" (min = max = 0): browsers then skip
            // the smoothing delay meant for camera video.
            .set_extension(
                PLAYOUT_DELAY_EXTENSION_ID,
                str0m::rtp::Extension::PlayoutDelay,
            )
            .set_stats_interval(Some(std::time::Duration::from_secs(1)));
        if bandwidth_estimation {
            builder = builder.enable_bwe(Some(str0m::bwe::Bitrate::bps(video_bitrate)));
        }
        let mut rtc = builder.build(Instant::now());
        let host = Candidate::host(local, "udp").map_err(|e| {
            refuse(
                "webrtc_unavailable",
                "WebRTC is not available on this server now",
                Some(format!("host candidate {local}: {e}")),
            )
        })?;
        rtc.add_local_candidate(host);
        if let Some(public) = self.config.public_address {
            let mapped = std::net::SocketAddr::new(public, local.port());
            if let Ok(candidate) = Candidate::server_reflexive(mapped, local, "udp") {
                rtc.add_local_candidate(candidate);
            }
        }
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| {
            refuse(
                "bad_sdp",
                "the offer could not be negotiated",
                Some(e.to_string()),
            )
        })?;
        // str0m announces media only once connected: find the video the offer lets us send
        // by the offer's own mids.
        let mid = offered_mids(offer_text).find(|mid| {
            rtc.media(*mid).is_some_and(|media| {
                media.kind() == MediaKind::Video
                    && matches!(media.direction(), Direction::SendOnly | Direction::SendRecv)
            })
        });
        // Answering is a mutation: drain before anything else touches the `Rtc`.
        loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(_)) => break,
                Ok(_) => {}
                Err(e) => {
                    return Err(refuse(
                        "bad_sdp",
                        "the offer could not be negotiated",
                        Some(e.to_string()),
                    ))
                }
            }
        }
        let Some(mid) = mid else {
            return Err(refuse(
                "bad_sdp",
                "the offer has no video for the viewer to receive (add a recvonly video transceiver)",
                None,
            ));
        };
        let Some(pt) = pick_payload(&mut rtc, mid) else {
            return Err(refuse(
                "unsupported_codec",
                "the offer has no H.264 with packetization-mode=1; the server sends H.264",
                None,
            ));
        };
        Ok((rtc, mid, pt, answer.to_sdp_string()))
    }

    /// Peers running now.
    pub fn peer_count(&self) -> usize {
        self.peers.load(Ordering::SeqCst)
    }

    /// Ends every peer (`server_closing`) and stops the endpoint.
    pub fn close(&self) {
        self.closed.cancel();
        if let Some(endpoint) = lock(&self.endpoint).as_ref() {
            endpoint.close();
        }
    }

    /// Totals for `stats()`.
    pub fn figures(&self) -> WebRtcFigures {
        let endpoint = lock(&self.endpoint).clone();
        let mut figures = WebRtcFigures {
            port: endpoint.as_ref().map(|e| e.local.port()),
            peers: self.peer_count() as u64,
            offers: self.offers.load(Ordering::Relaxed),
            offers_refused: self.offers_refused.load(Ordering::Relaxed),
            ..WebRtcFigures::default()
        };
        if let Some(endpoint) = endpoint {
            let c = &endpoint.counters;
            figures.datagrams_in = c.datagrams_in.load(Ordering::Relaxed);
            figures.datagrams_out = c.datagrams_out.load(Ordering::Relaxed);
            figures.datagrams_unrouted = c.datagrams_unrouted.load(Ordering::Relaxed);
            figures.datagrams_dropped = c.datagrams_dropped.load(Ordering::Relaxed);
            figures.send_errors = c.send_errors.load(Ordering::Relaxed);
        }
        figures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An offer Chromium 156 made for one recvonly video transceiver with H.264 preferred.
    const CHROMIUM_OFFER: &str = include_str!("testdata/chromium-recvonly-h264.sdp");

    fn webrtc() -> (tokio::runtime::Runtime, WebRtc) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let webrtc = WebRtc::new(WebRtcConfig::default(), 2_000_000, runtime.handle().clone());
        (runtime, webrtc)
    }

    fn local() -> std::net::SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    #[test]
    fn answers_a_browser_offer_with_h264_ice_lite_and_our_candidate() {
        let (_runtime, webrtc) = webrtc();
        let (_rtc, _mid, pt, answer) = webrtc.negotiate(CHROMIUM_OFFER, local()).unwrap();
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("127.0.0.1 40000 typ host"), "{answer}");
        assert!(answer.contains("a=sendonly"), "{answer}");
        let fmtp = format!("a=fmtp:{} ", *pt);
        let line = answer
            .lines()
            .find(|l| l.starts_with(&fmtp))
            .unwrap_or_else(|| panic!("no fmtp for {pt:?}: {answer}"));
        assert!(line.contains("packetization-mode=1"), "{line}");
        assert!(line.contains("profile-level-id=42e01f"), "{line}");
    }

    #[test]
    fn refuses_an_offer_without_video_to_receive() {
        let (_runtime, webrtc) = webrtc();
        // The same offer with the transceiver inactive: nothing the server could send into.
        let inactive = CHROMIUM_OFFER.replace("a=recvonly", "a=inactive");
        let refusal = webrtc.negotiate(&inactive, local()).unwrap_err();
        assert_eq!(refusal.code, "bad_sdp");
        // H.264 removed: no codec in common.
        let vp8_only: String = CHROMIUM_OFFER
            .lines()
            .filter(|l| !l.contains("H264"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        let refusal = webrtc.negotiate(&vp8_only, local()).unwrap_err();
        assert!(
            refusal.code == "unsupported_codec" || refusal.code == "bad_sdp",
            "{refusal:?}"
        );
        assert_eq!(
            webrtc
                .negotiate("v=0\r\nnonsense", local())
                .unwrap_err()
                .code,
            "bad_sdp"
        );
    }

    #[test]
    fn checks_trickled_candidates() {
        assert!(check_candidate(
            "candidate:1 1 udp 2122260223 192.0.2.10 54321 typ host generation 0"
        )
        .is_ok());
        assert!(check_candidate(
            "candidate:2 1 udp 2122260223 0b5f4a8c-5c1e-4f0e-9d2a-1d2f3e4a5b6c.local 54321 typ host"
        )
        .is_ok());
        assert!(check_candidate("candidate:x").is_err());
        assert!(check_candidate("a=candidate:1 1 udp 1 192.0.2.1 1 typ host").is_err());
        assert!(check_candidate("candidate:1 1 udp 1 evil.example.com 1 typ host").is_err());
        assert!(check_candidate("candidate:1 1 udp 1 192.0.2.1 99999 typ host").is_err());
    }
}

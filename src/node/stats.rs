//! Stats as JS reads them: the core's snapshots in one conversion each, the channel counters
//! and registry totals expanded from the core's one list of them (`for_channel_counters!`,
//! `for_registry_totals!`), so a new counter needs no edit here.
//! Must not compute stats: the registry and the CDP sessions do.

use napi_derive::napi;

use super::options::FrameMetadata;
use crate::codec::pipeline::PipelineStats;
use crate::protocol::Mode;
use crate::registry::stats::{for_channel_counters, for_registry_totals};
use crate::registry::{ChannelStats, RegistryTotals, SourceState, Transport, ViewerStats};
use crate::source::cdp::CdpSessionStats;

/// How a viewer's socket is served.
#[napi(string_enum = "lowercase")]
pub enum ViewerTransport {
    /// Owned by Rust (handed over by file descriptor).
    Native,
    /// Kept in JS, written through host events.
    Bridged,
    /// Another instance's subscription to this channel over the relay (one for all of them).
    Relay,
}

/// Which wire a viewer speaks.
#[napi(string_enum = "lowercase")]
pub enum ViewerMode {
    /// Mastra's wire.
    Compat,
    /// The `browser-stream.v1` subprotocol.
    Extended,
}

/// Where a channel's source is in its lifecycle.
#[napi(string_enum = "lowercase")]
pub enum ChannelSourceState {
    /// No session.
    Idle,
    /// A session runs and has viewers.
    Running,
    /// A session runs after its last viewer left, until the linger ends.
    Lingering,
}

/// Stats of one viewer.
#[napi(object, js_name = "ViewerStats")]
pub struct JsViewerStats {
    /// Viewer id.
    pub id: u32,
    /// `native` (socket owned by Rust) or `bridged` (socket kept in JS).
    pub transport: ViewerTransport,
    /// `compat` or `extended` (the `browser-stream.v1` subprotocol).
    pub mode: ViewerMode,
    /// Whether it may control the page.
    pub can_control: bool,
    /// Frames written.
    pub frames_sent: i64,
    /// Frames skipped because the viewer was busy (latest frame wins).
    pub frames_skipped: i64,
    /// Bytes written.
    pub bytes_sent: i64,
    /// JSON messages written.
    pub messages_sent: i64,
    /// It receives H.264 video (it asked with `config.video`).
    pub video: bool,
    /// Video chunks written.
    pub video_chunks_sent: i64,
    /// Times it fell behind the video and skipped to the next keyframe.
    pub video_lagged: i64,
    /// Its WebRTC peer, while it has one.
    #[napi(ts_type = "PeerStats")]
    pub webrtc: Option<JsPeerStats>,
    /// Reliable messages waiting.
    pub queued_messages: u32,
    /// Seconds since the viewer joined.
    pub connected_seconds: f64,
}

impl From<ViewerStats> for JsViewerStats {
    fn from(v: ViewerStats) -> Self {
        JsViewerStats {
            id: v.id,
            transport: match v.transport {
                Transport::Native => ViewerTransport::Native,
                Transport::Bridged => ViewerTransport::Bridged,
                Transport::Relay => ViewerTransport::Relay,
            },
            mode: match v.mode {
                Mode::Compat => ViewerMode::Compat,
                Mode::Extended => ViewerMode::Extended,
            },
            can_control: v.can_control,
            frames_sent: v.frames_sent as i64,
            frames_skipped: v.frames_skipped as i64,
            bytes_sent: v.bytes_sent as i64,
            messages_sent: v.messages_sent as i64,
            video: v.video,
            video_chunks_sent: v.video_chunks_sent as i64,
            video_lagged: v.video_lagged as i64,
            webrtc: v.webrtc.map(JsPeerStats::from),
            queued_messages: v.queued_messages as u32,
            connected_seconds: v.connected_secs,
        }
    }
}

/// A viewer's WebRTC peer.
#[napi(object, js_name = "PeerStats")]
pub struct JsPeerStats {
    /// `connecting`, `connected` or `closed`.
    pub state: String,
    /// Round-trip time from RTCP, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Fraction of the packets sent that the viewer reported lost (0 to 1).
    pub loss: Option<f64>,
    /// Bandwidth estimate from the viewer's transport-wide feedback (TWCC), bits per second
    /// (with `webrtc.bandwidthEstimation`).
    pub bandwidth_estimate: Option<i64>,
    /// RTP packets and bytes sent, retransmissions included.
    pub packets_sent: i64,
    pub bytes_sent: i64,
    /// NACKs, PLIs and FIRs received from the viewer.
    pub nacks: i64,
    pub plis: i64,
    pub firs: i64,
    /// Access units sent, and skipped (awaiting a keyframe, or behind).
    pub chunks_sent: i64,
    pub chunks_skipped: i64,
    /// Times it fell behind the encoder and skipped to a keyframe.
    pub lagged: i64,
}

impl From<crate::webrtc::peer::PeerFigures> for JsPeerStats {
    fn from(p: crate::webrtc::peer::PeerFigures) -> Self {
        JsPeerStats {
            state: p.state.to_string(),
            rtt_ms: p.rtt_ms,
            loss: p.loss.map(f64::from),
            bandwidth_estimate: p.bandwidth_estimate.map(|b| b as i64),
            packets_sent: p.packets_sent as i64,
            bytes_sent: p.bytes_sent as i64,
            nacks: p.nacks as i64,
            plis: p.plis as i64,
            firs: p.firs as i64,
            chunks_sent: p.chunks_sent as i64,
            chunks_skipped: p.chunks_skipped as i64,
            lagged: p.lagged as i64,
        }
    }
}

/// The registry's relay over NATS.
#[napi(object, js_name = "RelayStats")]
pub struct JsRelayStats {
    /// This instance's id on the bus (in the owner's answers and leases).
    pub instance: String,
    /// Whether the NATS connection is up now.
    pub connected: bool,
    /// Channels this instance streams to other instances now.
    pub streaming: u32,
    /// Owner questions answered (this instance had the browser).
    pub questions_answered: i64,
    /// Streams started for other instances.
    pub streams_started: i64,
    /// Messages relay sources received from owners, and frames they pushed.
    pub messages_received: i64,
    pub frames_relayed: i64,
    /// Times an owner stopped answering a relay source.
    pub owners_lost: i64,
    /// Slow-consumer reports of the client (a subscription fell behind; messages dropped).
    pub slow_consumer_drops: i64,
    /// Frames the owner did not publish: the bus was away, or the frame over its `max_payload`.
    pub frames_dropped: i64,
    /// Owner questions answered "no" unasked: too many host probes in flight.
    pub probes_refused: i64,
    /// Channels whose H.264 video this instance publishes to other instances now.
    pub video_streaming: u32,
    /// Video chunks of owners fed to this instance's video viewers (encoded there, not here).
    pub chunks_relayed: i64,
}

impl From<crate::relay::RelayFigures> for JsRelayStats {
    fn from(f: crate::relay::RelayFigures) -> Self {
        JsRelayStats {
            instance: f.instance,
            connected: f.connected,
            streaming: f.streaming as u32,
            questions_answered: f.questions_answered as i64,
            streams_started: f.streams_started as i64,
            messages_received: f.messages_received as i64,
            frames_relayed: f.frames_relayed as i64,
            owners_lost: f.owners_lost as i64,
            slow_consumer_drops: f.slow_consumer_drops as i64,
            frames_dropped: f.frames_dropped as i64,
            probes_refused: f.probes_refused as i64,
            video_streaming: f.video_streaming as u32,
            chunks_relayed: f.chunks_relayed as i64,
        }
    }
}

/// The registry's WebRTC endpoint and peers.
#[napi(object, js_name = "WebRtcStats")]
pub struct JsWebRtcStats {
    /// The UDP port, once bound (at the first offer).
    pub port: Option<u32>,
    /// Peers running now.
    pub peers: u32,
    /// Offers received, and those refused.
    pub offers: i64,
    pub offers_refused: i64,
    /// Datagrams received and sent on the UDP socket.
    pub datagrams_in: i64,
    pub datagrams_out: i64,
    /// Datagrams from no known peer (dropped).
    pub datagrams_unrouted: i64,
    /// Datagrams dropped because a peer could not keep up.
    pub datagrams_dropped: i64,
    /// Sends the socket refused.
    pub send_errors: i64,
}

impl From<crate::webrtc::WebRtcFigures> for JsWebRtcStats {
    fn from(f: crate::webrtc::WebRtcFigures) -> Self {
        JsWebRtcStats {
            port: f.port.map(u32::from),
            peers: f.peers as u32,
            offers: f.offers as i64,
            offers_refused: f.offers_refused as i64,
            datagrams_in: f.datagrams_in as i64,
            datagrams_out: f.datagrams_out as i64,
            datagrams_unrouted: f.datagrams_unrouted as i64,
            datagrams_dropped: f.datagrams_dropped as i64,
            send_errors: f.send_errors as i64,
        }
    }
}

/// Viewers of a channel by what they receive.
#[napi(object, js_name = "ViewerModes")]
pub struct JsViewerModes {
    /// Compat viewers (base64 JPEG text).
    pub compat: u32,
    /// Extended viewers on binary JPEG frames.
    pub jpeg: u32,
    /// Extended viewers on H.264 video over the WebSocket.
    pub video: u32,
    /// Extended viewers whose WebRTC peer delivers pictures.
    pub webrtc: u32,
}

fn on_webrtc(v: &ViewerStats) -> bool {
    v.webrtc
        .as_ref()
        .is_some_and(|peer| peer.state == "connected" && peer.chunks_sent > 0)
}

impl JsViewerModes {
    fn of(viewers: &[ViewerStats]) -> Self {
        let count =
            |f: &dyn Fn(&ViewerStats) -> bool| viewers.iter().filter(|v| f(v)).count() as u32;
        JsViewerModes {
            compat: count(&|v| v.mode == Mode::Compat),
            jpeg: count(&|v| v.mode == Mode::Extended && !v.video && !on_webrtc(v)),
            video: count(&|v| v.video),
            webrtc: count(&on_webrtc),
        }
    }
}

/// A channel's video encoder.
#[napi(object, js_name = "VideoStats")]
pub struct JsVideoStats {
    /// `running`, `stopping` (its last viewer left) or `stopped`.
    pub state: String,
    /// The chunks come from the instance that has the browser (the relay), encoded there:
    /// this instance runs no encoder for the channel.
    pub relayed: bool,
    /// Codec string of the stream (after its first keyframe).
    pub codec: Option<String>,
    /// Coded width in pixels.
    pub width: u32,
    /// Coded height in pixels.
    pub height: u32,
    /// Video viewers subscribed.
    pub viewers: u32,
    /// Frames offered per second (last 2 s).
    pub fps_in: f64,
    /// Chunks encoded per second (last 2 s).
    pub fps_out: f64,
    /// Bits per second each video viewer receives (last 2 s).
    pub bitrate: f64,
    /// Decode + convert + encode time per frame, median, in ms (last 256 frames).
    pub encode_ms_p50: f64,
    /// The same, 99th percentile.
    pub encode_ms_p99: f64,
    /// Frames offered in all.
    pub frames_in: i64,
    /// Chunks made in all.
    pub chunks: i64,
    /// Bytes of all chunks, once (not per viewer).
    pub bytes: i64,
    /// Keyframes forced for joining or lagging viewers (coalesced).
    pub keyframes_forced: i64,
    /// Keyframes on the interval, and the first.
    pub keyframes_periodic: i64,
    /// Refinement keyframes of a quiet page.
    pub refinements: i64,
    /// Keyframe requests.
    pub key_requests: i64,
    /// Frames whose image did not decode (skipped).
    pub decode_errors: i64,
    /// Pictures the encoder failed on.
    pub encode_errors: i64,
    /// The last decode or encode failure, for the deployer.
    pub last_error: Option<String>,
}

impl From<PipelineStats> for JsVideoStats {
    fn from(s: PipelineStats) -> Self {
        JsVideoStats {
            state: s.state.to_string(),
            relayed: s.relayed,
            codec: s.codec,
            width: s.width,
            height: s.height,
            viewers: s.subscribers,
            fps_in: s.fps_in,
            fps_out: s.fps_out,
            bitrate: s.bitrate,
            encode_ms_p50: s.encode_ms_p50,
            encode_ms_p99: s.encode_ms_p99,
            frames_in: s.frames_in as i64,
            chunks: s.chunks as i64,
            bytes: s.bytes as i64,
            keyframes_forced: s.keyframes_forced as i64,
            keyframes_periodic: s.keyframes_periodic as i64,
            refinements: s.refinements as i64,
            key_requests: s.key_requests as i64,
            decode_errors: s.decode_errors as i64,
            encode_errors: s.encode_errors as i64,
            last_error: s.last_error,
        }
    }
}

macro_rules! js_channel_stats {
    ($( $(#[doc = $doc:tt])* $name:ident, )*) => {
        /// Stats of one agent channel.
        #[napi(object, js_name = "ChannelStats")]
        pub struct JsChannelStats {
            /// Channel key.
            pub key: String,
            /// Agent id.
            pub agent_id: String,
            /// Thread id.
            pub thread_id: Option<String>,
            /// Where the source is in its lifecycle.
            pub source_state: ChannelSourceState,
            /// Current source generation.
            pub generation: u32,
            /// Last status broadcast.
            pub status: Option<String>,
            /// Current page URL.
            pub url: Option<String>,
            /// Sequence number of the newest frame.
            pub last_seq: i64,
            /// The viewer controlling the page, if any.
            pub controller: Option<u32>,
            /// The channel is private now (`setPrivacy`): no frame is taken in or sent.
            pub private: bool,
            /// Events published with `publishEvent` (before `text_delta` merging).
            pub events_published: i64,
            /// Events sent (after merging).
            pub events_sent: i64,
            /// Events held in the resume ring.
            pub ring_events: u32,
            /// Inputs waiting to be relayed.
            pub pending_inputs: u32,
            /// Metadata of the newest frame.
            pub last_frame: Option<FrameMetadata>,
            /// Total frames sent to all viewers.
            pub frames_out: i64,
            $( $(#[doc = $doc])* pub $name: i64, )*
            /// The native CDP session, when this channel's source is one.
            pub cdp: Option<JsCdpStats>,
            /// The channel's video encoder, once a viewer asked for video.
            pub video: Option<JsVideoStats>,
            /// Viewers by what they receive.
            pub viewer_modes: JsViewerModes,
            /// Its viewers.
            pub viewers: Vec<JsViewerStats>,
        }

        impl JsChannelStats {
            /// One channel's stats, with its CDP session's when it has one.
            pub(super) fn new(c: ChannelStats, cdp: Option<JsCdpStats>) -> Self {
                JsChannelStats {
                    frames_out: c.viewers.iter().map(|v| v.frames_sent as i64).sum(),
                    key: c.id.key,
                    agent_id: c.id.agent_id,
                    thread_id: c.id.thread_id,
                    source_state: match c.source_state {
                        SourceState::Idle => ChannelSourceState::Idle,
                        SourceState::Running => ChannelSourceState::Running,
                        SourceState::Lingering => ChannelSourceState::Lingering,
                    },
                    generation: c.generation,
                    status: c.status,
                    url: c.url,
                    last_seq: c.last_seq as i64,
                    controller: c.controller,
                    private: c.private,
                    events_published: c.events_published as i64,
                    events_sent: c.events_sent as i64,
                    ring_events: c.ring_events as u32,
                    pending_inputs: c.pending_inputs as u32,
                    last_frame: c.last_frame_meta.map(FrameMetadata::from),
                    $( $name: c.counters.$name as i64, )*
                    cdp,
                    video: c.video.map(JsVideoStats::from),
                    viewer_modes: JsViewerModes::of(&c.viewers),
                    viewers: c.viewers.into_iter().map(JsViewerStats::from).collect(),
                }
            }
        }
    };
}
for_channel_counters!(js_channel_stats);

/// Stats of a channel's native CDP session (one DevTools connection).
#[napi(object, js_name = "CdpStats")]
pub struct JsCdpStats {
    /// Whether the DevTools connection is up.
    pub connected: bool,
    /// Whether the page reports itself visible.
    pub visible: bool,
    /// Target id of the page shown.
    pub target_id: Option<String>,
    /// URL of the page shown.
    pub url: Option<String>,
    /// Page attachments (1 + re-targets and relaunches).
    pub attaches: i64,
    /// Screencast frames received and acknowledged.
    pub frames_acked: i64,
    /// Frames taken by screenshot because the page sent none.
    pub screenshots: i64,
    /// Viewer inputs dispatched to the page.
    pub inputs_dispatched: i64,
}

impl From<&CdpSessionStats> for JsCdpStats {
    fn from(stats: &CdpSessionStats) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let (target_id, url) = stats.page();
        JsCdpStats {
            connected: stats.connected.load(Relaxed),
            visible: stats.visible.load(Relaxed),
            target_id,
            url,
            attaches: stats.attaches.load(Relaxed) as i64,
            frames_acked: stats.frames_acked.load(Relaxed) as i64,
            screenshots: stats.screenshots.load(Relaxed) as i64,
            inputs_dispatched: stats.inputs_dispatched.load(Relaxed) as i64,
        }
    }
}

macro_rules! js_registry_stats {
    ($( $(#[doc = $doc:tt])* $name:ident, )*) => {
        /// Stats of the whole registry.
        #[napi(object, js_name = "RegistryStats")]
        pub struct JsRegistryStats {
            /// Live channels.
            pub channels: Vec<JsChannelStats>,
            /// Viewers connected now.
            pub viewers: u32,
            $( $(#[doc = $doc])* pub $name: i64, )*
            /// Whether `close()` was called.
            pub closed: bool,
            /// Live native CDP sessions (one DevTools connection each).
            pub cdp_connections: u32,
            /// WebRTC, when configured.
            pub webrtc: Option<JsWebRtcStats>,
            /// The relay, when configured.
            pub relay: Option<JsRelayStats>,
        }

        impl JsRegistryStats {
            /// The registry's stats from its parts.
            pub(super) fn new(
                channels: Vec<JsChannelStats>,
                viewers: usize,
                totals: &RegistryTotals,
                closed: bool,
                cdp_connections: usize,
                webrtc: Option<JsWebRtcStats>,
                relay: Option<JsRelayStats>,
            ) -> Self {
                let totals = totals.snapshot();
                JsRegistryStats {
                    channels,
                    viewers: viewers as u32,
                    $( $name: totals.$name as i64, )*
                    closed,
                    cdp_connections: cdp_connections as u32,
                    webrtc,
                    relay,
                }
            }
        }
    };
}
for_registry_totals!(js_registry_stats);

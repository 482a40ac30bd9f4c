//! The arguments JS passes in: the registry's options (built from the core's option table),
//! how a viewer joins, how the CDP and replay sources run, and a pushed frame's metadata; each
//! checked and converted into the core's types, with a clear `InvalidArg` error otherwise.
//! Must not hold defaults or ranges of registry options: `registry::config` owns them.

use std::ops::RangeInclusive;
use std::time::Duration;

use napi::bindgen_prelude::Either;
use napi::Result;
use napi_derive::napi;

use super::invalid;
use crate::frame::FrameMeta;
use crate::protocol::{Mode, EXTENDED_PROTOCOL};
use crate::registry::config::{for_registry_options, OptionKind, REGISTRY_OPTIONS};
use crate::registry::{JoinOptions, RegistryConfig};
use crate::source::cdp::{CdpOptions, ImageFormat};

macro_rules! native_options_from_table {
    (
        numbers { $( $(#[doc = $doc:tt])* $field:ident $name:literal => $path:ident : $kind:ident = $default:literal, $min:literal..=$max:literal; )* }
        event_numbers { $( $(#[doc = $edoc:tt])* $efield:ident $ename:literal => $epath:ident : $ekind:ident = $edefault:literal, $emin:literal..=$emax:literal; )* }
        flags { $( $(#[doc = $fdoc:tt])* $ffield:ident $fname:literal => $fpath:ident = $fdefault:literal; )* }
    ) => {
        /// Options of a `NativeRegistry`; every field is optional (`registryOptions()` lists
        /// each with its default and range).
        #[napi(object)]
        #[derive(Default)]
        pub struct NativeRegistryOptions {
            $( $(#[doc = $doc])* #[napi(js_name = $name)] pub $field: Option<f64>, )*
            $( $(#[doc = $edoc])* #[napi(js_name = $ename)] pub $efield: Option<f64>, )*
            $( $(#[doc = $fdoc])* #[napi(js_name = $fname)] pub $ffield: Option<bool>, )*
            /// WebRTC delivery of the video (off unless given; needs `video`).
            pub webrtc: Option<NativeWebRtcOptions>,
            /// Scale-out over NATS (off unless given).
            pub relay: Option<NativeRelayOptions>,
            /// The host takes viewers' `reply` messages (its `reply` events); without it viewers
            /// are answered `reply_unavailable`.
            #[napi(js_name = "viewerReplies")]
            pub viewer_replies: Option<bool>,
        }

        impl NativeRegistryOptions {
            /// The registry's config: the table's defaults, overridden by what is set.
            pub(super) fn into_config(self) -> Result<RegistryConfig> {
                let mut config = RegistryConfig::default();
                $( if let Some(value) = self.$field {
                    config.set_number($name, value).map_err(invalid)?;
                } )*
                $( if let Some(value) = self.$efield {
                    config.set_number($ename, value).map_err(invalid)?;
                } )*
                $( if let Some(value) = self.$ffield {
                    config.set_flag($fname, value).map_err(invalid)?;
                } )*
                if let Some(webrtc) = self.webrtc {
                    config.webrtc = Some(webrtc.into_options().into_config().map_err(invalid)?);
                }
                if let Some(relay) = self.relay {
                    config.relay = Some(relay.nats.into_options().into_config().map_err(invalid)?);
                }
                config.viewer_replies = self.viewer_replies.unwrap_or(false);
                Ok(config)
            }
        }
    };
}

for_registry_options!(native_options_from_table);

/// The relay's bus (`relay: { nats }`); `relay::config` owns the defaults and checks.
#[napi(object)]
pub struct NativeRelayOptions {
    /// The NATS connection.
    pub nats: NativeNatsOptions,
}

/// TLS to the NATS servers.
#[napi(object)]
pub struct NativeNatsTls {
    /// Refuse servers without TLS.
    pub required: Option<bool>,
    /// PEM file of the CA certificates to trust.
    pub ca_file: Option<String>,
    /// PEM file of a client certificate (with `keyFile`: mutual TLS).
    pub cert_file: Option<String>,
    /// PEM file of that certificate's key.
    pub key_file: Option<String>,
}

/// How to reach NATS. At most one of `token`, `user`+`password`, `nkey`, `credsFile`.
#[napi(object)]
pub struct NativeNatsOptions {
    /// `nats://host:port` URLs (1 to 16).
    pub servers: Vec<String>,
    /// Connection name the NATS server shows.
    pub name: Option<String>,
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// An NKey seed.
    pub nkey: Option<String>,
    /// A `.creds` file (JWT and NKey seed).
    pub creds_file: Option<String>,
    pub tls: Option<NativeNatsTls>,
    /// First tokens of every subject (default `browser-stream`).
    pub subject_prefix: Option<String>,
    /// How long an owner may take to answer (ms).
    pub owner_timeout_ms: Option<f64>,
    /// How often a subscriber renews its lease (ms).
    pub lease_interval_ms: Option<f64>,
}

impl NativeNatsOptions {
    fn into_options(self) -> crate::relay::config::RelayOptions {
        let tls = self.tls;
        crate::relay::config::RelayOptions {
            servers: self.servers,
            name: self.name,
            token: self.token,
            user: self.user,
            password: self.password,
            nkey: self.nkey,
            creds_file: self.creds_file,
            tls_required: tls.as_ref().and_then(|t| t.required),
            tls_ca_file: tls.as_ref().and_then(|t| t.ca_file.clone()),
            tls_cert_file: tls.as_ref().and_then(|t| t.cert_file.clone()),
            tls_key_file: tls.and_then(|t| t.key_file),
            subject_prefix: self.subject_prefix,
            owner_timeout_ms: self.owner_timeout_ms,
            lease_interval_ms: self.lease_interval_ms,
        }
    }
}

/// A STUN or TURN server handed to viewers (as `RTCIceServer`).
#[napi(object)]
pub struct NativeIceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    pub username: Option<String>,
    /// TURN credential. Every admitted viewer receives it: prefer short-lived credentials.
    pub credential: Option<String>,
}

/// WebRTC settings; `webrtc::config` owns the defaults and ranges.
#[napi(object)]
pub struct NativeWebRtcOptions {
    /// The address the UDP socket binds and offers viewers (default `127.0.0.1`); the address
    /// of the interface viewers reach, never `0.0.0.0`.
    pub host: Option<String>,
    /// The UDP port (default 0: one the system picks; open it in the firewall when fixed).
    pub port: Option<f64>,
    /// The public address packets to `host` arrive through (a 1:1 NAT), offered too.
    pub public_address: Option<String>,
    /// STUN/TURN servers for viewers behind NAT.
    pub ice_servers: Option<Vec<NativeIceServer>>,
    /// Peers served at once (default 200).
    pub max_peers: Option<f64>,
    /// Milliseconds from an offer to a connected peer (default 10000).
    pub connect_timeout_ms: Option<f64>,
    /// Estimate bandwidth from TWCC feedback and pace to it (default false).
    pub bandwidth_estimation: Option<bool>,
}

impl NativeWebRtcOptions {
    fn into_options(self) -> crate::webrtc::config::WebRtcOptions {
        crate::webrtc::config::WebRtcOptions {
            host: self.host,
            port: self.port,
            public_address: self.public_address,
            ice_servers: self.ice_servers.map(|servers| {
                servers
                    .into_iter()
                    .map(|s| crate::webrtc::config::IceServer {
                        urls: s.urls,
                        username: s.username,
                        credential: s.credential,
                    })
                    .collect()
            }),
            max_peers: self.max_peers,
            connect_timeout_ms: self.connect_timeout_ms,
            bandwidth_estimation: self.bandwidth_estimation,
        }
    }
}

/// The kind of a registry option.
#[napi(string_enum = "lowercase")]
pub enum RegistryOptionKind {
    /// Milliseconds (a whole number).
    Ms,
    /// A count or a size in bytes (a whole number).
    Count,
    /// A boolean.
    Flag,
}

/// One option of `NativeRegistry` (and so of `ViewerRegistry` and `setupBrowserStream`).
#[napi(object)]
pub struct RegistryOption {
    /// Its name in the options object.
    pub name: String,
    /// Its kind.
    pub kind: RegistryOptionKind,
    /// Its default.
    pub default: Either<u32, bool>,
    /// Least value accepted (numbers).
    pub min: u32,
    /// Greatest value accepted (numbers).
    pub max: u32,
}

/// Every option of `NativeRegistry` with its kind, default and range, from the one table that
/// the registry itself is configured by.
#[napi]
pub fn registry_options() -> Vec<RegistryOption> {
    REGISTRY_OPTIONS
        .iter()
        .map(|spec| RegistryOption {
            name: spec.name.to_string(),
            kind: match spec.kind {
                OptionKind::Millis => RegistryOptionKind::Ms,
                OptionKind::Count => RegistryOptionKind::Count,
                OptionKind::Flag => RegistryOptionKind::Flag,
            },
            default: match spec.kind {
                OptionKind::Flag => Either::B(spec.default != 0),
                _ => Either::A(spec.default),
            },
            min: spec.min,
            max: spec.max,
        })
        .collect()
}

/// Metadata of a pushed frame: the toolset frame's `viewport` plus its `timestamp`.
#[napi(object)]
#[derive(Default, Clone, Copy)]
pub struct FrameMetadata {
    /// Device width (CSS pixels).
    pub width: Option<f64>,
    /// Device height.
    pub height: Option<f64>,
    /// Top offset of the visible area.
    pub offset_top: Option<f64>,
    /// Horizontal scroll offset.
    pub scroll_offset_x: Option<f64>,
    /// Vertical scroll offset.
    pub scroll_offset_y: Option<f64>,
    /// Page scale factor.
    pub page_scale_factor: Option<f64>,
    /// Capture time, ms since the epoch.
    pub timestamp: Option<f64>,
}

impl From<FrameMetadata> for FrameMeta {
    fn from(m: FrameMetadata) -> FrameMeta {
        let finite = |v: Option<f64>, d: f64| v.filter(|x| x.is_finite()).unwrap_or(d);
        FrameMeta {
            device_width: finite(m.width, 0.0),
            device_height: finite(m.height, 0.0),
            page_scale_factor: finite(m.page_scale_factor, 1.0),
            offset_top: finite(m.offset_top, 0.0),
            scroll_offset_x: finite(m.scroll_offset_x, 0.0),
            scroll_offset_y: finite(m.scroll_offset_y, 0.0),
            timestamp_ms: finite(m.timestamp, 0.0),
            refined: false,
        }
    }
}

impl From<FrameMeta> for FrameMetadata {
    fn from(m: FrameMeta) -> FrameMetadata {
        FrameMetadata {
            width: Some(m.device_width),
            height: Some(m.device_height),
            offset_top: Some(m.offset_top),
            scroll_offset_x: Some(m.scroll_offset_x),
            scroll_offset_y: Some(m.scroll_offset_y),
            page_scale_factor: Some(m.page_scale_factor),
            timestamp: Some(m.timestamp_ms),
        }
    }
}

/// How a viewer joins (`adoptSocket`, `attachBridged`).
#[napi(object)]
#[derive(Debug, Clone, Default)]
pub struct ViewerOptions {
    /// The subprotocol chosen at the handshake: `browser-stream.v1` for the extended mode;
    /// absent for compat.
    pub protocol: Option<String>,
    /// Whether this viewer may control the page (`authorizeControl`; default true).
    pub can_control: Option<bool>,
}

impl ViewerOptions {
    pub(super) fn into_join(self, send_connected: bool) -> Result<JoinOptions> {
        let mode = match self.protocol.as_deref() {
            None => Mode::Compat,
            Some(EXTENDED_PROTOCOL) => Mode::Extended,
            Some(other) => {
                return Err(invalid(format!(
                    "unsupported protocol {other:?} (supported: {EXTENDED_PROTOCOL})"
                )))
            }
        };
        Ok(JoinOptions {
            mode,
            can_control: self.can_control.unwrap_or(true),
            send_connected,
        })
    }
}

/// How `startCdpSource` captures the page.
#[napi(object)]
#[derive(Debug, Clone, Default)]
pub struct CdpSourceOptions {
    /// Target id of the page to show; by default the most recently opened page.
    pub target_id: Option<String>,
    /// `jpeg` (default) or `png`.
    pub format: Option<String>,
    /// JPEG quality 0–100 (default 80).
    pub quality: Option<u32>,
    /// Largest frame width in pixels (Chrome scales down to fit).
    pub max_width: Option<u32>,
    /// Largest frame height in pixels.
    pub max_height: Option<u32>,
    /// Send every n-th frame (default 1).
    pub every_nth_frame: Option<u32>,
    /// Switch to a page the agent opens in a new tab (default true).
    pub follow_new_tabs: Option<bool>,
    /// Milliseconds connecting or one DevTools call may take before the browser counts as
    /// gone (default 10000); the session checks this often (at most every 5 s) that the
    /// browser still answers.
    pub timeout_ms: Option<u32>,
}

impl CdpSourceOptions {
    /// The session options for `endpoint`.
    pub(super) fn into_options(self, endpoint: String) -> Result<CdpOptions> {
        if !(endpoint.starts_with("ws://") || endpoint.starts_with("wss://")) {
            return Err(invalid(
                "the CDP endpoint must be a ws:// or wss:// DevTools URL",
            ));
        }
        Ok(CdpOptions {
            endpoint,
            ..self.into_capture()?
        })
    }

    /// How to capture, checked against the ranges `source::cdp` owns; defaults from there.
    fn into_capture(self) -> Result<CdpOptions> {
        let defaults = CdpOptions::default();
        let in_range = |name: &str, value: Option<u32>, range: RangeInclusive<u32>| match value {
            Some(v) if !range.contains(&v) => Err(invalid(format!(
                "{name} must be {} to {}",
                range.start(),
                range.end()
            ))),
            _ => Ok(value),
        };
        let format = match self.format.as_deref() {
            None => defaults.format,
            Some(name) => ImageFormat::named(name)
                .ok_or_else(|| invalid(format!("format {name:?} is not jpeg or png")))?,
        };
        let quality = in_range("quality", self.quality, CdpOptions::QUALITY)?;
        let max_width = in_range("maxWidth", self.max_width, CdpOptions::FRAME_SIZE)?;
        let max_height = in_range("maxHeight", self.max_height, CdpOptions::FRAME_SIZE)?;
        let timeout_ms = in_range("timeoutMs", self.timeout_ms, CdpOptions::TIMEOUT_MS)?;
        let every_nth_frame = in_range(
            "everyNthFrame",
            self.every_nth_frame,
            CdpOptions::EVERY_NTH_FRAME,
        )?;
        Ok(CdpOptions {
            endpoint: defaults.endpoint,
            target_id: self.target_id,
            format,
            quality: quality.map_or(defaults.quality, |q| q as u8),
            max_width,
            max_height,
            every_nth_frame: every_nth_frame.unwrap_or(defaults.every_nth_frame),
            follow_new_tabs: self.follow_new_tabs.unwrap_or(defaults.follow_new_tabs),
            timeout: timeout_ms.map_or(defaults.timeout, |ms| Duration::from_millis(ms.into())),
        })
    }
}

/// Checks `startCdpSource` options without starting anything, and returns them with every
/// default filled in (`checkCdpSourceOptions({})` gives the defaults). Throws what
/// `startCdpSource` would throw.
#[napi]
pub fn check_cdp_source_options(options: CdpSourceOptions) -> Result<CdpSourceOptions> {
    let checked = options.into_capture()?;
    Ok(CdpSourceOptions {
        target_id: checked.target_id,
        format: Some(checked.format.name().to_string()),
        quality: Some(checked.quality.into()),
        max_width: checked.max_width,
        max_height: checked.max_height,
        every_nth_frame: Some(checked.every_nth_frame),
        follow_new_tabs: Some(checked.follow_new_tabs),
        timeout_ms: Some(u32::try_from(checked.timeout.as_millis()).unwrap_or(u32::MAX)),
    })
}

/// How `startReplaySource` replays its images.
#[napi(object)]
#[derive(Debug, Clone, Default)]
pub struct ReplaySourceOptions {
    /// Frames per second: above 0, at most 240.
    pub fps: f64,
    /// Write into each frame a JPEG comment `bsn:seq=<n>;t=<µs since the epoch>;` with its
    /// number and scheduled capture time, so a receiver can measure latency (JPEG only).
    pub stamp_frames: Option<bool>,
    /// Device width reported with each frame (drives `{viewport}`); 0 or absent when unknown.
    pub width: Option<f64>,
    /// Device height reported with each frame.
    pub height: Option<f64>,
}

//! The JavaScript face of the core (napi): the `NativeRegistry` class that the JS glue wraps,
//! the plain objects that cross the boundary, and `JsHost`, which turns the core's host calls
//! into calls of one JS callback through a weak threadsafe function.
//!
//! Owns: argument conversion and validation, file-descriptor adoption (dup) and errors as JS
//! `Error`s. Must not hold protocol or lifecycle logic: everything it does is delegate to
//! `registry` and `viewer`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use napi::bindgen_prelude::{Buffer, Either, Promise};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Error, Result, Status};
use napi_derive::napi;

use crate::frame::FrameMeta;
use crate::host::{BridgedOutbound, ControlChange, Host, HostFuture, LogLevel, SourceRequest};
use crate::protocol::{parse_client_message, ClientMessage, Mode, EXTENDED_PROTOCOL};
use crate::registry::EventLimits;
use crate::registry::{
    ChannelId, ChannelStats, JoinOptions, PushOutcome, Registry, RegistryConfig, Transport,
    ViewerStats,
};
use crate::source::cdp::{CdpOptions, CdpSessionStats, CdpSessions, ImageFormat};
use crate::source::replay::{check_schedule, run_replay, ReplayImages, ReplaySchedule};
use crate::viewer::{serve_bridged, serve_native};
use crate::ws::handshake::check_websocket_key;

/// Options of a `NativeRegistry`; every field is optional.
#[napi(object)]
#[derive(Default)]
pub struct NativeRegistryOptions {
    /// Milliseconds a source keeps running after its last viewer left (default 3000).
    pub linger_ms: Option<u32>,
    /// Viewers per agent channel (default 100).
    pub max_viewers_per_agent: Option<u32>,
    /// Agent channels (default 1000).
    pub max_agents: Option<u32>,
    /// Viewers in all (default 10000).
    pub max_viewers_total: Option<u32>,
    /// Largest client message in bytes; larger closes with 1009 (default 65536).
    pub max_message_bytes: Option<u32>,
    /// Milliseconds between server pings (default 15000).
    pub heartbeat_interval_ms: Option<u32>,
    /// Milliseconds of silence after which a viewer is closed with 1001 (default 45000).
    pub heartbeat_timeout_ms: Option<u32>,
    /// Reliable messages queued per viewer before it is closed with 4001 (default 256).
    pub max_queued_messages: Option<u32>,
    /// Inputs waiting per channel before new ones are dropped (default 256).
    pub max_pending_inputs: Option<u32>,
    /// Client messages per second one viewer may send (default 200; one second of burst).
    pub max_inputs_per_second: Option<u32>,
    /// Input from a viewer allowed to control takes control when nobody holds it (default
    /// false: extended viewers send `control-request` first).
    pub implicit_control: Option<bool>,
    /// Milliseconds `text_delta` events are held to be merged (default 50; 0 sends each).
    pub event_batch_ms: Option<u32>,
    /// Events the resume ring holds per channel (default 1000).
    pub resume_max_events: Option<u32>,
    /// Bytes the resume ring holds per channel (default 4 MiB).
    pub resume_max_bytes: Option<u32>,
    /// Milliseconds an event stays in the resume ring (default 60000).
    pub resume_max_age_ms: Option<u32>,
    /// Largest event accepted by `publishEvent`, in bytes of JSON (default 256 KiB).
    pub max_event_bytes: Option<u32>,
}

impl NativeRegistryOptions {
    fn into_config(self) -> Result<RegistryConfig> {
        let defaults = RegistryConfig::default();
        let ms = |v: Option<u32>, d: Duration| v.map_or(d, |ms| Duration::from_millis(ms.into()));
        let count = |v: Option<u32>, d: usize, name: &str| match v {
            Some(0) => Err(Error::new(
                Status::InvalidArg,
                format!("option {name} must be at least 1"),
            )),
            Some(n) => Ok(n as usize),
            None => Ok(d),
        };
        let config = RegistryConfig {
            linger: ms(self.linger_ms, defaults.linger),
            max_viewers_per_agent: count(
                self.max_viewers_per_agent,
                defaults.max_viewers_per_agent,
                "maxViewersPerAgent",
            )?,
            max_agents: count(self.max_agents, defaults.max_agents, "maxAgents")?,
            max_viewers_total: count(
                self.max_viewers_total,
                defaults.max_viewers_total,
                "maxViewersTotal",
            )?,
            max_message_bytes: count(
                self.max_message_bytes,
                defaults.max_message_bytes,
                "maxMessageBytes",
            )?,
            heartbeat_interval: ms(self.heartbeat_interval_ms, defaults.heartbeat_interval),
            heartbeat_timeout: ms(self.heartbeat_timeout_ms, defaults.heartbeat_timeout),
            max_queued_messages: count(
                self.max_queued_messages,
                defaults.max_queued_messages,
                "maxQueuedMessages",
            )?,
            max_pending_inputs: count(
                self.max_pending_inputs,
                defaults.max_pending_inputs,
                "maxPendingInputs",
            )?,
            max_inputs_per_second: count(
                self.max_inputs_per_second,
                defaults.max_inputs_per_second as usize,
                "maxInputsPerSecond",
            )? as u32,
            implicit_control: self.implicit_control.unwrap_or(defaults.implicit_control),
            events: EventLimits {
                batch_window: ms(self.event_batch_ms, defaults.events.batch_window),
                max_events: count(
                    self.resume_max_events,
                    defaults.events.max_events,
                    "resumeMaxEvents",
                )?,
                max_bytes: count(
                    self.resume_max_bytes,
                    defaults.events.max_bytes,
                    "resumeMaxBytes",
                )?,
                max_age: ms(self.resume_max_age_ms, defaults.events.max_age),
                max_event_bytes: count(
                    self.max_event_bytes,
                    defaults.events.max_event_bytes,
                    "maxEventBytes",
                )?,
            },
        };
        if config.heartbeat_interval.is_zero() || config.heartbeat_timeout.is_zero() {
            return Err(Error::new(
                Status::InvalidArg,
                "heartbeatIntervalMs and heartbeatTimeoutMs must be positive",
            ));
        }
        Ok(config)
    }
}

/// A request from the native registry to the JS glue. `kind` says which:
/// - `start`: start the frame source of `key` (first viewer); `generation` tags its pushes;
/// - `stop`: stop that source (last viewer gone and linger over, or `close()`);
/// - `input`: apply `input` (`inputKind` `mouse` | `keyboard` | `relaunch`, or `text` with
///   the text in `text`) to the page;
/// - `send`: write `text` (a TEXT message) or `data` (a BINARY message) to the JS-bridged
///   viewer `viewerId`;
/// - `close`: close the JS-bridged viewer `viewerId` with `code` and `reason`;
/// - `terminate`: drop the JS-bridged viewer `viewerId`'s socket without a close frame;
/// - `control`: viewer `controller` (absent: nobody) now controls the page of `key`;
/// - `log`: a diagnostic `text` for the deployer's logger at `level` (`warn` | `error`).
///
/// The callback returns a promise; `input` and `send` are awaited (one input at a time per
/// channel; a bridged viewer gets its next frame once the last one was written).
#[napi(object)]
pub struct HostEvent {
    /// `start` | `stop` | `input` | `send` | `close` | `terminate` | `control` | `log`.
    pub kind: String,
    /// Channel key (`agentId` or `agentId:threadId`).
    pub key: Option<String>,
    /// Agent id.
    pub agent_id: Option<String>,
    /// Thread id, when the channel is thread-scoped.
    pub thread_id: Option<String>,
    /// Source generation.
    pub generation: Option<u32>,
    /// Bridged viewer id.
    pub viewer_id: Option<u32>,
    /// `mouse` | `keyboard` | `text` | `relaunch`.
    pub input_kind: Option<String>,
    /// The validated input event, in the toolset's `injectMouseEvent` / `injectKeyboardEvent`
    /// shape.
    pub input: Option<serde_json::Value>,
    /// Text to send, or the text of a `text` input.
    pub text: Option<String>,
    /// Binary message to send.
    pub data: Option<Buffer>,
    /// The viewer holding control (`control`); absent when nobody does.
    pub controller: Option<u32>,
    /// Close code.
    pub code: Option<u32>,
    /// Close reason.
    pub reason: Option<String>,
    /// Log level (`log`): `warn` | `error`.
    pub level: Option<String>,
}

impl HostEvent {
    fn source(kind: &str, request: SourceRequest) -> HostEvent {
        HostEvent {
            kind: kind.to_string(),
            key: Some(request.key),
            agent_id: Some(request.agent_id),
            thread_id: request.thread_id,
            generation: Some(request.generation),
            viewer_id: None,
            input_kind: None,
            input: None,
            text: None,
            data: None,
            controller: None,
            code: None,
            reason: None,
            level: None,
        }
    }
}

/// A viewer's input in the shape a toolset takes (`injectMouseEvent` / `injectKeyboardEvent`).
#[napi(object)]
pub struct ToolsetInput {
    /// `mouse` | `keyboard` | `text` | `relaunch`.
    pub kind: String,
    /// The event for `injectMouseEvent` / `injectKeyboardEvent` (keyboard events carry
    /// `windowsVirtualKeyCode` where the key has one).
    pub event: Option<serde_json::Value>,
    /// The text of a `text` input.
    pub text: Option<String>,
}

impl From<ClientMessage> for ToolsetInput {
    fn from(input: ClientMessage) -> Self {
        let (kind, event, text) = match input {
            ClientMessage::Mouse(mouse) => ("mouse", serde_json::to_value(mouse).ok(), None),
            ClientMessage::Keyboard(key) => ("keyboard", serde_json::to_value(key).ok(), None),
            ClientMessage::InsertText(insert) => ("text", None, Some(insert)),
            ClientMessage::Relaunch => ("relaunch", None, None),
        };
        ToolsetInput {
            kind: kind.to_string(),
            event,
            text,
        }
    }
}

/// Parses and validates one compat client message (`mouse`, `keyboard`, `relaunch`) by the
/// stream route's own rules, returning it in the toolset's shape, or null when it is not a
/// valid input message. Backs the drop-in `handleInputMessage`.
#[napi]
pub fn parse_input_message(text: String) -> Option<ToolsetInput> {
    parse_client_message(&text).ok().map(ToolsetInput::from)
}

/// The JS callback receiving `HostEvent`s: weak, so it never keeps Node alive.
type HostCallback = ThreadsafeFunction<HostEvent, Promise<()>, HostEvent, Status, false, true>;

/// The core's host: native CDP sessions first (they stop and take input in Rust), the JS glue
/// for everything else.
struct JsHost {
    callback: Arc<HostCallback>,
    cdp: Arc<CdpSessions>,
}

impl JsHost {
    fn call_and_wait(&self, event: HostEvent) -> HostFuture {
        let callback = self.callback.clone();
        Box::pin(async move {
            let promise = callback
                .call_async_catch(event)
                .await
                .map_err(|e| e.to_string())?;
            promise.await.map_err(|e| e.to_string())
        })
    }
}

impl Host for JsHost {
    fn start_source(&self, request: SourceRequest) {
        self.callback.call(
            HostEvent::source("start", request),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }

    fn stop_source(&self, request: SourceRequest) {
        self.cdp.stop(&request);
        self.callback.call(
            HostEvent::source("stop", request),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }

    fn relay_input(&self, request: SourceRequest, input: ClientMessage) -> HostFuture {
        let input = match self.cdp.relay(&request, input) {
            Ok(relayed) => return relayed,
            Err(input) => input,
        };
        let input = ToolsetInput::from(input);
        let mut event = HostEvent::source("input", request);
        event.input_kind = Some(input.kind);
        event.input = input.event;
        event.text = input.text;
        self.call_and_wait(event)
    }

    fn control_changed(&self, change: ControlChange) {
        let mut event = HostEvent::source(
            "control",
            SourceRequest {
                key: change.key,
                agent_id: change.agent_id,
                thread_id: change.thread_id,
                generation: 0,
            },
        );
        event.generation = None;
        event.controller = change.controller;
        self.callback
            .call(event, ThreadsafeFunctionCallMode::NonBlocking);
    }

    fn log(&self, level: LogLevel, message: String) {
        let mut event = HostEvent::source(
            "log",
            SourceRequest {
                key: String::new(),
                agent_id: String::new(),
                thread_id: None,
                generation: 0,
            },
        );
        event.key = None;
        event.agent_id = None;
        event.generation = None;
        event.text = Some(message);
        event.level = Some(level.name().to_string());
        self.callback
            .call(event, ThreadsafeFunctionCallMode::NonBlocking);
    }

    fn capture_frame(&self, request: SourceRequest) {
        // Only the native CDP source can capture on demand; other sources answer with their
        // next frame.
        self.cdp.capture(&request);
    }

    fn bridged_send(&self, viewer_id: u32, message: BridgedOutbound) -> HostFuture {
        let mut event = HostEvent {
            kind: String::new(),
            key: None,
            agent_id: None,
            thread_id: None,
            generation: None,
            viewer_id: Some(viewer_id),
            input_kind: None,
            input: None,
            text: None,
            data: None,
            controller: None,
            code: None,
            reason: None,
            level: None,
        };
        match message {
            BridgedOutbound::Text(text) => {
                event.kind = "send".to_string();
                // Frames and messages are ASCII/UTF-8 by construction (validated base64, JSON).
                event.text = Some(String::from_utf8_lossy(&text).into_owned());
            }
            BridgedOutbound::Binary(data) => {
                event.kind = "send".to_string();
                event.data = Some(Buffer::from(data.to_vec()));
            }
            BridgedOutbound::Terminate => event.kind = "terminate".to_string(),
            BridgedOutbound::Close { code, reason } => {
                event.kind = "close".to_string();
                event.code = Some(code.into());
                event.reason = Some(reason);
            }
        }
        self.call_and_wait(event)
    }
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

/// Stats of one viewer.
#[napi(object, js_name = "ViewerStats")]
pub struct JsViewerStats {
    /// Viewer id.
    pub id: u32,
    /// `native` (socket owned by Rust) or `bridged` (socket kept in JS).
    pub transport: String,
    /// `compat` or `extended` (the `browser-stream.v1` subprotocol).
    pub mode: String,
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
                Transport::Native => "native".into(),
                Transport::Bridged => "bridged".into(),
            },
            mode: v.mode.name().into(),
            can_control: v.can_control,
            frames_sent: v.frames_sent as i64,
            frames_skipped: v.frames_skipped as i64,
            bytes_sent: v.bytes_sent as i64,
            messages_sent: v.messages_sent as i64,
            queued_messages: v.queued_messages as u32,
            connected_seconds: v.connected_secs,
        }
    }
}

/// Stats of one agent channel.
#[napi(object, js_name = "ChannelStats")]
pub struct JsChannelStats {
    /// Channel key.
    pub key: String,
    /// Agent id.
    pub agent_id: String,
    /// Thread id.
    pub thread_id: Option<String>,
    /// `idle`, `running` or `lingering`.
    pub source_state: String,
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
    /// Events published with `publishEvent` (before `text_delta` merging).
    pub events_published: i64,
    /// Events sent (after merging).
    pub events_sent: i64,
    /// Events held in the resume ring.
    pub ring_events: u32,
    /// Inputs refused: not the controller, or a view-only viewer.
    pub inputs_refused: i64,
    /// Client messages over a viewer's rate limit, or refused by a full input queue.
    pub inputs_rate_limited: i64,
    /// Mouse moves coalesced with a later move or dropped to make room.
    pub moves_coalesced: i64,
    /// Inputs waiting to be relayed.
    pub pending_inputs: u32,
    /// Metadata of the newest frame.
    pub last_frame: Option<FrameMetadata>,
    /// Frames accepted from the source.
    pub frames_in: i64,
    /// Frames refused (not base64 images).
    pub frames_rejected: i64,
    /// Pushes from stale source sessions, ignored.
    pub frames_stale: i64,
    /// Bytes accepted from the source.
    pub bytes_in: i64,
    /// Malformed client messages (ignored in compat mode).
    pub malformed_messages: i64,
    /// Inputs relayed to the page.
    pub inputs_relayed: i64,
    /// Inputs dropped because the input queue was full.
    pub inputs_dropped: i64,
    /// Inputs the toolset failed to apply.
    pub inputs_failed: i64,
    /// Source starts.
    pub starts: i64,
    /// Source stops.
    pub stops: i64,
    /// Total frames sent to all viewers.
    pub frames_out: i64,
    /// The native CDP session, when this channel's source is one.
    pub cdp: Option<JsCdpStats>,
    /// Its viewers.
    pub viewers: Vec<JsViewerStats>,
}

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
    fn into_options(self, endpoint: String) -> Result<CdpOptions> {
        if !(endpoint.starts_with("ws://") || endpoint.starts_with("wss://")) {
            return Err(invalid(
                "the CDP endpoint must be a ws:// or wss:// DevTools URL",
            ));
        }
        let format = match self.format.as_deref() {
            None | Some("jpeg") => ImageFormat::Jpeg,
            Some("png") => ImageFormat::Png,
            Some(other) => return Err(invalid(format!("format {other:?} is not jpeg or png"))),
        };
        let quality = self.quality.unwrap_or(80);
        if quality > 100 {
            return Err(invalid("quality must be 0 to 100"));
        }
        for (name, value) in [("maxWidth", self.max_width), ("maxHeight", self.max_height)] {
            if value.is_some_and(|v| !(16..=16384).contains(&v)) {
                return Err(invalid(format!("{name} must be 16 to 16384")));
            }
        }
        let timeout_ms = self.timeout_ms.unwrap_or(10_000);
        if !(100..=600_000).contains(&timeout_ms) {
            return Err(invalid("timeoutMs must be 100 to 600000"));
        }
        let every_nth_frame = self.every_nth_frame.unwrap_or(1);
        if !(1..=60).contains(&every_nth_frame) {
            return Err(invalid("everyNthFrame must be 1 to 60"));
        }
        Ok(CdpOptions {
            endpoint,
            target_id: self.target_id,
            format,
            quality: quality as u8,
            max_width: self.max_width,
            max_height: self.max_height,
            every_nth_frame,
            follow_new_tabs: self.follow_new_tabs.unwrap_or(true),
            timeout: Duration::from_millis(timeout_ms.into()),
        })
    }
}

impl From<ChannelStats> for JsChannelStats {
    fn from(c: ChannelStats) -> Self {
        let frames_out = c.viewers.iter().map(|v| v.frames_sent as i64).sum();
        JsChannelStats {
            key: c.id.key,
            agent_id: c.id.agent_id,
            thread_id: c.id.thread_id,
            source_state: c.source_state.into(),
            generation: c.generation,
            status: c.status,
            url: c.url,
            last_seq: c.last_seq as i64,
            controller: c.controller,
            events_published: c.events_published as i64,
            events_sent: c.events_sent as i64,
            ring_events: c.ring_events as u32,
            inputs_refused: c.inputs_refused as i64,
            inputs_rate_limited: c.inputs_rate_limited as i64,
            moves_coalesced: c.moves_coalesced as i64,
            pending_inputs: c.pending_inputs as u32,
            last_frame: c.last_frame_meta.map(FrameMetadata::from),
            frames_in: c.frames_in as i64,
            frames_rejected: c.frames_rejected as i64,
            frames_stale: c.frames_stale as i64,
            bytes_in: c.bytes_in as i64,
            malformed_messages: c.malformed_messages as i64,
            inputs_relayed: c.inputs_relayed as i64,
            inputs_dropped: c.inputs_dropped as i64,
            inputs_failed: c.inputs_failed as i64,
            starts: c.starts as i64,
            stops: c.stops as i64,
            frames_out,
            cdp: None,
            viewers: c.viewers.into_iter().map(JsViewerStats::from).collect(),
        }
    }
}

/// Stats of the whole registry.
#[napi(object, js_name = "RegistryStats")]
pub struct JsRegistryStats {
    /// Live channels.
    pub channels: Vec<JsChannelStats>,
    /// Viewers connected now.
    pub viewers: u32,
    /// Source starts since creation.
    pub starts: i64,
    /// Source stops since creation.
    pub stops: i64,
    /// Viewers admitted since creation.
    pub viewers_admitted: i64,
    /// Viewers gone since creation.
    pub viewers_closed: i64,
    /// Admissions refused by a limit.
    pub admissions_refused: i64,
    /// Whether `close()` was called.
    pub closed: bool,
    /// Live native CDP sessions (one DevTools connection each).
    pub cdp_connections: u32,
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
    fn into_join(self, send_connected: bool) -> Result<JoinOptions> {
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

/// The native registry: channels, viewers and their sockets, on a tokio runtime. The JS
/// `ViewerRegistry` wraps it; use that unless you are writing glue.
#[napi]
pub struct NativeRegistry {
    registry: Arc<Registry>,
    cdp: Arc<CdpSessions>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(Status::InvalidArg, message.into())
}

/// The agent (and thread) id of a viewer or call, checked (`ChannelId::checked`); the stream
/// route answers 400 with the message.
fn check_agent_id(agent_id: &str, thread_id: Option<&str>) -> Result<ChannelId> {
    ChannelId::checked(agent_id, thread_id).map_err(invalid)
}

/// The registry's key of an agent's channel (scoped to `threadId` when given): the key that
/// host events carry and that `pushFrame`, `setStatus`… take. Unambiguous for any ids; for
/// ids without `:` and `%` it is the TypeScript module's `agentId:threadId`. Throws for ids
/// that break the id rules (1 to 256 bytes, no control characters).
#[napi]
pub fn channel_key(agent_id: String, thread_id: Option<String>) -> Result<String> {
    Ok(check_agent_id(&agent_id, thread_id.as_deref())?.key)
}

#[cfg(unix)]
fn dup_tcp_socket(fd: i32) -> Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    if fd < 0 {
        return Err(invalid(format!("invalid file descriptor {fd}")));
    }
    // SAFETY: fcntl with F_DUPFD_CLOEXEC only reads `fd`; a bad fd yields -1 (EBADF).
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(Error::from_reason(format!(
            "cannot duplicate socket fd {fd}: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `dup` is a new descriptor that nothing else owns; the TcpStream closes it.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(dup) };
    let mut sock_type: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `sock_type`.
    let rc = unsafe {
        libc::getsockopt(
            dup,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut sock_type as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || sock_type != libc::SOCK_STREAM || stream.peer_addr().is_err() {
        return Err(invalid(format!("fd {fd} is not a connected TCP socket")));
    }
    Ok(stream)
}

#[cfg(not(unix))]
fn dup_tcp_socket(_fd: i32) -> Result<std::net::TcpStream> {
    Err(Error::from_reason(
        "socket adoption by file descriptor is not supported on this platform",
    ))
}

fn status_arg(status: &str) -> Result<()> {
    if status.is_empty() || status.len() > 64 {
        return Err(invalid("status must be 1 to 64 characters"));
    }
    Ok(())
}

#[napi]
impl NativeRegistry {
    /// Creates a registry. `host` receives every `HostEvent` and must return a promise.
    #[napi(constructor)]
    pub fn new(
        host: ThreadsafeFunction<HostEvent, Promise<()>, HostEvent, Status, false, true>,
        options: Option<NativeRegistryOptions>,
    ) -> Result<Self> {
        let config = options.unwrap_or_default().into_config()?;
        let runtime =
            napi::bindgen_prelude::within_runtime_if_available(tokio::runtime::Handle::current);
        let cdp = Arc::new(CdpSessions::default());
        let host = Arc::new(JsHost {
            callback: Arc::new(host),
            cdp: cdp.clone(),
        });
        Ok(NativeRegistry {
            registry: Registry::new(config, host, runtime),
            cdp,
        })
    }

    /// Why a viewer of this agent (and thread) would be refused now, or null if it would be
    /// admitted. Called before the upgrade so that a refusal is an HTTP 503; such a refusal
    /// counts in `stats().admissionsRefused` unless `countRefusal` is false (a second look
    /// at a refusal already counted). Throws for ids that break the id rules.
    #[napi]
    pub fn check_admission(
        &self,
        agent_id: String,
        thread_id: Option<String>,
        count_refusal: Option<bool>,
    ) -> Result<Option<String>> {
        let id = check_agent_id(&agent_id, thread_id.as_deref())?;
        Ok(self
            .registry
            .check_admission(&id, count_refusal.unwrap_or(true))
            .err()
            .map(|e| e.to_string()))
    }

    /// Takes over an upgraded TCP socket by file descriptor: the fd is duplicated here, so the
    /// caller must `socket.destroy()` in the same tick. Writes the `101` from Rust (echoing the
    /// extended subprotocol when `options.protocol` chose it) and serves the viewer natively.
    /// `head` is what Node read past the request. Returns the viewer id.
    #[napi]
    pub fn adopt_socket(
        &self,
        fd: i32,
        websocket_key: String,
        head: Option<Buffer>,
        agent_id: String,
        thread_id: Option<String>,
        options: Option<ViewerOptions>,
    ) -> Result<u32> {
        let id = check_agent_id(&agent_id, thread_id.as_deref())?;
        check_websocket_key(&websocket_key).map_err(|e| invalid(e.to_string()))?;
        let join = options.unwrap_or_default().into_join(true)?;
        let stream = dup_tcp_socket(fd)?;
        let slot = self
            .registry
            .admit_with(&id, Transport::Native, join)
            .map_err(|e| Error::from_reason(e.to_string()))?;
        let viewer_id = slot.id;
        let head = head.map_or_else(Bytes::new, |h| Bytes::copy_from_slice(&h));
        self.registry.runtime().spawn(serve_native(
            self.registry.clone(),
            slot,
            stream,
            websocket_key,
            head,
        ));
        Ok(viewer_id)
    }

    /// Registers a viewer whose socket stays in JS; its writes arrive as `send`/`close` host
    /// events. `sendConnected` queues `{status:'connected'}` first (compat). Returns the
    /// viewer id.
    #[napi]
    pub fn attach_bridged(
        &self,
        agent_id: String,
        thread_id: Option<String>,
        send_connected: bool,
        options: Option<ViewerOptions>,
    ) -> Result<u32> {
        let id = check_agent_id(&agent_id, thread_id.as_deref())?;
        let join = options.unwrap_or_default().into_join(send_connected)?;
        let slot = self
            .registry
            .admit_with(&id, Transport::Bridged, join)
            .map_err(|e| Error::from_reason(e.to_string()))?;
        let viewer_id = slot.id;
        self.registry
            .runtime()
            .spawn(serve_bridged(self.registry.clone(), slot));
        Ok(viewer_id)
    }

    /// A TEXT message received by a JS-bridged viewer. False if the viewer is unknown.
    #[napi]
    pub fn bridged_message(&self, viewer_id: u32, text: String) -> bool {
        match self.registry.viewer_link(viewer_id) {
            Some((channel, link)) => {
                self.registry.on_client_text(&channel, &link, &text);
                true
            }
            None => false,
        }
    }

    /// A binary message received by a JS-bridged viewer (no mode accepts one: counted, and
    /// answered `bad_message` in extended mode).
    #[napi]
    pub fn bridged_binary(&self, viewer_id: u32) -> bool {
        match self.registry.viewer_link(viewer_id) {
            Some((channel, link)) => {
                self.registry.on_client_binary(&channel, &link);
                true
            }
            None => false,
        }
    }

    /// Publishes an agent event (the text of a JSON object with a string `type`) to the
    /// extended viewers of `key`: numbered, kept for resume, `text_delta`s merged over
    /// `eventBatchMs`. False when nobody watches `key` (no channel).
    #[napi]
    pub fn publish_event(&self, key: String, json: String) -> Result<bool> {
        self.registry
            .publish_event(&key, json)
            .map_err(|e| invalid(e.to_string()))
    }

    /// Closes a viewer with a close frame of `code` (and `reason`); without `code` the viewer
    /// is only detached (its socket already closed, or the caller keeps it). False if unknown.
    #[napi]
    pub fn close_viewer(
        &self,
        viewer_id: u32,
        code: Option<u32>,
        reason: Option<String>,
    ) -> Result<bool> {
        let close = match code {
            None => None,
            Some(code @ (1000 | 1001 | 1008 | 1011 | 1013 | 3000..=4999)) => Some(code as u16),
            Some(code) => return Err(invalid(format!("close code {code} cannot be sent"))),
        };
        let reason = reason.unwrap_or_default();
        Ok(self
            .registry
            .close_viewer(viewer_id, close.map(|code| (code, reason.as_str()))))
    }

    /// Publishes a frame of `key`'s source: base64 image text (as CDP sends it) or the image
    /// bytes. `generation` (from the `start` event) makes pushes of an older session stale;
    /// omit it to push into whatever session is live. Returns `published`, `no_channel`,
    /// `stale` or `rejected`.
    #[napi]
    pub fn push_frame(
        &self,
        key: String,
        data: Either<String, Buffer>,
        metadata: Option<FrameMetadata>,
        generation: Option<u32>,
    ) -> String {
        let text = match data {
            Either::A(text) => Bytes::from(text),
            Either::B(bytes) => {
                Bytes::from(base64::engine::general_purpose::STANDARD.encode(&bytes[..]))
            }
        };
        let meta = FrameMeta::from(metadata.unwrap_or_default());
        match self.registry.push_frame(&key, generation, text, meta) {
            PushOutcome::Published(_) => "published",
            PushOutcome::NoChannel => "no_channel",
            PushOutcome::Stale => "stale",
            PushOutcome::Rejected(_) => "rejected",
        }
        .to_string()
    }

    /// Replays `images` (JPEG, PNG or WebP bytes) in a loop as the frames of source session
    /// `generation` of `key`, from the Rust runtime: a browser-less source for demos and the
    /// benchmark. Sets the status `streaming`; the replay stops by itself when the session ends.
    /// Returns false when `generation` is not the live session of `key`.
    #[napi]
    pub fn start_replay_source(
        &self,
        key: String,
        generation: u32,
        images: Vec<Buffer>,
        options: ReplaySourceOptions,
    ) -> Result<bool> {
        let schedule = ReplaySchedule {
            fps: options.fps,
            stamp: options.stamp_frames.unwrap_or(false),
            width: options.width.unwrap_or(0.0),
            height: options.height.unwrap_or(0.0),
        };
        check_schedule(&schedule).map_err(|e| invalid(e.to_string()))?;
        let images = ReplayImages::new(images.iter().map(|b| &b[..]), schedule.stamp)
            .map_err(|e| invalid(e.to_string()))?;
        if !self
            .registry
            .set_status(&key, Some(generation), "streaming")
        {
            return Ok(false);
        }
        let registry = self.registry.clone();
        self.registry
            .runtime()
            .spawn(run_replay(registry, key, generation, images, schedule));
        Ok(true)
    }

    /// Makes a native CDP session the source of session `generation` of `key`: it connects to
    /// the browser at `endpoint` (a `ws://…/devtools/browser/…` URL), shows the agent's page
    /// and publishes its screencast from Rust; input is relayed to the page from Rust too.
    /// Returns false when `generation` is not the live session of `key`.
    #[napi]
    pub fn start_cdp_source(
        &self,
        key: String,
        generation: u32,
        endpoint: String,
        options: Option<CdpSourceOptions>,
    ) -> Result<bool> {
        let options = options.unwrap_or_default().into_options(endpoint)?;
        let Some(channel) = self.registry.channel(&key) else {
            return Ok(false);
        };
        if !self.registry.is_live(&key, generation) {
            return Ok(false);
        }
        let request = SourceRequest {
            key,
            agent_id: channel.id.agent_id.clone(),
            thread_id: channel.id.thread_id.clone(),
            generation,
        };
        self.cdp
            .start(self.registry.clone(), request.clone(), options);
        // A stop that ran between the check above and the start found no session to stop.
        if !self.registry.is_live(&request.key, generation) {
            self.cdp.stop(&request);
            return Ok(false);
        }
        Ok(true)
    }

    /// Tells the registry that session `generation` of `key` ended by itself (its browser is
    /// gone): the channel goes idle, keeps its viewers, and the next viewer or a `relaunch`
    /// starts a new session. False when `generation` is not the live session.
    #[napi]
    pub fn source_ended(&self, key: String, generation: u32) -> bool {
        self.cdp.stop_generation(&key, generation);
        self.registry.source_ended(&key, generation)
    }

    /// Sets and broadcasts `{status}` for `key`. False when stale or no channel.
    #[napi]
    pub fn set_status(&self, key: String, status: String, generation: Option<u32>) -> Result<bool> {
        status_arg(&status)?;
        Ok(self.registry.set_status(&key, generation, &status))
    }

    /// Sets and broadcasts `{url}` for `key` when it changed.
    #[napi]
    pub fn set_url(&self, key: String, url: String, generation: Option<u32>) -> Result<bool> {
        if url.len() > 8192 {
            return Err(invalid("url longer than 8192 bytes"));
        }
        Ok(self.registry.set_url(&key, generation, &url))
    }

    /// Broadcasts `{error, message}` to `key`'s viewers.
    #[napi]
    pub fn broadcast_error(
        &self,
        key: String,
        code: String,
        message: String,
        generation: Option<u32>,
    ) -> Result<bool> {
        status_arg(&code)?;
        Ok(self
            .registry
            .broadcast_error(&key, generation, &code, &message))
    }

    /// Broadcasts a JSON object text as it is; a `status` field also becomes the sticky
    /// status that late joiners get.
    #[napi]
    pub fn broadcast_json(&self, key: String, json: String) -> Result<bool> {
        match serde_json::from_str::<serde_json::Value>(&json) {
            Ok(serde_json::Value::Object(_)) => Ok(self.registry.broadcast_json(&key, &json)),
            _ => Err(invalid("broadcastJson takes the text of a JSON object")),
        }
    }

    /// Forgets url, viewport and newest frame of `key` (browser session over).
    #[napi]
    pub fn clear_page_state(&self, key: String) {
        self.registry.clear_page_state(&key);
    }

    /// Whether the registry holds a channel for `key` (it has viewers, or its source still
    /// runs or lingers). A channel the registry let go needs no bookkeeping in JS any more.
    #[napi]
    pub fn has_channel(&self, key: String) -> bool {
        self.registry.channel(&key).is_some()
    }

    /// Viewers of `key`.
    #[napi]
    pub fn viewer_count(&self, key: String) -> u32 {
        self.registry.viewer_count(&key) as u32
    }

    /// Whether `key`'s source is live and its status is `streaming`.
    #[napi]
    pub fn is_streaming(&self, key: String) -> bool {
        self.registry.is_streaming(&key)
    }

    /// Stats of every channel and viewer.
    #[napi]
    pub fn stats(&self) -> JsRegistryStats {
        use std::sync::atomic::Ordering::Relaxed;
        let totals = &self.registry.totals;
        JsRegistryStats {
            channels: self
                .registry
                .stats()
                .into_iter()
                .map(|channel| {
                    let cdp = self.cdp.stats(&channel.id.key);
                    let mut stats = JsChannelStats::from(channel);
                    stats.cdp = cdp.as_deref().map(JsCdpStats::from);
                    stats
                })
                .collect(),
            cdp_connections: self.cdp.len() as u32,
            viewers: self.registry.viewer_total() as u32,
            starts: totals.starts.load(Relaxed) as i64,
            stops: totals.stops.load(Relaxed) as i64,
            viewers_admitted: totals.viewers_admitted.load(Relaxed) as i64,
            viewers_closed: totals.viewers_closed.load(Relaxed) as i64,
            admissions_refused: totals.admissions_refused.load(Relaxed) as i64,
            closed: self.registry.is_closed(),
        }
    }

    /// Closes every viewer with 1001, stops every source and refuses new viewers.
    #[napi]
    pub fn close(&self) {
        self.registry.close();
        self.cdp.stop_all();
    }

    /// `close()`, then resolves once every viewer's close frame was written (a frame in
    /// progress is finished first, a socket that does not take it is cut) or `timeoutMs`
    /// passed. Resolves to the number of viewers still open then (0 normally). Await it before
    /// letting the process exit, or close frames may never leave.
    #[napi]
    pub async fn close_and_wait(&self, timeout_ms: u32) -> Result<u32> {
        self.close();
        let registry = self.registry.clone();
        let deadline = Duration::from_millis(timeout_ms.into());
        // Viewers, and sockets still draining after their close frame. Elapsing is not an
        // error: the count left says it.
        let _ = tokio::time::timeout(deadline, async {
            while registry.connections() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        Ok(registry.connections() as u32)
    }
}

//! The application wire messages of `GET /browser/:agentId/stream` (docs/PROTOCOL.md), in both
//! modes: the JSON the server sends, and the parsing and validation of what a client sends.
//!
//! Owns: message shapes and their validation rules. Must not touch sockets, WebSocket framing
//! or registry state; every function here is pure so peers' bytes can be fuzzed through it.

use serde::Serialize;
use serde_json::{Map, Value};

/// Longest `key`/`code` string accepted in a keyboard message.
const MAX_KEY_LEN: usize = 64;
/// Longest `text` accepted in a keyboard or text-insert message.
const MAX_TEXT_LEN: usize = 1024;

/// Lowest frame-rate cap a viewer may ask for (one frame every 10 s).
pub const MIN_FPS: f64 = 0.1;
/// Highest frame-rate cap a viewer may ask for.
pub const MAX_FPS: f64 = 240.0;

/// The subprotocol of the extended mode.
pub const EXTENDED_PROTOCOL: &str = "browser-stream.v1";

/// Which wire a viewer speaks, chosen at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Mastra's shipped wire: text frames (base64), no answers to client messages.
    Compat,
    /// `browser-stream.v1`: binary frames with a header, events, resume, control.
    Extended,
}

/// `{"status":"…"}`.
pub fn status_message(status: &str) -> String {
    serde_json::json!({ "status": status }).to_string()
}

/// `{"url":"…"}`.
pub fn url_message(url: &str) -> String {
    serde_json::json!({ "url": url }).to_string()
}

/// `{"viewport":{"width":W,"height":H}}`.
pub fn viewport_message(width: f64, height: f64) -> String {
    format!(
        r#"{{"viewport":{{"width":{},"height":{}}}}}"#,
        json_number(width),
        json_number(height)
    )
}

/// A JSON number, written as an integer when it is whole (as JavaScript would print it).
fn json_number(n: f64) -> Value {
    if n.is_finite() && n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// The statuses the core itself broadcasts (`{status}`); a JS source may set others.
pub struct Status;

impl Status {
    /// Sent first to a compat viewer on join (Mastra's wire).
    pub const CONNECTED: &'static str = "connected";
    /// A source session is starting its browser or screencast.
    pub const BROWSER_STARTING: &'static str = "browser_starting";
    /// Frames are flowing.
    pub const STREAMING: &'static str = "streaming";
    /// The browser of the session went away.
    pub const BROWSER_CLOSED: &'static str = "browser_closed";
}

/// The error codes a frame source reports to viewers (`{error, message}`).
pub struct ErrorCode;

impl ErrorCode {
    /// The screencast could not be started (no endpoint answered, the toolset failed…).
    pub const SCREENCAST_FAILED: &'static str = "screencast_failed";
    /// The browser went away or stopped answering mid-stream.
    pub const BROWSER_CRASHED: &'static str = "browser_crashed";
    /// Relay: the message bus cannot be reached, so the instance holding the browser cannot
    /// be asked (the stream comes back by itself with the bus).
    pub const RELAY_UNAVAILABLE: &'static str = "relay_unavailable";
    /// Relay: the instance streaming the browser stopped answering (it went away); another
    /// owner is looked for.
    pub const RELAY_OWNER_LOST: &'static str = "relay_owner_lost";
}

/// The text viewers get with a source error `code`. Fixed per code on purpose: what went
/// wrong in detail (an endpoint, the text of a deployer's exception) is for the log only.
pub fn viewer_error_text(code: &str) -> &'static str {
    match code {
        ErrorCode::SCREENCAST_FAILED => "the browser's screencast could not be started",
        ErrorCode::BROWSER_CRASHED => "the browser stopped responding",
        ErrorCode::RELAY_UNAVAILABLE => "the stream relay is unavailable; retrying",
        ErrorCode::RELAY_OWNER_LOST => "the server streaming this browser went away; retrying",
        _ => "the browser stream reported an error",
    }
}

/// `{"error":"…","message":"…"}`.
pub fn error_message(code: &str, message: &str) -> String {
    serde_json::json!({ "error": code, "message": message }).to_string()
}

/// A mouse event for the page, in the shape the toolset's `injectMouseEvent` takes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MouseInput {
    /// `mousePressed`, `mouseReleased`, `mouseMoved` or `mouseWheel`.
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// X in viewport pixels.
    pub x: f64,
    /// Y in viewport pixels.
    pub y: f64,
    /// `left`, `right`, `middle`, `back`, `forward` or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub button: Option<&'static str>,
    /// Click count (1 single, 2 double…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub click_count: Option<u32>,
    /// Horizontal wheel delta.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_x: Option<f64>,
    /// Vertical wheel delta.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_y: Option<f64>,
    /// CDP modifier bits: 1 Alt, 2 Ctrl, 4 Meta, 8 Shift.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modifiers: Option<u32>,
}

/// A keyboard event for the page, in the shape the toolset's `injectKeyboardEvent` takes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyboardInput {
    /// `keyDown`, `keyUp` or `char`.
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// Key value, e.g. `a`, `Enter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Physical key code, e.g. `KeyA`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Text the key produces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// CDP modifier bits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modifiers: Option<u32>,
    /// The key's Windows virtual key code (`input::windows_virtual_key_code`), which a page
    /// needs to act on Enter, Backspace, arrows…; the toolset's `injectKeyboardEvent` gets it
    /// as Mastra's input handler gives it.
    #[serde(
        rename = "windowsVirtualKeyCode",
        skip_serializing_if = "Option::is_none"
    )]
    pub windows_virtual_key_code: Option<u32>,
}

/// A valid client message for the page (compat), and what the registry relays to the source.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Mouse input for the page.
    Mouse(MouseInput),
    /// Keyboard input for the page.
    Keyboard(KeyboardInput),
    /// Text inserted at the focus (`Input.insertText`); extended mode only.
    InsertText(String),
    /// Ask the server to restart the screencast.
    Relaunch,
}

impl ClientMessage {
    /// Whether this is a mouse move (moves may coalesce and drop; nothing else does).
    pub fn is_mouse_move(&self) -> bool {
        matches!(self, ClientMessage::Mouse(m) if m.event_type == "mouseMoved")
    }

    /// Whether `self` may replace `earlier` in the input queue: both moves with the same
    /// buttons and modifiers.
    pub fn coalesces_with(&self, earlier: &ClientMessage) -> bool {
        match (self, earlier) {
            (ClientMessage::Mouse(a), ClientMessage::Mouse(b)) => {
                a.event_type == "mouseMoved"
                    && b.event_type == "mouseMoved"
                    && a.button == b.button
                    && a.modifiers == b.modifiers
            }
            _ => false,
        }
    }
}

/// An input as a message [`parse_extended_message`] reads back to the same input, with viewport
/// coordinates (`mouse`, `keyboard`, `relaunch`, or an `input` of kind `text`): how a relayed
/// viewer's input travels to the instance that has the browser.
pub fn relayed_input_message(input: &ClientMessage) -> String {
    let typed = |kind: &str, event: serde_json::Result<Value>| {
        let mut object = match event {
            Ok(Value::Object(object)) => object,
            _ => Map::new(),
        };
        // The page-event shape names the event `type`; the client message names it
        // `eventType` and puts its own kind in `type`.
        if let Some(event_type) = object.remove("type") {
            object.insert("eventType".into(), event_type);
        }
        object.remove("windowsVirtualKeyCode");
        object.insert("type".into(), Value::from(kind));
        Value::Object(object).to_string()
    };
    match input {
        ClientMessage::Mouse(mouse) => typed("mouse", serde_json::to_value(mouse)),
        ClientMessage::Keyboard(key) => typed("keyboard", serde_json::to_value(key)),
        ClientMessage::InsertText(text) => {
            serde_json::json!({ "type": "input", "kind": "text", "text": text }).to_string()
        }
        ClientMessage::Relaunch => r#"{"type":"relaunch"}"#.to_string(),
    }
}

/// A valid extended-mode client message.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtendedMessage {
    /// Input for the page (or `relaunch`). `frame_pixels`: the mouse coordinates are pixels of
    /// a frame image and must be mapped to the page; `frame_seq` names that frame.
    Input {
        /// The input.
        input: ClientMessage,
        /// Whether x, y are frame pixels (extended `input`) rather than CSS pixels (compat).
        frame_pixels: bool,
        /// The frame the coordinates refer to.
        frame_seq: Option<u64>,
    },
    /// Replay the events after `last_seq` (all held events for `None`).
    Resume {
        /// Last sequence number the client has.
        last_seq: Option<u64>,
    },
    /// Send the newest frame now.
    SnapshotRequest,
    /// Per-viewer pacing. `max_fps`: `Some(None)` clears the cap; `ack`: ack pacing on/off.
    Config {
        /// New frame-rate cap, if given.
        max_fps: Option<Option<f64>>,
        /// Ack pacing on or off, if given.
        ack: Option<bool>,
        /// Video, if given: `Some(None)` turns it off (JPEG frames again), `Some(Some(codecs))`
        /// asks for it with the codec strings the viewer decodes, in its order of preference.
        video: Option<Option<Vec<String>>>,
    },
    /// Frame `seq` was received (ack pacing).
    Ack {
        /// The frame.
        seq: u64,
    },
    /// Take control of the page; `reclaim` is the token a controller got with its control,
    /// to take it back within the grace period after its connection dropped.
    ControlRequest {
        /// The reclaim token, if the viewer holds one.
        reclaim: Option<String>,
    },
    /// Give control up.
    ControlRelease,
    /// WebRTC: the viewer's SDP offer (it receives video over WebRTC instead of the socket).
    WebRtcOffer {
        /// The offer, as `RTCPeerConnection.createOffer()` made it.
        sdp: String,
    },
    /// WebRTC: one of the viewer's ICE candidates (`None`: end of candidates).
    WebRtcCandidate {
        /// The `candidate` attribute line.
        candidate: Option<String>,
    },
    /// WebRTC: end the viewer's peer connection (JPEG frames resume on the socket).
    WebRtcClose,
    /// Show another of the agent's pages (an id of the last `tabs` message); the controller's.
    TabSelect {
        /// The tab.
        id: u32,
    },
    /// A person's answer to an agent event (human in the loop): for the deployer's
    /// `onViewerReply`.
    Reply {
        /// The `seq` of the event answered.
        to: u64,
        /// The answer: any JSON value, as its text (at most [`MAX_REPLY_BYTES`]).
        reply: String,
    },
}

/// Why a client message is refused. Compat mode ignores it (Studio expects no answer) and
/// counts it in `stats()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// Not JSON.
    NotJson,
    /// JSON but not an object.
    NotAnObject,
    /// No string `type` field.
    MissingType,
    /// A `type` this protocol version does not know.
    UnknownType(String),
    /// A field is missing, of the wrong type or out of range.
    InvalidField(&'static str),
    /// A field is larger (as JSON text) than its bound in bytes.
    TooLarge(&'static str, usize),
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageError::NotJson => write!(f, "message is not JSON"),
            MessageError::NotAnObject => write!(f, "message is not a JSON object"),
            MessageError::MissingType => write!(f, "message has no string \"type\""),
            MessageError::UnknownType(t) => write!(f, "unknown message type {t:?}"),
            MessageError::InvalidField(field) => write!(f, "invalid or missing field {field:?}"),
            MessageError::TooLarge(field, bound) => {
                write!(f, "field {field:?} is larger than {bound} bytes")
            }
        }
    }
}

/// A JSON object with a string `type`.
fn typed_object(text: &str) -> Result<(Map<String, Value>, String), MessageError> {
    let value: Value = serde_json::from_str(text).map_err(|_| MessageError::NotJson)?;
    let Value::Object(obj) = value else {
        return Err(MessageError::NotAnObject);
    };
    let Some(kind) = obj.get("type").and_then(Value::as_str) else {
        return Err(MessageError::MissingType);
    };
    let kind = truncate(kind, 64);
    Ok((obj, kind))
}

/// Parses and validates one compat-mode client message.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, MessageError> {
    let (obj, kind) = typed_object(text)?;
    match kind.as_str() {
        "mouse" => parse_mouse(&obj).map(ClientMessage::Mouse),
        "keyboard" => parse_keyboard(&obj).map(ClientMessage::Keyboard),
        "relaunch" => Ok(ClientMessage::Relaunch),
        _ => Err(MessageError::UnknownType(kind)),
    }
}

/// Parses and validates one extended-mode client message (docs/PROTOCOL.md, "Client → server"
/// of the extended mode). The compat `mouse`, `keyboard` and `relaunch` messages are accepted
/// too, with viewport coordinates.
pub fn parse_extended_message(text: &str) -> Result<ExtendedMessage, MessageError> {
    let (obj, kind) = typed_object(text)?;
    let compat = |input| ExtendedMessage::Input {
        input,
        frame_pixels: false,
        frame_seq: None,
    };
    match kind.as_str() {
        "input" => parse_input(&obj),
        "mouse" => parse_mouse(&obj).map(|m| compat(ClientMessage::Mouse(m))),
        "keyboard" => parse_keyboard(&obj).map(|k| compat(ClientMessage::Keyboard(k))),
        "relaunch" => Ok(compat(ClientMessage::Relaunch)),
        "resume" => Ok(ExtendedMessage::Resume {
            last_seq: seq_field(&obj, "lastSeq")?,
        }),
        "snapshot-request" => Ok(ExtendedMessage::SnapshotRequest),
        "config" => {
            let max_fps = match obj.get("maxFps") {
                None => None,
                Some(Value::Null) => Some(None),
                Some(v) => Some(Some(
                    v.as_f64()
                        .filter(|f| (MIN_FPS..=MAX_FPS).contains(f))
                        .ok_or(MessageError::InvalidField("maxFps"))?,
                )),
            };
            let ack = match optional(&obj, "ack") {
                None => None,
                Some(v) => Some(v.as_bool().ok_or(MessageError::InvalidField("ack"))?),
            };
            let video = match obj.get("video") {
                None => None,
                Some(Value::Null | Value::Bool(false)) => Some(None),
                Some(Value::Object(video)) => Some(Some(parse_codec_offer(video)?)),
                Some(_) => return Err(MessageError::InvalidField("video")),
            };
            Ok(ExtendedMessage::Config {
                max_fps,
                ack,
                video,
            })
        }
        "ack" => seq_field(&obj, "seq")?
            .map(|seq| ExtendedMessage::Ack { seq })
            .ok_or(MessageError::InvalidField("seq")),
        "control-request" => match obj.get("reclaim") {
            None | Some(Value::Null) => Ok(ExtendedMessage::ControlRequest { reclaim: None }),
            Some(Value::String(token)) if !token.is_empty() && token.len() <= MAX_RECLAIM_BYTES => {
                Ok(ExtendedMessage::ControlRequest {
                    reclaim: Some(token.clone()),
                })
            }
            _ => Err(MessageError::InvalidField("reclaim")),
        },
        "control-release" => Ok(ExtendedMessage::ControlRelease),
        "webrtc-offer" => match obj.get("sdp") {
            Some(Value::String(sdp)) if !sdp.is_empty() && sdp.len() <= MAX_SDP_BYTES => {
                Ok(ExtendedMessage::WebRtcOffer { sdp: sdp.clone() })
            }
            _ => Err(MessageError::InvalidField("sdp")),
        },
        "webrtc-candidate" => match obj.get("candidate") {
            None | Some(Value::Null) => Ok(ExtendedMessage::WebRtcCandidate { candidate: None }),
            // An empty string is how browsers say "end of candidates" too.
            Some(Value::String(c)) if c.is_empty() => {
                Ok(ExtendedMessage::WebRtcCandidate { candidate: None })
            }
            Some(Value::String(c)) if c.len() <= MAX_CANDIDATE_BYTES => {
                Ok(ExtendedMessage::WebRtcCandidate {
                    candidate: Some(c.clone()),
                })
            }
            _ => Err(MessageError::InvalidField("candidate")),
        },
        "webrtc-close" => Ok(ExtendedMessage::WebRtcClose),
        "tab-select" => obj
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .map(|id| ExtendedMessage::TabSelect { id })
            .ok_or(MessageError::InvalidField("id")),
        "reply" => {
            let to = seq_field(&obj, "to")?
                .filter(|to| *to > 0)
                .ok_or(MessageError::InvalidField("to"))?;
            let reply = match obj.get("reply") {
                None => return Err(MessageError::InvalidField("reply")),
                Some(value) => value.to_string(),
            };
            if reply.len() > MAX_REPLY_BYTES {
                return Err(MessageError::TooLarge("reply", MAX_REPLY_BYTES));
            }
            Ok(ExtendedMessage::Reply { to, reply })
        }
        _ => Err(MessageError::UnknownType(kind)),
    }
}

/// Largest SDP offer accepted (a browser's offer for one video transceiver is a few KiB).
pub const MAX_SDP_BYTES: usize = 32 * 1024;
/// Longest ICE candidate line accepted.
const MAX_CANDIDATE_BYTES: usize = 512;
/// Largest `reply` of a `reply` message, as JSON text: an answer to a question, not a
/// document.
pub const MAX_REPLY_BYTES: usize = 16 * 1024;
/// Longest reclaim token accepted (the server's are 32 hex digits).
const MAX_RECLAIM_BYTES: usize = 64;

/// Longest codec string accepted in an offer (WebCodecs strings are about a dozen bytes).
const MAX_CODEC_STRING: usize = 64;

/// The `codecs` of a `video` request: 1 to `MAX_OFFERED_CODECS` non-empty strings.
fn parse_codec_offer(video: &Map<String, Value>) -> Result<Vec<String>, MessageError> {
    let invalid = MessageError::InvalidField("video.codecs");
    let Some(Value::Array(codecs)) = video.get("codecs") else {
        return Err(invalid);
    };
    if codecs.is_empty() || codecs.len() > crate::codec::MAX_OFFERED_CODECS {
        return Err(invalid);
    }
    codecs
        .iter()
        .map(|codec| match codec {
            Value::String(s) if !s.is_empty() && s.len() <= MAX_CODEC_STRING => Ok(s.clone()),
            _ => Err(MessageError::InvalidField("video.codecs")),
        })
        .collect()
}

/// Whether `text` is a `config` message asking for video: what a compat viewer gets a
/// `protocol_required` answer for instead of silence.
pub fn asks_for_video(text: &str) -> bool {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    obj.get("type").and_then(Value::as_str) == Some("config")
        && obj.get("video").is_some_and(Value::is_object)
}

/// A sequence number field: a non-negative integer, or absent/null.
fn seq_field(obj: &Map<String, Value>, field: &'static str) -> Result<Option<u64>, MessageError> {
    match optional(obj, field) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or(MessageError::InvalidField(field)),
    }
}

fn parse_input(obj: &Map<String, Value>) -> Result<ExtendedMessage, MessageError> {
    let kind = pick(obj.get("kind"), &["mouse", "key", "text"])
        .ok_or(MessageError::InvalidField("kind"))?;
    let input = match kind {
        "mouse" => ClientMessage::Mouse(parse_mouse(obj)?),
        "key" => ClientMessage::Keyboard(parse_keyboard(obj)?),
        _ => ClientMessage::InsertText(
            bounded_string(obj, "text", MAX_TEXT_LEN)?
                .filter(|t| !t.is_empty())
                .ok_or(MessageError::InvalidField("text"))?,
        ),
    };
    Ok(ExtendedMessage::Input {
        input,
        frame_pixels: true,
        frame_seq: seq_field(obj, "frameSeq")?,
    })
}

/// `{"type":"session-meta",…}`: the first message of an extended connection.
pub struct SessionMeta<'a> {
    /// The agent.
    pub agent_id: &'a str,
    /// The thread, if scoped.
    pub thread_id: Option<&'a str>,
    /// This viewer's id.
    pub viewer_id: u32,
    /// Whether this viewer may ever control.
    pub can_control: bool,
    /// Who holds control now.
    pub controller: Option<u32>,
    /// The channel's status.
    pub status: Option<&'a str>,
    /// The newest sequence number given out.
    pub seq: u64,
    /// Whether input takes control implicitly.
    pub implicit_control: bool,
    /// WebRTC offered to this viewer: the ICE servers it should use (`None`: no WebRTC).
    pub webrtc: Option<&'a serde_json::Value>,
}

/// The text of `{"type":"session-meta",…}`.
pub fn session_meta_message(meta: &SessionMeta<'_>) -> String {
    serde_json::json!({
        "type": "session-meta",
        "protocol": EXTENDED_PROTOCOL,
        "agentId": meta.agent_id,
        "threadId": meta.thread_id,
        "viewerId": meta.viewer_id,
        "canControl": meta.can_control,
        "controller": meta.controller,
        "status": meta.status,
        "seq": meta.seq,
        "implicitControl": meta.implicit_control,
        "webrtc": meta.webrtc,
    })
    .to_string()
}

/// `{"type":"control","controller":C|null,"you":bool}`.
pub fn control_message(controller: Option<u32>, you: bool) -> String {
    control_change_message(controller, you, None, None)
}

/// `{"type":"control","controller":C|null,"you":B}`, with `"reason":R` when the server (idle
/// timeout, grace expiry) or the deployer (`releaseControl`) ended a control, and
/// `"reclaim":T` to the holder only when a grace period lets it take control back.
pub fn control_change_message(
    controller: Option<u32>,
    you: bool,
    reason: Option<&str>,
    reclaim: Option<&str>,
) -> String {
    let mut message =
        serde_json::json!({ "type": "control", "controller": controller, "you": you });
    if let Some(reason) = reason {
        message["reason"] = reason.into();
    }
    if let Some(reclaim) = reclaim {
        message["reclaim"] = reclaim.into();
    }
    message.to_string()
}

/// `{"type":"event","seq":N,"event":E}` around an event's JSON text (already validated).
pub fn event_message(seq: u64, event_json: &str) -> String {
    format!(r#"{{"type":"event","seq":{seq},"event":{event_json}}}"#)
}

/// `{"type":"resumed","lastSeq":L,"replayed":K}`.
pub fn resumed_message(last_seq: Option<u64>, replayed: usize) -> String {
    serde_json::json!({ "type": "resumed", "lastSeq": last_seq, "replayed": replayed }).to_string()
}

/// `{"type":"reply-ok","to":N}`: the viewer's reply to event `N` reached the deployer's hook.
pub fn reply_ok_message(to: u64) -> String {
    serde_json::json!({ "type": "reply-ok", "to": to }).to_string()
}

/// `{"type":"snapshot","seq":N}`.
pub fn snapshot_message(seq: u64) -> String {
    serde_json::json!({ "type": "snapshot", "seq": seq }).to_string()
}

/// `{"error":"stale","message":…,"oldestSeq":O}`.
pub fn stale_message(message: &str, oldest_seq: Option<u64>) -> String {
    serde_json::json!({ "error": "stale", "message": message, "oldestSeq": oldest_seq }).to_string()
}

/// `{"error":"control_busy","message":…,"controller":C}`.
pub fn control_busy_message(controller: u32) -> String {
    serde_json::json!({
        "error": "control_busy",
        "message": format!("viewer {controller} holds control"),
        "controller": controller,
    })
    .to_string()
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A field that is absent or `null` reads as `None`.
fn optional<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    obj.get(field).filter(|v| !v.is_null())
}

fn pick(value: Option<&Value>, allowed: &[&'static str]) -> Option<&'static str> {
    let s = value?.as_str()?;
    allowed.iter().copied().find(|a| *a == s)
}

fn finite(obj: &Map<String, Value>, field: &'static str) -> Result<Option<f64>, MessageError> {
    match optional(obj, field) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or(MessageError::InvalidField(field)),
    }
}

fn small_uint(
    obj: &Map<String, Value>,
    field: &'static str,
    max: u64,
) -> Result<Option<u32>, MessageError> {
    match optional(obj, field) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= max)
            .map(|n| Some(n as u32))
            .ok_or(MessageError::InvalidField(field)),
    }
}

fn bounded_string(
    obj: &Map<String, Value>,
    field: &'static str,
    max: usize,
) -> Result<Option<String>, MessageError> {
    match optional(obj, field) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .filter(|s| s.len() <= max)
            .map(|s| Some(s.to_string()))
            .ok_or(MessageError::InvalidField(field)),
    }
}

fn parse_mouse(obj: &Map<String, Value>) -> Result<MouseInput, MessageError> {
    let event_type = pick(
        obj.get("eventType"),
        &["mousePressed", "mouseReleased", "mouseMoved", "mouseWheel"],
    )
    .ok_or(MessageError::InvalidField("eventType"))?;
    let coordinate = |field: &'static str| {
        finite(obj, field)?
            .filter(|n| *n >= 0.0)
            .ok_or(MessageError::InvalidField(field))
    };
    let x = coordinate("x")?;
    let y = coordinate("y")?;
    let button = match optional(obj, "button") {
        None => None,
        Some(v) => Some(
            pick(
                Some(v),
                &["none", "left", "middle", "right", "back", "forward"],
            )
            .ok_or(MessageError::InvalidField("button"))?,
        ),
    };
    Ok(MouseInput {
        event_type,
        x,
        y,
        button,
        click_count: small_uint(obj, "clickCount", 16)?,
        delta_x: finite(obj, "deltaX")?,
        delta_y: finite(obj, "deltaY")?,
        modifiers: small_uint(obj, "modifiers", 15)?,
    })
}

fn parse_keyboard(obj: &Map<String, Value>) -> Result<KeyboardInput, MessageError> {
    let event_type = pick(obj.get("eventType"), &["keyDown", "keyUp", "char"])
        .ok_or(MessageError::InvalidField("eventType"))?;
    let key = bounded_string(obj, "key", MAX_KEY_LEN)?;
    let code = bounded_string(obj, "code", MAX_KEY_LEN)?;
    let text = bounded_string(obj, "text", MAX_TEXT_LEN)?;
    if key.is_none() && code.is_none() && text.is_none() {
        // Nothing to type (Mastra's input handler refuses it too).
        return Err(MessageError::InvalidField("key"));
    }
    let windows_virtual_key_code = key
        .as_deref()
        .and_then(|key| crate::source::cdp::input::windows_virtual_key_code(key, code.as_deref()));
    Ok(KeyboardInput {
        event_type,
        key,
        code,
        text,
        modifiers: small_uint(obj, "modifiers", 15)?,
        windows_virtual_key_code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_input_reads_back_the_same() {
        let inputs = [
            r#"{"type":"mouse","eventType":"mousePressed","x":10.5,"y":3,"button":"left","clickCount":2,"modifiers":8}"#,
            r#"{"type":"mouse","eventType":"mouseWheel","x":1,"y":2,"deltaX":-4,"deltaY":120}"#,
            r#"{"type":"keyboard","eventType":"keyDown","key":"Enter","code":"Enter"}"#,
            r#"{"type":"keyboard","eventType":"char","text":"é"}"#,
            r#"{"type":"relaunch"}"#,
        ];
        for text in inputs {
            let input = parse_client_message(text).unwrap();
            let relayed = relayed_input_message(&input);
            let Ok(ExtendedMessage::Input { input: back, .. }) = parse_extended_message(&relayed)
            else {
                panic!("{relayed} does not read back");
            };
            assert_eq!(back, input, "{relayed}");
        }
        let text = ClientMessage::InsertText("hello".into());
        let Ok(ExtendedMessage::Input { input: back, .. }) =
            parse_extended_message(&relayed_input_message(&text))
        else {
            panic!("insertText does not read back");
        };
        assert_eq!(back, text);
    }

    #[test]
    fn server_messages_are_the_compat_json() {
        assert_eq!(status_message("connected"), r#"{"status":"connected"}"#);
        assert_eq!(url_message("https://a/b"), r#"{"url":"https://a/b"}"#);
        assert_eq!(
            viewport_message(1280.0, 720.0),
            r#"{"viewport":{"width":1280,"height":720}}"#
        );
        assert_eq!(
            viewport_message(412.5, 915.0),
            r#"{"viewport":{"width":412.5,"height":915}}"#
        );
        let err: Value =
            serde_json::from_str(&error_message("screencast_failed", "boom")).expect("json");
        assert_eq!(err["error"], "screencast_failed");
        assert_eq!(err["message"], "boom");
    }

    #[test]
    fn parses_studio_mouse_message() {
        let msg = parse_client_message(
            r#"{"type":"mouse","eventType":"mousePressed","x":10.5,"y":20,"button":"left","clickCount":1,"modifiers":8}"#,
        )
        .expect("valid");
        let ClientMessage::Mouse(mouse) = msg else {
            panic!("not mouse")
        };
        assert_eq!(mouse.event_type, "mousePressed");
        assert_eq!(mouse.button, Some("left"));
        let json = serde_json::to_value(&mouse).expect("serializable");
        assert_eq!(json["type"], "mousePressed");
        assert_eq!(json["clickCount"], 1);
        assert!(json.get("deltaX").is_none());
    }

    #[test]
    fn parses_keyboard_and_relaunch() {
        let msg = parse_client_message(
            r#"{"type":"keyboard","eventType":"char","text":"a","key":"a","code":"KeyA","modifiers":null}"#,
        )
        .expect("valid");
        assert!(
            matches!(msg, ClientMessage::Keyboard(ref k) if k.text.as_deref() == Some("a") && k.modifiers.is_none())
        );
        assert_eq!(
            parse_client_message(r#"{"type":"relaunch"}"#),
            Ok(ClientMessage::Relaunch)
        );
    }

    #[test]
    fn parses_extended_messages() {
        use ExtendedMessage::*;
        assert_eq!(
            parse_extended_message(r#"{"type":"resume","lastSeq":42}"#),
            Ok(Resume { last_seq: Some(42) })
        );
        assert_eq!(
            parse_extended_message(r#"{"type":"resume","lastSeq":null}"#),
            Ok(Resume { last_seq: None })
        );
        assert_eq!(
            parse_extended_message(r#"{"type":"config","maxFps":null,"ack":true}"#),
            Ok(Config {
                max_fps: Some(None),
                ack: Some(true),
                video: None
            })
        );
        assert_eq!(
            parse_extended_message(r#"{"type":"config","maxFps":5}"#),
            Ok(Config {
                max_fps: Some(Some(5.0)),
                ack: None,
                video: None
            })
        );
        assert_eq!(
            parse_extended_message(r#"{"type":"config","video":{"codecs":["avc1.42E01F","vp8"]}}"#),
            Ok(Config {
                max_fps: None,
                ack: None,
                video: Some(Some(vec!["avc1.42E01F".into(), "vp8".into()]))
            })
        );
        assert_eq!(
            parse_extended_message(r#"{"type":"config","video":null}"#),
            Ok(Config {
                max_fps: None,
                ack: None,
                video: Some(None)
            })
        );
        for bad in [
            r#"{"type":"config","video":true}"#,
            r#"{"type":"config","video":{}}"#,
            r#"{"type":"config","video":{"codecs":[]}}"#,
            r#"{"type":"config","video":{"codecs":[""]}}"#,
            r#"{"type":"config","video":{"codecs":[7]}}"#,
            r#"{"type":"config","video":{"codecs":"avc1.42E01F"}}"#,
        ] {
            assert_eq!(
                parse_extended_message(bad),
                Err(MessageError::InvalidField(if bad.contains("true") {
                    "video"
                } else {
                    "video.codecs"
                })),
                "{bad}"
            );
        }
        let many = format!(
            r#"{{"type":"config","video":{{"codecs":[{}]}}}}"#,
            vec![r#""avc1.42E01F""#; 17].join(",")
        );
        assert!(parse_extended_message(&many).is_err());
        assert!(asks_for_video(
            r#"{"type":"config","video":{"codecs":["avc1.42E01F"]}}"#
        ));
        assert!(!asks_for_video(r#"{"type":"config","maxFps":3}"#));
        assert!(!asks_for_video("nope"));
        assert_eq!(
            parse_extended_message(r#"{"type":"ack","seq":7}"#),
            Ok(Ack { seq: 7 })
        );
        assert_eq!(
            parse_extended_message(r#"{"type":"control-request"}"#),
            Ok(ControlRequest { reclaim: None })
        );
        assert_eq!(
            parse_extended_message(r#"{"type":"control-request","reclaim":"ab12"}"#),
            Ok(ControlRequest {
                reclaim: Some("ab12".into())
            })
        );
        assert_eq!(
            parse_extended_message(r#"{"type":"reply","to":42,"reply":{"approve":true}}"#),
            Ok(Reply {
                to: 42,
                reply: r#"{"approve":true}"#.into()
            })
        );
        let big = format!(
            r#"{{"type":"reply","to":1,"reply":"{}"}}"#,
            "x".repeat(MAX_REPLY_BYTES)
        );
        assert_eq!(
            parse_extended_message(&big),
            Err(MessageError::TooLarge("reply", MAX_REPLY_BYTES))
        );
        for bad in [
            r#"{"type":"reply","reply":1}"#,
            r#"{"type":"reply","to":0,"reply":1}"#,
        ] {
            assert_eq!(
                parse_extended_message(bad),
                Err(MessageError::InvalidField("to"))
            );
        }
        assert_eq!(
            parse_extended_message(r#"{"type":"reply","to":3}"#),
            Err(MessageError::InvalidField("reply"))
        );
        for bad in [r#""""#, "7", &format!("\"{}\"", "a".repeat(65))] {
            let text = format!(r#"{{"type":"control-request","reclaim":{bad}}}"#);
            assert_eq!(
                parse_extended_message(&text),
                Err(MessageError::InvalidField("reclaim"))
            );
        }
        let Ok(Input {
            input: ClientMessage::Mouse(mouse),
            frame_pixels: true,
            frame_seq: Some(9),
        }) = parse_extended_message(
            r#"{"type":"input","kind":"mouse","eventType":"mousePressed","x":3,"y":4,"button":"left","frameSeq":9}"#,
        )
        else {
            panic!("mouse input")
        };
        assert_eq!((mouse.x, mouse.y), (3.0, 4.0));
        assert_eq!(
            parse_extended_message(r#"{"type":"input","kind":"text","text":"héllo"}"#),
            Ok(Input {
                input: ClientMessage::InsertText("héllo".into()),
                frame_pixels: true,
                frame_seq: None
            })
        );
        assert!(matches!(
            parse_extended_message(r#"{"type":"mouse","eventType":"mouseMoved","x":1,"y":2}"#),
            Ok(Input {
                frame_pixels: false,
                ..
            })
        ));
        use MessageError::*;
        let bad: &[(&str, MessageError)] = &[
            (
                r#"{"type":"resume","lastSeq":"x"}"#,
                InvalidField("lastSeq"),
            ),
            (r#"{"type":"resume","lastSeq":-1}"#, InvalidField("lastSeq")),
            (r#"{"type":"config","maxFps":-1}"#, InvalidField("maxFps")),
            (r#"{"type":"config","maxFps":1000}"#, InvalidField("maxFps")),
            (
                r#"{"type":"config","maxFps":1e-300}"#,
                InvalidField("maxFps"),
            ),
            (
                r#"{"type":"config","maxFps":5e-324}"#,
                InvalidField("maxFps"),
            ),
            (r#"{"type":"config","maxFps":0.05}"#, InvalidField("maxFps")),
            (r#"{"type":"config","ack":"yes"}"#, InvalidField("ack")),
            (r#"{"type":"ack"}"#, InvalidField("seq")),
            (r#"{"type":"input"}"#, InvalidField("kind")),
            (
                r#"{"type":"input","kind":"text","text":""}"#,
                InvalidField("text"),
            ),
            (
                r#"{"type":"input","kind":"mouse","eventType":"mouseMoved","x":"1","y":1}"#,
                InvalidField("x"),
            ),
            (r#"{"type":"teleport"}"#, UnknownType("teleport".into())),
            ("[]", NotAnObject),
            ("{", NotJson),
        ];
        for (input, expected) in bad {
            assert_eq!(
                parse_extended_message(input).as_ref(),
                Err(expected),
                "{input}"
            );
        }
    }

    #[test]
    fn extended_server_messages() {
        let meta = session_meta_message(&SessionMeta {
            agent_id: "a",
            thread_id: None,
            viewer_id: 3,
            can_control: true,
            controller: None,
            status: Some("streaming"),
            seq: 10,
            implicit_control: false,
            webrtc: None,
        });
        let v: Value = serde_json::from_str(&meta).expect("json");
        assert_eq!(v["type"], "session-meta");
        assert_eq!(v["webrtc"], Value::Null);
        assert_eq!(v["protocol"], "browser-stream.v1");
        assert_eq!(v["threadId"], Value::Null);
        assert_eq!(v["viewerId"], 3);
        assert_eq!(
            event_message(5, r#"{"type":"tool_start"}"#),
            r#"{"type":"event","seq":5,"event":{"type":"tool_start"}}"#
        );
        assert_eq!(
            control_message(Some(2), true),
            r#"{"controller":2,"type":"control","you":true}"#
        );
    }

    #[test]
    fn refuses_malformed_messages() {
        use MessageError::*;
        let cases: &[(&str, MessageError)] = &[
            ("not json", NotJson),
            ("[1,2]", NotAnObject),
            (r#"{"x":1}"#, MissingType),
            (r#"{"type":"teleport"}"#, UnknownType("teleport".into())),
            (
                r#"{"type":"mouse","eventType":"mouseMoved","x":-1,"y":0}"#,
                InvalidField("x"),
            ),
            (
                r#"{"type":"mouse","eventType":"mouseMoved","x":1}"#,
                InvalidField("y"),
            ),
            (
                r#"{"type":"mouse","eventType":"drag","x":1,"y":1}"#,
                InvalidField("eventType"),
            ),
            (
                r#"{"type":"mouse","eventType":"mouseMoved","x":"1","y":1}"#,
                InvalidField("x"),
            ),
            (
                r#"{"type":"mouse","eventType":"mousePressed","x":1,"y":1,"button":"thumb"}"#,
                InvalidField("button"),
            ),
            (
                r#"{"type":"mouse","eventType":"mouseWheel","x":1,"y":1,"modifiers":99}"#,
                InvalidField("modifiers"),
            ),
            (
                r#"{"type":"keyboard","eventType":"press"}"#,
                InvalidField("eventType"),
            ),
            (
                r#"{"type":"keyboard","eventType":"char","text":5}"#,
                InvalidField("text"),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_client_message(input).as_ref(),
                Err(expected),
                "{input}"
            );
        }
        let huge_key = format!(
            r#"{{"type":"keyboard","eventType":"keyDown","key":"{}"}}"#,
            "k".repeat(100)
        );
        assert_eq!(parse_client_message(&huge_key), Err(InvalidField("key")));
    }
}

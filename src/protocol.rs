//! The application wire messages of `GET /browser/:agentId/stream` (docs/PROTOCOL.md): the JSON
//! the server sends, and the parsing and validation of what a client sends.
//!
//! Owns: message shapes and their validation rules. Must not touch sockets, WebSocket framing
//! or registry state; every function here is pure so peers' bytes can be fuzzed through it.

use serde::Serialize;
use serde_json::{Map, Value};

/// Longest `key`/`code` string accepted in a keyboard message.
const MAX_KEY_LEN: usize = 64;
/// Longest `text` accepted in a keyboard message.
const MAX_TEXT_LEN: usize = 1024;

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
}

/// A valid client message.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Mouse input for the page.
    Mouse(MouseInput),
    /// Keyboard input for the page.
    Keyboard(KeyboardInput),
    /// Ask the server to restart the screencast.
    Relaunch,
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
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageError::NotJson => write!(f, "message is not JSON"),
            MessageError::NotAnObject => write!(f, "message is not a JSON object"),
            MessageError::MissingType => write!(f, "message has no string \"type\""),
            MessageError::UnknownType(t) => write!(f, "unknown message type {t:?}"),
            MessageError::InvalidField(field) => write!(f, "invalid or missing field {field:?}"),
        }
    }
}

/// Parses and validates one compat-mode client message.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, MessageError> {
    let value: Value = serde_json::from_str(text).map_err(|_| MessageError::NotJson)?;
    let Value::Object(obj) = value else {
        return Err(MessageError::NotAnObject);
    };
    let Some(kind) = obj.get("type").and_then(Value::as_str) else {
        return Err(MessageError::MissingType);
    };
    match kind {
        "mouse" => parse_mouse(&obj).map(ClientMessage::Mouse),
        "keyboard" => parse_keyboard(&obj).map(ClientMessage::Keyboard),
        "relaunch" => Ok(ClientMessage::Relaunch),
        other => Err(MessageError::UnknownType(truncate(other, 64))),
    }
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
    Ok(KeyboardInput {
        event_type,
        key: bounded_string(obj, "key", MAX_KEY_LEN)?,
        code: bounded_string(obj, "code", MAX_KEY_LEN)?,
        text: bounded_string(obj, "text", MAX_TEXT_LEN)?,
        modifiers: small_uint(obj, "modifiers", 15)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! The server side of the WebSocket opening handshake (RFC 6455 §4.2): checking the client's
//! `Sec-WebSocket-Key` and writing the `101 Switching Protocols` answer.
//! Must not parse HTTP: Node (or the caller) already did.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EXTENDED_PROTOCOL;

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
}

//! The handshake fields a peer controls: `Sec-WebSocket-Key` (`viewer::check_websocket_key`,
//! then `viewer::handshake_response` for an accepted key) and the `agentId`/`threadId` of the
//! route (`registry::ChannelId::checked`).
//!
//! Input layout: UTF-8 (lossy) lines `key \n agentId \n threadId`; a missing third line means
//! no thread. The whole input is also checked as one agent id (so ids with newlines are tried).
//!
//! Invariants:
//! - never panics;
//! - a key is accepted exactly when it is 24 characters, 22 of the base64 alphabet then `==`;
//! - the response for an accepted key is a complete `101` head (ends with an empty line, no
//!   other empty line, every line CRLF-terminated) whose `Sec-WebSocket-Accept` is the RFC 6455
//!   value base64(SHA-1(key ++ GUID)), computed here independently, and which echoes the
//!   subprotocol exactly when one is chosen;
//! - an id pair is accepted exactly when the agent id and the thread id (if any) are each
//!   1..=256 bytes without a control character (ids are otherwise opaque);
//!   the accepted channel keeps both ids verbatim, and its key splits back into them: the
//!   agent part (before the first ':', `%` and `:` percent-encoded) and the thread as it is.
#![no_main]

use base64::Engine;
use browser_stream_native::protocol::EXTENDED_PROTOCOL;
use browser_stream_native::fuzzing::ChannelId;
use browser_stream_native::ws::handshake::{check_websocket_key, handshake_response};
use libfuzzer_sys::fuzz_target;
use sha1::{Digest, Sha1};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

fn key_is_valid(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        && &b[22..] == b"=="
}

fn check_key(key: &str) {
    let accepted = check_websocket_key(key).is_ok();
    assert_eq!(accepted, key_is_valid(key), "key {key:?}");
    if !accepted {
        return;
    }
    assert_eq!(key.chars().count(), 24);
    assert!(key.ends_with("=="));
    let expected_accept = {
        let mut sha = Sha1::new();
        sha.update(key.as_bytes());
        sha.update(GUID.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(sha.finalize())
    };
    for protocol in [None, Some(EXTENDED_PROTOCOL)] {
        let response = handshake_response(key, protocol);
        assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(response.ends_with("\r\n\r\n"));
        let head = &response[..response.len() - 2];
        assert!(!head.contains("\r\n\r\n"), "empty line inside the head");
        let lines: Vec<&str> = head.split_terminator("\r\n").collect();
        assert!(
            lines.iter().all(|l| !l.contains('\r') && !l.contains('\n')),
            "bare CR/LF in {response:?}"
        );
        let accept: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("Sec-WebSocket-Accept: "))
            .collect();
        assert_eq!(accept, [expected_accept.as_str()], "{response:?}");
        let echoed: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("Sec-WebSocket-Protocol: "))
            .collect();
        assert_eq!(
            echoed,
            protocol.into_iter().collect::<Vec<_>>(),
            "{response:?}"
        );
        assert!(lines.contains(&"Upgrade: websocket"));
        assert!(lines.contains(&"Connection: Upgrade"));
    }
}

fn id_is_valid(id: &str) -> bool {
    !id.is_empty() && id.len() <= ChannelId::MAX_ID_BYTES && !id.chars().any(char::is_control)
}

fn check_ids(agent: &str, thread: Option<&str>) {
    let expected = id_is_valid(agent) && thread.is_none_or(id_is_valid);
    match ChannelId::checked(agent, thread) {
        Ok(id) => {
            assert!(expected, "accepted {agent:?} / {thread:?}");
            assert!((1..=256).contains(&agent.len()));
            assert!(!agent.chars().any(char::is_control));
            assert_eq!(id.agent_id, agent);
            assert_eq!(id.thread_id.as_deref(), thread);
            assert_eq!(id.key, ChannelId::key_of(agent, thread));
            // The key splits back into the same ids at its first ':' (the agent part is
            // percent-encoded, so it holds no ':').
            let (agent_part, thread_part) = match id.key.split_once(':') {
                Some((a, t)) => (a, Some(t)),
                None => (id.key.as_str(), None),
            };
            assert_eq!(thread_part, thread);
            assert_eq!(decode_agent_part(agent_part), agent);
        }
        Err(message) => {
            assert!(!expected, "refused {agent:?} / {thread:?}: {message}");
            assert!(!message.is_empty());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let key = lines.next().unwrap_or("");
    let agent = lines.next().unwrap_or("");
    let thread = lines.next();

    check_key(key);
    check_key(&text);
    check_ids(agent, thread);
    check_ids(&text, None);
    check_ids(key, Some(agent));
});

/// Undoes the percent-encoding of `%` and `:` in a key's agent part.
fn decode_agent_part(part: &str) -> String {
    let mut out = String::new();
    let mut rest = part;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at..at + 3);
        match code {
            Some("%25") => out.push('%'),
            Some("%3A") => out.push(':'),
            _ => panic!("unencoded % in key part {part:?}"),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    out
}

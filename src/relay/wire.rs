//! What travels on the bus: the subjects of a channel (named by a hash of its key, so no agent
//! id, thread id or subject syntax from a viewer ever reaches a subject), the JSON of the
//! owner's questions and leases, and the reading of the owner's viewer stream (the extended
//! protocol of docs/PROTOCOL.md, as its relay viewer writes it) back into pushes.
//! Must not publish or subscribe: `owner` and `subscriber` do.

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::frame::{FrameMeta, BINARY_HEADER_LEN};
use crate::registry::ControlRefusal;

/// NATS header naming what an owner's stream message is.
pub const KIND_HEADER: &str = "Bsn-Kind";
/// `KIND_HEADER` of a TEXT message (JSON).
pub const KIND_TEXT: &str = "text";
/// `KIND_HEADER` of a BINARY message (a frame or a video chunk with its 56-byte header).
pub const KIND_BINARY: &str = "binary";
/// `KIND_HEADER` of the owner's [`ControlState`] (who holds control, named across instances).
pub const KIND_CONTROL: &str = "control";

/// The subjects of one channel under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSubjects {
    /// Request: who has this channel's browser? Answered by its owner only.
    pub owner: String,
    /// Request: a subscriber's lease renewal; answered by the owner while it holds the channel.
    pub lease: String,
    /// The owner's stream of the channel (its relay viewer's messages, and its
    /// [`ControlState`]s).
    pub stream: String,
    /// Request: the events of the owner's resume ring after a number ([`RingQuestion`]).
    pub ring: String,
    /// A subscriber's [`RemoteCommand`]s (control, input) for the owner; answered on the
    /// subscriber's inbox when there is something to say.
    pub control: String,
}

/// The hex SHA-256 of a channel key, cut to 128 bits: a subject token that names the channel
/// without saying which it is.
pub fn channel_token(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl ChannelSubjects {
    pub fn new(prefix: &str, key: &str) -> ChannelSubjects {
        let token = channel_token(key);
        ChannelSubjects {
            owner: format!("{prefix}.owner.{token}"),
            lease: format!("{prefix}.lease.{token}"),
            stream: format!("{prefix}.stream.{token}"),
            control: format!("{prefix}.control.{token}"),
            ring: format!("{prefix}.ring.{token}"),
        }
    }
}

/// Wildcard of every owner question under a prefix (each instance listens).
pub fn owner_wildcard(prefix: &str) -> String {
    format!("{prefix}.owner.*")
}

/// Wildcard of every lease renewal under a prefix (each instance listens).
pub fn lease_wildcard(prefix: &str) -> String {
    format!("{prefix}.lease.*")
}

/// Wildcard of every remote command under a prefix (each instance listens).
pub fn control_wildcard(prefix: &str) -> String {
    format!("{prefix}.control.*")
}

/// Wildcard of every ring question under a prefix (each instance listens).
pub fn ring_wildcard(prefix: &str) -> String {
    format!("{prefix}.ring.*")
}

/// "Who has this browser?": the channel's identity (in the payload, never the subject) and
/// the asking instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerQuestion {
    pub key: String,
    pub agent_id: String,
    pub thread_id: Option<String>,
    pub instance: String,
}

/// The owner's answer: it streams the channel on its stream subject from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerAnswer {
    pub owner: String,
    /// The stream carries the events numbered above this: the asker's ring holds nothing
    /// before it, so a resume from an earlier number asks the owner's ring. Absent in an
    /// answer of an older owner (a rolling upgrade): 0, resumes are answered from here only.
    #[serde(default)]
    pub events_from: u64,
}

/// A subscriber's lease renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub key: String,
    pub instance: String,
    /// The owner this subscriber follows: another owner of the same key stays silent.
    pub owner: String,
}

/// The owner's answer to a lease: `held` false when it no longer streams the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAnswer {
    pub held: bool,
}

/// A viewer named across instances: the instance it is connected to and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ViewerName {
    pub instance: String,
    pub viewer: u32,
}

/// What a remote viewer asks of the owner's control lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemoteOp {
    /// `control-request`.
    Request,
    /// `control-release`.
    Release,
    /// An input for the page: its compat JSON (`protocol::relayed_input_message`), in page
    /// coordinates.
    Input,
    /// The viewer left: control it holds is given back.
    Leave,
}

/// A subscriber's command for the owner, on behalf of one of its viewers whose own instance
/// already allowed it control (`authorizeControl` there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteCommand {
    pub key: String,
    /// The owner this subscriber follows: another owner of the same key stays silent.
    pub owner: String,
    pub from: ViewerName,
    pub op: RemoteOp,
    /// A compat viewer (acts while nobody holds control, cannot hold it).
    #[serde(default)]
    pub compat: bool,
    /// The input of `RemoteOp::Input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

/// The owner's answer to a remote command, when it has one: refusals, and the outcome of a
/// `control-request` that did not change who holds control (a change reaches every
/// instance as a [`ControlState`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteAnswer {
    pub key: String,
    /// The subscriber's viewer the answer is for.
    pub viewer: u32,
    pub outcome: RemoteOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum RemoteOutcome {
    /// The viewer already holds control.
    Held,
    /// `holder` holds control.
    Busy { holder: ViewerName },
    /// Refused: the subscriber answers its viewer with its own code and text for `reason`
    /// (nothing of the owner's text crosses).
    Refused { reason: ControlRefusal },
}

/// Who holds control of a channel, as the owner says on its stream after every change and
/// to each new subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    pub controller: Option<ViewerName>,
}

/// "Which events of your ring follow `after`?", asked by an instance that cannot place a
/// resuming client's number; answered by the instance that has the browser only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingQuestion {
    pub key: String,
    pub after: u64,
}

/// A page of the owner's ring after the asked number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingAnswer {
    /// Events after the number were dropped (or it is not one of the owner's): the oldest
    /// held, and the events are then the oldest held ones.
    pub stale: Option<Option<u64>>,
    /// The events' message texts (`{"type":"event","seq":N,…}`) with their numbers, in order.
    pub events: Vec<(u64, String)>,
    /// More follow: ask again after the last one.
    pub more: bool,
}

/// A frame read from the owner's stream: its image as base64 (what `push_frame` takes) and
/// its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayedFrame {
    pub text: Bytes,
    pub meta: FrameMeta,
}

/// Reads a BINARY message of the owner's stream: a frame (kind 1) becomes a [`RelayedFrame`];
/// anything else (video chunks, kinds this version does not know, a short message) is
/// `None`.
pub fn read_frame(message: &[u8]) -> Option<RelayedFrame> {
    if message.len() < BINARY_HEADER_LEN || message[0] != 1 {
        return None;
    }
    let header_len = usize::from(message[1]);
    if header_len < BINARY_HEADER_LEN || header_len > message.len() {
        return None;
    }
    let f32_at = |at: usize| {
        f64::from(f32::from_be_bytes([
            message[at],
            message[at + 1],
            message[at + 2],
            message[at + 3],
        ]))
    };
    let mut timestamp = [0u8; 8];
    timestamp.copy_from_slice(&message[12..20]);
    let meta = FrameMeta {
        device_width: f32_at(28),
        device_height: f32_at(32),
        page_scale_factor: f32_at(36),
        offset_top: f32_at(40),
        scroll_offset_x: f32_at(44),
        scroll_offset_y: f32_at(48),
        timestamp_ms: f64::from_be_bytes(timestamp),
        refined: message[3] & 0b10 != 0,
    };
    let text = base64::engine::general_purpose::STANDARD.encode(&message[header_len..]);
    Some(RelayedFrame {
        text: Bytes::from(text),
        meta,
    })
}

/// What a TEXT message of the owner's stream asks of the subscriber's channel.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayedText {
    Status(String),
    Url(String),
    /// A source error code (`{error, message}`): the subscriber's viewers get the same code
    /// with their own instance's fixed text.
    Error(String),
    /// An agent event: the owner's number and the object the deployer published.
    Event(u64, String),
    /// What the subscriber does not relay (session-meta, viewport: it follows the frames,
    /// control: the owner's, pongs…).
    Other,
}

/// Reads a TEXT message of the owner's stream.
pub fn read_text(message: &[u8]) -> RelayedText {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(message) else {
        return RelayedText::Other;
    };
    if value.get("type").and_then(|t| t.as_str()) == Some("event") {
        let seq = value.get("seq").and_then(|seq| seq.as_u64());
        return match (seq, value.get("event")) {
            (Some(seq), Some(event)) if event.is_object() => {
                RelayedText::Event(seq, event.to_string())
            }
            _ => RelayedText::Other,
        };
    }
    if value.get("type").is_some() {
        return RelayedText::Other;
    }
    if let Some(status) = value.get("status").and_then(|s| s.as_str()) {
        return RelayedText::Status(status.to_string());
    }
    if let Some(url) = value.get("url").and_then(|s| s.as_str()) {
        return RelayedText::Url(url.to_string());
    }
    if let Some(code) = value.get("error").and_then(|s| s.as_str()) {
        return RelayedText::Error(code.to_string());
    }
    RelayedText::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;

    #[test]
    fn an_owner_answer_without_events_from_reads_as_zero() {
        let answer: OwnerAnswer = serde_json::from_str(r#"{"owner":"A"}"#).expect("older answer");
        assert_eq!(answer.events_from, 0);
        let answer: OwnerAnswer =
            serde_json::from_str(r#"{"owner":"A","eventsFrom":7}"#).expect("answer");
        assert_eq!(answer.events_from, 7);
    }

    #[test]
    fn subjects_hide_the_channel_and_its_syntax() {
        let subjects = ChannelSubjects::new("bsn", "agent.with>wild*cards:thread 1");
        for subject in [
            &subjects.owner,
            &subjects.lease,
            &subjects.stream,
            &subjects.control,
            &subjects.ring,
        ] {
            assert!(!subject.contains("agent"), "{subject}");
            assert_eq!(subject.split('.').count(), 3, "{subject}");
            assert!(!subject.contains('*') && !subject.contains('>') && !subject.contains(' '));
        }
        assert_ne!(
            ChannelSubjects::new("bsn", "a").stream,
            ChannelSubjects::new("bsn", "b").stream
        );
        assert_eq!(channel_token("a").len(), 32);
    }

    #[test]
    fn a_frame_survives_the_relay_byte_for_byte() {
        let jpeg: &[u8] = &[
            0xff, 0xd8, 0xff, 0xe0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 0xff, 0xd9,
        ];
        let text = Bytes::from(base64::engine::general_purpose::STANDARD.encode(jpeg));
        let meta = FrameMeta {
            device_width: 1280.0,
            device_height: 720.0,
            page_scale_factor: 1.0,
            offset_top: 0.0,
            scroll_offset_x: 3.0,
            scroll_offset_y: 40.0,
            timestamp_ms: 1_700_000_000_123.5,
            refined: true,
        };
        let frame = Frame::from_base64(7, 1, text.clone(), meta);
        let binary = frame.binary().unwrap();
        let mut message = binary.head[binary.ws_header_len..].to_vec();
        message.extend_from_slice(&binary.body);
        let relayed = read_frame(&message).unwrap();
        assert_eq!(relayed.text, text);
        assert_eq!(relayed.meta, meta);
        assert_eq!(read_frame(&message[..20]), None);
        message[0] = 2;
        assert_eq!(read_frame(&message), None, "video chunks are not frames");
    }

    #[test]
    fn texts_map_to_pushes() {
        assert_eq!(
            read_text(br#"{"status":"streaming"}"#),
            RelayedText::Status("streaming".into())
        );
        assert_eq!(
            read_text(br#"{"url":"https://x/"}"#),
            RelayedText::Url("https://x/".into())
        );
        assert_eq!(
            read_text(br#"{"error":"screencast_failed","message":"m"}"#),
            RelayedText::Error("screencast_failed".into())
        );
        assert_eq!(
            read_text(br#"{"type":"event","seq":9,"event":{"type":"tool_start"}}"#),
            RelayedText::Event(9, r#"{"type":"tool_start"}"#.into())
        );
        assert_eq!(
            read_text(br#"{"type":"session-meta","status":"x"}"#),
            RelayedText::Other
        );
        assert_eq!(
            read_text(br#"{"viewport":{"width":1,"height":2}}"#),
            RelayedText::Other
        );
        assert_eq!(read_text(b"not json"), RelayedText::Other);
    }
}

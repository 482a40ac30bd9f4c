//! What travels on the bus: the subjects of a channel (named by a hash of its key, so no agent
//! id, thread id or subject syntax from a viewer ever reaches a subject), the JSON of the
//! owner's questions and leases, and the reading of the owner's viewer stream (the extended
//! protocol of docs/PROTOCOL.md, as its relay viewer writes it) back into pushes.
//! Must not publish or subscribe: `owner` and `subscriber` do.

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::pipeline::KeyReason;
use crate::codec::{VideoConfig, CHUNK_NUMBER_AT, FLAG_KEY, FORMAT_H264_ANNEX_B};
use crate::frame::{FrameMeta, BINARY_HEADER_LEN, KIND_VIDEO};
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
    /// The owner's video of the channel (its video relay viewer's messages: `video-config`
    /// and H.264 chunks), while a subscriber wants it.
    pub video: String,
    /// A subscriber's [`KeyRequest`]s for the owner: a keyframe, and video at all.
    pub key: String,
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
            video: format!("{prefix}.video.{token}"),
            key: format!("{prefix}.key.{token}"),
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

/// Wildcard of every keyframe request under a prefix (each instance listens).
pub fn key_wildcard(prefix: &str) -> String {
    format!("{prefix}.key.*")
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
    /// The subscriber has video viewers of the channel: the owner keeps publishing its video.
    /// Absent from an older subscriber's lease: false.
    #[serde(default)]
    pub video: bool,
}

/// Why a subscriber asks for a keyframe (its viewers' reasons, as the owner's pipeline
/// weighs them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyWanted {
    Join,
    Lag,
    Loss,
}

impl From<KeyReason> for KeyWanted {
    fn from(reason: KeyReason) -> Self {
        match reason {
            KeyReason::Join => KeyWanted::Join,
            KeyReason::Lag => KeyWanted::Lag,
            KeyReason::Loss => KeyWanted::Loss,
        }
    }
}

impl From<KeyWanted> for KeyReason {
    fn from(wanted: KeyWanted) -> Self {
        match wanted {
            KeyWanted::Join => KeyReason::Join,
            KeyWanted::Lag => KeyReason::Lag,
            KeyWanted::Loss => KeyReason::Loss,
        }
    }
}

/// A subscriber's request for a keyframe of the owner's video, which starts that video when
/// it is not published yet (a lease with `video` keeps it going).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRequest {
    pub key: String,
    pub instance: String,
    /// The owner this subscriber follows: another owner of the same key stays silent.
    pub owner: String,
    pub reason: KeyWanted,
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

/// A frame read from the owner's stream: its image as base64 (what `push_frame` takes), its
/// metadata and the owner's number of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayedFrame {
    pub text: Bytes,
    pub meta: FrameMeta,
    pub seq: u64,
}

/// A video chunk read from the owner's video: its 56-byte header, the owner's number of the
/// frame it encodes, its number in the owner's stream, and the access unit (a view of the
/// message, not a copy).
#[derive(Debug, Clone, PartialEq)]
pub struct RelayedChunk {
    pub header: [u8; BINARY_HEADER_LEN],
    pub seq: u64,
    pub number: u32,
    pub key: bool,
    pub body: Bytes,
}

/// Reads a BINARY message of the owner's video: an H.264 chunk (kind 2, Annex B) with the
/// fixed header; anything else is `None`.
pub fn read_chunk(message: &Bytes) -> Option<RelayedChunk> {
    if message.len() <= BINARY_HEADER_LEN
        || message[0] != KIND_VIDEO
        || usize::from(message[1]) != BINARY_HEADER_LEN
        || message[2] != FORMAT_H264_ANNEX_B
    {
        return None;
    }
    let mut header = [0u8; BINARY_HEADER_LEN];
    header.copy_from_slice(&message[..BINARY_HEADER_LEN]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&header[4..12]);
    let mut number = [0u8; 4];
    number.copy_from_slice(&header[CHUNK_NUMBER_AT..CHUNK_NUMBER_AT + 4]);
    Some(RelayedChunk {
        header,
        seq: u64::from_be_bytes(seq),
        number: u32::from_be_bytes(number),
        key: header[3] & FLAG_KEY != 0,
        body: message.slice(BINARY_HEADER_LEN..),
    })
}

/// What a TEXT message of the owner's video says: its decoder configuration, that video is
/// not available there (an error answer), or nothing the feed uses.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoText {
    Config(VideoConfig),
    Unavailable,
    Other,
}

/// Longest codec string taken from a peer (WebCodecs strings are short).
const MAX_CODEC_STRING: usize = 64;

/// Reads a TEXT message of the owner's video.
pub fn read_video_text(message: &[u8]) -> VideoText {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(message) else {
        return VideoText::Other;
    };
    if value.get("type").and_then(|t| t.as_str()) == Some("video-config") {
        let codec = value.get("codec").and_then(|c| c.as_str());
        let size = |field: &str| {
            value
                .get(field)
                .and_then(|n| n.as_u64())
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
        };
        return match (codec, size("codedWidth"), size("codedHeight")) {
            (Some(codec), Some(width), Some(height))
                if codec.len() <= MAX_CODEC_STRING
                    && codec.starts_with("avc1.")
                    && codec
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.') =>
            {
                VideoText::Config(VideoConfig {
                    codec: codec.to_string(),
                    width,
                    height,
                })
            }
            _ => VideoText::Other,
        };
    }
    match value.get("error").and_then(|e| e.as_str()) {
        Some("video_unavailable" | "video_failed" | "unsupported_codec") => VideoText::Unavailable,
        _ => VideoText::Other,
    }
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
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&message[4..12]);
    let text = base64::engine::general_purpose::STANDARD.encode(&message[header_len..]);
    Some(RelayedFrame {
        text: Bytes::from(text),
        meta,
        seq: u64::from_be_bytes(seq),
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
            &subjects.video,
            &subjects.key,
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
        assert_eq!(relayed.seq, 7);
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

    #[test]
    fn a_video_chunk_is_read_with_its_numbers_and_a_view_of_its_bytes() {
        let mut message = vec![0u8; BINARY_HEADER_LEN];
        message[0] = KIND_VIDEO;
        message[1] = BINARY_HEADER_LEN as u8;
        message[2] = FORMAT_H264_ANNEX_B;
        message[3] = FLAG_KEY;
        message[4..12].copy_from_slice(&99u64.to_be_bytes());
        message[CHUNK_NUMBER_AT..CHUNK_NUMBER_AT + 4].copy_from_slice(&7u32.to_be_bytes());
        message.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        let chunk = read_chunk(&Bytes::from(message.clone())).unwrap();
        assert_eq!((chunk.seq, chunk.number, chunk.key), (99, 7, true));
        assert_eq!(&chunk.body[..], &[0, 0, 0, 1, 0x65]);
        assert_eq!(&chunk.header[..], &message[..BINARY_HEADER_LEN]);
        // Not a chunk: a frame, another format, a header that lies about its length, no body.
        for (at, value) in [(0, 1u8), (2, 0), (1, 60)] {
            let mut other = message.clone();
            other[at] = value;
            assert_eq!(read_chunk(&Bytes::from(other)), None, "byte {at} = {value}");
        }
        assert_eq!(
            read_chunk(&Bytes::from(message[..BINARY_HEADER_LEN].to_vec())),
            None
        );
    }

    #[test]
    fn the_video_texts_a_feed_uses_are_checked() {
        let config = br#"{"type":"video-config","codec":"avc1.42c01f","codedWidth":1280,"codedHeight":720,"format":"annexb"}"#;
        assert_eq!(
            read_video_text(config),
            VideoText::Config(VideoConfig {
                codec: "avc1.42c01f".into(),
                width: 1280,
                height: 720
            })
        );
        for bad in [
            r#"{"type":"video-config","codec":"vp8","codedWidth":1,"codedHeight":1}"#,
            r#"{"type":"video-config","codec":"avc1.<script>","codedWidth":1,"codedHeight":1}"#,
            r#"{"type":"video-config","codec":"avc1.42c01f","codedWidth":0,"codedHeight":1}"#,
            r#"{"type":"video-config","codec":"avc1.42c01f","codedWidth":1}"#,
            r#"{"status":"streaming"}"#,
            "not json",
        ] {
            assert_eq!(read_video_text(bad.as_bytes()), VideoText::Other, "{bad}");
        }
        assert_eq!(
            read_video_text(br#"{"error":"video_unavailable","message":"m"}"#),
            VideoText::Unavailable
        );
        assert_eq!(
            read_video_text(br#"{"error":"rate_limited","message":"m"}"#),
            VideoText::Other
        );
    }

    #[test]
    fn a_lease_of_an_older_subscriber_asks_no_video() {
        let lease: Lease =
            serde_json::from_str(r#"{"key":"k","instance":"i","owner":"o"}"#).expect("older lease");
        assert!(!lease.video);
        let request: KeyRequest =
            serde_json::from_str(r#"{"key":"k","instance":"i","owner":"o","reason":"lag"}"#)
                .expect("request");
        assert_eq!(KeyReason::from(request.reason), KeyReason::Lag);
    }
}

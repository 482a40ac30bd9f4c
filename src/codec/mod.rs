//! Video for viewers that ask for it: a channel's frames decoded, converted and encoded once,
//! and the encoded chunks shared by reference with every video viewer of the channel.
//!
//! Owns: the [`VideoEncoder`] trait (what a codec must do; H.264 is the one behind it today,
//! a second codec is a second implementation), the encoded chunk and its wire form
//! ([`VideoChunk`]), the `video-config` a decoder needs ([`VideoConfig`]), which offered codec
//! strings the server can serve ([`pick_codec`]) and the encoder's settings. [`picture`] turns
//! a frame's image into the encoder's input, [`h264`] is the OpenH264 encoder, [`pipeline`]
//! runs one channel's encoder on its own thread. Must not touch sockets or viewers (writers
//! read chunks from the pipeline's broadcast) nor hold option defaults (`registry::config`
//! owns them).

pub(crate) mod h264;
pub(crate) mod picture;
pub(crate) mod pipeline;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::frame::{Frame, BINARY_HEADER_LEN, KIND_VIDEO};
use crate::ws::codec::{FrameHeader, OP_BINARY};
use picture::Picture;

/// `image format` byte of a video chunk: H.264 in Annex B (start codes; SPS and PPS in front
/// of every keyframe).
pub const FORMAT_H264_ANNEX_B: u8 = 16;
/// Header flag: the chunk is a keyframe (IDR); a decoder may start here.
pub const FLAG_KEY: u8 = 1;
/// Offset of the chunk number in the header (a frame's reserved field).
pub const CHUNK_NUMBER_AT: usize = 52;
/// Offset of the frame's sequence number in the header.
const SEQ_AT: usize = 4;
/// Header flag: a refinement keyframe (the page stopped changing: the same picture at a
/// higher quality); the same bit as a refined JPEG frame's.
pub const FLAG_REFINE: u8 = crate::frame::FLAG_REFINED;

/// How hard the encoder may compress a picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    /// Live video: the configured bitrate.
    Live,
    /// Idle refinement: a keyframe at a low quantiser, whatever it costs in bytes.
    Refine,
}

/// One encoded access unit.
#[derive(Debug)]
pub struct Encoded {
    /// The access unit, Annex B.
    pub data: Vec<u8>,
    /// An IDR: decodable without any earlier chunk.
    pub key: bool,
}

/// A video encoder of one channel. Implementations run on the pipeline's thread, never on the
/// runtime's.
pub trait VideoEncoder: Send {
    /// Encodes `picture`; `key` asks for a keyframe. `Ok(None)` when the encoder dropped the
    /// picture (rate control).
    fn encode(
        &mut self,
        picture: &Picture,
        key: bool,
        quality: Quality,
    ) -> Result<Option<Encoded>, String>;

    /// The WebCodecs codec string of what `data` (a keyframe) holds, e.g. `avc1.42c01f`.
    fn codec_string(&self, keyframe: &[u8]) -> Option<String>;
}

/// Upper bounds (seconds) of the buckets of [`EncodeTimes`]: 1 ms to 0.5 s, where a
/// screen-content frame's decode, convert and encode falls.
pub const ENCODE_TIME_BUCKETS: [f64; 10] =
    [0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.1, 0.2, 0.5];

/// How long each frame's decode, convert and encode took, as a cumulative histogram over a
/// registry's life (every channel's encoder records into the same one: a scrape must not
/// lose what a channel that went away measured).
#[derive(Debug, Default)]
pub struct EncodeTimes {
    /// Frames at or under each bound of [`ENCODE_TIME_BUCKETS`] (not cumulative here).
    buckets: [AtomicU64; ENCODE_TIME_BUCKETS.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl EncodeTimes {
    /// Records one frame's time.
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        if let Some(i) = ENCODE_TIME_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
        {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Release);
    }

    /// (sum in seconds, count, cumulative count at or under each bound). The count is read
    /// first and bounds every bucket: a frame recorded meanwhile cannot make a bucket larger
    /// than the count (`observe` bumps its bucket before the count).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let count = self.count.load(Ordering::Acquire);
        let mut cumulative = 0;
        let buckets = ENCODE_TIME_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| {
                cumulative += n.load(Ordering::Relaxed);
                (*bound, cumulative.min(count))
            })
            .collect();
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }
}

/// The settings of a channel's encoder (from the registry's options).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSettings {
    /// Target bitrate of live video, bits per second.
    pub bitrate: u32,
    /// Longest time between two keyframes while the page changes.
    pub keyframe_interval: Duration,
    /// Quiet time after which the last picture is sent again as a refinement keyframe
    /// (`Duration::ZERO`: never).
    pub refine_after: Duration,
}

/// What a decoder needs before the first chunk, and again whenever it changes (a new size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    /// WebCodecs codec string read from the stream's SPS.
    pub codec: String,
    /// Coded width in pixels.
    pub width: u32,
    /// Coded height in pixels.
    pub height: u32,
}

impl VideoConfig {
    /// The `video-config` message (docs/PROTOCOL.md): Annex B needs no `description`.
    pub fn message(&self) -> String {
        serde_json::json!({
            "type": "video-config",
            "codec": self.codec,
            "codedWidth": self.width,
            "codedHeight": self.height,
            "format": "annexb",
        })
        .to_string()
    }
}

/// One encoded chunk as it is fanned out: its WebSocket header and 56-byte header built once,
/// its bytes shared by every video viewer.
#[derive(Debug)]
pub struct VideoChunk {
    /// Sequence number of the frame it encodes.
    pub seq: u64,
    /// Ordinal of that frame in its channel (`Frame::index`).
    pub index: u64,
    /// A keyframe.
    pub key: bool,
    /// The decoder configuration this chunk needs (the same `Arc` until it changes).
    pub config: Arc<VideoConfig>,
    /// WebSocket BINARY header followed by the chunk header.
    pub head: Vec<u8>,
    /// Length of the WebSocket header at the start of `head`.
    pub ws_header_len: usize,
    /// The access unit.
    pub body: Bytes,
}

impl VideoChunk {
    /// The chunk of `frame` encoded as `encoded`, in a picture of `width`×`height`.
    /// `number` is the chunk's place in the pipeline's stream (wrapping), written where frames
    /// have their reserved field: a client that sees a gap before a delta knows it cannot
    /// decode it.
    pub fn new(
        frame: &Frame,
        number: u32,
        encoded: Encoded,
        refine: bool,
        config: Arc<VideoConfig>,
    ) -> Self {
        let mut flags = 0;
        if encoded.key {
            flags |= FLAG_KEY;
        }
        if refine {
            flags |= FLAG_REFINE;
        }
        let mut header = frame.header_as(
            KIND_VIDEO,
            FORMAT_H264_ANNEX_B,
            flags,
            (config.width, config.height),
        );
        header[CHUNK_NUMBER_AT..CHUNK_NUMBER_AT + 4].copy_from_slice(&number.to_be_bytes());
        let body = Bytes::from(encoded.data);
        let ws = FrameHeader::new(OP_BINARY, BINARY_HEADER_LEN + body.len());
        let mut head = Vec::with_capacity(ws.as_bytes().len() + BINARY_HEADER_LEN);
        head.extend_from_slice(ws.as_bytes());
        head.extend_from_slice(&header);
        VideoChunk {
            seq: frame.seq,
            index: frame.index,
            key: encoded.key,
            config,
            ws_header_len: ws.as_bytes().len(),
            head,
            body,
        }
    }

    /// A chunk encoded on another instance, from the 56-byte `header` its stream carried:
    /// renumbered as this instance's frame `seq` (ordinal `index`) and chunk `number`.
    pub fn relayed(
        mut header: [u8; BINARY_HEADER_LEN],
        seq: u64,
        index: u64,
        number: u32,
        key: bool,
        config: Arc<VideoConfig>,
        body: Bytes,
    ) -> Self {
        header[SEQ_AT..SEQ_AT + 8].copy_from_slice(&seq.to_be_bytes());
        header[CHUNK_NUMBER_AT..CHUNK_NUMBER_AT + 4].copy_from_slice(&number.to_be_bytes());
        let ws = FrameHeader::new(OP_BINARY, BINARY_HEADER_LEN + body.len());
        let mut head = Vec::with_capacity(ws.as_bytes().len() + BINARY_HEADER_LEN);
        head.extend_from_slice(ws.as_bytes());
        head.extend_from_slice(&header);
        VideoChunk {
            seq,
            index,
            key,
            config,
            ws_header_len: ws.as_bytes().len(),
            head,
            body,
        }
    }

    /// Bytes on the wire.
    pub fn wire_len(&self) -> usize {
        self.head.len() + self.body.len()
    }
}

/// Codec families the server encodes, as the start of a WebCodecs codec string.
const SERVED_CODECS: &[&str] = &["avc1."];

/// Most codec strings a viewer may offer.
pub const MAX_OFFERED_CODECS: usize = 16;

/// The first offered codec string the server can serve: any `avc1.*` (every H.264 decoder
/// profile decodes Constrained Baseline, which is what the server sends). `None` when none is.
pub fn pick_codec(offered: &[String]) -> Option<&str> {
    offered
        .iter()
        .map(String::as_str)
        .find(|codec| SERVED_CODECS.iter().any(|family| codec.starts_with(family)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_h264_offers_are_picked_in_the_viewers_order() {
        let offer = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            pick_codec(&offer(&["vp8", "avc1.42E01F", "avc1.640028"])),
            Some("avc1.42E01F")
        );
        assert_eq!(
            pick_codec(&offer(&["vp09.00.10.08", "av01.0.04M.08"])),
            None
        );
        assert_eq!(pick_codec(&[]), None);
    }

    #[test]
    fn the_video_config_message_names_codec_size_and_format() {
        let config = VideoConfig {
            codec: "avc1.42c01f".into(),
            width: 1280,
            height: 720,
        };
        let message: serde_json::Value = serde_json::from_str(&config.message()).unwrap();
        assert_eq!(message["type"], "video-config");
        assert_eq!(message["codec"], "avc1.42c01f");
        assert_eq!(message["codedWidth"], 1280);
        assert_eq!(message["format"], "annexb");
    }
}

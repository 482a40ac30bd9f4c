//! Shared parts of the benchmark tools: the frame stamp (the same byte layout the addon's
//! replay source and the JS frame clock write), the frame messages of each wire, the wall clock
//! and a small argument parser.
//!
//! Owns: reading and writing stamps and finding the image in a frame message, nothing else. Must not depend on the addon crate: the
//! benchmark checks the addon from outside, as a client would.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of a stamped frame's head: SOI, COM marker, COM length, 42 bytes of comment.
/// A multiple of 3, so its base64 is exactly 64 characters and joins the rest without padding.
pub const STAMP_HEAD_BYTES: usize = 48;
/// base64 characters of the head.
pub const STAMP_HEAD_CHARS: usize = 64;

/// Microseconds since the Unix epoch.
pub fn wall_clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The head of frame `seq` scheduled at `time_us`: `FF D8 FF FE 00 2C` then
/// `bsn:seq=<10 digits>;t=<16 digits>;` padded with spaces.
pub fn stamp_head(seq: u64, time_us: u64) -> [u8; STAMP_HEAD_BYTES] {
    let mut head = [b' '; STAMP_HEAD_BYTES];
    head[..6].copy_from_slice(&[0xff, 0xd8, 0xff, 0xfe, 0x00, 0x2c]);
    let tag = format!(
        "bsn:seq={:010};t={:016};",
        seq % 10_000_000_000,
        time_us % 10_000_000_000_000_000
    );
    head[6..6 + tag.len()].copy_from_slice(tag.as_bytes());
    head
}

/// Reads `(seq, time_us)` from the first bytes of a stamped JPEG.
pub fn parse_stamp_bytes(bytes: &[u8]) -> Option<(u64, u64)> {
    let head = bytes.get(6..STAMP_HEAD_BYTES)?;
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("bsn:seq=")?;
    let (seq, rest) = rest.split_once(";t=")?;
    let (time, _) = rest.split_once(';')?;
    Some((seq.parse().ok()?, time.parse().ok()?))
}

/// Reads `(seq, time_us)` from the base64 text of a stamped JPEG.
pub fn parse_stamp_base64(text: &[u8]) -> Option<(u64, u64)> {
    let head = text.get(..STAMP_HEAD_CHARS)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(head)
        .ok()?;
    parse_stamp_bytes(&bytes)
}

/// The subprotocol of the addon's extended wire (docs/PROTOCOL.md, "Extended mode").
pub const EXTENDED_PROTOCOL: &str = "browser-stream.v1";
/// `kind` (byte 0) of an extended binary message that carries a frame.
pub const EXTENDED_KIND_FRAME: u8 = 1;
/// Header length of an extended frame in v1; later versions may append fields, never shorten it.
pub const EXTENDED_HEADER_V1_BYTES: usize = 56;

/// How a stream's BINARY messages carry frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// No subprotocol: a binary message is the image itself (tuned TS sends the raw JPEG).
    Plain,
    /// `browser-stream.v1`: a header (`kind` at byte 0, its own length at byte 1), then the
    /// image.
    ExtendedV1,
}

impl Wire {
    /// The wire a client gets by offering `protocol` (`None`: no subprotocol), or `None` for a
    /// subprotocol the load generator cannot read.
    pub fn for_protocol(protocol: Option<&str>) -> Option<Wire> {
        match protocol {
            None => Some(Wire::Plain),
            Some(EXTENDED_PROTOCOL) => Some(Wire::ExtendedV1),
            Some(_) => None,
        }
    }

    /// The image bytes of a binary message, or `None` when the message is not a frame (an
    /// extended message of another kind, or a header that is cut short or claims less than
    /// v1's 56 bytes).
    pub fn frame_image(self, message: &[u8]) -> Option<&[u8]> {
        match self {
            Wire::Plain => Some(message),
            Wire::ExtendedV1 => {
                let (&kind, rest) = message.split_first()?;
                let header = *rest.first()? as usize;
                if kind != EXTENDED_KIND_FRAME || header < EXTENDED_HEADER_V1_BYTES {
                    return None;
                }
                message.get(header..)
            }
        }
    }
}

/// A JPEG ready to be stamped: the base64 of everything after its start-of-image marker.
#[derive(Clone)]
pub struct StampableImage {
    after_soi: Bytes,
}

impl StampableImage {
    /// Prepares a JPEG (it must start with `FF D8`).
    pub fn new(jpeg: &[u8]) -> Result<StampableImage, String> {
        if !jpeg.starts_with(&[0xff, 0xd8]) {
            return Err("the image is not a JPEG".into());
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(&jpeg[2..]);
        Ok(StampableImage {
            after_soi: Bytes::from(encoded),
        })
    }

    /// The base64 text of the stamped frame.
    pub fn frame_text(&self, seq: u64, time_us: u64) -> Bytes {
        let head = base64::engine::general_purpose::STANDARD.encode(stamp_head(seq, time_us));
        let mut text = BytesMut::with_capacity(head.len() + self.after_soi.len());
        text.put_slice(head.as_bytes());
        text.put_slice(&self.after_soi);
        text.freeze()
    }
}

/// A tokio runtime of `threads` workers: the lean current-thread scheduler for one.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// `--name value` pairs and bare `--flag`s.
pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    /// Parses `std::env::args()`.
    pub fn from_env() -> Args {
        let mut values = HashMap::new();
        let mut args = std::env::args().skip(1).peekable();
        while let Some(arg) = args.next() {
            if let Some(name) = arg.strip_prefix("--") {
                let value = match args.peek() {
                    Some(next) if !next.starts_with("--") => args.next().unwrap_or_default(),
                    _ => "true".to_string(),
                };
                values.insert(name.to_string(), value);
            }
        }
        Args { values }
    }

    /// A string argument or its default.
    pub fn text(&self, name: &str, default: &str) -> String {
        self.values
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    /// A number argument or its default; exits with a message on a bad number.
    pub fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.values.get(name) {
            None => default,
            Some(text) => text.parse().unwrap_or_else(|_| {
                eprintln!("--{name} {text}: not a number");
                std::process::exit(2)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_read_back_from_bytes_and_base64() {
        let image = StampableImage::new(&[0xff, 0xd8, 1, 2, 3, 0xff, 0xd9]).expect("jpeg");
        let text = image.frame_text(12, 1_700_000_000_000_001);
        assert_eq!(parse_stamp_base64(&text), Some((12, 1_700_000_000_000_001)));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&text)
            .expect("base64");
        assert_eq!(parse_stamp_bytes(&bytes), Some((12, 1_700_000_000_000_001)));
        assert_eq!(&bytes[STAMP_HEAD_BYTES..], &[1, 2, 3, 0xff, 0xd9]);
        assert_eq!(
            parse_stamp_bytes(b"\xff\xd8 not stamped at all, just bytes......"),
            None
        );
    }

    /// An extended frame message: the v1 header (`header` bytes long, fields as the addon
    /// writes them) followed by `image`.
    fn extended_message(kind: u8, header: u8, image: &[u8]) -> Vec<u8> {
        let mut message = vec![0u8; header as usize];
        message[0] = kind;
        message[1] = header;
        message[2] = 1; // JPEG
        message[4..12].copy_from_slice(&1_732_468_800_000_123u64.to_be_bytes());
        message[12..20].copy_from_slice(&1_700_000_000_000.001f64.to_be_bytes());
        message[20..24].copy_from_slice(&320u32.to_be_bytes());
        message[24..28].copy_from_slice(&240u32.to_be_bytes());
        message[28..32].copy_from_slice(&1280f32.to_be_bytes());
        message[32..36].copy_from_slice(&720f32.to_be_bytes());
        message[36..40].copy_from_slice(&1f32.to_be_bytes());
        message.extend_from_slice(image);
        message
    }

    #[test]
    fn extended_frames_skip_the_header_by_its_length_byte() {
        let jpeg: Vec<u8> = [
            &stamp_head(7, 1_700_000_000_000_001)[..],
            &[1, 2, 0xff, 0xd9],
        ]
        .concat();
        let wire = Wire::for_protocol(Some(EXTENDED_PROTOCOL)).expect("known protocol");
        assert_eq!(wire, Wire::ExtendedV1);

        let message = extended_message(EXTENDED_KIND_FRAME, 56, &jpeg);
        assert_eq!(wire.frame_image(&message), Some(&jpeg[..]));
        assert_eq!(
            wire.frame_image(&message).and_then(parse_stamp_bytes),
            Some((7, 1_700_000_000_000_001))
        );
        // A later version's longer header is skipped by its length byte as well.
        let longer = extended_message(EXTENDED_KIND_FRAME, 64, &jpeg);
        assert_eq!(wire.frame_image(&longer), Some(&jpeg[..]));
        // Read as a plain binary message, the header hides the stamp.
        assert_eq!(
            Wire::Plain
                .frame_image(&message)
                .and_then(parse_stamp_bytes),
            None
        );

        // Not frames: another kind, a header shorter than v1's, a message cut inside the header.
        assert_eq!(wire.frame_image(&extended_message(2, 56, &jpeg)), None);
        assert_eq!(
            wire.frame_image(&extended_message(EXTENDED_KIND_FRAME, 40, &jpeg)),
            None
        );
        assert_eq!(wire.frame_image(&message[..30]), None);
        assert_eq!(wire.frame_image(&[]), None);
        assert_eq!(wire.frame_image(&[EXTENDED_KIND_FRAME]), None);
        // A header with no image after it is a frame with an empty image, which has no stamp.
        let empty = extended_message(EXTENDED_KIND_FRAME, 56, &[]);
        assert_eq!(wire.frame_image(&empty), Some(&[][..]));
        assert_eq!(wire.frame_image(&empty).and_then(parse_stamp_bytes), None);
    }

    #[test]
    fn plain_binary_frames_are_the_raw_jpeg() {
        let jpeg: Vec<u8> = [&stamp_head(3, 1_700_000_000_000_002)[..], &[0xff, 0xd9]].concat();
        assert_eq!(Wire::for_protocol(None), Some(Wire::Plain));
        assert_eq!(Wire::Plain.frame_image(&jpeg), Some(&jpeg[..]));
        assert_eq!(
            Wire::Plain.frame_image(&jpeg).and_then(parse_stamp_bytes),
            Some((3, 1_700_000_000_000_002))
        );
        // The stamp of a raw JPEG must not be read as an extended header (byte 0 is 0xFF).
        assert_eq!(Wire::ExtendedV1.frame_image(&jpeg), None);
        assert_eq!(Wire::for_protocol(Some("browser-stream.v2")), None);
    }
}

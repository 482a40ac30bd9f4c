//! Shared parts of the benchmark tools: the frame stamp (the same byte layout the addon's
//! replay source and the JS frame clock write), the wall clock and a small argument parser.
//!
//! Owns: reading and writing stamps, nothing else. Must not depend on the addon crate: the
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
}

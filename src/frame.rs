//! A video frame as it is fanned out: validated once, its WebSocket header built once, its
//! payload shared by reference with every viewer.
//!
//! Owns: the `Frame` type, its metadata, and the check that a payload is an image in base64.
//! Must not touch sockets or channels; a `Frame` is immutable once built.

use bytes::Bytes;

use crate::ws_codec::{FrameHeader, OP_TEXT};

/// What a frame says about the page it shows; kept for input mapping and stats.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FrameMeta {
    /// Width of the frame's device (CSS pixels of the page viewport).
    pub device_width: f64,
    /// Height of the frame's device.
    pub device_height: f64,
    /// Page scale factor (pinch zoom).
    pub page_scale_factor: f64,
    /// Top offset of the visible area in the device (e.g. a browser top bar).
    pub offset_top: f64,
    /// Horizontal scroll position of the page.
    pub scroll_offset_x: f64,
    /// Vertical scroll position of the page.
    pub scroll_offset_y: f64,
    /// Capture time in milliseconds since the Unix epoch, as the source reported it.
    pub timestamp_ms: f64,
}

/// One frame, shared (`Arc`) by every viewer of a channel.
#[derive(Debug)]
pub struct Frame {
    /// Sequence number, strictly rising for the life of the channel.
    pub seq: u64,
    /// The base64 image text, exactly as compat viewers receive it.
    pub text: Bytes,
    /// The WebSocket TEXT header for `text`, built once.
    pub text_header: FrameHeader,
    /// Metadata of the capture.
    pub meta: FrameMeta,
}

impl Frame {
    /// Builds a frame from base64 image text already validated by [`check_base64_image`].
    pub fn from_base64(seq: u64, text: Bytes, meta: FrameMeta) -> Frame {
        let text_header = FrameHeader::new(OP_TEXT, text.len());
        Frame {
            seq,
            text,
            text_header,
            meta,
        }
    }
}

/// Why a pushed payload is not accepted as a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameRejection {
    /// Empty payload.
    Empty,
    /// A character outside the base64 alphabet (a compat client would misread it, e.g. `{`).
    NotBase64,
    /// Base64, but not of a JPEG, PNG or WebP image.
    NotAnImage,
}

impl std::fmt::Display for FrameRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameRejection::Empty => write!(f, "frame data is empty"),
            FrameRejection::NotBase64 => write!(f, "frame data is not base64 text"),
            FrameRejection::NotAnImage => {
                write!(f, "frame data is not a base64 JPEG, PNG or WebP image")
            }
        }
    }
}

/// Checks that `text` is base64 of a JPEG, PNG or WebP image. Compat viewers tell frames from
/// JSON by the first character, so anything else must never reach them as a frame.
pub fn check_base64_image(text: &[u8]) -> Result<(), FrameRejection> {
    if text.is_empty() {
        return Err(FrameRejection::Empty);
    }
    let body_end = text
        .iter()
        .rposition(|&b| b != b'=')
        .map_or(0, |last| last + 1);
    if text.len() - body_end > 2 || !is_base64_alphabet(&text[..body_end]) {
        return Err(FrameRejection::NotBase64);
    }
    // Base64 of the magic numbers: JPEG FF D8 FF, PNG 89 'PNG', WebP 'RIFF'.
    const MAGIC: [&[u8]; 3] = [b"/9j/", b"iVBORw0KGgo", b"UklGR"];
    if MAGIC.iter().any(|magic| text.starts_with(magic)) {
        Ok(())
    } else {
        Err(FrameRejection::NotAnImage)
    }
}

/// Whether every byte is in the base64 alphabet (`A–Z a–z 0–9 + /`). Runs on every frame
/// pushed from JS, on the JS thread: branch-free per byte, a chunk at a time, so the compiler
/// turns it into vector compares (a short-circuiting per-byte check was 14% of that thread).
fn is_base64_alphabet(bytes: &[u8]) -> bool {
    bytes.chunks(256).all(|chunk| {
        chunk.iter().fold(true, |ok, &b| {
            let upper = b.wrapping_sub(b'A') < 26;
            let lower = b.wrapping_sub(b'a') < 26;
            let digit = b.wrapping_sub(b'0') < 10;
            ok & (upper | lower | digit | (b == b'+') | (b == b'/'))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_jpeg_png_webp_base64() {
        assert_eq!(check_base64_image(b"/9j/4AAQSkZJRg=="), Ok(()));
        assert_eq!(check_base64_image(b"iVBORw0KGgoAAAANSUhEUg"), Ok(()));
        assert_eq!(check_base64_image(b"UklGRiQAAABXRUJQ"), Ok(()));
    }

    #[test]
    fn refuses_json_garbage_and_other_payloads() {
        assert_eq!(
            check_base64_image(b"{\"status\":\"x\"}"),
            Err(FrameRejection::NotBase64)
        );
        assert_eq!(check_base64_image(b""), Err(FrameRejection::Empty));
        assert_eq!(
            check_base64_image(b"/9j/a b"),
            Err(FrameRejection::NotBase64)
        );
        assert_eq!(
            check_base64_image(b"/9j/===="),
            Err(FrameRejection::NotBase64)
        );
        assert_eq!(
            check_base64_image(b"R0lGODlh"),
            Err(FrameRejection::NotAnImage)
        );
    }

    #[test]
    fn alphabet_check_agrees_with_the_definition_for_every_byte() {
        for byte in 0..=255u8 {
            let expected = byte.is_ascii_alphanumeric() || byte == b'+' || byte == b'/';
            let mut text = vec![b'A'; 300];
            text[257] = byte;
            assert_eq!(is_base64_alphabet(&text), expected, "byte {byte}");
        }
    }

    #[test]
    fn header_matches_payload_length() {
        let frame = Frame::from_base64(7, Bytes::from(vec![b'A'; 300]), FrameMeta::default());
        assert_eq!(frame.text_header.as_bytes(), &[0x81, 126, 1, 44]);
        assert_eq!(frame.seq, 7);
    }
}

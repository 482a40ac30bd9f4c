//! A video frame as it is fanned out: validated once, its WebSocket header built once, its
//! payload shared by reference with every viewer.
//!
//! Owns: the `Frame` type, its metadata, the check that a payload is an image in base64, the
//! image's pixel size (read from its header, for input mapping), and the extended mode's binary
//! form of a frame (decoded once, on first use, with its 56-byte header). Must not touch
//! sockets or channels; a `Frame` is immutable once built.

use std::sync::OnceLock;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use bytes::Bytes;

use crate::ws::codec::{FrameHeader, OP_BINARY, OP_TEXT};

/// Base64 with or without padding (sources differ; the alphabet was checked already).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Length of the extended mode's frame header (docs/PROTOCOL.md, "Binary message: a frame").
pub const BINARY_HEADER_LEN: usize = 56;
/// `kind` byte of a frame message.
const KIND_FRAME: u8 = 1;
/// Header flag of a refinement (a frame's or a video chunk's): the quiet page's picture again,
/// at a higher quality.
pub const FLAG_REFINED: u8 = 2;
/// `kind` byte of a video chunk message (`codec::VideoChunk`).
pub const KIND_VIDEO: u8 = 2;

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
    /// A refinement: the page was quiet and this is the same picture again at a higher
    /// quality (the binary header's flag bit 1).
    pub refined: bool,
}

/// Image format of a frame, as the binary header numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// JPEG (`1`).
    Jpeg = 1,
    /// PNG (`2`).
    Png = 2,
    /// WebP (`3`).
    Webp = 3,
}

/// What input mapping needs of a frame: the image's pixel size and the page it shows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FrameGeometry {
    /// Image width in pixels (0 when unknown).
    pub image_width: u32,
    /// Image height in pixels (0 when unknown).
    pub image_height: u32,
    /// Device (viewport) width in CSS pixels (0 when unknown).
    pub device_width: f64,
    /// Device height in CSS pixels.
    pub device_height: f64,
    /// Top offset of the page in the device, CSS pixels.
    pub offset_top: f64,
}

impl FrameGeometry {
    /// Maps a point in image pixels of this frame to CSS pixels of the page: scaled by device
    /// size / image size, less the top offset, clamped to the viewport. Unknown sizes map 1:1.
    pub fn to_page(&self, x: f64, y: f64) -> (f64, f64) {
        let known = self.image_width > 0
            && self.image_height > 0
            && self.device_width > 0.0
            && self.device_height > 0.0;
        if !known {
            return (x, y);
        }
        let px = x * self.device_width / f64::from(self.image_width);
        let py = y * self.device_height / f64::from(self.image_height) - self.offset_top;
        (
            px.clamp(0.0, self.device_width),
            py.clamp(0.0, self.device_height),
        )
    }
}

/// A frame as the extended mode sends it: one buffer with the WebSocket BINARY header and the
/// 56-byte frame header, and the decoded image shared by every extended viewer.
#[derive(Debug)]
pub struct BinaryFrame {
    /// WebSocket header followed by the frame header.
    pub head: Vec<u8>,
    /// Length of the WebSocket header at the start of `head`.
    pub ws_header_len: usize,
    /// The image bytes.
    pub body: Bytes,
}

/// One frame, shared (`Arc`) by every viewer of a channel.
#[derive(Debug)]
pub struct Frame {
    /// Sequence number, from the registry's one counter (shared with events and every other
    /// channel): strictly rising within the channel.
    pub seq: u64,
    /// Ordinal of the frame in its channel (1, 2, 3…): what "frames skipped" counts in.
    pub index: u64,
    /// The base64 image text, exactly as compat viewers receive it.
    pub text: Bytes,
    /// The WebSocket TEXT header for `text`, built once.
    pub text_header: FrameHeader,
    /// Metadata of the capture.
    pub meta: FrameMeta,
    /// Image size and page geometry, for input mapping.
    pub geometry: FrameGeometry,
    /// Image format (from its magic number).
    pub kind: ImageKind,
    /// Binary form, built by the first extended viewer that sends this frame.
    binary: OnceLock<Option<BinaryFrame>>,
}

impl Frame {
    /// Builds a frame from base64 image text already validated by [`check_base64_image`].
    pub fn from_base64(seq: u64, index: u64, text: Bytes, meta: FrameMeta) -> Frame {
        let text_header = FrameHeader::new(OP_TEXT, text.len());
        let kind = kind_of_base64(&text);
        let (image_width, image_height) = image_size_of_base64(&text, kind).unwrap_or((0, 0));
        let geometry = FrameGeometry {
            image_width,
            image_height,
            device_width: meta.device_width,
            device_height: meta.device_height,
            offset_top: meta.offset_top,
        };
        Frame {
            seq,
            index,
            text,
            text_header,
            meta,
            geometry,
            kind,
            binary: OnceLock::new(),
        }
    }

    /// The binary form of this frame (decoded on first use, then shared); `None` if the base64
    /// does not decode.
    pub fn binary(&self) -> Option<&BinaryFrame> {
        self.binary
            .get_or_init(|| {
                let body = Bytes::from(BASE64.decode(&self.text).ok()?);
                let header = self.binary_header();
                let ws = FrameHeader::new(OP_BINARY, header.len() + body.len());
                let mut head = Vec::with_capacity(ws.as_bytes().len() + header.len());
                head.extend_from_slice(ws.as_bytes());
                head.extend_from_slice(&header);
                Some(BinaryFrame {
                    head,
                    ws_header_len: ws.as_bytes().len(),
                    body,
                })
            })
            .as_ref()
    }

    /// The 56-byte frame header of docs/PROTOCOL.md (big-endian).
    pub fn binary_header(&self) -> [u8; BINARY_HEADER_LEN] {
        self.header_as(
            KIND_FRAME,
            self.kind as u8,
            if self.meta.refined { FLAG_REFINED } else { 0 },
            (self.geometry.image_width, self.geometry.image_height),
        )
    }

    /// The 56-byte header of a message of `kind` carrying this frame's picture in `format`
    /// with `flags` and the given pixel size: frames and video chunks share one layout, so
    /// input mapping and capture times read the same for both.
    pub fn header_as(
        &self,
        kind: u8,
        format: u8,
        flags: u8,
        (width, height): (u32, u32),
    ) -> [u8; BINARY_HEADER_LEN] {
        let mut h = [0u8; BINARY_HEADER_LEN];
        h[0] = kind;
        h[1] = BINARY_HEADER_LEN as u8;
        h[2] = format;
        h[3] = flags;
        h[4..12].copy_from_slice(&self.seq.to_be_bytes());
        h[12..20].copy_from_slice(&self.meta.timestamp_ms.to_be_bytes());
        h[20..24].copy_from_slice(&width.to_be_bytes());
        h[24..28].copy_from_slice(&height.to_be_bytes());
        let floats = [
            self.meta.device_width,
            self.meta.device_height,
            self.meta.page_scale_factor,
            self.meta.offset_top,
            self.meta.scroll_offset_x,
            self.meta.scroll_offset_y,
        ];
        for (i, value) in floats.iter().enumerate() {
            let at = 28 + i * 4;
            h[at..at + 4].copy_from_slice(&(*value as f32).to_be_bytes());
        }
        h
    }
}

fn kind_of_base64(text: &[u8]) -> ImageKind {
    if text.starts_with(b"iVBOR") {
        ImageKind::Png
    } else if text.starts_with(b"UklGR") {
        ImageKind::Webp
    } else {
        ImageKind::Jpeg
    }
}

/// The pixel size of a base64 image, decoding only as much as its header needs (a JPEG's
/// size sits after its tables, usually within the first kilobyte).
fn image_size_of_base64(text: &[u8], kind: ImageKind) -> Option<(u32, u32)> {
    let mut prefix = 2048;
    loop {
        let end = prefix.min(text.len());
        // Whole 4-character groups only, so a prefix decodes without padding.
        let end = if end == text.len() {
            end
        } else {
            end - end % 4
        };
        let bytes = BASE64.decode(&text[..end]).ok()?;
        match image_size(&bytes, kind) {
            ImageSize::Known(w, h) => return Some((w, h)),
            ImageSize::Unknown => return None,
            ImageSize::NeedMore if end < text.len() => prefix *= 4,
            ImageSize::NeedMore => return None,
        }
    }
}

/// What an image header says about its size.
#[derive(Debug, PartialEq, Eq)]
pub enum ImageSize {
    /// Width and height in pixels.
    Known(u32, u32),
    /// The bytes end before the size.
    NeedMore,
    /// Not a header this reader understands.
    Unknown,
}

/// Reads the pixel size from the start of a JPEG, PNG or WebP image. Peer-controlled bytes:
/// every read is bounds-checked.
pub fn image_size(bytes: &[u8], kind: ImageKind) -> ImageSize {
    let be16 = |at: usize| -> Option<u32> {
        Some(u32::from(u16::from_be_bytes([
            *bytes.get(at)?,
            *bytes.get(at + 1)?,
        ])))
    };
    let le = |at: usize, n: usize| -> Option<u32> {
        let mut v = 0u32;
        for i in (0..n).rev() {
            v = (v << 8) | u32::from(*bytes.get(at + i)?);
        }
        Some(v)
    };
    let need =
        |v: Option<(u32, u32)>| v.map_or(ImageSize::NeedMore, |(w, h)| ImageSize::Known(w, h));
    match kind {
        ImageKind::Png => {
            if bytes.len() >= 8 && &bytes[1..4] != b"PNG" {
                return ImageSize::Unknown;
            }
            need((|| {
                Some((be16(16)? << 16 | be16(18)?, be16(20)? << 16 | be16(22)?))
            })())
        }
        ImageKind::Webp => {
            if bytes.len() < 16 {
                return ImageSize::NeedMore;
            }
            if &bytes[8..12] != b"WEBP" {
                return ImageSize::Unknown;
            }
            match &bytes[12..16] {
                b"VP8 " => need((|| Some((le(26, 2)? & 0x3fff, le(28, 2)? & 0x3fff)))()),
                b"VP8L" => need((|| {
                    let bits = le(21, 4)?;
                    Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
                })()),
                b"VP8X" => need((|| Some((le(24, 3)? + 1, le(27, 3)? + 1)))()),
                _ => ImageSize::Unknown,
            }
        }
        ImageKind::Jpeg => {
            if bytes.len() >= 2 && bytes[..2] != [0xFF, 0xD8] {
                return ImageSize::Unknown;
            }
            let mut at = 2;
            loop {
                let Some(&first) = bytes.get(at) else {
                    return ImageSize::NeedMore;
                };
                if first != 0xFF {
                    return ImageSize::Unknown;
                }
                let Some(&marker) = bytes.get(at + 1) else {
                    return ImageSize::NeedMore;
                };
                match marker {
                    // Fill byte.
                    0xFF => at += 1,
                    // Markers without a length.
                    0x01 | 0xD0..=0xD8 => at += 2,
                    // Start of frame (baseline, progressive…; not DHT C4, JPG C8, DAC CC).
                    0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                        return match (be16(at + 5), be16(at + 7)) {
                            (Some(h), Some(w)) => ImageSize::Known(w, h),
                            _ => ImageSize::NeedMore,
                        };
                    }
                    // Scan data or end of image before any frame header.
                    0xDA | 0xD9 => return ImageSize::Unknown,
                    _ => match be16(at + 2) {
                        Some(len) if len >= 2 => at += 2 + len as usize,
                        Some(_) => return ImageSize::Unknown,
                        None => return ImageSize::NeedMore,
                    },
                }
            }
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
    // Padding only where base64 has it: after 2 leftover characters (up to `==`) or 3 (one
    // `=`); a body of 4n+1 characters is never base64. Anything else would not decode for
    // binary viewers.
    let padding = text.len() - body_end;
    let padding_fits = match body_end % 4 {
        0 => padding == 0,
        2 => padding <= 2,
        3 => padding <= 1,
        _ => false,
    };
    if !padding_fits || !is_base64_alphabet(&text[..body_end]) {
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
            check_base64_image(b"/9j/4"),
            Err(FrameRejection::NotBase64),
            "4n+1 characters never decode"
        );
        // Padding that does not fit the length (found by the frame_header fuzz target).
        for bad in [&b"/9j/="[..], b"/9j/==", b"/9j/AAA==", b"UklGRAA=="] {
            assert_eq!(check_base64_image(bad), Err(FrameRejection::NotBase64));
        }
        for good in [
            &b"/9j/AA"[..],
            b"/9j/AA=",
            b"/9j/AA==",
            b"/9j/AAA",
            b"/9j/AAA=",
        ] {
            assert_eq!(check_base64_image(good), Ok(()));
            let frame =
                Frame::from_base64(1, 1, Bytes::copy_from_slice(good), FrameMeta::default());
            assert!(frame.binary().is_some(), "{good:?} decodes");
        }
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
        let frame = Frame::from_base64(7, 1, Bytes::from(vec![b'A'; 300]), FrameMeta::default());
        assert_eq!(frame.text_header.as_bytes(), &[0x81, 126, 1, 44]);
        assert_eq!(frame.seq, 7);
    }

    /// A minimal JPEG header: SOI, an APP0 segment, SOF0 of 320x240.
    fn jpeg_header() -> Vec<u8> {
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x4A, 0x46];
        jpeg.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08, 0x00, 0xF0, 0x01, 0x40, 0x03]);
        jpeg.extend_from_slice(&[0u8; 16]);
        jpeg
    }

    #[test]
    fn reads_image_sizes() {
        let jpeg = jpeg_header();
        assert_eq!(
            image_size(&jpeg, ImageKind::Jpeg),
            ImageSize::Known(320, 240)
        );
        assert_eq!(image_size(&jpeg[..9], ImageKind::Jpeg), ImageSize::NeedMore);
        assert_eq!(image_size(b"GIF89a..", ImageKind::Jpeg), ImageSize::Unknown);
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&800u32.to_be_bytes());
        png.extend_from_slice(&600u32.to_be_bytes());
        assert_eq!(image_size(&png, ImageKind::Png), ImageSize::Known(800, 600));
        let mut webp = b"RIFF\0\0\0\0WEBPVP8X".to_vec();
        webp.extend_from_slice(&[0u8; 8]);
        webp.extend_from_slice(&[0x1F, 0x03, 0x00, 0xDF, 0x01, 0x00]);
        assert_eq!(
            image_size(&webp, ImageKind::Webp),
            ImageSize::Known(800, 480)
        );
        // Garbage never panics.
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 0xC0) as u8).collect();
            let _ = image_size(&junk, ImageKind::Jpeg);
            let _ = image_size(&junk, ImageKind::Png);
            let _ = image_size(&junk, ImageKind::Webp);
        }
    }

    #[test]
    fn binary_frame_has_the_documented_header_and_the_decoded_image() {
        let jpeg = jpeg_header();
        let text = Bytes::from(BASE64.encode(&jpeg));
        let meta = FrameMeta {
            device_width: 1280.0,
            device_height: 960.0,
            page_scale_factor: 1.0,
            timestamp_ms: 1_700_000_000_123.5,
            ..FrameMeta::default()
        };
        let frame = Frame::from_base64(0x0102_0304_0506_0708, 3, text, meta);
        assert_eq!(frame.geometry.image_width, 320);
        let binary = frame.binary().expect("decodes");
        assert_eq!(&binary.body[..], &jpeg[..]);
        let ws_len = binary.head.len() - BINARY_HEADER_LEN;
        assert_eq!(binary.head[0], 0x82);
        let h = &binary.head[ws_len..];
        assert_eq!(&h[..4], &[1, 56, 1, 0]);
        assert_eq!(&h[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            f64::from_be_bytes(h[12..20].try_into().expect("8")),
            1_700_000_000_123.5
        );
        assert_eq!(u32::from_be_bytes(h[20..24].try_into().expect("4")), 320);
        assert_eq!(u32::from_be_bytes(h[24..28].try_into().expect("4")), 240);
        assert_eq!(f32::from_be_bytes(h[28..32].try_into().expect("4")), 1280.0);
        assert_eq!(f32::from_be_bytes(h[36..40].try_into().expect("4")), 1.0);
        // Scaled: a 320-pixel image of a 1280-pixel page maps 4:1.
        assert_eq!(frame.geometry.to_page(160.0, 120.0), (640.0, 480.0));
        assert_eq!(frame.geometry.to_page(9999.0, -5.0), (1280.0, 0.0));
        assert_eq!(FrameGeometry::default().to_page(3.0, 4.0), (3.0, 4.0));
    }
}

//! Frame payloads a source pushes (`pushFrame` / the screencast): `frame::image_size` on raw
//! image bytes for each `ImageKind`, and `frame::check_base64_image` → `Frame::from_base64` →
//! `Frame::binary` on base64 text.
//!
//! Input layout: `text [\0 params]`. The whole input is the raw image bytes for `image_size`;
//! `text` (up to the first NUL, which base64 never contains) is the base64 text. `params`
//! (zero-padded) gives seq (u64), index (u64), the seven `FrameMeta` floats (f64) and a point
//! (two f64) for `FrameGeometry::to_page`, all little-endian.
//!
//! Invariants:
//! - never panics;
//! - `image_size` is stable under more bytes: once a prefix gives `Known` or `Unknown`, every
//!   longer input with that prefix gives the same answer (the base64 reader decodes growing
//!   prefixes and relies on it); `Known` sizes are within each format's range;
//! - `check_base64_image` accepts exactly non-empty base64-alphabet text with at most two
//!   trailing `=`, not of 4n+1 characters before them, that starts with the base64 of a JPEG,
//!   PNG or WebP magic number;
//! - an accepted frame keeps seq/index/text, its TEXT header announces the text's length, its
//!   kind follows the magic, and its image size is the one `image_size` reads from the whole
//!   decoded image;
//! - an accepted frame has a binary form (its base64 decodes: what compat viewers get as a
//!   frame, extended viewers get too); that form is the WebSocket BINARY header announcing
//!   56 + body bytes, followed by exactly 56 bytes: kind 1, byte 1 == 56, the format, flags 0,
//!   the seq at bytes 4..12 (round-trips), timestamp, image size, meta as f32, reserved 0; the
//!   body is the decoded image; the binary form is built once;
//! - `to_page` of a finite point lands inside the device when the geometry is known.
#![no_main]

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use browser_stream_native::frame::{
    check_base64_image, image_size, Frame, FrameMeta, ImageKind, ImageSize, BINARY_HEADER_LEN,
};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

const KINDS: [ImageKind; 3] = [ImageKind::Jpeg, ImageKind::Png, ImageKind::Webp];

fn check_size_range(size: &ImageSize, kind: ImageKind) {
    if let ImageSize::Known(w, h) = *size {
        let max = match kind {
            ImageKind::Jpeg => 0xFFFF,
            ImageKind::Png => u32::MAX,
            // VP8 14 bits, VP8L 14 bits + 1, VP8X 24 bits + 1.
            ImageKind::Webp => 1 << 24,
        };
        assert!(w <= max && h <= max, "{kind:?} size {w}x{h}");
    }
}

fn check_image_size(bytes: &[u8]) {
    for kind in KINDS {
        let full = image_size(bytes, kind);
        check_size_range(&full, kind);
        // Every prefix for short inputs, else a spread of them.
        let step = (bytes.len() / 256).max(1);
        for end in (0..bytes.len()).step_by(step) {
            let partial = image_size(&bytes[..end], kind);
            if partial != ImageSize::NeedMore {
                assert_eq!(
                    partial,
                    full,
                    "{kind:?}: the first {end} bytes gave {partial:?}, all {} gave {full:?}",
                    bytes.len()
                );
            }
        }
    }
}

fn reference_check(text: &[u8]) -> bool {
    let pads = text.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &text[..text.len() - pads];
    // Padding only where base64 has it: none after whole groups, up to two after 2 leftover
    // characters, one after 3; 4n+1 characters are never base64.
    let padding_fits = match body.len() % 4 {
        0 => pads == 0,
        2 => pads <= 2,
        3 => pads <= 1,
        _ => false,
    };
    !text.is_empty()
        && padding_fits
        && body
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        && [&b"/9j/"[..], b"iVBORw0KGgo", b"UklGR"]
            .iter()
            .any(|magic| text.starts_with(magic))
}

/// Reads `WebSocket` header bytes of a server frame: (fin+opcode byte, payload length, header length).
fn parse_ws_header(head: &[u8]) -> (u8, u64, usize) {
    assert!(head.len() >= 2);
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    match head[1] & 0x7F {
        126 => (head[0], u16::from_be_bytes([head[2], head[3]]) as u64, 4),
        127 => (
            head[0],
            u64::from_be_bytes(head[2..10].try_into().unwrap()),
            10,
        ),
        n => (head[0], n as u64, 2),
    }
}

struct Params {
    seq: u64,
    index: u64,
    meta: FrameMeta,
    point: (f64, f64),
}

fn params(bytes: &[u8]) -> Params {
    let mut padded = [0u8; 8 * 11];
    let n = bytes.len().min(padded.len());
    padded[..n].copy_from_slice(&bytes[..n]);
    let word = |i: usize| u64::from_le_bytes(padded[i * 8..i * 8 + 8].try_into().unwrap());
    let float = |i: usize| f64::from_bits(word(i));
    Params {
        seq: word(0),
        index: word(1),
        meta: FrameMeta {
            device_width: float(2),
            device_height: float(3),
            page_scale_factor: float(4),
            offset_top: float(5),
            scroll_offset_x: float(6),
            scroll_offset_y: float(7),
            timestamp_ms: float(8),
        },
        point: (float(9), float(10)),
    }
}

fn check_frame(text: &[u8], p: &Params) {
    let frame = Frame::from_base64(p.seq, p.index, Bytes::copy_from_slice(text), p.meta);
    assert_eq!(frame.seq, p.seq);
    assert_eq!(frame.index, p.index);
    assert_eq!(&frame.text[..], text);
    let (op, len, header_len) = parse_ws_header(frame.text_header.as_bytes());
    assert_eq!(op, 0x81, "FIN + TEXT");
    assert_eq!(len, text.len() as u64);
    assert_eq!(header_len, frame.text_header.as_bytes().len());
    let kind = if text.starts_with(b"iVBOR") {
        ImageKind::Png
    } else if text.starts_with(b"UklGR") {
        ImageKind::Webp
    } else {
        ImageKind::Jpeg
    };
    assert_eq!(frame.kind, kind);
    let geometry = frame.geometry;
    assert_eq!(
        geometry.device_width.to_bits(),
        p.meta.device_width.to_bits()
    );
    assert_eq!(
        geometry.device_height.to_bits(),
        p.meta.device_height.to_bits()
    );
    assert_eq!(geometry.offset_top.to_bits(), p.meta.offset_top.to_bits());

    let decoded = BASE64.decode(text).ok();
    let binary = frame.binary();
    assert_eq!(
        binary.is_some(),
        decoded.is_some(),
        "binary() vs base64 decode"
    );
    // What compat viewers are sent as a frame, extended viewers must be able to get too.
    assert!(
        binary.is_some(),
        "an accepted frame has no binary form (its base64 does not decode)"
    );
    let (Some(binary), Some(decoded)) = (binary, decoded) else {
        return;
    };
    // The size read from growing prefixes is the size of the whole image.
    let expected = match image_size(&decoded, kind) {
        ImageSize::Known(w, h) => (w, h),
        _ => (0, 0),
    };
    assert_eq!(
        (geometry.image_width, geometry.image_height),
        expected,
        "geometry from the base64 prefix differs from the whole image's size"
    );

    assert_eq!(&binary.body[..], &decoded[..]);
    assert_eq!(binary.head.len(), binary.ws_header_len + BINARY_HEADER_LEN);
    let (op, len, header_len) = parse_ws_header(&binary.head);
    assert_eq!(op, 0x82, "FIN + BINARY");
    assert_eq!(header_len, binary.ws_header_len);
    assert_eq!(len, (BINARY_HEADER_LEN + binary.body.len()) as u64);
    let h = &binary.head[binary.ws_header_len..];
    assert_eq!(h.len(), 56);
    assert_eq!(h[0], 1, "kind: frame");
    assert_eq!(h[1], 56, "header length");
    assert_eq!(h[2], kind as u8);
    assert_eq!(h[3], 0, "flags");
    assert_eq!(u64::from_be_bytes(h[4..12].try_into().unwrap()), p.seq);
    assert_eq!(&h[12..20], &p.meta.timestamp_ms.to_be_bytes());
    assert_eq!(
        u32::from_be_bytes(h[20..24].try_into().unwrap()),
        geometry.image_width
    );
    assert_eq!(
        u32::from_be_bytes(h[24..28].try_into().unwrap()),
        geometry.image_height
    );
    let floats = [
        p.meta.device_width,
        p.meta.device_height,
        p.meta.page_scale_factor,
        p.meta.offset_top,
        p.meta.scroll_offset_x,
        p.meta.scroll_offset_y,
    ];
    for (i, value) in floats.iter().enumerate() {
        assert_eq!(&h[28 + 4 * i..32 + 4 * i], &(*value as f32).to_be_bytes());
    }
    assert_eq!(&h[52..56], &[0, 0, 0, 0], "reserved");
    assert_eq!(
        frame.binary_header(),
        h,
        "binary_header() agrees with the head"
    );
    // Built once, then shared.
    let again = frame.binary().expect("still decodes");
    assert!(std::ptr::eq(again, binary));

    // Input mapping of a finite point stays inside a known device.
    let (x, y) = p.point;
    if x.is_finite() && y.is_finite() {
        let g = geometry;
        let known = g.image_width > 0
            && g.image_height > 0
            && g.device_width > 0.0
            && g.device_height > 0.0
            && g.device_width.is_finite()
            && g.device_height.is_finite()
            && g.offset_top.is_finite();
        let (px, py) = g.to_page(x, y);
        if known {
            assert!(
                (0.0..=g.device_width).contains(&px) && (0.0..=g.device_height).contains(&py),
                "to_page({x}, {y}) = ({px}, {py}) outside {g:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    check_image_size(data);

    let accepted = check_base64_image(text).is_ok();
    assert_eq!(
        accepted,
        reference_check(text),
        "check_base64_image({text:?})"
    );
    if accepted {
        check_frame(text, &params(rest));
    }
});

//! `ws::codec::Decoder` on a client's byte stream, delivered in arbitrary reads.
//!
//! Input layout: `[max_lo, max_hi, n, len_1 .. len_n, stream…]`. `max` (u16, little-endian) is
//! the configured message limit; the stream is fed in chunks of `len_1`…`len_n` bytes (then
//! the rest), draining `next_frame()` after every chunk as the reader task does.
//!
//! Invariants:
//! - never panics;
//! - a text/binary message never exceeds `max`; ping/pong payloads are at most 125 bytes; a
//!   close reason fits its 125-byte frame;
//! - an error maps to close code 1002, 1007 or 1009 (and `TooBig` reports the configured limit);
//! - the result does not depend on how the stream was split into reads (same messages, same
//!   error as when the whole stream arrives at once);
//! - the buffer's capacity stays within what was fed plus one message and one frame header
//!   (with room for the allocator's doubling): an announced length never reserves more.
#![no_main]

use browser_stream_native::ws::codec::{ClientFrame, DecodeError, Decoder};
use libfuzzer_sys::fuzz_target;

/// The most split points taken from the input.
const MAX_SPLITS: usize = 16;
/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

/// Feeds `chunks` one by one, draining after each; stops at the first error.
fn decode(max: usize, chunks: &[&[u8]]) -> (Vec<ClientFrame>, Option<DecodeError>) {
    let mut decoder = Decoder::new(max);
    let mut frames = Vec::new();
    let mut fed = 0usize;
    for chunk in chunks {
        decoder.buffer_mut().extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    check_frame(&frame, max);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(error) => {
                    check_error(&error, max);
                    return (frames, Some(error));
                }
            }
        }
        let capacity = decoder.buffer_mut().capacity();
        let bound = 2 * (fed + max + MAX_HEADER) + 2 * 4096;
        assert!(
            capacity <= bound,
            "decoder buffer capacity {capacity} > {bound} (fed {fed}, max {max})"
        );
    }
    (frames, None)
}

fn check_frame(frame: &ClientFrame, max: usize) {
    match frame {
        ClientFrame::Text(text) => assert!(text.len() <= max, "text of {} > max {max}", text.len()),
        ClientFrame::Binary(data) => {
            assert!(data.len() <= max, "binary of {} > max {max}", data.len())
        }
        ClientFrame::Ping(data) | ClientFrame::Pong(data) => {
            assert!(data.len() <= 125, "control payload of {}", data.len())
        }
        ClientFrame::Close(code, reason) => {
            let payload = if code.is_some() { 2 + reason.len() } else { 0 };
            assert!(payload <= 125, "close payload of {payload}");
            assert!(code.is_some() || reason.is_empty());
        }
    }
}

fn check_error(error: &DecodeError, max: usize) {
    let code = error.close_code();
    assert!(
        matches!(code, 1002 | 1007 | 1009),
        "error {error:?} maps to close code {code}"
    );
    if let DecodeError::TooBig { limit } = error {
        assert_eq!(*limit, max);
    }
    // The reason goes into a close frame (cut to 123 bytes there); it must not be empty.
    assert!(!error.reason().is_empty());
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let max = u16::from_le_bytes([data[0], data[1]]) as usize;
    let splits = (data[2] as usize) % (MAX_SPLITS + 1);
    let rest = &data[3..];
    let splits = splits.min(rest.len());
    let (lengths, mut stream) = rest.split_at(splits);

    let whole = decode(max, &[stream]);

    let mut chunks = Vec::with_capacity(lengths.len() + 1);
    for &len in lengths {
        let len = (len as usize).min(stream.len());
        let (chunk, tail) = stream.split_at(len);
        chunks.push(chunk);
        stream = tail;
    }
    chunks.push(stream);
    let split = decode(max, &chunks);

    assert_eq!(whole, split, "decoding depends on how the stream was split");
});

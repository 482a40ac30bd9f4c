//! RFC 6455 framing, server side: builds the (unmasked) headers the server sends and decodes the
//! (masked) frames a client sends.
//!
//! Owns: byte layouts of WebSocket frames, fragmentation reassembly, the size limit of a client
//! message, and the close codes a framing error maps to. Must not touch sockets, channels or any
//! application message: it is a pure codec so it can be unit-tested and fuzzed on plain bytes.

use bytes::{Buf, Bytes, BytesMut};

/// Continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text data frame (UTF-8 payload).
pub const OP_TEXT: u8 = 0x1;
/// Binary data frame.
pub const OP_BINARY: u8 = 0x2;
/// Close control frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping control frame.
pub const OP_PING: u8 = 0x9;
/// Pong control frame.
pub const OP_PONG: u8 = 0xA;

/// Close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: the server is going away (`registry.close()`, heartbeat timeout).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: the peer broke the WebSocket framing rules.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code: a text message was not valid UTF-8.
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close code: policy violation.
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: a client message exceeded the configured size limit.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: internal server error.
pub const CLOSE_INTERNAL: u16 = 1011;
/// Close code: over capacity, try again later.
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Close code (ours): the viewer's bounded queue of reliable messages overflowed because it
/// does not read; documented in docs/PROTOCOL.md.
pub const CLOSE_SLOW_CONSUMER: u16 = 4001;

/// A prebuilt server→client frame header (FIN set, no mask): at most 10 bytes, built once per
/// frame and shared by every viewer's vectored write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    bytes: [u8; 10],
    len: u8,
}

impl FrameHeader {
    /// Header of a single unfragmented frame of `opcode` carrying `payload_len` bytes.
    pub fn new(opcode: u8, payload_len: usize) -> Self {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x80 | (opcode & 0x0F);
        let len = if payload_len < 126 {
            bytes[1] = payload_len as u8;
            2
        } else if payload_len <= u16::MAX as usize {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        FrameHeader { bytes, len }
    }

    /// The header bytes to write before the payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// One whole server→client frame in a single buffer; used for small messages (JSON, control
/// frames) where a copy is cheaper than a second iovec.
pub fn encode_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let header = FrameHeader::new(opcode, payload.len());
    let mut out = BytesMut::with_capacity(header.as_bytes().len() + payload.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    out.freeze()
}

/// Payload of a close frame: the code, then a UTF-8 reason cut to fit the 125-byte limit.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    payload
}

/// A complete message received from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// A text message (reassembled from fragments if needed), valid UTF-8.
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// A ping; the server answers with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong (answer to our heartbeat ping).
    Pong(Bytes),
    /// The client starts (or answers) the closing handshake.
    Close(Option<u16>, String),
}

/// Why a client's byte stream cannot be decoded; each maps to the close code sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Framing rules broken (unmasked frame, reserved bits, bad opcode, bad fragmentation…).
    Protocol(&'static str),
    /// A message larger than the configured limit (announced length or reassembled size).
    TooBig {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// A text message or close reason that is not UTF-8.
    InvalidUtf8,
}

impl DecodeError {
    /// The close code this error is answered with.
    pub fn close_code(&self) -> u16 {
        match self {
            DecodeError::Protocol(_) => CLOSE_PROTOCOL_ERROR,
            DecodeError::TooBig { .. } => CLOSE_TOO_BIG,
            DecodeError::InvalidUtf8 => CLOSE_INVALID_PAYLOAD,
        }
    }

    /// A short human-readable reason for the close frame.
    pub fn reason(&self) -> String {
        match self {
            DecodeError::Protocol(why) => format!("protocol error: {why}"),
            DecodeError::TooBig { limit } => format!("message too big (limit {limit} bytes)"),
            DecodeError::InvalidUtf8 => "invalid UTF-8 in text message".to_string(),
        }
    }
}

/// Incremental decoder of client frames. Bytes are appended to [`Decoder::buffer_mut`] by the
/// reader; [`Decoder::next_frame`] yields whole messages. It never buffers more than one
/// message of at most `max_message` bytes plus one frame header.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_message: usize,
    fragmented: Option<(u8, BytesMut)>,
}

impl Decoder {
    /// A decoder refusing messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Decoder {
            buf: BytesMut::with_capacity(4096),
            max_message,
            fragmented: None,
        }
    }

    /// The buffer the reader appends received bytes to.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Decodes the next complete message, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<ClientFrame>, DecodeError> {
        loop {
            let Some((fin, opcode, payload)) = self.next_raw_frame()? else {
                return Ok(None);
            };
            match opcode {
                OP_PING => return Ok(Some(ClientFrame::Ping(payload))),
                OP_PONG => return Ok(Some(ClientFrame::Pong(payload))),
                OP_CLOSE => return parse_close(&payload).map(Some),
                OP_TEXT | OP_BINARY => {
                    if self.fragmented.is_some() {
                        return Err(DecodeError::Protocol("new message inside a fragmented one"));
                    }
                    if fin {
                        return finish_message(opcode, payload).map(Some);
                    }
                    self.fragmented = Some((opcode, BytesMut::from(&payload[..])));
                }
                OP_CONTINUATION => {
                    let Some((first_opcode, mut assembled)) = self.fragmented.take() else {
                        return Err(DecodeError::Protocol("continuation without a first frame"));
                    };
                    if assembled.len() + payload.len() > self.max_message {
                        return Err(DecodeError::TooBig {
                            limit: self.max_message,
                        });
                    }
                    assembled.extend_from_slice(&payload);
                    if fin {
                        return finish_message(first_opcode, assembled.freeze()).map(Some);
                    }
                    self.fragmented = Some((first_opcode, assembled));
                }
                _ => return Err(DecodeError::Protocol("reserved opcode")),
            }
        }
    }

    /// Parses one frame (header + unmasked payload) off the buffer if it is complete.
    fn next_raw_frame(&mut self) -> Result<Option<(bool, u8, Bytes)>, DecodeError> {
        let buf = &self.buf[..];
        if buf.len() < 2 {
            return Ok(None);
        }
        let fin = buf[0] & 0x80 != 0;
        if buf[0] & 0x70 != 0 {
            return Err(DecodeError::Protocol(
                "reserved bits set without an extension",
            ));
        }
        let opcode = buf[0] & 0x0F;
        let masked = buf[1] & 0x80 != 0;
        if !masked {
            return Err(DecodeError::Protocol("client frames must be masked"));
        }
        let is_control = opcode & 0x08 != 0;
        let (payload_len, mut offset) = match buf[1] & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4usize)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut len_bytes = [0u8; 8];
                len_bytes.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(len_bytes);
                if len >> 63 != 0 {
                    return Err(DecodeError::Protocol("payload length has its top bit set"));
                }
                (len, 10usize)
            }
            small => (small as u64, 2usize),
        };
        if is_control && (payload_len > 125 || !fin) {
            return Err(DecodeError::Protocol(
                "control frames must be short and unfragmented",
            ));
        }
        let limit = self.max_message as u64;
        let already = self.fragmented.as_ref().map_or(0, |(_, b)| b.len() as u64);
        if !is_control && payload_len.saturating_add(already) > limit {
            // Refuse on the announced length: never buffer a message we will reject.
            return Err(DecodeError::TooBig {
                limit: self.max_message,
            });
        }
        if buf.len() < offset + 4 {
            return Ok(None);
        }
        let mask = [
            buf[offset],
            buf[offset + 1],
            buf[offset + 2],
            buf[offset + 3],
        ];
        offset += 4;
        let payload_len = payload_len as usize;
        if buf.len() < offset + payload_len {
            self.buf.reserve(offset + payload_len - buf.len());
            return Ok(None);
        }
        self.buf.advance(offset);
        let mut payload = self.buf.split_to(payload_len);
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i & 3];
        }
        Ok(Some((fin, opcode, payload.freeze())))
    }
}

fn finish_message(opcode: u8, payload: Bytes) -> Result<ClientFrame, DecodeError> {
    if opcode == OP_TEXT {
        String::from_utf8(payload.to_vec())
            .map(ClientFrame::Text)
            .map_err(|_| DecodeError::InvalidUtf8)
    } else {
        Ok(ClientFrame::Binary(payload))
    }
}

fn parse_close(payload: &[u8]) -> Result<ClientFrame, DecodeError> {
    match payload.len() {
        0 => Ok(ClientFrame::Close(None, String::new())),
        1 => Err(DecodeError::Protocol("close frame with a one-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let reason =
                std::str::from_utf8(&payload[2..]).map_err(|_| DecodeError::InvalidUtf8)?;
            Ok(ClientFrame::Close(Some(code), reason.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a masked client frame, as a browser would send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else if payload.len() <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn decode_all(bytes: &[u8], limit: usize) -> Result<Vec<ClientFrame>, DecodeError> {
        let mut decoder = Decoder::new(limit);
        decoder.buffer_mut().extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(frame) = decoder.next_frame()? {
            out.push(frame);
        }
        Ok(out)
    }

    #[test]
    fn header_lengths_follow_rfc6455() {
        assert_eq!(FrameHeader::new(OP_TEXT, 5).as_bytes(), &[0x81, 5]);
        assert_eq!(
            FrameHeader::new(OP_TEXT, 126).as_bytes(),
            &[0x81, 126, 0, 126]
        );
        assert_eq!(
            FrameHeader::new(OP_BINARY, 70_000).as_bytes(),
            &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]
        );
    }

    #[test]
    fn decodes_masked_text_split_across_reads() {
        let bytes = client_frame(true, OP_TEXT, br#"{"type":"mouse"}"#);
        let mut decoder = Decoder::new(1024);
        for chunk in bytes.chunks(3) {
            decoder.buffer_mut().extend_from_slice(chunk);
            if let Some(frame) = decoder.next_frame().expect("valid frame") {
                assert_eq!(frame, ClientFrame::Text(r#"{"type":"mouse"}"#.into()));
                return;
            }
        }
        panic!("frame never completed");
    }

    #[test]
    fn reassembles_fragments_with_interleaved_ping() {
        let mut bytes = client_frame(false, OP_TEXT, b"hel");
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(true, OP_CONTINUATION, b"lo"));
        let frames = decode_all(&bytes, 1024).expect("valid stream");
        assert_eq!(
            frames,
            vec![
                ClientFrame::Ping(Bytes::from_static(b"p")),
                ClientFrame::Text("hello".into())
            ]
        );
    }

    #[test]
    fn refuses_unmasked_and_reserved_bits() {
        let mut unmasked = client_frame(true, OP_TEXT, b"x");
        unmasked[1] &= 0x7F;
        assert_eq!(
            decode_all(&unmasked, 1024).unwrap_err().close_code(),
            CLOSE_PROTOCOL_ERROR
        );
        let mut rsv = client_frame(true, OP_TEXT, b"x");
        rsv[0] |= 0x40;
        assert_eq!(
            decode_all(&rsv, 1024).unwrap_err().close_code(),
            CLOSE_PROTOCOL_ERROR
        );
        let reserved_opcode = client_frame(true, 0x3, b"x");
        assert!(decode_all(&reserved_opcode, 1024).is_err());
    }

    #[test]
    fn refuses_too_big_from_the_announced_length() {
        // Only the header arrives: the decoder must refuse before the payload is buffered.
        let frame = client_frame(true, OP_TEXT, &vec![b'a'; 10_000]);
        let mut decoder = Decoder::new(1000);
        decoder.buffer_mut().extend_from_slice(&frame[..8]);
        assert_eq!(
            decoder.next_frame().unwrap_err(),
            DecodeError::TooBig { limit: 1000 }
        );
        let mut fragments = client_frame(false, OP_TEXT, &[b'a'; 600]);
        fragments.extend(client_frame(true, OP_CONTINUATION, &[b'a'; 600]));
        assert_eq!(
            decode_all(&fragments, 1000).unwrap_err().close_code(),
            CLOSE_TOO_BIG
        );
    }

    #[test]
    fn control_frame_rules() {
        let long_ping = client_frame(true, OP_PING, &[0; 126]);
        assert!(decode_all(&long_ping, 1024).is_err());
        let fragmented_ping = client_frame(false, OP_PING, b"x");
        assert!(decode_all(&fragmented_ping, 1024).is_err());
        let orphan = client_frame(true, OP_CONTINUATION, b"x");
        assert!(decode_all(&orphan, 1024).is_err());
    }

    #[test]
    fn close_frames_and_invalid_utf8() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let frames = decode_all(&client_frame(true, OP_CLOSE, &payload), 1024).expect("valid");
        assert_eq!(frames, vec![ClientFrame::Close(Some(1000), "bye".into())]);
        assert!(decode_all(&client_frame(true, OP_CLOSE, &[3]), 1024).is_err());
        assert_eq!(
            decode_all(&client_frame(true, OP_TEXT, &[0xFF, 0xFE]), 1024).unwrap_err(),
            DecodeError::InvalidUtf8
        );
    }

    #[test]
    fn close_payload_cuts_on_a_char_boundary() {
        let reason = "é".repeat(100);
        let payload = close_payload(1001, &reason);
        assert!(payload.len() <= 125);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}

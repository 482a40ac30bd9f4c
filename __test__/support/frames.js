'use strict'
// Frame bytes for the tests: real JPEGs tagged with a sequence number (what the fake toolset
// emits), and the wire formats viewers receive them in (compat base64 text, extended binary
// frames with a 56-byte header: docs/PROTOCOL.md).

const fs = require('node:fs')
const path = require('node:path')

const BASE_JPEG = fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'frame-320x240.jpg'))

/**
 * A real JPEG (320x240, from Chromium) carrying `seq` and a timestamp in a COM segment,
 * padded with further COM segments to about `size` bytes.
 */
function jpegFrame(seq, size = 0, timestamp = Date.now()) {
  const tag = Buffer.from(`bsn:seq=${seq};t=${timestamp};`)
  const segments = [comSegment(tag)]
  let total = BASE_JPEG.length + tag.length + 4
  while (total < size) {
    const chunk = Math.min(65533, size - total)
    segments.push(comSegment(Buffer.alloc(chunk, 0x20 + (seq % 64))))
    total += chunk + 4
  }
  return Buffer.concat([BASE_JPEG.subarray(0, 2), ...segments, BASE_JPEG.subarray(2)])
}

function comSegment(payload) {
  const header = Buffer.from([0xff, 0xfe, 0, 0])
  header.writeUInt16BE(payload.length + 2, 2)
  return Buffer.concat([header, payload])
}

/** The `seq` tagged in a frame (base64 string or bytes), or null. */
function frameSeq(data) {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'base64') : data
  const match = /bsn:seq=(\d+);/.exec(bytes.subarray(0, 200).toString('latin1'))
  return match ? Number(match[1]) : null
}

/** The (width, height) of a JPEG from its SOF marker, or null. */
function jpegSize(bytes) {
  let i = 2
  while (i + 9 < bytes.length) {
    if (bytes[i] !== 0xff) return null
    const marker = bytes[i + 1]
    const length = bytes.readUInt16BE(i + 2)
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      return { width: bytes.readUInt16BE(i + 7), height: bytes.readUInt16BE(i + 5) }
    }
    i += 2 + length
  }
  return null
}

const EXTENDED_PROTOCOL = 'browser-stream.v1'
const FRAME_HEADER_BYTES = 56
const IMAGE_FORMATS = { 1: 'jpeg', 2: 'png', 3: 'webp' }

/**
 * Parses a binary frame of the extended protocol (docs/PROTOCOL.md, 56-byte big-endian header,
 * then the image bytes). Throws on a message too short for its header.
 */
function parseFrameMessage(buf) {
  if (buf.length < FRAME_HEADER_BYTES) throw new Error(`binary message of ${buf.length} bytes is shorter than a frame header`)
  const headerLength = buf.readUInt8(1)
  return {
    kind: buf.readUInt8(0),
    headerLength,
    format: buf.readUInt8(2),
    formatName: IMAGE_FORMATS[buf.readUInt8(2)],
    flags: buf.readUInt8(3),
    seq: Number(buf.readBigUInt64BE(4)),
    timestamp: buf.readDoubleBE(12),
    imageWidth: buf.readUInt32BE(20),
    imageHeight: buf.readUInt32BE(24),
    deviceWidth: buf.readFloatBE(28),
    deviceHeight: buf.readFloatBE(32),
    pageScaleFactor: buf.readFloatBE(36),
    offsetTop: buf.readFloatBE(40),
    scrollOffsetX: buf.readFloatBE(44),
    scrollOffsetY: buf.readFloatBE(48),
    reserved: buf.readUInt32BE(52),
    image: buf.subarray(headerLength),
  }
}

module.exports = { BASE_JPEG, jpegFrame, frameSeq, jpegSize, EXTENDED_PROTOCOL, FRAME_HEADER_BYTES, parseFrameMessage }

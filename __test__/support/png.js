'use strict'
// A small PNG reader for the tests' pixel assertions on screenshots (8-bit RGB/RGBA,
// non-interlaced, as Chromium writes them): no image library needed.

const zlib = require('node:zlib')

function paeth(a, b, c) {
  const p = a + b - c
  const pa = Math.abs(p - a)
  const pb = Math.abs(p - b)
  const pc = Math.abs(p - c)
  if (pa <= pb && pa <= pc) return a
  return pb <= pc ? b : c
}

/** Decodes a PNG into `{ width, height, channels, pixels }` (pixels: rows of RGB(A) bytes). */
function decodePng(buffer) {
  if (buffer.readUInt32BE(0) !== 0x89504e47) throw new Error('not a PNG')
  let offset = 8
  let width = 0
  let height = 0
  let channels = 0
  const data = []
  while (offset < buffer.length) {
    const length = buffer.readUInt32BE(offset)
    const type = buffer.toString('latin1', offset + 4, offset + 8)
    const chunk = buffer.subarray(offset + 8, offset + 8 + length)
    if (type === 'IHDR') {
      width = chunk.readUInt32BE(0)
      height = chunk.readUInt32BE(4)
      const depth = chunk[8]
      const color = chunk[9]
      if (depth !== 8 || chunk[12] !== 0 || (color !== 2 && color !== 6)) {
        throw new Error(`unsupported PNG (depth ${depth}, color ${color}, interlace ${chunk[12]})`)
      }
      channels = color === 6 ? 4 : 3
    } else if (type === 'IDAT') {
      data.push(chunk)
    } else if (type === 'IEND') {
      break
    }
    offset += 12 + length
  }
  const raw = zlib.inflateSync(Buffer.concat(data))
  const stride = width * channels
  const pixels = Buffer.alloc(height * stride)
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1))
    for (let x = 0; x < stride; x++) {
      const left = x >= channels ? pixels[y * stride + x - channels] : 0
      const up = y > 0 ? pixels[(y - 1) * stride + x] : 0
      const upLeft = y > 0 && x >= channels ? pixels[(y - 1) * stride + x - channels] : 0
      let value = line[x]
      if (filter === 1) value += left
      else if (filter === 2) value += up
      else if (filter === 3) value += (left + up) >> 1
      else if (filter === 4) value += paeth(left, up, upLeft)
      pixels[y * stride + x] = value & 0xff
    }
  }
  return { width, height, channels, pixels }
}

/** Distinct colours (quantized to 4 bits per channel) and mean brightness of an image. */
function pixelSummary({ width, height, channels, pixels }) {
  const colours = new Set()
  let sum = 0
  for (let i = 0; i < width * height; i++) {
    const r = pixels[i * channels]
    const g = pixels[i * channels + 1]
    const b = pixels[i * channels + 2]
    colours.add(((r >> 4) << 8) | ((g >> 4) << 4) | (b >> 4))
    sum += (r + g + b) / 3
  }
  return { distinctColours: colours.size, meanBrightness: sum / (width * height) }
}

module.exports = { decodePng, pixelSummary }

'use strict'
// WebSocket viewers for the tests: one `Viewer` class for both wires (compat base64 text and
// the extended `browser-stream.v1` binary frames), and raw sockets for viewers `ws` cannot play
// (a hand-written handshake, a socket that never reads).

const WebSocket = require('ws')
const { EXTENDED_PROTOCOL, FRAME_HEADER_BYTES, frameSeq, parseFrameMessage } = require('./frames')
const { waitFor } = require('./wait')

/**
 * A connected WebSocket viewer that records what it receives.
 *
 * Options (the rest go to `ws`: headers, origin, rejectUnauthorized, perMessageDeflate, …):
 * - `extended: true` offers `browser-stream.v1`; `protocols` offers exactly the list given.
 * - `keepFrames: false` keeps no frame (only `frameCount` and `frameSeqs`): for many viewers or
 *   long runs.
 * - `keepImages: false` keeps extended frames as their parsed headers (`image: null`).
 *
 * The wire the server chose (`ws.protocol`) decides what a frame is: on a compat connection
 * every message that is not JSON text (base64 text, kept as the string); on an extended one
 * every binary message (kept parsed, see parseFrameMessage). Recorded:
 * - `json`: every JSON message, parsed; `messages`: every text message as received (frames
 *   only when kept);
 * - `frames` (when kept), `frameCount`, `frameSeqs` (the seq tagged by jpegFrame in each frame,
 *   null for an untagged one; decoded from its first bytes only);
 * - on an extended connection: `textFrames` (non-JSON text, never expected there) and
 *   `badBinary` (binary messages too short for a frame header: not frames, not counted);
 * - `log`: every message in arrival order, `{ json }`, `{ frame }` (frames only when kept) or
 *   `{ text }` (textFrames), so tests can check the relative order of messages and frames;
 * - the connection: `unexpected` (the HTTP answer of a refused upgrade), `error`, `closeCode`,
 *   `opened` (rejected if it closes before opening) and `closed` (resolved once it closed).
 */
class Viewer {
  constructor(url, { extended = false, protocols = extended ? [EXTENDED_PROTOCOL] : undefined, keepFrames = true, keepImages = true, ...options } = {}) {
    this.ws = new WebSocket(url, protocols, options)
    this.keepFrames = keepFrames
    this.keepImages = keepImages
    this.json = []
    this.messages = []
    this.frames = []
    this.frameCount = 0
    this.frameSeqs = []
    this.textFrames = []
    this.badBinary = []
    this.log = []
    this.unexpected = null
    this.error = null
    this.closeCode = null
    this.ws.on('message', (data, isBinary) => this.#receive(data, isBinary))
    this.ws.on('unexpected-response', (req, res) => {
      let body = ''
      res.on('data', (d) => (body += d))
      res.on('end', () => {
        this.unexpected = { status: res.statusCode, headers: res.headers, body }
        // With this listener ws leaves the request open; abort it so the socket closes.
        req.destroy()
        this.ws.terminate()
      })
    })
    this.ws.on('error', (err) => {
      this.error ??= err
    })
    this.closed = new Promise((resolve) =>
      this.ws.once('close', (code) => {
        this.closeCode = code
        resolve()
      }),
    )
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve)
      this.ws.once('close', () =>
        reject(new Error(`closed before open: ${this.error?.message ?? ''} ${JSON.stringify(this.unexpected)}`)),
      )
    })
    this.opened.catch(() => {})
  }

  /** Whether the server chose the extended wire (false before the connection is open). */
  get extended() {
    return this.ws.protocol === EXTENDED_PROTOCOL
  }

  get open() {
    return this.ws.readyState === WebSocket.OPEN
  }

  #receive(data, isBinary) {
    if (!isBinary && data[0] === 0x7b) {
      const text = data.toString('utf8')
      const json = JSON.parse(text)
      this.messages.push(text)
      this.json.push(json)
      this.log.push({ json })
    } else if (!this.extended) {
      // A compat frame (base64 text; a binary message here is kept as its UTF-8 text, so a test
      // comparing frames sees it). Only its first bytes are decoded unless it is kept.
      this.frameCount += 1
      this.frameSeqs.push(frameSeq(data.subarray(0, 300).toString('latin1')))
      if (this.keepFrames) {
        const frame = data.toString('utf8')
        this.messages.push(frame)
        this.frames.push(frame)
        this.log.push({ frame })
      }
    } else if (isBinary) {
      if (data.length < FRAME_HEADER_BYTES) {
        this.badBinary.push(`binary message of ${data.length} bytes is shorter than a frame header`)
        return
      }
      // An extended frame: only its header length and first image bytes are read unless kept.
      this.frameCount += 1
      const imageAt = data.readUInt8(1)
      this.frameSeqs.push(frameSeq(data.subarray(imageAt, imageAt + 200)))
      if (this.keepFrames) {
        const frame = parseFrameMessage(data)
        if (!this.keepImages) frame.image = null
        this.frames.push(frame)
        this.log.push({ frame })
      }
    } else {
      // Non-JSON text on the extended wire (a compat frame): recorded apart, never expected.
      const text = data.toString('utf8')
      this.messages.push(text)
      this.textFrames.push(text)
      this.log.push({ text })
    }
  }

  /**
   * The `{status}` messages. On the extended wire a typed message is never one (session-meta
   * carries a `status` snapshot); on the compat wire, which has no typed messages, every
   * `status` counts, so a stray typed message would show.
   */
  statuses() {
    const extended = this.extended
    return this.json.filter((m) => m.status && !(extended && m.type !== undefined)).map((m) => m.status)
  }
  /** The `session-meta` message (extended), once received. */
  get meta() {
    return this.json.find((m) => m.type === 'session-meta')
  }
  get viewerId() {
    return this.meta?.viewerId
  }
  /** Agent events received (`{type:'event'}` messages). */
  events() {
    return this.json.filter((m) => m.type === 'event')
  }
  /** Error messages, optionally only those named `error`. */
  errors(error) {
    return this.json.filter((m) => m.error && (error === undefined || m.error === error))
  }
  controls() {
    return this.json.filter((m) => m.type === 'control')
  }
  lastFrame() {
    return this.frames[this.frames.length - 1]
  }
  untilMeta(what = 'session-meta') {
    return waitFor(() => this.meta, { what })
  }
  /** Resolves once this viewer was told `{status:'streaming'}`. */
  untilStreaming(what = 'streaming') {
    return waitFor(() => this.statuses().includes('streaming'), { what })
  }
  /** Resolves with the first JSON message matching `predicate` received at index ≥ `from`. */
  waitJson(predicate, { from = 0, ...options } = {}) {
    return waitFor(() => this.json.slice(from).find(predicate), options)
  }
  /** Resolves with the last frame once the viewer holds at least `n` (kept) frames. */
  waitFrames(n, options = {}) {
    return waitFor(() => this.frames.length >= n && this.lastFrame(), { what: `${n} frames`, ...options })
  }
  /**
   * Sends a message the server must answer with `bad_message` and waits for that answer: every
   * message sent before it has then been handled (the server handles a socket's messages in order).
   */
  async barrier(options = {}) {
    const before = this.errors('bad_message').length
    this.send({ type: 'test-barrier' })
    await waitFor(() => this.errors('bad_message').length > before, { what: 'barrier answer', ...options })
  }
  /** Sends a string or bytes as they are, anything else as JSON. */
  send(obj) {
    this.ws.send(typeof obj === 'string' || Buffer.isBuffer(obj) ? obj : JSON.stringify(obj))
  }
  /** Closes (close handshake) and resolves once the socket is closed. */
  close() {
    this.ws.close()
    return this.closed
  }
}

/**
 * Statuses as a viewer is sure to see them: status is latest-wins per viewer, so a
 * `browser_starting` followed at once by the next status may never reach a viewer.
 */
function settledStatuses(statuses) {
  return statuses.filter((status) => status !== 'browser_starting')
}

/**
 * Opens a WebSocket to the stream route by hand (raw TCP, handshake written by hand). Resolves
 * with `{ socket, head }` once the `101` arrived (`head`: the first bytes read, which may
 * already hold frames after the answer).
 */
async function openRawWebSocket(port, agentId, { timeout = 5000 } = {}) {
  const net = require('node:net')
  const crypto = require('node:crypto')
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => {})
  const timer = setTimeout(() => socket.destroy(new Error(`raw viewer: no 101 within ${timeout} ms`)), timeout)
  try {
    await new Promise((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('close', () => reject(new Error('raw viewer: socket closed before connect')))
    })
    const key = crypto.randomBytes(16).toString('base64')
    socket.write(
      `GET /browser/${agentId}/stream HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    )
    const head = await new Promise((resolve, reject) => {
      socket.once('data', resolve)
      socket.once('close', () => reject(new Error('raw viewer: socket closed before the handshake answer')))
    })
    if (!/^HTTP\/1.1 101 /.test(head.toString('latin1'))) {
      throw new Error(`raw viewer: handshake answered ${JSON.stringify(head.toString('latin1').split('\r\n')[0])}`)
    }
    return { socket, head }
  } catch (err) {
    socket.destroy()
    throw err
  } finally {
    clearTimeout(timer)
  }
}

/**
 * A raw WebSocket viewer that never reads after the handshake: the server sees a viewer whose
 * socket buffers fill up. Resolves with the paused socket.
 */
async function stalledViewer(port, agentId, options) {
  const { socket } = await openRawWebSocket(port, agentId, options)
  socket.pause()
  return socket
}

module.exports = { Viewer, settledStatuses, openRawWebSocket, stalledViewer }

'use strict'
// WebSocket viewers for the tests, and raw sockets for viewers `ws` cannot play (a handshake
// written by hand, a socket that never reads).

const WebSocket = require('ws')
const { EXTENDED_PROTOCOL, FRAME_HEADER_BYTES, frameSeq, parseFrameMessage } = require('./frames')
const { waitFor } = require('./wait')

/**
 * Records how a viewer's connection goes: `unexpected` (the HTTP answer of a refused upgrade),
 * `error`, `closeCode`, and the `opened` promise (rejected if it closes before opening).
 */
function trackConnection(viewer) {
  viewer.unexpected = null
  viewer.error = null
  viewer.closeCode = null
  viewer.ws.on('unexpected-response', (req, res) => {
    let body = ''
    res.on('data', (d) => (body += d))
    res.on('end', () => {
      viewer.unexpected = { status: res.statusCode, headers: res.headers, body }
      // With this listener ws leaves the request open; abort it so the socket closes.
      req.destroy()
      viewer.ws.terminate()
    })
  })
  viewer.ws.on('error', (err) => {
    viewer.error ??= err
  })
  viewer.ws.on('close', (code) => {
    viewer.closeCode = code
  })
  viewer.opened = new Promise((resolve, reject) => {
    viewer.ws.once('open', resolve)
    viewer.ws.once('close', () =>
      reject(new Error(`closed before open: ${viewer.error?.message ?? ''} ${JSON.stringify(viewer.unexpected)}`)),
    )
  })
  viewer.opened.catch(() => {})
}

/** A connected WebSocket viewer that records every message. */
class Viewer {
  /** `keepFrames: false` keeps only each frame's tagged seq (in `frameSeqs`), not its data. */
  constructor(url, { keepFrames = true, protocols, ...options } = {}) {
    this.ws = new WebSocket(url, protocols, options)
    this.messages = []
    this.frames = []
    this.frameSeqs = []
    this.frameCount = 0
    this.json = []
    this.ws.on('message', (data, isBinary) => {
      const text = data.toString('utf8')
      if (!isBinary && text.startsWith('{')) {
        this.messages.push(text)
        this.json.push(JSON.parse(text))
        return
      }
      this.frameCount += 1
      if (keepFrames) {
        this.messages.push(text)
        this.frames.push(text)
      } else {
        this.frameSeqs.push(frameSeq(text.slice(0, 300)))
      }
    })
    trackConnection(this)
  }
  statuses() {
    return this.json.filter((m) => m.status).map((m) => m.status)
  }
  /** Resolves once this viewer was told `{status:'streaming'}`. */
  untilStreaming(what = 'streaming') {
    return waitFor(() => this.statuses().includes('streaming'), { what })
  }
  send(obj) {
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj))
  }
  close() {
    this.ws.close()
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) resolve()
      else this.ws.once('close', resolve)
    })
  }
}

/**
 * A WebSocket viewer of the extended protocol (`browser-stream.v1` offered by default). Records
 * JSON messages (`json`), parsed binary frames (`frames`), and every message in arrival order
 * (`log`: `{ json }` or `{ frame }`), so tests can check the relative order of both kinds.
 */
class ExtendedViewer {
  constructor(url, { protocols = [EXTENDED_PROTOCOL], keepImages = true, ...options } = {}) {
    this.ws = new WebSocket(url, protocols, options)
    this.json = []
    this.frames = []
    this.log = []
    this.textFrames = []
    this.badBinary = []
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) {
        let frame
        try {
          frame = parseFrameMessage(data)
        } catch (err) {
          this.badBinary.push(err.message)
          return
        }
        if (!keepImages) frame.image = null
        this.frames.push(frame)
        this.log.push({ frame })
        return
      }
      const text = data.toString('utf8')
      if (text.startsWith('{')) {
        const json = JSON.parse(text)
        this.json.push(json)
        this.log.push({ json })
      } else {
        // A compat (base64 text) frame: recorded apart, never expected in extended mode.
        this.textFrames.push(text)
        this.log.push({ text })
      }
    })
    trackConnection(this)
  }
  /** The `session-meta` message, once received. */
  get meta() {
    return this.json.find((m) => m.type === 'session-meta')
  }
  get viewerId() {
    return this.meta?.viewerId
  }
  get open() {
    return this.ws.readyState === WebSocket.OPEN
  }
  /** The `{status}` messages (not the `status` field of session-meta). */
  statuses() {
    return this.json.filter((m) => m.status && m.type === undefined).map((m) => m.status)
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
  untilStreaming(what = 'streaming') {
    return waitFor(() => this.statuses().includes('streaming'), { what })
  }
  /** Resolves with the first JSON message matching `predicate` received at index ≥ `from`. */
  waitJson(predicate, { from = 0, ...options } = {}) {
    return waitFor(() => this.json.slice(from).find(predicate), options)
  }
  /** Resolves once the viewer holds at least `n` frames. */
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
  send(obj) {
    this.ws.send(typeof obj === 'string' || Buffer.isBuffer(obj) ? obj : JSON.stringify(obj))
  }
  close() {
    this.ws.close()
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) resolve()
      else this.ws.once('close', resolve)
    })
  }
}

/**
 * A WebSocket viewer that keeps no frame data: it counts messages and records the `seq` tagged
 * in each frame (jpegFrame's COM tag), decoding only the first bytes. Compat frames (base64
 * text) and extended frames (binary, 56-byte header) alike.
 */
class CountingViewer {
  constructor(url, { extended = false, ...options } = {}) {
    this.ws = new WebSocket(url, extended ? [EXTENDED_PROTOCOL] : undefined, { perMessageDeflate: false, ...options })
    this.extended = extended
    this.frameCount = 0
    this.frameSeqs = []
    this.json = []
    this.closeCode = null
    this.error = null
    this.ws.on('message', (data, isBinary) => {
      if (!isBinary && data[0] === 0x7b) {
        this.json.push(JSON.parse(data.toString('utf8')))
        return
      }
      this.frameCount += 1
      const head = isBinary ? data.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + 200) : data.subarray(0, 280).toString('latin1')
      this.frameSeqs.push(frameSeq(head))
    })
    this.ws.on('error', (err) => {
      this.error ??= err
    })
    this.ws.on('unexpected-response', (req, res) => {
      this.error ??= new Error(`HTTP ${res.statusCode}`)
      req.destroy()
      this.ws.terminate()
    })
    this.closed = new Promise((resolve) =>
      this.ws.once('close', (code) => {
        this.closeCode = code
        resolve()
      }),
    )
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve)
      this.ws.once('close', () => reject(new Error(`closed before open: ${this.error?.message ?? ''}`)))
    })
    this.opened.catch(() => {})
  }
  statuses() {
    return this.json.filter((m) => m.status && m.type === undefined).map((m) => m.status)
  }
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

module.exports = { Viewer, ExtendedViewer, CountingViewer, settledStatuses, openRawWebSocket, stalledViewer }

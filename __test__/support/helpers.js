'use strict'
// Shared test parts: a real Hono server on @hono/node-server with setupBrowserStream, a fake
// browser toolset of the Mastra shape that emits real JPEG bytes, and WebSocket viewers.

const { EventEmitter } = require('node:events')
const fs = require('node:fs')
const path = require('node:path')
const { Hono } = require('hono')
const { serve } = require('@hono/node-server')
const WebSocket = require('ws')
const { setupBrowserStream } = require('../..')

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

class FakeStream extends EventEmitter {
  constructor(toolset) {
    super()
    this.toolset = toolset
    this.stopped = false
  }
  async stop() {
    if (this.stopped) return
    this.stopped = true
    this.toolset.stops += 1
    this.emit('stop', 'stopped')
  }
}

/**
 * A browser toolset of Mastra's `MastraBrowser` shape, driven by the test. Every call that
 * Mastra gives a thread records it in `threads` (method → threads seen), so tests can check
 * that thread-scoped viewers reach the thread's session.
 */
class FakeToolset {
  constructor({ running = true, url = 'https://example.test/start', scope = 'shared' } = {}) {
    this.running = running
    this.url = url
    this.scope = scope
    this.starts = 0
    this.stops = 0
    this.current = null
    this.readyCallbacks = new Set()
    this.closedCallbacks = new Set()
    this.mouse = []
    this.keys = []
    this.closed = 0
    this.threadsClosed = []
    this.threads = {}
  }
  #saw(method, threadId) {
    ;(this.threads[method] ??= []).push(threadId)
  }
  isBrowserRunning(threadId) {
    this.#saw('isBrowserRunning', threadId)
    return this.running
  }
  hasThreadSession(threadId) {
    this.#saw('hasThreadSession', threadId)
    return this.running
  }
  getScope() {
    return this.scope
  }
  onBrowserReady(callback, threadId) {
    this.#saw('onBrowserReady', threadId)
    this.readyCallbacks.add(callback)
    return () => this.readyCallbacks.delete(callback)
  }
  onBrowserClosed(callback, threadId) {
    this.#saw('onBrowserClosed', threadId)
    this.closedCallbacks.add(callback)
    return () => this.closedCallbacks.delete(callback)
  }
  launch() {
    this.running = true
    for (const callback of this.readyCallbacks) callback()
  }
  /** The browser goes away from outside (Mastra calls the closed callbacks). */
  externalClose() {
    this.running = false
    for (const callback of this.closedCallbacks) callback()
  }
  async startScreencastIfBrowserActive(options) {
    this.#saw('startScreencastIfBrowserActive', options?.threadId)
    if (!this.running) return null
    return this.startScreencast(options)
  }
  async startScreencast() {
    this.starts += 1
    this.current = new FakeStream(this)
    return this.current
  }
  /** Emits frame `seq` on the current stream; returns its base64 data. */
  emitFrame(seq, { size = 0, width = 1280, height = 720 } = {}) {
    const data = jpegFrame(seq, size).toString('base64')
    this.current?.emit('frame', {
      data,
      timestamp: Date.now(),
      viewport: { width, height, offsetTop: 0, scrollOffsetX: 0, scrollOffsetY: 0, pageScaleFactor: 1 },
      sessionId: 1,
    })
    return data
  }
  getCurrentUrl(threadId) {
    this.#saw('getCurrentUrl', threadId)
    return this.url
  }
  async injectMouseEvent(event, threadId) {
    this.#saw('injectMouseEvent', threadId)
    this.mouse.push(event)
  }
  async injectKeyboardEvent(event, threadId) {
    this.#saw('injectKeyboardEvent', threadId)
    this.keys.push(event)
  }
  async closeThreadSession(threadId) {
    this.threadsClosed.push(threadId)
    await this.current?.stop()
  }
  /** Closes the whole browser; like a real MastraBrowser it then calls the closed callbacks. */
  async close() {
    this.closed += 1
    this.running = false
    await this.current?.stop()
    for (const callback of this.closedCallbacks) callback()
  }
}

/**
 * Starts a Hono app on @hono/node-server with setupBrowserStream. `configure(app)` may add
 * middleware before the stream routes are registered.
 */
async function startServer(config = {}, { configure, createServer, serverOptions } = {}) {
  const app = new Hono()
  configure?.(app)
  app.get('/health', (c) => c.json({ ok: true }))
  const { injectWebSocket, registry } = setupBrowserStream(app, { lingerMs: 100, ...config })
  const server = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1', createServer, serverOptions }, () => resolve(s))
  })
  injectWebSocket(server)
  const { port } = server.address()
  const scheme = createServer ? 'wss' : 'ws'
  return {
    app,
    server,
    registry,
    port,
    url: (agentId, query = '') => `${scheme}://127.0.0.1:${port}/browser/${agentId}/stream${query}`,
    async close() {
      await registry.close()
      server.closeAllConnections?.()
      await new Promise((resolve) => server.close(() => resolve()))
    },
  }
}

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

/** What viewers are told with each source error code (a fixed text; details go to the log). */
const VIEWER_ERROR_TEXT = Object.freeze({
  screencast_failed: "the browser's screencast could not be started",
  browser_crashed: 'the browser stopped responding',
})

/** A `logger` for setupBrowserStream that keeps every line, for tests of what is logged. */
function logCapture() {
  const lines = []
  const keep = (...args) => lines.push(args.map(String).join(' '))
  return {
    logger: { info: keep, warn: keep, error: keep },
    lines,
    has: (pattern) => lines.some((line) => pattern.test(line)),
  }
}

/**
 * Statuses as a viewer is sure to see them: status is latest-wins per viewer, so a
 * `browser_starting` followed at once by the next status may never reach a viewer.
 */
function settledStatuses(statuses) {
  return statuses.filter((status) => status !== 'browser_starting')
}

async function waitFor(predicate, { timeout = 5000, interval = 10, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout
  for (;;) {
    const value = await predicate()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, interval))
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

module.exports = {
  jpegFrame,
  frameSeq,
  FakeToolset,
  FakeStream,
  startServer,
  Viewer,
  ExtendedViewer,
  parseFrameMessage,
  EXTENDED_PROTOCOL,
  FRAME_HEADER_BYTES,
  waitFor,
  sleep,
  BASE_JPEG,
}

// ---- added for the load tests (__test__/load.test.js, __test__/support/churn.js) ----------------------

/**
 * Forces a full garbage collection: `global.gc` when node runs with --expose-gc, else a `gc`
 * function obtained by turning the flag on at run time. Returns false if neither works.
 */
function forceGc() {
  if (typeof global.gc === 'function') {
    global.gc()
    return true
  }
  try {
    require('node:v8').setFlagsFromString('--expose-gc')
    const gc = require('node:vm').runInNewContext('gc')
    if (typeof gc === 'function') {
      global.gc = gc
      gc()
      return true
    }
  } catch {
    // Not available: callers report RSS without a forced collection.
  }
  return false
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

Object.assign(module.exports, { VIEWER_ERROR_TEXT, logCapture, settledStatuses, forceGc, stalledViewer, openRawWebSocket, jpegSize, CountingViewer })

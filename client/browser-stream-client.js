// Browser client of the browser-stream wire (no framework, an ES module for browsers).
// Connects to `GET /browser/:agentId/stream`, decodes frames off the main path with
// createImageBitmap (a frame that arrives while one is decoding replaces the waiting one, so
// a slow tab shows the newest frame instead of a backlog), reports status, URL, viewport and
// fps, relays input, and reconnects with capped exponential backoff and jitter.
//
// With `extended: true` it speaks `browser-stream.v1` (docs/PROTOCOL.md): binary frames with
// their sequence number and geometry, agent events (deduplicated by sequence number), resume
// after a reconnect, control requests, and input in frame pixels.
//
//   const client = new BrowserStreamClient(url, { extended: true, onFrame(bitmap, info) {…} })
//   client.connect()

const JPEG_PREFIX = '/9j/'
const EXTENDED_PROTOCOL = 'browser-stream.v1'
const FORMATS = { 1: 'image/jpeg', 2: 'image/png', 3: 'image/webp' }

/** The header of an extended-mode frame (56 bytes, big-endian), or null if it is not one. */
export function parseFrameHeader(buffer) {
  if (buffer.byteLength < 56) return null
  const view = new DataView(buffer)
  if (view.getUint8(0) !== 1) return null
  const headerLength = view.getUint8(1)
  if (headerLength < 56 || headerLength > buffer.byteLength) return null
  return {
    headerLength,
    type: FORMATS[view.getUint8(2)] ?? 'image/jpeg',
    seq: Number(view.getBigUint64(4)),
    timestamp: view.getFloat64(12),
    imageWidth: view.getUint32(20),
    imageHeight: view.getUint32(24),
    deviceWidth: view.getFloat32(28),
    deviceHeight: view.getFloat32(32),
    pageScaleFactor: view.getFloat32(36),
    offsetTop: view.getFloat32(40),
    scrollOffsetX: view.getFloat32(44),
    scrollOffsetY: view.getFloat32(48),
  }
}

/** base64 text → bytes (atob is fine for frame sizes; it runs once per frame shown). */
function base64Bytes(text) {
  const binary = atob(text)
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  return bytes
}

export class BrowserStreamClient {
  /**
   * @param {string} url ws(s)://host/browser/:agentId/stream
   * @param {object} [handlers]
   * @param {(bitmap: ImageBitmap, info: {width: number, height: number, bytes: number, receivedAt: number}) => void} [handlers.onFrame]
   *   receives each decoded frame; the client closes the bitmap after the call
   * @param {(status: string) => void} [handlers.onStatus] connected, browser_starting, streaming, browser_closed, plus the client's own: connecting, reconnecting, closed
   * @param {(url: string) => void} [handlers.onUrl]
   * @param {(viewport: {width: number, height: number}) => void} [handlers.onViewport]
   * @param {(error: {error: string, message: string}) => void} [handlers.onError]
   * @param {(message: object) => void} [handlers.onMessage] any other JSON message
   * @param {boolean} [handlers.extended] speak `browser-stream.v1` (binary frames, events, control)
   * @param {(event: object, seq: number) => void} [handlers.onEvent] extended: an agent event, once per seq
   * @param {(meta: object) => void} [handlers.onSession] extended: the `session-meta` of each connection
   * @param {(control: {controller: number | null, you: boolean}) => void} [handlers.onControl] extended: control changed
   * @param {{initialMs?: number, maxMs?: number, factor?: number}} [handlers.backoff]
   * @param {typeof WebSocket} [handlers.WebSocket] for tests outside a browser
   */
  constructor(url, handlers = {}) {
    this.url = url
    this.handlers = handlers
    this.backoff = { initialMs: 500, maxMs: 10_000, factor: 2, ...(handlers.backoff ?? {}) }
    this.WebSocketImpl = handlers.WebSocket ?? globalThis.WebSocket
    this.socket = null
    this.closedByUser = false
    this.attempt = 0
    this.reconnectTimer = null
    this.decoding = false
    this.waiting = null
    this.frameTimes = []
    this.stats = { frames: 0, framesDropped: 0, bytes: 0, reconnects: 0, fps: 0, width: 0, height: 0 }
    this.extended = handlers.extended === true
    /** Extended: the newest frame sequence number received. */
    this.lastSeq = null
    /**
     * Extended: the newest event processed (duplicates around a resume are dropped), or before
     * any event the first `session-meta`'s seq; this is what `resume` sends.
     */
    this.lastEventSeq = null
    /** Extended: acknowledge each frame once decoded (set by `configure({ack: true})`). */
    this.autoAck = false
    /** Extended: this connection's `session-meta`, and whether this viewer holds control. */
    this.session = null
    this.hasControl = false
  }

  connect() {
    this.closedByUser = false
    this.#open()
    return this
  }

  /** Closes for good (no reconnect). */
  close() {
    this.closedByUser = true
    clearTimeout(this.reconnectTimer)
    this.socket?.close(1000, 'bye')
    this.#status('closed')
  }

  /** Sends a mouse or keyboard message (`{type:'mouse', …}`); false when not connected. */
  send(message) {
    if (this.socket?.readyState !== 1) return false
    this.socket.send(JSON.stringify(message))
    return true
  }

  /** Extended: asks for control of the page (answer: onControl, or onError `control_busy`). */
  requestControl() {
    return this.send({ type: 'control-request' })
  }

  /** Extended: gives control up. */
  releaseControl() {
    return this.send({ type: 'control-release' })
  }

  /**
   * Extended: input for the page. `kind` is `mouse` (x, y in pixels of the frame image shown),
   * `key` or `text`; fields as in docs/PROTOCOL.md.
   */
  input(kind, fields) {
    return this.send({ type: 'input', kind, ...fields })
  }

  /**
   * Extended: frame-rate cap and/or ack pacing for this viewer. With `ack: true` the client
   * acknowledges each frame once it is decoded, so the server keeps one frame in flight.
   */
  configure({ maxFps, ack } = {}) {
    if (typeof ack === 'boolean') this.autoAck = ack
    return this.send({ type: 'config', maxFps, ack })
  }

  /** Extended: acknowledges frame `seq` (ack pacing; `configure({ack: true})` does it for you). */
  ack(seq) {
    return this.send({ type: 'ack', seq })
  }

  /** Extended: asks for the newest frame now. */
  snapshot() {
    return this.send({ type: 'snapshot-request' })
  }

  /** The delay before reconnect attempt `n` (1-based): capped exponential, full jitter. */
  static backoffDelay(n, { initialMs = 500, maxMs = 10_000, factor = 2 } = {}, random = Math.random) {
    const ceiling = Math.min(maxMs, initialMs * factor ** Math.max(0, n - 1))
    return Math.round(ceiling / 2 + (random() * ceiling) / 2)
  }

  #open() {
    this.#status(this.attempt === 0 ? 'connecting' : 'reconnecting')
    const socket = this.extended ? new this.WebSocketImpl(this.url, [EXTENDED_PROTOCOL]) : new this.WebSocketImpl(this.url)
    socket.binaryType = 'arraybuffer'
    this.socket = socket
    socket.onopen = () => {
      this.attempt = 0
      // After a reconnect, ask for the events missed meanwhile.
      if (this.extended && this.lastEventSeq !== null) this.send({ type: 'resume', lastSeq: this.lastEventSeq })
      if (this.extended && this.autoAck) this.send({ type: 'config', ack: true })
    }
    socket.onmessage = (event) => this.#onMessage(event.data)
    socket.onclose = () => {
      if (this.socket !== socket) return
      this.socket = null
      if (this.closedByUser) return
      this.attempt += 1
      this.stats.reconnects += 1
      const delay = BrowserStreamClient.backoffDelay(this.attempt, this.backoff)
      this.#status('reconnecting')
      this.reconnectTimer = setTimeout(() => this.#open(), delay)
    }
    socket.onerror = () => {}
  }

  #onMessage(data) {
    if (typeof data === 'string') {
      if (data.startsWith('{')) return this.#onJson(data)
      return this.#onFrame(data, (data.length * 3) / 4)
    }
    if (this.extended) {
      // Binary messages of other kinds (later versions) are skipped, never shown as images.
      const header = parseFrameHeader(data)
      if (!header) return
      if (this.lastSeq === null || header.seq > this.lastSeq) this.lastSeq = header.seq
      return this.#onFrame(new Uint8Array(data, header.headerLength), data.byteLength, header)
    }
    this.#onFrame(new Uint8Array(data), data.byteLength)
  }

  #onJson(text) {
    let message
    try {
      message = JSON.parse(text)
    } catch {
      return
    }
    if (message.type === 'event') {
      if (this.lastEventSeq !== null && message.seq <= this.lastEventSeq) return
      this.lastEventSeq = message.seq
      this.handlers.onEvent?.(message.event, message.seq)
      return
    }
    if (message.type === 'session-meta') {
      this.session = message
      // Before any event, resume from the start of the first connection.
      if (this.lastEventSeq === null && typeof message.seq === 'number') this.lastEventSeq = message.seq
      this.hasControl = message.controller !== null && message.controller === message.viewerId
      this.handlers.onSession?.(message)
      return
    }
    if (message.type === 'control') {
      this.hasControl = message.you === true
      this.handlers.onControl?.({ controller: message.controller, you: message.you })
      return
    }
    if (typeof message.status === 'string') this.#status(message.status)
    else if (typeof message.url === 'string') this.handlers.onUrl?.(message.url)
    else if (message.viewport) this.handlers.onViewport?.(message.viewport)
    else if (typeof message.error === 'string') this.handlers.onError?.(message)
    else this.handlers.onMessage?.(message)
  }

  #onFrame(data, bytes, header = null) {
    const frame = { data, bytes, header, receivedAt: performance.now() }
    if (this.decoding) {
      if (this.waiting) this.stats.framesDropped += 1
      this.waiting = frame
      return
    }
    void this.#decode(frame)
  }

  async #decode(frame) {
    this.decoding = true
    try {
      const bytes = typeof frame.data === 'string' ? base64Bytes(frame.data) : frame.data
      const type = frame.header?.type ?? (typeof frame.data === 'string' && !frame.data.startsWith(JPEG_PREFIX) ? '' : 'image/jpeg')
      const bitmap = await createImageBitmap(new Blob([bytes], { type }))
      this.#count(frame, bitmap)
      try {
        const info = { width: bitmap.width, height: bitmap.height, bytes: frame.bytes, receivedAt: frame.receivedAt }
        this.handlers.onFrame?.(bitmap, frame.header ? { ...frame.header, ...info } : info)
      } finally {
        bitmap.close()
      }
    } catch {
      this.stats.framesDropped += 1
    } finally {
      // Acked even when it could not be shown, or ack pacing would stop the stream.
      if (frame.header && this.autoAck) this.ack(frame.header.seq)
      this.decoding = false
      const next = this.waiting
      this.waiting = null
      if (next) void this.#decode(next)
    }
  }

  #count(frame, bitmap) {
    const now = performance.now()
    this.frameTimes.push(now)
    while (this.frameTimes.length && this.frameTimes[0] < now - 1000) this.frameTimes.shift()
    this.stats.fps = this.frameTimes.length
    this.stats.frames += 1
    this.stats.bytes += frame.bytes
    this.stats.width = bitmap.width
    this.stats.height = bitmap.height
  }

  #status(status) {
    this.handlers.onStatus?.(status)
  }
}

// Browser client of the browser-stream wire (no framework, an ES module for browsers).
// Connects to `GET /browser/:agentId/stream`, decodes frames off the main path with
// createImageBitmap (a frame that arrives while one is decoding replaces the waiting one, so
// a slow tab shows the newest frame instead of a backlog), reports status, URL, viewport and
// fps, relays input, and reconnects with capped exponential backoff and jitter.
//
//   const client = new BrowserStreamClient(url, { onFrame(bitmap, info) {…}, onStatus(s) {…} })
//   client.connect()

const JPEG_PREFIX = '/9j/'

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

  /** The delay before reconnect attempt `n` (1-based): capped exponential, full jitter. */
  static backoffDelay(n, { initialMs = 500, maxMs = 10_000, factor = 2 } = {}, random = Math.random) {
    const ceiling = Math.min(maxMs, initialMs * factor ** Math.max(0, n - 1))
    return Math.round(ceiling / 2 + (random() * ceiling) / 2)
  }

  #open() {
    this.#status(this.attempt === 0 ? 'connecting' : 'reconnecting')
    const socket = new this.WebSocketImpl(this.url)
    socket.binaryType = 'arraybuffer'
    this.socket = socket
    socket.onopen = () => {
      this.attempt = 0
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
    this.#onFrame(new Uint8Array(data), data.byteLength)
  }

  #onJson(text) {
    let message
    try {
      message = JSON.parse(text)
    } catch {
      return
    }
    if (typeof message.status === 'string') this.#status(message.status)
    else if (typeof message.url === 'string') this.handlers.onUrl?.(message.url)
    else if (message.viewport) this.handlers.onViewport?.(message.viewport)
    else if (typeof message.error === 'string') this.handlers.onError?.(message)
    else this.handlers.onMessage?.(message)
  }

  #onFrame(data, bytes) {
    const frame = { data, bytes, receivedAt: performance.now() }
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
      const type = typeof frame.data === 'string' && !frame.data.startsWith(JPEG_PREFIX) ? '' : 'image/jpeg'
      const bitmap = await createImageBitmap(new Blob([bytes], { type }))
      this.#count(frame, bitmap)
      try {
        this.handlers.onFrame?.(bitmap, { width: bitmap.width, height: bitmap.height, bytes: frame.bytes, receivedAt: frame.receivedAt })
      } finally {
        bitmap.close()
      }
    } catch {
      this.stats.framesDropped += 1
    } finally {
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

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
// `mode` picks what is streamed: 'webrtc' (the server's H.264 over a WebRTC peer connection,
// played in the `video` element given; signalled over this WebSocket), 'video' (H.264 over the
// WebSocket, decoded with WebCodecs' VideoDecoder), 'jpeg' (binary JPEG frames), 'compat'
// (base64 text, the Mastra wire) or 'auto' (the default with `extended: true`), which walks
// that chain: WebRTC when the server offers it and a picture arrives within `webrtcTimeoutMs`,
// else video when a real decode of a probe keyframe succeeds here, else JPEG, else — a server
// that does not speak browser-stream.v1 — compat. A step that fails later falls to the next.
// `client.mode` and `onMode` report the mode and why.
//
//   const client = new BrowserStreamClient(url, { extended: true, onFrame(picture, info) {…} })
//   client.connect()

const JPEG_PREFIX = '/9j/'
const EXTENDED_PROTOCOL = 'browser-stream.v1'
const FORMATS = { 1: 'image/jpeg', 2: 'image/png', 3: 'image/webp', 16: 'video/h264' }
/** Message kinds of the binary header: a frame (an image) and a video chunk. */
const KIND_FRAME = 1
const KIND_VIDEO = 2
const FLAG_KEY = 1
const FLAG_REFINE = 2
/** Codec strings offered for video, in order of preference (the server sends Constrained Baseline). */
export const VIDEO_CODECS = ['avc1.42E01F', 'avc1.42E028', 'avc1.640028']
/**
 * A 16×16 grey H.264 keyframe (Constrained Baseline, Annex B, made by the server's encoder):
 * decoding it is the probe, since `isConfigSupported` can say yes where decoding then fails.
 */
const PROBE_CODEC = 'avc1.42d00b'
const PROBE_KEYFRAME = 'AAAAAWdC0AuMacmoCAgIPCIRqAAAAAFozjyAAAAAAWW4AAQJ5PA='
/** Chunks waiting in the decoder beyond which the client drops to the next keyframe. */
const MAX_DECODE_QUEUE = 30
/** How long the probe may take before video counts as unsupported. */
const PROBE_TIMEOUT_MS = 2000
/** How long a WebRTC attempt may take to show its first picture before the next mode is used. */
export const WEBRTC_TIMEOUT_MS = 5000
const MODES = ['auto', 'webrtc', 'video', 'jpeg', 'compat']
/** Answers to an offer that end the WebRTC attempt. */
const WEBRTC_ERRORS = ['webrtc_unavailable', 'webrtc_busy', 'bad_sdp', 'unsupported_codec', 'video_failed']

/**
 * Whether this browser decodes H.264 with WebCodecs: a real decode of a probe keyframe, not
 * only `isConfigSupported`. Resolves `{ ok, reason }`.
 */
export async function probeVideoDecode({ timeoutMs = PROBE_TIMEOUT_MS } = {}) {
  if (typeof globalThis.VideoDecoder !== 'function' || typeof globalThis.EncodedVideoChunk !== 'function') {
    return { ok: false, reason: 'no WebCodecs VideoDecoder' }
  }
  try {
    const support = await VideoDecoder.isConfigSupported({ codec: PROBE_CODEC, optimizeForLatency: true })
    if (!support.supported) return { ok: false, reason: 'H.264 is not supported by VideoDecoder' }
  } catch (error) {
    return { ok: false, reason: `isConfigSupported failed: ${error?.message ?? error}` }
  }
  return new Promise((resolve) => {
    let done = false
    const finish = (result, decoder) => {
      if (done) return
      done = true
      clearTimeout(timer)
      try {
        if (decoder.state !== 'closed') decoder.close()
      } catch {}
      resolve(result)
    }
    const decoder = new VideoDecoder({
      output: (frame) => {
        const ok = frame.displayWidth === 16 && frame.displayHeight === 16
        frame.close()
        finish(ok ? { ok: true, reason: 'decoded a probe keyframe' } : { ok: false, reason: 'the probe decoded to a wrong size' }, decoder)
      },
      error: (error) => finish({ ok: false, reason: `decode failed: ${error?.message ?? error}` }, decoder),
    })
    const timer = setTimeout(() => finish({ ok: false, reason: 'the probe decode timed out' }, decoder), timeoutMs)
    try {
      decoder.configure({ codec: PROBE_CODEC, optimizeForLatency: true })
      decoder.decode(new EncodedVideoChunk({ type: 'key', timestamp: 0, data: base64Bytes(PROBE_KEYFRAME) }))
      decoder.flush().catch(() => {})
    } catch (error) {
      finish({ ok: false, reason: `decode failed: ${error?.message ?? error}` }, decoder)
    }
  })
}

/**
 * The header of an extended-mode binary message (56 bytes, big-endian): a frame (`kind: 1`)
 * or a video chunk (`kind: 2`, with `key` and `refine`); null for anything else.
 */
export function parseFrameHeader(buffer) {
  if (buffer.byteLength < 56) return null
  const view = new DataView(buffer)
  const kind = view.getUint8(0)
  if (kind !== KIND_FRAME && kind !== KIND_VIDEO) return null
  const headerLength = view.getUint8(1)
  if (headerLength < 56 || headerLength > buffer.byteLength) return null
  const flags = view.getUint8(3)
  return {
    headerLength,
    kind: kind === KIND_VIDEO ? 'video' : 'frame',
    key: kind === KIND_VIDEO && (flags & FLAG_KEY) !== 0,
    refine: kind === KIND_VIDEO && (flags & FLAG_REFINE) !== 0,
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
    /** Video: the chunk's number in its stream (a gap before a delta means it cannot decode). */
    number: kind === KIND_VIDEO ? view.getUint32(52) : 0,
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
   * @param {(picture: ImageBitmap | VideoFrame, info: {width: number, height: number, bytes: number, receivedAt: number}) => void} [handlers.onFrame]
   *   receives each decoded picture (an ImageBitmap, a VideoFrame in video mode, the video element in webrtc
   *   mode; all draw with `drawImage`); the client closes bitmaps and frames after the call
   * @param {(status: string) => void} [handlers.onStatus] connected, browser_starting, streaming, browser_closed, plus the client's own: connecting, reconnecting, closed
   * @param {(url: string) => void} [handlers.onUrl]
   * @param {(viewport: {width: number, height: number}) => void} [handlers.onViewport]
   * @param {(error: {error: string, message: string}) => void} [handlers.onError]
   * @param {(message: object) => void} [handlers.onMessage] any other JSON message
   * @param {boolean} [handlers.extended] speak `browser-stream.v1` (binary frames, events, control)
   * @param {'auto'|'webrtc'|'video'|'jpeg'|'compat'} [handlers.mode] what to stream (default 'auto' when extended, else 'compat')
   * @param {HTMLVideoElement} [handlers.video] where WebRTC plays (in the document, not display:none); without it
   *   WebRTC is skipped. Each picture it presents is also passed to `onFrame` (the element itself)
   * @param {number} [handlers.webrtcTimeoutMs] how long WebRTC may take to show a picture (default 5000)
   * @param {(mode: string, reason: string) => void} [handlers.onMode] the mode in use changed, and why
   * @param {(event: object, seq: number) => void} [handlers.onEvent] extended: an agent event, once per seq
   * @param {(meta: object) => void} [handlers.onSession] extended: the `session-meta` of each connection
   * @param {(control: {controller: number | null, you: boolean, reason?: string}) => void} [handlers.onControl] extended: control changed (`reason` when the server or the deployer ended it: `idle`, `controller_left`, or the deployer's)
   * @param {(to: number) => void} [handlers.onReplyOk] extended: a `reply(to, …)` reached the deployer
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
    this.stats = { frames: 0, videoFrames: 0, webrtcFrames: 0, framesDropped: 0, bytes: 0, reconnects: 0, fps: 0, width: 0, height: 0, bitrate: 0, mode: null }
    /** (time, bytes) of what arrived in the last second: the bitrate. */
    this.byteTimes = []
    this.requestedMode = handlers.mode ?? (handlers.extended === true ? 'auto' : 'compat')
    if (!MODES.includes(this.requestedMode)) throw new TypeError(`unknown mode ${this.requestedMode}`)
    /** WebRTC: the element it plays in, the peer connection, whether a picture showed, and
     * why WebRTC failed (kept, so 'auto' does not try again on every reconnect; `setMode` clears it). */
    this.videoElement = handlers.video ?? null
    this.webrtcTimeoutMs = handlers.webrtcTimeoutMs ?? WEBRTC_TIMEOUT_MS
    this.pc = null
    this.webrtcShowing = false
    this.webrtcFailed = null
    this.webrtcTimer = null
    this.webrtcStatsTimer = null
    this.extended = this.requestedMode !== 'compat'
    /** The mode in use: 'webrtc', 'video', 'jpeg' or 'compat' (null before the first connect). */
    this.mode = null
    /** Video: the decoder, its configuration, and the headers of chunks being decoded (by the
     * decoder timestamp given to each, a counter: capture times can repeat). */
    this.decoder = null
    this.decoderConfig = null
    this.pendingChunks = new Map()
    this.chunkCounter = 0
    /** Video: number of the last chunk given to the decoder; deltas after a gap are dropped
     * until a keyframe (`waitingKey`). */
    this.lastChunkNumber = null
    this.waitingKey = true
    /** Video: the newest sequence number drawn from video (older JPEG frames are not shown). */
    this.videoSeq = null
    /** Video: the decode probe's answer, once it ran. */
    this.videoProbe = null
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
    /** Extended: the token to take control back with after a dropped connection (the holder's). */
    this.reclaimToken = null
  }

  connect() {
    this.closedByUser = false
    this.#open()
    return this
  }

  /**
   * Switches what is streamed: 'webrtc', 'video', 'jpeg', 'compat' or 'auto'. Among the first
   * three the connection stays; to or from compat it reconnects (another subprotocol).
   */
  setMode(mode) {
    if (!MODES.includes(mode)) throw new TypeError(`unknown mode ${mode}`)
    this.requestedMode = mode
    this.webrtcFailed = null
    const extended = mode !== 'compat'
    if (extended !== this.extended) {
      this.extended = extended
      this.#closeDecoder()
      this.#closePeer(false)
      const socket = this.socket
      this.socket = null
      socket?.close(1000, 'mode change')
      clearTimeout(this.reconnectTimer)
      this.attempt = 0
      this.#open()
      return
    }
    if (this.socket?.readyState === 1) void this.#chooseMode()
  }

  /** Closes for good (no reconnect). */
  close() {
    this.closedByUser = true
    clearTimeout(this.reconnectTimer)
    this.#closePeer(false)
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

  /**
   * Extended: answers the agent event numbered `to` (e.g. a `permission_request`) with
   * `answer` (any JSON value, at most 16 KiB). Acknowledged by `onReplyOk(to)`; refusals come
   * to `onError` (`reply_denied`, `reply_unavailable`, `bad_reply`, `bad_message`).
   */
  reply(to, answer) {
    return this.send({ type: 'reply', to, reply: answer })
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
    let opened = false
    socket.onopen = () => {
      opened = true
      this.attempt = 0
      // After a reconnect, ask for the events missed meanwhile.
      if (this.extended && this.lastEventSeq !== null) this.send({ type: 'resume', lastSeq: this.lastEventSeq })
      // A controller whose connection dropped takes control back within the server's grace
      // period (`controlGraceMs`) with the token it was given (kept until a `control` message
      // says it lost control); a spent token is an ordinary request.
      if (this.extended && this.reclaimToken) this.send({ type: 'control-request', reclaim: this.reclaimToken })
      if (this.extended && this.autoAck) this.send({ type: 'config', ack: true })
      // Extended: the mode is chosen on `session-meta` (it says whether WebRTC is offered).
      if (!this.extended) this.#setMode('compat', this.requestedMode === 'auto' ? 'the server does not speak browser-stream.v1' : 'compat wire requested')
    }
    socket.onmessage = (event) => this.#onMessage(event.data)
    socket.onclose = () => {
      if (this.socket !== socket) return
      this.socket = null
      this.#closeDecoder()
      // The server ends the peer with the connection.
      this.#closePeer(false)
      if (this.closedByUser) return
      // 'auto': a server that does not speak browser-stream.v1 (Mastra's own, say) fails the
      // handshake, so the next attempt is compat; a compat attempt that fails too tries the
      // extended wire again (the server may just have been down).
      if (!opened && this.requestedMode === 'auto') this.extended = !this.extended
      this.attempt += 1
      this.stats.reconnects += 1
      const delay = BrowserStreamClient.backoffDelay(this.attempt, this.backoff)
      this.#status('reconnecting')
      this.reconnectTimer = setTimeout(() => this.#open(), delay)
    }
    socket.onerror = () => {}
  }

  /** Walks the mode chain for this connection: WebRTC when wanted and possible, else the socket. */
  async #chooseMode() {
    const wanted = this.requestedMode
    if (wanted === 'webrtc' || (wanted === 'auto' && this.webrtcFailed === null)) {
      const missing = this.#webrtcMissing()
      if (missing === null) return this.#startWebRtc(wanted === 'webrtc' ? 'WebRTC requested' : 'WebRTC offered by the server')
      this.webrtcFailed = missing
    }
    this.#closePeer(true)
    return this.#chooseSocketMode()
  }

  /** Decides video or JPEG on the socket (probing once) and tells the server. */
  async #chooseSocketMode() {
    const socket = this.socket
    const wanted = this.requestedMode
    const failed = (wanted === 'auto' || wanted === 'webrtc') && this.webrtcFailed
    const because = (reason) => (failed ? `${reason}; WebRTC: ${this.webrtcFailed}` : reason)
    if (wanted === 'jpeg') return this.#useJpeg('JPEG requested')
    // A failed probe is not kept: asking for video again (setMode, a reconnect) probes again.
    if (!this.videoProbe?.ok) this.videoProbe = await probeVideoDecode()
    if (this.socket !== socket || this.requestedMode !== wanted || this.pc) return
    if (!this.videoProbe.ok) return this.#useJpeg(because(`video unavailable: ${this.videoProbe.reason}`))
    this.#setMode('video', because(wanted === 'video' ? 'video requested' : this.videoProbe.reason))
    this.send({ type: 'config', video: { codecs: VIDEO_CODECS } })
  }

  /** Why WebRTC cannot run here, or null. */
  #webrtcMissing() {
    if (!this.session?.webrtc) return 'the server does not offer WebRTC'
    if (typeof globalThis.RTCPeerConnection !== 'function') return 'this browser has no RTCPeerConnection'
    if (!this.videoElement) return 'no video element was given to play it in'
    return null
  }

  /** Offers a receive-only H.264 peer connection over the socket; the answer arrives as `webrtc-answer`. */
  async #startWebRtc(reason) {
    this.#closePeer(true)
    // WebSocket video stops meanwhile: JPEG frames show until the first WebRTC picture.
    if (this.mode === 'video') this.#useJpeg('waiting for WebRTC')
    const socket = this.socket
    const pc = new RTCPeerConnection({ iceServers: this.session.webrtc.iceServers ?? [] })
    this.pc = pc
    this.webrtcShowing = false
    const transceiver = pc.addTransceiver('video', { direction: 'recvonly' })
    try {
      // H.264 first (what the server sends), with retransmission; the server picks packetization mode 1.
      const codecs = RTCRtpReceiver.getCapabilities?.('video')?.codecs ?? []
      const h264 = codecs.filter((c) => c.mimeType.toLowerCase() === 'video/h264')
      const repair = codecs.filter((c) => /\/(rtx|red|ulpfec|flexfec-03)$/i.test(c.mimeType))
      if (h264.length) transceiver.setCodecPreferences([...h264, ...repair])
    } catch {}
    pc.onicecandidate = (event) => {
      if (this.pc === pc) this.send({ type: 'webrtc-candidate', candidate: event.candidate ? event.candidate.candidate : null })
    }
    pc.ontrack = (event) => {
      if (this.pc !== pc) return
      // A live view: show each picture as soon as it is decoded, no smoothing buffer.
      try {
        event.receiver.jitterBufferTarget = 0
      } catch {}
      const video = this.videoElement
      video.muted = true
      video.playsInline = true
      video.srcObject = event.streams[0] ?? new MediaStream([event.track])
      video.play().catch(() => {})
      this.#watchWebRtcVideo(pc, reason)
    }
    pc.onconnectionstatechange = () => {
      if (this.pc === pc && (pc.connectionState === 'failed' || pc.connectionState === 'closed')) {
        this.#webrtcFallback(`the connection ${pc.connectionState}`)
      }
    }
    this.webrtcTimer = setTimeout(() => {
      if (this.pc === pc && !this.webrtcShowing) this.#webrtcFallback(`no picture within ${this.webrtcTimeoutMs} ms`)
    }, this.webrtcTimeoutMs)
    try {
      await pc.setLocalDescription(await pc.createOffer())
      if (this.pc !== pc || this.socket !== socket) return
      this.send({ type: 'webrtc-offer', sdp: pc.localDescription.sdp })
    } catch (error) {
      if (this.pc === pc) this.#webrtcFallback(`the offer failed: ${error?.message ?? error}`)
    }
  }

  /** Counts each picture the video element presents, passes it to `onFrame`, and reports the mode at the first. */
  #watchWebRtcVideo(pc, reason) {
    const video = this.videoElement
    const shown = (width, height) => {
      if (!this.webrtcShowing) {
        this.webrtcShowing = true
        clearTimeout(this.webrtcTimer)
        this.#setMode('webrtc', reason)
      }
      this.#countPicture(width, height)
      this.stats.webrtcFrames += 1
      this.handlers.onFrame?.(video, { width, height, bytes: 0, receivedAt: performance.now(), mode: 'webrtc' })
    }
    if (typeof video.requestVideoFrameCallback === 'function') {
      const onPicture = (_now, meta) => {
        if (this.pc !== pc) return
        shown(meta.width, meta.height)
        video.requestVideoFrameCallback(onPicture)
      }
      video.requestVideoFrameCallback(onPicture)
    } else {
      video.addEventListener('playing', () => this.pc === pc && shown(video.videoWidth, video.videoHeight), { once: true })
    }
    // The bitrate from the receiver's counters (the socket carries almost nothing now).
    let last = null
    this.webrtcStatsTimer = setInterval(async () => {
      if (this.pc !== pc) return
      try {
        const report = await pc.getStats()
        for (const entry of report.values()) {
          if (entry.type !== 'inbound-rtp' || entry.kind !== 'video') continue
          if (last) this.stats.bitrate = ((entry.bytesReceived - last.bytes) * 8 * 1000) / Math.max(1, entry.timestamp - last.at)
          last = { bytes: entry.bytesReceived, at: entry.timestamp }
        }
      } catch {}
    }, 1000)
  }

  /** WebRTC failed on this connection: the next mode of the chain, with the reason reported. */
  #webrtcFallback(reason) {
    if (!this.pc) return
    this.#closePeer(true)
    this.webrtcFailed = reason
    void this.#chooseSocketMode()
  }

  #closePeer(tellServer) {
    const pc = this.pc
    if (!pc) return
    this.pc = null
    this.webrtcShowing = false
    clearTimeout(this.webrtcTimer)
    clearInterval(this.webrtcStatsTimer)
    try {
      pc.close()
    } catch {}
    if (this.videoElement) this.videoElement.srcObject = null
    if (tellServer) this.send({ type: 'webrtc-close' })
  }

  #useJpeg(reason) {
    const wasVideo = this.mode === 'video'
    this.#closeDecoder()
    this.#setMode('jpeg', reason)
    if (wasVideo) this.send({ type: 'config', video: null })
  }

  #setMode(mode, reason) {
    if (this.mode === mode) return
    this.mode = mode
    this.stats.mode = mode
    this.handlers.onMode?.(mode, reason)
  }

  #closeDecoder() {
    if (this.decoder && this.decoder.state !== 'closed') {
      try {
        this.decoder.close()
      } catch {}
    }
    this.decoder = null
    this.decoderConfig = null
    this.pendingChunks.clear()
    this.videoSeq = null
    this.lastChunkNumber = null
    this.waitingKey = true
  }

  /** `video-config`: (re)configures the decoder; the next chunk is a keyframe. */
  #configureDecoder(message) {
    if (this.mode !== 'video') return
    const config = { codec: message.codec, codedWidth: message.codedWidth, codedHeight: message.codedHeight, optimizeForLatency: true }
    try {
      if (!this.decoder || this.decoder.state === 'closed') {
        this.decoder = new VideoDecoder({
          output: (frame) => this.#onVideoFrame(frame),
          error: (error) => {
            // A decoder that fails is not retried on this connection: JPEG instead.
            this.decoder = null
            this.#useJpeg(`video decode failed: ${error?.message ?? error}`)
          },
        })
      }
      this.decoder.configure(config)
      this.decoderConfig = config
    } catch (error) {
      this.#useJpeg(`video configure failed: ${error?.message ?? error}`)
    }
  }

  #onVideoChunk(data, header) {
    if (this.mode !== 'video' || !this.decoder || this.decoder.state !== 'configured') return
    const gap = this.lastChunkNumber !== null && header.number !== ((this.lastChunkNumber + 1) >>> 0)
    this.lastChunkNumber = header.number
    if (header.key) this.waitingKey = false
    else if (gap || this.waitingKey) {
      // A delta after a gap cannot decode: wait for the keyframe the server sends next.
      this.waitingKey = true
      this.stats.framesDropped += 1
      return
    }
    if (this.decoder.decodeQueueSize > MAX_DECODE_QUEUE && !header.key) {
      // The decoder is behind: drop to the next keyframe, and ask for one (a repeated offer
      // restarts this viewer's video at a keyframe).
      this.waitingKey = true
      this.stats.framesDropped += 1
      this.send({ type: 'config', video: { codecs: VIDEO_CODECS } })
      return
    }
    // The decoder's timestamp is a counter: what the decoded frame carries back to find its header.
    const timestamp = ++this.chunkCounter
    this.pendingChunks.set(timestamp, { header, bytes: data.byteLength, receivedAt: performance.now() })
    if (this.pendingChunks.size > 120) this.pendingChunks.delete(this.pendingChunks.keys().next().value)
    try {
      this.decoder.decode(new EncodedVideoChunk({ type: header.key ? 'key' : 'delta', timestamp, data: new Uint8Array(data, header.headerLength) }))
    } catch (error) {
      this.#useJpeg(`video decode failed: ${error?.message ?? error}`)
    }
  }

  #onVideoFrame(frame) {
    const pending = this.pendingChunks.get(frame.timestamp)
    this.pendingChunks.delete(frame.timestamp)
    try {
      if (!pending || this.mode !== 'video') return
      const { header } = pending
      if (this.videoSeq === null || header.seq > this.videoSeq) this.videoSeq = header.seq
      const info = { ...header, width: frame.displayWidth, height: frame.displayHeight, bytes: pending.bytes, receivedAt: pending.receivedAt }
      this.#countPicture(info.width, info.height)
      this.stats.videoFrames += 1
      this.handlers.onFrame?.(frame, info)
    } finally {
      frame.close()
    }
  }

  #countBytes(bytes) {
    const now = performance.now()
    this.byteTimes.push([now, bytes])
    while (this.byteTimes.length && this.byteTimes[0][0] < now - 1000) this.byteTimes.shift()
    this.stats.bytes += bytes
    this.stats.bitrate = this.byteTimes.reduce((sum, [, b]) => sum + b, 0) * 8
  }

  #onMessage(data) {
    if (typeof data === 'string') {
      if (data.startsWith('{')) return this.#onJson(data)
      this.#countBytes(data.length)
      return this.#onFrame(data, (data.length * 3) / 4)
    }
    this.#countBytes(data.byteLength)
    if (this.extended) {
      // Binary messages of other kinds (later versions) are skipped, never shown as images.
      const header = parseFrameHeader(data)
      if (!header) return
      if (this.lastSeq === null || header.seq > this.lastSeq) this.lastSeq = header.seq
      if (header.kind === 'video') return this.#onVideoChunk(data, header)
      // Once video shows, a JPEG of an older moment (a resume or snapshot answer) is not drawn;
      // nor any JPEG over WebRTC's pictures.
      if (this.videoSeq !== null && header.seq <= this.videoSeq) return
      if (this.webrtcShowing) return
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
      void this.#chooseMode()
      return
    }
    if (message.type === 'webrtc-answer') {
      const pc = this.pc
      pc?.setRemoteDescription({ type: 'answer', sdp: message.sdp }).catch((error) => {
        if (this.pc === pc) this.#webrtcFallback(`the answer was refused: ${error?.message ?? error}`)
      })
      return
    }
    if (message.type === 'webrtc-state') {
      // `replaced`: an earlier peer of this viewer, superseded by the current one.
      if (message.state === 'closed' && this.pc && message.reason !== 'replaced') this.#webrtcFallback(`the server closed it (${message.reason})`)
      this.handlers.onMessage?.(message)
      return
    }
    if (message.type === 'video-config') {
      this.#configureDecoder(message)
      return
    }
    if (message.type === 'reply-ok') {
      this.handlers.onReplyOk?.(message.to)
      return
    }
    if (message.type === 'control') {
      this.hasControl = message.you === true
      this.reclaimToken = message.you === true && typeof message.reclaim === 'string' ? message.reclaim : null
      const control = { controller: message.controller, you: message.you }
      if (typeof message.reason === 'string') control.reason = message.reason
      this.handlers.onControl?.(control)
      return
    }
    if (typeof message.status === 'string') this.#status(message.status)
    else if (typeof message.url === 'string') this.handlers.onUrl?.(message.url)
    else if (message.viewport) this.handlers.onViewport?.(message.viewport)
    else if (typeof message.error === 'string') {
      if (this.pc && WEBRTC_ERRORS.includes(message.error)) this.#webrtcFallback(`server: ${message.error}`)
      // The server will not send video (off, or no codec in common): JPEG on this connection.
      if (this.mode === 'video' && ['video_unavailable', 'unsupported_codec', 'video_failed'].includes(message.error)) {
        this.#useJpeg(`server: ${message.error}`)
      }
      this.handlers.onError?.(message)
    }
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
      // Video overtook this frame while it decoded: the newer picture stays.
      if (frame.header && this.videoSeq !== null && frame.header.seq <= this.videoSeq) {
        bitmap.close()
        return
      }
      this.#countPicture(bitmap.width, bitmap.height)
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

  #countPicture(width, height) {
    const now = performance.now()
    this.frameTimes.push(now)
    while (this.frameTimes.length && this.frameTimes[0] < now - 1000) this.frameTimes.shift()
    this.stats.fps = this.frameTimes.length
    this.stats.frames += 1
    this.stats.width = width
    this.stats.height = height
  }

  #status(status) {
    this.handlers.onStatus?.(status)
  }
}

'use strict'
// ViewerRegistry: the drop-in for the TypeScript module's class of the same name, backed by
// the native registry. Owns the JS side of the native host callback (start/stop of JS toolset
// sources, input relay to the toolset, writes to JS-bridged sockets) and the mapping of
// drop-in keys and WSContext objects to native viewer ids. Must not fan out frames itself:
// every frame goes through Rust once.

const { NativeRegistry, channelKey } = require('../binding')
const { ToolsetSource } = require('./sources/toolset')
const { errorText } = require('./util')
const { startCdpSource } = require('./sources/cdp')
const { createLogger, redact } = require('./log')

const NATIVE_OPTION_NAMES = [
  'lingerMs',
  'maxViewersPerAgent',
  'maxAgents',
  'maxViewersTotal',
  'maxMessageBytes',
  'heartbeatIntervalMs',
  'heartbeatTimeoutMs',
  'maxQueuedMessages',
  'maxPendingInputs',
  'maxInputsPerSecond',
  'eventBatchMs',
  'resumeMaxEvents',
  'resumeMaxBytes',
  'resumeMaxAgeMs',
  'maxEventBytes',
]

/** How long `close()` waits for viewers' close frames to be written. */
const CLOSE_WAIT_MS = 1500

/** The key the TypeScript module uses for a channel (ambiguous when ids contain ':'). */
function mastraKey(agentId, threadId) {
  return threadId ? `${agentId}:${threadId}` : agentId
}

/** Sends on a `ws` WebSocket (text, or a Buffer as binary) and resolves once the data was handed to the socket. */
function sendPaced(ws, data) {
  return new Promise((resolve, reject) => {
    ws.send(data, (err) => (err ? reject(err) : resolve()))
  })
}

class ViewerRegistry {
  #native
  #getToolset
  /** agentId → prerecorded frames replayed by the Rust source instead of a toolset */
  #getReplayFrames
  /** agentId → DevTools endpoint of its browser, for the native CDP source */
  #getCdpEndpoint
  #screencastOptions
  #toolsetTimeoutMs
  /** how long the browser may take to answer the native CDP source */
  #cdpTimeoutMs
  #heartbeatIntervalMs
  /** (agentId, controller, {threadId, key}) on every control change */
  #onControlChange
  #log
  /** channel key → ToolsetSource of the live session */
  #sources = new Map()
  /** channel key → getToolset given by the drop-in addViewer */
  #toolsetGetters = new Map()
  /** channel key → { agentId, threadId } of every channel whose source was started */
  #channels = new Map()
  /** viewer id → { send(text): Promise, close(code, reason) } for sockets kept in JS */
  #bridged = new Map()
  /** WSContext (drop-in) → viewer id */
  #contexts = new Map()
  #closed = false

  /**
   * @param {import('./index').ViewerRegistryOptions} [options]
   */
  constructor(options = {}) {
    if (options === null || typeof options !== 'object') {
      throw new TypeError('ViewerRegistry options must be an object')
    }
    const nativeOptions = {}
    for (const name of NATIVE_OPTION_NAMES) {
      const value = options[name]
      if (value === undefined) continue
      if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
        throw new TypeError(`ViewerRegistry option ${name} must be a non-negative integer`)
      }
      nativeOptions[name] = value
    }
    this.#getToolset = options.getToolset
    if (options.getReplayFrames !== undefined && typeof options.getReplayFrames !== 'function') {
      throw new TypeError('ViewerRegistry option getReplayFrames must be a function')
    }
    this.#getReplayFrames = options.getReplayFrames
    if (options.getCdpEndpoint !== undefined && typeof options.getCdpEndpoint !== 'function') {
      throw new TypeError('ViewerRegistry option getCdpEndpoint must be a function')
    }
    this.#getCdpEndpoint = options.getCdpEndpoint
    this.#screencastOptions = options.screencastOptions
    this.#toolsetTimeoutMs = options.toolsetTimeoutMs
    if (options.cdpTimeoutMs !== undefined && (!Number.isInteger(options.cdpTimeoutMs) || options.cdpTimeoutMs < 100 || options.cdpTimeoutMs > 600_000)) {
      throw new TypeError('ViewerRegistry option cdpTimeoutMs must be an integer from 100 to 600000')
    }
    this.#cdpTimeoutMs = options.cdpTimeoutMs
    this.#heartbeatIntervalMs = options.heartbeatIntervalMs ?? 15_000
    if (options.implicitControl !== undefined) {
      if (typeof options.implicitControl !== 'boolean') throw new TypeError('ViewerRegistry option implicitControl must be a boolean')
      nativeOptions.implicitControl = options.implicitControl
    }
    if (options.onControlChange !== undefined && typeof options.onControlChange !== 'function') {
      throw new TypeError('ViewerRegistry option onControlChange must be a function')
    }
    this.#onControlChange = options.onControlChange
    this.#log = createLogger(options.logger)
    this.#native = new NativeRegistry((event) => this.#onHostEvent(event), nativeOptions)
  }

  // ---- host events from Rust -------------------------------------------------------------

  /**
   * `input` and `send` are awaited by Rust (which counts a failed input); nobody awaits the
   * others, so their failures are logged here rather than left as unhandled rejections.
   */
  #onHostEvent(event) {
    const handled = this.#handleHostEvent(event)
    if (event.kind === 'input' || event.kind === 'send') return handled
    return handled.catch((err) => this.#log.error(`[browser-stream] ${event.kind} of ${event.key ?? event.viewerId}: ${errorText(err)}`))
  }

  async #handleHostEvent(event) {
    switch (event.kind) {
      case 'start':
        this.#startSource(event)
        return
      case 'stop':
        await this.#stopSource(event)
        return
      case 'input':
        await this.#relayInput(event)
        return
      case 'send': {
        const socket = this.#bridged.get(event.viewerId)
        if (!socket) throw new Error(`viewer ${event.viewerId} is gone`)
        await socket.send(event.data ?? event.text)
        return
      }
      case 'control':
        this.#controlChanged(event)
        return
      case 'log':
        // Rust's diagnostics may quote a deployer's error: credentials in it are blanked.
        this.#log[event.level === 'error' ? 'error' : 'warn'](`[browser-stream] ${redact(event.text)}`)
        return
      case 'close': {
        const socket = this.#bridged.get(event.viewerId)
        this.#bridged.delete(event.viewerId)
        socket?.close(event.code, event.reason)
        return
      }
      case 'terminate': {
        const socket = this.#bridged.get(event.viewerId)
        this.#bridged.delete(event.viewerId)
        socket?.terminate()
        return
      }
      default:
        this.#log.warn(`[browser-stream] unknown host event ${event.kind}`)
    }
  }

  #startSource(event) {
    const { key, agentId, threadId, generation } = event
    this.#pruneGone()
    this.#channels.set(key, { agentId, threadId: threadId ?? undefined })
    const previous = this.#sources.get(key)
    if (previous && previous.generation !== generation) void previous.stop()
    if (this.#getCdpEndpoint) {
      // Native source: Rust owns the session once started; the entry only marks it live.
      this.#sources.set(key, this.#nativeSourceEntry(key, generation))
      startCdpSource({
        native: this.#native,
        key,
        generation,
        agentId,
        threadId: threadId ?? undefined,
        getCdpEndpoint: this.#getCdpEndpoint,
        screencastOptions: this.#screencastOptions,
        timeoutMs: this.#toolsetTimeoutMs,
        cdpTimeoutMs: this.#cdpTimeoutMs,
        isCurrent: () => this.#sources.get(key)?.generation === generation,
        fail: (detail) => this.#failSession(key, generation, detail),
      }).then(
        (started) => {
          if (!started && this.#sources.get(key)?.generation === generation) this.#startToolsetSource(event)
        },
        (err) => this.#log.warn(`[browser-stream] CDP source of ${key}: ${errorText(err)}`),
      )
      return
    }
    this.#startToolsetSource(event)
  }

  #startToolsetSource({ key, agentId, threadId, generation }) {
    if (this.#getReplayFrames) {
      let replay
      try {
        replay = this.#getReplayFrames(agentId, threadId ?? undefined)
      } catch (err) {
        this.#sources.set(key, this.#nativeSourceEntry(key, generation))
        this.#failSession(key, generation, `getReplayFrames: ${errorText(err)}`)
        return
      }
      if (replay) {
        this.#startReplay(key, generation, replay)
        return
      }
    }
    const source = new ToolsetSource({
      native: this.#native,
      key,
      agentId,
      threadId: threadId ?? undefined,
      generation,
      getToolset: this.#toolsetGetters.get(key) ?? this.#getToolset,
      screencastOptions: this.#screencastOptions,
      toolsetTimeoutMs: this.#toolsetTimeoutMs,
      log: this.#log,
      fail: (detail) => this.#failSession(key, generation, detail),
      idle: () => this.#endSession(key, generation),
    })
    this.#sources.set(key, source)
    source.start().catch(() => {})
  }

  /**
   * The JS record of a source that runs in Rust (CDP, replay): stopping and input happen in
   * Rust; `closeStream` (drop-in closeBrowserSession) ends the session and leaves the channel
   * idle with its viewers, so a relaunch or the next viewer starts a new one.
   */
  #nativeSourceEntry(key, generation) {
    const native = this.#native
    return {
      generation,
      // Holds nothing in JS (see #pruneGone).
      runsInRust: true,
      stop: async () => {},
      input: async () => {},
      closeStream: async () => {
        native.setStatus(key, 'browser_closed', generation)
        native.sourceEnded(key, generation)
      },
    }
  }

  /** Runs a replay source in Rust; it stops by itself when its generation ends. */
  #startReplay(key, generation, { frames, fps, stampFrames, width, height }) {
    this.#sources.set(key, this.#nativeSourceEntry(key, generation))
    try {
      this.#native.startReplaySource(key, generation, frames, { fps, stampFrames, width, height })
    } catch (err) {
      this.#failSession(key, generation, `replay source: ${errorText(err)}`)
    }
  }

  /**
   * Ends a source session that could not start or broke: viewers get `screencast_failed` (a
   * fixed text; `detail` goes to the log) and `browser_closed`, the channel goes idle with its
   * viewers (a relaunch or the next viewer starts a new session), and the session's JS side
   * is dropped (no `stop` comes for a session that ended by itself).
   */
  #failSession(key, generation, detail) {
    this.#native.broadcastError(key, 'screencast_failed', detail, generation)
    this.#native.setStatus(key, 'browser_closed', generation)
    this.#endSession(key, generation)
  }

  /**
   * Ends a source session quietly: the channel goes idle with its viewers, so the next viewer
   * (or a relaunch) starts a new one, and the session's JS side is dropped.
   */
  #endSession(key, generation) {
    this.#native.sourceEnded(key, generation)
    const source = this.#sources.get(key)
    if (source?.generation === generation) {
      this.#sources.delete(key)
      void source.stop()
    }
    this.#pruneGone()
  }

  async #stopSource({ key, generation }) {
    const source = this.#sources.get(key)
    if (!source || source.generation !== generation) return
    this.#sources.delete(key)
    this.#forgetKey(key)
    try {
      await source.stop()
    } catch (err) {
      this.#log.warn(`[browser-stream] stopping ${key}: ${errorText(err)}`)
    }
  }

  async #relayInput({ key, generation, inputKind, input, text }) {
    const source = this.#sources.get(key)
    if (!source || source.generation !== generation) return
    await source.input(inputKind, inputKind === 'text' ? { text } : input)
  }

  #controlChanged({ key, agentId, threadId, controller }) {
    if (!this.#onControlChange) return
    try {
      const result = this.#onControlChange(agentId, controller ?? null, { threadId: threadId ?? undefined, key })
      if (result && typeof result.then === 'function') {
        result.then(undefined, (err) => this.#log.warn(`[browser-stream] onControlChange: ${errorText(err)}`))
      }
    } catch (err) {
      this.#log.warn(`[browser-stream] onControlChange: ${errorText(err)}`)
    }
  }

  // ---- sockets ---------------------------------------------------------------------------

  /**
   * Why a viewer of this agent would be refused now (limits, closed), or null.
   * @param {string} agentId
   * @param {string} [threadId]
   * @returns {string | null}
   */
  checkAdmission(agentId, threadId) {
    return this.#native.checkAdmission(agentId, threadId || undefined)
  }

  /**
   * `checkAdmission` without counting a refusal (a second look at one already counted).
   * @internal used by setupBrowserStream
   */
  admissionRefusal(agentId, threadId) {
    return this.#native.checkAdmission(agentId, threadId || undefined, false)
  }

  /**
   * Hands an upgraded plain-TCP socket to Rust by file descriptor. The caller must
   * `socket.destroy()` in the same tick. Returns the viewer id.
   * @internal used by setupBrowserStream
   */
  adoptSocket(fd, websocketKey, head, agentId, threadId, options) {
    return this.#native.adoptSocket(fd, websocketKey, head, agentId, threadId || undefined, options)
  }

  /**
   * Serves a `ws` WebSocket kept in JS (TLS, no usable fd). Returns the viewer id.
   * @internal used by setupBrowserStream
   */
  attachSocket(ws, agentId, threadId, options) {
    const id = this.#native.attachBridged(agentId, threadId || undefined, true, options)
    this.#bridged.set(id, {
      send: (text) => sendPaced(ws, text),
      close: (code, reason) => {
        try {
          ws.close(code, reason)
        } catch {
          ws.terminate()
        }
      },
      terminate: () => ws.terminate(),
    })
    let alive = true
    ws.on('pong', () => {
      alive = true
    })
    const heartbeat = setInterval(() => {
      if (!alive) {
        ws.terminate()
        return
      }
      alive = false
      ws.ping()
    }, this.#heartbeatIntervalMs)
    heartbeat.unref()
    ws.on('message', (data, isBinary) => {
      alive = true
      if (isBinary) this.#native.bridgedBinary(id)
      else this.#native.bridgedMessage(id, data.toString('utf8'))
    })
    ws.on('error', () => {})
    ws.on('close', () => {
      clearInterval(heartbeat)
      this.#bridged.delete(id)
      this.#native.closeViewer(id)
    })
    return id
  }

  /** Drops the drop-in bookkeeping of a channel whose source stopped (no viewers left). */
  #forgetKey(nativeKey) {
    this.#toolsetGetters.delete(nativeKey)
    this.#channels.delete(nativeKey)
  }

  /**
   * Forgets what JS keeps of channels the registry let go without a `stop` (their session
   * ended by itself, then the last viewer left): nothing else would drop it.
   */
  #pruneGone() {
    // Only Rust sources: a JS source of a gone channel still gets its `stop`, which stops it.
    for (const [key, source] of this.#sources) if (source.runsInRust && !this.#native.hasChannel(key)) this.#sources.delete(key)
    for (const key of this.#channels.keys()) if (!this.#native.hasChannel(key)) this.#forgetKey(key)
  }

  /**
   * The channel keys a drop-in key (`agentId` or `agentId:threadId`, as the TypeScript module
   * builds it) names: every live channel it fits (more than one only for ids with ':'), else
   * the channel of the key taken as an agent id.
   */
  #nativeKeys(key) {
    const keys = []
    for (const [nativeKey, { agentId, threadId }] of this.#channels) {
      if (mastraKey(agentId, threadId) === key) keys.push(nativeKey)
    }
    if (keys.length > 0) return keys
    // No live channel fits: the key as the TypeScript module would mean it, an agent id.
    try {
      return [channelKey(key, undefined)]
    } catch {
      return [] // not an id at all: no channel
    }
  }

  // ---- the drop-in API of the TypeScript ViewerRegistry ----------------------------------

  /**
   * Adds a viewer whose socket the caller owns (a @hono/node-ws `WSContext`: `send`, `close`,
   * optionally `raw`). The first viewer of a key starts its screencast through `getToolset`.
   * @param {string} key agentId, or agentId:threadId
   * @param {{send(data: string): void, close?(code?: number, reason?: string): void, raw?: any}} ws
   * @param {(agentId: string, threadId?: string) => any} [getToolset]
   * @param {string} [agentId] defaults to `key`
   * @param {string} [threadId]
   */
  async addViewer(key, ws, getToolset, agentId, threadId) {
    if (typeof key !== 'string' || key === '') throw new TypeError('addViewer: key must be a non-empty string')
    if (!ws || typeof ws.send !== 'function') throw new TypeError('addViewer: ws must have a send() method')
    if (this.#contexts.has(ws)) return
    // As the TypeScript module: the agent is `agentId`, else the key itself.
    const agent = agentId ?? key
    threadId = threadId || undefined
    const nativeKey = channelKey(agent, threadId)
    this.#channels.set(nativeKey, { agentId: agent, threadId })
    if (typeof getToolset === 'function') this.#toolsetGetters.set(nativeKey, getToolset)
    // The TypeScript route sends {status:'connected'} itself before addViewer.
    const id = this.#native.attachBridged(agent, threadId, false)
    const raw = ws.raw
    this.#bridged.set(id, {
      send:
        raw && typeof raw.send === 'function' && raw.send.length >= 2
          ? (text) => sendPaced(raw, text)
          : async (text) => {
              ws.send(text)
            },
      close: (code, reason) => ws.close?.(code, reason),
      terminate: () => ws.close?.(),
    })
    this.#contexts.set(ws, id)
  }

  /**
   * Removes a viewer added with `addViewer` (its socket is left as it is). The last viewer's
   * screencast stops after the linger.
   * @param {string} key
   * @param {object} ws
   */
  async removeViewer(key, ws) {
    const id = this.#contexts.get(ws)
    if (id === undefined) return
    this.#contexts.delete(ws)
    this.#bridged.delete(id)
    this.#native.closeViewer(id)
  }

  /**
   * Disconnects one viewer (ids are in `stats()`), with a close frame carrying `code` (1000,
   * 1001, 1008, 1011, 1013 or 3000–4999) and `reason`. False when there is no such viewer.
   * @param {number} viewerId
   * @param {number} [code]
   * @param {string} [reason]
   */
  closeViewer(viewerId, code = 1008, reason = '') {
    return this.#native.closeViewer(viewerId, code, reason)
  }

  /**
   * Broadcasts a frame (base64 JPEG string, or the image bytes) to every viewer of `key`.
   * @param {string} key
   * @param {string | Buffer} data
   */
  broadcastFrame(key, data) {
    for (const nativeKey of this.#nativeKeys(key)) this.#native.pushFrame(nativeKey, data)
  }

  /**
   * Broadcasts a status (or any JSON object) to every viewer of `key`.
   * @param {string} key
   * @param {object} status e.g. `{ status: 'streaming' }`
   */
  broadcastStatus(key, status) {
    if (status === null || typeof status !== 'object') {
      throw new TypeError('broadcastStatus: status must be an object such as { status: "streaming" }')
    }
    const json = JSON.stringify(status)
    for (const nativeKey of this.#nativeKeys(key)) this.#native.broadcastJson(nativeKey, json)
  }

  /** @param {string} key */
  getViewerCount(key) {
    return this.#nativeKeys(key).reduce((sum, nativeKey) => sum + this.#native.viewerCount(nativeKey), 0)
  }

  /** @param {string} key */
  hasActiveScreencast(key) {
    return this.#nativeKeys(key).some((nativeKey) => this.#native.isStreaming(nativeKey))
  }

  /**
   * Ends the browser session of `key` (drop-in: `agentId` or `agentId:threadId`): stops its
   * screencast and tells viewers `{status:'browser_closed'}`; viewers stay connected for the
   * next session.
   * @param {string} key
   */
  async closeBrowserSession(key) {
    await Promise.all(this.#nativeKeys(key).map((nativeKey) => this.#closeSession(nativeKey)))
  }

  /**
   * `closeBrowserSession` for an agent, or one thread of it, named by ids (any characters).
   * @param {string} agentId
   * @param {string} [threadId]
   */
  async closeBrowserSessionOf(agentId, threadId) {
    await this.#closeSession(channelKey(agentId, threadId || undefined))
  }

  /**
   * Ends the sessions of every channel of `agentId` (the agent and each of its threads): its
   * whole browser is closing.
   * @param {string} agentId
   */
  async closeAgentSessions(agentId) {
    const keys = new Set([channelKey(agentId, undefined)])
    for (const [nativeKey, channel] of this.#channels) if (channel.agentId === agentId) keys.add(nativeKey)
    await Promise.all([...keys].map((nativeKey) => this.#closeSession(nativeKey)))
  }

  async #closeSession(nativeKey) {
    this.#native.clearPageState(nativeKey)
    const source = this.#sources.get(nativeKey)
    if (source) await source.closeStream()
    else this.#native.setStatus(nativeKey, 'browser_closed')
  }

  /**
   * Publishes an agent event to the extended viewers of `agentId` (and `threadId`): a JSON
   * object with a string `type`. `text_delta` events are merged over `eventBatchMs`; every
   * event gets a sequence number and is kept for resume. Returns false when nobody watches
   * this agent (the event is dropped).
   * @param {string} agentId the agent (ids are taken as they are: a thread goes in `threadId`)
   * @param {{type: string, [field: string]: unknown}} event
   * @param {string} [threadId]
   * @returns {boolean}
   */
  publishEvent(agentId, event, threadId) {
    if (typeof agentId !== 'string' || agentId === '') throw new TypeError('publishEvent: agentId must be a non-empty string')
    if (event === null || typeof event !== 'object' || Array.isArray(event) || typeof event.type !== 'string') {
      throw new TypeError('publishEvent: event must be an object with a string type')
    }
    return this.#native.publishEvent(channelKey(agentId, threadId || undefined), JSON.stringify(event))
  }

  /** Per-channel and per-viewer counters. */
  stats() {
    return this.#native.stats()
  }

  /**
   * Closes every viewer with 1001, stops every screencast and refuses new viewers. Resolves
   * once the viewers' close frames were written (at most about a second: a frame in progress
   * is finished first, a socket that does not read is cut); the Node process can then exit.
   */
  async close() {
    if (this.#closed) return
    this.#closed = true
    // Synchronously first: no viewer is admitted once close() has returned.
    this.#native.close()
    const closeFramesSent = this.#native.closeAndWait(CLOSE_WAIT_MS)
    const sources = [...this.#sources.values()]
    this.#sources.clear()
    const bridged = [...this.#bridged.values()]
    this.#bridged.clear()
    for (const socket of bridged) {
      try {
        socket.close(1001, 'server shutting down')
      } catch {
        // Already closed.
      }
    }
    await Promise.all([closeFramesSent, ...sources.map((source) => source.stop())])
  }
}

module.exports = { ViewerRegistry }

'use strict'
// ViewerRegistry: the drop-in for the TypeScript module's class of the same name, backed by
// the native registry. Owns the checking of its options, the mapping of drop-in keys and
// WSContext objects to native viewer ids, the channel book (which channels JS knows, with a
// drop-in viewer's getToolset) and the sockets kept in JS (bridged `ws` sockets with their
// heartbeat, drop-in WSContexts). Delegates the native host callback — the source sessions —
// to HostEvents (host-events.js), lending it only the channel book and the bridged sockets.
// Must not fan out frames itself: every frame goes through Rust once.

const { NativeRegistry, channelKey, checkCdpSourceOptions } = require('./native')
const { CloseCode, REGISTRY_OPTIONS, registryDefault } = require('./native-rules')
const { HostEvents } = require('./host-events')
const { createLogger } = require('./log')
const { ViewerTokens } = require('./viewer-token')

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

/**
 * The `webrtc` option as Rust takes it: `true` is every default; an ICE server's `urls` may be
 * one string, as in `RTCIceServer`. Types are checked here, values (addresses, ranges) in Rust.
 * @param {unknown} webrtc
 */
function webrtcOptions(webrtc) {
  if (webrtc === true) return {}
  if (webrtc === null || typeof webrtc !== 'object' || Array.isArray(webrtc)) {
    throw new TypeError('ViewerRegistry option webrtc must be true, false or an object')
  }
  const out = {}
  for (const [name, type] of [['host', 'string'], ['port', 'number'], ['publicAddress', 'string'], ['maxPeers', 'number'], ['connectTimeoutMs', 'number'], ['bandwidthEstimation', 'boolean']]) {
    if (webrtc[name] === undefined) continue
    if (typeof webrtc[name] !== type) throw new TypeError(`ViewerRegistry option webrtc.${name} must be a ${type}`)
    out[name] = webrtc[name]
  }
  if (webrtc.iceServers !== undefined) {
    if (!Array.isArray(webrtc.iceServers)) throw new TypeError('ViewerRegistry option webrtc.iceServers must be an array')
    out.iceServers = webrtc.iceServers.map((server) => {
      if (server === null || typeof server !== 'object') throw new TypeError('ViewerRegistry option webrtc.iceServers[] must be objects')
      const urls = typeof server.urls === 'string' ? [server.urls] : server.urls
      if (!Array.isArray(urls) || !urls.every((url) => typeof url === 'string')) {
        throw new TypeError('ViewerRegistry option webrtc.iceServers[].urls must be a string or strings')
      }
      for (const name of ['username', 'credential']) {
        if (server[name] !== undefined && typeof server[name] !== 'string') {
          throw new TypeError(`ViewerRegistry option webrtc.iceServers[].${name} must be a string`)
        }
      }
      return { urls, username: server.username, credential: server.credential }
    })
  }
  return out
}

/** Fields of `relay.nats`, by type; values (URLs, ranges, which credentials) are Rust's. */
const NATS_FIELDS = [['name', 'string'], ['token', 'string'], ['user', 'string'], ['password', 'string'], ['nkey', 'string'], ['credsFile', 'string'], ['subjectPrefix', 'string'], ['ownerTimeoutMs', 'number'], ['leaseIntervalMs', 'number']]
const NATS_TLS_FIELDS = [['required', 'boolean'], ['caFile', 'string'], ['certFile', 'string'], ['keyFile', 'string']]

/**
 * Copies the fields of `from` listed in `fields` (each of its type) onto a new object; an
 * unknown field is refused (a misspelled credential must not mean connecting without it).
 */
function typedFields(from, fields, what, also = []) {
  const known = new Set([...fields.map(([name]) => name), ...also])
  for (const name of Object.keys(from)) {
    if (!known.has(name)) throw new TypeError(`ViewerRegistry option ${what} has no field ${name}`)
  }
  const out = {}
  for (const [name, type] of fields) {
    if (from[name] === undefined) continue
    if (typeof from[name] !== type) throw new TypeError(`ViewerRegistry option ${what}.${name} must be a ${type}`)
    out[name] = from[name]
  }
  return out
}

/**
 * The `relay` option as Rust takes it: `{ nats: { servers, … } }`, `servers` one URL or many.
 * Types are checked here; URLs, ranges and the choice of credentials in Rust.
 * @param {unknown} relay
 */
function relayOptions(relay) {
  const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value)
  if (!isObject(relay) || !isObject(relay.nats) || Object.keys(relay).length !== 1) {
    throw new TypeError('ViewerRegistry option relay must be { nats: { servers, … } }')
  }
  const { nats } = relay
  const servers = typeof nats.servers === 'string' ? [nats.servers] : nats.servers
  if (!Array.isArray(servers) || !servers.every((server) => typeof server === 'string')) {
    throw new TypeError('ViewerRegistry option relay.nats.servers must be a URL or URLs (nats://host:port)')
  }
  const out = { servers, ...typedFields(nats, NATS_FIELDS, 'relay.nats', ['servers', 'tls']) }
  if (nats.tls !== undefined) {
    if (!isObject(nats.tls)) throw new TypeError('ViewerRegistry option relay.nats.tls must be an object')
    out.tls = typedFields(nats.tls, NATS_TLS_FIELDS, 'relay.nats.tls')
  }
  return { nats: out }
}

class ViewerRegistry {
  #native
  /** the host callback's side: the source sessions of the channels */
  #hostEvents
  #heartbeatIntervalMs
  /** channel key → getToolset given by the drop-in addViewer */
  #toolsetGetters = new Map()
  /** channel key → { agentId, threadId } of every channel whose source was started */
  #channels = new Map()
  /** viewer id → { send(text): Promise, close(code, reason) } for sockets kept in JS */
  #bridged = new Map()
  /** WSContext (drop-in) → viewer id */
  #contexts = new Map()
  /** the key of scoped viewer links and their single-use memory (viewer-token.js) */
  #viewerTokens
  #closed = false

  /**
   * @param {import('../index').ViewerRegistryOptions} [options]
   */
  constructor(options = {}) {
    if (options === null || typeof options !== 'object') {
      throw new TypeError('ViewerRegistry options must be an object')
    }
    // Every native option, by the table Rust owns: JS checks the type, Rust the range.
    const nativeOptions = {}
    for (const { name, kind } of REGISTRY_OPTIONS) {
      const value = options[name]
      if (value === undefined) continue
      const expected = kind === 'flag' ? 'boolean' : 'number'
      if (typeof value !== expected) throw new TypeError(`ViewerRegistry option ${name} must be a ${expected}`)
      nativeOptions[name] = value
    }
    if (options.webrtc !== undefined && options.webrtc !== false) nativeOptions.webrtc = webrtcOptions(options.webrtc)
    if (options.relay !== undefined && options.relay !== null && options.relay !== false) nativeOptions.relay = relayOptions(options.relay)
    if (options.getReplayFrames !== undefined && typeof options.getReplayFrames !== 'function') {
      throw new TypeError('ViewerRegistry option getReplayFrames must be a function')
    }
    if (options.getCdpEndpoint !== undefined && typeof options.getCdpEndpoint !== 'function') {
      throw new TypeError('ViewerRegistry option getCdpEndpoint must be a function')
    }
    if (options.cdpTimeoutMs !== undefined) {
      if (!Number.isInteger(options.cdpTimeoutMs)) throw new TypeError('ViewerRegistry option cdpTimeoutMs must be an integer')
      try {
        checkCdpSourceOptions({ timeoutMs: options.cdpTimeoutMs })
      } catch (err) {
        throw new TypeError(`ViewerRegistry option cdpTimeoutMs: ${err.message}`)
      }
    }
    // A bridged socket pings as often as Rust pings its own sockets.
    this.#heartbeatIntervalMs = options.heartbeatIntervalMs ?? registryDefault('heartbeatIntervalMs')
    if (options.onControlChange !== undefined && typeof options.onControlChange !== 'function') {
      throw new TypeError('ViewerRegistry option onControlChange must be a function')
    }
    if (options.onViewerReply !== undefined && typeof options.onViewerReply !== 'function') {
      throw new TypeError('ViewerRegistry option onViewerReply must be a function')
    }
    // Without the hook, viewers' replies are answered `reply_unavailable` by Rust.
    if (options.onViewerReply) nativeOptions.viewerReplies = true
    this.#viewerTokens = new ViewerTokens(options.viewerTokenSecret)
    const log = createLogger(options.logger)
    try {
      this.#native = new NativeRegistry((event) => this.#hostEvents.handle(event), nativeOptions)
    } catch (err) {
      // Rust checks each option against its range; the message names the option.
      throw new TypeError(`ViewerRegistry ${err.message}`)
    }
    this.#hostEvents = new HostEvents({
      native: this.#native,
      log,
      getToolset: options.getToolset,
      getReplayFrames: options.getReplayFrames,
      getCdpEndpoint: options.getCdpEndpoint,
      screencastOptions: options.screencastOptions,
      toolsetTimeoutMs: options.toolsetTimeoutMs,
      cdpTimeoutMs: options.cdpTimeoutMs,
      onControlChange: options.onControlChange,
      onViewerReply: options.onViewerReply,
      // Lent, not exposed: the channel book and the bridged sockets, as narrow as HostEvents needs.
      channels: {
        remember: (key, channel) => this.#channels.set(key, channel),
        toolsetGetter: (key) => this.#toolsetGetters.get(key),
        forget: (key) => this.#forgetKey(key),
        pruneGone: () => this.#pruneGoneChannels(),
      },
      sockets: {
        get: (viewerId) => this.#bridged.get(viewerId),
        take: (viewerId) => {
          const socket = this.#bridged.get(viewerId)
          this.#bridged.delete(viewerId)
          return socket
        },
      },
    })
  }

  // ---- sockets ---------------------------------------------------------------------------

  /**
   * Why a viewer of this agent would be refused now (limits, closed), or null.
   * @param {string} agentId
   * @param {string} [threadId]
   * @returns {string | null}
   */
  checkAdmission(agentId, threadId) {
    return this.admissionRefusal(channelKey(agentId, threadId || undefined))
  }

  /**
   * `checkAdmission` of channel `key`; `countRefusal: false` for a second look at a refusal
   * already counted.
   * @internal used by the stream route and the upgrade (routes.js, upgrade.js)
   */
  admissionRefusal(key, countRefusal = true) {
    return this.#native.checkAdmission(key, countRefusal)
  }

  /**
   * Hands an upgraded plain-TCP socket to Rust by file descriptor, as a viewer of channel
   * `key`. The caller must `socket.destroy()` in the same tick. Returns the viewer id.
   * @internal used by the upgrade (upgrade.js)
   */
  adoptSocket(fd, websocketKey, head, key, options) {
    return this.#native.adoptSocket(fd, websocketKey, head, key, options)
  }

  /**
   * Serves a `ws` WebSocket kept in JS (TLS, no usable fd) as a viewer of channel `key`.
   * Returns the viewer id.
   * @internal used by the upgrade (upgrade.js)
   */
  attachSocket(ws, key, options) {
    const id = this.#native.attachBridged(key, true, options)
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

  /** Forgets the channels the native registry let go without a `stop` (see HostEvents). */
  #pruneGoneChannels() {
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
    const id = this.#native.attachBridged(nativeKey, false)
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
  closeViewer(viewerId, code = CloseCode.POLICY, reason = '') {
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
    await Promise.all(this.#nativeKeys(key).map((nativeKey) => this.#hostEvents.closeSession(nativeKey)))
  }

  /**
   * `closeBrowserSession` for an agent, or one thread of it, named by ids (any characters).
   * @param {string} agentId
   * @param {string} [threadId]
   */
  async closeBrowserSessionOf(agentId, threadId) {
    await this.#hostEvents.closeSession(channelKey(agentId, threadId || undefined))
  }

  /**
   * Ends the sessions of every channel of `agentId` (the agent and each of its threads): its
   * whole browser is closing.
   * @param {string} agentId
   */
  async closeAgentSessions(agentId) {
    const keys = new Set([channelKey(agentId, undefined)])
    for (const [nativeKey, channel] of this.#channels) if (channel.agentId === agentId) keys.add(nativeKey)
    await Promise.all([...keys].map((nativeKey) => this.#hostEvents.closeSession(nativeKey)))
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

  /**
   * A signed, short-lived link token admitting one channel as `?token=` on the stream route,
   * view-only unless `canControl`, for `ttlMs` (default 5 minutes), once if `once` (README,
   * "Scoped viewer links"). Throws a TypeError for bad options or ids.
   * @param {import('../index').ViewerTokenOptions} options
   * @returns {string}
   */
  createViewerToken(options) {
    return this.#viewerTokens.create(options)
  }

  /**
   * Checks a `?token=` for the channel of `agentId` (and `threadId`): `{ refusal }` or
   * `{ canControl, consume }` (viewer-token.js).
   * @internal used by the gate and the stream route (gate.js, routes.js)
   */
  checkViewerToken(token, agentId, threadId) {
    return this.#viewerTokens.check(token, agentId, threadId)
  }

  /**
   * Takes control back from the viewer holding it (also one whose connection dropped within
   * `controlGraceMs`): every extended viewer gets `{"type":"control","controller":null,
   * "reason":reason}` and `onControlChange` fires with `reason`. Viewers may ask again.
   * Returns false when nobody held control.
   * @param {string} agentId
   * @param {string} [threadId]
   * @param {string} [reason] told to viewers (at most 200 bytes, no control characters)
   * @returns {boolean}
   */
  releaseControl(agentId, threadId, reason = 'released') {
    if (typeof reason !== 'string') throw new TypeError('releaseControl: reason must be a string')
    return this.#native.releaseControl(channelKey(agentId, threadId || undefined), reason)
  }

  /**
   * Turns the privacy blackout of an agent's channel on or off (README, "Privacy blackout"):
   * while on, no frame or video chunk captured leaves the server, viewers get
   * `{"status":"private","reason":…}`, and their input and snapshot requests are refused
   * (`private`). Without `threadId` it covers the agent and every thread of it. Holds for
   * channels nobody watches yet.
   * @param {string} agentId
   * @param {string | undefined | null} threadId
   * @param {boolean} on
   * @param {{reason?: string}} [options] `reason` is told to viewers (default `private`)
   */
  setPrivacy(agentId, threadId, on, options = {}) {
    if (typeof agentId !== 'string' || agentId === '') throw new TypeError('setPrivacy: agentId must be a non-empty string')
    if (threadId !== undefined && threadId !== null && typeof threadId !== 'string') {
      throw new TypeError('setPrivacy: threadId must be a string, null or undefined')
    }
    if (typeof on !== 'boolean') throw new TypeError('setPrivacy: on must be a boolean')
    const reason = options?.reason ?? 'private'
    if (typeof reason !== 'string') throw new TypeError('setPrivacy: options.reason must be a string')
    try {
      this.#native.setPrivacy(agentId, threadId || undefined, on ? reason : null)
    } catch (err) {
      throw new TypeError(`setPrivacy: ${err.message}`)
    }
  }

  /** Whether the channel of `agentId` (and `threadId`) is private now (`setPrivacy`). */
  isPrivate(agentId, threadId) {
    return this.#native.isPrivate(channelKey(agentId, threadId || undefined))
  }

  /**
   * Publishes one event to the extended viewers of every channel (a server-wide notice such
   * as `{ type: 'config_changed' }`): each channel numbers it and keeps it for resume. Returns
   * how many channels it went to. Throws as `publishEvent` for a bad event.
   * @param {{type: string, [field: string]: unknown}} event
   * @returns {number}
   */
  broadcastEvent(event) {
    if (event === null || typeof event !== 'object' || Array.isArray(event) || typeof event.type !== 'string') {
      throw new TypeError('broadcastEvent: event must be an object with a string type')
    }
    return this.#native.broadcastEvent(JSON.stringify(event))
  }

  /**
   * The registry's counters and gauges in the Prometheus text exposition (format 0.0.4, the
   * binding's `metricsContentType()`): viewers by mode and transport, frames and bytes in and
   * out, input by outcome, admissions refused by reason, CDP sessions, the video encode time
   * histogram once video ran. Per-channel series only with `metricsPerAgent`.
   * @returns {string}
   */
  metrics() {
    return this.#native.metrics()
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
    const stopSources = this.#hostEvents.releaseAll()
    const bridged = [...this.#bridged.values()]
    this.#bridged.clear()
    for (const socket of bridged) {
      try {
        socket.close(CloseCode.GOING_AWAY, 'server shutting down')
      } catch {
        // Already closed.
      }
    }
    await Promise.all([closeFramesSent, stopSources()])
  }
}

module.exports = { ViewerRegistry }

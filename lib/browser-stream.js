'use strict'
// setupBrowserStream: the Hono glue. Owns the routes it registers on the user's app (the
// stream route, the session probe and the close route) and their gate (Origin, Mastra's auth,
// the authenticate hook), running upgrade requests through the app so that the app's final
// response decides admission, and handing admitted sockets over: plain TCP to Rust by file
// descriptor, anything else to a `ws` socket bridged through JS. Must not touch frames or
// viewer state beyond handing sockets to the registry, and never logs a request's credentials.

const { randomUUID } = require('node:crypto')
const { createRequire } = require('node:module')
const path = require('node:path')
const { WebSocketServer } = require('ws')
const { ViewerRegistry } = require('./viewer-registry')
const { lookUpToolset } = require('./sources/toolset')
const { errorText } = require('./util')
const { channelKey } = require('../binding')
const { createLogger, redactingLogger, requestSecrets, contextLogger } = require('./log')
const { jsonError, writeHttpResponse, rejectUpgrade } = require('./http')

const STREAM_ROUTE = '/browser/:agentId/stream'
/** The subprotocol of the extended mode (docs/PROTOCOL.md). */
const EXTENDED_PROTOCOL = 'browser-stream.v1'
/** How long the probe waits for `getToolset`. */
const PROBE_TOOLSET_TIMEOUT_MS = 5000
/**
 * The stream route admits an upgrade by answering 204 with this header carrying a nonce of
 * that request; only when the app's final response still is that answer is the socket
 * upgraded, so middleware that refuses after `await next()` (or throws) decides.
 */
const ADMISSION_HEADER = 'x-browser-stream-admission'

/** Marks upgrade requests that injectWebSocket is running through the app. */
const upgrading = new WeakSet()

/** Mastra's normalisation (one trailing slash dropped, empty → `/api`), plus a leading `/`. */
function normalizePrefix(prefix) {
  if (prefix === undefined || prefix === null) return '/api'
  if (typeof prefix !== 'string') throw new TypeError('setupBrowserStream: apiPrefix must be a string')
  const trimmed = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
  if (trimmed === '') return '/api'
  return trimmed.startsWith('/') ? trimmed : `/${trimmed}`
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/** The token of a request: `Authorization: Bearer …`, else `?apiKey=`. */
function requestToken(c) {
  const header = c.req.header('authorization')
  const match = header && /^Bearer\s+(.+)$/i.exec(header)
  if (match) return match[1].trim()
  return c.req.query('apiKey') || undefined
}

/**
 * The subprotocol to serve for an offered `Sec-WebSocket-Protocol` list: the extended one,
 * null for compat (nothing of ours offered), or undefined when only unknown versions of ours are.
 */
function chooseProtocol(header) {
  if (!header) return null
  const offered = header.split(',').map((p) => p.trim()).filter(Boolean)
  if (offered.includes(EXTENDED_PROTOCOL)) return EXTENDED_PROTOCOL
  return offered.some((p) => p.startsWith('browser-stream.')) ? undefined : null
}

/** Whether `origin` may open the stream, for Mastra's `allowedOrigins` shapes (and ours). */
async function originAllowed(allowedOrigins, origin, c) {
  if (allowedOrigins === '*') return true
  if (typeof allowedOrigins === 'string') return allowedOrigins === origin
  if (Array.isArray(allowedOrigins)) return allowedOrigins.includes('*') || allowedOrigins.includes(origin)
  // cors-style: the origin to allow, or null. Only this origin (or '*', or true) admits: a
  // CORS fallback origin is enforced by the browser for fetches, by nothing for a WebSocket.
  const answer = await allowedOrigins(origin, c)
  return answer === true || answer === '*' || answer === origin
}

/**
 * Loads an optional peer dependency: from this package's place first, then from the app's
 * working directory (a package manager that does not hoist peers).
 */
function requirePeer(name) {
  try {
    return require(name)
  } catch (err) {
    if (err?.code !== 'MODULE_NOT_FOUND') throw err
    return createRequire(path.join(process.cwd(), 'noop.js'))(name)
  }
}

/**
 * Mastra's own auth for these routes, as `@mastra/hono` applies it to raw Hono routes
 * (`createAuthMiddleware({ mastra })`: the `server.auth` provider, session cookie on the
 * upgrade, `?apiKey=`, `Authorization`). Without `@mastra/hono` installed, a Mastra with an
 * auth provider refuses every request (500): never a weaker gate than Mastra's.
 */
function mastraAuthMiddleware(mastra, log) {
  if (!mastra || typeof mastra.getServer !== 'function') {
    throw new TypeError('setupBrowserStream: mastra must be a Mastra instance (with getServer())')
  }
  try {
    const { createAuthMiddleware } = requirePeer('@mastra/hono')
    if (typeof createAuthMiddleware === 'function') return createAuthMiddleware({ mastra })
  } catch (err) {
    log.warn(`[browser-stream] cannot load @mastra/hono for Mastra's auth: ${errorText(err)}`)
  }
  if (mastra.getServer()?.auth) {
    throw new Error('setupBrowserStream: this Mastra has server.auth; install @mastra/hono so the browser stream routes use it')
  }
  return async (c, next) => {
    // Auth configured after setup cannot be applied here: refuse rather than let anyone in.
    if (mastra.getServer()?.auth) return jsonError(c, 500, 'auth_unavailable', 'authentication is not available for the browser stream')
    return next()
  }
}

/**
 * Registers `GET /browser/:agentId/stream` (and the session probe and close routes) on `app`
 * and returns `{ injectWebSocket, registry }`; call `injectWebSocket(server)` after `serve()`.
 * The result is also a promise of itself, so Mastra's `await setupBrowserStream(…)` works.
 * @param {import('hono').Hono} app
 * @param {import('../index').BrowserStreamConfig} config
 */
function setupBrowserStream(app, config = {}) {
  if (!app || typeof app.get !== 'function' || typeof app.post !== 'function' || typeof app.request !== 'function') {
    throw new TypeError('setupBrowserStream: app must be a Hono app')
  }
  if (config === null || typeof config !== 'object') throw new TypeError('setupBrowserStream: config must be an object')
  const { getToolset, authenticate, allowedOrigins, authorizeControl, mastra } = config
  if (getToolset !== undefined && typeof getToolset !== 'function') {
    throw new TypeError('setupBrowserStream: getToolset must be a function')
  }
  if (authenticate !== undefined && typeof authenticate !== 'function') {
    throw new TypeError('setupBrowserStream: authenticate must be a function')
  }
  if (authorizeControl !== undefined && typeof authorizeControl !== 'function') {
    throw new TypeError('setupBrowserStream: authorizeControl must be a function')
  }
  if (
    allowedOrigins !== undefined &&
    allowedOrigins !== null &&
    typeof allowedOrigins !== 'string' &&
    typeof allowedOrigins !== 'function' &&
    !(Array.isArray(allowedOrigins) && allowedOrigins.every((o) => typeof o === 'string'))
  ) {
    throw new TypeError("setupBrowserStream: allowedOrigins must be '*', an origin, an array of origins or a function")
  }
  const apiPrefix = normalizePrefix(config.apiPrefix)
  const registry = config.registry ?? new ViewerRegistry(config)
  const nativeSockets = config.nativeSockets !== false && process.platform !== 'win32'
  const log = createLogger(config.logger)
  const { toolsetTimeoutMs } = config
  /** upgrade request → admission decided by the route (agentId, threadId, nonce) */
  const admissions = new WeakMap()
  const basePath = typeof app._basePath === 'string' ? app._basePath.replace(/\/+$/, '') : ''
  const streamPath = new RegExp(`^${escapeRegExp(basePath)}/browser/[^/]+/stream/?$`)

  // The gate of every route, as Route middleware so that it holds whatever the app registers
  // around it: Origin (only when the request has one), Mastra's auth, the authenticate hook.
  const checkOrigin = async (c, next) => {
    const origin = c.req.header('origin')
    if (allowedOrigins !== undefined && allowedOrigins !== null && origin !== undefined) {
      let allowed = false
      try {
        allowed = await originAllowed(allowedOrigins, origin, c)
      } catch (err) {
        contextLogger(log, c).warn(`[browser-stream] allowedOrigins threw: ${errorText(err)}`)
      }
      if (!allowed) return jsonError(c, 403, 'origin_not_allowed', 'this origin may not use the browser stream')
    }
    return next()
  }
  const gate = [checkOrigin]
  if (mastra !== undefined) {
    // These routes are Mastra custom routes that require auth, whatever @mastra/hono's
    // version marks by itself (its middleware reads this map).
    gate.push(async (c, next) => {
      const marked = new Map(c.get('customRouteAuthConfig') ?? [])
      marked.set(`${c.req.method}:${c.req.path}`, true)
      c.set('customRouteAuthConfig', marked)
      return next()
    })
    gate.push(mastraAuthMiddleware(mastra, log))
  }
  if (authenticate) {
    gate.push(async (c, next) => {
      const token = requestToken(c)
      let verdict
      try {
        verdict = await authenticate(c, token)
      } catch (err) {
        // The hook's error may quote the credential: never let it reach the logs.
        contextLogger(log, c).warn(`[browser-stream] authenticate threw: ${errorText(err)}`)
        verdict = false
      }
      if (verdict instanceof Response) return verdict
      if (!verdict) return jsonError(c, 401, 'auth_failed', 'missing or invalid credentials')
      return next()
    })
  }

  /** The ids of a request, or a 400 (the native registry owns the id rules). */
  function ids(c, threadId) {
    const agentId = c.req.param('agentId')
    try {
      channelKey(agentId, threadId)
      return { agentId, threadId }
    } catch (err) {
      return { refusal: jsonError(c, 400, 'bad_request', errorText(err)) }
    }
  }

  app.get(STREAM_ROUTE, ...gate, async (c) => {
    const incoming = c.env?.incoming
    if (!incoming || !upgrading.has(incoming)) {
      return jsonError(c, 426, 'upgrade_required', 'this endpoint only accepts WebSocket upgrades')
    }
    const { refusal, agentId, threadId } = ids(c, c.req.query('threadId') || undefined)
    if (refusal) return refusal
    const protocol = chooseProtocol(c.req.header('sec-websocket-protocol'))
    if (protocol === undefined) {
      return jsonError(c, 400, 'unsupported_protocol', `this server speaks ${EXTENDED_PROTOCOL} (or the compat wire without a subprotocol)`)
    }
    const overCapacity = registry.checkAdmission(agentId, threadId)
    if (overCapacity) return jsonError(c, 503, 'over_capacity', overCapacity)
    let canControl = true
    if (authorizeControl) {
      try {
        canControl = (await authorizeControl(c)) === true
      } catch (err) {
        contextLogger(log, c).warn(`[browser-stream] authorizeControl threw: ${errorText(err)}`)
        canControl = false
      }
    }
    const nonce = randomUUID()
    admissions.set(incoming, { nonce, agentId, threadId, options: { protocol: protocol ?? undefined, canControl } })
    return c.body(null, 204, { [ADMISSION_HEADER]: nonce })
  })

  // Mastra: `{hasSession, screencastAvailable: true}`, hasSession from the toolset's
  // `hasThreadSession(threadId)`, false without a thread or a toolset.
  app.get(`${apiPrefix}/agents/:agentId/browser/session`, ...gate, async (c) => {
    const { refusal, agentId, threadId } = ids(c, c.req.query('threadId') || undefined)
    if (refusal) return refusal
    let toolset
    try {
      toolset = await lookUpToolset(getToolset, agentId, threadId, PROBE_TOOLSET_TIMEOUT_MS)
    } catch (err) {
      contextLogger(log, c).error(`[browser-stream] getToolset failed for the session probe of ${agentId}: ${errorText(err)}`)
      return jsonError(c, 500, 'toolset_failed', 'the browser toolset could not be looked up')
    }
    let hasSession = false
    try {
      if (toolset && threadId !== undefined && typeof toolset.hasThreadSession === 'function') {
        hasSession = toolset.hasThreadSession(threadId) === true
      } else if (toolset && typeof toolset.hasThreadSession !== 'function' && typeof toolset.isBrowserRunning === 'function') {
        // A toolset without threads: its one browser is the session.
        hasSession = toolset.isBrowserRunning(threadId) === true
      }
    } catch (err) {
      contextLogger(log, c).warn(`[browser-stream] the toolset's session check failed for ${agentId}: ${errorText(err)}`)
    }
    return c.json({ hasSession, screencastAvailable: true })
  })

  // Mastra: the thread from the JSON body; under thread scope only that thread's session
  // closes, otherwise the whole browser.
  app.post(`${apiPrefix}/agents/:agentId/browser/close`, ...gate, async (c) => {
    let bodyThread
    try {
      const body = await c.req.json()
      if (typeof body?.threadId === 'string' && body.threadId !== '') bodyThread = body.threadId
    } catch {
      // No body or not JSON: no thread, as in Mastra.
    }
    const { refusal, agentId, threadId } = ids(c, bodyThread ?? (c.req.query('threadId') || undefined))
    if (refusal) return refusal
    let toolset
    try {
      toolset = await lookUpToolset(getToolset, agentId, threadId, toolsetTimeoutMs)
    } catch (err) {
      contextLogger(log, c).error(`[browser-stream] getToolset failed closing the browser of ${agentId}: ${errorText(err)}`)
      return c.json({ error: 'Failed to close browser' }, 500)
    }
    if (!toolset) return c.json({ error: 'No browser session for this agent' }, 404)
    try {
      if (threadId !== undefined && toolset.getScope?.() === 'thread') {
        await registry.closeBrowserSessionOf(agentId, threadId)
        if (typeof toolset.closeThreadSession === 'function') await toolset.closeThreadSession(threadId)
      } else {
        // The whole browser goes: every channel of the agent is told.
        await registry.closeAgentSessions(agentId)
        await toolset.close()
      }
      return c.json({ success: true })
    } catch (err) {
      contextLogger(log, c).error(`[browser-stream] closing the browser of ${agentId}: ${errorText(err)}`)
      return c.json({ error: 'Failed to close browser' }, 500)
    }
  })

  const bridgeServer = new WebSocketServer({
    noServer: true,
    maxPayload: config.maxMessageBytes ?? 64 * 1024,
    perMessageDeflate: false,
    // Echo the subprotocol the route chose (the extended one), never anything else.
    handleProtocols: (offered, req) => bridgedProtocols.get(req) ?? false,
  })
  /** upgrade request → subprotocol chosen for a bridged socket */
  const bridgedProtocols = new WeakMap()

  function handOver(req, socket, head, { agentId, threadId, options }, requestLog) {
    const fd = socket._handle?.fd
    const adoptable = nativeSockets && !socket.encrypted && typeof fd === 'number' && fd >= 0
    if (adoptable) {
      try {
        registry.adoptSocket(fd, req.headers['sec-websocket-key'], head, agentId, threadId, options)
        // Same tick: libuv closes its fd without shutdown(), the duplicate lives on in Rust.
        socket.destroy()
        return
      } catch (err) {
        // A refusal between the route's check and here was counted by the registry already.
        const refused = registry.admissionRefusal(agentId, threadId)
        if (refused) return rejectUpgrade(socket, 503, 'over_capacity', refused)
        requestLog.warn(`[browser-stream] native handover failed, bridging in JS: ${errorText(err)}`)
      }
    }
    if (options.protocol) bridgedProtocols.set(req, options.protocol)
    bridgeServer.handleUpgrade(req, socket, head, (ws) => {
      try {
        registry.attachSocket(ws, agentId, threadId, options)
      } catch (err) {
        ws.close(1013, errorText(err).slice(0, 120))
      }
    })
  }

  async function handleUpgrade(server, req, socket, head, requestLog) {
    const url = new URL(req.url ?? '/', 'http://localhost')
    if (!streamPath.test(url.pathname)) {
      // Not ours: other listeners handle it. With no other listener nobody would ever answer
      // it, so answer 404 rather than leave the socket open.
      if (server.listenerCount('upgrade') <= 1) {
        socket.on('error', () => {})
        return rejectUpgrade(socket, 404, 'not_found', 'no WebSocket endpoint at this path')
      }
      return
    }
    socket.on('error', () => {})
    const upgradeHeader = String(req.headers.upgrade ?? '').toLowerCase()
    const key = req.headers['sec-websocket-key']
    if (req.method !== 'GET' || upgradeHeader !== 'websocket' || typeof key !== 'string' || !/^[A-Za-z0-9+/]{22}==$/.test(key)) {
      return rejectUpgrade(socket, 400, 'bad_request', 'not a valid WebSocket upgrade request')
    }
    if (req.headers['sec-websocket-version'] !== '13') {
      return rejectUpgrade(socket, 426, 'bad_request', 'unsupported WebSocket version', {
        'sec-websocket-version': '13',
      })
    }
    const headers = new Headers()
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i], req.rawHeaders[i + 1])
    // A Host that is no host name would make the request URL invalid; the route reads only
    // path and query.
    const host = /^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/.test(req.headers.host ?? '') ? req.headers.host : 'localhost'
    upgrading.add(req)
    let response
    try {
      response = await app.request(`http://${host}${url.pathname}${url.search}`, { method: 'GET', headers }, { incoming: req, outgoing: undefined })
    } catch (err) {
      requestLog.error(`[browser-stream] upgrade request failed in the app: ${errorText(err)}`)
      return rejectUpgrade(socket, 500, 'internal_error', 'the server failed to handle the upgrade')
    } finally {
      upgrading.delete(req)
    }
    const admission = admissions.get(req)
    admissions.delete(req)
    if (socket.destroyed) return
    // The app's final answer decides: middleware that refused after the route ran (or threw,
    // which Hono answers 500) replaced the route's admission.
    const admitted = admission && response.status === 204 && response.headers.get(ADMISSION_HEADER) === admission.nonce
    if (!admitted) return writeHttpResponse(socket, response)
    return handOver(req, socket, head, admission, requestLog)
  }

  /**
   * Hooks the stream route's WebSocket upgrades on a Node HTTP(S) server (the value `serve()`
   * returns). Upgrades for other paths are left to other listeners.
   * @param {import('node:http').Server} server
   */
  function injectWebSocket(server) {
    if (!server || typeof server.on !== 'function') throw new TypeError('injectWebSocket: server must be a Node HTTP server')
    server.on('upgrade', (req, socket, head) => {
      const requestLog = redactingLogger(log, requestSecrets(req.url ?? '/', req.headers))
      handleUpgrade(server, req, socket, head, requestLog).catch((err) => {
        requestLog.error(`[browser-stream] upgrade failed: ${errorText(err)}`)
        socket.destroy()
      })
    })
    server.on('close', () => void registry.close())
  }

  const result = { injectWebSocket, registry }
  // Mastra's setupBrowserStream is async: `await` (or `.then`) gets the same object.
  return Object.assign(Object.create(null), result, {
    then(onFulfilled, onRejected) {
      return Promise.resolve(result).then(onFulfilled, onRejected)
    },
  })
}

module.exports = { setupBrowserStream, EXTENDED_PROTOCOL }

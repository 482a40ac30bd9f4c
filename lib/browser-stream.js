'use strict'
// setupBrowserStream: the Hono glue. Owns the routes it registers on the user's app (the
// stream route, the session probe and the close route), running upgrade requests through the
// app so its middleware decides admission, and handing admitted sockets over: plain TCP to
// Rust by file descriptor, anything else to a `ws` socket bridged through JS. Must not touch
// frames or viewer state beyond handing sockets to the registry.

const { STATUS_CODES } = require('node:http')
const { WebSocketServer } = require('ws')
const { ViewerRegistry } = require('./viewer-registry')
const { errorText, isToolset, withTimeout } = require('./toolset-source')

const STREAM_ROUTE = '/browser/:agentId/stream'
/** The subprotocol of the extended mode (docs/PROTOCOL.md). */
const EXTENDED_PROTOCOL = 'browser-stream.v1'

/** Marks upgrade requests that injectWebSocket is running through the app. */
const upgrading = new WeakSet()

function jsonError(c, status, error, message) {
  return c.json({ error, message }, status)
}

function normalizePrefix(prefix) {
  if (prefix === undefined) return '/api'
  if (typeof prefix !== 'string') throw new TypeError('apiPrefix must be a string')
  const trimmed = prefix.replace(/\/+$/, '')
  if (trimmed === '') return ''
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

/** `text` with every occurrence of `secret` (a token), plain or URL-encoded, replaced. */
function redact(text, secret) {
  if (!secret) return text
  let out = text
  for (const form of new Set([secret, encodeURIComponent(secret), encodeURI(secret)])) out = out.split(form).join('[redacted]')
  return out
}

function originAllowed(allowedOrigins, origin) {
  if (!allowedOrigins) return true
  if (typeof allowedOrigins === 'function') return allowedOrigins(origin) === true
  if (!origin) return false
  return allowedOrigins.includes('*') || allowedOrigins.includes(origin)
}

/** Writes a Fetch `Response` as a raw HTTP/1.1 response on a socket and ends it. */
async function writeHttpResponse(socket, response) {
  let body = Buffer.alloc(0)
  try {
    body = Buffer.from(await response.arrayBuffer())
  } catch {
    // An unreadable body still gets its status line.
  }
  if (socket.destroyed) return
  const status = response.status
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`
  for (const [name, value] of response.headers) {
    if (/^(content-length|connection|transfer-encoding|keep-alive)$/i.test(name)) continue
    head += `${name}: ${value}\r\n`
  }
  head += `Connection: close\r\nContent-Length: ${body.length}\r\n\r\n`
  socket.end(Buffer.concat([Buffer.from(head, 'latin1'), body]))
}

function rejectUpgrade(socket, status, error, message, extraHeaders = {}) {
  const response = new Response(JSON.stringify({ error, message }), {
    status,
    headers: { 'content-type': 'application/json', ...extraHeaders },
  })
  return writeHttpResponse(socket, response)
}

/**
 * Registers `GET /browser/:agentId/stream` (and the session probe and close routes) on `app`
 * and returns `{ injectWebSocket, registry }`; call `injectWebSocket(server)` after `serve()`.
 * @param {import('hono').Hono} app
 * @param {import('../index').BrowserStreamConfig} config
 */
function setupBrowserStream(app, config = {}) {
  if (!app || typeof app.get !== 'function' || typeof app.post !== 'function' || typeof app.request !== 'function') {
    throw new TypeError('setupBrowserStream: app must be a Hono app')
  }
  if (config === null || typeof config !== 'object') throw new TypeError('setupBrowserStream: config must be an object')
  const { getToolset, authenticate, allowedOrigins, authorizeControl } = config
  if (getToolset !== undefined && typeof getToolset !== 'function') {
    throw new TypeError('setupBrowserStream: getToolset must be a function')
  }
  if (authenticate !== undefined && typeof authenticate !== 'function') {
    throw new TypeError('setupBrowserStream: authenticate must be a function')
  }
  if (authorizeControl !== undefined && typeof authorizeControl !== 'function') {
    throw new TypeError('setupBrowserStream: authorizeControl must be a function')
  }
  if (allowedOrigins !== undefined && typeof allowedOrigins !== 'function' && !Array.isArray(allowedOrigins)) {
    throw new TypeError('setupBrowserStream: allowedOrigins must be an array of origins or a function')
  }
  const apiPrefix = normalizePrefix(config.apiPrefix)
  const registry = config.registry ?? new ViewerRegistry(config)
  const nativeSockets = config.nativeSockets !== false && process.platform !== 'win32'
  const log = { info() {}, warn: console.warn, error: console.error, ...(config.logger ?? {}) }
  /** upgrade request → admission decided by the route (agentId, threadId) */
  const admissions = new WeakMap()
  const basePath = typeof app._basePath === 'string' ? app._basePath.replace(/\/+$/, '') : ''
  const streamPath = new RegExp(`^${escapeRegExp(basePath)}/browser/[^/]+/stream/?$`)

  /**
   * What every route of this module checks first: the Origin allow-list (`requireOrigin`: a
   * request without an Origin is refused too, as browsers always send one on WebSocket
   * upgrades), the authenticate hook, and the id rules. Returns `{ refusal }` (a Response) or
   * `{ agentId, threadId, token, overCapacity }`.
   */
  async function gate(c, { requireOrigin }) {
    const origin = c.req.header('origin')
    if ((origin !== undefined || requireOrigin) && !originAllowed(allowedOrigins, origin)) {
      return { refusal: jsonError(c, 403, 'origin_not_allowed', 'this origin may not use the browser stream') }
    }
    const token = requestToken(c)
    if (authenticate) {
      let verdict
      try {
        verdict = await authenticate(c, token)
      } catch (err) {
        // The hook's error may quote the credential: never let it reach the logs.
        log.warn(`[browser-stream] authenticate threw: ${redact(errorText(err), token)}`)
        verdict = false
      }
      if (verdict instanceof Response) return { refusal: verdict }
      if (!verdict) return { refusal: jsonError(c, 401, 'auth_failed', 'missing or invalid credentials') }
    }
    const agentId = c.req.param('agentId')
    const threadId = c.req.query('threadId') || undefined
    try {
      // The native registry owns the id rules (length, control characters, separators, ':').
      const overCapacity = registry.checkAdmission(agentId, threadId)
      return { agentId, threadId, token, overCapacity }
    } catch (err) {
      return { refusal: jsonError(c, 400, 'bad_request', errorText(err)) }
    }
  }

  app.get(STREAM_ROUTE, async (c) => {
    const incoming = c.env?.incoming
    if (!incoming || !upgrading.has(incoming)) {
      return jsonError(c, 426, 'upgrade_required', 'this endpoint only accepts WebSocket upgrades')
    }
    const { refusal, agentId, threadId, token, overCapacity } = await gate(c, { requireOrigin: true })
    if (refusal) return refusal
    const protocol = chooseProtocol(c.req.header('sec-websocket-protocol'))
    if (protocol === undefined) {
      return jsonError(c, 400, 'unsupported_protocol', `this server speaks ${EXTENDED_PROTOCOL} (or the compat wire without a subprotocol)`)
    }
    if (overCapacity) return jsonError(c, 503, 'over_capacity', overCapacity)
    let canControl = true
    if (authorizeControl) {
      try {
        canControl = (await authorizeControl(c)) === true
      } catch (err) {
        log.warn(`[browser-stream] authorizeControl threw: ${redact(errorText(err), token)}`)
        canControl = false
      }
    }
    admissions.set(incoming, { agentId, threadId, options: { protocol: protocol ?? undefined, canControl } })
    return c.body(null, 204)
  })

  app.get(`${apiPrefix}/agents/:agentId/browser/session`, async (c) => {
    const { refusal, agentId, threadId } = await gate(c, { requireOrigin: false })
    if (refusal) return refusal
    let toolset
    try {
      toolset = getToolset ? await withTimeout(Promise.resolve(getToolset(agentId, threadId)), 5000, 'getToolset') : undefined
    } catch (err) {
      return jsonError(c, 500, 'toolset_failed', errorText(err))
    }
    const available = isToolset(toolset)
    let running = false
    try {
      running = available && toolset.isBrowserRunning() === true
    } catch {
      running = false
    }
    return c.json({ hasSession: running, screencastAvailable: available })
  })

  app.post(`${apiPrefix}/agents/:agentId/browser/close`, async (c) => {
    const { refusal, agentId, threadId } = await gate(c, { requireOrigin: false })
    if (refusal) return refusal
    let toolset
    try {
      toolset = getToolset ? await Promise.resolve(getToolset(agentId, threadId)) : undefined
    } catch (err) {
      return jsonError(c, 500, 'toolset_failed', errorText(err))
    }
    if (!toolset) return c.json({ error: 'No browser session for this agent' }, 404)
    try {
      await registry.closeBrowserSession(threadId ? `${agentId}:${threadId}` : agentId)
      await toolset.close?.()
      return c.json({ success: true })
    } catch (err) {
      log.error(`[browser-stream] closing browser of ${agentId}: ${errorText(err)}`)
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

  function handOver(req, socket, head, { agentId, threadId, options }) {
    const fd = socket._handle?.fd
    const adoptable = nativeSockets && !socket.encrypted && typeof fd === 'number' && fd >= 0
    if (adoptable) {
      try {
        registry.adoptSocket(fd, req.headers['sec-websocket-key'], head, agentId, threadId, options)
        // Same tick: libuv closes its fd without shutdown(), the duplicate lives on in Rust.
        socket.destroy()
        return
      } catch (err) {
        const refused = registry.checkAdmission(agentId, threadId)
        if (refused) return rejectUpgrade(socket, 503, 'over_capacity', refused)
        log.warn(`[browser-stream] native handover failed, bridging in JS: ${errorText(err)}`)
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

  async function handleUpgrade(server, req, socket, head) {
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
    const host = req.headers.host ?? 'localhost'
    upgrading.add(req)
    let response
    try {
      response = await app.request(`http://${host}${req.url}`, { method: 'GET', headers }, { incoming: req, outgoing: undefined })
    } catch (err) {
      log.error(`[browser-stream] upgrade request failed in the app: ${errorText(err)}`)
      return rejectUpgrade(socket, 500, 'internal_error', 'the server failed to handle the upgrade')
    } finally {
      upgrading.delete(req)
    }
    const admission = admissions.get(req)
    admissions.delete(req)
    if (socket.destroyed) return
    if (!admission) return writeHttpResponse(socket, response)
    return handOver(req, socket, head, admission)
  }

  /**
   * Hooks the stream route's WebSocket upgrades on a Node HTTP(S) server (the value `serve()`
   * returns). Upgrades for other paths are left to other listeners.
   * @param {import('node:http').Server} server
   */
  function injectWebSocket(server) {
    if (!server || typeof server.on !== 'function') throw new TypeError('injectWebSocket: server must be a Node HTTP server')
    server.on('upgrade', (req, socket, head) => {
      handleUpgrade(server, req, socket, head).catch((err) => {
        log.error(`[browser-stream] upgrade failed: ${errorText(err)}`)
        socket.destroy()
      })
    })
    server.on('close', () => void registry.close())
  }

  return { injectWebSocket, registry }
}

module.exports = { setupBrowserStream, EXTENDED_PROTOCOL }

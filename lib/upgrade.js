'use strict'
// The WebSocket upgrades of the stream route. `injectWebSocket(server)` runs each upgrade
// request for the stream path through the app, so that the app's final response decides
// admission, and hands admitted sockets over: plain TCP to Rust by file descriptor, anything
// else (TLS, no usable fd, a failed hand-over) to a `ws` socket bridged through JS. Owns the
// admission handshake with the stream route (`upgradingRequest`, `admit`), the checks of an
// upgrade request before the app sees it and the hand-over. Must not decide admission itself
// (the gate and the stream route do), touch frames or viewer state beyond handing sockets to
// the registry, and never logs a request's credentials.

const { randomUUID } = require('node:crypto')
const { WebSocketServer } = require('ws')
const { CloseCode, registryDefault } = require('./native-rules')
const { rejectUpgrade, writeHttpResponse } = require('./http')
const { redactingLogger, requestSecrets } = require('./log')
const { errorText } = require('./util')

/**
 * The stream route admits an upgrade by answering 204 with this header carrying a nonce of
 * that request; only when the app's final response still is that answer is the socket
 * upgraded, so middleware that refuses after `await next()` (or throws) decides.
 */
const ADMISSION_HEADER = 'x-browser-stream-admission'

/** Largest client message on a bridged socket when unset: what Rust allows its own sockets. */
const DEFAULT_MAX_MESSAGE_BYTES = registryDefault('maxMessageBytes')

/** Marks upgrade requests that injectWebSocket is running through the app. */
const upgrading = new WeakSet()

/**
 * The upgrades of one setupBrowserStream.
 * @param {object} o
 * @param {import('hono').Hono} o.app
 * @param {import('./viewer-registry').ViewerRegistry} o.registry
 * @param {{info: Function, warn: Function, error: Function}} o.log
 * @param {RegExp} o.streamPath the stream route's path (routes.js streamPathPattern)
 * @param {boolean} o.nativeSockets whether plain-TCP sockets go to Rust by fd
 * @param {number} [o.maxMessageBytes] largest client message on a bridged socket
 */
function createUpgrades({ app, registry, log, streamPath, nativeSockets, maxMessageBytes }) {
  /** upgrade request → admission decided by the route (channel key, viewer options, nonce) */
  const admissions = new WeakMap()

  /** The Node request that the stream route's context `c` upgrades, or undefined when none. */
  function upgradingRequest(c) {
    const incoming = c.env?.incoming
    return incoming && upgrading.has(incoming) ? incoming : undefined
  }

  /**
   * The stream route's answer admitting upgrade request `incoming` as a viewer of channel
   * `key` with `options`; the upgrade goes ahead only if the app's final response is it.
   */
  function admit(c, incoming, { key, options }) {
    const nonce = randomUUID()
    admissions.set(incoming, { nonce, key, options })
    return c.body(null, 204, { [ADMISSION_HEADER]: nonce })
  }

  const bridgeServer = new WebSocketServer({
    noServer: true,
    maxPayload: maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    perMessageDeflate: false,
    // Echo the subprotocol the route chose (the extended one), never anything else.
    handleProtocols: (offered, req) => bridgedProtocols.get(req) ?? false,
  })
  /** upgrade request → subprotocol chosen for a bridged socket */
  const bridgedProtocols = new WeakMap()

  function handOver(req, socket, head, { key, options }, requestLog) {
    const fd = socket._handle?.fd
    const adoptable = nativeSockets && !socket.encrypted && typeof fd === 'number' && fd >= 0
    if (adoptable) {
      try {
        registry.adoptSocket(fd, req.headers['sec-websocket-key'], head, key, options)
        // Same tick: libuv closes its fd without shutdown(), the duplicate lives on in Rust.
        socket.destroy()
        return
      } catch (err) {
        // A refusal between the route's check and here was counted by the registry already.
        const refused = registry.admissionRefusal(key, false)
        if (refused) return rejectUpgrade(socket, 503, 'over_capacity', refused)
        requestLog.warn(`[browser-stream] native handover failed, bridging in JS: ${errorText(err)}`)
      }
    }
    if (options.protocol) bridgedProtocols.set(req, options.protocol)
    bridgeServer.handleUpgrade(req, socket, head, (ws) => {
      try {
        registry.attachSocket(ws, key, options)
      } catch (err) {
        ws.close(CloseCode.TRY_AGAIN_LATER, errorText(err).slice(0, 120))
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

  return { upgradingRequest, admit, injectWebSocket }
}

module.exports = { createUpgrades }

'use strict'
// The routes setupBrowserStream registers on the app, each behind the gate (gate.js): the
// stream route `GET /browser/:agentId/stream`, which checks a viewer's request and admits its
// WebSocket upgrade through upgrade.js, and the session probe and close routes under the API
// prefix with Mastra's semantics (paths, status codes, JSON bodies). Owns the route paths, the
// prefix rule, the id check of a request, the subprotocol choice, `authorizeControl` and when a
// single-use viewer link counts as used. Must not touch sockets (upgrade.js hands them over)
// nor source sessions beyond the registry's close calls, and never logs a request's credentials.

const { channelKey, metricsContentType } = require('./native')
const { jsonError } = require('./http')
const { EXTENDED_PROTOCOL } = require('./native-rules')
const { contextLogger } = require('./log')
const { lookUpToolset } = require('./sources/toolset')
const { errorText } = require('./util')

const STREAM_ROUTE = '/browser/:agentId/stream'
/** How long the probe waits for `getToolset`. */
const PROBE_TOOLSET_TIMEOUT_MS = 5000
/** What `registry.metrics()` is: the Prometheus text format (Rust's encoder says which). */
const METRICS_CONTENT_TYPE = metricsContentType()

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

/** The paths of the stream route on `app` (under its base path), as the upgrade matches them. */
function streamPathPattern(app) {
  const basePath = typeof app._basePath === 'string' ? app._basePath.replace(/\/+$/, '') : ''
  const route = escapeRegExp(STREAM_ROUTE).replace(':agentId', '[^/]+')
  return new RegExp(`^${escapeRegExp(basePath)}${route}/?$`)
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

/** The ids of a request and their channel key, or a 400 (the native registry owns the id rules). */
function ids(c, threadId) {
  const agentId = c.req.param('agentId')
  try {
    return { agentId, threadId, key: channelKey(agentId, threadId) }
  } catch (err) {
    return { refusal: jsonError(c, 400, 'bad_request', errorText(err)) }
  }
}

/**
 * Registers the stream route and the session probe and close routes on `app`.
 * @param {import('hono').Hono} app
 * @param {object} o
 * @param {{routes: Function[], stream: Function[], viewerGrant: Function}} o.gate middleware in front of the
 *   probe and close routes and of the stream route, and the grant of a viewer link (gate.js)
 * @param {{upgradingRequest: Function, admit: Function}} o.upgrades the admission handshake (upgrade.js)
 * @param {import('./viewer-registry').ViewerRegistry} o.registry
 * @param {string} o.apiPrefix normalised (normalizePrefix)
 * @param {Function} [o.getToolset]
 * @param {number} [o.toolsetTimeoutMs] how long the close route waits for `getToolset`
 * @param {Function} [o.authorizeControl]
 * @param {boolean} [o.metricsRoute] serve `GET {apiPrefix}/browser/metrics`
 * @param {{info: Function, warn: Function, error: Function}} o.log
 */
function registerRoutes(app, { gate, upgrades, registry, apiPrefix, getToolset, toolsetTimeoutMs, authorizeControl, metricsRoute, log }) {
  if (metricsRoute) {
    // Behind the same gate as the probe and close routes: a scraper needs their credentials.
    app.get(`${apiPrefix}/browser/metrics`, ...gate.routes, (c) => {
      try {
        return c.body(registry.metrics(), 200, { 'content-type': METRICS_CONTENT_TYPE, 'cache-control': 'no-store' })
      } catch (err) {
        contextLogger(log, c).error(`[browser-stream] metrics: ${errorText(err)}`)
        return jsonError(c, 500, 'metrics_failed', 'the metrics could not be written')
      }
    })
  }
  app.get(STREAM_ROUTE, ...gate.stream, async (c) => {
    const incoming = upgrades.upgradingRequest(c)
    if (!incoming) {
      return jsonError(c, 426, 'upgrade_required', 'this endpoint only accepts WebSocket upgrades')
    }
    const { refusal, key } = ids(c, c.req.query('threadId') || undefined)
    if (refusal) return refusal
    const protocol = chooseProtocol(c.req.header('sec-websocket-protocol'))
    if (protocol === undefined) {
      return jsonError(c, 400, 'unsupported_protocol', `this server speaks ${EXTENDED_PROTOCOL} (or the compat wire without a subprotocol)`)
    }
    const overCapacity = registry.admissionRefusal(key)
    if (overCapacity) return jsonError(c, 503, 'over_capacity', overCapacity)
    let canControl = true
    const grant = gate.viewerGrant(c)
    if (grant) {
      // Used once the route admits it, not before: a plain GET (a link preview) or a refusal
      // above leaves a single-use link as it was.
      const refused = grant.consume()
      if (refused) return jsonError(c, refused.status, refused.error, refused.message)
      // The link's creator decided control; authorizeControl judges who a request is, and a
      // link's holder is nobody the auth knows.
      canControl = grant.canControl
    } else if (authorizeControl) {
      try {
        canControl = (await authorizeControl(c)) === true
      } catch (err) {
        contextLogger(log, c).warn(`[browser-stream] authorizeControl threw: ${errorText(err)}`)
        canControl = false
      }
    }
    return upgrades.admit(c, incoming, { key, options: { protocol: protocol ?? undefined, canControl } })
  })

  // Mastra: `{hasSession, screencastAvailable: true}`, hasSession from the toolset's
  // `hasThreadSession(threadId)`, false without a thread or a toolset.
  app.get(`${apiPrefix}/agents/:agentId/browser/session`, ...gate.routes, async (c) => {
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
  app.post(`${apiPrefix}/agents/:agentId/browser/close`, ...gate.routes, async (c) => {
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
}

module.exports = { registerRoutes, normalizePrefix, streamPathPattern }

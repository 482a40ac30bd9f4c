'use strict'
// The gate of the browser stream's routes, as Hono route middleware so that it holds whatever
// the app registers around it: the Origin check (`allowedOrigins`, only for a request that has
// an Origin), Mastra's auth (`mastra`, through @mastra/hono) and the `authenticate` hook with
// the request's token; on the stream route a scoped viewer link (`?token=`) is checked after
// the Origin and instead of the auth. Owns which origins Mastra's `allowedOrigins` shapes
// admit, what a request's token is, which requests a viewer link decides and the refusals of
// the gate (403, 401, 500 without Mastra's auth). Must not read the routes' parameters (save
// the stream route's ids a link is checked against), check a link itself (viewer-token.js
// does) or admit upgrades (routes.js and upgrade.js do), and never logs a request's
// credentials.

const { createRequire } = require('node:module')
const path = require('node:path')
const { jsonError } = require('./http')
const { REFUSALS: VIEWER_TOKEN_REFUSALS } = require('./viewer-token')
const { contextLogger } = require('./log')
const { errorText } = require('./util')

/** The token of a request: `Authorization: Bearer …`, else `?apiKey=`. */
function requestToken(c) {
  const header = c.req.header('authorization')
  const match = header && /^Bearer\s+(.+)$/i.exec(header)
  if (match) return match[1].trim()
  return c.req.query('apiKey') || undefined
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
 * The gate's middleware, in order: Origin, then (with `mastra`) Mastra's auth, then (with
 * `authenticate`) the hook; the stream route's gate checks a `?token=` after the Origin, and
 * a request that carries one is decided by it alone (admitted without the auth, or refused
 * 401 without falling back to it). Throws when `mastra` is no Mastra, or needs an auth that
 * cannot be loaded.
 * @param {object} o
 * @param {import('../index').BrowserStreamConfig['allowedOrigins']} [o.allowedOrigins]
 * @param {any} [o.mastra]
 * @param {Function} [o.authenticate] (c, token) => boolean | Response | Promise of either
 * @param {Function} o.checkViewerToken (token, agentId, threadId) => { refusal } | { canControl, consume } (the registry's)
 * @param {{info: Function, warn: Function, error: Function}} o.log
 * @returns {{ routes: Function[], stream: Function[], viewerGrant: Function }} Hono middleware
 *   of the probe and close routes and of the stream route, and `viewerGrant(c)`: what the
 *   link that admitted the stream request `c` grants, undefined when no link did
 */
function createGate({ allowedOrigins, mastra, authenticate, checkViewerToken, log }) {
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
  const auth = []
  if (mastra !== undefined) {
    // These routes are Mastra custom routes that require auth, whatever @mastra/hono's
    // version marks by itself (its middleware reads this map).
    auth.push(async (c, next) => {
      const marked = new Map(c.get('customRouteAuthConfig') ?? [])
      marked.set(`${c.req.method}:${c.req.path}`, true)
      c.set('customRouteAuthConfig', marked)
      return next()
    })
    auth.push(mastraAuthMiddleware(mastra, log))
  }
  if (authenticate) {
    auth.push(async (c, next) => {
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

  /** stream request's Hono context → what the viewer link that admitted it grants */
  const grants = new WeakMap()
  const checkLink = async (c, next) => {
    const tokens = c.req.queries('token')
    if (tokens === undefined) return next()
    // The ids as the stream route reads them. Two tokens would leave which one decides to
    // chance: neither does.
    const verdict =
      tokens.length === 1
        ? checkViewerToken(tokens[0], c.req.param('agentId'), c.req.query('threadId') || undefined)
        : { refusal: VIEWER_TOKEN_REFUSALS.invalid }
    const { refusal } = verdict
    if (refusal) return jsonError(c, refusal.status, refusal.error, refusal.message)
    grants.set(c, verdict)
    return next()
  }
  // The link stands in for the auth: its creator (a server that passed the auth) decided who
  // may watch which channel and how.
  const unlessLink = (middleware) => (c, next) => (grants.has(c) ? next() : middleware(c, next))
  return {
    routes: [checkOrigin, ...auth],
    stream: [checkOrigin, checkLink, ...auth.map(unlessLink)],
    viewerGrant: (c) => grants.get(c),
  }
}

module.exports = { createGate }

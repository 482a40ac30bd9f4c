'use strict'
// The gate of the browser stream's routes, as Hono route middleware so that it holds whatever
// the app registers around it: the Origin check (`allowedOrigins`, only for a request that has
// an Origin), Mastra's auth (`mastra`, through @mastra/hono) and the `authenticate` hook with
// the request's token. Owns which origins Mastra's `allowedOrigins` shapes admit, what a
// request's token is and the refusals of the gate (403, 401, 500 without Mastra's auth). Must
// not read the routes' parameters or admit upgrades (routes.js and upgrade.js do), and never
// logs a request's credentials.

const { createRequire } = require('node:module')
const path = require('node:path')
const { jsonError } = require('./http')
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
 * `authenticate`) the hook. Throws when `mastra` is no Mastra, or needs an auth that cannot be
 * loaded.
 * @param {object} o
 * @param {import('../index').BrowserStreamConfig['allowedOrigins']} [o.allowedOrigins]
 * @param {any} [o.mastra]
 * @param {Function} [o.authenticate] (c, token) => boolean | Response | Promise of either
 * @param {{info: Function, warn: Function, error: Function}} o.log
 * @returns {Function[]} Hono middleware
 */
function createGate({ allowedOrigins, mastra, authenticate, log }) {
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
  return gate
}

module.exports = { createGate }

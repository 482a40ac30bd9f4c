'use strict'
// setupBrowserStream: the drop-in for Mastra's function of the same name. Owns reading and
// checking its config and wiring the pieces: the ViewerRegistry (or the one given), the gate
// (gate.js), the routes (routes.js) and the WebSocket upgrades (upgrade.js). Must not hold
// route, gate or socket logic of its own, touch frames or viewer state, or log credentials.

const { ViewerRegistry } = require('./viewer-registry')
const { createGate } = require('./gate')
const { registerRoutes, normalizePrefix, streamPathPattern } = require('./routes')
const { createUpgrades } = require('./upgrade')
const { createLogger } = require('./log')

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
  const { toolsetTimeoutMs, maxMessageBytes } = config

  // The gate first: a Mastra whose auth cannot be applied fails setup before any route exists.
  const gate = createGate({
    allowedOrigins,
    mastra,
    authenticate,
    checkViewerToken: (token, agentId, threadId) => registry.checkViewerToken(token, agentId, threadId),
    log,
  })
  const upgrades = createUpgrades({ app, registry, log, streamPath: streamPathPattern(app), nativeSockets, maxMessageBytes })
  if (config.metricsRoute !== undefined && typeof config.metricsRoute !== 'boolean') {
    throw new TypeError('setupBrowserStream: metricsRoute must be a boolean')
  }
  const metricsRoute = config.metricsRoute === true
  registerRoutes(app, { gate, upgrades, registry, apiPrefix, getToolset, toolsetTimeoutMs, authorizeControl, metricsRoute, log })

  const result = { injectWebSocket: upgrades.injectWebSocket, registry }
  // Mastra's setupBrowserStream is async: `await` (or `.then`) gets the same object.
  return Object.assign(Object.create(null), result, {
    then(onFulfilled, onRejected) {
      return Promise.resolve(result).then(onFulfilled, onRejected)
    },
  })
}

module.exports = { setupBrowserStream }

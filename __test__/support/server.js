'use strict'
// A real Hono server on @hono/node-server with setupBrowserStream, and what tests check of it:
// its log lines and the fixed texts it tells viewers.

const { Hono } = require('hono')
const { serve } = require('@hono/node-server')
const { setupBrowserStream } = require('../..')

/**
 * Starts a Hono app on @hono/node-server with setupBrowserStream. `configure(app)` may add
 * middleware before the stream routes are registered.
 */
async function startServer(config = {}, { configure, createServer, serverOptions } = {}) {
  const app = new Hono()
  configure?.(app)
  app.get('/health', (c) => c.json({ ok: true }))
  const { injectWebSocket, registry } = setupBrowserStream(app, { lingerMs: 100, ...config })
  const server = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1', createServer, serverOptions }, () => resolve(s))
  })
  injectWebSocket(server)
  const { port } = server.address()
  const scheme = createServer ? 'wss' : 'ws'
  return {
    app,
    server,
    registry,
    port,
    url: (agentId, query = '') => `${scheme}://127.0.0.1:${port}/browser/${agentId}/stream${query}`,
    async close() {
      await registry.close()
      server.closeAllConnections?.()
      await new Promise((resolve) => server.close(() => resolve()))
    },
  }
}

/**
 * Another Hono app on @hono/node-server with setupBrowserStream over an existing `registry`
 * (several apps may share one), e.g. one that hands sockets to Rust and one that bridges them
 * in JS (`nativeSockets: false`). Closing it leaves the registry open.
 */
async function serveRegistry(registry, config = {}) {
  const app = new Hono()
  const { injectWebSocket } = setupBrowserStream(app, { registry, ...config })
  const server = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s))
  })
  injectWebSocket(server)
  const { port } = server.address()
  return {
    app,
    port,
    url: (agentId, query = '') => `ws://127.0.0.1:${port}/browser/${agentId}/stream${query}`,
    close: () => {
      server.closeAllConnections?.()
      return new Promise((resolve) => server.close(() => resolve()))
    },
  }
}

/**
 * Two apps over `registry`: one hands plain-TCP sockets to Rust (`native`), the other keeps
 * them in JS (`bridged`). `close()` closes the registry, then both servers.
 */
async function nativeAndBridged(registry) {
  const native = await serveRegistry(registry, { nativeSockets: true })
  const bridged = await serveRegistry(registry, { nativeSockets: false })
  return {
    native,
    bridged,
    async close() {
      await registry.close()
      await Promise.all([native.close(), bridged.close()])
    },
  }
}

/** What viewers are told with each source error code (a fixed text; details go to the log). */
const VIEWER_ERROR_TEXT = Object.freeze({
  screencast_failed: "the browser's screencast could not be started",
  browser_crashed: 'the browser stopped responding',
})

/** A `logger` for setupBrowserStream that keeps every line, for tests of what is logged. */
function logCapture() {
  const lines = []
  const keep = (...args) => lines.push(args.map(String).join(' '))
  return {
    logger: { info: keep, warn: keep, error: keep },
    lines,
    has: (pattern) => lines.some((line) => pattern.test(line)),
  }
}

/** A throwaway self-signed certificate for 127.0.0.1 (openssl), for TLS servers in tests. */
function selfSignedCert() {
  const { execFileSync } = require('node:child_process')
  const fs = require('node:fs')
  const os = require('node:os')
  const path = require('node:path')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bsn-tls-'))
  const key = path.join(dir, 'key.pem')
  const cert = path.join(dir, 'cert.pem')
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
    '-keyout', key, '-out', cert,
  ], { stdio: 'ignore' })
  return { key: fs.readFileSync(key), cert: fs.readFileSync(cert) }
}

module.exports = { startServer, serveRegistry, nativeAndBridged, logCapture, selfSignedCert, VIEWER_ERROR_TEXT }

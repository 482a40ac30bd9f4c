'use strict'
// Our version of Mastra's integration test of the Hono adapter's browser stream auth
// (browser-stream-auth.integration.test.ts): real HTTP server, real `ws` handshakes, a stub
// Mastra whose `server.auth` is a hand-written `authenticateToken` or `SimpleAuth` of
// @mastra/core. Added: the probe and close routes are gated the same way, a deployer's own
// `app.use('*')` registered after setup cannot open the stream, and every `allowedOrigins`
// shape of Hono's cors (`'*'`, one origin, a list with `'*'`, a function, sync or async).

const { describe, it, before, after, beforeEach, afterEach } = require('node:test')
const assert = require('node:assert/strict')
const { Hono } = require('hono')
const { serve } = require('@hono/node-server')
const WebSocket = require('ws')
const { SimpleAuth } = require('@mastra/core/server')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { setupBrowserStream } = require('..')

const VALID = 'valid-token'

// Token from `Authorization`/`?apiKey=`, else the `session` cookie of the request.
const authConfig = {
  authenticateToken: async (token, request) => {
    const cookie = typeof request?.header === 'function' ? request.header('cookie') : undefined
    const credential = token || cookie?.match(/session=([^;]+)/)?.[1]
    return credential === VALID ? { id: 'user-1', role: 'user' } : null
  },
}

function stubMastra(auth) {
  return { getServer: () => ({ auth }), getStudio: () => undefined, getLogger: () => undefined }
}

/**
 * Starts a Hono app with the browser stream on a real server. `afterSetup(app)` runs after
 * setupBrowserStream (a deployer's own middleware), `beforeSetup(app)` before it.
 */
async function startBrowserStreamServer({ mastra = stubMastra(authConfig), allowedOrigins, getToolset = () => undefined, beforeSetup, afterSetup } = {}) {
  const app = new Hono()
  beforeSetup?.(app)
  const browserStream = await setupBrowserStream(app, { mastra, getToolset, allowedOrigins })
  afterSetup?.(app)
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' })
  browserStream.injectWebSocket(server)
  if (!server.listening) await new Promise((resolve) => server.once('listening', resolve))
  const { port } = server.address()
  return {
    port,
    base: `http://127.0.0.1:${port}`,
    streamUrl: `ws://127.0.0.1:${port}/browser/agent-1/stream?threadId=thread-1`,
    async close() {
      await browserStream.registry.close()
      server.closeAllConnections?.()
      await new Promise((resolve) => server.close(() => resolve()))
    },
  }
}

/**
 * One real WebSocket handshake: `{ opened: true }` (then closed again), or `{ opened: false,
 * status, body }` for an HTTP answer, or `{ opened: false, error }`. Bounded by 5 s.
 */
function handshake(url, headers) {
  return new Promise((resolve, reject) => {
    let settled = false
    const settle = (value) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve(value)
    }
    const socket = new WebSocket(url, { headers })
    const timer = setTimeout(() => {
      settled = true
      socket.terminate()
      reject(new Error(`no handshake result from ${url} within 5 s`))
    }, 5000)
    socket.on('open', () => {
      socket.close()
      socket.once('close', () => settle({ opened: true }))
    })
    socket.on('unexpected-response', (req, res) => {
      let body = ''
      res.on('data', (d) => (body += d))
      res.on('end', () => {
        // With this listener ws leaves the request open; abort it so the socket closes.
        req.destroy()
        socket.terminate()
        settle({ opened: false, status: res.statusCode, body })
      })
    })
    socket.on('error', (err) => settle({ opened: false, error: err.message }))
  })
}

/** The fields Mastra's test compares: `{opened}` and, when refused, the status. */
const outcome = ({ opened, status }) => (opened ? { opened } : { opened, status })

describe('browser stream WebSocket authentication (authenticateToken)', () => {
  let srv
  beforeEach(async () => {
    srv = await startBrowserStreamServer()
  })
  afterEach(() => srv.close())

  it('refuses to upgrade an unauthenticated connection with 401', async () => {
    assert.deepEqual(outcome(await handshake(srv.streamUrl)), { opened: false, status: 401 })
  })

  it('refuses to upgrade with an invalid session cookie (401)', async () => {
    assert.deepEqual(outcome(await handshake(srv.streamUrl, { Cookie: 'session=wrong-token' })), { opened: false, status: 401 })
  })

  it('upgrades with a valid session cookie', async () => {
    assert.deepEqual(await handshake(srv.streamUrl, { Cookie: `session=${VALID}` }), { opened: true })
  })

  it('upgrades with a valid apiKey query parameter', async () => {
    assert.deepEqual(await handshake(`${srv.streamUrl}&apiKey=${VALID}`), { opened: true })
  })

  it('upgrades with a valid Authorization: Bearer header', async () => {
    assert.deepEqual(await handshake(srv.streamUrl, { Authorization: `Bearer ${VALID}` }), { opened: true })
  })
})

describe('browser stream WebSocket origin validation', () => {
  const allowedOrigin = 'https://studio.example.com'
  let srv
  beforeEach(async () => {
    srv = await startBrowserStreamServer({ allowedOrigins: [allowedOrigin] })
  })
  afterEach(() => srv.close())

  it('refuses a disallowed origin with 403 even with a valid session cookie', async () => {
    // Cross-site WebSocket hijacking: the browser sends the cookie whatever page connects.
    const result = await handshake(srv.streamUrl, { Origin: 'https://evil.example.com', Cookie: `session=${VALID}` })
    assert.deepEqual(outcome(result), { opened: false, status: 403 })
  })

  it('upgrades a valid session cookie from the allowed origin', async () => {
    assert.deepEqual(await handshake(srv.streamUrl, { Origin: allowedOrigin, Cookie: `session=${VALID}` }), { opened: true })
  })

  it('still requires a credential from the allowed origin (401)', async () => {
    assert.deepEqual(outcome(await handshake(srv.streamUrl, { Origin: allowedOrigin })), { opened: false, status: 401 })
  })

  it('does not refuse a client that sends no Origin', async () => {
    // Non-browser clients (like this ws client) send none: the list must not refuse them.
    assert.deepEqual(await handshake(srv.streamUrl, { Cookie: `session=${VALID}` }), { opened: true })
  })
})

describe('browser stream WebSocket authentication with SimpleAuth of @mastra/core', () => {
  let srv
  beforeEach(async () => {
    srv = await startBrowserStreamServer({
      mastra: stubMastra(new SimpleAuth({ tokens: { 'test-token': { sub: 'test-user' } } })),
    })
  })
  afterEach(() => srv.close())

  it('refuses to upgrade an unauthenticated connection with 401', async () => {
    assert.deepEqual(outcome(await handshake(srv.streamUrl)), { opened: false, status: 401 })
  })

  it("upgrades with the provider's mastra-token session cookie", async () => {
    assert.deepEqual(await handshake(srv.streamUrl, { Cookie: 'mastra-token=test-token' }), { opened: true })
  })

  it('refuses to upgrade with an invalid mastra-token cookie (401)', async () => {
    assert.deepEqual(outcome(await handshake(srv.streamUrl, { Cookie: 'mastra-token=wrong-token' })), { opened: false, status: 401 })
  })
})

describe('probe and close routes behind Mastra auth', () => {
  const closes = []
  const sessionChecks = []
  const toolset = {
    hasThreadSession: (threadId) => {
      sessionChecks.push(threadId)
      return true
    },
    getScope: () => 'shared',
    close: async () => {
      closes.push('close')
    },
    closeThreadSession: async () => {},
  }
  let srv
  before(async () => {
    srv = await startBrowserStreamServer({ getToolset: (agentId) => (agentId === 'agent-1' ? toolset : undefined) })
  })
  after(() => srv.close())

  it('answers 401 without credentials and asks nothing of the toolset', async () => {
    const probe = await fetch(`${srv.base}/api/agents/agent-1/browser/session?threadId=thread-1`)
    assert.equal(probe.status, 401)
    const close = await fetch(`${srv.base}/api/agents/agent-1/browser/close`, { method: 'POST' })
    assert.equal(close.status, 401)
    const wrong = await fetch(`${srv.base}/api/agents/agent-1/browser/close`, { method: 'POST', headers: { Authorization: 'Bearer wrong-token' } })
    assert.equal(wrong.status, 401)
    assert.deepEqual(sessionChecks, [])
    assert.deepEqual(closes, [])
  })

  it('answers 200 with Authorization: Bearer valid-token', async () => {
    const headers = { Authorization: `Bearer ${VALID}` }
    const probe = await fetch(`${srv.base}/api/agents/agent-1/browser/session?threadId=thread-1`, { headers })
    assert.equal(probe.status, 200)
    assert.deepEqual(await probe.json(), { hasSession: true, screencastAvailable: true })
    assert.deepEqual(sessionChecks, ['thread-1'])
    const close = await fetch(`${srv.base}/api/agents/agent-1/browser/close`, { method: 'POST', headers })
    assert.equal(close.status, 200)
    assert.deepEqual(await close.json(), { success: true })
    assert.deepEqual(closes, ['close'])
  })
})

describe("a deployer's own app.use('*') middleware cannot open the stream", () => {
  // As Mastra's deployer does, the app registers its own catch-all middleware after
  // setupBrowserStream; one that lets everything through must not weaken the stream's gate.
  const permissive = (seen) => async (c, next) => {
    seen.push(c.req.path)
    c.set('user', { id: 'anonymous', role: 'admin' })
    await next()
  }

  for (const where of ['afterSetup', 'beforeSetup']) {
    it(`a permissive middleware registered ${where === 'afterSetup' ? 'after' : 'before'} setup`, async (t) => {
      const seen = []
      const srv = await startBrowserStreamServer({ [where]: (app) => app.use('*', permissive(seen)) })
      t.after(() => srv.close())
      assert.deepEqual(outcome(await handshake(srv.streamUrl)), { opened: false, status: 401 })
      assert.deepEqual(outcome(await handshake(srv.streamUrl, { Cookie: 'session=wrong-token' })), { opened: false, status: 401 })
      assert.equal((await fetch(`${srv.base}/api/agents/agent-1/browser/session`)).status, 401)
      assert.deepEqual(await handshake(srv.streamUrl, { Cookie: `session=${VALID}` }), { opened: true })
    })
  }
})

describe('allowedOrigins shapes (as Hono cors origin)', () => {
  const allowed = 'https://studio.example.com'
  const other = 'https://evil.example.com'
  const cookie = `session=${VALID}`

  /** Opens (or not) from the allowed origin, another origin and without Origin. */
  async function outcomes(allowedOrigins) {
    const srv = await startBrowserStreamServer({ allowedOrigins })
    try {
      return {
        allowed: outcome(await handshake(srv.streamUrl, { Origin: allowed, Cookie: cookie })),
        other: outcome(await handshake(srv.streamUrl, { Origin: other, Cookie: cookie })),
        none: outcome(await handshake(srv.streamUrl, { Cookie: cookie })),
      }
    } finally {
      await srv.close()
    }
  }
  const OPEN = { opened: true }
  const FORBIDDEN = { opened: false, status: 403 }

  it("'*' allows every origin", async () => {
    assert.deepEqual(await outcomes('*'), { allowed: OPEN, other: OPEN, none: OPEN })
  })

  it('one origin as a string', async () => {
    assert.deepEqual(await outcomes(allowed), { allowed: OPEN, other: FORBIDDEN, none: OPEN })
  })

  it("an array holding '*' allows every origin", async () => {
    assert.deepEqual(await outcomes([allowed, '*']), { allowed: OPEN, other: OPEN, none: OPEN })
  })

  it('a sync function answering the origin or null', async () => {
    const calls = []
    const fn = (origin, c) => {
      calls.push({ origin, hasContext: typeof c?.req?.header === 'function' })
      return origin === allowed ? origin : null
    }
    assert.deepEqual(await outcomes(fn), { allowed: OPEN, other: FORBIDDEN, none: OPEN })
    // Asked with the request's Origin and the Hono context; never for a request without Origin.
    assert.ok(calls.every((call) => call.hasContext), 'called with the Hono context')
    assert.deepEqual([...new Set(calls.map((call) => call.origin))].sort(), [other, allowed].sort())
  })

  it('an async function answering the origin or null', async () => {
    const fn = async (origin) => {
      await new Promise((resolve) => setImmediate(resolve))
      return origin === allowed ? origin : null
    }
    assert.deepEqual(await outcomes(fn), { allowed: OPEN, other: FORBIDDEN, none: OPEN })
  })
})

describe('Mastra authorization and a missing @mastra/hono', () => {
  it("answers 403 when Mastra's provider authenticates but does not authorize", async () => {
    const srv = await startBrowserStreamServer({
      mastra: stubMastra({ ...authConfig, authorizeUser: async () => false }),
    })
    try {
      const refused = await handshake(srv.streamUrl, { Cookie: `session=${VALID}` })
      assert.equal(refused.opened, false)
      assert.equal(refused.status, 403)
      const probe = await fetch(`${srv.base}/api/agents/agent-1/browser/session?threadId=thread-1`, { headers: { authorization: `Bearer ${VALID}` } })
      assert.equal(probe.status, 403)
    } finally {
      await srv.close()
    }
  })

  it('fails setup when Mastra has server.auth and @mastra/hono cannot be loaded; admits nobody if auth comes later', () => {
    const preload = path.join(__dirname, 'fixtures', 'without-mastra-hono.js')
    const script = `
      const { Hono } = require('hono')
      const { setupBrowserStream } = require(${JSON.stringify(path.join(__dirname, '..'))})
      const quiet = { warn() {}, error() {} }
      let thrown = null
      try {
        setupBrowserStream(new Hono(), { mastra: { getServer: () => ({ auth: { authenticateToken: async () => ({ id: 1 }) } }) }, logger: quiet })
      } catch (err) {
        thrown = err.message
      }
      // No auth at setup, auth configured later: the fallback refuses rather than admits.
      let server = {}
      const app = new Hono()
      setupBrowserStream(app, { mastra: { getServer: () => server }, logger: quiet, getToolset: () => undefined })
      server = { auth: { authenticateToken: async () => ({ id: 1 }) } }
      app.request('http://localhost/api/agents/a/browser/session').then(async (res) => {
        console.log(JSON.stringify({ thrown, status: res.status, body: await res.json() }))
        process.exit(0)
      })
    `
    const result = spawnSync(process.execPath, ['-r', preload, '-e', script], { encoding: 'utf8', timeout: 60_000 })
    assert.equal(result.status, 0, result.stderr)
    const outcome = JSON.parse(result.stdout.trim().split('\n').at(-1))
    assert.match(outcome.thrown ?? '', /install @mastra\/hono/)
    assert.equal(outcome.status, 500)
    assert.equal(outcome.body.error, 'auth_unavailable')
  })
})

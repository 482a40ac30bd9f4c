'use strict'
// Admission goes through the Hono route and the app's own middleware; other upgrades are
// left alone; limits and origins are answered with HTTP statuses before any upgrade.

const test = require('node:test')
const assert = require('node:assert/strict')
const { WebSocketServer } = require('ws')
const { startServer, FakeToolset, Viewer, waitFor } = require('./support')

async function refusal(url, options) {
  const viewer = new Viewer(url, options)
  await assert.rejects(viewer.opened)
  await waitFor(() => viewer.unexpected, { what: 'HTTP answer' })
  return viewer.unexpected
}

test("the app's own middleware rejects with its own response and nothing is registered", async (t) => {
  const toolset = new FakeToolset()
  const srv = await startServer(
    { getToolset: () => toolset },
    {
      configure(app) {
        app.use('/browser/*', async (c, next) => {
          if (c.req.header('x-session') !== 'let-me-in') return c.json({ error: 'unauthorized' }, 401)
          c.header('x-seen-by', 'auth-middleware')
          await next()
        })
      },
    },
  )
  t.after(() => srv.close())
  const answer = await refusal(srv.url('secret'))
  assert.equal(answer.status, 401)
  assert.deepEqual(JSON.parse(answer.body), { error: 'unauthorized' })
  const stats = srv.registry.stats()
  assert.equal(stats.channels.length, 0)
  assert.equal(stats.viewersAdmitted, 0)
  assert.equal(toolset.starts, 0)

  const allowed = new Viewer(srv.url('secret'), { headers: { 'x-session': 'let-me-in' } })
  await allowed.opened
  await allowed.untilStreaming('streaming')
})

test('authenticate hook: Bearer token or ?apiKey=, 401 auth_failed otherwise', async (t) => {
  const seen = []
  const srv = await startServer({
    getToolset: () => new FakeToolset(),
    authenticate: (c, token) => {
      seen.push(c.req.param('agentId'))
      return token === 's3cret'
    },
  })
  t.after(() => srv.close())
  const answer = await refusal(srv.url('a1'), { headers: { authorization: 'Bearer wrong' } })
  assert.equal(answer.status, 401)
  assert.deepEqual(JSON.parse(answer.body), { error: 'auth_failed', message: 'missing or invalid credentials' })
  assert.equal((await refusal(srv.url('a1'))).status, 401)
  const bearer = new Viewer(srv.url('a1'), { headers: { authorization: 'Bearer s3cret' } })
  await bearer.opened
  const query = new Viewer(srv.url('a1', '?apiKey=s3cret'))
  await query.opened
  assert.ok(seen.every((id) => id === 'a1'))
  assert.equal(srv.registry.getViewerCount('a1'), 2)
})

test('tokens never reach the logs, even when the authenticate hook quotes them in an error', async (t) => {
  const logged = []
  const capture = (...args) => logged.push(args.join(' '))
  const srv = await startServer({
    getToolset: () => new FakeToolset(),
    logger: { info: capture, warn: capture, error: capture },
    authenticate: (c, token) => {
      if (token === 'tok-accept-123') return true
      throw new Error(`token ${token} is not valid`)
    },
  })
  t.after(() => srv.close())
  assert.equal((await refusal(srv.url('a1'), { headers: { authorization: 'Bearer tok-secret-456' } })).status, 401)
  assert.equal((await refusal(srv.url('a1', '?apiKey=tok-secret-789'))).status, 401)
  const viewer = new Viewer(srv.url('a1', '?apiKey=tok-accept-123'))
  await viewer.opened
  await viewer.close()
  assert.ok(logged.length >= 2, 'the hook errors were logged')
  for (const line of logged) assert.doesNotMatch(line, /tok-(secret|accept)/, line)
  assert.ok(logged.some((line) => line.includes('[redacted]')))
})

test('allowedOrigins refuses cross-site WebSocket hijacking with 403', async (t) => {
  const srv = await startServer({ getToolset: () => new FakeToolset(), allowedOrigins: ['http://studio.test'] })
  t.after(() => srv.close())
  const answer = await refusal(srv.url('o1'), { origin: 'http://evil.test' })
  assert.equal(answer.status, 403)
  assert.equal(JSON.parse(answer.body).error, 'origin_not_allowed')
  const ok = new Viewer(srv.url('o1'), { origin: 'http://studio.test' })
  await ok.opened
})

test('limits answer 503 before the upgrade; bad agent ids 400; plain GET 426', async (t) => {
  const srv = await startServer({ getToolset: () => new FakeToolset(), maxViewersPerAgent: 2, maxAgents: 2 })
  t.after(() => srv.close())
  const a = [new Viewer(srv.url('cap')), new Viewer(srv.url('cap'))]
  await Promise.all(a.map((v) => v.opened))
  const full = await refusal(srv.url('cap'))
  assert.equal(full.status, 503)
  assert.equal(JSON.parse(full.body).error, 'over_capacity')
  const other = new Viewer(srv.url('cap-2'))
  await other.opened
  assert.equal((await refusal(srv.url('cap-3'))).status, 503, 'max agents')
  assert.equal(srv.registry.getViewerCount('cap'), 2, 'refusals leave the others alone')
  assert.equal((await refusal(srv.url('x'.repeat(300)))).status, 400)
  assert.equal((await refusal(srv.url('%00bad'))).status, 400)
  assert.equal((await refusal(srv.url('bad%0Aid'))).status, 400)
  // With no other upgrade listener, an upgrade to another path is answered, not left open.
  assert.equal((await refusal(`ws://127.0.0.1:${srv.port}/nowhere`)).status, 404)
  const res = await fetch(`http://127.0.0.1:${srv.port}/browser/cap/stream`)
  assert.equal(res.status, 426)
  assert.equal((await fetch(`http://127.0.0.1:${srv.port}/health`)).status, 200)
})

test('upgrades for other paths are left to other listeners', async (t) => {
  const srv = await startServer({ getToolset: () => new FakeToolset() })
  t.after(() => srv.close())
  const other = new WebSocketServer({ noServer: true })
  srv.server.on('upgrade', (req, socket, head) => {
    if (req.url === '/other') other.handleUpgrade(req, socket, head, (ws) => ws.send('hello from the other listener'))
  })
  const viewer = new Viewer(`ws://127.0.0.1:${srv.port}/other`)
  await viewer.opened
  await waitFor(() => viewer.messages.length === 1, { what: 'message from the other listener' })
  assert.deepEqual(viewer.messages, ['hello from the other listener'])
  assert.equal(srv.registry.stats().viewersAdmitted, 0)
  // The stream route still works beside it.
  const stream = new Viewer(srv.url('side-by-side'))
  await stream.opened
  await waitFor(() => stream.json.length > 0, { what: 'connected' })
  await viewer.close()
  other.close()
})

test('the probe and close routes are gated like the stream: Origin, authenticate, id rules', async (t) => {
  const toolset = new FakeToolset()
  const asked = []
  const srv = await startServer({
    getToolset: (agentId, threadId) => {
      asked.push([agentId, threadId])
      return toolset
    },
    authenticate: (c, token) => token === 'good',
    allowedOrigins: ['http://studio.test'],
  })
  t.after(() => srv.close())
  const base = `http://127.0.0.1:${srv.port}/api/agents`
  const auth = { authorization: 'Bearer good' }
  // Cross-site (a page on another origin posting with the user's cookies): 403.
  let res = await fetch(`${base}/victim/browser/close`, { method: 'POST', headers: { ...auth, origin: 'http://evil.test' } })
  assert.equal(res.status, 403)
  // No credentials: 401, for the probe and for close.
  res = await fetch(`${base}/victim/browser/session`)
  assert.equal(res.status, 401)
  res = await fetch(`${base}/victim/browser/close`, { method: 'POST', headers: { origin: 'http://studio.test' } })
  assert.equal(res.status, 401)
  // Ids that break the id rules never reach getToolset.
  res = await fetch(`${base}/a%0Ab/browser/session?threadId=x`, { headers: auth })
  assert.equal(res.status, 400)
  res = await fetch(`${base}/a/browser/session?threadId=${'x'.repeat(300)}`, { headers: auth })
  assert.equal(res.status, 400)
  assert.deepEqual(asked, [])
  assert.equal(toolset.closed, 0)
  // Allowed: same-origin requests (no Origin header) and the allowed origin.
  res = await fetch(`${base}/victim/browser/session?threadId=t1`, { headers: auth })
  assert.deepEqual(await res.json(), { hasSession: true, screencastAvailable: true })
  res = await fetch(`${base}/victim/browser/close`, { method: 'POST', headers: { ...auth, origin: 'http://studio.test' } })
  assert.equal(res.status, 200)
  assert.equal(toolset.closed, 1)
})

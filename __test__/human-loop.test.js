'use strict'
// Human in the loop: the agent asks (an event such as `permission_request`), a person watching
// answers with `{"type":"reply","to":seq,"reply":…}` (the client module's `reply()`), and the
// deployer's `onViewerReply` gets it — checked, bounded, rate-limited, refused with a clear
// error when malformed or from a view-only viewer. And `registry.broadcastEvent` to every
// extended viewer of every channel.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { pathToFileURL } = require('node:url')
const WebSocket = require('ws')
const { FakeToolset, Viewer, startServer, waitFor, logCapture } = require('./support')

const clientModule = pathToFileURL(path.join(__dirname, '..', 'client', 'browser-stream-client.js')).href

/** A server whose `authorizeControl` makes requests with `x-role: watcher` view-only. */
async function serverWith(t, config = {}) {
  const replies = []
  const srv = await startServer({
    getToolset: () => new FakeToolset(),
    authorizeControl: (c) => c.req.header('x-role') !== 'watcher',
    onViewerReply: (agentId, answer) => replies.push({ agentId, ...answer }),
    ...config,
  })
  t.after(() => srv.close())
  return { srv, replies }
}

async function viewer(t, srv, agent, headers) {
  const v = new Viewer(srv.url(agent), { extended: true, headers })
  t.after(() => v.close())
  await v.untilMeta()
  return v
}

test('an agent asks, a person answers through the client module, the deployer gets the answer', async (t) => {
  const { BrowserStreamClient } = await import(clientModule)
  const { srv, replies } = await serverWith(t)
  const events = []
  const acks = []
  const client = new BrowserStreamClient(srv.url('asking-agent'), {
    WebSocket,
    extended: true,
    onEvent: (event, seq) => events.push({ event, seq }),
    onReplyOk: (to) => acks.push(to),
  })
  t.after(() => client.close())
  client.connect()
  await waitFor(() => client.session, { what: 'session' })
  assert.equal(srv.registry.publishEvent('asking-agent', { type: 'permission_request', id: 'p1', action: 'buy the ticket', amount: 120 }), true)
  const asked = await waitFor(() => events.find((e) => e.event.type === 'permission_request'), { what: 'the question' })
  assert.ok(client.reply(asked.seq, { approve: true, note: 'go ahead' }))
  await waitFor(() => acks.includes(asked.seq), { what: 'reply-ok' })
  assert.equal(replies.length, 1)
  assert.deepEqual(replies[0], {
    agentId: 'asking-agent',
    viewerId: client.session.viewerId,
    canControl: true,
    threadId: undefined,
    key: 'asking-agent',
    to: asked.seq,
    reply: { approve: true, note: 'go ahead' },
    event: { type: 'permission_request', id: 'p1', action: 'buy the ticket', amount: 120 },
  })
  assert.equal(srv.registry.stats().channels[0].replies, 1)
})

test('view-only viewers may not reply unless viewOnlyReplies; malformed replies get clear errors', async (t) => {
  const { srv, replies } = await serverWith(t, { logger: logCapture().logger })
  const watcher = await viewer(t, srv, 'strict-agent', { 'x-role': 'watcher' })
  const operator = await viewer(t, srv, 'strict-agent')
  assert.equal(watcher.meta.canControl, false)
  srv.registry.publishEvent('strict-agent', { type: 'permission_request', id: 'p2' })
  const asked = await operator.waitJson((m) => m.type === 'event', { what: 'the question' })
  watcher.send({ type: 'reply', to: asked.seq, reply: 'yes' })
  await watcher.waitJson((m) => m.error === 'reply_denied', { what: 'view-only refused' })

  const malformed = [
    [{ type: 'reply', reply: true }, 'bad_message', /"to"/],
    [{ type: 'reply', to: 0, reply: true }, 'bad_message', /"to"/],
    [{ type: 'reply', to: 'x', reply: true }, 'bad_message', /"to"/],
    [{ type: 'reply', to: asked.seq }, 'bad_message', /"reply"/],
    [{ type: 'reply', to: asked.seq, reply: 'x'.repeat(16 * 1024) }, 'bad_message', /larger than 16384 bytes/],
    // A number no event of this channel can have.
    [{ type: 'reply', to: asked.seq + 10_000_000, reply: true }, 'bad_reply', /names no event/],
  ]
  for (const [message, error, text] of malformed) {
    const from = operator.json.length
    operator.send(message)
    const answer = await operator.waitJson((m) => m.error !== undefined, { from, what: `the answer to ${JSON.stringify(message).slice(0, 60)}` })
    assert.equal(answer.error, error)
    assert.match(answer.message, text)
  }
  // Still open, and a good reply goes through after all that.
  operator.send({ type: 'reply', to: asked.seq, reply: ['a', 1, null] })
  await operator.waitJson((m) => m.type === 'reply-ok' && m.to === asked.seq, { what: 'reply-ok' })
  assert.equal(replies.length, 1)
  assert.deepEqual(replies[0].reply, ['a', 1, null])

  // A burst is rate-limited (each reply costs 20 of the 200 tokens a second).
  const before = replies.length
  for (let i = 0; i < 40; i += 1) operator.send({ type: 'reply', to: asked.seq, reply: i })
  await operator.barrier()
  await waitFor(() => operator.errors('rate_limited').length >= 1, { what: 'rate_limited' })
  const passed = operator.json.filter((m) => m.type === 'reply-ok').length - 1
  assert.ok(passed < 40, `${passed} of 40 replies passed the limit`)
  await waitFor(() => replies.length - before === passed, { what: 'the deployer got exactly the replies acknowledged' })
})

test('viewOnlyReplies lets view-only viewers answer; without onViewerReply replies are unavailable', async (t) => {
  const open = await serverWith(t, { viewOnlyReplies: true })
  const watcher = await viewer(t, open.srv, 'open-agent', { 'x-role': 'watcher' })
  open.srv.registry.publishEvent('open-agent', { type: 'question', text: 'which flight?' })
  const asked = await watcher.waitJson((m) => m.type === 'event', { what: 'the question' })
  watcher.send({ type: 'reply', to: asked.seq, reply: { choice: 2 } })
  await watcher.waitJson((m) => m.type === 'reply-ok', { what: 'reply-ok' })
  await waitFor(() => open.replies.length === 1, { what: 'the hook' })
  assert.equal(open.replies[0].canControl, false)

  const srv = await startServer({ getToolset: () => new FakeToolset() })
  t.after(() => srv.close())
  const v = await viewer(t, srv, 'no-hook')
  srv.registry.publishEvent('no-hook', { type: 'question' })
  const q = await v.waitJson((m) => m.type === 'event', { what: 'the question' })
  v.send({ type: 'reply', to: q.seq, reply: 1 })
  await v.waitJson((m) => m.error === 'reply_unavailable', { what: 'reply_unavailable' })
})

test('a throwing onViewerReply is logged, the viewer still gets reply-ok and others are undisturbed', async (t) => {
  const log = logCapture()
  const srv = await startServer({
    getToolset: () => new FakeToolset(),
    logger: log.logger,
    onViewerReply: () => {
      throw new Error('deployer bug')
    },
  })
  t.after(() => srv.close())
  const a = await viewer(t, srv, 'throwing')
  const b = await viewer(t, srv, 'throwing')
  srv.registry.publishEvent('throwing', { type: 'question' })
  const q = await a.waitJson((m) => m.type === 'event', { what: 'the question' })
  a.send({ type: 'reply', to: q.seq, reply: 'x' })
  await a.waitJson((m) => m.type === 'reply-ok', { what: 'reply-ok' })
  await waitFor(() => log.has(/onViewerReply: deployer bug/), { what: 'the hook error logged' })
  srv.registry.publishEvent('throwing', { type: 'next' })
  await b.waitJson((m) => m.type === 'event' && m.event.type === 'next', { what: 'b still gets events' })
})

test('broadcastEvent reaches the extended viewers of every channel, numbered and resumable', async (t) => {
  const { srv } = await serverWith(t)
  const a = await viewer(t, srv, 'agent-a')
  const b = await viewer(t, srv, 'agent-b')
  const compat = new Viewer(srv.url('agent-c'))
  t.after(() => compat.close())
  await compat.opened
  await waitFor(() => srv.registry.stats().channels.length === 3, { what: 'three channels' })
  assert.equal(srv.registry.broadcastEvent({ type: 'config_changed', version: 2 }), 3)
  const got = await Promise.all([a, b].map((v) => v.waitJson((m) => m.type === 'event' && m.event.type === 'config_changed', { what: 'the broadcast' })))
  for (const message of got) assert.deepEqual(message.event, { type: 'config_changed', version: 2 })
  // Resumable like the channel's own events: a reconnecting viewer gets it again.
  const again = await viewer(t, srv, 'agent-a')
  again.send({ type: 'resume', lastSeq: a.meta.seq })
  const replayed = await again.waitJson((m) => m.type === 'event' && m.event.type === 'config_changed', { what: 'replayed' })
  assert.equal(replayed.seq, got[0].seq)
  assert.ok(compat.open, 'compat viewers are not sent events and stay open')
  assert.ok(!compat.json.some((m) => m.type === 'event'))
  assert.throws(() => srv.registry.broadcastEvent({ version: 3 }), TypeError)
  assert.throws(() => srv.registry.broadcastEvent({ type: 'big', text: 'x'.repeat(300_000) }), /larger|bytes/)
})

test('replies waiting for a slow hook are bounded: past 16 at once they are refused, then all are answered', async (t) => {
  const pending = []
  const srv = await startServer({
    getToolset: () => new FakeToolset(),
    // A hook that takes its time: each reply waits until the test lets it go.
    onViewerReply: () => new Promise((resolve) => pending.push(resolve)),
  })
  t.after(() => srv.close())
  const viewers = [await viewer(t, srv, 'slow-hook'), await viewer(t, srv, 'slow-hook')]
  srv.registry.publishEvent('slow-hook', { type: 'question' })
  const q = await viewers[0].waitJson((m) => m.type === 'event', { what: 'the question' })
  // Ten each (the 200-token burst of 20-token replies): twenty, four over the bound.
  for (const v of viewers) for (let i = 0; i < 10; i += 1) v.send({ type: 'reply', to: q.seq, reply: i })
  const refusals = () => viewers.flatMap((v) => v.errors('rate_limited')).filter((e) => /faster than the server hands them on/.test(e.message))
  await waitFor(() => pending.length === 16 && refusals().length === 4, { what: '16 waiting, 4 refused' })
  assert.equal(viewers.flatMap((v) => v.json.filter((m) => m.type === 'reply-ok')).length, 0, 'no reply-ok before the hook ran')
  for (const resolve of pending.splice(0)) resolve()
  await waitFor(() => viewers.flatMap((v) => v.json.filter((m) => m.type === 'reply-ok')).length === 16, { what: 'sixteen reply-ok' })
})

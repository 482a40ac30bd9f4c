'use strict'
// Scoped viewer links (README "Scoped viewer links", docs/PROTOCOL.md "Admission"): tokens of
// `registry.createViewerToken` as `?token=` on the stream route of a real Hono server, checked
// after the Origin and instead of Mastra's auth and `authenticate`, refused 401 with fixed
// texts, and never found in a log line or a viewer's message.

const test = require('node:test')
const assert = require('node:assert/strict')
const { startServer, logCapture, FakeToolset, Viewer, waitFor } = require('./support')
const { ViewerRegistry } = require('..')
const { ViewerTokens } = require('../lib/viewer-token')
const { redact } = require('../lib/log')

const SECRET = 'a deployer secret, at least 32 characters long'
const OTHER_SECRET = 'another deployer secret of 32 characters or more'
/** A credential `authenticate` accepts: refused links must not fall back to it. */
const GOOD = 'good-api-key'

const REFUSED = {
  token_invalid: 'the viewer link is not valid',
  token_expired: 'the viewer link has expired',
  token_wrong_channel: 'the viewer link is for another agent or thread',
  token_reused: 'the single-use viewer link was already used',
}

/** The HTTP answer to a refused upgrade: `{ status, headers, body }`. */
async function refusal(url, options) {
  const viewer = new Viewer(url, options)
  await assert.rejects(viewer.opened)
  await waitFor(() => viewer.unexpected, { what: 'HTTP answer' })
  return viewer.unexpected
}

/** Asserts that upgrading `url` is refused 401 with the link refusal `error` and its fixed text. */
async function assertLinkRefused(url, error, what, options) {
  const answer = await refusal(url, options)
  assert.equal(answer.status, 401, what)
  assert.deepEqual(JSON.parse(answer.body), { error, message: REFUSED[error] }, what)
  return answer
}

/** An extended viewer that has received its session-meta. */
async function extended(url, options = {}) {
  const viewer = new Viewer(url, { extended: true, ...options })
  await viewer.opened
  await viewer.untilMeta()
  return viewer
}

/** The decoded payload of a token (the format is documented: `bsv1.<payload>.<signature>`). */
function payloadOf(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'))
}

/** A server whose `authenticate` accepts only `Bearer good-api-key` and counts its calls. */
async function serverWithLinks(t, config = {}, options) {
  const toolset = new FakeToolset()
  const authenticated = []
  const srv = await startServer(
    {
      getToolset: () => toolset,
      viewerTokenSecret: SECRET,
      authenticate: (c, token) => {
        authenticated.push(c.req.path)
        return token === GOOD
      },
      ...config,
    },
    options,
  )
  t.after(() => srv.close())
  const link = (agentId, token, extra = '') => srv.url(agentId, `?token=${token}${extra}`)
  return { srv, toolset, authenticated, link }
}

test('a view-only link admits without authenticate, which refuses everyone; the viewer cannot control', async (t) => {
  let authorizeCalls = 0
  const { srv, toolset, authenticated, link } = await serverWithLinks(t, {
    authenticate: (c) => {
      authenticated.push(c.req.path)
      return false
    },
    authorizeControl: () => {
      authorizeCalls += 1
      return true
    },
  })
  // Without a link authenticate decides, and refuses.
  const plain = await refusal(srv.url('a1'), { headers: { authorization: `Bearer ${GOOD}` } })
  assert.equal(plain.status, 401)
  assert.equal(JSON.parse(plain.body).error, 'auth_failed')
  assert.equal(authenticated.length, 1)

  const token = srv.registry.createViewerToken({ agentId: 'a1' })
  const viewer = await extended(link('a1', token))
  assert.equal(viewer.meta.canControl, false, 'view-only is the default')
  assert.equal(viewer.meta.agentId, 'a1')
  assert.equal(viewer.meta.threadId, null)
  await viewer.untilStreaming()
  toolset.emitFrame(1, { width: 320, height: 240 })
  await viewer.waitFrames(1)
  viewer.send({ type: 'control-request' })
  await viewer.waitJson((m) => m.error === 'control_denied', { what: 'control_denied for control-request' })
  viewer.send({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 7, y: 7, button: 'left', clickCount: 1 })
  await waitFor(() => viewer.errors('control_denied').length === 2, { what: 'control_denied for input' })
  await viewer.barrier()
  assert.deepEqual(toolset.mouse, [], 'no input from a view-only link')
  // The compat wire: admitted the same way.
  const compat = new Viewer(link('a1', token))
  await compat.opened
  await compat.untilStreaming()
  assert.equal(authenticated.length, 1, 'authenticate was not asked for the links')
  assert.equal(authorizeCalls, 0, 'authorizeControl is not asked for a link')
  assert.equal(srv.registry.stats().channels[0].viewers.every((v) => v.canControl === false), true)
  await Promise.all([viewer.close(), compat.close()])
})

test("a control link gives control, whatever authorizeControl would say; Mastra's auth is skipped too", async (t) => {
  let authorizeCalls = 0
  const { srv, toolset, link } = await serverWithLinks(t, {
    authorizeControl: () => {
      authorizeCalls += 1
      return false
    },
  })
  const token = srv.registry.createViewerToken({ agentId: 'a1', threadId: 't1', canControl: true })
  const driver = await extended(link('a1', token, '&threadId=t1'))
  assert.equal(driver.meta.canControl, true)
  assert.equal(driver.meta.threadId, 't1')
  await driver.untilStreaming()
  toolset.emitFrame(1, { width: 320, height: 240 })
  await driver.waitFrames(1)
  driver.send({ type: 'control-request' })
  await driver.waitJson((m) => m.type === 'control' && m.you === true, { what: 'control granted' })
  driver.send({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 9, y: 9, button: 'left', clickCount: 1 })
  await waitFor(() => toolset.mouse.some((e) => e.x === 9), { what: "the link holder's input" })
  assert.equal(authorizeCalls, 0)
  // A request with Bearer but no link still goes through authorizeControl (and is view-only).
  const other = await extended(srv.url('a1', '?threadId=t1'), { headers: { authorization: `Bearer ${GOOD}` } })
  assert.equal(other.meta.canControl, false)
  assert.equal(authorizeCalls, 1)
  await Promise.all([driver.close(), other.close()])

  // With Mastra's server.auth refusing every credential, a link still admits; nothing else does.
  const refuseAll = { authenticateToken: async () => null }
  const mastra = { getServer: () => ({ auth: refuseAll }), getStudio: () => undefined, getLogger: () => undefined }
  const gated = await startServer({ getToolset: () => new FakeToolset(), mastra, viewerTokenSecret: SECRET })
  t.after(() => gated.close())
  assert.equal((await refusal(gated.url('a1'), { headers: { authorization: `Bearer ${GOOD}` } })).status, 401)
  const viewer = await extended(gated.url('a1', `?token=${gated.registry.createViewerToken({ agentId: 'a1' })}`))
  assert.equal(viewer.meta.canControl, false)
  await viewer.close()
})

test('an expired link is refused 401 token_expired, without falling back to authenticate', async (t) => {
  const { srv, authenticated, link } = await serverWithLinks(t)
  const token = srv.registry.createViewerToken({ agentId: 'a1', ttlMs: 1000 })
  const { e: expiry } = payloadOf(token)
  await waitFor(() => Date.now() > expiry, { timeout: 5000, what: 'the link to expire' })
  // The request also carries a credential authenticate accepts: the link alone decides.
  await assertLinkRefused(link('a1', token), 'token_expired', 'expired', { headers: { authorization: `Bearer ${GOOD}` } })
  assert.deepEqual(authenticated, [])
  assert.equal(srv.registry.stats().viewersAdmitted, 0)
})

test('a link admits exactly its channel: another agent or thread is token_wrong_channel', async (t) => {
  const { srv, authenticated, link } = await serverWithLinks(t)
  const agentLink = srv.registry.createViewerToken({ agentId: 'a1' })
  const threadLink = srv.registry.createViewerToken({ agentId: 'a1', threadId: 't1' })
  const oddThread = 'thread/1 2'
  const oddLink = srv.registry.createViewerToken({ agentId: 'a:b', threadId: oddThread })
  const auth = { headers: { authorization: `Bearer ${GOOD}` } }
  await assertLinkRefused(link('a2', agentLink), 'token_wrong_channel', 'another agent', auth)
  await assertLinkRefused(link('a1', agentLink, '&threadId=t1'), 'token_wrong_channel', 'an agent link on a thread', auth)
  await assertLinkRefused(link('a1', threadLink), 'token_wrong_channel', 'a thread link without the thread', auth)
  await assertLinkRefused(link('a1', threadLink, '&threadId=t2'), 'token_wrong_channel', 'another thread', auth)
  await assertLinkRefused(link('a2', threadLink, '&threadId=t1'), 'token_wrong_channel', 'the thread of another agent', auth)
  const oddQuery = `&threadId=${encodeURIComponent(oddThread)}`
  await assertLinkRefused(link('a', oddLink, oddQuery), 'token_wrong_channel', 'a prefix of the agent id', auth)
  assert.deepEqual(authenticated, [])
  const viewers = [
    await extended(link('a1', agentLink)),
    await extended(link('a1', threadLink, '&threadId=t1')),
    await extended(link(encodeURIComponent('a:b'), oddLink, oddQuery)),
  ]
  assert.deepEqual(
    viewers.map((v) => [v.meta.agentId, v.meta.threadId]),
    [['a1', null], ['a1', 't1'], ['a:b', oddThread]],
  )
  await Promise.all(viewers.map((v) => v.close()))
})

test('a single-use link admits one viewer: the next is token_reused; a plain GET or a refusal does not use it up', async (t) => {
  const { srv, authenticated, link } = await serverWithLinks(t)
  const token = srv.registry.createViewerToken({ agentId: 'a1', once: true })
  const auth = { headers: { authorization: `Bearer ${GOOD}` } }
  // A link preview fetching the URL, and a try on another channel, leave it unused.
  assert.equal((await fetch(`http://127.0.0.1:${srv.port}/browser/a1/stream?token=${token}`)).status, 426)
  await assertLinkRefused(link('a2', token), 'token_wrong_channel', 'another agent')
  const first = await extended(link('a1', token))
  await assertLinkRefused(link('a1', token), 'token_reused', 'while the first viewer watches', auth)
  await first.close()
  await assertLinkRefused(link('a1', token), 'token_reused', 'after the first viewer left', auth)
  assert.deepEqual(authenticated, [])

  // Two upgrades at once with one single-use link: exactly one is admitted.
  const race = srv.registry.createViewerToken({ agentId: 'a1', once: true })
  const racers = [new Viewer(link('a1', race)), new Viewer(link('a1', race))]
  const outcomes = await Promise.allSettled(racers.map((v) => v.opened))
  assert.deepEqual(outcomes.map((o) => o.status).sort(), ['fulfilled', 'rejected'])
  const loser = racers[outcomes.findIndex((o) => o.status === 'rejected')]
  await waitFor(() => loser.unexpected, { what: "the loser's HTTP answer" })
  assert.equal(loser.unexpected.status, 401)
  assert.equal(JSON.parse(loser.unexpected.body).error, 'token_reused')

  // A link without `once` admits any number of viewers until it expires.
  const shared = srv.registry.createViewerToken({ agentId: 'a1' })
  const many = [await extended(link('a1', shared)), await extended(link('a1', shared)), await extended(link('a1', shared))]
  await Promise.all([...many, ...racers].map((v) => v.close()))
})

test('tampered, truncated, forged and garbage tokens are all token_invalid, with one answer', async (t) => {
  const { srv, authenticated, link } = await serverWithLinks(t)
  const token = srv.registry.createViewerToken({ agentId: 'a1' })
  const [prefix, payload, signature] = token.split('.')
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  const flip = (text, i, to = text[i] === 'A' ? 'B' : 'A') => text.slice(0, i) + to + text.slice(i + 1)
  // The last character of a 32-byte base64url text carries two spare bits: this change
  // decodes to the very same signature bytes, and must be refused all the same.
  const last = signature.length - 1
  const spareBit = flip(signature, last, alphabet[alphabet.indexOf(signature[last]) ^ 1])
  assert.deepEqual(Buffer.from(spareBit, 'base64url'), Buffer.from(signature, 'base64url'))
  const forgedPayload = Buffer.from(JSON.stringify({ ...payloadOf(token), c: true }), 'utf8').toString('base64url')
  const forgedChannel = Buffer.from(JSON.stringify({ ...payloadOf(token), a: 'a2' }), 'utf8').toString('base64url')
  const bad = {
    'payload, first character': `${prefix}.${flip(payload, 0)}.${signature}`,
    'payload, middle character': `${prefix}.${flip(payload, payload.length >> 1)}.${signature}`,
    'payload, last character': `${prefix}.${flip(payload, payload.length - 1)}.${signature}`,
    'signature, first character': `${prefix}.${payload}.${flip(signature, 0)}`,
    'signature, spare bits of the last character': `${prefix}.${payload}.${spareBit}`,
    'control granted in the payload': `${prefix}.${forgedPayload}.${signature}`,
    'another agent in the payload': `${prefix}.${forgedChannel}.${signature}`,
    'truncated signature': token.slice(0, -1),
    'no signature': `${prefix}.${payload}.`,
    'no signature part': `${prefix}.${payload}`,
    'prefix only': `${prefix}.`,
    'another version': `bsv2.${payload}.${signature}`,
    'an extra part': `${token}.${signature}`,
    empty: '',
    garbage: 'garbage',
    'garbage in the format': 'bsv1.garbage.garbage',
    'not base64url': `${prefix}.${payload}.${signature.slice(0, -2)}%2B%2F`,
    'very long': `${prefix}.${'A'.repeat(5000)}.${signature}`,
  }
  for (const [what, variant] of Object.entries(bad)) {
    const answer = await assertLinkRefused(link('a1', variant), 'token_invalid', what, { headers: { authorization: `Bearer ${GOOD}` } })
    assert.equal(answer.body.includes(signature), false, `${what}: the answer quotes no token`)
  }
  // Two links in one request (both valid): neither decides.
  await assertLinkRefused(link('a1', token, `&token=${token}`), 'token_invalid', 'two tokens')
  assert.deepEqual(authenticated, [])
  assert.equal(srv.registry.stats().viewersAdmitted, 0)
  const viewer = await extended(link('a1', token))
  await viewer.close()
})

test("a link signed with another key is token_invalid; registries sharing viewerTokenSecret accept each other's", async (t) => {
  const { srv, link } = await serverWithLinks(t)
  const other = new ViewerRegistry({ viewerTokenSecret: OTHER_SECRET })
  const unkeyed = new ViewerRegistry()
  const sameKey = new ViewerRegistry({ viewerTokenSecret: SECRET })
  const sameKeyBytes = new ViewerRegistry({ viewerTokenSecret: new TextEncoder().encode(SECRET) })
  t.after(() => Promise.all([other, unkeyed, sameKey, sameKeyBytes].map((r) => r.close())))
  await assertLinkRefused(link('a1', other.createViewerToken({ agentId: 'a1' })), 'token_invalid', 'another secret')
  await assertLinkRefused(link('a1', unkeyed.createViewerToken({ agentId: 'a1' })), 'token_invalid', 'a random key')
  const viewers = [
    await extended(link('a1', sameKey.createViewerToken({ agentId: 'a1' }))),
    await extended(link('a1', sameKeyBytes.createViewerToken({ agentId: 'a1', canControl: true }))),
  ]
  assert.deepEqual(viewers.map((v) => v.meta.canControl), [false, true])
  await Promise.all(viewers.map((v) => v.close()))

  // Without viewerTokenSecret each registry has its own random key: its links work there only.
  const a = await startServer({ getToolset: () => new FakeToolset() })
  const b = await startServer({ getToolset: () => new FakeToolset() })
  t.after(() => Promise.all([a.close(), b.close()]))
  const fromA = a.registry.createViewerToken({ agentId: 'a1' })
  const onA = await extended(a.url('a1', `?token=${fromA}`))
  await assertLinkRefused(b.url('a1', `?token=${fromA}`), 'token_invalid', "another registry's random key")
  await onA.close()
})

test('the probe and close routes take no link: they stay behind authenticate', async (t) => {
  const { srv, toolset, authenticated } = await serverWithLinks(t)
  const token = srv.registry.createViewerToken({ agentId: 'a1', canControl: true })
  const base = `http://127.0.0.1:${srv.port}/api/agents/a1/browser`
  let res = await fetch(`${base}/session?token=${token}`)
  assert.equal(res.status, 401)
  assert.equal((await res.json()).error, 'auth_failed')
  res = await fetch(`${base}/close?token=${token}`, { method: 'POST' })
  assert.equal(res.status, 401)
  assert.equal(toolset.closed, 0)
  assert.equal(authenticated.length, 2, 'authenticate decided both')
  // A valid credential with a garbage token: the API ignores `token`.
  res = await fetch(`${base}/session?token=garbage`, { headers: { authorization: `Bearer ${GOOD}` } })
  assert.equal(res.status, 200)
})

test('the Origin is checked before the link', async (t) => {
  const { srv, link } = await serverWithLinks(t, { allowedOrigins: ['http://studio.test'] })
  const token = srv.registry.createViewerToken({ agentId: 'a1' })
  const answer = await refusal(link('a1', token), { origin: 'http://evil.test' })
  assert.equal(answer.status, 403)
  assert.equal(JSON.parse(answer.body).error, 'origin_not_allowed')
  const viewer = await extended(link('a1', token), { origin: 'http://studio.test' })
  await viewer.close()
})

test('a token never reaches a log line, an HTTP answer or a message a viewer receives', async (t) => {
  const capture = logCapture()
  const { srv, toolset, link } = await serverWithLinks(t, {
    logger: capture.logger,
    // Deployer hooks whose errors quote the request URL, token and all.
    allowedOrigins: (origin, c) => {
      if (origin === 'http://throws.test') throw new Error(`cannot judge ${c.req.url} (token ${c.req.query('token')})`)
      return origin
    },
    authenticate: (c) => {
      throw new Error(`no access for ${c.req.url}`)
    },
  })
  const tokens = [
    srv.registry.createViewerToken({ agentId: 'a1' }),
    srv.registry.createViewerToken({ agentId: 'a1', canControl: true, once: true }),
  ]
  const pieces = tokens.flatMap((token) => [token, ...token.split('.').slice(1)])
  const leaks = (text) => pieces.filter((piece) => text.includes(piece))

  const answers = []
  answers.push(await refusal(link('a1', tokens[0]), { origin: 'http://throws.test' }))
  answers.push(await refusal(link('a2', tokens[0])))
  for (const token of tokens) {
    const res = await fetch(`http://127.0.0.1:${srv.port}/api/agents/a1/browser/session?token=${token}`)
    answers.push({ status: res.status, headers: Object.fromEntries(res.headers), body: await res.text() })
  }
  const viewers = [await extended(link('a1', tokens[0])), await extended(link('a1', tokens[1])), new Viewer(link('a1', tokens[0]))]
  await viewers[2].opened
  answers.push(await refusal(link('a1', tokens[1])))
  await Promise.all(viewers.map((v) => v.untilStreaming()))
  toolset.emitFrame(1, { width: 320, height: 240 })
  await Promise.all(viewers.map((v) => v.waitFrames(1)))
  // Refused messages (control from a view-only link, a bad message) carry no token either.
  viewers[0].send({ type: 'control-request' })
  await viewers[0].waitJson((m) => m.error === 'control_denied', { what: 'control_denied' })
  await viewers[1].barrier()

  assert.deepEqual(answers.map((a) => a.status), [403, 401, 401, 401, 401])
  for (const answer of answers) assert.deepEqual(leaks(JSON.stringify(answer)), [], JSON.stringify(answer))
  for (const viewer of viewers) {
    assert.ok(viewer.json.length >= 2)
    assert.deepEqual(leaks(JSON.stringify(viewer.json) + viewer.messages.join('\n')), [])
  }
  assert.ok(capture.has(/allowedOrigins threw/), 'the origin hook error was logged')
  assert.ok(capture.has(/authenticate threw/), 'the authenticate hook error was logged')
  for (const line of capture.lines) assert.deepEqual(leaks(line), [], line)
  assert.ok(capture.lines.every((line) => !/bsv1\.[A-Za-z0-9_-]{8}/.test(line)), capture.lines.join('\n'))
  assert.ok(capture.has(/\[redacted\]/))
  // A token quoted where no request is known (no `?token=` around it) is blanked by its shape.
  assert.deepEqual(leaks(redact(`a hook failed on ${tokens[1]}.`)), [])
  await Promise.all(viewers.map((v) => v.close()))
})

test('createViewerToken: defaults, and a TypeError for every bad option; viewerTokenSecret is checked', async (t) => {
  const registry = new ViewerRegistry({ viewerTokenSecret: SECRET })
  t.after(() => registry.close())
  const before = Date.now()
  const token = registry.createViewerToken({ agentId: 'a1' })
  const after = Date.now()
  assert.match(token, /^bsv1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/)
  const payload = payloadOf(token)
  assert.deepEqual({ ...payload, e: undefined, n: undefined }, { a: 'a1', t: null, c: false, e: undefined, n: undefined, o: false })
  assert.ok(payload.e >= before + 300_000 && payload.e <= after + 300_000, 'five minutes by default')
  assert.equal(Buffer.from(payload.n, 'base64url').length, 16)
  assert.notEqual(registry.createViewerToken({ agentId: 'a1' }), token, 'each link has its own nonce')
  assert.equal(payloadOf(registry.createViewerToken({ agentId: 'a1', threadId: null })).t, null)
  for (const ttlMs of [1000, 86_400_000]) registry.createViewerToken({ agentId: 'a1', ttlMs })

  const bad = [
    undefined,
    null,
    'a1',
    [],
    {},
    { agentId: '' },
    { agentId: 7 },
    { agentId: 'x'.repeat(300) },
    { agentId: 'bad\nid' },
    { agentId: 'a1', threadId: '' },
    { agentId: 'a1', threadId: 5 },
    { agentId: 'a1', threadId: 't\u0000' },
    { agentId: 'a1', canControl: 'yes' },
    { agentId: 'a1', canControl: 1 },
    { agentId: 'a1', ttlMs: 999 },
    { agentId: 'a1', ttlMs: 86_400_001 },
    { agentId: 'a1', ttlMs: 1500.5 },
    { agentId: 'a1', ttlMs: '60000' },
    { agentId: 'a1', ttlMs: Infinity },
    { agentId: 'a1', once: 'true' },
    { agentId: 'a1', threadID: 't1' },
    { agentId: 'a1', ttl: 60_000 },
  ]
  for (const options of bad) {
    assert.throws(() => registry.createViewerToken(options), TypeError, JSON.stringify(options) ?? String(options))
  }

  for (const viewerTokenSecret of ['x'.repeat(31), Buffer.alloc(31), new Uint8Array(16), 32, null, true, { secret: SECRET }]) {
    assert.throws(() => new ViewerRegistry({ viewerTokenSecret }), TypeError, String(viewerTokenSecret))
  }
  const keyed = [new ViewerRegistry({ viewerTokenSecret: 'x'.repeat(32) }), new ViewerRegistry({ viewerTokenSecret: Buffer.alloc(32, 1) })]
  await Promise.all(keyed.map((r) => r.close()))
})

test('the single-use memory is bounded: full of live links it refuses 503, expired ones make room', async () => {
  const tokens = new ViewerTokens(SECRET, { maxSingleUse: 2 })
  const use = (token) => {
    const verdict = tokens.check(token, 'a1', undefined)
    return verdict.refusal ?? verdict.consume()
  }
  const short = [tokens.create({ agentId: 'a1', once: true, ttlMs: 1000 }), tokens.create({ agentId: 'a1', once: true, ttlMs: 1000 })]
  const later = tokens.create({ agentId: 'a1', once: true, ttlMs: 60_000 })
  assert.equal(use(short[0]), null)
  assert.equal(use(short[1]), null)
  assert.equal(use(tokens.create({ agentId: 'a1' })), null, 'a link without once takes no room')
  const full = { status: 503, error: 'over_capacity', message: 'too many single-use viewer links are in use; try again later' }
  assert.deepEqual(use(later), full)
  assert.equal(use(short[0]).error, 'token_reused')
  const expiry = Math.max(...short.map((token) => payloadOf(token).e))
  await waitFor(() => Date.now() > expiry, { timeout: 5000, what: 'the short links to expire' })
  assert.equal(use(later), null, 'the expired links were forgotten')
  assert.equal(use(later).error, 'token_reused')
  assert.equal(use(short[0]).error, 'token_expired')
})

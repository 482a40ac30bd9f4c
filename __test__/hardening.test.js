'use strict'
// Regression tests for hardening fixes, each reproduced against the earlier code:
// - the app's final response decides admission (middleware that refuses or throws after
//   `await next()`), while middleware that only adds a header lets the upgrade through;
// - request credentials never reach the log, and a malformed Host still gets an HTTP answer;
// - viewers never see DevTools endpoints or a deployer's raw error text (the log gets it);
// - a burst of sticky messages (url, then stream errors) never closes a reading viewer 4001;
// - `stats().admissionsRefused` counts every 503;
// - agent and thread ids are opaque strings that never alias one another's channels.

const test = require('node:test')
const assert = require('node:assert/strict')
const net = require('node:net')
const util = require('node:util')
const crypto = require('node:crypto')
const { EventEmitter } = require('node:events')
const WebSocket = require('ws')
const { startServer, FakeToolset, Viewer, waitFor, jpegFrame, frameSeq } = require('./support')

// ---- helpers local to this file -------------------------------------------------------------

/** A logger that records every line it is given (all levels), formatted as console would. */
function recordingLogger() {
  const lines = []
  const record = (level) => (...args) => lines.push(`${level}: ${util.format(...args)}`)
  return { lines, logger: { info: record('info'), warn: record('warn'), error: record('error') } }
}

/** `text` percent-decoded where possible (so an encoded credential is recognised too). */
function decoded(text) {
  try {
    return decodeURIComponent(text)
  } catch {
    return text.replace(/%([0-9A-Fa-f]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)))
  }
}

/**
 * Sends a hand-written HTTP request on a raw TCP socket and resolves with its answer:
 * `{ status, headers, body }` (status 101 resolves as soon as the head arrived, and the socket
 * is destroyed), or `{ status: null, timedOut }` when no complete answer came within `timeout`.
 */
function rawRequest(port, requestText, { timeout = 10_000 } = {}) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    let data = Buffer.alloc(0)
    let done = false
    const finish = (result) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resolve(result)
    }
    const parse = () => {
      const end = data.indexOf('\r\n\r\n')
      if (end < 0) return null
      const head = data.subarray(0, end).toString('latin1').split('\r\n')
      const match = /^HTTP\/1\.1 (\d{3})/.exec(head[0])
      const headers = {}
      for (const line of head.slice(1)) {
        const colon = line.indexOf(':')
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
      }
      return { status: match ? Number(match[1]) : NaN, headers, body: data.subarray(end + 4).toString('utf8') }
    }
    const timer = setTimeout(() => finish({ status: null, timedOut: true, received: data.toString('latin1') }), timeout)
    socket.on('error', () => {})
    socket.on('connect', () => socket.write(requestText))
    socket.on('data', (chunk) => {
      data = Buffer.concat([data, chunk])
      const answer = parse()
      if (!answer) return
      if (answer.status === 101) return finish(answer)
      const length = Number(answer.headers['content-length'])
      if (Number.isFinite(length) && Buffer.byteLength(answer.body) >= length) finish(answer)
    })
    socket.on('close', () => finish(parse() ?? { status: null, closed: true, received: data.toString('latin1') }))
  })
}

/** A WebSocket upgrade request for `path`, written by hand (the path is sent as it is). */
function upgradeRequest(port, path, extraHeaders = {}) {
  const headers = {
    Host: `127.0.0.1:${port}`,
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': crypto.randomBytes(16).toString('base64'),
    'Sec-WebSocket-Version': '13',
    ...extraHeaders,
  }
  let text = `GET ${path} HTTP/1.1\r\n`
  for (const [name, value] of Object.entries(headers)) text += `${name}: ${value}\r\n`
  return `${text}\r\n`
}

/** The answer to a WebSocket upgrade of `path`: 101, or the HTTP status and body of a refusal. */
function upgradeAnswer(port, path, extraHeaders, options) {
  return rawRequest(port, upgradeRequest(port, path, extraHeaders), options)
}

/**
 * How a ws client's upgrade went: `{ status: 101, viewer }` once open, or the refusal's
 * `{ status, body }`. Bounded.
 */
async function upgradeOutcome(viewer, what = 'upgrade answer') {
  await waitFor(() => viewer.unexpected || viewer.ws.readyState === WebSocket.OPEN || viewer.closeCode !== null, {
    what,
    timeout: 10_000,
  })
  if (viewer.ws.readyState === WebSocket.OPEN) return { status: 101, viewer }
  if (viewer.unexpected) return viewer.unexpected
  return { status: null, error: viewer.error?.message }
}

/** A port nothing listens on (bound once, then released). */
async function closedPort() {
  const server = net.createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** Every text a viewer received, as one string (its JSON messages; compat frames are base64). */
function receivedText(viewer) {
  return viewer.json.map((m) => JSON.stringify(m)).join('\n')
}

/**
 * A browser toolset of the Mastra shape that records the thread passed to each call and the
 * options of each screencast start; frames are emitted on the current stream by the test.
 */
let recordingToolsets = 0

class RecordingToolset {
  constructor(name) {
    this.name = name
    this.host = `toolset-${++recordingToolsets}.test`
    this.calls = []
    this.current = null
    this.starts = 0
  }
  isBrowserRunning(threadId) {
    this.calls.push(['isBrowserRunning', threadId])
    return true
  }
  onBrowserReady(callback, threadId) {
    this.calls.push(['onBrowserReady', threadId])
    return () => {}
  }
  onBrowserClosed(callback, threadId) {
    this.calls.push(['onBrowserClosed', threadId])
    return () => {}
  }
  async startScreencastIfBrowserActive(options) {
    this.calls.push(['startScreencastIfBrowserActive', options?.threadId])
    this.starts += 1
    const stream = new EventEmitter()
    stream.stop = async () => {}
    this.current = stream
    return stream
  }
  getCurrentUrl(threadId) {
    this.calls.push(['getCurrentUrl', threadId])
    return `https://${this.host}/`
  }
  async injectMouseEvent() {}
  async injectKeyboardEvent() {}
  async close() {}
  emitFrame(seq) {
    this.current?.emit('frame', {
      data: jpegFrame(seq).toString('base64'),
      timestamp: Date.now(),
      viewport: { width: 1280, height: 720, offsetTop: 0, scrollOffsetX: 0, scrollOffsetY: 0, pageScaleFactor: 1 },
      sessionId: 1,
    })
  }
}

/** The tagged seqs of a compat viewer's frames. */
function seqsOf(viewer) {
  return viewer.frames.map((f) => frameSeq(f))
}

// ---- 1. the app's final response decides admission -------------------------------------------

test('middleware that refuses after `await next()` turns the upgrade into its 403; nothing is admitted', async (t) => {
  const toolset = new FakeToolset()
  const srv = await startServer(
    { getToolset: () => toolset },
    {
      configure(app) {
        app.use('*', async (c, next) => {
          await next()
          c.res = new Response('no', { status: 403 })
        })
      },
    },
  )
  t.after(() => srv.close())
  const viewer = new Viewer(srv.url('a'))
  const outcome = await upgradeOutcome(viewer)
  assert.equal(outcome.status, 403, `expected the middleware's 403, got ${JSON.stringify({ status: outcome.status, body: outcome.body })}`)
  assert.equal(outcome.body, 'no')
  // The raw handshake, too: the HTTP answer is the middleware's, never a 101.
  const raw = await upgradeAnswer(srv.port, '/browser/a/stream')
  assert.equal(raw.status, 403)
  const stats = srv.registry.stats()
  assert.equal(stats.viewersAdmitted, 0)
  assert.equal(stats.viewers, 0)
  assert.equal(stats.channels.length, 0)
  assert.equal(toolset.starts, 0)
})

test('middleware that throws after `await next()` makes the upgrade a 500', async (t) => {
  const toolset = new FakeToolset()
  const srv = await startServer(
    { getToolset: () => toolset, logger: recordingLogger().logger },
    {
      configure(app) {
        app.use('*', async (c, next) => {
          await next()
          // Hono's default handler logs this error with console.error: expected output.
          throw new Error('expected test error: middleware failed after the route')
        })
      },
    },
  )
  t.after(() => srv.close())
  const viewer = new Viewer(srv.url('a'))
  const outcome = await upgradeOutcome(viewer)
  assert.equal(outcome.status, 500, `expected 500, got ${JSON.stringify({ status: outcome.status, body: outcome.body })}`)
  const raw = await upgradeAnswer(srv.port, '/browser/a/stream')
  assert.equal(raw.status, 500, `expected 500, got ${JSON.stringify(raw).slice(0, 300)}`)
  assert.equal(srv.registry.stats().viewersAdmitted, 0)
  assert.equal(toolset.starts, 0)
})

test('middleware that only adds a header after `await next()` still lets the upgrade through', async (t) => {
  const toolset = new FakeToolset()
  const srv = await startServer(
    { getToolset: () => toolset },
    {
      configure(app) {
        app.use('*', async (c, next) => {
          await next()
          c.header('x-extra', '1')
        })
      },
    },
  )
  t.after(() => srv.close())
  const viewer = new Viewer(srv.url('a'))
  const outcome = await upgradeOutcome(viewer)
  assert.equal(outcome.status, 101, `expected 101, got ${JSON.stringify({ status: outcome.status, body: outcome.body })}`)
  await waitFor(() => viewer.json.some((m) => m.status === 'connected'), { what: '{status:connected}' })
  await viewer.untilStreaming()
  const data = toolset.emitFrame(7)
  await waitFor(() => viewer.frames.includes(data), { what: 'the frame' })
  assert.equal(viewer.closeCode, null)
  assert.equal(srv.registry.getViewerCount('a'), 1)
})

// ---- 2. credentials never reach the log --------------------------------------------------------

test('tokens never reach the log: bad Host headers, a throwing authenticate hook, a throwing getToolset', async (t) => {
  const { lines, logger } = recordingLogger()
  const tokensSeen = []
  const srv = await startServer({
    logger,
    authenticate: (c, token) => {
      tokensSeen.push(token)
      if (token === 'sekret-456') return true
      throw new Error(`token ${token} rejected by the hook`)
    },
    getToolset: () => {
      throw new Error('toolset lookup failed for token sekret-456 (Bearer sekret-456)')
    },
  })
  t.after(() => srv.close())

  // Upgrades whose Host is no host name, with the token in the query (plain and percent-encoded):
  // each must be answered over HTTP, not left hanging or cut.
  const badHosts = [
    ['/browser/a/stream?apiKey=sekret-123', 'bad host name'],
    ['/browser/a/stream?apiKey=sekret-123', '[::zz'],
    ['/browser/a/stream?apiKey=sekret%2D123', 'bad host name'],
    ['/browser/a/stream?x=1&apiKey=sekret%2D123', '[::zz'],
  ]
  for (const [path, host] of badHosts) {
    const answer = await upgradeAnswer(srv.port, path, { Host: host })
    assert.ok(
      answer.status >= 400 && answer.status < 500,
      `Host ${JSON.stringify(host)} ${path}: expected an HTTP 4xx answer, got ${JSON.stringify(answer).slice(0, 300)}`,
    )
  }
  // A normal Host, the token in the query and in the Authorization header: the hook throws.
  const byQuery = await upgradeAnswer(srv.port, '/browser/a/stream?apiKey=sekret-123')
  assert.equal(byQuery.status, 401)
  const byHeader = await upgradeAnswer(srv.port, '/browser/a/stream', { Authorization: 'Bearer sekret-123' })
  assert.equal(byHeader.status, 401)
  const wsClient = new Viewer(srv.url('a', '?apiKey=sekret-123'))
  assert.equal((await upgradeOutcome(wsClient)).status, 401)
  assert.ok(tokensSeen.filter((token) => token === 'sekret-123').length >= 3, `the hook saw the token: ${JSON.stringify(tokensSeen)}`)

  // The probe route with a valid token, whose getToolset throws an error quoting that token.
  const probe = await fetch(`http://127.0.0.1:${srv.port}/api/agents/a/browser/session`, {
    headers: { authorization: 'Bearer sekret-456' },
  })
  assert.equal(probe.status, 500)
  const probeText = await probe.text()
  assert.doesNotMatch(probeText, /sekret/)
  const probeByQuery = await fetch(`http://127.0.0.1:${srv.port}/api/agents/a/browser/session?apiKey=sekret-456`)
  assert.equal(probeByQuery.status, 500)

  // The failures were logged (redacted), and no line holds a token in any form.
  assert.ok(lines.some((line) => line.includes('rejected by the hook')), `the hook's error was logged:\n${lines.join('\n')}`)
  assert.ok(lines.some((line) => line.includes('toolset lookup failed')), `the getToolset error was logged:\n${lines.join('\n')}`)
  for (const line of lines) {
    for (const secret of ['sekret-123', 'sekret-456']) {
      assert.ok(!line.includes(secret) && !line.includes(encodeURIComponent(secret)), `log line leaks ${secret}: ${line}`)
      assert.ok(!decoded(line).includes(secret), `log line leaks ${secret} percent-encoded: ${line}`)
    }
  }
})

// ---- 3. viewers never see endpoints or a deployer's raw error text -----------------------------

test('a DevTools endpoint that refuses: viewers get screencast_failed without the endpoint, the log gets it', async (t) => {
  const port = await closedPort()
  const { lines, logger } = recordingLogger()
  const endpoints = {
    'ws-agent': `ws://127.0.0.1:${port}/devtools/browser/abc-secret-id`,
    'http-agent': `http://127.0.0.1:${port}/abc-secret-id`,
  }
  const srv = await startServer({ logger, cdpTimeoutMs: 1000, getCdpEndpoint: (agentId) => endpoints[agentId] })
  t.after(() => srv.close())
  for (const agentId of Object.keys(endpoints)) {
    const compat = new Viewer(srv.url(agentId))
    const extended = new Viewer(srv.url(agentId), { extended: true })
    await Promise.all([compat.opened, extended.opened])
    for (const viewer of [compat, extended]) {
      const error = await waitFor(() => viewer.json.find((m) => m.error), { what: `${agentId}: error message`, timeout: 10_000 })
      assert.equal(error.error, 'screencast_failed')
      assert.equal(typeof error.message, 'string')
      await waitFor(() => viewer.json.some((m) => m.status === 'browser_closed' && m.type === undefined), {
        what: `${agentId}: browser_closed`,
      })
      const text = receivedText(viewer)
      for (const forbidden of ['127.0.0.1', 'devtools', 'abc-secret-id', `:${port}`, 'json/version']) {
        assert.ok(!text.includes(forbidden), `${agentId}: a viewer saw ${JSON.stringify(forbidden)}: ${text}`)
      }
    }
  }
  await waitFor(() => lines.some((line) => line.includes('ws-agent') && line.includes('abc-secret-id')), {
    what: `the endpoint detail in the log:\n${lines.join('\n')}`,
  })
})

/** A FakeToolset whose screencast start throws a deployer's error text. */
class StartThrowsToolset extends FakeToolset {
  async startScreencastIfBrowserActive() {
    throw new Error('db password=hunter2')
  }
  async startScreencast() {
    throw new Error('db password=hunter2')
  }
}

/** A FakeToolset whose isBrowserRunning throws a deployer's error text. */
class RunningThrowsToolset extends FakeToolset {
  isBrowserRunning() {
    throw new Error('isBrowserRunning: hunter2')
  }
}

test("toolset errors never reach viewers: startScreencast, getToolset, isBrowserRunning, a stream's error", async (t) => {
  const { lines, logger } = recordingLogger()
  const kinds = {
    'start-throws': () => new StartThrowsToolset(),
    'running-throws': () => new RunningThrowsToolset(),
    'stream-errors': () => new FakeToolset(),
  }
  /** agent id → its toolset; agents are `<kind>~<mode>`, one viewer each (so each gets its session's messages). */
  const toolsets = new Map()
  const srv = await startServer({
    logger,
    getToolset: (agentId) => {
      const kind = agentId.split('~')[0]
      if (kind === 'lookup-throws') throw new Error('internal hunter2')
      if (!toolsets.has(agentId)) toolsets.set(agentId, kinds[kind]())
      return toolsets.get(agentId)
    },
  })
  t.after(() => srv.close())
  const viewerOf = async (kind, mode) => {
    const url = srv.url(`${kind}~${mode}`)
    const viewer = new Viewer(url, { extended: mode === 'extended' })
    await viewer.opened
    return viewer
  }
  for (const kind of ['start-throws', 'lookup-throws', 'running-throws']) {
    for (const mode of ['compat', 'extended']) {
      const viewer = await viewerOf(kind, mode)
      const error = await waitFor(() => viewer.json.find((m) => m.error), { what: `${kind} (${mode}): error message` })
      assert.equal(error.error, 'screencast_failed', `${kind} (${mode}): ${JSON.stringify(error)}`)
      assert.ok(!receivedText(viewer).includes('hunter2'), `${kind} (${mode}): the viewer saw the deployer's text: ${receivedText(viewer)}`)
    }
  }
  // A stream that errors once streaming: viewers see the browser closed, never the text.
  for (const mode of ['compat', 'extended']) {
    const viewer = await viewerOf('stream-errors', mode)
    await viewer.untilStreaming()
    toolsets.get(`stream-errors~${mode}`).current.emit('error', new Error('stream failed: hunter2'))
    await waitFor(() => viewer.statuses().at(-1) === 'browser_closed', { what: `stream-errors (${mode}): browser_closed` })
    assert.ok(!receivedText(viewer).includes('hunter2'), `stream-errors (${mode}): the viewer saw the deployer's text: ${receivedText(viewer)}`)
  }
  // The detail is for the log.
  await waitFor(() => lines.some((line) => line.includes('db password=hunter2')), { what: 'the start failure in the log' })
})

test("the probe and close routes answer 500 without the deployer's error text", async (t) => {
  const srv = await startServer({
    logger: recordingLogger().logger,
    getToolset: () => {
      throw new Error('internal hunter2')
    },
  })
  t.after(() => srv.close())
  const probe = await fetch(`http://127.0.0.1:${srv.port}/api/agents/x/browser/session`)
  assert.equal(probe.status, 500)
  const text = await probe.text()
  const body = JSON.parse(text)
  assert.equal(typeof body.error, 'string')
  assert.equal(typeof body.message, 'string')
  assert.ok(!text.includes('hunter2'), text)
  const close = await fetch(`http://127.0.0.1:${srv.port}/api/agents/x/browser/close`, { method: 'POST' })
  assert.equal(close.status, 500)
  const closeText = await close.text()
  assert.ok(!closeText.includes('hunter2'), closeText)
})

// ---- 4. a burst of sticky messages never closes a reading viewer --------------------------------

test('5,000 url events, then 2,000 failed screencast starts: reading viewers stay open, end on the newest of each', async (t) => {
  const toolset = new FakeToolset()
  const logs = recordingLogger()
  const srv = await startServer({ getToolset: () => toolset, maxQueuedMessages: 8, logger: logs.logger })
  t.after(() => srv.close())
  const viewers = [new Viewer(srv.url('burst')), new Viewer(srv.url('burst')), new Viewer(srv.url('burst'))]
  await Promise.all(viewers.map((v) => v.opened))
  await Promise.all(viewers.map((v) => v.untilStreaming()))
  const stream = toolset.current
  assert.ok(stream, 'the screencast started')
  const urlAt = (i) => `https://example.test/page/${i}`
  const COUNT = 5000
  for (let i = 0; i < COUNT; i++) stream.emit('url', urlAt(i))
  // A stream error ends that stream (browser_closed); then every browser-ready event tries a
  // screencast that fails: browser_starting, screencast_failed and browser_closed each time,
  // far more sticky messages than the queue holds.
  stream.emit('error', new Error('screencast error'))
  const FAILURES = 2000
  let attempts = 0
  toolset.startScreencastIfBrowserActive = async () => {
    attempts += 1
    throw new Error(`start ${attempts} failed`)
  }
  for (let i = 0; i < FAILURES; i++) {
    toolset.launch()
    // A start and its failure are promise callbacks only: settled before the next macrotask.
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(attempts, i + 1, 'each ready event tried one start')
  }
  // Every message of the burst is in each viewer's queue now (the glue's calls are synchronous),
  // but still being written. The answer to a ping joins the same queue behind them: a viewer
  // that has its pong has read the whole burst. (Waiting for "last url, a failure, then
  // browser_closed" was not enough: an earlier failure's browser_closed followed by the next
  // failure looks the same midway.) Native sockets only: a JS socket answers pings itself.
  const { viewers: viewerStats } = srv.registry.stats().channels.find((c) => c.viewers.length === 3)
  assert.deepEqual(viewerStats.map((v) => v.transport), ['native', 'native', 'native'])
  const drained = viewers.map(() => false)
  for (const [n, viewer] of viewers.entries()) {
    const token = Buffer.from(`after the burst ${n}`)
    viewer.ws.on('pong', (data) => {
      if (data.equals(token)) drained[n] = true
    })
    viewer.ws.ping(token)
  }
  const last = urlAt(COUNT - 1)
  for (const [n, viewer] of viewers.entries()) {
    await waitFor(() => viewer.closeCode !== null || drained[n], { what: `viewer ${n}: the pong after the burst`, timeout: 15_000 })
    assert.equal(viewer.closeCode, null, `viewer ${n} was closed (${viewer.closeCode})`)
    assert.ok(viewer.json.some((m) => m.error === 'screencast_failed'), `viewer ${n}: told of the failure`)
    assert.equal(viewer.ws.readyState, WebSocket.OPEN)
    const urls = viewer.json.filter((m) => m.url).map((m) => m.url)
    assert.equal(urls.at(-1), last, `viewer ${n}: latest url wins`)
    // Latest-wins skips, never reorders.
    const indices = urls.filter((u) => u.startsWith('https://example.test/page/')).map((u) => Number(u.split('/').at(-1)))
    assert.deepEqual(indices, [...indices].sort((a, b) => a - b), `viewer ${n}: url messages in order`)
    // The newest of each kind comes last and in order: the failure, then browser_closed.
    const lastError = viewer.json.findLastIndex((m) => m.error)
    const lastClosed = viewer.json.findLastIndex((m) => m.status === 'browser_closed')
    assert.ok(lastError < lastClosed, `viewer ${n}: browser_closed follows the failure`)
    assert.deepEqual(viewer.json.at(-1), { status: 'browser_closed' }, `viewer ${n} ends with browser_closed`)
    assert.ok(!viewer.json.some((m) => m.message?.includes('failed')), 'no deployer error text')
  }
  assert.equal(srv.registry.getViewerCount('burst'), 3)
  assert.equal(toolset.readyCallbacks.size, 1, 'the session kept its browser callbacks through the failures')
})

// ---- 5. admissionsRefused counts every 503 -----------------------------------------------------

test('stats().admissionsRefused counts each refused upgrade once', async (t) => {
  const srv = await startServer({ getToolset: () => new FakeToolset(), maxViewersPerAgent: 50 })
  t.after(() => srv.close())
  const viewers = Array.from({ length: 50 }, () => new Viewer(srv.url('full'), { keepFrames: false }))
  await Promise.all(viewers.map((v) => v.opened))
  await waitFor(() => srv.registry.getViewerCount('full') === 50, { what: '50 viewers' })
  assert.equal(srv.registry.stats().admissionsRefused, 0)
  const answers = await Promise.all(Array.from({ length: 200 }, () => upgradeAnswer(srv.port, '/browser/full/stream', {}, { timeout: 20_000 })))
  const statuses = answers.map((a) => a.status)
  assert.deepEqual(
    statuses.filter((s) => s !== 503),
    [],
    `every extra upgrade gets 503 (${statuses.filter((s) => s === 503).length} did)`,
  )
  for (const answer of answers) assert.equal(JSON.parse(answer.body).error, 'over_capacity')
  assert.equal(srv.registry.stats().admissionsRefused, 200)
  assert.equal(srv.registry.getViewerCount('full'), 50)
  assert.ok(viewers.every((v) => v.closeCode === null))
})

// ---- 6. ids are opaque --------------------------------------------------------------------------

test('a thread id with a slash and a space streams, and the toolset gets it as it is', async (t) => {
  const toolset = new RecordingToolset('threaded')
  const asked = []
  const srv = await startServer({
    getToolset: (agentId, threadId) => {
      asked.push([agentId, threadId])
      return toolset
    },
  })
  t.after(() => srv.close())
  const threadId = 'thread/1 2'
  const viewer = new Viewer(srv.url('agent-1', `?threadId=${encodeURIComponent(threadId)}`))
  const outcome = await upgradeOutcome(viewer)
  assert.equal(outcome.status, 101, `expected 101, got ${JSON.stringify({ status: outcome.status, body: outcome.body })}`)
  await waitFor(() => viewer.json.some((m) => m.status === 'connected'), { what: '{status:connected}' })
  await viewer.untilStreaming()
  toolset.emitFrame(41)
  await waitFor(() => seqsOf(viewer).includes(41), { what: 'the thread frame' })
  assert.deepEqual(asked, [['agent-1', threadId]])
  const startCalls = toolset.calls.filter(([name]) => name === 'startScreencastIfBrowserActive')
  assert.deepEqual(startCalls, [['startScreencastIfBrowserActive', threadId]])
  const running = toolset.calls.filter(([name]) => name === 'isBrowserRunning')
  assert.ok(running.length >= 1 && running.every(([, thread]) => thread === threadId), JSON.stringify(running))
  const channel = srv.registry.stats().channels.find((c) => c.agentId === 'agent-1')
  assert.equal(channel.threadId, threadId)
})

test("agent ids with ':' or '%' never share a channel with a thread of another agent", async (t) => {
  const toolsets = new Map()
  const srv = await startServer({
    getToolset: (agentId, threadId) => {
      const name = JSON.stringify([agentId, threadId ?? null])
      if (!toolsets.has(name)) toolsets.set(name, new RecordingToolset(name))
      return toolsets.get(name)
    },
  })
  t.after(() => srv.close())
  const cases = [
    { label: "agent 'a:b'", path: 'a%3Ab', query: '', ids: ['a:b', null], seq: 1 },
    { label: "agent 'a', thread 'b'", path: 'a', query: '?threadId=b', ids: ['a', 'b'], seq: 2 },
    { label: "agent 'a%3Ab'", path: 'a%253Ab', query: '', ids: ['a%3Ab', null], seq: 3 },
    { label: "agent 'a%', thread 'b'", path: 'a%25', query: '?threadId=b', ids: ['a%', 'b'], seq: 4 },
  ]
  for (const c of cases) {
    c.viewer = new Viewer(srv.url(c.path, c.query))
    const outcome = await upgradeOutcome(c.viewer)
    assert.equal(outcome.status, 101, `${c.label}: expected 101, got ${JSON.stringify({ status: outcome.status, body: outcome.body })}`)
    await c.viewer.untilStreaming(`${c.label} streaming`)
  }
  const channels = srv.registry.stats().channels
  assert.equal(channels.length, cases.length, `one channel each: ${JSON.stringify(channels.map((ch) => [ch.key, ch.agentId, ch.threadId]))}`)
  assert.equal(new Set(channels.map((ch) => ch.key)).size, cases.length, 'distinct keys')
  for (const c of cases) {
    const [agentId, threadId] = c.ids
    const channel = channels.find((ch) => ch.agentId === agentId && (ch.threadId ?? null) === threadId)
    assert.ok(channel, `${c.label}: its own channel`)
    assert.equal(channel.viewers.length, 1, `${c.label}: one viewer`)
    const toolset = toolsets.get(JSON.stringify(c.ids))
    assert.ok(toolset, `${c.label}: its own toolset was asked for`)
  }
  assert.equal(toolsets.size, cases.length)
  // Frames pushed to one channel reach its viewer only: each toolset pushes its own seq, then
  // a second round; every viewer ends up with exactly its own seqs, in order.
  for (const round of [0, 10]) {
    for (const c of cases) toolsets.get(JSON.stringify(c.ids)).emitFrame(c.seq + round)
    for (const c of cases) await waitFor(() => seqsOf(c.viewer).includes(c.seq + round), { what: `${c.label}: frame ${c.seq + round}` })
  }
  for (const c of cases) {
    assert.deepEqual(seqsOf(c.viewer), [c.seq, c.seq + 10], `${c.label}: only its own frames`)
  }
  for (const channel of srv.registry.stats().channels) assert.equal(channel.framesIn, 2, `${channel.key}: two frames in`)
})

test('ids with control characters or over 256 bytes are refused 400; path-like ids are opaque', async (t) => {
  const asked = []
  const srv = await startServer({
    getToolset: (agentId, threadId) => {
      asked.push([agentId, threadId])
      return new FakeToolset()
    },
  })
  t.after(() => srv.close())
  const refused = [
    '/browser/a%00b/stream',
    '/browser/a%0Ab/stream',
    `/browser/${'x'.repeat(300)}/stream`,
    '/browser/ok/stream?threadId=a%00b',
    '/browser/ok/stream?threadId=a%0Ab',
  ]
  for (const path of refused) {
    const answer = await upgradeAnswer(srv.port, path)
    assert.equal(answer.status, 400, `${path.slice(0, 60)}: ${JSON.stringify(answer).slice(0, 300)}`)
    assert.equal(JSON.parse(answer.body).error, 'bad_request')
  }
  assert.deepEqual(asked, [], 'no refused id reached getToolset')
  // `..%2F` is an id like any other (a path segment of its own, decoded to '../').
  const viewer = new Viewer(srv.url('..%2F'))
  const outcome = await upgradeOutcome(viewer)
  assert.equal(outcome.status, 101, `..%2F: expected 101, got ${JSON.stringify({ status: outcome.status, body: outcome.body })}`)
  await viewer.untilStreaming()
  const raw = await upgradeAnswer(srv.port, '/browser/..%2F/stream')
  assert.equal(raw.status, 101)
  assert.deepEqual(asked, [['../', undefined]])
  assert.ok(srv.registry.stats().channels.some((c) => c.agentId === '../'))
})

// ---- 7. ids are exact in the registry's own calls, and loggers of any shape work --------------

test("publishEvent and the drop-in key calls reach exactly the named channel, never one an id with ':' or '%' resembles", async (t) => {
  const srv = await startServer({ getToolset: () => new FakeToolset() })
  t.after(() => srv.close())
  const colonAgent = new Viewer(srv.url('a%3Ab'), { extended: true }) // agent `a:b`
  const threadOfA = new Viewer(srv.url('a', '?threadId=b'), { extended: true }) // agent `a`, thread `b`
  await Promise.all([colonAgent.untilStreaming(), threadOfA.untilStreaming()])
  assert.equal(srv.registry.publishEvent('a:b', { type: 'note', n: 1 }), true)
  assert.equal(srv.registry.publishEvent('a', { type: 'note', n: 2 }, 'b'), true)
  await waitFor(() => colonAgent.events().length === 1 && threadOfA.events().length === 1, { what: 'one event each' })
  assert.equal(colonAgent.events()[0].event.n, 1)
  assert.equal(threadOfA.events()[0].event.n, 2)
  // A drop-in key that names no live channel is an agent id: `a%3Ab` is not agent `a:b`.
  assert.equal(srv.registry.getViewerCount('a%3Ab'), 0)
  assert.equal(srv.registry.getViewerCount('a:b'), 2, "Mastra's key 'a:b' is ambiguous by its format: both fit")
  await srv.registry.closeBrowserSessionOf('a:b')
  await waitFor(() => colonAgent.statuses().includes('browser_closed'), { what: 'agent a:b closed' })
  assert.ok(!threadOfA.statuses().includes('browser_closed'), 'thread b of agent a untouched')
})

test('a logger whose methods use `this`, a class-instance logger and a throwing logger all work', async (t) => {
  const objectLogger = {
    lines: [],
    warn(text) {
      this.lines.push(text)
    },
    error(text) {
      this.lines.push(text)
    },
  }
  class ClassLogger {
    lines = []
    warn(text) {
      this.lines.push(text)
    }
    error(text) {
      this.lines.push(text)
    }
  }
  const classLogger = new ClassLogger()
  const throwingLogger = {
    warn() {
      throw new Error('logger down')
    },
    error() {
      throw new Error('logger down')
    },
  }
  for (const logger of [objectLogger, classLogger, throwingLogger]) {
    const srv = await startServer({ logger, getToolset: () => ({ isBrowserRunning: () => true, startScreencastIfBrowserActive: () => Promise.reject(new Error('no screencast today')) }) })
    const viewer = new Viewer(srv.url('logged'))
    await waitFor(() => viewer.json.some((m) => m.error === 'screencast_failed'), { what: 'the failure reported' })
    if (logger.lines) await waitFor(() => logger.lines.some((line) => line.includes('no screencast today')), { what: 'the detail logged by the deployer logger' })
    assert.equal(viewer.closeCode, null)
    await viewer.close()
    await srv.close()
  }
})

test('a channel lingering while its CDP source is still being resolved is not forgotten when another agent starts', async (t) => {
  const port = await closedPort()
  const srv = await startServer({
    lingerMs: 3000,
    logger: recordingLogger().logger,
    // Slow to answer, then unreachable: the session fails a while after it started.
    getCdpEndpoint: (agentId) => new Promise((resolve) => setTimeout(() => resolve(`ws://127.0.0.1:${port}/devtools/browser/${agentId}`), 400)),
  })
  t.after(() => srv.close())
  const first = new Viewer(srv.url('x'))
  await first.opened
  await first.close()
  // Another agent's start while x lingers (no viewer, status browser_starting).
  const other = new Viewer(srv.url('y'))
  await other.opened
  const back = new Viewer(srv.url('x'))
  await waitFor(() => back.json.some((m) => m.error === 'screencast_failed') && back.statuses().includes('browser_closed'), {
    what: 'the returning viewer of x learns how its session ended',
  })
  await Promise.all([other.close(), back.close()])
})

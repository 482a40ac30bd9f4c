'use strict'
// The browser client module (client/browser-stream-client.js), run in Node with the `ws`
// WebSocket: status and URL handling, capped exponential backoff with jitter, and reconnecting
// after the server drops the socket.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { pathToFileURL } = require('node:url')
const WebSocket = require('ws')
const { FakeToolset, startServer, waitFor, BASE_JPEG } = require('./support')

const clientModule = pathToFileURL(path.join(__dirname, '..', 'client', 'browser-stream-client.js')).href

test('backoff grows exponentially, stays under the cap, and is jittered', async () => {
  const { BrowserStreamClient } = await import(clientModule)
  const options = { initialMs: 100, maxMs: 1000, factor: 2 }
  const low = (n) => BrowserStreamClient.backoffDelay(n, options, () => 0)
  const high = (n) => BrowserStreamClient.backoffDelay(n, options, () => 1)
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(high), [100, 200, 400, 800, 1000, 1000])
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(low), [50, 100, 200, 400, 500, 500])
  const samples = new Set(Array.from({ length: 50 }, () => BrowserStreamClient.backoffDelay(3, options)))
  assert.ok(samples.size > 10, 'random jitter spreads reconnects')
})

test('the client follows statuses and URLs and reconnects after the server drops it', async (t) => {
  const { BrowserStreamClient } = await import(clientModule)
  const toolset = new FakeToolset({ url: 'https://example.test/page' })
  const srv = await startServer({ getToolset: () => toolset })
  t.after(() => srv.close())
  const statuses = []
  const urls = []
  const client = new BrowserStreamClient(srv.url('client-agent'), {
    WebSocket,
    backoff: { initialMs: 50, maxMs: 200 },
    onStatus: (s) => statuses.push(s),
    onUrl: (u) => urls.push(u),
  })
  t.after(() => client.close())
  client.connect()
  // The URL follows `streaming` (the source reads it once the screencast runs): wait for both.
  await waitFor(() => statuses.includes('streaming') && urls.length > 0, { what: 'streaming and the URL' })
  // Statuses are latest-wins per viewer: `browser_starting` may be replaced by `streaming`
  // before this viewer reads it.
  assert.deepEqual(statuses.filter((s) => s !== 'browser_starting').slice(0, 3), ['connecting', 'connected', 'streaming'])
  assert.deepEqual(urls, ['https://example.test/page'])
  assert.ok(client.send({ type: 'mouse', eventType: 'mouseMoved', x: 1, y: 2 }))
  await waitFor(() => toolset.mouse.length === 1, { what: 'input relayed' })

  const viewerId = srv.registry.stats().channels[0].viewers[0].id
  srv.registry.closeViewer(viewerId, 1011, 'test drop')
  await waitFor(() => statuses.filter((s) => s === 'connected').length === 2, { what: 'reconnected', timeout: 5000 })
  assert.ok(statuses.includes('reconnecting'))
  assert.equal(client.stats.reconnects, 1)
  client.close()
  assert.equal(statuses.at(-1), 'closed')
})

test('extended client: control, frame-pixel input, events once each across a reconnect', async (t) => {
  const { BrowserStreamClient } = await import(clientModule)
  const toolset = new FakeToolset()
  const controls = []
  const srv = await startServer({ getToolset: () => toolset, lingerMs: 5000, onControlChange: (agent, controller) => controls.push([agent, controller]) })
  t.after(() => srv.close())
  const events = []
  const messages = []
  const statuses = []
  let control = null
  const client = new BrowserStreamClient(srv.url('ext-client'), {
    WebSocket,
    extended: true,
    backoff: { initialMs: 50, maxMs: 200 },
    onStatus: (s) => statuses.push(s),
    onEvent: (event, seq) => events.push([event.n, seq]),
    onControl: (c) => (control = c),
    onMessage: (m) => messages.push(m),
  })
  t.after(() => client.close())
  client.connect()
  await waitFor(() => client.session && statuses.includes('streaming'), { what: 'session and streaming' })
  assert.equal(client.session.protocol, 'browser-stream.v1')
  toolset.emitFrame(1, { width: 1280, height: 960 }) // a 320x240 image of a 1280x960 page
  await waitFor(() => client.lastSeq !== null && client.lastSeq > client.session.seq, { what: 'a binary frame' })

  assert.ok(client.requestControl())
  await waitFor(() => control?.you === true, { what: 'control granted' })
  assert.equal(client.hasControl, true)
  client.input('mouse', { eventType: 'mousePressed', x: 160, y: 120, button: 'left', clickCount: 1 })
  await waitFor(() => toolset.mouse.length === 1, { what: 'input relayed' })
  assert.deepEqual(toolset.mouse[0], { type: 'mousePressed', x: 640, y: 480, button: 'left', clickCount: 1 })

  for (let n = 1; n <= 3; n++) assert.equal(srv.registry.publishEvent('ext-client', { type: 'tool_start', n }), true)
  await waitFor(() => events.length === 3, { what: 'three events' })
  const viewerId = client.session.viewerId
  srv.registry.closeViewer(viewerId, 1011, 'test drop')
  await waitFor(() => statuses.includes('reconnecting'), { what: 'reconnecting' })
  for (let n = 4; n <= 6; n++) srv.registry.publishEvent('ext-client', { type: 'tool_start', n })
  await waitFor(() => events.length >= 6 && messages.some((m) => m.type === 'resumed'), { what: 'resumed with the missed events' })
  assert.deepEqual(
    events.map(([n]) => n),
    [1, 2, 3, 4, 5, 6],
  )
  const seqs = events.map(([, seq]) => seq)
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b))
  // The controller left with the dropped socket: control was released for everyone.
  await waitFor(() => controls.some(([, c]) => c === null), { what: 'control released on disconnect' })
  assert.deepEqual(controls[0], ['ext-client', viewerId])
})

test("mode 'auto' falls back to the compat wire on a server that does not speak browser-stream.v1", async (t) => {
  const { BrowserStreamClient } = await import(clientModule)
  // A compat-only server: it never echoes a subprotocol (as a server without the extended
  // wire), so a client that offers one fails its handshake.
  const server = new WebSocket.Server({ port: 0, host: '127.0.0.1', handleProtocols: () => false })
  await new Promise((resolve) => server.once('listening', resolve))
  server.on('connection', (socket) => {
    socket.send(JSON.stringify({ status: 'connected' }))
    socket.send(BASE_JPEG.toString('base64'))
  })
  const modes = []
  const statuses = []
  const client = new BrowserStreamClient(`ws://127.0.0.1:${server.address().port}/browser/a/stream`, {
    WebSocket,
    extended: true,
    backoff: { initialMs: 20, maxMs: 50 },
    onMode: (mode, reason) => modes.push([mode, reason]),
    onStatus: (s) => statuses.push(s),
  })
  t.after(async () => {
    client.close()
    for (const socket of server.clients) socket.terminate()
    await new Promise((resolve) => server.close(resolve))
  })
  client.connect()
  await waitFor(() => statuses.includes('connected'), { what: 'connected on the compat wire' })
  assert.deepEqual(modes, [['compat', 'the server does not speak browser-stream.v1']])
  assert.equal(client.mode, 'compat')
  assert.equal(client.extended, false)
})

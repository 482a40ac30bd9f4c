'use strict'
// Faults on both sides of the stream: a DevTools endpoint that accepts and then hangs (at the
// TCP level, after the WebSocket handshake, and mid-stream on a real Chromium), and a viewer
// socket reset in the middle of a frame. Each must give the documented messages, never a
// crash or a stuck channel, and a later start must work again.

const test = require('node:test')
const assert = require('node:assert/strict')
const net = require('node:net')
const { WebSocketServer } = require('ws')
const { launchChromium, findChromium } = require('./support/chromium')
const { startServer, FakeToolset, Viewer, waitFor, sleep, openRawWebSocket, settledStatuses, logCapture, VIEWER_ERROR_TEXT } = require('./support')

const chromePath = findChromium()
const skipChromium = chromePath ? false : 'Chromium not found: install chromium or set CHROME_PATH'

/** A TCP server that accepts connections and never writes a byte. */
async function silentTcpServer() {
  const sockets = new Set()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `ws://127.0.0.1:${server.address().port}/devtools/browser/silent`,
    connections: () => sockets.size,
    close() {
      for (const socket of sockets) socket.destroy()
      return new Promise((resolve) => server.close(resolve))
    },
  }
}

/** A WebSocket server that completes the handshake and then answers nothing. */
async function mutedDevtools() {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  await new Promise((resolve) => wss.once('listening', resolve))
  let received = 0
  wss.on('connection', (ws) => ws.on('message', () => (received += 1)))
  return {
    url: `ws://127.0.0.1:${wss.address().port}/devtools/browser/muted`,
    received: () => received,
    close: () => new Promise((resolve) => {
      for (const client of wss.clients) client.terminate()
      wss.close(resolve)
    }),
  }
}

/**
 * A TCP proxy in front of a DevTools port whose WebSocket connections can freeze: a frozen
 * connection stays open and forwards nothing, as a hung browser would. Plain HTTP connections
 * (`/json/version`, kept alive by fetch) are never frozen; new connections after `thaw()` are
 * forwarded normally.
 */
async function freezableProxy(targetPort) {
  let frozen = false
  const pairs = new Set()
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1')
    const pair = { client, upstream, frozen: false, websocket: false }
    pairs.add(pair)
    client.once('data', (chunk) => {
      pair.websocket = /upgrade: websocket/i.test(chunk.toString('latin1'))
      if (pair.websocket && frozen) pair.frozen = true
    })
    const forward = (from, to) =>
      from.on('data', (chunk) => {
        if (!pair.frozen) to.write(chunk)
      })
    forward(client, upstream)
    forward(upstream, client)
    for (const socket of [client, upstream]) {
      socket.on('error', () => {})
      socket.on('close', () => {
        client.destroy()
        upstream.destroy()
        pairs.delete(pair)
      })
    }
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: server.address().port,
    freeze() {
      frozen = true
      for (const pair of pairs) if (pair.websocket) pair.frozen = true
    },
    thaw() {
      frozen = false
    },
    close() {
      for (const pair of pairs) {
        pair.client.destroy()
        pair.upstream.destroy()
      }
      return new Promise((resolve) => server.close(resolve))
    },
  }
}

function errorsOf(viewer) {
  return viewer.json.filter((m) => m.error)
}

for (const [name, makeEndpoint, pattern] of [
  ['accepts TCP and never answers the handshake', silentTcpServer, /no answer from .* within/],
  ['completes the WebSocket handshake and never answers a call', mutedDevtools, /no answer within/],
]) {
  test(`a DevTools endpoint that ${name}: screencast_failed, browser_closed, and a relaunch starts again`, async (t) => {
    const endpoint = await makeEndpoint()
    t.after(() => endpoint.close())
    let starts = 0
    const logs = logCapture()
    const srv = await startServer({
      cdpTimeoutMs: 300,
      logger: logs.logger,
      getCdpEndpoint: (agentId) => {
        if (agentId === 'hung-agent') starts += 1
        return endpoint.url
      },
    })
    t.after(() => srv.close())
    const viewer = new Viewer(srv.url('hung-agent'))
    const other = new Viewer(srv.url('healthy-agent'))
    await Promise.all([viewer.opened, other.opened])
    await waitFor(() => errorsOf(viewer).length === 1 && viewer.statuses().includes('browser_closed'), { what: 'failure reported' })
    const [error] = errorsOf(viewer)
    assert.equal(error.error, 'screencast_failed')
    assert.equal(error.message, VIEWER_ERROR_TEXT.screencast_failed)
    await waitFor(() => logs.has(pattern), { what: 'the cause in the log' })
    assert.deepEqual(settledStatuses(viewer.statuses()), ['connected', 'browser_closed'])
    // Not stuck: the channel is idle with its viewer, and a relaunch starts a new session.
    const channel = srv.registry.stats().channels.find((c) => c.key === 'hung-agent')
    assert.equal(channel.sourceState, 'idle')
    assert.equal(channel.viewers.length, 1)
    viewer.send({ type: 'relaunch' })
    await waitFor(() => errorsOf(viewer).length === 2, { what: 'second attempt failed the same way' })
    assert.equal(starts, 2)
    assert.equal(viewer.closeCode, null, 'the viewer stays connected')
    await viewer.close()
    await other.close()
    await waitFor(() => srv.registry.stats().channels.length === 0, { what: 'channels gone' })
    assert.equal(srv.registry.stats().cdpConnections, 0)
  })
}

test('a browser that hangs mid-stream is reported browser_crashed; a relaunch streams again', { skip: skipChromium, timeout: 60_000 }, async (t) => {
  const browser = await launchChromium({ url: 'data:text/html,<title>x</title><body style="background:%23396">hello' })
  t.after(() => browser.close())
  const proxy = await freezableProxy(browser.port)
  t.after(() => proxy.close())
  const logs = logCapture()
  const srv = await startServer({ cdpTimeoutMs: 500, logger: logs.logger, getCdpEndpoint: () => `http://127.0.0.1:${proxy.port}` })
  t.after(() => srv.close())
  const viewer = new Viewer(srv.url('freezing-agent'))
  await viewer.opened
  await viewer.untilStreaming()
  await waitFor(() => viewer.frames.length >= 1, { what: 'first frame', timeout: 15_000 })
  proxy.freeze()
  await waitFor(() => errorsOf(viewer).length === 1, { what: 'hang detected', timeout: 10_000 })
  assert.equal(errorsOf(viewer)[0].error, 'browser_crashed')
  assert.equal(errorsOf(viewer)[0].message, VIEWER_ERROR_TEXT.browser_crashed)
  await waitFor(() => logs.has(/stopped answering/), { what: 'the cause in the log' })
  await waitFor(() => viewer.statuses().at(-1) === 'browser_closed', { what: 'browser_closed after the error' })
  proxy.thaw()
  const framesBefore = viewer.frames.length
  viewer.send({ type: 'relaunch' })
  await waitFor(() => viewer.statuses().at(-1) === 'streaming', { what: 'streaming again', timeout: 15_000 })
  await waitFor(() => viewer.frames.length > framesBefore, { what: 'a frame after the relaunch', timeout: 15_000 })
  assert.equal(srv.registry.stats().cdpConnections, 1)
})

/** A raw WebSocket viewer that reads (and counts) whatever comes. */
async function rawViewer(port, agentId) {
  const { socket, head } = await openRawWebSocket(port, agentId)
  let received = head.length
  socket.on('data', (chunk) => (received += chunk.length))
  return { socket, received: () => received }
}

test('a viewer reset in the middle of a large frame leaves the others streaming', async (t) => {
  const toolset = new FakeToolset()
  const srv = await startServer({ getToolset: () => toolset })
  t.after(() => srv.close())
  const healthy = new Viewer(srv.url('reset-agent'), { keepFrames: false })
  await healthy.opened
  await healthy.untilStreaming()
  const raws = []
  for (let i = 0; i < 5; i++) raws.push(await rawViewer(srv.port, 'reset-agent'))
  await waitFor(() => srv.registry.getViewerCount('reset-agent') === 6, { what: 'six viewers' })
  // ~4 MB frames (base64), more than the socket buffers hold: once the raw viewers stop
  // reading, their writes are pending mid-frame when the resets come.
  for (let seq = 1; seq <= 6; seq++) {
    toolset.emitFrame(seq, { size: 3_000_000 })
    if (seq === 2) {
      await waitFor(() => raws.every((r) => r.received() > 100_000), { what: 'raw viewers reading' })
      for (const raw of raws) raw.socket.pause()
      await sleep(100)
      for (const raw of raws) raw.socket.resetAndDestroy()
    }
    await sleep(30)
  }
  // Latest frame wins: the healthy viewer may skip, but ends on the last frame.
  await waitFor(() => healthy.frameSeqs.at(-1) === 6, { what: 'healthy viewer got the last frame', timeout: 15_000 })
  await waitFor(() => srv.registry.getViewerCount('reset-agent') === 1, { what: 'reset viewers released' })
  assert.equal(healthy.closeCode, null)
  const stats = srv.registry.stats()
  assert.equal(stats.viewersClosed, 5)
})

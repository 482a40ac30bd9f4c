'use strict'
// The compat wire (Mastra Studio's client) end to end: real Hono server, real ws clients,
// frames from a Mastra-shaped toolset, sockets served by Rust.

const test = require('node:test')
const assert = require('node:assert/strict')
const { startServer, FakeToolset, Viewer, waitFor, frameSeq, sleep, settledStatuses, logCapture, VIEWER_ERROR_TEXT } = require('./support')

test('every healthy viewer gets every frame, in order, byte-identical, from a native socket', async (t) => {
  const toolset = new FakeToolset()
  const srv = await startServer({ getToolset: () => toolset })
  t.after(() => srv.close())
  const first = new Viewer(srv.url('agent-1'))
  await first.opened
  await first.untilStreaming('streaming')
  const viewers = [first, new Viewer(srv.url('agent-1')), new Viewer(srv.url('agent-1'))]
  await Promise.all(viewers.map((v) => v.opened))
  await Promise.all(viewers.map((v) => v.untilStreaming()))
  const sent = []
  for (let seq = 1; seq <= 60; seq++) {
    sent.push(toolset.emitFrame(seq, { size: 20_000 }))
    await waitFor(() => viewers.every((v) => v.frames.length === seq), { what: `frame ${seq} everywhere` })
  }
  for (const viewer of viewers) {
    assert.deepEqual(viewer.frames, sent, 'frames identical to what the toolset emitted, in order')
  }
  assert.deepEqual(settledStatuses(first.statuses()), ['connected', 'streaming'])
  // Joiners of a live stream get its current status at once, not its history.
  assert.deepEqual(viewers[1].statuses(), ['connected', 'streaming'])
  assert.deepEqual(viewers[2].statuses(), ['connected', 'streaming'])
  const stats = srv.registry.stats()
  assert.equal(stats.channels.length, 1)
  const channel = stats.channels[0]
  assert.equal(channel.framesIn, 60)
  assert.equal(channel.framesOut, 180)
  assert.equal(channel.viewers.length, 3)
  for (const v of channel.viewers) {
    assert.equal(v.transport, 'native')
    assert.equal(v.framesSent, 60)
    assert.equal(v.framesSkipped, 0)
  }
  assert.equal(toolset.starts, 1, 'one screencast for three viewers')
})

test('status, url and viewport messages follow the TypeScript wire and late joiners get them at once', async (t) => {
  const toolset = new FakeToolset({ url: 'https://example.test/a' })
  const srv = await startServer({ getToolset: async () => toolset })
  t.after(() => srv.close())
  const first = new Viewer(srv.url('agent-2'))
  await first.opened
  await first.untilStreaming('streaming')
  toolset.emitFrame(1, { width: 1280, height: 720 })
  await waitFor(() => first.frames.length === 1, { what: 'frame 1' })
  toolset.url = 'https://example.test/b'
  toolset.emitFrame(2, { width: 800, height: 600 })
  await waitFor(() => first.json.some((m) => m.viewport?.width === 800), { what: 'viewport change' })
  await waitFor(() => first.json.some((m) => m.url === 'https://example.test/b'), { what: 'url change' })
  // The viewport message follows the frame that changed it.
  const frame2At = first.messages.findIndex((m) => !m.startsWith('{') && frameSeq(m) === 2)
  const viewportAt = first.messages.findIndex((m) => m.includes('"width":800'))
  assert.ok(frame2At >= 0 && viewportAt > frame2At, 'viewport after its frame')
  // url at stream start; each frame's viewport right after it; the new url after frame 2.
  assert.deepEqual(
    first.json.filter((m) => !m.status),
    [
      { url: 'https://example.test/a' },
      { viewport: { width: 1280, height: 720 } },
      { viewport: { width: 800, height: 600 } },
      { url: 'https://example.test/b' },
    ],
  )

  const late = new Viewer(srv.url('agent-2'))
  await late.opened
  await waitFor(() => late.frames.length === 1, { what: 'newest frame for the late joiner' })
  assert.equal(frameSeq(late.frames[0]), 2, 'the newest frame, at once, without a new one being emitted')
  assert.deepEqual(late.json, [
    { status: 'connected' },
    { status: 'streaming' },
    { url: 'https://example.test/b' },
    { viewport: { width: 800, height: 600 } },
  ])
  assert.equal(toolset.starts, 1)
})

test('mouse and keyboard messages reach the toolset in order; malformed ones are ignored and counted', async (t) => {
  const toolset = new FakeToolset()
  let slowInjections = 0
  toolset.injectMouseEvent = async function (event) {
    // A slow toolset must still see events one at a time, in order.
    slowInjections += 1
    assert.equal(slowInjections, 1, 'one injection at a time')
    await sleep(2)
    this.mouse.push(event)
    slowInjections -= 1
  }
  const srv = await startServer({ getToolset: () => toolset })
  t.after(() => srv.close())
  const viewer = new Viewer(srv.url('agent-3'))
  await viewer.opened
  await viewer.untilStreaming('streaming')
  for (let x = 0; x < 20; x++) viewer.send({ type: 'mouse', eventType: 'mouseMoved', x, y: 5, modifiers: 8 })
  viewer.send({ type: 'mouse', eventType: 'mousePressed', x: 10, y: 20, button: 'left', clickCount: 1 })
  viewer.send({ type: 'keyboard', eventType: 'keyDown', key: 'a', code: 'KeyA' })
  viewer.send({ type: 'keyboard', eventType: 'char', text: 'a' })
  viewer.send('not json at all')
  viewer.send({ type: 'mouse', eventType: 'mouseMoved', x: -1, y: 0 })
  viewer.send({ type: 'mouse', eventType: 'mouseMoved', x: 'NaN', y: 0 })
  viewer.send({ type: 'teleport' })
  viewer.ws.send(Buffer.from([1, 2, 3]))
  await waitFor(() => toolset.mouse.some((e) => e.type === 'mousePressed') && toolset.keys.length === 2, {
    what: 'inputs relayed',
  })
  // Moves queued behind a move coalesce (the page gets fewer, in order, ending at the last
  // position); the press after them is never dropped.
  const moves = toolset.mouse.filter((e) => e.type === 'mouseMoved').map((e) => e.x)
  assert.ok(moves.length >= 1 && moves.length <= 20, `moves relayed: ${moves}`)
  assert.deepEqual(moves, [...moves].sort((a, b) => a - b))
  assert.equal(moves.at(-1), 19)
  // The first move relayed is whichever was queued when the relay started (all 20 may have
  // coalesced by then); its shape is the toolset's.
  assert.deepEqual(toolset.mouse[0], { type: 'mouseMoved', x: moves[0], y: 5, modifiers: 8 })
  assert.deepEqual(toolset.mouse.at(-1), { type: 'mousePressed', x: 10, y: 20, button: 'left', clickCount: 1 })
  const { movesCoalesced } = srv.registry.stats().channels[0]
  assert.equal(movesCoalesced, 20 - moves.length)
  // Key events carry the Windows virtual key code, as Mastra's input handler adds it.
  assert.deepEqual(toolset.keys, [
    { type: 'keyDown', key: 'a', code: 'KeyA', windowsVirtualKeyCode: 65 },
    { type: 'char', text: 'a' },
  ])
  await waitFor(() => srv.registry.stats().channels[0].malformedMessages === 5, { what: 'malformed counted' })
  // Compat mode answers nothing to malformed input and keeps the connection.
  assert.equal(viewer.json.filter((m) => m.error).length, 0)
  toolset.emitFrame(1)
  await waitFor(() => viewer.frames.length === 1, { what: 'frame after bad input' })
  assert.equal(viewer.ws.readyState, 1)
})

test('?threadId= scopes the viewer to agentId:threadId and passes the thread to getToolset', async (t) => {
  const calls = []
  const toolsets = new Map()
  const srv = await startServer({
    getToolset: (agentId, threadId) => {
      calls.push([agentId, threadId])
      const key = `${agentId}:${threadId}`
      if (!toolsets.has(key)) toolsets.set(key, new FakeToolset())
      return toolsets.get(key)
    },
  })
  t.after(() => srv.close())
  const a = new Viewer(srv.url('agent-4', '?threadId=t1'))
  const b = new Viewer(srv.url('agent-4', '?threadId=t2'))
  await Promise.all([a.opened, b.opened])
  await Promise.all([a, b].map((v) => v.untilStreaming()))
  toolsets.get('agent-4:t1').emitFrame(11)
  toolsets.get('agent-4:t2').emitFrame(22)
  await waitFor(() => a.frames.length === 1 && b.frames.length === 1, { what: 'frames' })
  assert.equal(frameSeq(a.frames[0]), 11)
  assert.equal(frameSeq(b.frames[0]), 22)
  assert.deepEqual(calls.sort(), [
    ['agent-4', 't1'],
    ['agent-4', 't2'],
  ])
  const keys = srv.registry.stats().channels.map((c) => c.key).sort()
  assert.deepEqual(keys, ['agent-4:t1', 'agent-4:t2'])
  assert.equal(srv.registry.getViewerCount('agent-4:t1'), 1)
})

test('no toolset keeps the viewer connected; a browser launched later starts the stream', async (t) => {
  let toolset
  const srv = await startServer({ getToolset: () => toolset })
  t.after(() => srv.close())
  const lonely = new Viewer(srv.url('agent-5'))
  await lonely.opened
  await sleep(100)
  assert.deepEqual(lonely.json, [{ status: 'connected' }])
  await lonely.close()
  await waitFor(() => srv.registry.stats().channels.length === 0, { what: 'channel gone' })

  toolset = new FakeToolset({ running: false })
  const waiting = new Viewer(srv.url('agent-5'))
  await waiting.opened
  await waitFor(() => toolset.readyCallbacks.size === 1, { what: 'onBrowserReady registered' })
  await waitFor(() => waiting.statuses().length > 0, { what: 'the connected status' })
  await sleep(50)
  assert.deepEqual(waiting.statuses(), ['connected'])
  toolset.launch()
  await waiting.untilStreaming('streaming after launch')
  assert.deepEqual(settledStatuses(waiting.statuses()), ['connected', 'streaming'])
  toolset.emitFrame(1)
  await waitFor(() => waiting.frames.length === 1, { what: 'frame' })
  // The stream stopping on its own is reported, and a relaunch of the browser restarts it.
  await toolset.current.stop()
  await waitFor(() => waiting.statuses().includes('browser_closed'), { what: 'browser_closed' })
  assert.equal(srv.registry.hasActiveScreencast('agent-5'), false)
  toolset.launch()
  await waitFor(() => waiting.statuses().filter((s) => s === 'streaming').length === 2, { what: 'restreaming' })
  assert.equal(srv.registry.hasActiveScreencast('agent-5'), true)
  await waiting.close()
  await waitFor(() => toolset.readyCallbacks.size === 0, { what: 'onBrowserReady unsubscribed after the last viewer' })
})

test('probe and close routes under apiPrefix', async (t) => {
  const toolset = new FakeToolset()
  const srv = await startServer({ getToolset: (id) => (id === 'agent-6' ? toolset : undefined), apiPrefix: '/v2/api' })
  t.after(() => srv.close())
  const base = `http://127.0.0.1:${srv.port}`
  // As Mastra: the thread's session answers; without a thread or a toolset there is none, and
  // the route existing means the screencast is available.
  let res = await fetch(`${base}/v2/api/agents/agent-6/browser/session?threadId=t1`)
  assert.deepEqual(await res.json(), { hasSession: true, screencastAvailable: true })
  res = await fetch(`${base}/v2/api/agents/agent-6/browser/session`)
  assert.deepEqual(await res.json(), { hasSession: false, screencastAvailable: true })
  res = await fetch(`${base}/v2/api/agents/nobody/browser/session`)
  assert.deepEqual(await res.json(), { hasSession: false, screencastAvailable: true })

  const viewer = new Viewer(srv.url('agent-6'))
  await viewer.opened
  await viewer.untilStreaming('streaming')
  toolset.emitFrame(1)
  await waitFor(() => viewer.frames.length === 1, { what: 'frame' })
  res = await fetch(`${base}/v2/api/agents/agent-6/browser/close`, { method: 'POST' })
  assert.equal(res.status, 200)
  assert.deepEqual(await res.json(), { success: true })
  await waitFor(() => viewer.statuses().includes('browser_closed'), { what: 'browser_closed' })
  assert.equal(viewer.statuses().filter((s) => s === 'browser_closed').length, 1, 'told once')
  assert.equal(toolset.closed, 1)
  assert.equal(srv.registry.hasActiveScreencast('agent-6'), false)
  assert.equal(viewer.ws.readyState, 1, 'the viewer stays connected for the next session')
  // A viewer joining now gets no stale url, viewport or frame of the closed session.
  const late = new Viewer(srv.url('agent-6'))
  await late.opened
  await sleep(50)
  assert.deepEqual(late.json, [{ status: 'connected' }, { status: 'browser_closed' }])
  assert.equal(late.frames.length, 0)
  res = await fetch(`${base}/v2/api/agents/nobody/browser/close`, { method: 'POST' })
  assert.equal(res.status, 404)
})

test('a toolset stream that emits non-image data: viewers get one screencast_failed, nothing else breaks', async (t) => {
  const toolset = new FakeToolset()
  const logs = logCapture()
  const srv = await startServer({ getToolset: () => toolset, logger: logs.logger })
  t.after(() => srv.close())
  const viewer = new Viewer(srv.url('agent-7'))
  await viewer.opened
  await viewer.untilStreaming('streaming')
  for (let i = 0; i < 3; i++) {
    toolset.current.emit('frame', { data: '{"status":"spoofed"}', viewport: { width: 1, height: 1 } })
  }
  toolset.current.emit('frame', { data: 42 })
  toolset.emitFrame(1)
  await waitFor(() => viewer.frames.length === 1, { what: 'good frame' })
  const errors = viewer.json.filter((m) => m.error)
  assert.equal(errors.length, 1)
  assert.equal(errors[0].error, 'screencast_failed')
  assert.equal(errors[0].message, VIEWER_ERROR_TEXT.screencast_failed)
  await waitFor(() => logs.has(/invalid frame: .*not base64/), { what: 'the cause in the log' })
  assert.ok(!viewer.json.some((m) => m.status === 'spoofed'), 'garbage never reaches a viewer as a frame')
  assert.equal(srv.registry.stats().channels[0].framesRejected, 3)
})

test('getToolset that throws, rejects or hangs gives screencast_failed and a later viewer starts again', async (t) => {
  let mode = 'throw'
  const good = new FakeToolset()
  const logs = logCapture()
  const srv = await startServer({
    toolsetTimeoutMs: 200,
    logger: logs.logger,
    getToolset: () => {
      if (mode === 'throw') throw new Error('boom')
      if (mode === 'reject') return Promise.reject(new Error('nope'))
      if (mode === 'hang') return new Promise(() => {})
      if (mode === 'garbage') return { hello: 'world' }
      return good
    },
  })
  t.after(() => srv.close())
  for (const [m, pattern] of [
    ['throw', /boom/],
    ['reject', /nope/],
    ['hang', /did not answer within 200 ms/],
    ['garbage', /not a browser toolset/],
  ]) {
    mode = m
    const viewer = new Viewer(srv.url('agent-8'))
    await viewer.opened
    await waitFor(() => viewer.json.some((j) => j.error), { what: `error for ${m}` })
    const error = viewer.json.find((j) => j.error)
    assert.equal(error.error, 'screencast_failed')
    // The deployer's error text is for the log only.
    assert.equal(error.message, VIEWER_ERROR_TEXT.screencast_failed)
    await waitFor(() => logs.has(pattern), { what: `the cause of ${m} in the log` })
    await viewer.close()
    await waitFor(() => srv.registry.stats().channels.length === 0, { what: 'channel idle again' })
  }
  mode = 'good'
  const viewer = new Viewer(srv.url('agent-8'))
  await viewer.opened
  await viewer.untilStreaming('streaming at last')
})

test('closeBrowserSession right after a pushed frame: browser_closed arrives at once, the frame is not revived', async (t) => {
  const toolset = new FakeToolset()
  const srv = await startServer({ getToolset: () => toolset })
  t.after(() => srv.close())
  const viewer = new Viewer(srv.url('agent-clear'))
  await viewer.untilStreaming('streaming')
  toolset.emitFrame(1, { width: 640, height: 480 })
  await waitFor(() => viewer.frames.length === 1, { what: 'frame 1' })
  for (let seq = 2; seq <= 20; seq++) toolset.emitFrame(seq, { width: 640 + seq, height: 480 })
  await srv.registry.closeBrowserSession('agent-clear')
  await waitFor(() => viewer.statuses().includes('browser_closed'), { what: 'browser_closed', timeout: 800 })
  const late = new Viewer(srv.url('agent-clear'))
  await late.opened
  await sleep(100)
  assert.equal(late.frames.length, 0, 'a cleared frame is not sent to a new viewer')
})

'use strict'
// Thread-scoped browsers as Mastra's ViewerRegistry drives a MastraBrowser: every toolset call
// carries the viewer's thread, the ready and closed callbacks are registered whether or not
// the browser runs, so a browser closed from outside and launched again streams again.

const test = require('node:test')
const assert = require('node:assert/strict')
const { startServer, FakeToolset, Viewer, waitFor, settledStatuses, jpegFrame, frameSeq } = require('./support')

const THREAD = 'thread/1 2'

async function setup(t, toolset, config = {}) {
  const lookups = []
  const srv = await startServer({
    lingerMs: 50,
    getToolset: (...args) => {
      lookups.push(args)
      return toolset
    },
    ...config,
  })
  t.after(() => srv.close())
  return { srv, lookups }
}

test('a thread-scoped viewer: every toolset call gets the thread, getToolset gets (agentId, threadId)', async (t) => {
  const toolset = new FakeToolset({ url: 'https://example.test/thread' })
  const { srv, lookups } = await setup(t, toolset)
  const viewer = new Viewer(srv.url('agent-1', `?threadId=${encodeURIComponent(THREAD)}`))
  await viewer.untilStreaming('streaming')
  toolset.emitFrame(1)
  await waitFor(() => viewer.frames.length === 1 && viewer.json.some((m) => m.url), { what: 'frame and url' })
  viewer.send({ type: 'mouse', eventType: 'mousePressed', x: 3, y: 4, button: 'left', clickCount: 1 })
  viewer.send({ type: 'keyboard', eventType: 'keyDown', key: 'Enter', code: 'Enter' })
  await waitFor(() => toolset.mouse.length === 1 && toolset.keys.length === 1, { what: 'inputs relayed' })
  assert.deepEqual(lookups, [['agent-1', THREAD]])
  for (const method of ['isBrowserRunning', 'onBrowserReady', 'onBrowserClosed', 'startScreencastIfBrowserActive', 'getCurrentUrl', 'injectMouseEvent', 'injectKeyboardEvent']) {
    assert.ok(toolset.threads[method]?.length > 0, `${method} was called`)
    assert.ok(
      toolset.threads[method].every((thread) => thread === THREAD),
      `${method} got ${JSON.stringify(toolset.threads[method])}`,
    )
  }
  assert.equal(toolset.keys[0].windowsVirtualKeyCode, 13)
  assert.equal(srv.registry.stats().channels[0].key, `agent-1:${THREAD}`)
})

test('without a thread, getToolset gets (agentId) alone and toolset calls get no thread', async (t) => {
  const toolset = new FakeToolset()
  const { srv, lookups } = await setup(t, toolset)
  const viewer = new Viewer(srv.url('agent-2'))
  await viewer.untilStreaming('streaming')
  assert.deepEqual(lookups, [['agent-2']])
  assert.deepEqual(toolset.threads.isBrowserRunning, [undefined])
  assert.deepEqual(toolset.threads.startScreencastIfBrowserActive, [undefined])
  await viewer.close()
})

test('a browser closed from outside and launched again streams again (ready and closed callbacks)', async (t) => {
  const toolset = new FakeToolset()
  const { srv } = await setup(t, toolset)
  const viewer = new Viewer(srv.url('agent-3', '?threadId=t1'))
  await viewer.untilStreaming('streaming')
  toolset.emitFrame(1)
  await waitFor(() => viewer.frames.length === 1, { what: 'first frame' })
  assert.equal(toolset.readyCallbacks.size, 1, 'onBrowserReady registered although the browser ran')
  assert.equal(toolset.closedCallbacks.size, 1, 'onBrowserClosed registered')

  toolset.externalClose()
  await waitFor(() => viewer.statuses().includes('browser_closed'), { what: 'browser_closed from onBrowserClosed' })
  assert.equal(viewer.ws.readyState, 1, 'the viewer stays connected')

  toolset.launch()
  await waitFor(() => viewer.statuses().filter((s) => s === 'streaming').length === 2, { what: 'streaming again' })
  assert.equal(toolset.starts, 2, 'a new screencast for the new browser')
  toolset.emitFrame(2)
  await waitFor(() => viewer.frames.length === 2, { what: 'a frame of the new browser' })
  assert.deepEqual(settledStatuses(viewer.statuses()), ['connected', 'streaming', 'browser_closed', 'streaming'])

  // The last viewer leaving unregisters both callbacks.
  await viewer.close()
  await waitFor(() => toolset.readyCallbacks.size === 0 && toolset.closedCallbacks.size === 0, { what: 'callbacks unregistered' })
})

test('a browser ready while the old stream still runs replaces that stream', async (t) => {
  const toolset = new FakeToolset()
  const { srv } = await setup(t, toolset)
  const viewer = new Viewer(srv.url('agent-4'))
  await viewer.untilStreaming('streaming')
  const first = toolset.current
  toolset.launch()
  await waitFor(() => toolset.starts === 2, { what: 'second screencast' })
  await waitFor(() => first.stopped, { what: 'the old stream stopped' })
  toolset.emitFrame(7)
  await waitFor(() => viewer.frames.length === 1, { what: 'frame of the new stream' })
  // A late frame of the old stream is ignored.
  first.emit('frame', { data: jpegFrame(8).toString('base64'), viewport: { width: 1280, height: 720 } })
  toolset.emitFrame(9)
  await waitFor(() => viewer.frames.length === 2, { what: 'next frame of the new stream' })
  assert.deepEqual(viewer.frames.map((f) => frameSeq(Buffer.from(f, 'base64'))), [7, 9])
})

test('a browser that is not running yet: viewers wait, its launch starts the stream', async (t) => {
  const toolset = new FakeToolset({ running: false })
  const { srv } = await setup(t, toolset)
  const viewer = new Viewer(srv.url('agent-5', '?threadId=t9'))
  await viewer.opened
  await waitFor(() => toolset.readyCallbacks.size === 1, { what: 'waiting for the browser' })
  assert.equal(toolset.starts, 0)
  toolset.launch()
  await viewer.untilStreaming('streaming')
  assert.deepEqual(toolset.threads.onBrowserReady, ['t9'])
})

test('no toolset yet: the next viewer of the same agent looks it up again and both stream', async (t) => {
  let toolset
  const lookups = []
  const srv = await startServer({
    getToolset: (agentId) => {
      lookups.push(agentId)
      return toolset
    },
  })
  t.after(() => srv.close())
  const first = new Viewer(srv.url('agent-6'))
  await first.opened
  await waitFor(() => lookups.length === 1 && srv.registry.stats().channels[0]?.sourceState === 'idle', {
    what: 'the lookup found nothing and the channel waits idle',
  })
  toolset = new FakeToolset()
  const second = new Viewer(srv.url('agent-6'))
  await Promise.all([first.untilStreaming('first streams'), second.untilStreaming('second streams')])
  assert.deepEqual(lookups, ['agent-6', 'agent-6'])
  assert.equal(toolset.starts, 1)
  assert.ok(!first.json.some((m) => m.error), 'waiting for a toolset is not an error')
})

test('a screencast that fails to start keeps the browser callbacks: the next ready event streams', async (t) => {
  const toolset = new FakeToolset()
  const realStart = toolset.startScreencastIfBrowserActive.bind(toolset)
  let failures = 1
  toolset.startScreencastIfBrowserActive = async (options) => {
    if (failures-- > 0) throw new Error('Target closed')
    return realStart(options)
  }
  const { srv } = await setup(t, toolset)
  const viewer = new Viewer(srv.url('agent-7', '?threadId=t1'))
  await waitFor(() => viewer.json.some((m) => m.error === 'screencast_failed') && viewer.statuses().includes('browser_closed'), {
    what: 'the failed start reported',
  })
  assert.equal(toolset.readyCallbacks.size, 1, 'onBrowserReady still registered')
  // A late joiner learns the state at once.
  const late = new Viewer(srv.url('agent-7', '?threadId=t1'))
  await waitFor(() => late.statuses().includes('browser_closed'), { what: 'the late joiner gets browser_closed' })
  toolset.launch()
  await Promise.all([viewer.untilStreaming('streaming after the ready event'), late.untilStreaming('the late joiner streams')])
  assert.equal(toolset.starts, 1)
})

test('the close route during a screencast start: the stream that starts afterwards is stopped, viewers stay closed', async (t) => {
  // Thread scope: the close ends the thread's session and leaves the browser running, so the
  // start under way does produce a stream.
  const toolset = new FakeToolset({ scope: 'thread' })
  const realStart = toolset.startScreencastIfBrowserActive.bind(toolset)
  let releaseStart
  toolset.startScreencastIfBrowserActive = (options) =>
    new Promise((resolve) => {
      releaseStart = () => resolve(realStart(options))
    })
  const { srv } = await setup(t, toolset)
  const viewer = new Viewer(srv.url('agent-8', '?threadId=t8'))
  await waitFor(() => viewer.statuses().includes('browser_starting') && releaseStart, { what: 'the start under way' })
  const res = await fetch(`http://127.0.0.1:${srv.port}/api/agents/agent-8/browser/close`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ threadId: 't8' }),
  })
  assert.equal(res.status, 200)
  await waitFor(() => viewer.statuses().includes('browser_closed'), { what: 'browser_closed' })
  releaseStart()
  await waitFor(() => toolset.current?.stopped === true, { what: 'the late stream stopped' })
  assert.ok(!viewer.statuses().includes('streaming'), 'the closed session never streamed')
  assert.deepEqual(toolset.threadsClosed, ['t8'])
  assert.equal(srv.registry.hasActiveScreencast('agent-8:t8'), false)
})

'use strict'
// Reference counting of the screencast: one start per 0→1, one stop per 1→0 after the linger.

const test = require('node:test')
const assert = require('node:assert/strict')
const { startServer, FakeToolset, Viewer, waitFor, sleep } = require('./support')

test('50 concurrent first connects start exactly one screencast; the last leaving stops it once after the linger', async (t) => {
  const toolset = new FakeToolset()
  let getToolsetCalls = 0
  const srv = await startServer({
    lingerMs: 300,
    getToolset: async () => {
      getToolsetCalls += 1
      await sleep(20) // a slow lookup widens the window for double starts
      return toolset
    },
  })
  t.after(() => srv.close())
  const viewers = Array.from({ length: 50 }, () => new Viewer(srv.url('busy')))
  await Promise.all(viewers.map((v) => v.opened))
  await Promise.all(viewers.map((v) => v.untilStreaming()))
  assert.equal(toolset.starts, 1)
  assert.equal(getToolsetCalls, 1)
  assert.equal(srv.registry.getViewerCount('busy'), 50)
  toolset.emitFrame(1)
  await waitFor(() => viewers.every((v) => v.frames.length === 1), { what: 'frame everywhere' })

  await Promise.all(viewers.map((v) => v.close()))
  await waitFor(() => srv.registry.getViewerCount('busy') === 0, { what: 'viewers gone' })
  assert.equal(toolset.stops, 0, 'the screencast lingers')
  assert.equal(srv.registry.stats().channels[0].sourceState, 'lingering')
  await waitFor(() => toolset.stops === 1, { what: 'stop after linger' })
  await sleep(100)
  assert.equal(toolset.stops, 1)
  const stats = srv.registry.stats()
  assert.equal(stats.channels.length, 0, 'no channel left')
  assert.equal(stats.starts, 1)
  assert.equal(stats.stops, 1)
  assert.equal(stats.viewersAdmitted, 50)
  assert.equal(stats.viewersClosed, 50)
})

test('a viewer back within the linger keeps the screencast (a page reload does not restart it)', async (t) => {
  const toolset = new FakeToolset()
  const srv = await startServer({ lingerMs: 500, getToolset: () => toolset })
  t.after(() => srv.close())
  const before = new Viewer(srv.url('reload'))
  await before.opened
  await before.untilStreaming('streaming')
  toolset.emitFrame(7)
  await waitFor(() => before.frames.length === 1, { what: 'frame' })
  await before.close()
  await sleep(100)
  const after = new Viewer(srv.url('reload'))
  await after.opened
  await waitFor(() => after.frames.length === 1, { what: 'newest frame after reload' })
  assert.deepEqual(after.statuses(), ['connected', 'streaming'])
  await sleep(700)
  assert.equal(toolset.starts, 1)
  assert.equal(toolset.stops, 0)
  await after.close()
  await waitFor(() => toolset.stops === 1, { what: 'stop' })
})

test('each agent gets its own screencast; an errored stream is still stopped', async (t) => {
  const toolsets = new Map()
  const srv = await startServer({
    lingerMs: 50,
    getToolset: (id) => {
      if (!toolsets.has(id)) toolsets.set(id, new FakeToolset())
      return toolsets.get(id)
    },
  })
  t.after(() => srv.close())
  const viewers = []
  for (let a = 0; a < 5; a++) for (let v = 0; v < 4; v++) viewers.push(new Viewer(srv.url(`agent-${a}`)))
  await Promise.all(viewers.map((v) => v.opened))
  await Promise.all(viewers.map((v) => v.untilStreaming()))
  assert.equal(toolsets.size, 5)
  for (const toolset of toolsets.values()) assert.equal(toolset.starts, 1)
  // As the newest Mastra: an errored stream is stopped at once and its viewers see the
  // browser as closed (the error's text is for the log).
  toolsets.get('agent-0').current.emit('error', new Error('encoder hiccup'))
  await waitFor(() => viewers[0].statuses().includes('browser_closed'), { what: 'browser_closed after the error' })
  assert.equal(toolsets.get('agent-0').stops, 1, 'the errored stream was stopped')
  assert.ok(!viewers[0].json.some((m) => m.error), 'no error text reaches the viewers')
  assert.ok(!viewers[4].statuses().includes('browser_closed'), 'other agents undisturbed')
  await Promise.all(viewers.map((v) => v.close()))
  await waitFor(() => [...toolsets.values()].every((ts) => ts.stops === 1), { what: 'all stopped once' })
  assert.equal(srv.registry.stats().channels.length, 0)
})

'use strict'
// Drop-in: code written for the TypeScript ViewerRegistry (a @hono/node-ws route calling
// addViewer/removeViewer with WSContext objects) works unchanged with this package's class.

const test = require('node:test')
const assert = require('node:assert/strict')
const { Hono } = require('hono')
const { serve } = require('@hono/node-server')
const { createNodeWebSocket } = require('@hono/node-ws')
const { ViewerRegistry } = require('..')
const { FakeToolset, Viewer, waitFor, frameSeq, jpegFrame, sleep } = require('./support')

/** The route of Mastra's shipped browser-stream module, with our registry swapped in. */
async function mastraStyleServer(getToolset) {
  const app = new Hono()
  const { injectWebSocket, upgradeWebSocket } = createNodeWebSocket({ app })
  const registry = new ViewerRegistry({ lingerMs: 50 })
  app.get(
    '/browser/:agentId/stream',
    upgradeWebSocket((c) => {
      const agentId = c.req.param('agentId')
      return {
        onOpen(_event, ws) {
          ws.send(JSON.stringify({ status: 'connected' }))
          void registry.addViewer(agentId, ws, getToolset)
        },
        onClose(_event, ws) {
          void registry.removeViewer(agentId, ws)
        },
      }
    }),
  )
  const server = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s))
  })
  injectWebSocket(server)
  return {
    registry,
    url: (id) => `ws://127.0.0.1:${server.address().port}/browser/${id}/stream`,
    async close() {
      await registry.close()
      server.closeAllConnections?.()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

test('a @hono/node-ws route using addViewer/removeViewer streams through the native registry', async (t) => {
  const toolset = new FakeToolset()
  const srv = await mastraStyleServer(() => toolset)
  t.after(() => srv.close())
  const viewers = [new Viewer(srv.url('m1')), new Viewer(srv.url('m1'))]
  await Promise.all(viewers.map((v) => v.opened))
  await Promise.all(viewers.map((v) => v.untilStreaming()))
  assert.equal(srv.registry.getViewerCount('m1'), 2)
  assert.equal(srv.registry.hasActiveScreencast('m1'), true)
  for (let seq = 1; seq <= 10; seq++) {
    toolset.emitFrame(seq)
    await waitFor(() => viewers.every((v) => v.frames.length === seq), { what: `frame ${seq}` })
  }
  for (const v of viewers) {
    assert.deepEqual(v.frames.map(frameSeq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert.equal(v.statuses()[0], 'connected')
    assert.equal(v.statuses().filter((s) => s === 'connected').length, 1, 'connected sent once, by the route')
  }
  // broadcastFrame / broadcastStatus directly, as the TS module's callers may.
  srv.registry.broadcastFrame('m1', jpegFrame(99).toString('base64'))
  // Latest frame wins: wait for 99 to land before pushing 100, or 100 may replace it.
  await waitFor(() => viewers.every((v) => v.frames.length === 11), { what: 'broadcastFrame 99' })
  srv.registry.broadcastFrame('m1', jpegFrame(100)) // bytes are accepted too
  srv.registry.broadcastStatus('m1', { status: 'streaming', note: 'custom' })
  await waitFor(() => viewers.every((v) => v.frames.length === 12), { what: 'broadcastFrame' })
  assert.deepEqual(viewers[0].frames.slice(-2).map(frameSeq), [99, 100])
  await waitFor(() => viewers[0].json.some((m) => m.note === 'custom'), { what: 'broadcastStatus' })
  assert.equal(srv.registry.stats().channels[0].viewers[0].transport, 'bridged')

  await srv.registry.closeBrowserSession('m1')
  await waitFor(() => viewers.every((v) => v.statuses().includes('browser_closed')), { what: 'browser_closed' })
  assert.equal(srv.registry.hasActiveScreencast('m1'), false)
  await Promise.all(viewers.map((v) => v.close()))
  await waitFor(() => srv.registry.getViewerCount('m1') === 0, { what: 'viewers removed' })
  await waitFor(() => toolset.stops === 1, { what: 'stopped once' })
})

test('WSContext-like objects without a network: send() receives frames and status', async (t) => {
  const registry = new ViewerRegistry({ lingerMs: 0 })
  t.after(() => registry.close())
  const toolset = new FakeToolset()
  const sent = [[], []]
  const contexts = sent.map((box) => ({ send: (data) => box.push(data), close() {}, readyState: 1 }))
  await registry.addViewer('ctx', contexts[0], () => toolset)
  await registry.addViewer('ctx', contexts[1], () => toolset)
  await registry.addViewer('ctx', contexts[1], () => toolset) // adding twice is a no-op
  assert.equal(registry.getViewerCount('ctx'), 2)
  await waitFor(() => sent.every((box) => box.includes('{"status":"streaming"}')), { what: 'streaming' })
  const data = toolset.emitFrame(5)
  await waitFor(() => sent.every((box) => box.includes(data)), { what: 'frame' })
  await registry.removeViewer('ctx', contexts[0])
  assert.equal(registry.getViewerCount('ctx'), 1)
  toolset.emitFrame(6)
  await sleep(50)
  assert.equal(sent[0].filter((m) => !m.startsWith('{')).length, 1, 'a removed viewer gets nothing more')
  await registry.removeViewer('ctx', contexts[1])
  await waitFor(() => toolset.stops === 1, { what: 'stop after the last one' })
  assert.equal(registry.getViewerCount('ctx'), 0)
  assert.throws(() => registry.broadcastStatus('ctx', 'streaming'), /must be an object/)
  await assert.rejects(registry.addViewer('', contexts[0]), /non-empty string/)
})

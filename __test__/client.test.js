'use strict'
// The browser client module (client/browser-stream-client.js), run in Node with the `ws`
// WebSocket: status and URL handling, capped exponential backoff with jitter, and reconnecting
// after the server drops the socket.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { pathToFileURL } = require('node:url')
const WebSocket = require('ws')
const { FakeToolset, startServer, waitFor } = require('./helpers')

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
  await waitFor(() => statuses.includes('streaming'), { what: 'streaming' })
  assert.deepEqual(statuses.slice(0, 4), ['connecting', 'connected', 'browser_starting', 'streaming'])
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

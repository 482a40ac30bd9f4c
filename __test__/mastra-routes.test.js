'use strict'
// Our version of Mastra's tests of the Hono adapter's browser routes (the session probe and
// the close route, @mastra/hono browser-stream): same requests, same expected statuses and
// bodies, same calls of the toolset, driven through `app.request()` with recording fakes.
// Added: closing a thread's session tells that thread's viewers, and close failures never
// put the toolset's error text in the response.

const { describe, it, beforeEach, afterEach } = require('node:test')
const assert = require('node:assert/strict')
const { Hono } = require('hono')
const { setupBrowserStream } = require('..')
const { FakeToolset, Viewer, startServer, waitFor } = require('./support')

/** A function that records the arguments of every call and answers with `impl`. */
function recorder(impl = () => undefined) {
  const fn = (...args) => {
    fn.calls.push(args)
    return impl(...args)
  }
  fn.calls = []
  return fn
}

/** The four toolset methods the routes use, as Mastra's mock has them. */
function mockToolset(overrides = {}) {
  return {
    hasThreadSession: recorder(() => false),
    getScope: recorder(() => 'shared'),
    close: recorder(async () => {}),
    closeThreadSession: recorder(async () => {}),
    ...overrides,
  }
}

const post = (body, headers = {}) => ({ method: 'POST', headers, body })
const jsonPost = (value) => post(JSON.stringify(value), { 'content-type': 'application/json' })

describe('browser routes of setupBrowserStream (as @mastra/hono)', () => {
  let app
  let toolsets
  let registry

  beforeEach(async () => {
    app = new Hono()
    toolsets = new Map()
    ;({ registry } = await setupBrowserStream(app, { getToolset: (agentId) => toolsets.get(agentId) }))
  })

  afterEach(async () => {
    await registry.close()
  })

  describe('GET /api/agents/:agentId/browser/session (probe)', () => {
    it('answers hasSession false, screencastAvailable true for an agent without a toolset', async () => {
      const res = await app.request('http://localhost/api/agents/agent-without-browser/browser/session')
      assert.equal(res.status, 200)
      assert.deepEqual(await res.json(), { hasSession: false, screencastAvailable: true })
    })

    it('answers hasSession false without a threadId and does not ask the toolset', async () => {
      const toolset = mockToolset()
      toolsets.set('agent-1', toolset)
      const res = await app.request('http://localhost/api/agents/agent-1/browser/session')
      assert.equal(res.status, 200)
      assert.deepEqual(await res.json(), { hasSession: false, screencastAvailable: true })
      assert.deepEqual(toolset.hasThreadSession.calls, [])
    })

    it("answers hasSession true when the toolset has the thread's session", async () => {
      const toolset = mockToolset({ hasThreadSession: recorder(() => true) })
      toolsets.set('agent-1', toolset)
      const res = await app.request('http://localhost/api/agents/agent-1/browser/session?threadId=thread-1')
      assert.equal(res.status, 200)
      assert.deepEqual(await res.json(), { hasSession: true, screencastAvailable: true })
      assert.deepEqual(toolset.hasThreadSession.calls, [['thread-1']])
    })

    it('answers hasSession false when the toolset has no session for the thread', async () => {
      const toolset = mockToolset({ hasThreadSession: recorder(() => false) })
      toolsets.set('agent-1', toolset)
      const res = await app.request('http://localhost/api/agents/agent-1/browser/session?threadId=thread-1')
      assert.equal(res.status, 200)
      assert.deepEqual(await res.json(), { hasSession: false, screencastAvailable: true })
      assert.deepEqual(toolset.hasThreadSession.calls, [['thread-1']])
    })

    it('always answers screencastAvailable true once the routes are registered', async () => {
      toolsets.set('agent-1', mockToolset())
      const res = await app.request('http://localhost/api/agents/agent-1/browser/session?threadId=thread-1')
      assert.equal((await res.json()).screencastAvailable, true)
    })
  })

  describe('POST /api/agents/:agentId/browser/close', () => {
    it('answers 404 for an agent without a toolset', async () => {
      const res = await app.request('http://localhost/api/agents/agent-without-browser/browser/close', { method: 'POST' })
      assert.equal(res.status, 404)
      assert.deepEqual(await res.json(), { error: 'No browser session for this agent' })
    })

    it('closes the whole toolset under shared scope, even with a threadId', async () => {
      const toolset = mockToolset({ getScope: recorder(() => 'shared') })
      toolsets.set('agent-1', toolset)
      const res = await app.request('http://localhost/api/agents/agent-1/browser/close', jsonPost({ threadId: 'thread-1' }))
      assert.equal(res.status, 200)
      assert.deepEqual(await res.json(), { success: true })
      assert.equal(toolset.close.calls.length, 1)
      assert.deepEqual(toolset.closeThreadSession.calls, [])
    })

    it('closes only the thread session under thread scope when a threadId is given', async () => {
      const toolset = mockToolset({ getScope: recorder(() => 'thread') })
      toolsets.set('agent-1', toolset)
      const res = await app.request('http://localhost/api/agents/agent-1/browser/close', jsonPost({ threadId: 'thread-1' }))
      assert.equal(res.status, 200)
      assert.deepEqual(await res.json(), { success: true })
      assert.deepEqual(toolset.closeThreadSession.calls, [['thread-1']])
      assert.deepEqual(toolset.close.calls, [])
    })

    it('closes the whole toolset under thread scope when no threadId is given', async () => {
      const toolset = mockToolset({ getScope: recorder(() => 'thread') })
      toolsets.set('agent-1', toolset)
      const res = await app.request('http://localhost/api/agents/agent-1/browser/close', { method: 'POST' })
      assert.equal(res.status, 200)
      assert.deepEqual(await res.json(), { success: true })
      assert.equal(toolset.close.calls.length, 1)
      assert.deepEqual(toolset.closeThreadSession.calls, [])
    })

    it('tolerates a body that is not JSON', async () => {
      const toolset = mockToolset({ getScope: recorder(() => 'shared') })
      toolsets.set('agent-1', toolset)
      const res = await app.request(
        'http://localhost/api/agents/agent-1/browser/close',
        post('not-json', { 'content-type': 'application/json' }),
      )
      assert.equal(res.status, 200)
      assert.deepEqual(await res.json(), { success: true })
      assert.equal(toolset.close.calls.length, 1)
    })
  })

  describe('custom apiPrefix', () => {
    it('mounts the probe and close routes under the prefix, and not under /api', async (t) => {
      const customApp = new Hono()
      const customToolsets = new Map()
      const setup = await setupBrowserStream(customApp, { getToolset: (agentId) => customToolsets.get(agentId), apiPrefix: '/custom/v1' })
      t.after(() => setup.registry.close())
      customToolsets.set('agent-1', mockToolset({ hasThreadSession: recorder(() => true) }))

      const probe = await customApp.request('http://localhost/custom/v1/agents/agent-1/browser/session?threadId=thread-1')
      assert.equal(probe.status, 200)
      assert.deepEqual(await probe.json(), { hasSession: true, screencastAvailable: true })
      const defaultProbe = await customApp.request('http://localhost/api/agents/agent-1/browser/session')
      assert.equal(defaultProbe.status, 404)
      const close = await customApp.request('http://localhost/custom/v1/agents/agent-1/browser/close', { method: 'POST' })
      assert.equal(close.status, 200)
    })

    it('drops a trailing slash of the prefix', async (t) => {
      const customApp = new Hono()
      const setup = await setupBrowserStream(customApp, { getToolset: () => undefined, apiPrefix: '/api/' })
      t.after(() => setup.registry.close())
      const probe = await customApp.request('http://localhost/api/agents/agent-1/browser/session')
      assert.equal(probe.status, 200)
    })
  })
})

describe('close failures (500 without the error text)', () => {
  // Each test has its own app with a recording logger: the detail belongs in the log only.
  async function appWith(getToolset) {
    const app = new Hono()
    const logged = []
    const record = (...args) => logged.push(args.join(' '))
    const { registry } = await setupBrowserStream(app, { getToolset, logger: { warn: record, error: record } })
    return { app, registry, logged }
  }

  async function assertFailed(res, logged, secret) {
    assert.equal(res.status, 500)
    const text = await res.text()
    assert.deepEqual(JSON.parse(text), { error: 'Failed to close browser' })
    assert.doesNotMatch(text, new RegExp(secret))
    assert.ok(
      logged.some((line) => line.includes(secret)),
      'the error is logged',
    )
  }

  it('toolset.close throwing (shared scope) answers 500', async (t) => {
    const toolset = mockToolset({ close: recorder(async () => Promise.reject(new Error('boom-shared-7731'))) })
    const { app, registry, logged } = await appWith(() => toolset)
    t.after(() => registry.close())
    const res = await app.request('http://localhost/api/agents/agent-1/browser/close', { method: 'POST' })
    await assertFailed(res, logged, 'boom-shared-7731')
    assert.equal(toolset.close.calls.length, 1)
  })

  it('toolset.closeThreadSession throwing (thread scope) answers 500', async (t) => {
    const toolset = mockToolset({
      getScope: recorder(() => 'thread'),
      closeThreadSession: recorder(() => {
        throw new Error('boom-thread-4410')
      }),
    })
    const { app, registry, logged } = await appWith(() => toolset)
    t.after(() => registry.close())
    const res = await app.request('http://localhost/api/agents/agent-1/browser/close', jsonPost({ threadId: 'thread-1' }))
    await assertFailed(res, logged, 'boom-thread-4410')
    assert.deepEqual(toolset.closeThreadSession.calls, [['thread-1']])
    assert.deepEqual(toolset.close.calls, [])
  })

  it('getToolset throwing answers 500', async (t) => {
    const { app, registry, logged } = await appWith(() => {
      throw new Error('boom-lookup-9902')
    })
    t.after(() => registry.close())
    const res = await app.request('http://localhost/api/agents/agent-1/browser/close', { method: 'POST' })
    await assertFailed(res, logged, 'boom-lookup-9902')
  })
})

describe("closing a thread's session on a real server", () => {
  it("tells that thread's viewers browser_closed and keeps them connected", async (t) => {
    // A streaming toolset (the viewers need one) with Mastra's thread-scope methods.
    const toolset = new FakeToolset()
    toolset.getScope = recorder(() => 'thread')
    toolset.hasThreadSession = recorder(() => true)
    toolset.closeThreadSession = recorder(async () => {})
    const closeCalls = []
    const close = toolset.close.bind(toolset)
    toolset.close = (...args) => {
      closeCalls.push(args)
      return close(...args)
    }
    const srv = await startServer({ getToolset: (agentId) => (agentId === 'agent-1' ? toolset : undefined) })
    t.after(() => srv.close())

    const thread1 = new Viewer(srv.url('agent-1', '?threadId=thread-1'))
    const thread2 = new Viewer(srv.url('agent-1', '?threadId=thread-2'))
    await Promise.all([thread1.opened, thread2.opened])
    await thread1.untilStreaming('thread-1 streaming')
    await thread2.untilStreaming('thread-2 streaming')

    const res = await fetch(`http://127.0.0.1:${srv.port}/api/agents/agent-1/browser/close`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ threadId: 'thread-1' }),
    })
    assert.equal(res.status, 200)
    assert.deepEqual(await res.json(), { success: true })
    assert.deepEqual(toolset.closeThreadSession.calls, [['thread-1']])
    assert.deepEqual(closeCalls, [])

    await waitFor(() => thread1.json.some((m) => m.status === 'browser_closed'), { what: 'browser_closed on thread-1' })
    assert.deepEqual(thread1.json.find((m) => m.status === 'browser_closed'), { status: 'browser_closed' })
    assert.equal(thread1.ws.readyState, thread1.ws.OPEN, 'the viewer stays connected')
    // The other thread's session was not closed (checked once thread-1's notice arrived).
    assert.ok(!thread2.statuses().includes('browser_closed'), `thread-2 statuses: ${thread2.statuses()}`)
    assert.equal(thread2.ws.readyState, thread2.ws.OPEN)
    await Promise.all([thread1.close(), thread2.close()])
  })
})

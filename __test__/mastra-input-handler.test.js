'use strict'
// Our version of Mastra's unit test of `handleInputMessage` (@mastra/server browser-stream
// input-handler.test.ts), against this package's export: parsing, mouse and keyboard
// injection with the thread as second argument. Added: the thread is passed through, inputs
// of one thread are applied in order, a browser that went away closes the thread's session,
// and `relaunch` is ignored (the newest Mastra dropped it).

const { describe, it, beforeEach } = require('node:test')
const assert = require('node:assert/strict')
const { handleInputMessage } = require('..')
const { waitFor } = require('./support')

/** A function that records the arguments of every call (in `calls` and in `log` with its name). */
function recorder(name, log, impl = () => undefined) {
  const fn = (...args) => {
    fn.calls.push(args)
    log?.push([name, ...args])
    return impl(...args)
  }
  fn.calls = []
  return fn
}

/** A toolset of the shape Mastra's test mocks, every method recorded in `toolset.log`. */
function mockToolset(overrides = {}) {
  const log = []
  const toolset = { log }
  const methods = {
    injectMouseEvent: async () => {},
    injectKeyboardEvent: async () => {},
    ensureReady: async () => {},
    getCurrentUrl: () => 'about:blank',
    getLastUrl: () => 'https://example.com',
    getLastBrowserState: () => ({ tabs: [{ url: 'https://example.com' }], activeTabIndex: 0 }),
    setCurrentThread: () => {},
    navigateTo: async () => {},
    closeThreadSession: async () => {},
    handleBrowserDisconnected: () => {},
    ...overrides,
  }
  for (const [name, impl] of Object.entries(methods)) toolset[name] = recorder(name, log, impl)
  return toolset
}

/** Asserts that `actual` has every field of `expected` (others may be present). */
function assertHasFields(actual, expected) {
  assert.equal(typeof actual, 'object', `expected an object, got ${JSON.stringify(actual)}`)
  for (const [key, value] of Object.entries(expected)) {
    assert.deepEqual(actual[key], value, `field ${key} of ${JSON.stringify(actual)}`)
  }
}

const MARKER = { type: 'mouse', eventType: 'mouseMoved', x: 7, y: 9 }

/**
 * Sends a valid input after the ones under test and waits until it was injected: inputs of
 * one agent and thread are applied in order, so anything the earlier messages queued ran first.
 */
async function afterEarlierInputs(toolset, getToolset, agentId, threadId) {
  await handleInputMessage(JSON.stringify(MARKER), getToolset, agentId, threadId)
  await waitFor(() => toolset.injectMouseEvent.calls.some(([event]) => event?.x === 7 && event?.y === 9), { what: 'the marker input' })
}

describe('handleInputMessage (as @mastra/server)', () => {
  let toolset
  let getToolset

  beforeEach(() => {
    toolset = mockToolset()
    getToolset = recorder('getToolset', null, () => toolset)
  })

  describe('message parsing', () => {
    it('ignores invalid JSON without asking for the toolset', async () => {
      const done = handleInputMessage('not json', getToolset, 'agent-1')
      assert.deepEqual(getToolset.calls, [])
      await done
      assert.deepEqual(getToolset.calls, [])
      assert.deepEqual(toolset.log, [])
    })

    it('ignores a message without a type', async () => {
      const done = handleInputMessage('{"foo": "bar"}', getToolset, 'agent-1')
      assert.deepEqual(toolset.log, [])
      await done
      await afterEarlierInputs(toolset, getToolset, 'agent-1')
      assert.deepEqual(toolset.injectKeyboardEvent.calls, [])
      assert.equal(toolset.injectMouseEvent.calls.length, 1, 'only the marker was injected')
    })

    it('ignores a message of an unknown type', async () => {
      const done = handleInputMessage('{"type": "unknown"}', getToolset, 'agent-1')
      assert.deepEqual(toolset.log, [])
      await done
      await afterEarlierInputs(toolset, getToolset, 'agent-1')
      assert.deepEqual(toolset.injectKeyboardEvent.calls, [])
      assert.equal(toolset.injectMouseEvent.calls.length, 1, 'only the marker was injected')
    })

    it('asks getToolset with the agent id only and skips when there is no toolset', async () => {
      const noToolset = recorder('getToolset', null, () => undefined)
      const done = handleInputMessage('{"type": "mouse", "eventType": "mouseMoved", "x": 10, "y": 20}', noToolset, 'agent-1')
      // Asked at once, as Mastra's handler does (its test checks right after the call).
      assert.deepEqual(noToolset.calls, [['agent-1']])
      await done
      assert.deepEqual(noToolset.calls, [['agent-1']])
    })
  })

  describe('mouse input', () => {
    /** Sends `message`, waits for the injection and returns its arguments. */
    async function injected(message) {
      handleInputMessage(JSON.stringify(message), getToolset, 'agent-1')
      await waitFor(() => toolset.injectMouseEvent.calls.length > 0, { what: 'injectMouseEvent' })
      return toolset.injectMouseEvent.calls[0]
    }

    it('injects a mouse move', async () => {
      const [event, threadId] = await injected({ type: 'mouse', eventType: 'mouseMoved', x: 100, y: 200 })
      assertHasFields(event, { type: 'mouseMoved', x: 100, y: 200 })
      assert.equal(threadId, undefined)
    })

    it('injects a click with button and clickCount', async () => {
      const [event, threadId] = await injected({ type: 'mouse', eventType: 'mousePressed', x: 50, y: 75, button: 'left', clickCount: 1 })
      assertHasFields(event, { type: 'mousePressed', x: 50, y: 75, button: 'left', clickCount: 1 })
      assert.equal(threadId, undefined)
    })

    it('injects a wheel event with its deltas', async () => {
      const [event, threadId] = await injected({ type: 'mouse', eventType: 'mouseWheel', x: 100, y: 100, deltaX: 0, deltaY: -120 })
      assertHasFields(event, { type: 'mouseWheel', deltaX: 0, deltaY: -120 })
      assert.equal(threadId, undefined)
    })
  })

  describe('keyboard input', () => {
    async function injected(message) {
      handleInputMessage(JSON.stringify(message), getToolset, 'agent-1')
      await waitFor(() => toolset.injectKeyboardEvent.calls.length > 0, { what: 'injectKeyboardEvent' })
      return toolset.injectKeyboardEvent.calls[0]
    }

    it('injects a keyDown', async () => {
      const [event, threadId] = await injected({ type: 'keyboard', eventType: 'keyDown', key: 'a' })
      assertHasFields(event, { type: 'keyDown', key: 'a' })
      assert.equal(threadId, undefined)
    })

    it('injects a char event with its text', async () => {
      const [event, threadId] = await injected({ type: 'keyboard', eventType: 'char', text: 'a' })
      assertHasFields(event, { type: 'char', text: 'a' })
      assert.equal(threadId, undefined)
    })

    it('adds the Windows virtual key code of special keys (Enter = 13)', async () => {
      const [event, threadId] = await injected({ type: 'keyboard', eventType: 'keyDown', key: 'Enter' })
      assertHasFields(event, { type: 'keyDown', key: 'Enter', windowsVirtualKeyCode: 13 })
      assert.equal(threadId, undefined)
    })
  })
})

describe('handleInputMessage beyond Mastra', () => {
  it('passes the threadId as the second argument of the injection', async () => {
    const toolset = mockToolset()
    const getToolset = recorder('getToolset', null, () => toolset)
    const thread = 'thread/1 2'
    handleInputMessage(JSON.stringify({ type: 'mouse', eventType: 'mouseMoved', x: 3, y: 4 }), getToolset, 'agent-1', thread)
    handleInputMessage(JSON.stringify({ type: 'keyboard', eventType: 'keyDown', key: 'b' }), getToolset, 'agent-1', thread)
    await waitFor(() => toolset.injectMouseEvent.calls.length === 1 && toolset.injectKeyboardEvent.calls.length === 1, {
      what: 'both injections',
    })
    assert.equal(toolset.injectMouseEvent.calls[0][1], thread)
    assert.equal(toolset.injectKeyboardEvent.calls[0][1], thread)
    assert.ok(getToolset.calls.every((args) => args[0] === 'agent-1'))
  })

  it("applies one thread's inputs in order even when the first injection is slow", async () => {
    const steps = []
    let n = 0
    const toolset = mockToolset({
      injectMouseEvent: (event) => {
        const i = ++n
        steps.push(`start ${event.x}`)
        // The first injection takes a while; the later ones answer at once. (The delay only
        // gives an unordered implementation the chance to start the next one meanwhile.)
        const ms = i === 1 ? 50 : 0
        return new Promise((resolve) => setTimeout(resolve, ms)).then(() => steps.push(`end ${event.x}`))
      },
    })
    const getToolset = () => toolset
    // As a WebSocket message handler would: one call per message, none awaited.
    for (const [eventType, x] of [
      ['mousePressed', 1],
      ['mouseMoved', 2],
      ['mouseReleased', 3],
    ]) {
      handleInputMessage(JSON.stringify({ type: 'mouse', eventType, x, y: 0, button: 'left', clickCount: 1 }), getToolset, 'agent-order', 'thread-1')
    }
    await waitFor(() => steps.length === 6, { what: 'three injections' })
    assert.deepEqual(steps, ['start 1', 'end 1', 'start 2', 'end 2', 'start 3', 'end 3'])
    assert.deepEqual(
      toolset.injectMouseEvent.calls.map(([event]) => event.type),
      ['mousePressed', 'mouseMoved', 'mouseReleased'],
    )
  })

  it("an injection failing with 'Target closed' closes the thread's session", async () => {
    const toolset = mockToolset({ injectMouseEvent: async () => Promise.reject(new Error('Target closed')) })
    handleInputMessage(JSON.stringify({ type: 'mouse', eventType: 'mouseMoved', x: 1, y: 1 }), () => toolset, 'agent-gone', 'thread-9')
    await waitFor(() => toolset.closeThreadSession.calls.length > 0, { what: 'closeThreadSession' })
    assert.deepEqual(toolset.closeThreadSession.calls, [['thread-9']])
  })

  it("an injection failing with 'Target closed' without a thread calls handleBrowserDisconnected", async () => {
    const toolset = mockToolset({ injectKeyboardEvent: async () => Promise.reject(new Error('Target closed')) })
    handleInputMessage(JSON.stringify({ type: 'keyboard', eventType: 'keyDown', key: 'x' }), () => toolset, 'agent-gone-2')
    await waitFor(() => toolset.handleBrowserDisconnected.calls.length > 0, { what: 'handleBrowserDisconnected' })
    assert.deepEqual(toolset.handleBrowserDisconnected.calls, [[]])
    assert.deepEqual(toolset.closeThreadSession.calls, [])
  })

  it("a failed injection that is not a disconnection keeps the session, and the thread's next input is applied", async () => {
    let first = true
    const toolset = mockToolset({
      injectMouseEvent: async () => {
        if (first) {
          first = false
          // One of Mastra's "not ready yet" errors: expected, so not even logged.
          throw new Error('No CDP session')
        }
      },
    })
    const getToolset = () => toolset
    handleInputMessage(JSON.stringify({ type: 'mouse', eventType: 'mouseMoved', x: 1, y: 1 }), getToolset, 'agent-retry', 'thread-1')
    await afterEarlierInputs(toolset, getToolset, 'agent-retry', 'thread-1')
    assert.equal(toolset.injectMouseEvent.calls.length, 2)
    assert.deepEqual(toolset.closeThreadSession.calls, [])
    assert.deepEqual(toolset.handleBrowserDisconnected.calls, [])
  })

  it("ignores {type:'relaunch'}", async () => {
    const toolset = mockToolset()
    const getToolset = recorder('getToolset', null, () => toolset)
    await handleInputMessage('{"type":"relaunch"}', getToolset, 'agent-1', 'thread-1')
    assert.deepEqual(getToolset.calls, [])
    await afterEarlierInputs(toolset, getToolset, 'agent-1', 'thread-1')
    // Nothing but the marker reached the toolset: no launch, navigation or session call.
    assert.equal(toolset.log.length, 1, JSON.stringify(toolset.log))
    assert.equal(toolset.log[0][0], 'injectMouseEvent')
    assert.equal(toolset.log[0][2], 'thread-1')
  })
})

it('inputs stay in arrival order when an async getToolset answers a later input first', async () => {
  const applied = []
  const toolset = {
    injectMouseEvent: async (event) => applied.push(event.type),
    injectKeyboardEvent: async () => {},
  }
  let calls = 0
  // The first lookup is slow, the second fast (a deployer hydrating a stored agent).
  const getToolset = () => new Promise((resolve) => setTimeout(() => resolve(toolset), calls++ === 0 ? 40 : 0))
  await handleInputMessage(JSON.stringify({ type: 'mouse', eventType: 'mousePressed', x: 1, y: 1, button: 'left', clickCount: 1 }), getToolset, 'agent-1', 't')
  await handleInputMessage(JSON.stringify({ type: 'mouse', eventType: 'mouseReleased', x: 1, y: 1, button: 'left', clickCount: 1 }), getToolset, 'agent-1', 't')
  await waitFor(() => applied.length === 2, { what: 'both inputs applied' })
  assert.deepEqual(applied, ['mousePressed', 'mouseReleased'])
})

it('an async lookup that rejects while an earlier input is still applied is logged, not fatal', async () => {
  const applied = []
  const toolset = {
    injectMouseEvent: (event) => new Promise((resolve) => setTimeout(() => resolve(applied.push(event.type)), 100)),
    injectKeyboardEvent: async () => {},
  }
  const rejections = []
  const onRejection = (reason) => rejections.push(reason)
  process.on('unhandledRejection', onRejection)
  try {
    let calls = 0
    const getToolset = () => (calls++ === 1 ? Promise.reject(new Error('lookup failed')) : Promise.resolve(toolset))
    const press = JSON.stringify({ type: 'mouse', eventType: 'mousePressed', x: 1, y: 1, button: 'left', clickCount: 1 })
    const release = JSON.stringify({ type: 'mouse', eventType: 'mouseReleased', x: 1, y: 1, button: 'left', clickCount: 1 })
    await handleInputMessage(press, getToolset, 'agent-1', 'r')
    await handleInputMessage(press, getToolset, 'agent-1', 'r') // its lookup rejects at once
    await handleInputMessage(release, getToolset, 'agent-1', 'r')
    await waitFor(() => applied.length === 2, { what: 'the inputs whose lookup worked', timeout: 5000 })
    // Let the rejection's turn pass: the queue reaches it between the two other inputs.
    await new Promise((resolve) => setImmediate(resolve))
    assert.deepEqual(applied, ['mousePressed', 'mouseReleased'])
    assert.deepEqual(rejections, [], 'no unhandled rejection')
  } finally {
    process.off('unhandledRejection', onRejection)
  }
})

'use strict'
// How long control lasts (`controlIdleMs`, `controlGraceMs`) and the agent taking it back
// (`registry.releaseControl`), over real sockets: viewers are told why control ended, the
// deployer's `onControlChange` too, and a controller whose connection drops takes control
// back with its reclaim token — by hand and through the client module's reconnect.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { pathToFileURL } = require('node:url')
const WebSocket = require('ws')
const { FakeToolset, Viewer, startServer, waitFor } = require('./support')

const clientModule = pathToFileURL(path.join(__dirname, '..', 'client', 'browser-stream-client.js')).href
const MOVE = { type: 'input', kind: 'mouse', eventType: 'mouseMoved', x: 3, y: 4 }

async function serverWith(t, config) {
  const toolset = new FakeToolset()
  const changes = []
  const srv = await startServer({
    getToolset: () => toolset,
    onControlChange: (agentId, controller, info) => changes.push({ agentId, controller, reason: info.reason }),
    ...config,
  })
  t.after(() => srv.close())
  return { srv, toolset, changes }
}

async function viewer(t, srv, agent) {
  const v = new Viewer(srv.url(agent), { extended: true })
  t.after(() => v.close())
  await v.untilMeta()
  return v
}

/** Takes control for `v` and resolves with the `control` message that granted it. */
async function takeControl(v) {
  const from = v.json.length
  v.send({ type: 'control-request' })
  return v.waitJson((m) => m.type === 'control' && m.you === true, { from, what: 'control granted' })
}

test('control is released after controlIdleMs without input; everyone and onControlChange are told idle', async (t) => {
  const idleMs = 1500
  const { srv, toolset, changes } = await serverWith(t, { controlIdleMs: idleMs })
  const a = await viewer(t, srv, 'idle-agent')
  const b = await viewer(t, srv, 'idle-agent')
  const granted = await takeControl(a)
  assert.equal(granted.reclaim, undefined, 'no reclaim token without a grace period')
  // Taken before sending: the server's last input is no earlier than this.
  const lastInput = Date.now()
  a.send(MOVE)
  await waitFor(() => toolset.mouse.length === 1, { what: 'the input relayed' })
  const released = await b.waitJson((m) => m.type === 'control' && m.controller === null, { what: 'idle release', timeout: 15_000 })
  const releasedAt = Date.now()
  assert.equal(released.reason, 'idle')
  assert.ok(releasedAt - lastInput >= idleMs, `released ${releasedAt - lastInput} ms after the last input`)
  const toldA = await a.waitJson((m) => m.type === 'control' && m.controller === null, { what: 'holder told' })
  assert.deepEqual([toldA.you, toldA.reason], [false, 'idle'])
  await waitFor(() => changes.length === 2, { what: 'onControlChange twice' })
  assert.deepEqual(changes, [
    { agentId: 'idle-agent', controller: a.viewerId, reason: undefined },
    { agentId: 'idle-agent', controller: null, reason: 'idle' },
  ])
  // Input after the release is refused: control must be asked again.
  a.send(MOVE)
  await a.waitJson((m) => m.error === 'not_controller', { what: 'refused after the release' })
  assert.equal(toolset.mouse.length, 1)
})

test('a controller whose connection drops reclaims control within controlGraceMs; nobody else can take it meanwhile', async (t) => {
  // Long enough that a busy machine never ends the grace before the reconnect.
  const { srv, toolset, changes } = await serverWith(t, { controlGraceMs: 60_000 })
  const a = await viewer(t, srv, 'grace-agent')
  const b = await viewer(t, srv, 'grace-agent')
  const granted = await takeControl(a)
  assert.match(granted.reclaim, /^[0-9a-f]{32}$/)
  await b.waitJson((m) => m.type === 'control' && m.controller === a.viewerId, { what: 'b sees a in control' })
  assert.ok(!b.json.some((m) => m.reclaim), 'only the holder is sent the token')
  const controlsOfB = () => b.controls().length
  const seenByB = controlsOfB()
  // The connection drops without a close handshake.
  a.ws.terminate()
  await waitFor(() => srv.registry.stats().channels[0].viewers.length === 1, { what: 'a gone' })
  b.send({ type: 'control-request' })
  const busy = await b.waitJson((m) => m.error === 'control_busy', { what: 'b refused' })
  assert.equal(busy.controller, a.viewerId, 'the dropped controller still holds it')
  b.send(MOVE)
  await b.waitJson((m) => m.error === 'not_controller', { what: 'b input refused' })
  // A wrong token is an ordinary request.
  const a2 = await viewer(t, srv, 'grace-agent')
  a2.send({ type: 'control-request', reclaim: 'ff'.repeat(16) })
  await a2.waitJson((m) => m.error === 'control_busy', { what: 'a wrong token refused' })
  a2.send({ type: 'control-request', reclaim: 42 })
  await a2.waitJson((m) => m.error === 'bad_message', { what: 'a malformed token refused' })
  a2.send({ type: 'control-request', reclaim: granted.reclaim })
  const back = await a2.waitJson((m) => m.type === 'control' && m.you === true, { what: 'reclaimed' })
  assert.equal(back.controller, a2.viewerId)
  assert.notEqual(back.reclaim, granted.reclaim)
  await b.waitJson((m) => m.type === 'control' && m.controller === a2.viewerId, { what: 'b sees the reclaim' })
  assert.ok(!b.controls().slice(seenByB).some((m) => m.controller === null), 'control never went to nobody')
  a2.send(MOVE)
  await waitFor(() => toolset.mouse.length === 1, { what: 'the reclaimed controller drives the page' })
  assert.deepEqual(changes.map((c) => c.controller), [a.viewerId, a2.viewerId])
})

test('a dropped controller that does not come back loses control at the end of the grace (controller_left)', async (t) => {
  const graceMs = 800
  const { srv, changes } = await serverWith(t, { controlGraceMs: graceMs })
  const a = await viewer(t, srv, 'left-agent')
  const b = await viewer(t, srv, 'left-agent')
  await takeControl(a)
  a.ws.terminate()
  await waitFor(() => srv.registry.stats().channels[0].viewers.length === 1, { what: 'a gone' })
  const droppedAt = Date.now()
  const released = await b.waitJson((m) => m.type === 'control' && m.controller === null, { what: 'grace over', timeout: 15_000 })
  assert.equal(released.reason, 'controller_left')
  assert.ok(Date.now() - droppedAt >= graceMs - 100, 'not before the grace ended')
  await waitFor(() => changes.at(-1)?.reason === 'controller_left', { what: 'onControlChange told' })
  await takeControl(b)
})

test('the agent takes control back with releaseControl; viewers and onControlChange get its reason', async (t) => {
  const { srv, changes } = await serverWith(t, { controlGraceMs: 60_000 })
  const a = await viewer(t, srv, 'agent-takes')
  const b = await viewer(t, srv, 'agent-takes')
  const granted = await takeControl(a)
  // Also from a controller in its grace period.
  a.ws.terminate()
  await waitFor(() => srv.registry.stats().channels[0].viewers.length === 1, { what: 'a gone' })
  assert.equal(srv.registry.releaseControl('agent-takes', undefined, 'agent resumed'), true)
  const told = await b.waitJson((m) => m.type === 'control' && m.controller === null, { what: 'released' })
  assert.equal(told.reason, 'agent resumed')
  assert.equal(srv.registry.releaseControl('agent-takes', undefined, 'again'), false, 'nobody holds it')
  await waitFor(() => changes.at(-1)?.reason === 'agent resumed', { what: 'onControlChange with the reason' })
  assert.equal(changes.at(-1).controller, null)
  // The token of the released tenure is spent: it takes nothing from the next controller.
  const a2 = await viewer(t, srv, 'agent-takes')
  await takeControl(b)
  a2.send({ type: 'control-request', reclaim: granted.reclaim })
  await a2.waitJson((m) => m.error === 'control_busy', { what: 'the spent token refused' })
})

test('the client module takes control back by itself after a reconnect', async (t) => {
  const { BrowserStreamClient } = await import(clientModule)
  const { srv, toolset } = await serverWith(t, { controlGraceMs: 60_000 })
  const controls = []
  const client = new BrowserStreamClient(srv.url('client-grace'), {
    WebSocket,
    extended: true,
    backoff: { initialMs: 20, maxMs: 50 },
    onControl: (c) => controls.push(c),
  })
  t.after(() => client.close())
  client.connect()
  await waitFor(() => client.session, { what: 'session' })
  client.requestControl()
  await waitFor(() => client.hasControl, { what: 'control' })
  const firstId = client.session.viewerId
  const watcher = await viewer(t, srv, 'client-grace')
  srv.registry.closeViewer(firstId, 1011, 'test drop')
  await waitFor(() => client.session && client.session.viewerId !== firstId && client.hasControl, { what: 'control back after the reconnect', timeout: 15_000 })
  await watcher.waitJson((m) => m.type === 'control' && m.controller === client.session.viewerId, { what: 'the watcher sees it' })
  assert.ok(!watcher.controls().some((m) => m.controller === null), 'control never went to nobody')
  assert.ok(client.send({ type: 'input', kind: 'mouse', eventType: 'mouseMoved', x: 1, y: 1 }))
  await waitFor(() => toolset.mouse.length === 1, { what: 'input after the reclaim' })
})

'use strict'
// The privacy blackout (`registry.setPrivacy`): while a channel is private no frame captured
// reaches any viewer — compat or extended, a socket served by Rust or one bridged through JS,
// JPEG or video — viewers are told `{status:'private', reason}`, input and snapshots are
// refused, and a joiner gets no picture. Frames are marked (a JPEG comment with a number) so
// the test knows which ones were captured while private.

const test = require('node:test')
const assert = require('node:assert/strict')
const { ViewerRegistry } = require('..')
const { FakeToolset, Viewer, waitFor, serveRegistry, nativeAndBridged } = require('./support')

const KIND_VIDEO = 2
const OFFER = { type: 'config', video: { codecs: ['avc1.42E01F'] } }
/** Marks of frames captured while private start here. */
const PRIVATE_MARK = 1000
const slow = { timeout: 15_000 }

/** Two servers over one registry: one hands sockets to Rust, the other bridges them in JS. */
async function servers(t, options = {}) {
  const toolset = new FakeToolset()
  const registry = new ViewerRegistry({ getToolset: () => toolset, lingerMs: 100, refineAfterMs: 0, ...options })
  const { native, bridged, close } = await nativeAndBridged(registry)
  t.after(close)
  return { toolset, registry, native, bridged }
}

const channel = (registry) => registry.stats().channels[0]
const chunks = (viewer) => viewer.log.filter((e) => e.frame && e.frame.kind === KIND_VIDEO).map((e) => e.frame)
const privateStatuses = (viewer) => viewer.json.filter((m) => m.status === 'private' && m.type === undefined)

test('no frame captured while private reaches any viewer; input and snapshots are refused; all flows again after', async (t) => {
  const { toolset, registry, native, bridged } = await servers(t, { implicitControl: true })
  const agent = 'private-agent'
  const viewers = {
    compatNative: new Viewer(native.url(agent)),
    compatBridged: new Viewer(bridged.url(agent)),
    extendedNative: new Viewer(native.url(agent), { extended: true }),
    extendedBridged: new Viewer(bridged.url(agent), { extended: true }),
  }
  const video = new Viewer(native.url(agent), { extended: true })
  const all = [...Object.values(viewers), video]
  t.after(() => Promise.all(all.map((v) => v.close())))
  await Promise.all(all.map((v) => v.opened))
  await waitFor(() => toolset.current && channel(registry)?.viewers.length === all.length, { what: 'every viewer admitted' })
  const transports = new Set(channel(registry).viewers.map((v) => v.transport))
  assert.ok(transports.size >= 2, `native and bridged sockets both take part: ${[...transports]}`)
  await video.untilMeta()
  video.send(OFFER)

  // Public frames reach everyone (video: a chunk of the last one).
  const sent = (viewer, mark) => viewer.frameSeqs.includes(mark)
  for (const mark of [1, 2, 3]) toolset.emitFrame(mark)
  await waitFor(() => Object.values(viewers).every((v) => sent(v, 3)), { what: 'public frames', ...slow })
  // The server's number of the last public frame (the marks and the frames line up).
  const extended = viewers.extendedNative
  const lastPublicSeq = extended.frames[extended.frameSeqs.lastIndexOf(3)].seq
  await waitFor(() => chunks(video).some((c) => c.seq >= lastPublicSeq), { what: 'a video chunk of the last public frame', ...slow })
  const before = channel(registry)

  registry.setPrivacy(agent, undefined, true, { reason: 'typing a password' })
  assert.equal(registry.isPrivate(agent), true)
  await waitFor(() => all.every((v) => privateStatuses(v).length === 1), { what: 'every viewer told private' })
  for (const viewer of all) assert.equal(privateStatuses(viewer)[0].reason, 'typing a password')
  const framesAtPrivacy = all.map((v) => v.frameCount)
  const chunksMadeAtPrivacy = channel(registry).video.chunks

  // Frames captured now, each of another size (a picture of the card number being typed).
  const privateMarks = Array.from({ length: 10 }, (_, i) => PRIVATE_MARK + i)
  for (const mark of privateMarks) toolset.emitFrame(mark, { size: 2000 + mark })
  await waitFor(() => channel(registry).framesWithheld === privateMarks.length, { what: 'every private frame withheld' })
  // Input and a snapshot request are refused, on both transports.
  for (const viewer of [viewers.extendedNative, viewers.extendedBridged]) {
    viewer.send({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 5, y: 5, button: 'left', clickCount: 1 })
    viewer.send({ type: 'snapshot-request' })
  }
  await waitFor(() => [viewers.extendedNative, viewers.extendedBridged].every((v) => v.errors('private').length === 2), {
    what: 'input and snapshot refused as private',
  })
  viewers.compatNative.send({ type: 'mouse', eventType: 'mousePressed', x: 5, y: 5, button: 'left', clickCount: 1 })
  // Compat input is refused silently (compat viewers are never answered): counted.
  await waitFor(() => channel(registry).inputsRefused === before.inputsRefused + 3, { what: 'three inputs refused' })
  // A joiner during privacy is told so and gets no picture.
  const joiner = new Viewer(native.url(agent), { extended: true })
  t.after(() => joiner.close())
  await joiner.untilMeta()
  assert.equal(joiner.meta.status, 'private')
  await waitFor(() => privateStatuses(joiner).length === 1, { what: 'the joiner told private' })
  joiner.send({ type: 'snapshot-request' })
  await waitFor(() => joiner.errors('private').length === 1, { what: 'the joiner refused a snapshot' })
  for (const viewer of all) await (viewer.extended ? viewer.barrier() : Promise.resolve())

  const during = channel(registry)
  assert.equal(during.framesIn, before.framesIn, 'no private frame was taken in')
  assert.equal(during.bytesIn, before.bytesIn)
  assert.equal(during.video.chunks, chunksMadeAtPrivacy, 'no video chunk was made while private')
  assert.deepEqual(all.map((v) => v.frameCount), framesAtPrivacy, 'no frame was sent while private')
  assert.equal(joiner.frameCount, 0)
  assert.equal(toolset.mouse.length, 0, 'no input reached the page')

  // Public again: the source's status is told again and the next frame flows to everyone.
  registry.setPrivacy(agent, undefined, false)
  assert.equal(registry.isPrivate(agent), false)
  await waitFor(() => all.every((v) => v.json.findLast((m) => m.status && m.type === undefined)?.status === 'streaming'), {
    what: 'streaming told again',
  })
  toolset.emitFrame(4)
  await waitFor(() => [...Object.values(viewers), joiner].every((v) => sent(v, 4)), { what: 'the public frame after', ...slow })
  await waitFor(() => chunks(video).some((c) => c.seq > lastPublicSeq), { what: 'video after privacy', ...slow })
  for (const viewer of [...all, joiner]) {
    const leaked = viewer.frameSeqs.filter((mark) => mark >= PRIVATE_MARK)
    assert.deepEqual(leaked, [], 'no frame captured while private reached this viewer')
  }
})

test('privacy set before anyone watches holds for the first viewer; a thread switch covers only its thread', async (t) => {
  // One browser per thread, so that each thread's frames are its own.
  const toolsets = new Map()
  const toolsetOf = (threadId) => toolsets.get(threadId) ?? toolsets.set(threadId, new FakeToolset()).get(threadId)
  const registry = new ViewerRegistry({ getToolset: (agentId, threadId) => toolsetOf(threadId), lingerMs: 100 })
  const native = await serveRegistry(registry, { nativeSockets: true })
  t.after(async () => {
    await registry.close()
    await native.close()
  })
  registry.setPrivacy('agent-a', 'thread-1', true, { reason: 'card number' })
  assert.equal(registry.isPrivate('agent-a', 'thread-1'), true, 'private before anyone watches')
  assert.equal(registry.isPrivate('agent-a', 'thread-2'), false)
  const privateViewer = new Viewer(native.url('agent-a', '?threadId=thread-1'), { extended: true })
  const otherThread = new Viewer(native.url('agent-a', '?threadId=thread-2'), { extended: true })
  t.after(() => Promise.all([privateViewer.close(), otherThread.close()]))
  await Promise.all([privateViewer.untilMeta(), otherThread.untilMeta()])
  assert.equal(privateViewer.meta.status, 'private')
  await waitFor(() => privateStatuses(privateViewer).length === 1, { what: 'told private' })
  assert.equal(privateStatuses(privateViewer)[0].reason, 'card number')
  await otherThread.untilStreaming()
  assert.equal(registry.isPrivate('agent-a', 'thread-1'), true)
  assert.equal(registry.isPrivate('agent-a', 'thread-2'), false)
  await waitFor(() => toolsetOf('thread-1').current && toolsetOf('thread-2').current, { what: 'a stream per thread' })
  const stats = (thread) => registry.stats().channels.find((c) => c.threadId === thread)
  for (const mark of [1, 2, 3]) {
    toolsetOf('thread-1').emitFrame(PRIVATE_MARK + mark)
    toolsetOf('thread-2').emitFrame(mark)
  }
  await waitFor(() => stats('thread-1').framesWithheld === 3, { what: "thread-1's frames withheld" })
  await waitFor(() => otherThread.frameSeqs.includes(3), { what: "thread-2's frames delivered" })
  assert.equal(stats('thread-1').framesIn, 0)
  assert.equal(stats('thread-2').framesWithheld, 0)
  await privateViewer.barrier()
  assert.equal(privateViewer.frameCount, 0)
})

test('bad setPrivacy and releaseControl calls throw clear errors', async (t) => {
  const { registry } = await servers(t)
  assert.throws(() => registry.setPrivacy('', undefined, true), /agentId/)
  assert.throws(() => registry.setPrivacy('a', undefined, 'yes'), /on must be a boolean/)
  assert.throws(() => registry.setPrivacy('a', 7, true), /threadId/)
  assert.throws(() => registry.setPrivacy('a', undefined, true, { reason: 'x'.repeat(201) }), /200 bytes/)
  assert.throws(() => registry.setPrivacy('a', undefined, true, { reason: 'a\nb' }), /control characters/)
  assert.throws(() => registry.releaseControl('a', undefined, 'a\u0007b'), /control characters/)
  assert.throws(() => registry.releaseControl('a', undefined, 5), /reason must be a string/)
  assert.equal(registry.releaseControl('nobody-watches'), false)
  assert.equal(registry.isPrivate('a'), false)
})

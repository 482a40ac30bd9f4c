'use strict'
// The extended wire (`browser-stream.v1`, docs/PROTOCOL.md "Extended mode") end to end, without
// a browser: a real Hono server on @hono/node-server, real `ws` clients, frames from a
// Mastra-shaped toolset (real JPEG bytes), agent events from `registry.publishEvent`.

const test = require('node:test')
const assert = require('node:assert/strict')
const {
  startServer,
  FakeToolset,
  Viewer,
  EXTENDED_PROTOCOL,
  FRAME_HEADER_BYTES,
  BASE_JPEG,
  frameSeq,
  waitFor,
  sleep,
  jpegSize,
  settledStatuses,
} = require('./support')

/** One FakeToolset per channel key (`agentId` or `agentId:threadId`). */
function toolsetPool() {
  const toolsets = new Map()
  const of = (agentId, threadId) => {
    const key = threadId ? `${agentId}:${threadId}` : agentId
    if (!toolsets.has(key)) toolsets.set(key, new FakeToolset())
    return toolsets.get(key)
  }
  return { getToolset: of, of }
}

/** A server whose every channel gets its own FakeToolset; closed after the test. */
async function setup(t, config = {}) {
  const pool = toolsetPool()
  const srv = await startServer({ getToolset: pool.getToolset, ...config })
  t.after(() => srv.close())
  return { srv, toolset: pool.of, pool }
}

/** An extended viewer that has received its session-meta. */
async function extended(srv, agentId, query = '', options = {}) {
  const viewer = new Viewer(srv.url(agentId, query), { extended: true, ...options })
  await viewer.opened
  await viewer.untilMeta()
  return viewer
}

/** An extended viewer whose channel is streaming (the toolset's screencast has started). */
async function streaming(srv, agentId, query = '', options = {}) {
  const viewer = await extended(srv, agentId, query, options)
  await viewer.untilStreaming()
  return viewer
}

/** Takes control for `viewer` and waits for the `control` message telling it so. */
async function takeControl(viewer) {
  const from = viewer.json.length
  viewer.send({ type: 'control-request' })
  await viewer.waitJson((m) => m.type === 'control' && m.you === true, { from, what: 'control granted' })
}

/** Partial deep match: every field of `expected` equals the field of `actual`. */
function assertFields(actual, expected, message) {
  assert.ok(actual, `${message}: missing`)
  for (const [name, value] of Object.entries(expected)) {
    assert.deepEqual(actual[name], value, `${message}: field ${name}`)
  }
}

function assertRising(seqs, message) {
  for (let i = 1; i < seqs.length; i++) {
    assert.ok(seqs[i] > seqs[i - 1], `${message}: seq ${seqs[i]} after ${seqs[i - 1]} (index ${i})`)
  }
}


// ---- handshake ----------------------------------------------------------------------------

test('handshake: browser-stream.v1 is echoed; only other browser-stream versions get 400 unsupported_protocol; other subprotocols fall back to compat', async (t) => {
  const { srv } = await setup(t)

  const ext = new Viewer(srv.url('hs'), { extended: true })
  await ext.opened
  assert.equal(ext.ws.protocol, EXTENDED_PROTOCOL, 'the 101 echoes browser-stream.v1')
  await ext.untilMeta()
  assert.equal(ext.log[0].json?.type, 'session-meta')

  // v1 among other offers is still chosen.
  const both = new Viewer(srv.url('hs'), { protocols: ['browser-stream.v9', EXTENDED_PROTOCOL] })
  await both.opened
  assert.equal(both.ws.protocol, EXTENDED_PROTOCOL)
  await both.untilMeta()

  const v9 = new Viewer(srv.url('hs'), { protocols: ['browser-stream.v9'] })
  await waitFor(() => v9.unexpected, { what: 'the refusal of browser-stream.v9' })
  assert.equal(v9.unexpected.status, 400)
  assert.match(String(v9.unexpected.headers['content-type']), /application\/json/)
  const body = JSON.parse(v9.unexpected.body)
  assert.equal(body.error, 'unsupported_protocol')
  assert.equal(typeof body.message, 'string')
  await assert.rejects(v9.opened)

  // An unrelated subprotocol: compat mode, nothing echoed. The header is set by hand so that
  // `ws` does not itself insist on an echo; it would fail the socket if one came back.
  const compat = new Viewer(srv.url('hs'), { headers: { 'Sec-WebSocket-Protocol': 'chat, superchat' } })
  await compat.opened
  assert.equal(compat.ws.protocol, '', 'no subprotocol echoed')
  await waitFor(() => compat.json.length >= 1, { what: 'first compat message' })
  assert.deepEqual(compat.json[0], { status: 'connected' })
  assert.equal(compat.json.some((m) => m.type === 'session-meta'), false)

  await Promise.all([ext.close(), both.close(), compat.close()])
})

// ---- session-meta and binary frames ----------------------------------------------------------

test('session-meta comes first; binary frames carry the documented header and the exact image bytes; compat viewers still get base64', async (t) => {
  const { srv, toolset } = await setup(t)
  const before = Date.now()

  const a = await extended(srv, 'meta')
  const meta = a.meta
  assert.equal(a.log[0].json, meta, 'session-meta is the first message')
  assert.equal(meta.type, 'session-meta')
  assert.equal(meta.protocol, EXTENDED_PROTOCOL)
  assert.equal(meta.agentId, 'meta')
  assert.equal(meta.threadId, null)
  assert.ok(Number.isInteger(meta.viewerId), 'viewerId is a number')
  assert.equal(meta.canControl, true, 'without authorizeControl every viewer may control')
  assert.equal(meta.controller, null)
  assert.equal(meta.implicitControl, false)
  assert.ok(meta.status === null || typeof meta.status === 'string')
  assert.ok(Number.isSafeInteger(meta.seq) && meta.seq >= 0, 'seq is a safe integer')
  // The counter starts at the process start time in microseconds since the epoch.
  assert.ok(meta.seq >= (performance.timeOrigin - 60_000) * 1000, `seq ${meta.seq} starts near the process start in µs`)

  await a.untilStreaming()
  assert.equal(a.statuses().includes('connected'), false, 'no {status:"connected"} in extended mode')
  assert.deepEqual(settledStatuses(a.statuses()), ['streaming'])

  const compat = new Viewer(srv.url('meta'))
  await compat.opened
  await compat.untilStreaming()

  const sent = []
  for (let n = 1; n <= 5; n++) {
    sent.push(toolset('meta').emitFrame(n, { width: 1280, height: 720, size: n * 5000 }))
    await waitFor(() => a.frames.length === n && compat.frames.length === n, { what: `frame ${n} on both viewers` })
  }
  assert.equal(a.badBinary.length, 0)
  assert.equal(a.textFrames.length, 0, 'no base64 text frames in extended mode')
  for (let i = 0; i < 5; i++) {
    const frame = a.frames[i]
    assert.equal(frame.kind, 1)
    assert.equal(frame.headerLength, FRAME_HEADER_BYTES)
    assert.equal(frame.format, 1, 'JPEG')
    assert.equal(frame.flags, 0)
    assert.equal(frame.reserved, 0)
    assert.equal(frame.imageWidth, 320)
    assert.equal(frame.imageHeight, 240)
    assert.equal(frame.deviceWidth, 1280)
    assert.equal(frame.deviceHeight, 720)
    assert.equal(frame.pageScaleFactor, 1)
    assert.equal(frame.offsetTop, 0)
    assert.equal(frame.scrollOffsetX, 0)
    assert.equal(frame.scrollOffsetY, 0)
    assert.ok(frame.seq > meta.seq, 'frames after session-meta have newer seqs')
    assert.ok(frame.timestamp >= before - 60_000 && frame.timestamp <= Date.now() + 60_000, `capture time ${frame.timestamp} is epoch ms`)
    assert.ok(frame.image.equals(Buffer.from(sent[i], 'base64')), `frame ${i + 1}: image bytes equal the emitted JPEG`)
    assert.equal(frameSeq(frame.image), i + 1)
  }
  assertRising(a.frames.map((f) => f.seq), 'frame seqs')
  assert.deepEqual(compat.frames, sent, 'the compat viewer still gets the base64 text')
  assert.equal(compat.json.some((m) => m.type !== undefined), false, 'no extended messages on the compat socket')
  assert.ok(a.json.some((m) => m.viewport?.width === 1280 && m.viewport?.height === 720), '{viewport} as in compat')

  // A late extended joiner: session-meta, status, url, viewport, then the newest frame.
  const late = await extended(srv, 'meta')
  await late.waitFrames(1)
  await sleep(50)
  const kinds = late.log.map((entry) => {
    if (entry.frame) return 'frame'
    const m = entry.json
    if (m.type === 'session-meta') return 'meta'
    if (m.status) return `status:${m.status}`
    if (m.url) return 'url'
    if (m.viewport) return 'viewport'
    return JSON.stringify(m)
  })
  assert.deepEqual(kinds, ['meta', 'status:streaming', 'url', 'viewport', 'frame'])
  assert.equal(late.meta.status, 'streaming')
  assert.equal(late.meta.seq >= a.frames[4].seq, true, 'meta.seq is the newest seq given out')
  assert.ok(late.frames[0].image.equals(Buffer.from(sent[4], 'base64')), 'the newest frame')
  assert.equal(late.frames[0].seq, a.frames[4].seq, 'the same frame has the same seq for every viewer')
  assert.notEqual(late.viewerId, a.viewerId)

  // threadId scopes the channel and is reported.
  const threaded = await streaming(srv, 'meta', '?threadId=t-1')
  assert.equal(threaded.meta.agentId, 'meta')
  assert.equal(threaded.meta.threadId, 't-1')
  toolset('meta', 't-1').emitFrame(77)
  await threaded.waitFrames(1)
  assert.equal(frameSeq(threaded.frames[0].image), 77)

  await Promise.all([a.close(), compat.close(), late.close(), threaded.close()])
})

// ---- agent events ---------------------------------------------------------------------------

test('events: publishEvent reaches only the extended viewers of that channel, in order, with rising seqs from the one counter', async (t) => {
  const { srv, toolset } = await setup(t)
  const a = await streaming(srv, 'ev')
  const b = await extended(srv, 'ev')
  const compat = new Viewer(srv.url('ev'))
  await compat.opened
  await compat.untilStreaming()
  const other = await streaming(srv, 'ev-other')

  assert.equal(srv.registry.publishEvent('nobody-watches', { type: 'tool_start' }), false, 'no channel: false')
  assert.equal(srv.registry.publishEvent('ev', { type: 'tool_start' }, 'no-such-thread'), false, 'no such thread channel: false')

  const published = [
    { type: 'tool_start', toolCallId: 'c1', toolName: 'browser_click', args: { selector: '#go', n: 1 } },
    { type: 'tool_result', toolCallId: 'c1', result: { ok: true, list: [1, 'two', null] } },
    { type: 'text_complete', messageId: 'm1', text: 'done clicking' },
    { type: 'custom', nested: { deep: { value: 'é ✓' } } },
    { type: 'complete' },
  ]
  assert.equal(srv.registry.publishEvent('ev', published[0]), true)
  assert.equal(srv.registry.publishEvent('ev', published[1]), true)
  // A frame between events takes its seq from the same counter.
  toolset('ev').emitFrame(1)
  await a.waitFrames(1)
  for (const event of published.slice(2)) assert.equal(srv.registry.publishEvent('ev', event), true)

  for (const viewer of [a, b]) {
    await waitFor(() => viewer.events().length === published.length, { what: 'every event' })
    const events = viewer.events()
    assert.deepEqual(events.map((m) => m.event), published, 'events as published, in order')
    for (const m of events) {
      assert.equal(m.type, 'event')
      assert.ok(Number.isSafeInteger(m.seq))
      assert.ok(m.seq > viewer.meta.seq, 'events after the connect have newer seqs')
    }
    assertRising(events.map((m) => m.seq), 'event seqs')
  }
  assert.deepEqual(a.events().map((m) => m.seq), b.events().map((m) => m.seq), 'one seq per event for every viewer')
  const frameSeqNumber = a.frames[0].seq
  assert.ok(a.events()[1].seq < frameSeqNumber && frameSeqNumber < a.events()[2].seq, 'frame and event seqs interleave from one counter')

  // Negative checks: give any stray message time to arrive.
  await sleep(200)
  assert.equal(compat.json.some((m) => m.type === 'event'), false, 'compat viewers get no events')
  assert.equal(compat.messages.some((m) => m.includes('tool_start')), false)
  assert.equal(other.events().length, 0, "another agent's viewer gets none")
  await Promise.all([a.close(), b.close(), compat.close(), other.close()])
})

test('events: 1000 text deltas over ~200 ms are merged into a few, with tool events kept in place', async (t) => {
  const { srv } = await setup(t)
  const a = await streaming(srv, 'deltas')
  const compat = new Viewer(srv.url('deltas'))
  await compat.opened

  const pieces = Array.from({ length: 1000 }, (_, i) => `d${i};`)
  for (let tick = 0; tick < 20; tick++) {
    for (let i = tick * 50; i < (tick + 1) * 50; i++) {
      if (i === 500) srv.registry.publishEvent('deltas', { type: 'tool_start', toolCallId: 'mid', toolName: 'browser_type' })
      assert.equal(srv.registry.publishEvent('deltas', { type: 'text_delta', messageId: 'm1', text: pieces[i] }), true)
    }
    await sleep(10)
  }
  srv.registry.publishEvent('deltas', { type: 'tool_result', toolCallId: 'mid', result: 'typed' })

  await waitFor(() => a.events().some((m) => m.event.type === 'tool_result'), { what: 'the closing tool_result' })
  const events = a.events()
  const deltas = events.filter((m) => m.event.type === 'text_delta')
  t.diagnostic(`1000 deltas arrived as ${deltas.length} messages`)
  assert.ok(deltas.length > 1, `deltas are not held until the end (${deltas.length} message)`)
  assert.ok(deltas.length <= 15, `deltas are batched: ${deltas.length} text_delta messages`)
  for (const m of deltas) {
    assert.deepEqual(Object.keys(m.event).sort(), ['messageId', 'text', 'type'], 'a merged delta keeps the other fields')
    assert.equal(m.event.messageId, 'm1')
  }
  assert.equal(deltas.map((m) => m.event.text).join(''), pieces.join(''), 'the merged text is the input text')

  const types = events.map((m) => m.event.type)
  assert.equal(types.filter((x) => x === 'tool_start').length, 1)
  assert.equal(types[types.length - 1], 'tool_result', 'tool_result after every delta')
  const startAt = types.indexOf('tool_start')
  const textBefore = events.slice(0, startAt).filter((m) => m.event.type === 'text_delta').map((m) => m.event.text).join('')
  assert.equal(textBefore, pieces.slice(0, 500).join(''), 'the text before tool_start is exactly the deltas published before it')
  assertRising(events.map((m) => m.seq), 'event seqs')

  await sleep(100)
  assert.equal(compat.json.some((m) => m.type === 'event'), false, 'compat viewers get no events')
  await Promise.all([a.close(), compat.close()])
})

test('events: deltas with other fields start a new batch; the "delta" field is merged too', async (t) => {
  const { srv } = await setup(t)
  const a = await streaming(srv, 'delta-fields')
  const publish = (event) => assert.equal(srv.registry.publishEvent('delta-fields', event), true)
  publish({ type: 'text_delta', messageId: 'm1', delta: 'Hel' })
  publish({ type: 'text_delta', messageId: 'm1', delta: 'lo' })
  publish({ type: 'text_delta', messageId: 'm2', delta: 'Wor' })
  publish({ type: 'text_delta', messageId: 'm2', delta: 'ld' })
  publish({ type: 'text_complete', messageId: 'm2' })
  await waitFor(() => a.events().length >= 3, { what: 'three events' })
  await sleep(100)
  assert.deepEqual(
    a.events().map((m) => m.event),
    [
      { type: 'text_delta', messageId: 'm1', delta: 'Hello' },
      { type: 'text_delta', messageId: 'm2', delta: 'World' },
      { type: 'text_complete', messageId: 'm2' },
    ],
  )
  await a.close()
})

// ---- resume ----------------------------------------------------------------------------------

test('resume: a reconnecting viewer gets exactly the events it missed, then resumed, then a frame; lastSeq null replays the ring', async (t) => {
  const { srv, toolset } = await setup(t)
  const keeper = await streaming(srv, 'res') // keeps the channel (and its ring) alive
  toolset('res').emitFrame(1)
  await keeper.waitFrames(1)
  const publish = (n) => assert.equal(srv.registry.publishEvent('res', { type: 'step', n }), true)

  const a = await extended(srv, 'res')
  for (let n = 1; n <= 3; n++) publish(n)
  await waitFor(() => a.events().length === 3, { what: 'events 1..3 on A' })
  const lastSeen = a.events()[2].seq
  await a.close()
  await waitFor(() => srv.registry.stats().channels.find((c) => c.key === 'res')?.viewers.length === 1, { what: 'A gone' })

  for (let n = 4; n <= 6; n++) publish(n)
  await waitFor(() => keeper.events().length === 6, { what: 'events 4..6 on the keeper' })
  const keeperSeqs = keeper.events().map((m) => m.seq)
  assert.equal(keeper.events()[2].seq, lastSeen)

  const again = await extended(srv, 'res')
  await again.waitFrames(1) // the newest frame of the connect
  assert.equal(again.events().length, 0, 'without a resume, no events are replayed')
  const mark = again.log.length
  again.send({ type: 'resume', lastSeq: lastSeen })
  await again.waitJson((m) => m.type === 'resumed', { what: 'resumed' })
  const resumedIndex = () => again.log.slice(mark).findIndex((e) => e.json?.type === 'resumed')
  await waitFor(() => again.log.slice(mark + resumedIndex() + 1).some((e) => e.frame), { what: 'a frame after resumed' })
  const after = again.log.slice(mark)
  const resumedAt = resumedIndex()
  const replayed = after.slice(0, resumedAt)
  assert.ok(replayed.every((e) => e.json?.type === 'event'), 'only events before resumed')
  assert.deepEqual(replayed.map((e) => e.json.event), [{ type: 'step', n: 4 }, { type: 'step', n: 5 }, { type: 'step', n: 6 }])
  assert.deepEqual(replayed.map((e) => e.json.seq), keeperSeqs.slice(3), 'the same seqs as when they were published')
  assertFields(after[resumedAt].json, { type: 'resumed', lastSeq: lastSeen, replayed: 3 }, 'resumed')
  assert.ok(after[resumedAt + 1]?.frame, 'the newest frame right after resumed')
  assert.equal(frameSeq(after[resumedAt + 1].frame.image), 1)

  // Live events continue once, without duplicates.
  publish(7)
  await waitFor(() => again.events().length === 4, { what: 'event 7 live' })
  await sleep(50)
  assert.deepEqual(again.events().map((m) => m.event.n), [4, 5, 6, 7])

  // Resuming from the newest seq replays nothing.
  const upToDate = await extended(srv, 'res')
  upToDate.send({ type: 'resume', lastSeq: again.events()[3].seq })
  const nothing = await upToDate.waitJson((m) => m.type === 'resumed', { what: 'resumed with nothing' })
  assert.equal(nothing.replayed, 0)
  assert.equal(upToDate.events().length, 0)

  // lastSeq null: the whole ring.
  const fresh = await extended(srv, 'res')
  await fresh.waitFrames(1)
  fresh.send({ type: 'resume', lastSeq: null })
  const done = await fresh.waitJson((m) => m.type === 'resumed', { what: 'resumed after a full replay' })
  assert.deepEqual(fresh.events().map((m) => m.event.n), [1, 2, 3, 4, 5, 6, 7])
  assert.deepEqual(fresh.events().map((m) => m.seq), keeper.events().map((m) => m.seq))
  assert.equal(done.replayed, 7)
  assert.equal(fresh.errors().length, 0)
  await Promise.all([keeper.close(), again.close(), upToDate.close(), fresh.close()])
})

test('resume: evicted events, a seq from the future or from an earlier process answer stale with oldestSeq and replay the ring', async (t) => {
  const { srv, toolset } = await setup(t, { resumeMaxEvents: 5 })
  const keeper = await streaming(srv, 'stale')
  toolset('stale').emitFrame(1)
  const publish = (n) => assert.equal(srv.registry.publishEvent('stale', { type: 'step', n }), true)

  const a = await extended(srv, 'stale')
  publish(1)
  await waitFor(() => a.events().length === 1, { what: 'event 1 on A' })
  const lastSeen = a.events()[0].seq
  await a.close()
  await waitFor(() => srv.registry.stats().channels.find((c) => c.key === 'stale')?.viewers.length === 1, { what: 'A gone' })
  // One at a time, so that the live keeper never falls behind the 5-event ring.
  for (let n = 2; n <= 21; n++) {
    publish(n)
    await waitFor(() => keeper.events().length === n, { what: `event ${n} on the keeper` })
  }
  assert.equal(keeper.errors().length, 0, 'the keeper kept up')
  const held = keeper.events().slice(-5)

  const again = await extended(srv, 'stale')
  again.send({ type: 'resume', lastSeq: lastSeen })
  const stale = await again.waitJson((m) => m.error === 'stale', { what: 'stale' })
  assert.equal(typeof stale.message, 'string')
  assert.equal(stale.oldestSeq, held[0].seq, 'oldestSeq is the oldest event the ring holds')
  await waitFor(() => again.events().length === 5, { what: 'the ring replayed after stale' })
  assert.deepEqual(again.events().map((m) => m.event.n), [17, 18, 19, 20, 21])
  assert.deepEqual(again.events().map((m) => m.seq), held.map((m) => m.seq))
  const staleAt = again.json.indexOf(stale)
  assert.ok(again.json.findIndex((m) => m.type === 'event') > staleAt, 'stale comes before the replay')
  assert.equal(again.ws.readyState, 1, 'stale keeps the connection')

  // A lastSeq above the newest seq (another process or channel life): stale.
  const future = await extended(srv, 'stale')
  future.send({ type: 'resume', lastSeq: future.meta.seq + 1_000_000_000 })
  const fromFuture = await future.waitJson((m) => m.error === 'stale', { what: 'stale for a future seq' })
  assert.equal(fromFuture.oldestSeq, held[0].seq)

  // A lastSeq from before this process (the counter starts at the process start in µs): stale.
  const past = await extended(srv, 'stale')
  past.send({ type: 'resume', lastSeq: 1 })
  const fromPast = await past.waitJson((m) => m.error === 'stale', { what: 'stale for a seq of an earlier process' })
  assert.equal(fromPast.oldestSeq, held[0].seq)
  await waitFor(() => past.events().length === 5, { what: 'the ring replayed' })

  await Promise.all([keeper.close(), again.close(), future.close(), past.close()])
})

test('a live viewer that falls behind the ring gets stale and continues with the oldest event still held', async (t) => {
  const { srv } = await setup(t, { resumeMaxEvents: 5 })
  const a = await streaming(srv, 'behind')
  // A synchronous burst four times the ring: whether the viewer falls behind depends on the
  // machine, so only the rules are checked: events in order, and every gap announced by a
  // stale whose oldestSeq is the next event delivered.
  for (let n = 1; n <= 20; n++) assert.equal(srv.registry.publishEvent('behind', { type: 'step', n }), true)
  await waitFor(() => a.events().some((m) => m.event.n === 20), { what: 'the last event' })
  await sleep(100)
  const received = a.json.filter((m) => m.type === 'event' || m.error)
  t.diagnostic(received.map((m) => (m.error ? m.error : m.event.n)).join(' '))
  let expected = 1
  for (let i = 0; i < received.length; i++) {
    const m = received[i]
    if (m.error) {
      assert.equal(m.error, 'stale', 'only stale errors')
      const next = received[i + 1]
      assert.ok(next?.type === 'event', 'an event follows stale')
      assert.equal(m.oldestSeq, next.seq, 'oldestSeq is the next event delivered')
      assert.ok(next.event.n > expected, 'stale announces a gap')
      expected = next.event.n
      continue
    }
    assert.equal(m.event.n, expected, `event ${expected} next, without an announced gap`)
    expected += 1
  }
  assert.equal(expected, 21, 'every event up to the last')
  assertRising(a.events().map((m) => m.seq), 'event seqs')
  assert.equal(a.ws.readyState, 1)
  await a.close()
})

// ---- snapshots --------------------------------------------------------------------------------

test('snapshot-request: snapshot {seq} then that frame, even when the viewer has it; before any frame, the next frame answers', async (t) => {
  const { srv, toolset } = await setup(t)
  const a = await streaming(srv, 'snap')
  const data = toolset('snap').emitFrame(5)
  await a.waitFrames(1)
  const had = a.frames[0]

  const mark = a.log.length
  a.send({ type: 'snapshot-request' })
  const snapshot = await a.waitJson((m) => m.type === 'snapshot', { what: 'snapshot' })
  await waitFor(() => a.frames.length === 2, { what: 'the snapshot frame' })
  const after = a.log.slice(mark)
  assert.deepEqual(after[0].json, { type: 'snapshot', seq: had.seq })
  assert.ok(after[1].frame, 'the frame right after the snapshot message')
  assert.equal(after[1].frame.seq, snapshot.seq)
  assert.ok(after[1].frame.image.equals(Buffer.from(data, 'base64')))

  // Twice in a row: answered twice.
  a.send({ type: 'snapshot-request' })
  await waitFor(() => a.frames.length === 3, { what: 'the second snapshot frame' })
  assert.equal(a.frames[2].seq, had.seq)

  // A channel without any frame yet: the next frame answers.
  const early = await streaming(srv, 'snap-early')
  early.send({ type: 'snapshot-request' })
  await sleep(100)
  toolset('snap-early').emitFrame(9)
  const late = await early.waitJson((m) => m.type === 'snapshot', { what: 'snapshot after the next frame' })
  await waitFor(() => early.frames.some((f) => f.seq === late.seq), { what: 'the snapshot frame' })
  const snapAt = early.log.findIndex((e) => e.json === late)
  assert.equal(early.log[snapAt + 1]?.frame?.seq, late.seq, 'the frame follows the snapshot message')
  assert.equal(frameSeq(early.log[snapAt + 1].frame.image), 9)

  await Promise.all([a.close(), early.close()])
})

test('snapshot-request without any frame for 3 s: snapshot_unavailable, connection kept', async (t) => {
  const { srv } = await setup(t)
  const a = await streaming(srv, 'snap-none')
  a.send({ type: 'snapshot-request' })
  const error = await a.waitJson((m) => m.error === 'snapshot_unavailable', { what: 'snapshot_unavailable', timeout: 8000 })
  assert.equal(typeof error, 'object')
  await a.barrier()
  assert.equal(a.ws.readyState, 1)
  await a.close()
})

// ---- pacing ---------------------------------------------------------------------------------------

test('config maxFps caps one viewer while another gets every frame', async (t) => {
  const { srv, toolset } = await setup(t)
  const slow = await streaming(srv, 'fps', '', { keepImages: false })
  const fast = await extended(srv, 'fps', '', { keepImages: false })
  slow.send({ type: 'config', maxFps: 5 })
  await slow.barrier()
  const slowStart = slow.frames.length
  const fastStart = fast.frames.length

  const started = Date.now()
  let emitted = 0
  while (Date.now() - started < 1500) {
    toolset('fps').emitFrame(++emitted)
    await sleep(20)
  }
  const elapsed = Date.now() - started
  await sleep(500) // the last waiting frame of the capped viewer
  const slowCount = slow.frames.length - slowStart
  const fastCount = fast.frames.length - fastStart
  t.diagnostic(`${emitted} frames in ${elapsed} ms: maxFps 5 viewer ${slowCount}, unlimited viewer ${fastCount}`)
  assert.ok(slowCount >= 2, `the capped viewer still gets frames (${slowCount})`)
  assert.ok(slowCount <= Math.max(10, Math.ceil(((elapsed + 500) / 1000) * 5) + 3), `maxFps 5: ${slowCount} frames in ${elapsed} ms`)
  assert.ok(fastCount >= 2 * slowCount, `the unlimited viewer gets many more (${fastCount} vs ${slowCount})`)
  assertRising(slow.frames.map((f) => f.seq), 'capped viewer seqs')
  // The newest frame wins: the capped viewer ends on the last frame.
  assert.equal(slow.lastFrame().seq, fast.lastFrame().seq, 'the capped viewer ends with the newest frame')
  await Promise.all([slow.close(), fast.close()])
})

test('config ack: one frame in flight until its ack; ack false resumes the flow', async (t) => {
  const { srv, toolset } = await setup(t)
  const a = await streaming(srv, 'ack')
  const other = await extended(srv, 'ack', '', { keepImages: false })
  let n = 0
  toolset('ack').emitFrame(++n)
  await a.waitFrames(1)
  a.send({ type: 'config', ack: true })
  await a.barrier()

  const emitFor = async (ms) => {
    const until = Date.now() + ms
    while (Date.now() < until) {
      toolset('ack').emitFrame(++n)
      await sleep(20)
    }
  }
  let base = a.frames.length
  const otherBase = other.frames.length
  await emitFor(600)
  await sleep(100)
  assert.ok(a.frames.length - base <= 1, `without acks at most one more frame (got ${a.frames.length - base})`)
  assert.ok(other.frames.length - otherBase >= 5, 'frames kept flowing to the other viewer')

  for (let round = 0; round < 3; round++) {
    const count = a.frames.length
    a.send({ type: 'ack', seq: a.lastFrame().seq })
    toolset('ack').emitFrame(++n)
    await waitFor(() => a.frames.length > count, { what: `a frame after ack ${round}` })
    base = a.frames.length
    await emitFor(300)
    await sleep(100)
    assert.ok(a.frames.length - base <= 1, `round ${round}: at most one frame without its ack (got ${a.frames.length - base})`)
  }
  // Newest frame wins: what arrives after an ack is the newest emitted so far.
  const count = a.frames.length
  a.send({ type: 'ack', seq: a.lastFrame().seq })
  await waitFor(() => a.frames.length > count, { what: 'the waiting frame after an ack' })
  assert.equal(frameSeq(a.lastFrame().image), n, 'the frame sent after the ack is the newest')

  a.send({ type: 'config', ack: false })
  await a.barrier()
  const flowing = a.frames.length
  for (let i = 0; i < 5; i++) {
    toolset('ack').emitFrame(++n)
    await waitFor(() => a.frames.length >= flowing + i + 1, { what: `frame ${i} with ack pacing off` })
  }
  assertRising(a.frames.map((f) => f.seq), 'seqs')
  await Promise.all([a.close(), other.close()])
})

// ---- control -----------------------------------------------------------------------------------

test('control: request, busy, refusal of the other viewer, release, hand-over and the holder leaving', async (t) => {
  const changes = []
  const { srv, toolset } = await setup(t, {
    onControlChange: (agentId, controller, info) => changes.push({ agentId, controller, info }),
  })
  const a = await streaming(srv, 'ctl')
  const b = await extended(srv, 'ctl')
  const compat = new Viewer(srv.url('ctl'))
  await compat.opened
  const ts = toolset('ctl')
  ts.emitFrame(1, { width: 320, height: 240 }) // frame pixels = CSS pixels
  await Promise.all([a.waitFrames(1), b.waitFrames(1)])

  // A takes control: everyone is told, `you` only for A.
  a.send({ type: 'control-request' })
  const forA = await a.waitJson((m) => m.type === 'control', { what: 'control on A' })
  const forB = await b.waitJson((m) => m.type === 'control', { what: 'control on B' })
  assert.deepEqual(forA, { type: 'control', controller: a.viewerId, you: true })
  assert.deepEqual(forB, { type: 'control', controller: a.viewerId, you: false })
  await waitFor(() => changes.length === 1, { what: 'onControlChange' })
  assert.equal(changes[0].agentId, 'ctl')
  assert.equal(changes[0].controller, a.viewerId)
  assert.equal(changes[0].info.key, 'ctl')
  assert.equal(changes[0].info.threadId ?? null, null)
  assert.equal(compat.json.some((m) => m.type === 'control'), false, 'compat viewers are not told')

  // B may not drive.
  b.send({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 11, y: 12, button: 'left', clickCount: 1 })
  const refused = await b.waitJson((m) => m.error === 'not_controller', { what: 'not_controller for B' })
  assert.equal(typeof refused.message, 'string')
  b.send({ type: 'mouse', eventType: 'mousePressed', x: 13, y: 12, button: 'left', clickCount: 1 })
  b.send({ type: 'relaunch' })
  await waitFor(() => b.errors('not_controller').length === 3, { what: 'not_controller for compat-style mouse and relaunch' })
  compat.send({ type: 'mouse', eventType: 'mousePressed', x: 15, y: 12, button: 'left', clickCount: 1 })

  // A drives: frame-pixel mouse, key, text and compat-style mouse reach the toolset.
  a.send({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 21, y: 22, button: 'left', clickCount: 1 })
  a.send({ type: 'input', kind: 'mouse', eventType: 'mouseReleased', x: 21, y: 22, button: 'left', clickCount: 1 })
  a.send({ type: 'input', kind: 'key', eventType: 'keyDown', key: 'a', code: 'KeyA' })
  a.send({ type: 'input', kind: 'key', eventType: 'keyUp', key: 'a', code: 'KeyA' })
  a.send({ type: 'input', kind: 'text', text: 'héllo' })
  a.send({ type: 'mouse', eventType: 'mouseMoved', x: 31, y: 32 })
  await waitFor(() => ts.mouse.length >= 3 && ts.keys.length >= 3, { what: "A's input relayed" })
  await waitFor(() => srv.registry.stats().channels.find((c) => c.key === 'ctl').inputsRefused >= 1, { what: 'the compat input refused and counted' })
  await sleep(100)
  assert.equal(ts.mouse.length, 3, 'only A\'s mouse events were relayed')
  assertFields(ts.mouse[0], { type: 'mousePressed', x: 21, y: 22, button: 'left', clickCount: 1 }, 'press')
  assertFields(ts.mouse[1], { type: 'mouseReleased', x: 21, y: 22, button: 'left' }, 'release')
  assertFields(ts.mouse[2], { type: 'mouseMoved', x: 31, y: 32 }, 'compat-style move')
  assert.equal(ts.mouse.some((e) => e.x === 11 || e.x === 13 || e.x === 15), false, 'no input of B or of the compat viewer')
  assertFields(ts.keys[0], { type: 'keyDown', key: 'a', code: 'KeyA' }, 'keyDown')
  assertFields(ts.keys[1], { type: 'keyUp', key: 'a', code: 'KeyA' }, 'keyUp')
  assert.deepEqual(ts.keys[2], { type: 'char', text: 'héllo' }, 'kind text reaches a toolset as char')
  assert.equal(a.errors().length, 0)
  assert.equal(ts.starts, 1, "B's relaunch was refused")

  // B asks while A holds it: busy. B releases what it does not hold: not_controller.
  b.send({ type: 'control-request' })
  const busy = await b.waitJson((m) => m.error === 'control_busy', { what: 'control_busy' })
  assert.equal(busy.controller, a.viewerId)
  b.send({ type: 'control-release' })
  await waitFor(() => b.errors('not_controller').length === 4, { what: 'not_controller for a release' })
  // Idempotent for the holder.
  a.send({ type: 'control-request' })
  await a.barrier()
  assert.equal(a.errors().filter((m) => m.error !== 'bad_message').length, 0, 'a second request by the holder is no error')

  // A releases: everyone is told; B may now take it.
  let fromA = a.json.length
  const fromB = b.json.length
  a.send({ type: 'control-release' })
  assert.deepEqual(await a.waitJson((m) => m.type === 'control', { from: fromA, what: 'release on A' }), { type: 'control', controller: null, you: false })
  assert.deepEqual(await b.waitJson((m) => m.type === 'control', { from: fromB, what: 'release on B' }), { type: 'control', controller: null, you: false })
  await waitFor(() => changes.at(-1).controller === null, { what: 'onControlChange(null)' })

  // Nobody holds control: compat input flows as before.
  compat.send({ type: 'mouse', eventType: 'mouseMoved', x: 44, y: 45 })
  await waitFor(() => ts.mouse.some((e) => e.x === 44), { what: 'compat input relayed while nobody controls' })

  b.send({ type: 'control-request' })
  const isB = (m) => m.type === 'control' && m.controller === b.viewerId
  assert.deepEqual(await b.waitJson(isB, { what: 'B in control' }), { type: 'control', controller: b.viewerId, you: true })
  assert.deepEqual(await a.waitJson(isB, { what: 'B in control, told to A' }), { type: 'control', controller: b.viewerId, you: false })
  b.send({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 51, y: 52, button: 'left', clickCount: 1 })
  await waitFor(() => ts.mouse.some((e) => e.x === 51), { what: "B's input relayed" })
  a.send({ type: 'input', kind: 'key', eventType: 'keyDown', key: 'z' })
  await a.waitJson((m) => m.error === 'not_controller', { what: 'not_controller for A now' })

  // The holder leaves: control is null again, for everyone and for the hook.
  fromA = a.json.length
  const changesBefore = changes.length
  await b.close()
  assert.deepEqual(await a.waitJson((m) => m.type === 'control', { from: fromA, what: 'control freed by leaving' }), { type: 'control', controller: null, you: false })
  await waitFor(() => changes.length > changesBefore && changes.at(-1).controller === null, { what: 'onControlChange(null) on leave' })
  assert.deepEqual(changes.map((c) => c.controller), [a.viewerId, null, b.viewerId, null])
  const latecomer = await extended(srv, 'ctl')
  assert.equal(latecomer.meta.controller, null)
  await takeControl(a)
  const third = await extended(srv, 'ctl')
  assert.equal(third.meta.controller, a.viewerId, 'session-meta names the holder')
  await Promise.all([a.close(), compat.close(), latecomer.close(), third.close()])
})

test('authorizeControl: a refused viewer is view-only (canControl false, control_denied), others may control', async (t) => {
  const decisions = []
  const { srv, toolset } = await setup(t, {
    authorizeControl: async (c) => {
      const allowed = c.req.query('role') !== 'watcher' && c.req.header('x-view-only') !== '1'
      decisions.push(allowed)
      return allowed
    },
  })
  const watcher = await streaming(srv, 'authz', '?role=watcher')
  const byHeader = await extended(srv, 'authz', '', { headers: { 'x-view-only': '1' } })
  const driver = await extended(srv, 'authz')
  assert.equal(watcher.meta.canControl, false)
  assert.equal(byHeader.meta.canControl, false)
  assert.equal(driver.meta.canControl, true)
  assert.deepEqual(decisions, [false, false, true], 'decided once per viewer, at admission')
  const ts = toolset('authz')
  ts.emitFrame(1, { width: 320, height: 240 })
  await watcher.waitFrames(1)

  watcher.send({ type: 'control-request' })
  const denied = await watcher.waitJson((m) => m.error === 'control_denied', { what: 'control_denied' })
  assert.equal(typeof denied.message, 'string')
  watcher.send({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 7, y: 7, button: 'left', clickCount: 1 })
  await waitFor(() => watcher.errors('control_denied').length === 2, { what: 'control_denied for input' })
  byHeader.send({ type: 'control-request' })
  await byHeader.waitJson((m) => m.error === 'control_denied', { what: 'control_denied by header' })

  // A view-only compat viewer: its input is dropped.
  const compatWatcher = new Viewer(srv.url('authz', '?role=watcher'))
  await compatWatcher.opened
  compatWatcher.send({ type: 'mouse', eventType: 'mousePressed', x: 8, y: 8, button: 'left', clickCount: 1 })

  await takeControl(driver)
  driver.send({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 9, y: 9, button: 'left', clickCount: 1 })
  await waitFor(() => ts.mouse.some((e) => e.x === 9), { what: "the driver's input" })
  await sleep(150)
  assert.equal(ts.mouse.some((e) => e.x === 7 || e.x === 8), false, 'no input from view-only viewers')
  assert.deepEqual(await watcher.waitJson((m) => m.type === 'control', { what: 'view-only viewers are told about control too' }), {
    type: 'control',
    controller: driver.viewerId,
    you: false,
  })
  await Promise.all([watcher.close(), byHeader.close(), driver.close(), compatWatcher.close()])
})

test('implicitControl: the first input of a viewer allowed to control takes control', async (t) => {
  const { srv, toolset } = await setup(t, {
    implicitControl: true,
    authorizeControl: (c) => c.req.query('role') !== 'watcher',
  })
  const a = await streaming(srv, 'implicit')
  const b = await extended(srv, 'implicit')
  const watcher = await extended(srv, 'implicit', '?role=watcher')
  assert.equal(a.meta.implicitControl, true)
  const ts = toolset('implicit')
  ts.emitFrame(1, { width: 320, height: 240 })
  await Promise.all([a.waitFrames(1), b.waitFrames(1)])

  watcher.send({ type: 'input', kind: 'key', eventType: 'keyDown', key: 'w' })
  await watcher.waitJson((m) => m.error === 'control_denied', { what: 'control_denied for a view-only viewer' })

  a.send({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 3, y: 4, button: 'left', clickCount: 1 })
  assert.deepEqual(await a.waitJson((m) => m.type === 'control', { what: 'implicit control on A' }), { type: 'control', controller: a.viewerId, you: true })
  assert.deepEqual(await b.waitJson((m) => m.type === 'control', { what: 'implicit control told to B' }), { type: 'control', controller: a.viewerId, you: false })
  await waitFor(() => ts.mouse.some((e) => e.x === 3 && e.y === 4), { what: 'the taking input is relayed' })

  b.send({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 5, y: 6, button: 'left', clickCount: 1 })
  await b.waitJson((m) => m.error === 'not_controller', { what: 'not_controller for B' })
  await sleep(100)
  assert.equal(ts.mouse.some((e) => e.x === 5), false)
  assert.equal(ts.keys.length, 0)
  await Promise.all([a.close(), b.close(), watcher.close()])
})

// ---- coordinate mapping ---------------------------------------------------------------------

test('input coordinates in frame pixels are mapped to the page through the frame the viewer saw (frameSeq)', async (t) => {
  const { srv, toolset } = await setup(t)
  const a = await streaming(srv, 'map')
  const ts = toolset('map')
  ts.emitFrame(1, { width: 1280, height: 960 })
  await a.waitFrames(1)
  const first = a.frames[0]
  assert.equal(first.imageWidth, 320, 'the fixture JPEG is 320 wide')
  assert.equal(first.imageHeight, 240, 'the fixture JPEG is 240 high')
  assert.deepEqual([first.deviceWidth, first.deviceHeight], [1280, 960])
  await takeControl(a)

  a.send({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 160, y: 120, button: 'left', clickCount: 1 })
  await waitFor(() => ts.mouse.length === 1, { what: 'mapped press' })
  assertFields(ts.mouse[0], { type: 'mousePressed', x: 640, y: 480, button: 'left', clickCount: 1 }, 'x·W/w, y·H/h')

  // Outside the image: clamped to the viewport.
  a.send({ type: 'input', kind: 'mouse', eventType: 'mouseMoved', x: 5000, y: 5000 })
  await waitFor(() => ts.mouse.length === 2, { what: 'clamped move' })
  assert.ok(ts.mouse[1].x <= 1280 && ts.mouse[1].y <= 960 && ts.mouse[1].x >= 1270 && ts.mouse[1].y >= 950, `clamped: ${JSON.stringify(ts.mouse[1])}`)

  // The page changes size; the viewer's last frame now maps 320x240 → 640x480.
  ts.emitFrame(2, { width: 640, height: 480 })
  await a.waitFrames(2)
  a.send({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 160, y: 120, button: 'left', clickCount: 1 })
  await waitFor(() => ts.mouse.length === 3, { what: 'press on the new geometry' })
  assertFields(ts.mouse[2], { x: 320, y: 240 }, 'mapped through the last frame sent')
  // With frameSeq of the older frame, its geometry is used.
  a.send({ type: 'input', kind: 'mouse', eventType: 'mouseReleased', x: 160, y: 120, button: 'left', clickCount: 1, frameSeq: first.seq })
  await waitFor(() => ts.mouse.length === 4, { what: 'release mapped through frameSeq' })
  assertFields(ts.mouse[3], { type: 'mouseReleased', x: 640, y: 480 }, 'mapped through frameSeq')
  // The compat-style mouse message is in CSS pixels: no mapping.
  a.send({ type: 'mouse', eventType: 'mouseMoved', x: 100, y: 50 })
  await waitFor(() => ts.mouse.length === 5, { what: 'compat-style move' })
  assertFields(ts.mouse[4], { type: 'mouseMoved', x: 100, y: 50 }, 'viewport pixels as they are')
  assert.equal(a.errors().length, 0)
  await a.close()
})

// ---- rate limit -------------------------------------------------------------------------------

test('rate limit: a flood of input is throttled with rare rate_limited answers; the connection and the stream go on', async (t) => {
  const { srv, toolset } = await setup(t, { maxInputsPerSecond: 20 })
  const a = await streaming(srv, 'rate')
  const watcher = await extended(srv, 'rate', '', { keepImages: false })
  const ts = toolset('rate')
  ts.emitFrame(1)
  await a.waitFrames(1)
  await takeControl(a)

  for (let i = 0; i < 200; i++) a.send({ type: 'input', kind: 'key', eventType: 'keyDown', key: 'k', code: 'KeyK' })
  await a.waitJson((m) => m.error === 'rate_limited', { what: 'rate_limited' })
  await sleep(400)
  const limited = a.errors('rate_limited').length
  t.diagnostic(`200 keys: ${ts.keys.length} relayed, ${limited} rate_limited answers`)
  assert.ok(limited >= 1 && limited <= 5, `rate_limited at most about once per second (${limited})`)
  assert.ok(ts.keys.length >= 1 && ts.keys.length <= 40, `the bucket lets about 20 through (${ts.keys.length})`)
  assert.equal(a.ws.readyState, 1, 'still open')

  // Frames keep flowing to the other viewer.
  const seen = watcher.frames.length
  for (let n = 2; n <= 6; n++) {
    ts.emitFrame(n)
    await waitFor(() => watcher.frames.length >= seen + n - 1, { what: `frame ${n} on the other viewer` })
  }

  // Mouse moves over the limit are dropped silently.
  await sleep(1100) // the bucket refills and the once-per-second answer is due again
  const before = a.errors('rate_limited').length
  for (let i = 0; i < 100; i++) a.send({ type: 'input', kind: 'mouse', eventType: 'mouseMoved', x: i, y: 1 })
  await sleep(1100)
  await a.barrier()
  assert.equal(a.errors('rate_limited').length, before, 'moves over the limit get no answer')

  // After a pause the viewer is served again.
  a.send({ type: 'snapshot-request' })
  await a.waitJson((m) => m.type === 'snapshot', { what: 'snapshot after the flood' })
  await Promise.all([a.close(), watcher.close()])
})

// ---- malformed messages ------------------------------------------------------------------------

test('malformed messages are each answered bad_message and the connection stays open', async (t) => {
  const { srv, toolset } = await setup(t)
  const a = await streaming(srv, 'bad')
  const ts = toolset('bad')
  ts.emitFrame(1, { width: 320, height: 240 })
  await a.waitFrames(1)
  await takeControl(a) // so that input is judged on its fields, not refused for control

  const cases = [
    ['invalid JSON', '{"type":'],
    ['not JSON at all', 'hello'],
    ['an array', '[{"type":"snapshot-request"}]'],
    ['a string', '"snapshot-request"'],
    ['null', 'null'],
    ['no type', { lastSeq: 1 }],
    ['type not a string', { type: 7 }],
    ['unknown type', { type: 'teleport' }],
    ['x as a string', { type: 'input', kind: 'mouse', eventType: 'mousePressed', x: '10', y: 10, button: 'left' }],
    ['negative x', { type: 'input', kind: 'mouse', eventType: 'mouseMoved', x: -1, y: 10 }],
    ['unknown input kind', { type: 'input', kind: 'gamepad' }],
    ['unknown mouse eventType', { type: 'input', kind: 'mouse', eventType: 'mouseTeleported', x: 1, y: 1 }],
    ['clickCount out of range', { type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 1, y: 1, button: 'left', clickCount: 17 }],
    ['unknown button', { type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 1, y: 1, button: 'thumb' }],
    ['empty text', { type: 'input', kind: 'text', text: '' }],
    ['text over 1024 bytes', { type: 'input', kind: 'text', text: 'é'.repeat(513) }],
    ['unknown key eventType', { type: 'input', kind: 'key', eventType: 'keyPress', key: 'a' }],
    ['maxFps -1', { type: 'config', maxFps: -1 }],
    ['maxFps 0', { type: 'config', maxFps: 0 }],
    ['maxFps 241', { type: 'config', maxFps: 241 }],
    ['ack not a boolean', { type: 'config', ack: 'yes' }],
    ['lastSeq as a string', { type: 'resume', lastSeq: 'x' }],
    ['ack seq missing', { type: 'ack' }],
    ['binary message', Buffer.from([1, 2, 3, 4])],
  ]
  for (const [name, message] of cases) {
    const before = a.errors('bad_message').length
    a.send(message)
    await waitFor(() => a.errors('bad_message').length === before + 1, { what: `bad_message for ${name}` })
    const answer = a.errors('bad_message').at(-1)
    assert.equal(typeof answer.message, 'string', `${name}: a message explains it`)
    assert.equal(a.ws.readyState, 1, `${name}: still open`)
  }
  await sleep(100)
  assert.equal(a.errors().length, cases.length, 'one answer per message, nothing else')
  assert.equal(ts.mouse.length + ts.keys.length, 0, 'nothing malformed was relayed')

  a.send({ type: 'snapshot-request' })
  const snapshot = await a.waitJson((m) => m.type === 'snapshot', { what: 'snapshot after the bad messages' })
  assert.equal(snapshot.seq, a.frames[0].seq)
  // Valid optional fields given as null count as absent.
  a.send({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 1, y: 2, button: 'left', clickCount: null, modifiers: null })
  await waitFor(() => ts.mouse.length === 1, { what: 'a valid press with null fields' })
  assert.equal(a.errors().length, cases.length)
  await a.close()
})

// ---- mouse-move coalescing --------------------------------------------------------------------

test('mouse moves coalesce behind a slow toolset; presses and releases all arrive, in order', async (t) => {
  const { srv, toolset } = await setup(t, { maxInputsPerSecond: 100_000 })
  const a = await streaming(srv, 'moves')
  const ts = toolset('moves')
  ts.injectMouseEvent = async function (event) {
    await sleep(5)
    this.mouse.push(event)
  }
  ts.emitFrame(1, { width: 320, height: 240 }) // 1:1 mapping
  await a.waitFrames(1)
  await takeControl(a)

  // Each message carries its send index in its coordinates: moves x = i / 2 (y = 10), presses and
  // releases x = pair, y = 100 / 101.
  const sent = []
  for (let i = 0; i < 500; i++) {
    sent.push({ type: 'input', kind: 'mouse', eventType: 'mouseMoved', x: i / 2, y: 10 })
    if (i % 50 === 25) {
      const pair = i / 50
      sent.push({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: pair, y: 100, button: 'left', clickCount: 1 })
      sent.push({ type: 'input', kind: 'mouse', eventType: 'mouseReleased', x: pair, y: 101, button: 'left', clickCount: 1 })
    }
  }
  sent.push({ type: 'input', kind: 'mouse', eventType: 'mouseMoved', x: 300, y: 200 })
  for (const message of sent) a.send(message)
  const indexOf = new Map(sent.map((m, i) => [`${m.eventType}:${m.x}:${m.y}`, i]))

  await waitFor(() => ts.mouse.some((e) => e.x === 300 && e.y === 200), { what: 'the final move', timeout: 15_000 })
  await sleep(50)
  const clicks = ts.mouse.filter((e) => e.type !== 'mouseMoved')
  const sentClicks = sent.filter((m) => m.eventType !== 'mouseMoved')
  assert.deepEqual(
    clicks.map((e) => [e.type, e.x, e.y]),
    sentClicks.map((m) => [m.eventType, m.x, m.y]),
    'every press and release, in order',
  )
  const order = ts.mouse.map((e) => indexOf.get(`${e.type}:${e.x}:${e.y}`))
  assert.ok(order.every((i) => i !== undefined), 'every relayed event was sent')
  assertRising(order, 'relayed events keep the send order')
  assertFields(ts.mouse.at(-1), { type: 'mouseMoved', x: 300, y: 200 }, 'the last move wins')
  const moves = ts.mouse.length - clicks.length
  const channel = srv.registry.stats().channels.find((c) => c.key === 'moves')
  t.diagnostic(`501 moves sent, ${moves} relayed; movesCoalesced ${channel.movesCoalesced}`)
  assert.ok(moves < 501, `moves coalesced (${moves} of 501 relayed)`)
  if (channel.movesCoalesced !== undefined) assert.ok(channel.movesCoalesced > 0, 'movesCoalesced counted')
  assert.equal(a.errors().length, 0)
  await a.close()
})

// ---- sanity of the test fixture -----------------------------------------------------------------

test('fixture: the base JPEG is 320x240', () => {
  assert.deepEqual(jpegSize(BASE_JPEG), { width: 320, height: 240 })
})

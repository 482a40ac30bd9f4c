'use strict'
// Transports: TLS sockets fall back to a JS-bridged viewer with the same wire; a stalled viewer
// skips frames without slowing the others or growing memory.

const test = require('node:test')
const assert = require('node:assert/strict')
const https = require('node:https')
const { startServer, FakeToolset, Viewer, waitFor, frameSeq, sleep, stalledViewer, settledStatuses, selfSignedCert } = require('./support')

test('a TLS server falls back to a JS-bridged viewer that streams the same wire', async (t) => {
  const toolset = new FakeToolset()
  const srv = await startServer({ getToolset: () => toolset }, { createServer: https.createServer, serverOptions: selfSignedCert() })
  t.after(() => srv.close())
  const viewer = new Viewer(srv.url('tls-agent'), { rejectUnauthorized: false })
  await viewer.opened
  await viewer.untilStreaming('streaming over TLS')
  const sent = []
  for (let seq = 1; seq <= 20; seq++) {
    sent.push(toolset.emitFrame(seq, { size: 30_000 }))
    await waitFor(() => viewer.frames.length === seq, { what: `frame ${seq}` })
  }
  assert.deepEqual(viewer.frames, sent)
  assert.deepEqual(settledStatuses(viewer.statuses()), ['connected', 'streaming'])
  viewer.send({ type: 'keyboard', eventType: 'char', text: 'z' })
  viewer.send('garbage')
  await waitFor(() => toolset.keys.length === 1, { what: 'input over the bridge' })
  const channel = srv.registry.stats().channels[0]
  assert.equal(channel.viewers[0].transport, 'bridged')
  assert.equal(channel.viewers[0].framesSent, 20)
  await waitFor(() => srv.registry.stats().channels[0].malformedMessages === 1, { what: 'malformed counted' })
  // An unknown subprotocol is not echoed, so a client that requires one fails its handshake
  // (RFC 6455) instead of misreading the wire.
  const offering = new Viewer(srv.url('tls-agent'), { rejectUnauthorized: false, protocols: ['chat.v2'] })
  await assert.rejects(offering.opened)
  // The extended mode works over the bridge too: echoed, session-meta, binary frames.
  const extended = new Viewer(srv.url('tls-agent'), { extended: true, rejectUnauthorized: false })
  await extended.opened
  assert.equal(extended.ws.protocol, 'browser-stream.v1')
  await extended.untilMeta()
  await extended.waitFrames(1)
  const data = toolset.emitFrame(21)
  const frame = await waitFor(() => extended.frames.find((f) => f.image.equals(Buffer.from(data, 'base64'))), {
    what: 'binary frame over the bridge',
  })
  assert.equal(frame.kind, 1)
  assert.equal(frame.headerLength, 56)
  assert.equal(srv.registry.stats().channels[0].viewers.find((v) => v.mode === 'extended').transport, 'bridged')
  await extended.close()
  await viewer.close()
  await waitFor(() => toolset.stops === 1, { what: 'stop after the bridged viewer left' })
})


test('a stalled viewer skips frames; healthy viewers get every frame and memory stays bounded', async (t) => {
  const toolset = new FakeToolset()
  const srv = await startServer({ getToolset: () => toolset })
  t.after(() => srv.close())
  const healthy = [new Viewer(srv.url('stall'), { keepFrames: false }), new Viewer(srv.url('stall'), { keepFrames: false })]
  await Promise.all(healthy.map((v) => v.opened))
  const stalled = await Promise.all([stalledViewer(srv.port, 'stall'), stalledViewer(srv.port, 'stall')])
  t.after(() => stalled.forEach((s) => s.destroy()))
  await Promise.all(healthy.map((v) => v.untilStreaming()))
  global.gc?.()
  const rssBefore = process.memoryUsage().rss
  const frames = 400
  const size = 100_000
  for (let seq = 1; seq <= frames; seq++) {
    toolset.emitFrame(seq, { size })
    await waitFor(() => healthy.every((v) => v.frameCount === seq), { what: `frame ${seq} to healthy viewers` })
  }
  const rssAfter = process.memoryUsage().rss
  for (const viewer of healthy) assert.deepEqual(viewer.frameSeqs, Array.from({ length: frames }, (_, i) => i + 1))
  const viewers = srv.registry.stats().channels[0].viewers
  const slow = viewers.filter((v) => v.framesSkipped > 0)
  assert.equal(slow.length, 2, 'both stalled viewers skip frames')
  for (const v of slow) {
    assert.ok(v.framesSent < frames / 2, `stalled viewer was written ${v.framesSent} frames`)
    // Every frame is sent, skipped, or is one of: the one being written, the newest.
    const accounted = v.framesSent + v.framesSkipped
    assert.ok(accounted >= frames - 2 && accounted <= frames, `accounted ${accounted} of ${frames}`)
  }
  // 400 frames of ~133 KB base64 went out (≈53 MB per viewer); a queue per stalled viewer
  // would hold tens of MB each. Latest-frame-wins keeps at most one frame per viewer.
  const growthMb = (rssAfter - rssBefore) / 1e6
  assert.ok(growthMb < 40, `RSS grew ${growthMb.toFixed(1)} MB`)
  console.log(`stalled viewers: sent ${slow.map((v) => v.framesSent)}, skipped ${slow.map((v) => v.framesSkipped)}; RSS growth ${growthMb.toFixed(1)} MB`)
})

test('a viewer that stops answering pings is closed by the heartbeat', async (t) => {
  const toolset = new FakeToolset()
  const srv = await startServer({ getToolset: () => toolset, heartbeatIntervalMs: 100, heartbeatTimeoutMs: 300 })
  t.after(() => srv.close())
  const silent = await stalledViewer(srv.port, 'hb')
  t.after(() => silent.destroy())
  const alive = new Viewer(srv.url('hb'))
  await alive.opened
  await waitFor(() => srv.registry.getViewerCount('hb') === 2, { what: 'two viewers' })
  await sleep(800)
  assert.equal(srv.registry.getViewerCount('hb'), 1, 'the silent one is gone, the one answering pings stays')
  assert.equal(alive.ws.readyState, 1)
})

'use strict'
// Load and churn (issue 6): connect/disconnect churn with exact start/stop accounting, and
// stalled viewers among healthy ones under a steady stream of large frames. The long soak is
// scripts/soak-churn.js (same churn logic, __test__/support/churn.js, 10,000 cycles).

const test = require('node:test')
const assert = require('node:assert/strict')
const { runChurn } = require('./support/churn')
const { startServer, FakeToolset, Viewer, stalledViewer, waitFor, sleep, forceGc, jpegFrame } = require('./support')

const MB = 1024 * 1024

test('churn: 600 connect/disconnect cycles (3 bursts of 100) start and stop exactly one screencast per 0→1 transition', { timeout: 90_000 }, async () => {
  const summary = await runChurn({
    cycles: 600,
    burstSize: 100,
    bursts: 3,
    agents: 6,
    lingerMs: 20,
    stepTimeoutMs: 10_000,
    maxSeconds: 45,
    warmupCycles: 150,
    progressEvery: 100,
    // A short run: the allocator's arenas are still growing after a 150-cycle warm-up (the
    // 10,000-cycle soak shows RSS level off after ~3,000 cycles), so this bound only catches
    // gross leaks; the soak holds the 30 MB bound.
    rssLimitMb: 40,
  })
  const { memory, registry, toolset } = summary
  console.log(
    `churn: ${summary.connections} cycles, ${summary.transitions} transitions in ${summary.durationS} s; ` +
      `toolset ${toolset.starts}/${toolset.stops}, registry ${registry.starts}/${registry.stops}, ` +
      `admitted ${registry.viewersAdmitted}, closed ${registry.viewersClosed}; ` +
      `RSS ${memory.baselineMb} → ${memory.endMb} MB (growth ${memory.rssGrowthMb} MB, peak ${memory.peakMb} MB), fds ${JSON.stringify(memory.fds)}`,
  )
  for (const check of summary.checks) assert.ok(check.ok, `${check.name}: ${check.detail}`)
  assert.deepEqual(summary.failures, [])
  assert.equal(summary.connections, 600)
  assert.equal(summary.unitKinds.burst, 3)
  assert.equal(summary.transitions, 600 - 3 * 100 + 3)
  assert.equal(toolset.starts, summary.transitions)
  assert.equal(toolset.stops, summary.transitions)
  assert.equal(registry.starts, summary.transitions)
  assert.equal(registry.stops, summary.transitions)
  assert.equal(registry.channels, 0)
  assert.equal(registry.viewers, 0)
  assert.equal(registry.viewersAdmitted, 600)
  assert.equal(registry.viewersClosed, 600)
})

test('100 stalled viewers among 100 healthy ones: healthy viewers get ≥ 95 % of the frames, stalled ones skip, memory stays bounded', { timeout: 90_000 }, async (t) => {
  const HEALTHY = 100
  const STALLED = 100
  const FPS = 25
  const WINDOW_MS = 4000
  const SIZE = 50_000
  const toolset = new FakeToolset()
  // 200 viewers on one agent: above the default maxViewersPerAgent (100).
  const srv = await startServer({ getToolset: () => toolset, maxViewersPerAgent: HEALTHY + STALLED + 10 })
  const stalled = []
  const healthy = []
  let closed = false
  const closeAll = async () => {
    if (closed) return
    closed = true
    for (const socket of stalled) socket.destroy()
    for (const viewer of healthy) viewer.ws.terminate()
    await srv.close()
  }
  t.after(closeAll)

  // Half compat (base64 text frames), half extended (binary frames).
  for (let i = 0; i < HEALTHY; i++) healthy.push(new Viewer(srv.url('stall-load'), { extended: i % 2 === 1, keepFrames: false, perMessageDeflate: false }))
  await Promise.all(healthy.map((v) => v.opened))
  await waitFor(() => toolset.current && healthy.every((v) => v.statuses().includes('streaming')), { what: 'healthy viewers streaming', timeout: 10_000 })
  const healthyIds = new Set(srv.registry.stats().channels[0].viewers.map((v) => v.id))
  assert.equal(healthyIds.size, HEALTHY)
  for (let i = 0; i < STALLED; i++) stalled.push(await stalledViewer(srv.port, 'stall-load'))
  await waitFor(() => srv.registry.getViewerCount('stall-load') === HEALTHY + STALLED, { what: `${HEALTHY + STALLED} viewers`, timeout: 10_000 })

  forceGc()
  await sleep(100)
  forceGc()
  const rssBefore = process.memoryUsage().rss
  let rssPeak = rssBefore
  const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 100)
  t.after(() => clearInterval(sampler))

  // The window: frames of ~50 KB at FPS, on a schedule that does not drift.
  const frames = Math.round((WINDOW_MS / 1000) * FPS)
  const t0 = Date.now()
  let rssMid = null
  for (let seq = 1; seq <= frames; seq++) {
    toolset.emitFrame(seq, { size: SIZE })
    if (seq === Math.floor(frames / 2)) {
      forceGc()
      rssMid = process.memoryUsage().rss
    }
    const next = t0 + seq * (1000 / FPS)
    const wait = next - Date.now()
    if (wait > 0) await sleep(wait)
  }
  const windowMs = Date.now() - t0
  // Latest-wins delivers the newest frame to every reader: wait for it (bounded).
  await waitFor(() => healthy.every((v) => v.frameSeqs.includes(frames)), { what: `frame ${frames} on every healthy viewer`, timeout: 10_000 })
  clearInterval(sampler)
  const viewers = srv.registry.stats().channels[0].viewers
  forceGc()
  await sleep(100)
  forceGc()
  const rssAfter = process.memoryUsage().rss

  const received = healthy.map((v) => new Set(v.frameSeqs.filter((s) => s >= 1 && s <= frames)).size)
  const minReceived = Math.min(...received)
  const slow = viewers.filter((v) => !healthyIds.has(v.id))
  const fast = viewers.filter((v) => healthyIds.has(v.id))
  const growthMb = (rssAfter - rssBefore) / MB
  const secondHalfMb = (rssAfter - rssMid) / MB
  const peakMb = (rssPeak - rssBefore) / MB
  const range = (list, field) => `${Math.min(...list.map((v) => v[field]))}–${Math.max(...list.map((v) => v[field]))}`
  console.log(
    `stall: ${frames} frames of ${SIZE} B in ${windowMs} ms (${((frames * 1000) / windowMs).toFixed(1)} fps); ` +
      `healthy received min ${minReceived}, mean ${(received.reduce((a, b) => a + b, 0) / HEALTHY).toFixed(1)}; ` +
      `healthy sent ${range(fast, 'framesSent')}, skipped ${range(fast, 'framesSkipped')}; ` +
      `stalled sent ${range(slow, 'framesSent')}, skipped ${range(slow, 'framesSkipped')}; ` +
      `RSS growth ${growthMb.toFixed(1)} MB after GC (${secondHalfMb.toFixed(1)} MB of it in the window's second half), peak +${peakMb.toFixed(1)} MB`,
  )

  for (const [i, count] of received.entries()) {
    assert.ok(count >= Math.ceil(frames * 0.95), `healthy viewer ${i} (${healthy[i].extended ? 'extended' : 'compat'}) received ${count} of ${frames} frames`)
  }
  assert.equal(slow.length, STALLED)
  for (const v of slow) {
    assert.ok(v.framesSkipped > 0, `stalled viewer ${v.id} skipped no frame (sent ${v.framesSent})`)
    // Every frame is sent, skipped, or is one of: the one being written, the newest waiting.
    const accounted = v.framesSent + v.framesSkipped
    assert.ok(accounted >= frames - 2 && accounted <= frames, `stalled viewer ${v.id}: sent ${v.framesSent} + skipped ${v.framesSkipped} of ${frames}`)
  }
  // 100 frames of ~67 KB base64 to 100 stalled viewers are ~670 MB: a queue per stalled viewer
  // would show; latest-frame-wins holds at most one frame per viewer.
  assert.ok(growthMb < 100, `RSS grew ${growthMb.toFixed(1)} MB`)
  // Most of that growth is the test's own 100 healthy clients warming up (about as much without
  // any stalled viewer): it happens early, and the second half of the window adds little.
  assert.ok(secondHalfMb < 40, `RSS grew ${secondHalfMb.toFixed(1)} MB in the window's second half`)

  // Everything closes: the channel goes away with one start and one stop.
  for (const socket of stalled) socket.destroy()
  await Promise.all(healthy.map((v) => v.close()))
  await waitFor(() => srv.registry.stats().channels.length === 0, { what: 'channel gone', timeout: 10_000 })
  await waitFor(() => toolset.stops === 1, { what: 'screencast stopped', timeout: 5000 })
  const stats = srv.registry.stats()
  assert.equal(toolset.starts, 1)
  assert.equal(stats.starts, 1)
  assert.equal(stats.stops, 1)
  assert.equal(stats.viewers, 0)
  assert.equal(stats.viewersAdmitted, HEALTHY + STALLED)
  assert.equal(stats.viewersClosed, HEALTHY + STALLED)
  await closeAll()
})

'use strict'
// `registry.metrics()` and the optional `GET {apiPrefix}/browser/metrics` route: the output is
// read with a real Prometheus text-format parser (parse-prometheus-text-format), never by
// string matching. Viewers by mode and transport, frames and bytes in and out, input by
// outcome, admissions refused by reason, the encode-time histogram once video runs, counters
// that never go back when channels go, low cardinality unless `metricsPerAgent`, and the
// route gated like the others.

const test = require('node:test')
const assert = require('node:assert/strict')
const parsePrometheusTextFormat = require('parse-prometheus-text-format')
const { ViewerRegistry } = require('..')
const { FakeToolset, Viewer, waitFor, nativeAndBridged, startServer } = require('./support')

const OFFER = { type: 'config', video: { codecs: ['avc1.42E01F'] } }

/** The families of a scrape by name; each sample's value as a number. */
function scrape(text) {
  const families = new Map()
  for (const family of parsePrometheusTextFormat(text)) families.set(family.name, family)
  return families
}

/** The value of the sample of `name` whose labels include `labels`. */
function value(families, name, labels = {}) {
  const family = families.get(`browser_stream_${name}`)
  assert.ok(family, `metric browser_stream_${name} is exposed`)
  const sample = family.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
  assert.ok(sample, `a sample of ${name} with ${JSON.stringify(labels)}`)
  return Number(sample.value)
}

async function setup(t, options = {}) {
  const toolset = new FakeToolset()
  const registry = new ViewerRegistry({ getToolset: () => toolset, lingerMs: 0, maxViewersPerAgent: 4, implicitControl: true, ...options })
  const { native, bridged, close } = await nativeAndBridged(registry)
  t.after(close)
  return { toolset, registry, native, bridged }
}

test('metrics count viewers, frames, bytes, input and refusals, parsed as Prometheus text', async (t) => {
  const { toolset, registry, native, bridged } = await setup(t)
  const compat = new Viewer(native.url('m-agent'))
  const extended = new Viewer(native.url('m-agent'), { extended: true })
  const extendedBridged = new Viewer(bridged.url('m-agent'), { extended: true })
  const all = [compat, extended, extendedBridged]
  t.after(() => Promise.all(all.map((v) => v.close())))
  await Promise.all(all.map((v) => v.opened))
  await waitFor(() => toolset.current && registry.stats().channels[0]?.viewers.length === 3, { what: 'three viewers' })

  let families = scrape(registry.metrics())
  assert.equal(families.get('browser_stream_viewers').type, 'GAUGE')
  assert.equal(value(families, 'viewers', { mode: 'compat', transport: 'native' }), 1)
  assert.equal(value(families, 'viewers', { mode: 'extended', transport: 'native' }), 1)
  assert.equal(value(families, 'viewers', { mode: 'extended', transport: 'bridged' }), 1)
  assert.equal(value(families, 'viewers', { mode: 'compat', transport: 'bridged' }), 0)
  assert.equal(value(families, 'channels'), 1)

  for (let seq = 1; seq <= 5; seq += 1) toolset.emitFrame(seq)
  await waitFor(() => all.every((v) => v.frameSeqs.includes(5)), { what: 'the frames delivered' })
  // Input: one relayed (the first extended viewer takes control implicitly), one refused.
  extended.send({ type: 'input', kind: 'mouse', eventType: 'mouseMoved', x: 1, y: 1 })
  await waitFor(() => toolset.mouse.length === 1, { what: 'the input relayed' })
  extendedBridged.send({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 1, y: 1, button: 'left', clickCount: 1 })
  await extendedBridged.waitJson((m) => m.error === 'not_controller', { what: 'the input refused' })
  // A fifth viewer over maxViewersPerAgent (4) is refused 503.
  const fourth = new Viewer(native.url('m-agent'))
  const refused = new Viewer(native.url('m-agent'))
  t.after(() => Promise.all([fourth.close(), refused.close()]))
  await fourth.opened
  await refused.closed
  assert.equal(refused.unexpected?.status, 503)

  const stats = registry.stats()
  families = scrape(registry.metrics())
  assert.equal(families.get('browser_stream_frames_received_total').type, 'COUNTER')
  assert.equal(value(families, 'frames_received_total'), stats.channels[0].framesIn)
  assert.equal(value(families, 'received_bytes_total'), stats.channels[0].bytesIn)
  const framesSent = stats.channels[0].viewers.reduce((sum, v) => sum + v.framesSent, 0)
  assert.equal(value(families, 'frames_sent_total'), framesSent)
  assert.ok(framesSent >= 3, `${framesSent} frames sent to three viewers`)
  assert.ok(value(families, 'sent_bytes_total') > 0)
  assert.equal(value(families, 'inputs_total', { outcome: 'relayed' }), 1)
  assert.equal(value(families, 'inputs_total', { outcome: 'refused' }), 1)
  assert.equal(value(families, 'admissions_refused_total', { reason: 'viewers_per_agent' }), 1)
  assert.equal(value(families, 'admissions_refused_total', { reason: 'agents' }), 0)
  assert.equal(value(families, 'viewers_admitted_total'), 4)
  assert.ok(!families.has('browser_stream_video_encode_seconds'), 'no histogram before any video')
  // Low cardinality by default: no label names an agent.
  for (const family of families.values()) {
    for (const sample of family.metrics) assert.ok(!('agent' in (sample.labels ?? {})), `${family.name} has no agent label`)
  }

  // Counters never go back when viewers and channels go.
  const before = { sent: value(families, 'frames_sent_total'), received: value(families, 'frames_received_total') }
  await Promise.all([...all, fourth].map((v) => v.close()))
  await waitFor(() => registry.stats().channels.length === 0, { what: 'the channel gone' })
  families = scrape(registry.metrics())
  assert.equal(value(families, 'frames_sent_total'), before.sent)
  assert.equal(value(families, 'frames_received_total'), before.received)
  assert.equal(value(families, 'channels'), 0)
  assert.equal(value(families, 'viewers', { mode: 'compat', transport: 'native' }), 0)
})

test('the encode-time histogram appears once video runs, with cumulative buckets', async (t) => {
  const { toolset, registry, native } = await setup(t)
  const video = new Viewer(native.url('v-agent'), { extended: true })
  t.after(() => video.close())
  await video.untilMeta()
  video.send(OFFER)
  await waitFor(() => toolset.current, { what: 'the stream' })
  let seq = 0
  await waitFor(
    () => {
      toolset.emitFrame((seq += 1), { size: seq * 10 })
      return registry.stats().channels[0]?.video?.chunks >= 3
    },
    { what: 'three chunks encoded', timeout: 20_000, interval: 50 },
  )
  const families = scrape(registry.metrics())
  const histogram = families.get('browser_stream_video_encode_seconds')
  assert.ok(histogram, 'the histogram is exposed')
  assert.equal(histogram.type, 'HISTOGRAM')
  const [sample] = histogram.metrics
  const count = Number(sample.count)
  assert.ok(count >= 3, `${count} frames timed`)
  assert.ok(Number(sample.sum) > 0)
  const bounds = Object.keys(sample.buckets).filter((le) => le !== '+Inf').map(Number).sort((a, b) => a - b)
  let previous = 0
  for (const le of bounds) {
    const cumulative = Number(sample.buckets[String(le)])
    assert.ok(cumulative >= previous, 'buckets are cumulative')
    previous = cumulative
  }
  assert.equal(Number(sample.buckets['+Inf']), count)
  assert.equal(value(families, 'video_viewers'), 1)
})

test('metricsPerAgent adds per-channel series labelled agent and thread', async (t) => {
  const { toolset, registry, native } = await setup(t, { metricsPerAgent: true })
  const a = new Viewer(native.url('agent-one', '?threadId=t1'), { extended: true })
  t.after(() => a.close())
  await a.untilMeta()
  await waitFor(() => toolset.current, { what: 'the stream' })
  toolset.emitFrame(1)
  await waitFor(() => a.frameSeqs.includes(1), { what: 'the frame' })
  const families = scrape(registry.metrics())
  assert.equal(value(families, 'channel_viewers', { agent: 'agent-one', thread: 't1' }), 1)
  assert.equal(value(families, 'channel_frames_received_total', { agent: 'agent-one', thread: 't1' }), 1)
})

test('the metrics route serves the exposition behind the gate; off unless asked for', async (t) => {
  const srv = await startServer({
    getToolset: () => new FakeToolset(),
    metricsRoute: true,
    authenticate: (c, token) => token === 'scraper-secret',
  })
  t.after(() => srv.close())
  const base = `http://127.0.0.1:${srv.port}`
  const refused = await fetch(`${base}/api/browser/metrics`)
  assert.equal(refused.status, 401)
  const response = await fetch(`${base}/api/browser/metrics`, { headers: { authorization: 'Bearer scraper-secret' } })
  assert.equal(response.status, 200)
  assert.match(response.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
  const families = scrape(await response.text())
  assert.equal(value(families, 'channels'), 0)

  const plain = await startServer({ getToolset: () => new FakeToolset() })
  t.after(() => plain.close())
  assert.equal((await fetch(`http://127.0.0.1:${plain.port}/api/browser/metrics`)).status, 404)
  assert.throws(() => require('..').setupBrowserStream(new (require('hono').Hono)(), { metricsRoute: 'yes' }), /metricsRoute must be a boolean/)
})

test('counters never go back while viewers and channels come and go, scraped all along', async (t) => {
  const { toolset, registry, native, bridged } = await setup(t)
  const counterNames = () => [...scrape(registry.metrics()).values()].filter((f) => f.type === 'COUNTER')
  let previous = new Map()
  let scrapes = 0
  const check = () => {
    for (const family of counterNames()) {
      for (const sample of family.metrics) {
        const key = `${family.name}${JSON.stringify(sample.labels ?? {})}`
        const now = Number(sample.value)
        assert.ok(now >= (previous.get(key) ?? 0), `${key} went back: ${previous.get(key)} → ${now}`)
        previous.set(key, now)
      }
    }
    scrapes += 1
  }
  // Scraping all along, on every turn of the event loop, while viewers churn.
  let churning = true
  const scraper = (async () => {
    while (churning) {
      check()
      await new Promise((resolve) => setImmediate(resolve))
    }
  })()
  let seq = 0
  for (let round = 0; round < 8; round += 1) {
    const agent = `churn-${round % 2}`
    const viewers = [new Viewer(native.url(agent)), new Viewer(bridged.url(agent), { extended: true }), new Viewer(native.url(agent), { extended: true })]
    await Promise.all(viewers.map((v) => v.opened))
    await waitFor(() => toolset.current && registry.stats().channels.some((c) => c.agentId === agent && c.viewers.length === 3), { what: 'three viewers' })
    for (let i = 0; i < 5; i += 1) toolset.emitFrame((seq += 1))
    await waitFor(() => viewers.every((v) => v.frameSeqs.includes(seq)), { what: 'the round\'s frames' })
    await Promise.all(viewers.map((v) => v.close()))
  }
  await waitFor(() => registry.stats().channels.length === 0, { what: 'every channel gone' })
  churning = false
  await scraper
  check()
  assert.ok(scrapes > 20, `${scrapes} scrapes`)
  assert.ok((previous.get('browser_stream_frames_sent_total{}') ?? 0) >= 8 * 3, 'frames were sent and counted')
})

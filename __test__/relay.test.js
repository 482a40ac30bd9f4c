'use strict'
// Scale-out over NATS with real parts: Debian's nats-server on a free loopback port and
// deployer instances as their own processes (support/relay-instance.js), each a Hono server
// with setupBrowserStream and `relay: { nats }`. A viewer on an instance without the browser
// watches the instance that has it: frames byte-identical, statuses in order, agent events;
// the owner killed, and the bus killed and restarted: documented statuses, then recovery.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { spawn } = require('node:child_process')
const readline = require('node:readline')

const { Viewer, waitFor, settledStatuses } = require('./support')
const { startNats, natsServerAvailable } = require('./support/nats')
const { REPLAY_IMAGES } = require('./support/relay-instance')
const { findChromium } = require('./support/chromium')

const INSTANCE = path.join(__dirname, 'support', 'relay-instance.js')
/** Short leases, so that a lost owner shows within about a second (3 missed leases). */
const LEASE_INTERVAL_MS = 300
const OWNER_TIMEOUT_MS = 300
const skip = natsServerAvailable() ? false : 'nats-server is not installed (Debian: apt-get install nats-server)'

/** Starts one deployer instance process; resolves once it listens. */
async function startInstance({ connected = true, ...options }) {
  const child = spawn(process.execPath, [INSTANCE, JSON.stringify({ leaseIntervalMs: LEASE_INTERVAL_MS, ownerTimeoutMs: OWNER_TIMEOUT_MS, ...options })], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const log = []
  readline.createInterface({ input: child.stderr }).on('line', (line) => log.push(line))
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  const port = await new Promise((resolve, reject) => {
    readline.createInterface({ input: child.stdout }).once('line', (line) => resolve(JSON.parse(line).port))
    exited.then(({ code }) => reject(new Error(`instance exited (${code}) before listening: ${log.join('\n')}`)))
  })
  const base = `http://127.0.0.1:${port}`
  const instance = {
    port,
    log,
    exited,
    url: (agentId) => `ws://127.0.0.1:${port}/browser/${agentId}/stream`,
    async stats() {
      return (await fetch(`${base}/test/stats`)).json()
    },
    async setPrivacy(agentId, on, reason) {
      const response = await fetch(`${base}/test/privacy/${agentId}`, { method: 'POST', body: JSON.stringify({ on, reason }) })
      return (await response.json()).private
    },
    async releaseControl(agentId) {
      return (await (await fetch(`${base}/test/release-control/${agentId}`, { method: 'POST' })).json()).released
    },
    async publishEvent(agentId, event) {
      const response = await fetch(`${base}/test/event/${agentId}`, { method: 'POST', body: JSON.stringify(event) })
      return (await response.json()).published
    },
    /** SIGKILL: the instance vanishes without a goodbye, as a crashed machine. */
    async kill() {
      child.kill('SIGKILL')
      await exited
    },
    /** SIGTERM: closes its registry, then exits; resolves with its exit. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      return exited
    },
  }
  // A viewer arriving before the instance reached the bus is told `relay_unavailable`: the
  // tests that do not test that wait until it is connected.
  if (connected) await waitFor(async () => (await instance.stats()).relay.connected, { what: 'the instance on the bus' })
  return instance
}

/** Whether `image` is byte for byte one of the replayed images. */
function isReplayImage(image) {
  return REPLAY_IMAGES.some((replayed) => replayed.equals(image))
}

test('a viewer on any instance watches the browser of another: frames byte-identical, statuses, events, one subscription per instance', { skip, timeout: 60_000 }, async (t) => {
  const nats = await startNats()
  const owner = await startInstance({ nats: nats.url, owns: 'agent-r' })
  const second = await startInstance({ nats: nats.url })
  // Its deployer lets nobody control (authorizeControl), and that holds for a relayed page too.
  const third = await startInstance({ nats: nats.url, watchOnly: true })
  t.after(async () => {
    await Promise.all([owner.stop(), second.stop(), third.stop()])
    await nats.kill()
  })

  const local = new Viewer(owner.url('agent-r'), { extended: true })
  const remote = new Viewer(second.url('agent-r'), { extended: true })
  const alsoRemote = new Viewer(second.url('agent-r'), { extended: true })
  await Promise.all([local.opened, remote.opened, alsoRemote.opened])
  await Promise.all([remote.waitFrames(10, { timeout: 10_000 }), alsoRemote.waitFrames(10, { timeout: 10_000 })])
  for (const viewer of [remote, alsoRemote]) {
    for (const frame of viewer.frames) assert.ok(isReplayImage(frame.image), 'a relayed frame is byte-identical to a source image')
    assert.deepEqual(settledStatuses(viewer.statuses()), ['streaming'])
    assert.deepEqual(viewer.errors(), [])
  }

  // Control is the owner's lock, asked for from any instance: a viewer here takes it, and
  // every viewer everywhere learns who holds it, in its own instance's ids.
  await Promise.all([local.untilMeta(), remote.untilMeta(), alsoRemote.untilMeta()])
  remote.send({ type: 'control-request' })
  await remote.waitJson((m) => m.type === 'control' && m.you === true, { what: 'control granted across instances' })
  await alsoRemote.waitJson((m) => m.type === 'control' && m.controller === remote.viewerId && m.you === false, { what: 'the other viewer here told' })
  const atOwner = await local.waitJson((m) => m.type === 'control' && m.controller !== null, { what: 'the owner viewer told' })
  assert.equal(atOwner.you, false)
  assert.notEqual(atOwner.controller, local.viewerId)
  // The lock is one: neither a viewer of the owner nor another viewer here can take it.
  local.send({ type: 'control-request' })
  const busyAtOwner = await local.waitJson((m) => m.error === 'control_busy', { what: 'busy at the owner' })
  assert.equal(busyAtOwner.controller, atOwner.controller)
  alsoRemote.send({ type: 'control-request' })
  const busyHere = await alsoRemote.waitJson((m) => m.error === 'control_busy', { what: 'busy on the relaying instance' })
  assert.equal(busyHere.controller, remote.viewerId, 'named by this instance\'s id for its viewer')
  alsoRemote.send({ type: 'mouse', eventType: 'mousePressed', x: 1, y: 1, button: 'left', clickCount: 1 })
  const refused = await alsoRemote.waitJson((m) => m.error === 'not_controller', { what: 'input of a non-controller refused' })
  assert.equal(refused.message, 'another viewer controls the page')
  // The controller's input reaches the owner's page, in order.
  const relayedBefore = (await owner.stats()).channels.find((c) => c.agentId === 'agent-r').inputsRelayed
  for (let i = 0; i < 3; i++) remote.send({ type: 'keyboard', eventType: 'keyDown', key: 'a' })
  await waitFor(async () => (await owner.stats()).channels.find((c) => c.agentId === 'agent-r').inputsRelayed >= relayedBefore + 3, { what: 'the inputs relayed at the owner' })
  // Released: everybody is told nobody holds it, and a viewer of the owner takes it.
  remote.send({ type: 'control-release' })
  for (const viewer of [local, remote, alsoRemote]) {
    await waitFor(() => viewer.controls().at(-1)?.controller === null, { what: 'control released everywhere' })
  }
  const foreignAt = remote.json.length
  local.send({ type: 'control-request' })
  await local.waitJson((m) => m.type === 'control' && m.you === true, { what: 'the owner viewer takes control' })
  const foreign = await remote.waitJson((m) => m.type === 'control' && m.controller !== null && m.you === false, { from: foreignAt, what: 'a controller elsewhere' })
  assert.ok(![remote.viewerId, alsoRemote.viewerId].includes(foreign.controller), 'a viewer elsewhere has an id of its own here')
  const releaseAt = remote.json.length
  remote.send({ type: 'control-release' })
  const notHolder = await remote.waitJson((m) => m.error === 'not_controller', { from: releaseAt, what: 'release by a non-holder refused' })
  assert.equal(notHolder.message, 'this viewer does not hold control')
  local.send({ type: 'control-release' })
  await waitFor(() => remote.controls().at(-1)?.controller === null, { what: 'released again' })

  // A third instance joins: the owner's stream restarts for it, the others keep receiving.
  const farther = new Viewer(third.url('agent-r'), { extended: true })
  await farther.waitFrames(5, { timeout: 10_000 })
  const before = remote.frames.length
  await remote.waitFrames(before + 5, { timeout: 10_000 })
  assert.deepEqual(settledStatuses(farther.statuses()), ['streaming'])
  farther.send({ type: 'control-request' })
  await farther.waitJson((m) => m.error === 'control_denied', { what: 'view-only by its own instance' })
  farther.send({ type: 'keyboard', eventType: 'keyDown', key: 'b' })
  await waitFor(() => farther.errors('control_denied').length === 2, { what: 'its input refused there too' })
  assert.deepEqual(settledStatuses(remote.statuses()).filter((s) => s !== 'streaming'), [], 'the others never saw the stream stop')
  assert.deepEqual(remote.errors().filter((e) => e.error !== 'not_controller'), [])

  // Events published where the browser is reach every instance's extended viewers, in order.
  assert.equal(await owner.publishEvent('agent-r', { type: 'tool_start', n: 1 }), true)
  assert.equal(await owner.publishEvent('agent-r', { type: 'tool_result', n: 2 }), true)
  for (const viewer of [local, remote, alsoRemote, farther]) {
    await waitFor(() => viewer.events().length >= 2, { what: 'both events', timeout: 5000 })
    assert.deepEqual(
      viewer.events().map((e) => e.event),
      [{ type: 'tool_start', n: 1 }, { type: 'tool_result', n: 2 }],
    )
    const seqs = viewer.events().map((e) => e.seq)
    assert.ok(seqs[0] < seqs[1], 'events are numbered in order')
    assert.deepEqual(seqs, local.events().map((e) => e.seq), 'under the owner\'s numbers on every instance')
  }

  // Resume across instances: a client that processed both events reconnects to an instance
  // that never had the channel, after two more were published; the owner's ring answers.
  // That instance looks its browser up slowly, so the resume comes while it does not know
  // yet whether the browser is its own or relayed: it waits for that, then asks the owner.
  const processed = remote.events().at(-1).seq
  assert.equal(await owner.publishEvent('agent-r', { type: 'tool_start', n: 3 }), true)
  assert.equal(await owner.publishEvent('agent-r', { type: 'tool_result', n: 4 }), true)
  await waitFor(() => local.events().length === 4, { what: 'the owner viewer has all four' })
  const fresh = await startInstance({ nats: nats.url, lookupDelayMs: 1000 })
  t.after(() => fresh.stop())
  const resumer = new Viewer(fresh.url('agent-r'), { extended: true })
  await resumer.untilMeta()
  resumer.send({ type: 'resume', lastSeq: processed })
  const resumed = await resumer.waitJson((m) => m.type === 'resumed', { what: 'resumed', timeout: 10_000 })
  assert.deepEqual(resumed, { type: 'resumed', lastSeq: processed, replayed: 2 })
  assert.deepEqual(resumer.events(), local.events().slice(2), 'the two it missed, under the same numbers')
  assert.deepEqual(resumer.errors(), [])
  await resumer.close()

  // The owner streams the channel once, as one relay viewer, however many instances watch.
  const ownerStats = await owner.stats()
  assert.equal(ownerStats.relay.streaming, 1)
  const channel = ownerStats.channels.find((c) => c.agentId === 'agent-r')
  assert.equal(channel.viewers.filter((v) => v.transport === 'relay').length, 1)
  const secondStats = await second.stats()
  assert.equal(secondStats.relay.connected, true)
  assert.ok(secondStats.relay.framesRelayed >= 10)
  assert.equal(secondStats.relay.streaming, 0, 'an instance without the browser streams nothing')

  // When every remote viewer left, their instances let the channel go (the relay source
  // ends with its session), and the owner's relay viewer leaves once their leases ran out.
  // A controller that leaves its instance gives control back at the owner.
  remote.send({ type: 'control-request' })
  await remote.waitJson((m) => m.type === 'control' && m.you === true, { from: remote.json.length, what: 'control again' })
  await waitFor(() => local.controls().at(-1)?.controller !== null, { what: 'the owner viewer told' })
  await remote.close()
  await waitFor(() => local.controls().at(-1)?.controller === null, { what: 'control back when its holder left' })
  await Promise.all([alsoRemote.close(), farther.close()])
  for (const instance of [second, third]) {
    await waitFor(async () => (await instance.stats()).channels.length === 0, { what: 'a relaying instance to drop the channel', timeout: 10_000 })
  }
  await waitFor(async () => (await owner.stats()).relay.streaming === 0, { what: 'the owner to stop streaming', timeout: 10_000 })
  await local.close()
  await waitFor(async () => (await owner.stats()).channels.length === 0, { what: 'the owner channel to go', timeout: 10_000 })
})

test('faults: the owner killed, then the bus killed and restarted: documented statuses, then the stream is back by itself', { skip, timeout: 90_000 }, async (t) => {
  const nats = await startNats()
  let owner = await startInstance({ nats: nats.url, owns: 'agent-f' })
  const watcher = await startInstance({ nats: nats.url })
  let bus = nats
  t.after(async () => {
    await Promise.all([owner.stop(), watcher.stop()])
    await bus.kill()
  })
  const viewer = new Viewer(watcher.url('agent-f'), { extended: true })
  await viewer.waitFrames(5, { timeout: 10_000 })

  // The owner's session is closed (as its close route would): the viewer here hears browser_closed,
  // and the next question starts a new session on the owner.
  const closedAt = viewer.json.length
  const closed = await fetch(`http://127.0.0.1:${owner.port}/test/close/agent-f`, { method: 'POST' })
  assert.equal(closed.status, 200)
  await viewer.waitJson((m) => m.status === 'browser_closed' && m.type === undefined, { from: closedAt, timeout: 10_000, what: 'browser_closed after the close route' })
  await viewer.waitJson((m) => m.status === 'streaming' && m.type === undefined, { from: closedAt, timeout: 15_000, what: 'a new session streaming' })
  const afterClose = viewer.frames.length
  await viewer.waitFrames(afterClose + 3, { timeout: 10_000 })

  // The owner vanishes with control held from here: its leases go unanswered, the viewer is
  // told, stays connected, and nobody holds control any more.
  viewer.send({ type: 'control-request' })
  await viewer.waitJson((m) => m.type === 'control' && m.you === true, { what: 'control before the owner dies' })
  await owner.kill()
  const lostAt = viewer.json.length
  await viewer.waitJson((m) => m.error === 'relay_owner_lost', { from: lostAt, timeout: 10_000, what: 'relay_owner_lost' })
  await viewer.waitJson((m) => m.status === 'browser_closed' && m.type === undefined, { from: lostAt, timeout: 5000, what: 'browser_closed' })
  assert.equal(viewer.open, true)
  const lost = viewer.errors('relay_owner_lost').at(-1)
  assert.equal(lost.message, 'the server streaming this browser went away; retrying')
  await waitFor(() => viewer.controls().at(-1).controller === null, { what: 'control gone with its owner' })

  // A new owner comes up: the same viewer streams again without reconnecting.
  owner = await startInstance({ nats: nats.url, owns: 'agent-f' })
  const framesBefore = viewer.frames.length
  await viewer.waitFrames(framesBefore + 5, { timeout: 15_000 })
  await viewer.waitJson((m) => m.status === 'streaming' && m.type === undefined, { from: lostAt, timeout: 5000, what: 'streaming again' })

  // The bus dies: nothing crashes; the viewer hears that the relay is away.
  await nats.kill()
  const downAt = viewer.json.length
  // Leases go unanswered first (3 × 300 ms), before the client notices the lost connection.
  await viewer.waitJson((m) => m.error === 'relay_owner_lost', { from: downAt, timeout: 10_000, what: 'relay_owner_lost with the bus down' })
  assert.equal(viewer.open, true)
  // Control cannot be asked for while no owner is reachable; the viewer is told so.
  await waitFor(async () => (await watcher.stats()).relay.connected === false, { what: 'the client to notice' })
  viewer.send({ type: 'control-request' })
  const unreachable = await viewer.waitJson((m) => m.error === 'control_unavailable', { from: downAt, what: 'control_unavailable' })
  assert.equal(unreachable.message, 'this browser is streamed from another server, which cannot be reached now')

  // The bus comes back on the same port: both instances reconnect and the stream resumes.
  bus = await startNats({ port: nats.port })
  const framesDuringOutage = viewer.frames.length
  await viewer.waitFrames(framesDuringOutage + 5, { timeout: 20_000 })
  for (const frame of viewer.frames) assert.ok(isReplayImage(frame.image))
  assert.equal((await watcher.stats()).relay.connected, true)
  assert.ok((await watcher.stats()).relay.ownersLost >= 1)
  // And control is the new owner's to give.
  const backAt = viewer.json.length
  viewer.send({ type: 'control-request' })
  await viewer.waitJson((m) => m.type === 'control' && m.you === true, { from: backAt, what: 'control after the outage' })
  await viewer.close()
})

test('the relay option is checked: shape, unknown fields, server URLs (never echoed), ranges', { skip }, () => {
  const { ViewerRegistry } = require('..')
  const refused = (relay) => assert.throws(() => new ViewerRegistry({ relay }), TypeError)
  refused({ servers: 'nats://127.0.0.1:4222' })
  refused({ nats: { servers: 'nats://127.0.0.1:4222', tokn: 'x' } })
  refused({ nats: { servers: 42 } })
  refused({ nats: { servers: [] } })
  refused({ nats: { servers: 'nats://127.0.0.1:4222', ownerTimeoutMs: 5 } })
  refused({ nats: { servers: 'nats://127.0.0.1:4222', token: 't', nkey: 'n' } })
  refused({ nats: { servers: 'nats://127.0.0.1:4222', tls: { caFile: 1 } } })
  assert.throws(() => new ViewerRegistry({ relay: { nats: { servers: 'not a url s3cret' } } }), (err) => !err.message.includes('s3cret'))
  // Off: false, null or absent.
  for (const relay of [false, null, undefined]) {
    const registry = new ViewerRegistry({ relay })
    assert.equal(registry.stats().relay, undefined)
    registry.close()
  }
})

test('a real Chromium on one instance, watched and controlled from another: the same pixels, byte for byte; a click there lands here', { skip: skip || (findChromium() ? false : 'Chromium is not installed'), timeout: 60_000 }, async (t) => {
  const nats = await startNats()
  const owner = await startInstance({ nats: nats.url, owns: 'agent-c', source: 'chromium', page: 'button' })
  const watcher = await startInstance({ nats: nats.url })
  t.after(async () => {
    await Promise.all([owner.stop(), watcher.stop()])
    await nats.kill()
  })
  const local = new Viewer(owner.url('agent-c'), { extended: true })
  const remote = new Viewer(watcher.url('agent-c'), { extended: true })
  await Promise.all([local.waitFrames(1, { timeout: 20_000 }), remote.waitFrames(1, { timeout: 20_000 })])
  // The page is still: both end on the same last frame, which must be the same bytes.
  await waitFor(() => local.lastFrame().image.equals(remote.lastFrame().image), { what: 'the same last frame', timeout: 10_000 })
  assert.deepEqual(settledStatuses(remote.statuses()), settledStatuses(local.statuses()))
  assert.equal(remote.lastFrame().deviceWidth, local.lastFrame().deviceWidth)
  assert.equal(remote.lastFrame().deviceHeight, local.lastFrame().deviceHeight)

  // A controller on the relaying instance clicks the button on the owner's page.
  remote.send({ type: 'control-request' })
  await remote.waitJson((m) => m.type === 'control' && m.you === true, { what: 'control across instances' })
  remote.send({ type: 'mouse', eventType: 'mouseMoved', x: 40, y: 40 })
  remote.send({ type: 'mouse', eventType: 'mousePressed', x: 40, y: 40, button: 'left', clickCount: 1 })
  remote.send({ type: 'mouse', eventType: 'mouseReleased', x: 40, y: 40, button: 'left', clickCount: 1 })
  const clicked = (m) => typeof m.url === 'string' && m.url.endsWith('#clicked')
  await local.waitJson(clicked, { what: 'the click landed on the owner page', timeout: 10_000 })
  await remote.waitJson(clicked, { what: 'the new url relayed back', timeout: 10_000 })
  assert.deepEqual(remote.errors(), [])
  await Promise.all([local.close(), remote.close()])
})

const KIND_VIDEO = 2
const FLAG_KEY = 1
const VIDEO_OFFER = { type: 'config', video: { codecs: ['avc1.42E01F'] } }
const videoChunks = (viewer) => viewer.log.filter((e) => e.frame && e.frame.kind === KIND_VIDEO).map((e) => e.frame)
const hasKeyframe = (viewer) => videoChunks(viewer).some((chunk) => chunk.flags & FLAG_KEY)
const channelOf = (stats, agentId) => stats.channels.find((c) => c.agentId === agentId)

test('video across instances: the owner encodes once, a video viewer elsewhere gets its chunks byte for byte and clicks through them; leaving stops the owner\'s video', { skip: skip || (findChromium() ? false : 'Chromium is not installed'), timeout: 90_000 }, async (t) => {
  const nats = await startNats()
  const owner = await startInstance({ nats: nats.url, owns: 'agent-v', source: 'chromium', page: 'button' })
  // Its browser lookup is slow: video is asked for before it knows the browser is elsewhere,
  // and the answer waits for that (an encoder of its own would re-encode the relayed JPEGs).
  const watcher = await startInstance({ nats: nats.url, lookupDelayMs: 1000 })
  const later = await startInstance({ nats: nats.url })
  t.after(async () => {
    await Promise.all([owner.stop(), watcher.stop(), later.stop()])
    await nats.kill()
  })
  const local = new Viewer(owner.url('agent-v'), { extended: true })
  await local.untilMeta()
  local.send(VIDEO_OFFER)
  await waitFor(() => hasKeyframe(local), { what: 'a keyframe at the owner', timeout: 20_000 })
  const remote = new Viewer(watcher.url('agent-v'), { extended: true })
  await remote.untilMeta()
  remote.send(VIDEO_OFFER)
  await waitFor(() => hasKeyframe(remote), { what: 'a relayed keyframe', timeout: 20_000 })
  const config = remote.json.find((m) => m.type === 'video-config')
  assert.match(config.codec, /^avc1\./)
  assert.deepEqual([config.codedWidth, config.codedHeight], [local.json.find((m) => m.type === 'video-config').codedWidth, local.json.find((m) => m.type === 'video-config').codedHeight])
  const first = videoChunks(remote)[0]
  assert.ok(first.flags & FLAG_KEY, 'the first relayed chunk is a keyframe')

  // Every access unit the remote viewer got is one the owner's encoder made for its own
  // viewer: nothing was encoded again on the way.
  const ownerMade = () => new Set(videoChunks(local).map((chunk) => chunk.image.toString('base64')))
  await waitFor(() => videoChunks(remote).every((chunk) => ownerMade().has(chunk.image.toString('base64'))), { what: 'the relayed chunks among the owner\'s', timeout: 10_000 })
  const numbers = videoChunks(remote).map((chunk) => chunk.reserved)
  assert.deepEqual(numbers, numbers.map((_, i) => numbers[0] + i), 'chunk numbers without a gap')
  const watcherStats = await watcher.stats()
  const relayedVideo = channelOf(watcherStats, 'agent-v').video
  assert.equal(relayedVideo.relayed, true)
  assert.equal(relayedVideo.framesIn, 0, 'no frame is encoded on the relaying instance')
  assert.ok(watcherStats.relay.chunksRelayed >= videoChunks(remote).length)
  const ownerStats = await owner.stats()
  assert.equal(ownerStats.relay.videoStreaming, 1)
  assert.equal(channelOf(ownerStats, 'agent-v').video.relayed, false)
  assert.equal(channelOf(ownerStats, 'agent-v').video.viewers, 2, 'its viewer and the video relay viewer')

  // A third instance joins the video the owner already publishes: it is told the decoder
  // configuration again, then gets a keyframe of the same encoder.
  const third = new Viewer(later.url('agent-v'), { extended: true })
  await third.untilMeta()
  third.send(VIDEO_OFFER)
  await waitFor(() => hasKeyframe(third), { what: 'a keyframe on the third instance', timeout: 20_000 })
  const thirdConfig = third.json.find((m) => m.type === 'video-config')
  assert.equal(thirdConfig.codec, config.codec)
  await waitFor(() => videoChunks(third).every((chunk) => ownerMade().has(chunk.image.toString('base64'))), { what: 'its chunks among the owner\'s', timeout: 10_000 })
  assert.equal(channelOf(await later.stats(), 'agent-v').video.relayed, true)
  assert.equal((await owner.stats()).relay.videoStreaming, 1, 'one video on the bus for both')
  await third.close()

  // Input from a video viewer maps through the frame its chunk shows: the click lands.
  remote.send({ type: 'control-request' })
  await remote.waitJson((m) => m.type === 'control' && m.you === true, { what: 'control across instances' })
  remote.send({ type: 'mouse', eventType: 'mousePressed', x: 40, y: 40, button: 'left', clickCount: 1 })
  remote.send({ type: 'mouse', eventType: 'mouseReleased', x: 40, y: 40, button: 'left', clickCount: 1 })
  await local.waitJson((m) => typeof m.url === 'string' && m.url.endsWith('#clicked'), { what: 'the click landed on the owner page', timeout: 10_000 })
  assert.deepEqual(remote.errors(), [])

  // The last video viewer elsewhere leaves: the owner stops publishing video once its lease
  // said so no more, and its own viewer goes on.
  await remote.close()
  await waitFor(async () => (await owner.stats()).relay.videoStreaming === 0, { what: 'the owner to stop its video', timeout: 10_000 })
  await waitFor(async () => channelOf(await owner.stats(), 'agent-v').video.viewers === 1, { what: 'the video relay viewer gone', timeout: 10_000 })
  assert.deepEqual(local.errors(), [])
  await local.close()
})

test('video across instances from an owner with video off: the viewer elsewhere is told and keeps JPEG frames', { skip, timeout: 60_000 }, async (t) => {
  const nats = await startNats()
  const owner = await startInstance({ nats: nats.url, owns: 'agent-nv', video: false })
  const watcher = await startInstance({ nats: nats.url })
  const other = await startInstance({ nats: nats.url })
  t.after(async () => {
    await Promise.all([owner.stop(), watcher.stop(), other.stop()])
    await nats.kill()
  })
  // Each asker is told, the second as the first.
  for (const instance of [watcher, other]) {
    const remote = new Viewer(instance.url('agent-nv'), { extended: true })
    await remote.waitFrames(3, { timeout: 10_000 })
    remote.send(VIDEO_OFFER)
    const failed = await remote.waitJson((m) => m.error === 'video_failed', { what: 'video refused', timeout: 10_000 })
    assert.equal(failed.message, 'the video encoder stopped; JPEG frames follow')
    const before = remote.frames.length
    await remote.waitFrames(before + 3, { timeout: 10_000 })
    assert.deepEqual(videoChunks(remote), [])
    await waitFor(async () => channelOf(await instance.stats(), 'agent-nv').video?.state === 'stopped', { what: 'the relayed pipeline ended' })
    await remote.close()
  }
  assert.equal((await owner.stats()).relay.videoStreaming, 0, 'no video relay viewer started for nothing')
})

test('privacy across instances: set where the browser is, no frame reaches a viewer elsewhere; control is the owner\'s to take back', { skip, timeout: 60_000 }, async (t) => {
  const nats = await startNats()
  const owner = await startInstance({ nats: nats.url, owns: 'agent-p' })
  const second = await startInstance({ nats: nats.url })
  t.after(async () => {
    await Promise.all([owner.stop(), second.stop()])
    await nats.kill()
  })
  const viewer = new Viewer(second.url('agent-p'), { extended: true })
  t.after(() => viewer.close())
  await viewer.untilMeta()
  await waitFor(() => viewer.frames.length >= 3, { what: 'relayed frames', timeout: 15_000 })
  viewer.send({ type: 'control-request' })
  await viewer.waitJson((m) => m.type === 'control' && m.you === true, { what: 'control through the owner', timeout: 10_000 })
  // Only the owner holds the lock: releaseControl elsewhere refuses, at the owner it works.
  assert.equal(await second.releaseControl('agent-p'), false)
  assert.equal(await owner.releaseControl('agent-p'), true)
  await viewer.waitJson((m) => m.type === 'control' && m.controller === null, { what: 'control released by the owner', timeout: 10_000 })

  assert.equal(await owner.setPrivacy('agent-p', true, 'card number'), true)
  const told = await viewer.waitJson((m) => m.status === 'private' && m.type === undefined, { what: 'private relayed', timeout: 10_000 })
  const framesAtPrivate = viewer.frameCount
  const channelOf = async (instance) => (await instance.stats()).channels.find((c) => c.agentId === 'agent-p')
  const withheldAtPrivate = (await channelOf(owner)).framesWithheld
  // The replay source goes on at 20 fps: a second of frames withheld at the owner.
  await waitFor(async () => (await channelOf(owner)).framesWithheld >= withheldAtPrivate + 20, { what: 'frames withheld at the owner', timeout: 15_000 })
  assert.equal((await channelOf(second)).private, true, 'the relaying instance is private too')
  viewer.send({ type: 'snapshot-request' })
  await viewer.waitJson((m) => m.error === 'private', { what: 'snapshot refused elsewhere', timeout: 10_000 })
  viewer.send({ type: 'input', kind: 'mouse', eventType: 'mouseMoved', x: 1, y: 1 })
  await waitFor(() => viewer.errors('private').length === 2, { what: 'input refused elsewhere', timeout: 10_000 })
  assert.equal(viewer.frameCount, framesAtPrivate, 'no frame reached the viewer elsewhere while private')
  assert.equal(told.reason, 'private', "the deployer's reason stays at the owner; elsewhere it is the generic one")

  assert.equal(await owner.setPrivacy('agent-p', false), false)
  await viewer.waitJson((m) => m.status === 'streaming' && m.type === undefined && viewer.json.indexOf(m) > viewer.json.indexOf(told), { what: 'streaming again', timeout: 10_000 })
  await waitFor(() => viewer.frameCount > framesAtPrivate, { what: 'frames again', timeout: 15_000 })
  assert.equal((await channelOf(second)).private, false)
})

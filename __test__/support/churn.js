'use strict'
// Connect/disconnect churn against a real server (Hono on @hono/node-server with
// setupBrowserStream), shared by scripts/soak-churn.js and __test__/load.test.js.
//
// Several agents are churned at once, each by its own worker, one "unit" at a time:
// - a single viewer connects and leaves: cleanly (close) or abruptly (terminate) after its
//   first frame, or right after the handshake before any message (close or terminate);
// - a burst: `burstSize` viewers connect to the agent at once, all get a frame, all leave
//   (half close, half terminate).
// Every unit starts on an agent with no viewers and no source, and ends only once the registry
// shows the agent's channel gone and the toolset's screencast stopped, so each unit is exactly
// one 0→1 transition. At the end the harness checks the toolset's starts and stops and the
// registry's totals against the transitions it caused, that no channel or viewer is left, and
// the RSS (after a forced GC) against the one measured after a warm-up.
//
// Every wait is bounded (`stepTimeoutMs`): a step that does not finish fails the run with a
// message naming the agent, the unit and what was awaited. The whole run is bounded by
// `maxSeconds` (units are no longer started after it; the run then fails as incomplete).

const fs = require('node:fs')
const WebSocket = require('ws')
const { startServer } = require('./server')
const { FakeToolset, FakeStream } = require('./toolset')
const { jpegFrame, EXTENDED_PROTOCOL } = require('./frames')
const { forceGc } = require('./gc')
const { sleep } = require('./wait')

const MB = 1024 * 1024

/** Kinds of single-viewer units, with their weights. */
const SINGLE_KINDS = [
  ['close-after-frame', 3], // open, first frame, ws.close(), wait for the close handshake
  ['terminate-after-frame', 3], // open, first frame, ws.terminate()
  ['close-on-open', 2], // ws.close() in the 'open' handler, before any message
  ['terminate-on-open', 2], // ws.terminate() in the 'open' handler, before any message
]

class StepError extends Error {}

/** mulberry32: a small seeded PRNG, so a run's schedule can be replayed with --seed. */
function prng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * Rejects with a StepError naming `what` when `promise` does not settle within `ms` (or when it
 * rejects: the error's message is prefixed with `what`).
 */
function within(promise, ms, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new StepError(`step timed out after ${ms} ms: ${what}`)), ms)
  })
  const labelled = promise.catch((err) => {
    throw new StepError(`${what}: ${err?.message ?? err}`)
  })
  return Promise.race([labelled, timeout]).finally(() => clearTimeout(timer))
}

/** A stream that also counts every stop() call, to spot a stream stopped twice. */
class ChurnStream extends FakeStream {
  constructor(toolset) {
    super(toolset)
    this.stopCalls = 0
  }
  async stop() {
    this.stopCalls += 1
    if (this.stopCalls > 1) this.toolset.extraStopCalls += 1
    if (!this.stopped) this.toolset.live -= 1
    return super.stop()
  }
}

/**
 * The FakeToolset (toolset.js), with a live-stream count (at most one screencast per agent at
 * a time) and a first frame sent right after a start, as a browser sends one quickly.
 */
class ChurnToolset extends FakeToolset {
  constructor(key, frameData) {
    super()
    this.key = key
    this.frameData = frameData
    this.live = 0
    this.maxLive = 0
    this.extraStopCalls = 0
    this.framesEmitted = 0
  }
  async startScreencast() {
    this.starts += 1
    this.live += 1
    this.maxLive = Math.max(this.maxLive, this.live)
    const stream = new ChurnStream(this)
    this.current = stream
    setImmediate(() => this.emitCurrent())
    return stream
  }
  /** Emits the shared frame on the current stream, if it is live. */
  emitCurrent() {
    const stream = this.current
    if (!stream || stream.stopped) return
    this.framesEmitted += 1
    stream.emit('frame', {
      data: this.frameData,
      timestamp: Date.now(),
      viewport: { width: 1280, height: 720, offsetTop: 0, scrollOffsetX: 0, scrollOffsetY: 0, pageScaleFactor: 1 },
      sessionId: 1,
    })
  }
}

/**
 * A `ws` client of the churn. `onOpen(ws)` runs synchronously in the 'open' handler (before
 * any message is handled). Resolves `opened`, `firstFrame` and `closed` as they happen.
 */
class ChurnClient {
  constructor(url, { extended = false, onOpen } = {}) {
    this.ws = new WebSocket(url, extended ? [EXTENDED_PROTOCOL] : undefined, { perMessageDeflate: false })
    this.frames = 0
    this.messagesBeforeOpenHook = 0
    this.messages = 0
    this.error = null
    this.httpStatus = null
    this.isOpen = false
    this.isClosed = false
    let frameResolve
    this.firstFrame = new Promise((resolve) => (frameResolve = resolve))
    this.closed = new Promise((resolve) =>
      this.ws.once('close', (code) => {
        this.isClosed = true
        this.closeCode = code
        resolve()
      }),
    )
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => {
        this.isOpen = true
        this.messagesBeforeOpenHook = this.messages
        onOpen?.(this.ws)
        resolve()
      })
      this.ws.once('close', () =>
        reject(new StepError(`connection closed before open (${this.httpStatus ? `HTTP ${this.httpStatus}` : this.error?.message ?? 'no error'})`)),
      )
    })
    this.opened.catch(() => {})
    this.ws.on('message', (data, isBinary) => {
      this.messages += 1
      if (isBinary || data[0] !== 0x7b) {
        this.frames += 1
        if (this.frames === 1) frameResolve()
      }
    })
    this.ws.on('error', (err) => {
      this.error ??= err
    })
    this.ws.on('unexpected-response', (req, res) => {
      this.httpStatus = res.statusCode
      req.destroy()
      this.ws.terminate()
    })
  }
}

/**
 * One registry poller for every waiter: takes `registry.stats()` once per tick and checks each
 * pending predicate against it, instead of every worker polling on its own.
 */
class Monitor {
  constructor(registry, intervalMs = 5) {
    this.registry = registry
    this.intervalMs = intervalMs
    this.waiters = new Set()
    this.timer = null
    this.polls = 0
  }
  snapshot() {
    this.polls += 1
    const stats = this.registry.stats()
    return { stats, keys: new Set(stats.channels.map((c) => c.key)) }
  }
  waitUntil(predicate, { timeoutMs, what }) {
    return new Promise((resolve, reject) => {
      const waiter = { predicate, resolve, reject, deadline: Date.now() + timeoutMs, what, timeoutMs }
      this.waiters.add(waiter)
      this.#schedule()
    })
  }
  #schedule() {
    if (this.timer) return
    this.timer = setTimeout(() => {
      this.timer = null
      this.#tick()
    }, this.intervalMs)
  }
  #tick() {
    if (this.waiters.size === 0) return
    const snap = this.snapshot()
    const now = Date.now()
    for (const waiter of this.waiters) {
      let value
      try {
        value = waiter.predicate(snap)
      } catch (err) {
        this.waiters.delete(waiter)
        waiter.reject(err)
        continue
      }
      if (value) {
        this.waiters.delete(waiter)
        waiter.resolve(snap)
      } else if (now > waiter.deadline) {
        this.waiters.delete(waiter)
        waiter.reject(new StepError(`step timed out after ${waiter.timeoutMs} ms: ${waiter.what}`))
      }
    }
    if (this.waiters.size > 0) this.#schedule()
  }
  stop() {
    clearTimeout(this.timer)
    this.timer = null
    for (const waiter of this.waiters) waiter.reject(new StepError(`monitor stopped while waiting: ${waiter.what}`))
    this.waiters.clear()
  }
}

function openFds() {
  try {
    return fs.readdirSync('/proc/self/fd').length
  } catch {
    return null
  }
}

function memory() {
  const m = process.memoryUsage()
  return { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers }
}

const toMb = (bytes) => Math.round((bytes / MB) * 10) / 10

/** Quiescent memory reading: GC twice with a pause between (lets freed native memory settle). */
async function settledMemory() {
  forceGc()
  await sleep(100)
  forceGc()
  await sleep(50)
  return { ...memory(), fds: openFds() }
}

/**
 * The schedule: `bursts` burst units spread evenly among single units, so that the connections
 * add up to `cycles`. The first burst lands early (inside the warm-up when there is one).
 */
function makeSchedule({ cycles, burstSize, bursts, rand }) {
  const burstConnections = bursts * burstSize
  if (burstConnections > cycles) throw new Error(`${bursts} bursts of ${burstSize} exceed ${cycles} cycles`)
  const singles = cycles - burstConnections
  const totalWeight = SINGLE_KINDS.reduce((sum, [, w]) => sum + w, 0)
  const pickKind = () => {
    let r = rand() * totalWeight
    for (const [kind, weight] of SINGLE_KINDS) {
      r -= weight
      if (r < 0) return kind
    }
    return SINGLE_KINDS[0][0]
  }
  const units = []
  for (let i = 0; i < singles; i++) units.push({ type: 'single', kind: pickKind(), extended: rand() < 0.2 })
  // Insert bursts evenly: the k-th at position round((k + 0.25) * gap) of the singles.
  const gap = singles / Math.max(1, bursts)
  for (let k = bursts - 1; k >= 0; k--) units.splice(Math.round((k + 0.25) * gap), 0, { type: 'burst' })
  units.forEach((unit, i) => (unit.index = i))
  return units
}

/**
 * Runs the churn. Returns a summary `{ ok, failures, checks, ... }`; never throws for a failed
 * check or a step timeout (they are in `failures`), so callers can print the summary.
 */
async function runChurn(options = {}) {
  const o = {
    cycles: 10_000,
    burstSize: 100,
    bursts: undefined, // default: about 30 % of the cycles in bursts
    agents: 8,
    lingerMs: 20,
    frameIntervalMs: 50,
    stepTimeoutMs: 15_000,
    maxSeconds: 600,
    warmupCycles: 500,
    rssLimitMb: 30,
    checkRss: true,
    seed: 1,
    log: () => {},
    progressEvery: 1000,
    ...options,
  }
  if (o.bursts === undefined) o.bursts = Math.max(1, Math.round((o.cycles * 0.3) / o.burstSize))
  if (o.burstSize > 100) throw new Error('bursts above 100 viewers need maxViewersPerAgent raised')
  const started = Date.now()
  const deadline = started + o.maxSeconds * 1000
  const rand = prng(o.seed)
  const units = makeSchedule({ cycles: o.cycles, burstSize: o.burstSize, bursts: o.bursts, rand })
  const frameData = jpegFrame(0, 0, 0).toString('base64')

  const toolsets = new Map()
  let getToolsetCalls = 0
  const srv = await startServer({
    lingerMs: o.lingerMs,
    getToolset: (agentId, threadId) => {
      getToolsetCalls += 1
      return toolsets.get(threadId ? `${agentId}:${threadId}` : agentId)
    },
  })
  const monitor = new Monitor(srv.registry)
  // Agents: a-0 … a-(n-1); the last one is thread-scoped (channel key `a-N:t1`).
  const agents = Array.from({ length: o.agents }, (_, i) => {
    const threaded = o.agents > 1 && i === o.agents - 1
    const key = threaded ? `a-${i}:t1` : `a-${i}`
    const agent = {
      key,
      url: srv.url(`a-${i}`, threaded ? '?threadId=t1' : ''),
      toolset: new ChurnToolset(key, frameData),
      transitions: 0,
      connections: 0,
      units: 0,
      bursts: 0,
    }
    toolsets.set(key, agent.toolset)
    return agent
  })
  const ticker = setInterval(() => {
    for (const agent of agents) agent.toolset.emitCurrent()
  }, o.frameIntervalMs)

  const live = new Set() // clients not closed yet, terminated on failure
  const failures = []
  const kinds = {}
  let connections = 0
  let transitions = 0
  let unitsDone = 0
  let stopReason = null
  let nextProgress = o.progressEvery
  let rssPeak = 0
  const rssSamples = [] // [cycles, RSS MB] at each progress point (no forced GC)
  const rssSampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 500)

  const fail = (message) => {
    if (failures.length < 20) failures.push(message)
    stopReason ??= 'failure'
  }

  function track(client) {
    live.add(client)
    client.closed.then(() => live.delete(client))
    return client
  }

  /** Waits until `agent` has no channel and its toolset holds no live screencast. */
  async function waitIdle(agent, label) {
    const ts = agent.toolset
    await monitor.waitUntil((snap) => !snap.keys.has(agent.key) && ts.starts === ts.stops, {
      timeoutMs: o.stepTimeoutMs,
      what: `${label}: agent's channel gone and its screencast stopped (toolset starts ${ts.starts}, stops ${ts.stops}, channel ${
        srv.registry.stats().channels.find((c) => c.key === agent.key)?.sourceState ?? 'gone'
      })`,
    })
  }

  /** After a unit: exactly one more start and stop on this agent, nothing left over. */
  function checkTransition(agent, before, label) {
    const ts = agent.toolset
    if (ts.starts !== before + 1 || ts.stops !== before + 1) {
      throw new StepError(
        `${label}: expected exactly one screencast start and stop for this 0→1 transition; toolset starts ${before} → ${ts.starts}, stops ${before} → ${ts.stops}`,
      )
    }
    if (ts.live !== 0) throw new StepError(`${label}: ${ts.live} screencast(s) still live after the channel went idle`)
  }

  async function runSingle(agent, unit, label) {
    const closeOnOpen = unit.kind === 'close-on-open' || unit.kind === 'terminate-on-open'
    const client = track(
      new ChurnClient(agent.url, {
        extended: unit.extended,
        onOpen: closeOnOpen ? (ws) => (unit.kind === 'close-on-open' ? ws.close() : ws.terminate()) : undefined,
      }),
    )
    await within(client.opened, o.stepTimeoutMs, `${label}: WebSocket open`)
    connections += 1
    agent.connections += 1
    if (closeOnOpen) {
      if (client.messagesBeforeOpenHook !== 0) {
        throw new StepError(`${label}: ${client.messagesBeforeOpenHook} message(s) handled before the open hook`)
      }
    } else {
      await within(client.firstFrame, o.stepTimeoutMs, `${label}: first frame`)
      if (unit.kind === 'close-after-frame') client.ws.close()
      else client.ws.terminate()
    }
    await within(client.closed, o.stepTimeoutMs, `${label}: client 'close' event`)
  }

  async function runBurst(agent, label) {
    const clients = Array.from({ length: o.burstSize }, (_, i) => track(new ChurnClient(agent.url, { extended: i % 5 === 0 })))
    const count = (what) => clients.filter(what).length
    await within(Promise.all(clients.map((c) => c.opened)), o.stepTimeoutMs, `${label}: ${o.burstSize} WebSockets open`).catch(
      (err) => {
        throw new StepError(`${err.message} (${count((c) => c.isOpen)} open; first error: ${clients.find((c) => c.error)?.error?.message ?? 'none'})`)
      },
    )
    connections += clients.length
    agent.connections += clients.length
    await within(Promise.all(clients.map((c) => c.firstFrame)), o.stepTimeoutMs, `${label}: a frame on every viewer`).catch((err) => {
      throw new StepError(`${err.message} (${count((c) => c.frames > 0)} of ${clients.length} got one)`)
    })
    await monitor.waitUntil(
      (snap) => snap.stats.channels.find((c) => c.key === agent.key)?.viewers.length === o.burstSize,
      { timeoutMs: o.stepTimeoutMs, what: `${label}: registry shows ${o.burstSize} viewers` },
    )
    clients.forEach((c, i) => (i % 2 === 0 ? c.ws.close() : c.ws.terminate()))
    await within(Promise.all(clients.map((c) => c.closed)), o.stepTimeoutMs, `${label}: every client closed`).catch((err) => {
      throw new StepError(`${err.message} (${count((c) => c.isClosed)} closed)`)
    })
  }

  let cursor = 0
  let phaseEnd = 0
  async function worker(agent) {
    while (stopReason === null && cursor < phaseEnd) {
      if (Date.now() > deadline) {
        stopReason = 'time limit'
        break
      }
      const unit = units[cursor++]
      const before = agent.toolset.starts
      const label = `agent ${agent.key} unit #${unit.index} (${unit.type === 'burst' ? `burst of ${o.burstSize}` : `single ${unit.kind}${unit.extended ? ', extended' : ''}`})`
      try {
        if (unit.type === 'burst') await runBurst(agent, label)
        else await runSingle(agent, unit, label)
        await waitIdle(agent, label)
        checkTransition(agent, before, label)
      } catch (err) {
        fail(err instanceof StepError ? err.message : `${label}: ${err.stack ?? err}`)
        break
      }
      transitions += 1
      agent.transitions += 1
      agent.units += 1
      if (unit.type === 'burst') agent.bursts += 1
      const kind = unit.type === 'burst' ? 'burst' : unit.kind
      kinds[kind] = (kinds[kind] ?? 0) + 1
      unitsDone += 1
      if (connections >= nextProgress) {
        nextProgress += o.progressEvery
        rssSamples.push([connections, toMb(process.memoryUsage().rss)])
        o.log(
          `progress: ${connections}/${o.cycles} cycles, ${transitions} transitions, ${((Date.now() - started) / 1000).toFixed(1)} s, rss ${toMb(process.memoryUsage().rss)} MB`,
        )
      }
    }
  }

  async function runPhase(end) {
    phaseEnd = end
    await Promise.all(agents.map((agent) => worker(agent)))
  }

  // Phase 1: the warm-up (units up to `warmupCycles` connections), then a quiescent baseline.
  let warmupEnd = 0
  for (let c = 0; warmupEnd < units.length && c < o.warmupCycles; warmupEnd++) {
    c += units[warmupEnd].type === 'burst' ? o.burstSize : 1
  }
  const beforeStart = await settledMemory()
  let baseline = null
  let warmupConnections = 0
  let final = null
  try {
    await runPhase(warmupEnd)
    warmupConnections = connections
    if (stopReason === null) {
      baseline = await settledMemory()
      o.log(`warm-up: ${connections} cycles in ${((Date.now() - started) / 1000).toFixed(1)} s; baseline rss ${toMb(baseline.rss)} MB, ${baseline.fds} fds`)
      await runPhase(units.length)
    }
  } finally {
    clearInterval(ticker)
    // Whatever happened, end every client, then wait (bounded) for the registry to settle.
    for (const client of live) client.ws.terminate()
    try {
      await monitor.waitUntil(
        (snap) => snap.stats.channels.length === 0 && snap.stats.viewers === 0 && agents.every((a) => a.toolset.starts === a.toolset.stops),
        { timeoutMs: o.stepTimeoutMs, what: 'end of run: every channel gone, no viewer, every screencast stopped' },
      )
    } catch (err) {
      fail(err.message)
    }
    await sleep(Math.max(50, o.lingerMs * 2)) // anything late (a start or stop after the idle state) shows up now
    final = srv.registry.stats()
    monitor.stop()
    clearInterval(rssSampler)
  }
  const end = await settledMemory()
  const durationS = (Date.now() - started) / 1000
  await srv.close()

  // ---- checks ---------------------------------------------------------------------------
  const checks = []
  const check = (name, ok, detail) => {
    checks.push({ name, ok: Boolean(ok), detail })
    if (!ok) fail(`check failed: ${name}: ${detail}`)
  }
  const tsStarts = agents.reduce((s, a) => s + a.toolset.starts, 0)
  const tsStops = agents.reduce((s, a) => s + a.toolset.stops, 0)
  check('all cycles done', connections === o.cycles, `${connections} of ${o.cycles} connections (${stopReason ?? 'completed'})`)
  check('toolset starts == stops == transitions', tsStarts === transitions && tsStops === transitions, `starts ${tsStarts}, stops ${tsStops}, transitions ${transitions}`)
  check('registry starts == stops == transitions', final.starts === transitions && final.stops === transitions, `starts ${final.starts}, stops ${final.stops}, transitions ${transitions}`)
  check('per agent: toolset starts == stops == transitions', agents.every((a) => a.toolset.starts === a.transitions && a.toolset.stops === a.transitions),
    agents.map((a) => `${a.key} ${a.toolset.starts}/${a.toolset.stops}/${a.transitions}`).join(', '))
  check('at most one screencast per agent at a time', agents.every((a) => a.toolset.maxLive <= 1), agents.map((a) => `${a.key} ${a.toolset.maxLive}`).join(', '))
  check('no stream stopped twice', agents.every((a) => a.toolset.extraStopCalls === 0), agents.map((a) => `${a.key} ${a.toolset.extraStopCalls}`).join(', '))
  check('no channel left', final.channels.length === 0, `${final.channels.length} channel(s): ${final.channels.map((c) => `${c.key} ${c.sourceState} ${c.viewers.length} viewers`).join('; ')}`)
  check('no viewer left', final.viewers === 0, `viewers ${final.viewers}`)
  check('viewersAdmitted == viewersClosed == connections', final.viewersAdmitted === connections && final.viewersClosed === connections,
    `admitted ${final.viewersAdmitted}, closed ${final.viewersClosed}, connections ${connections}`)
  check('no admission refused', final.admissionsRefused === 0, `admissionsRefused ${final.admissionsRefused}`)
  let rssGrowthMb = null
  if (baseline) {
    rssGrowthMb = toMb(end.rss - baseline.rss)
    if (o.checkRss) check(`RSS growth after warm-up <= ${o.rssLimitMb} MB`, rssGrowthMb <= o.rssLimitMb, `${rssGrowthMb} MB (${toMb(baseline.rss)} → ${toMb(end.rss)} MB)`)
    if (baseline.fds !== null && end.fds !== null) {
      // Both readings are taken with the server listening and no client connected.
      check('no file descriptor leaked', end.fds <= baseline.fds, `${baseline.fds} fds after warm-up, ${end.fds} at the end`)
    }
  }

  return {
    ok: failures.length === 0,
    failures,
    durationS: Math.round(durationS * 10) / 10,
    options: {
      cycles: o.cycles, burstSize: o.burstSize, bursts: o.bursts, agents: o.agents, lingerMs: o.lingerMs,
      frameIntervalMs: o.frameIntervalMs, stepTimeoutMs: o.stepTimeoutMs, maxSeconds: o.maxSeconds,
      warmupCycles: o.warmupCycles, rssLimitMb: o.rssLimitMb, checkRss: o.checkRss, seed: o.seed,
    },
    connections,
    transitions,
    units: unitsDone,
    unitKinds: kinds,
    cyclesPerSecond: Math.round(connections / durationS),
    registry: {
      starts: final.starts, stops: final.stops, viewersAdmitted: final.viewersAdmitted, viewersClosed: final.viewersClosed,
      viewers: final.viewers, channels: final.channels.length, admissionsRefused: final.admissionsRefused,
    },
    toolset: { starts: tsStarts, stops: tsStops, getToolsetCalls, framesEmitted: agents.reduce((s, a) => s + a.toolset.framesEmitted, 0) },
    agents: agents.map((a) => ({ key: a.key, transitions: a.transitions, bursts: a.bursts, connections: a.connections, starts: a.toolset.starts, stops: a.toolset.stops })),
    memory: {
      gcForced: typeof global.gc === 'function',
      atStartMb: toMb(beforeStart.rss),
      warmupConnections,
      baselineMb: baseline && toMb(baseline.rss),
      endMb: toMb(end.rss),
      peakMb: toMb(rssPeak),
      samplesMb: rssSamples,
      rssGrowthMb,
      heapUsedMb: { baseline: baseline && toMb(baseline.heapUsed), end: toMb(end.heapUsed) },
      externalMb: { baseline: baseline && toMb(baseline.external), end: toMb(end.external) },
      fds: { start: beforeStart.fds, baseline: baseline?.fds ?? null, end: end.fds },
    },
    checks,
    stopReason: stopReason ?? 'completed',
    monitorPolls: monitor.polls,
  }
}

module.exports = { runChurn, prng, within, StepError, ChurnToolset, ChurnClient, Monitor, makeSchedule, settledMemory }

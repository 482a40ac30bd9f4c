'use strict'
// The source side, with real Chromium: what a deployer whose agents run on the same Node thread
// feels when the screencast is read in JS versus in Rust. Two modes, each in a fresh server
// process (`node bench/source-side.js --serve <mode>`), the same Hono app, the same fan-out
// (setupBrowserStream), the same Chromium pages and the same viewers; only the source differs:
//   ts-cdp   the TypeScript design (as Mastra's browser toolset): a CDP session per page
//            through playwright-core, `Page.startScreencast`, each `Page.screencastFrame`
//            acknowledged and its base64 JPEG handed to the viewers — through the package's
//            toolset path (`getToolset`, the tests' CdpToolset).
//   native   `getCdpEndpoint`: Rust reads the screencast from the browser's DevTools endpoint;
//            JS never sees a frame.
// In both modes the server process also holds a playwright-core connection to the browser (the
// agent driving its pages), serves the animated page, a GET /ping route and a GET /stats route
// (event-loop delay from perf_hooks.monitorEventLoopDelay).
//
// The bench process launches one headless Chromium per run (agents = tabs, or one Chromium per
// agent with --browsers per-agent), connects `--viewers` ws viewers per agent (extended wire,
// `browser-stream.v1`; `--compat` for the compat wire), hits GET /ping every 20 ms, and reads
// the server's main-thread CPU from /proc/<pid>/task/<pid>/schedstat over the window.
//
// Options: --quick (5 s window) | --window-ms N | --warmup-ms N | --agents N | --viewers N |
//          --modes ts-cdp,native | --browsers shared|per-agent | --compat | --pin | --reps N
//          (N runs per mode, the modes alternating, medians shown; each run in fresh processes)
// Output: a Markdown table on stdout, JSON in bench/results/<timestamp>-source-side.json.

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const { parseFlags, processCpuSeconds, mainThreadCpuSeconds, treeCpuSeconds } = require('./proc')

const ROOT = path.resolve(__dirname, '..')
const RESULTS = path.join(__dirname, 'results')
const ANIMATED_FILE = path.join(ROOT, 'examples/demo/animated.html')
const SCREENCAST = { format: 'jpeg', quality: 70, maxWidth: 1280, maxHeight: 720 }
const WIDTH = 1280
const HEIGHT = 720
const PING_EVERY_MS = 20
const MODES = ['ts-cdp', 'native']

// ---- options --------------------------------------------------------------------------------

function parseOptions(flags) {
  const quick = flags.quick === true
  const options = {
    quick,
    modes: flags.modes ? String(flags.modes).split(',').map((m) => m.trim()) : MODES,
    agents: Number(flags.agents ?? 4),
    viewers: Number(flags.viewers ?? 3),
    warmupMs: Number(flags['warmup-ms'] ?? 3000),
    windowMs: Number(flags['window-ms'] ?? (quick ? 5000 : 10000)),
    browsers: String(flags.browsers ?? 'shared'),
    extended: flags.compat !== true,
    pin: flags.pin === true,
    reps: Number(flags.reps ?? 1),
  }
  for (const mode of options.modes) if (!MODES.includes(mode)) throw new Error(`unknown mode ${mode} (${MODES.join(', ')})`)
  if (!['shared', 'per-agent'].includes(options.browsers)) throw new Error('--browsers is shared or per-agent')
  for (const n of [options.agents, options.viewers, options.warmupMs, options.windowMs, options.reps]) {
    if (!Number.isFinite(n) || n <= 0) throw new Error('agents, viewers, warmup-ms, window-ms and reps must be positive numbers')
  }
  return options
}

// ---- the server process (--serve <mode>) ----------------------------------------------------

async function serve(mode) {
  const { monitorEventLoopDelay } = require('node:perf_hooks')
  const { Hono } = require('hono')
  const { serve: honoServe } = require('@hono/node-server')
  const { chromium } = require('playwright-core')
  const { setupBrowserStream } = require(ROOT)
  const { CdpToolset } = require(path.join(ROOT, '__test__/support/cdp-toolset.js'))

  /** agent id → its browser's DevTools endpoint (one per agent, possibly the same browser). */
  const endpoints = JSON.parse(process.env.SOURCE_SIDE_ENDPOINTS)
  const agentIds = Object.keys(endpoints)
  const animated = fs.readFileSync(ANIMATED_FILE, 'utf8')

  // Each sample is the time between two ticks of a 1 ms timer: the delay is what exceeds 1 ms.
  const DELAY_RESOLUTION_MS = 1
  const delay = monitorEventLoopDelay({ resolution: DELAY_RESOLUTION_MS })
  delay.enable()

  const toolsets = new Map()
  const targets = new Map()
  const app = new Hono()
  app.get('/animated', (c) => c.html(animated))
  app.get('/ping', (c) => c.text('pong'))
  app.get('/stats', (c) => {
    const ms = (ns) => Math.max(0, ns / 1e6 - DELAY_RESOLUTION_MS)
    const body = {
      p50Ms: ms(delay.percentile(50)),
      p99Ms: ms(delay.percentile(99)),
      maxMs: ms(delay.max),
      meanMs: ms(delay.mean),
      samples: delay.count,
      resolutionMs: DELAY_RESOLUTION_MS,
      raw: { p50Ms: delay.percentile(50) / 1e6, p99Ms: delay.percentile(99) / 1e6, maxMs: delay.max / 1e6 },
    }
    if (c.req.query('reset') !== undefined) delay.reset()
    return c.json(body)
  })

  const config = { screencastOptions: SCREENCAST, lingerMs: 1000, logger: { warn: console.warn, error: console.error } }
  if (mode === 'ts-cdp') {
    config.getToolset = (agentId) => toolsets.get(agentId)
  } else {
    config.getCdpEndpoint = (agentId) => (targets.has(agentId) ? { endpoint: endpoints[agentId], targetId: targets.get(agentId), followNewTabs: false } : undefined)
  }
  const { injectWebSocket, registry } = setupBrowserStream(app, config)
  const server = await new Promise((resolve) => {
    const s = honoServe({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s))
  })
  injectWebSocket(server)
  const { port } = server.address()

  // The agents: playwright-core connected to each browser (as Mastra's toolset is), one page
  // per agent on the animated page.
  const browsers = new Map()
  for (const agentId of agentIds) {
    const endpoint = endpoints[agentId]
    if (!browsers.has(endpoint)) browsers.set(endpoint, { browser: await chromium.connectOverCDP(endpoint), used: 0 })
    const entry = browsers.get(endpoint)
    const context = entry.browser.contexts()[0]
    // The browser's first tab for the first agent of that browser, new tabs for the others.
    const page = entry.used === 0 && context.pages()[0] ? context.pages()[0] : await context.newPage()
    entry.used += 1
    await page.goto(`http://127.0.0.1:${port}/animated`)
    const probe = await context.newCDPSession(page)
    const { targetInfo } = await probe.send('Target.getTargetInfo')
    await probe.detach()
    targets.set(agentId, targetInfo.targetId)
    if (mode === 'ts-cdp') toolsets.set(agentId, await CdpToolset.create(page, { threadId: agentId }))
  }

  let closing = false
  const shutdown = async () => {
    if (closing) return
    closing = true
    const hard = setTimeout(() => process.exit(0), 3000)
    hard.unref()
    await registry.close().catch(() => {})
    server.closeAllConnections?.()
    await new Promise((resolve) => server.close(() => resolve()))
    for (const { browser } of browsers.values()) await browser.close().catch(() => {})
    process.exit(0)
  }
  process.on('SIGTERM', shutdown)
  process.on('disconnect', shutdown)
  process.send({ type: 'ready', port })
}

// ---- the bench process ----------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function percentile(values, p) {
  if (values.length === 0) return null
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}

function getJson(agent, port, urlPath) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => (body += d))
      res.on('end', () => {
        try {
          resolve(JSON.parse(body))
        } catch (err) {
          reject(err)
        }
      })
    })
    req.setTimeout(5000, () => req.destroy(new Error(`GET ${urlPath} timed out`)))
    req.on('error', reject)
  })
}

/** GET /ping every 20 ms; round-trip times of the requests started while `recording`. */
function startPinger(port) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })
  const state = { recording: false, rtts: [], failures: 0, inFlight: 0 }
  const timer = setInterval(() => {
    const recording = state.recording
    const started = process.hrtime.bigint()
    state.inFlight += 1
    const req = http.get({ host: '127.0.0.1', port, path: '/ping', agent }, (res) => {
      res.resume()
      res.on('end', () => {
        state.inFlight -= 1
        if (recording) state.rtts.push(Number(process.hrtime.bigint() - started) / 1e6)
      })
    })
    req.setTimeout(5000, () => req.destroy(new Error('timeout')))
    req.on('error', () => {
      state.inFlight -= 1
      if (recording) state.failures += 1
    })
  }, PING_EVERY_MS)
  return {
    state,
    stop() {
      clearInterval(timer)
      agent.destroy()
    },
  }
}

/** A ws viewer that counts frames (extended: binary kind 1; compat: non-JSON text). */
function startViewer(url, extended) {
  const WebSocket = require('ws')
  const ws = extended ? new WebSocket(url, ['browser-stream.v1']) : new WebSocket(url)
  const viewer = { ws, frames: 0, windowFrames: 0, bytes: 0, latencies: [], recording: false, error: null, statuses: [] }
  ws.on('message', (data, isBinary) => {
    let isFrame = false
    let captureMs = null
    if (extended && isBinary) {
      isFrame = data.length >= 56 && data[0] === 1
      if (isFrame) captureMs = data.readDoubleBE(12)
    } else if (!extended && !isBinary) {
      const first = data[0]
      isFrame = first !== 0x7b // '{': JSON control messages
      if (!isFrame) {
        try {
          const msg = JSON.parse(data.toString('utf8'))
          if (msg.status || msg.error) viewer.statuses.push(msg.status ?? msg.error)
        } catch {
          // not JSON after all
        }
      }
    } else if (extended && !isBinary) {
      try {
        const msg = JSON.parse(data.toString('utf8'))
        if (msg.status || msg.error) viewer.statuses.push(msg.status ?? msg.error)
      } catch {
        // ignore
      }
    }
    if (!isFrame) return
    viewer.frames += 1
    if (viewer.recording) {
      viewer.windowFrames += 1
      viewer.bytes += data.length
      if (captureMs) viewer.latencies.push(Date.now() - captureMs)
    }
  })
  ws.on('error', (err) => {
    viewer.error ??= err.message
  })
  viewer.opened = new Promise((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('close', () => reject(new Error(`viewer closed before open: ${viewer.error ?? ''}`)))
  })
  viewer.opened.catch(() => {})
  return viewer
}

async function stopChild(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
  await exited
  clearTimeout(timer)
}

async function runMode(mode, options) {
  const { launchChromium } = require(path.join(ROOT, '__test__/support/chromium.js'))
  const browsers = []
  let server = null
  let pinger = null
  const viewers = []
  try {
    // The browsers (Chromium's own args: headless, 1280×720 window; see __test__/support/chromium.js).
    const count = options.browsers === 'per-agent' ? options.agents : 1
    for (let i = 0; i < count; i++) browsers.push(await launchChromium({ url: 'about:blank', width: WIDTH, height: HEIGHT }))
    const endpoints = {}
    for (let i = 0; i < options.agents; i++) endpoints[`agent-${i}`] = browsers[options.browsers === 'per-agent' ? i : 0].endpoint

    const command = options.pin && os.cpus().length >= 2 ? 'taskset' : process.execPath
    const args = [...(command === 'taskset' ? ['-c', '0', process.execPath] : []), __filename, '--serve', mode]
    server = spawn(command, args, {
      env: { ...process.env, SOURCE_SIDE_ENDPOINTS: JSON.stringify(endpoints) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    const port = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${mode} server not ready within 30 s`)), 30_000)
      server.on('message', (message) => {
        if (message?.type === 'ready') {
          clearTimeout(timer)
          resolve(message.port)
        }
      })
      server.once('exit', (code, signal) => {
        clearTimeout(timer)
        reject(new Error(`${mode} server exited (${code ?? signal}) before ready`))
      })
    })
    // With taskset the child is taskset, which execs node: the same pid.
    const pid = server.pid

    for (let a = 0; a < options.agents; a++) {
      for (let v = 0; v < options.viewers; v++) {
        const viewer = startViewer(`ws://127.0.0.1:${port}/browser/agent-${a}/stream`, options.extended)
        viewer.agent = `agent-${a}`
        viewers.push(viewer)
      }
    }
    await Promise.all(viewers.map((v) => v.opened))
    pinger = startPinger(port)
    const statsAgent = new http.Agent({ keepAlive: true })

    await sleep(options.warmupMs)
    const noFrames = [...new Set(viewers.filter((v) => v.frames === 0).map((v) => v.agent))]

    // The window.
    await getJson(statsAgent, port, '/stats?reset')
    for (const v of viewers) v.recording = true
    pinger.state.recording = true
    const start = { t: process.hrtime.bigint(), main: mainThreadCpuSeconds(pid), proc: processCpuSeconds(pid), chromium: browsers.reduce((s, b) => s + treeCpuSeconds(b.process.pid), 0) }
    await sleep(options.windowMs)
    const end = { t: process.hrtime.bigint(), main: mainThreadCpuSeconds(pid), proc: processCpuSeconds(pid), chromium: browsers.reduce((s, b) => s + treeCpuSeconds(b.process.pid), 0) }
    for (const v of viewers) v.recording = false
    pinger.state.recording = false
    const loop = await getJson(statsAgent, port, '/stats')
    statsAgent.destroy()
    await sleep(500) // let the last recorded pings land

    const secs = Number(end.t - start.t) / 1e9
    const perViewerFps = viewers.map((v) => v.windowFrames / secs)
    const perAgentFps = {}
    for (let a = 0; a < options.agents; a++) {
      const mine = viewers.filter((v) => v.agent === `agent-${a}`)
      perAgentFps[`agent-${a}`] = mine.reduce((s, v) => s + v.windowFrames, 0) / mine.length / secs
    }
    const latencies = viewers.flatMap((v) => v.latencies)
    const rtts = pinger.state.rtts
    return {
      mode,
      windowSecs: secs,
      viewers: viewers.length,
      fpsPerViewerMean: perViewerFps.reduce((s, x) => s + x, 0) / perViewerFps.length,
      fpsPerViewerMin: Math.min(...perViewerFps),
      fpsSum: perViewerFps.reduce((s, x) => s + x, 0),
      perAgentFps,
      agentsWithoutFramesAfterWarmup: noFrames,
      mbPerSecond: viewers.reduce((s, v) => s + v.bytes, 0) / secs / 1e6,
      frameLatencyP50Ms: percentile(latencies, 50),
      frameLatencyP99Ms: percentile(latencies, 99),
      // Main-thread CPU per frame the source produced (one per agent and frame, whatever the viewers).
      mainCpuMsPerSourceFrame:
        start.main == null || end.main == null
          ? null
          : (1000 * (end.main - start.main)) / Math.max(1, Object.values(perAgentFps).reduce((s, f) => s + f, 0) * secs),
      mainCpuPct: start.main == null || end.main == null ? null : (100 * (end.main - start.main)) / secs,
      serverCpuPct: start.proc == null || end.proc == null ? null : (100 * (end.proc - start.proc)) / secs,
      chromiumCpuPct: (100 * (end.chromium - start.chromium)) / secs,
      eventLoopP50Ms: loop.p50Ms,
      eventLoopP99Ms: loop.p99Ms,
      eventLoopMaxMs: loop.maxMs,
      eventLoopRaw: loop,
      pingP50Ms: percentile(rtts, 50),
      pingP99Ms: percentile(rtts, 99),
      pingCount: rtts.length,
      pingFailures: pinger.state.failures,
      viewerErrors: viewers.filter((v) => v.error).map((v) => v.error),
      viewerStatuses: [...new Set(viewers.flatMap((v) => v.statuses))],
    }
  } finally {
    pinger?.stop()
    for (const v of viewers) {
      try {
        v.ws.terminate()
      } catch {
        // already closed
      }
    }
    await stopChild(server).catch(() => {})
    await Promise.all(browsers.map((b) => b.close().catch(() => {})))
  }
}

function median(values) {
  const sorted = values.filter((v) => v != null && Number.isFinite(v)).sort((a, b) => a - b)
  if (sorted.length === 0) return null
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/** The median of each numeric metric over a mode's runs that did not fail. */
function summarize(mode, runs) {
  const ok = runs.filter((r) => !r.failed)
  const failures = runs.filter((r) => r.failed).map((r) => r.failed)
  if (ok.length === 0) return { mode, failed: failures[0] ?? 'no run' }
  const summary = { mode, runs: runs.length, failures }
  for (const key of Object.keys(ok[0])) {
    if (typeof ok[0][key] === 'number') summary[key] = median(ok.map((r) => r[key]))
  }
  summary.perAgentFps = Object.fromEntries(Object.keys(ok[0].perAgentFps).map((a) => [a, median(ok.map((r) => r.perAgentFps[a]))]))
  summary.agentsWithoutFramesAfterWarmup = [...new Set(ok.flatMap((r) => r.agentsWithoutFramesAfterWarmup))]
  summary.viewerErrors = ok.flatMap((r) => r.viewerErrors)
  summary.pingCount = ok.reduce((s, r) => s + r.pingCount, 0)
  summary.pingFailures = ok.reduce((s, r) => s + r.pingFailures, 0)
  return summary
}

// ---- report ---------------------------------------------------------------------------------

const fmt = (value, digits = 1) => (value == null || !Number.isFinite(value) ? '–' : Number(value).toFixed(digits))
const ratio = (a, b) => (a == null || b == null || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? '–' : `${(a / b).toFixed(2)}×`)

function report(results, options, meta) {
  const out = []
  out.push(`## The source side, with real Chromium (${meta.date})`, '')
  out.push(`Machine: ${meta.cpu}, ${meta.cpus} CPUs, load average at start ${meta.loadavg}; Node ${meta.node}; ${meta.chromium}.`)
  out.push(
    `Command: \`${meta.command}\`. ${options.agents} agents (${options.browsers === 'shared' ? 'tabs of one headless Chromium' : 'one headless Chromium each'}, ${WIDTH}×${HEIGHT}, examples/demo/animated.html), ${options.viewers} ${options.extended ? 'extended (browser-stream.v1)' : 'compat'} viewers per agent; screencast ${JSON.stringify(SCREENCAST)}; warm-up ${options.warmupMs} ms, window ${options.windowMs} ms; ${options.reps} run(s) per mode, alternating, medians shown; GET /ping every ${PING_EVERY_MS} ms (keep-alive); event-loop delay = perf_hooks.monitorEventLoopDelay samples at 1 ms resolution minus the 1 ms; main-thread CPU from /proc/<pid>/task/<pid>/schedstat; server pinned: ${options.pin ? 'CPU 0' : 'no'}.`,
    '',
  )
  const cols = [
    ['frames/s per viewer (mean)', 'fpsPerViewerMean'],
    ['frames/s, all viewers', 'fpsSum'],
    ['Node main-thread CPU %', 'mainCpuPct'],
    ['main-thread CPU ms per source frame', 'mainCpuMsPerSourceFrame'],
    ['server process CPU % (all threads)', 'serverCpuPct'],
    ['event loop delay p50 ms', 'eventLoopP50Ms'],
    ['event loop delay p99 ms', 'eventLoopP99Ms'],
    ['GET /ping p50 ms', 'pingP50Ms'],
    ['GET /ping p99 ms', 'pingP99Ms'],
    ['Chromium CPU %', 'chromiumCpuPct'],
  ]
  const byMode = Object.fromEntries(results.map((r) => [r.mode, r]))
  const shown = options.modes.filter((m) => byMode[m])
  const header = ['metric', ...shown.map((m) => (m === 'ts-cdp' ? 'ts-cdp (JS reads CDP)' : 'native (Rust reads CDP)'))]
  const both = byMode['ts-cdp'] && byMode.native && !byMode['ts-cdp'].failed && !byMode.native.failed
  if (both) header.push('ts-cdp ÷ native')
  out.push(`| ${header.join(' | ')} |`, `| ${header.map(() => '---').join(' | ')} |`)
  for (const [label, key] of cols) {
    const row = [label, ...shown.map((m) => (byMode[m].failed ? 'failed' : fmt(byMode[m][key], key.startsWith('fps') ? 1 : 2)))]
    if (both) row.push(ratio(byMode['ts-cdp'][key], byMode.native[key]))
    out.push(`| ${row.join(' | ')} |`)
  }
  out.push('')
  for (const r of results) {
    if (r.failed) {
      out.push(`- ${r.mode}: failed: ${r.failed}`)
      continue
    }
    const perAgent = Object.entries(r.perAgentFps).map(([a, f]) => `${a} ${fmt(f)}`).join(', ')
    const notes = [`frames/s per agent (per viewer): ${perAgent}`, `${r.pingCount} pings, ${r.pingFailures} failed`]
    if (r.failures?.length) notes.push(`${r.failures.length} failed run(s): ${r.failures[0]}`)
    if (r.frameLatencyP50Ms != null) notes.push(`frame capture→viewer p50 / p99 ${fmt(r.frameLatencyP50Ms, 0)} / ${fmt(r.frameLatencyP99Ms, 0)} ms`)
    if (r.agentsWithoutFramesAfterWarmup.length) notes.push(`no frame after warm-up: ${r.agentsWithoutFramesAfterWarmup.join(', ')}`)
    if (r.viewerErrors.length) notes.push(`viewer errors: ${[...new Set(r.viewerErrors)].join('; ')}`)
    out.push(`- ${r.mode}: ${notes.join('; ')}.`)
  }
  return out.join('\n')
}

async function main() {
  const flags = parseFlags(process.argv.slice(2))
  if (flags.serve) return serve(String(flags.serve))
  if (flags.help) {
    process.stdout.write(fs.readFileSync(__filename, 'utf8').split('\n').filter((l) => l.startsWith('//')).join('\n') + '\n')
    return
  }
  const options = parseOptions(flags)
  const { findChromium } = require(path.join(ROOT, '__test__/support/chromium.js'))
  const chromePath = findChromium()
  if (!chromePath) throw new Error('Chromium not found: install chromium or set CHROME_PATH')
  let chromiumVersion = 'Chromium'
  try {
    chromiumVersion = require('node:child_process').execFileSync(chromePath, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    // version unknown
  }
  const date = new Date().toISOString()
  const meta = {
    date,
    cpu: os.cpus()[0]?.model ?? 'unknown CPU',
    cpus: os.cpus().length,
    loadavg: os.loadavg().map((l) => l.toFixed(2)).join(' '),
    node: process.version,
    chromium: chromiumVersion,
    command: `node bench/source-side.js ${process.argv.slice(2).join(' ')}`.trim(),
  }
  const runs = []
  for (let rep = 0; rep < options.reps; rep++) {
    for (const mode of options.modes) {
      const loadavg = os.loadavg()[0]
      process.stderr.write(`source-side: ${mode} (run ${rep + 1}/${options.reps}, load ${loadavg.toFixed(1)})…\n`)
      try {
        runs.push({ rep, loadavg, ...(await runMode(mode, options)) })
      } catch (err) {
        runs.push({ rep, loadavg, mode, failed: err.message })
      }
    }
  }
  const results = options.modes.map((mode) => summarize(mode, runs.filter((r) => r.mode === mode)))
  const text = report(results, options, meta)
  process.stdout.write(`${text}\n`)
  fs.mkdirSync(RESULTS, { recursive: true })
  const file = path.join(RESULTS, `${date.replace(/[:.]/g, '-')}-source-side.json`)
  fs.writeFileSync(file, `${JSON.stringify({ meta, options, screencast: SCREENCAST, results, runs }, null, 2)}\n`)
  process.stderr.write(`source-side: wrote ${path.relative(ROOT, file)}\n`)
  if (runs.some((r) => r.failed)) process.exitCode = 1
}

main().catch((err) => {
  process.stderr.write(`source-side: ${err.stack ?? err}\n`)
  process.exit(1)
})

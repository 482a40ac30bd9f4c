'use strict'
// The benchmark (`npm run bench [-- --quick]`): the same Hono app, the same frames and the same
// load generator against each contender, in one run, each in a fresh server process:
//   seed          the TypeScript design planned for Mastra (bench/servers/seed.ts)
//   tuned         the same, frames decoded once and sent binary, busy viewers skip (tuned.ts)
//   addon         this package, native sockets, frames pushed from JS per frame (addon.ts)
//   addon-rust    this package, frames made by its Rust replay source (addon.ts, BENCH_SOURCE=rust)
//   addon-binary  the addon-rust server, its viewers on the extended wire (subprotocol
//                 browser-stream.v1): binary frames, a 56-byte header + the JPEG, as tuned TS
//   physical      the least any server must do: vectored writes, no WebSocket logic (Rust)
// The server is pinned to CPU 0 and the load generator to CPU 1 (when `taskset` and 2 CPUs are
// there) so they do not steal each other's time. Results: a Markdown report on stdout and
// bench/results/<date>-<mode>.{json,md}. No timing assertion anywhere: it fails only when a
// run cannot be carried out.
//
// Options: --quick | --contenders a,b | --viewers 100,500 | --sizes 50,100 (KB) | --reps N |
//          --window-ms N | --warmup-ms N | --fps N | --no-capacity | --no-stalled | --no-relay |
//          --no-video
// After these, bench/relay.js runs (what the NATS relay adds: 100 viewers on the owner vs on a
// second instance, latency and CPU per relayed frame; --no-relay skips it). Then the video
// benchmarks run too, in the same mode (--quick or full): bench/video.js
// (H.264 vs MJPEG viewers on a real Chromium page: bytes, quality, encode cost, latency), then
// bench/video-delivery.js (viewers held at ≥ 99% on H.264 vs tuned TS on JPEG),
// bench/source-side.js (the TypeScript CDP source vs the native one, 4 agents),
// bench/video-link.js (a viewer behind a tc-shaped link; needs root) and bench/webrtc.js
// (server CPU per WebRTC peer, 100 peers joining at once). --no-video skips them;
// --video-only runs only them, passing the other options to bench/video.js (its --help lists
// them).

const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const readline = require('node:readline')
const { parseFlags, printHeadComment, processCpuSeconds, mainThreadCpuSeconds, rssBytes } = require('./proc')
const { ROOT, BENCH, PHYSICAL, prepare, benchImage, canPin, pinned, startNodeServer, stopProcess, runLoadgen } = require('./load')

/** A server over this RSS is killed: the seed design can queue without bound under overload. */
const RSS_GUARD_BYTES = 4 * 1024 ** 3

const CONTENDERS = {
  seed: { label: 'seed TS', script: 'seed.js' },
  tuned: { label: 'tuned TS', script: 'tuned.js' },
  addon: { label: 'addon, JS push', script: 'addon.js', env: { BENCH_SOURCE: 'js' } },
  'addon-rust': { label: 'addon, Rust source', script: 'addon.js', env: { BENCH_SOURCE: 'rust' } },
  // The same server as addon-rust; only the viewers differ (extended wire, binary frames).
  'addon-binary': {
    label: 'addon, binary',
    script: 'addon.js',
    env: { BENCH_SOURCE: 'rust' },
    loadgenArgs: ['--protocol', 'browser-stream.v1'],
  },
  physical: { label: 'physical limit', binary: PHYSICAL },
}

// ---- options ------------------------------------------------------------------------------

function parseOptions(argv) {
  const flags = parseFlags(argv)
  const quick = flags.quick === true
  const list = (value, fallback) => (value ? String(value).split(',').map((v) => v.trim()) : fallback)
  const numbers = (value, fallback) => list(value, fallback).map(Number)
  const options = {
    mode: quick ? 'quick' : 'full',
    contenders: list(flags.contenders, Object.keys(CONTENDERS)),
    viewers: numbers(flags.viewers, quick ? [100] : [100, 500, 1000, 2000]),
    sizesKB: numbers(flags.sizes, quick ? [50] : [50, 100]),
    reps: Number(flags.reps ?? (quick ? 1 : 3)),
    fps: Number(flags.fps ?? 30),
    warmupMs: Number(flags['warmup-ms'] ?? (quick ? 1000 : 2000)),
    windowMs: Number(flags['window-ms'] ?? (quick ? 3000 : 8000)),
    deadlineMs: 1000,
    firstFrameProbes: quick ? 3 : 10,
    capacity: !quick && flags['no-capacity'] !== true,
    stalled: flags['no-stalled'] !== true,
  }
  for (const name of options.contenders) {
    if (!CONTENDERS[name]) throw new Error(`unknown contender ${name} (${Object.keys(CONTENDERS).join(', ')})`)
  }
  for (const n of [...options.viewers, ...options.sizesKB, options.reps, options.fps]) {
    if (!Number.isFinite(n) || n <= 0) throw new Error('viewers, sizes, reps and fps must be positive numbers')
  }
  return options
}

// ---- one run ------------------------------------------------------------------------------

function startServer(name, imageFile, fps) {
  const contender = CONTENDERS[name]
  const env = { ...process.env, BENCH_IMAGE: imageFile, BENCH_FPS: String(fps), ...(contender.env ?? {}) }
  if (contender.binary) {
    const [command, args] = pinned(0, contender.binary, ['--image', imageFile, '--fps', String(fps)])
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'inherit'] })
    const ready = new Promise((resolve, reject) => {
      readline.createInterface({ input: child.stdout }).once('line', (line) => resolve(JSON.parse(line).port))
      child.once('exit', (code) => reject(new Error(`${name} exited with ${code} before listening`)))
    })
    return { child, ready, ipc: false }
  }
  return startNodeServer(name, contender.script, env)
}

async function runOnce(name, { sizeKB, viewers, stalled = 0, options }) {
  const imageFile = benchImage(sizeKB * 1000)
  const server = startServer(name, imageFile, options.fps)
  const pid = server.child.pid
  let peakRss = 0
  let guardTripped = false
  const guard = setInterval(() => {
    const rss = rssBytes(pid) ?? 0
    peakRss = Math.max(peakRss, rss)
    if (rss > RSS_GUARD_BYTES) {
      guardTripped = true
      server.child.kill('SIGKILL')
    }
  }, 200)
  try {
    const port = await Promise.race([server.ready, new Promise((_, reject) => setTimeout(() => reject(new Error(`${name} did not listen`)), 15000))])
    const url = `ws://127.0.0.1:${port}/browser/bench/stream`
    const marks = {}
    let eventLoopDelay = null
    const onWindow = (edge, loadgenPid) => {
      if (edge === 'start') {
        marks.start = { cpu: processCpuSeconds(pid), main: mainThreadCpuSeconds(pid), loadgen: processCpuSeconds(loadgenPid) }
        if (server.ipc && server.child.connected) server.child.send({ type: 'window_start' })
        return
      }
      marks.end = { cpu: processCpuSeconds(pid), main: mainThreadCpuSeconds(pid), loadgen: processCpuSeconds(loadgenPid), rss: rssBytes(pid) }
      if (server.ipc && server.child.connected) {
        const reply = new Promise((resolve) => {
          const onMessage = (message) => {
            if (message?.type !== 'event_loop_delay') return
            server.child.off('message', onMessage)
            resolve(message)
          }
          server.child.on('message', onMessage)
          setTimeout(() => resolve(null), 5000)
        })
        server.child.send({ type: 'window_end' })
        eventLoopDelay = reply
      }
    }
    const { result, exitCode: loadgenExit } = await runLoadgen({
      url,
      viewers,
      stalled,
      // First-frame probes only at the smallest viewer count (where the report reads them).
      firstFrameProbes: stalled || viewers !== Math.min(...options.viewers) ? 0 : options.firstFrameProbes,
      options,
      extraArgs: CONTENDERS[name].loadgenArgs ?? [],
      onWindow,
    })
    if (!result) {
      const failed = guardTripped ? 'server RSS passed 4 GiB (killed)' : `no result: the load generator ended with ${loadgenExit}`
      return { name, sizeKB, viewers, stalled, failed }
    }
    const delay = await eventLoopDelay
    const windowSecs = result.windowSecs
    const cpuSeconds = marks.end?.cpu != null && marks.start?.cpu != null ? marks.end.cpu - marks.start.cpu : null
    const mainSeconds = marks.end?.main != null && marks.start?.main != null ? marks.end.main - marks.start.main : null
    const loadgenSeconds = marks.end?.loadgen != null && marks.start?.loadgen != null ? marks.end.loadgen - marks.start.loadgen : null
    const gigabytes = result.bytesDelivered / 1e9
    return {
      name,
      sizeKB,
      viewers,
      stalled,
      failed: guardTripped ? 'server RSS passed 4 GiB (killed)' : null,
      delivered: result.deliveredFraction,
      viewerFractionMin: result.viewerFractionMin,
      connected: result.connected,
      connectErrors: result.connectErrors,
      closedEarly: result.closedEarly,
      latencyP50: result.latencyMs.p50,
      latencyP99: result.latencyMs.p99,
      serverCpuPct: cpuSeconds == null ? null : (100 * cpuSeconds) / windowSecs,
      mainCpuPct: mainSeconds == null ? null : (100 * mainSeconds) / windowSecs,
      loadgenCpuPct: loadgenSeconds == null ? null : (100 * loadgenSeconds) / windowSecs,
      cpuSecondsPerGB: cpuSeconds == null || gigabytes === 0 ? null : cpuSeconds / gigabytes,
      gbPerSecond: gigabytes / windowSecs,
      eventLoopP99: delay?.p99Ms ?? null,
      pingP50: result.pingMs.p50,
      pingP99: result.pingMs.p99,
      pingFailures: result.pingMs.failures,
      rssMB: marks.end?.rss != null ? marks.end.rss / 2 ** 20 : null,
      peakRssMB: peakRss / 2 ** 20,
      firstFrameMs: result.firstFrameMs.values,
      firstFrameAnswered: `${result.firstFrameMs.answered}/${result.firstFrameMs.probes}`,
    }
  } finally {
    clearInterval(guard)
    await stopProcess(server.child)
  }
}

// ---- aggregation --------------------------------------------------------------------------

function median(values) {
  const sorted = values.filter((v) => v != null && Number.isFinite(v)).sort((a, b) => a - b)
  if (sorted.length === 0) return null
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/** (max − min) / median, as a percentage: how much repeated runs disagreed. */
function spreadPct(values) {
  const clean = values.filter((v) => v != null && Number.isFinite(v))
  const m = median(clean)
  if (clean.length < 2 || !m) return null
  return (100 * (Math.max(...clean) - Math.min(...clean))) / m
}

const METRICS = [
  'delivered', 'viewerFractionMin', 'latencyP50', 'latencyP99', 'serverCpuPct', 'mainCpuPct', 'loadgenCpuPct',
  'cpuSecondsPerGB', 'gbPerSecond', 'eventLoopP99', 'pingP50', 'pingP99', 'rssMB', 'peakRssMB',
]

function summarize(runs) {
  const summary = { runs: runs.length, failed: runs.filter((r) => r.failed).map((r) => r.failed) }
  for (const metric of METRICS) summary[metric] = median(runs.map((r) => (r.failed ? null : r[metric])))
  // A run killed by the memory guard delivered too little: count it as 0.
  summary.delivered = median(runs.map((r) => (r.failed ? 0 : r.delivered)))
  summary.spread = { delivered: spreadPct(runs.map((r) => r.delivered)), serverCpuPct: spreadPct(runs.map((r) => r.serverCpuPct)) }
  summary.firstFrameMs = median(runs.flatMap((r) => r.firstFrameMs ?? []))
  summary.firstFrameMaxMs = Math.max(0, ...runs.flatMap((r) => r.firstFrameMs ?? []))
  return summary
}

// ---- report -------------------------------------------------------------------------------

const fmt = (value, digits = 1) => (value == null ? '–' : Number(value).toFixed(digits))
const pct = (value) => (value == null ? '–' : `${(100 * value).toFixed(1)}%`)
const ratio = (a, b) => (a == null || b == null || b === 0 ? '–' : `${(a / b).toFixed(2)}×`)

function report(results, options, meta) {
  const out = []
  out.push(`## Run of ${meta.date} (${options.mode})`, '')
  out.push(`Machine: ${meta.cpu}, ${meta.cpus} CPUs, ${meta.memGiB} GiB, Linux ${meta.kernel}; Node ${meta.node}; ${meta.rustc}.`)
  out.push(`Command: \`${meta.command}\`. Server pinned to CPU 0 and load generator to CPU 1: ${canPin ? 'yes' : 'no'}.`)
  out.push(`${options.fps} fps; warm-up ${options.warmupMs} ms, window ${options.windowMs} ms; a frame counts as delivered when it arrives within ${options.deadlineMs} ms of its capture time; ${options.reps} run(s) per cell, medians shown; spread = (max − min) / median of the runs.`, '')
  const { sweep } = results
  for (const sizeKB of options.sizesKB) {
    for (const viewers of options.viewers) {
      out.push(`### ${viewers} viewers, ${sizeKB} KB frames`, '')
      out.push('| contender | delivered | latency p50 / p99 ms | server CPU % | main thread CPU % | event loop p99 ms | GET /ping p50 / p99 ms | RSS MB | CPU s per GB | vs physical | load generator CPU % | spread delivered / CPU |')
      out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
      const physical = sweep.find((s) => s.name === 'physical' && s.sizeKB === sizeKB && s.viewers === viewers)
      for (const name of options.contenders) {
        const s = sweep.find((x) => x.name === name && x.sizeKB === sizeKB && x.viewers === viewers)
        if (!s) continue
        const failed = s.failed.length ? ` (${s.failed.length} run(s): ${s.failed[0]})` : ''
        out.push(
          `| ${CONTENDERS[name].label}${failed} | ${pct(s.delivered)} | ${fmt(s.latencyP50)} / ${fmt(s.latencyP99)} | ${fmt(s.serverCpuPct)} | ${name === 'physical' ? 'n/a' : fmt(s.mainCpuPct, 2)} | ${fmt(s.eventLoopP99)} | ${fmt(s.pingP50, 2)} / ${fmt(s.pingP99, 2)} | ${fmt(s.rssMB, 0)} | ${fmt(s.cpuSecondsPerGB, 3)} | ${ratio(s.cpuSecondsPerGB, physical?.cpuSecondsPerGB)} | ${fmt(s.loadgenCpuPct, 0)} | ${fmt(s.spread.delivered, 0)}% / ${fmt(s.spread.serverCpuPct, 0)}% |`,
        )
      }
      out.push('')
    }
  }
  if (results.capacity) {
    out.push(`### Largest viewer count at ≥ 99% delivery (${results.capacity.sizeKB} KB frames)`, '')
    out.push('| contender | viewers held | probes (N: delivered) | × seed TS | × tuned TS |')
    out.push('| --- | --- | --- | --- | --- |')
    const held = Object.fromEntries(results.capacity.rows.map((r) => [r.name, r.held]))
    for (const row of results.capacity.rows) {
      const probes = row.probes.map((p) => `${p.viewers}: ${pct(p.delivered)}`).join(', ')
      out.push(`| ${CONTENDERS[row.name].label} | ${row.held ?? `< ${row.probes[0]?.viewers}`}${row.capped ? ' (top of the range tried)' : ''} | ${probes} | ${ratio(row.held, held.seed)} | ${ratio(row.held, held.tuned)} |`)
    }
    out.push('')
  }
  if (results.stalled) {
    out.push(`### Stalled viewers: ${results.stalled.healthy} healthy + ${results.stalled.stalled} that never read (${results.stalled.sizeKB} KB frames)`, '')
    out.push('| contender | healthy delivered | latency p99 ms | RSS MB (with / without stalled) | RSS per stalled viewer |')
    out.push('| --- | --- | --- | --- | --- |')
    for (const row of results.stalled.rows) {
      const failed = row.with.failed.length ? ` (${row.with.failed[0]})` : ''
      out.push(`| ${CONTENDERS[row.name].label}${failed} | ${pct(row.with.delivered)} | ${fmt(row.with.latencyP99)} | ${fmt(row.with.peakRssMB, 0)} / ${fmt(row.without?.peakRssMB, 0)} | ${row.perStalledKB == null ? '–' : `${fmt(row.perStalledKB, 0)} KB`} |`)
    }
    out.push('')
  }
  out.push('### First frame for a new viewer (connect → first frame, while streaming to 100 viewers)', '')
  out.push('| contender | median ms | max ms |', '| --- | --- | --- |')
  for (const name of options.contenders) {
    const s = results.sweep.find((x) => x.name === name && x.viewers === Math.min(...options.viewers) && x.sizeKB === options.sizesKB[0])
    if (s) out.push(`| ${CONTENDERS[name].label} | ${fmt(s.firstFrameMs, 2)} | ${fmt(s.firstFrameMaxMs, 2)} |`)
  }
  out.push('')
  return out.join('\n')
}

// ---- main ---------------------------------------------------------------------------------

async function cell(name, sizeKB, viewers, stalled, options) {
  const runs = []
  for (let rep = 0; rep < options.reps; rep++) {
    const run = await runOnce(name, { sizeKB, viewers, stalled, options })
    process.stderr.write(
      `bench: ${CONTENDERS[name].label}, ${viewers}${stalled ? `+${stalled} stalled` : ''} viewers, ${sizeKB} KB, run ${rep + 1}/${options.reps}: ` +
        (run.failed ? run.failed : `delivered ${pct(run.delivered)}, p99 ${fmt(run.latencyP99)} ms, CPU ${fmt(run.serverCpuPct)}%, main ${fmt(run.mainCpuPct, 2)}%, loadgen ${fmt(run.loadgenCpuPct)}%`) +
        '\n',
    )
    runs.push(run)
  }
  return { name, sizeKB, viewers, stalled, ...summarize(runs), rawRuns: runs }
}

/** Largest N at ≥ 99% delivery: from the sweep's passing/failing bounds, bisected by single runs. */
async function capacity(name, sweep, sizeKB, options) {
  const probes = sweep
    .filter((s) => s.name === name && s.sizeKB === sizeKB)
    .map((s) => ({ viewers: s.viewers, delivered: s.delivered }))
  const passes = (p) => p.delivered != null && p.delivered >= 0.99
  const lowest = Math.min(...probes.map((p) => p.viewers))
  let lo = Math.max(0, ...probes.filter(passes).map((p) => p.viewers))
  let hi = Math.min(Infinity, ...probes.filter((p) => !passes(p) && p.viewers > lo).map((p) => p.viewers))
  const top = 4000
  let capped = false
  if (lo === 0 && lowest > 25) hi = lowest
  while (hi === Infinity) {
    const n = Math.min(top, lo * 2)
    const run = await runOnce(name, { sizeKB, viewers: n, options })
    probes.push({ viewers: n, delivered: run.failed ? 0 : run.delivered })
    if (passes(probes.at(-1))) {
      lo = n
      if (n >= top) {
        capped = true
        break
      }
    } else hi = n
  }
  for (let step = 0; step < 4 && hi !== Infinity && hi - lo > Math.max(25, lo * 0.1); step++) {
    const n = Math.round((lo + hi) / 2)
    const run = await runOnce(name, { sizeKB, viewers: n, options })
    probes.push({ viewers: n, delivered: run.failed ? 0 : run.delivered })
    if (passes(probes.at(-1))) lo = n
    else hi = n
  }
  probes.sort((a, b) => a.viewers - b.viewers)
  process.stderr.write(`bench: ${CONTENDERS[name].label} holds ${lo || 'fewer than ' + lowest} viewers at ≥ 99%\n`)
  return { name, held: lo || null, capped, probes }
}

/** One bench script with `args`; resolves to its exit code. */
function runScript(script, args) {
  return new Promise((resolve) => {
    const command = `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim()
    const child = spawn(process.execPath, [path.join(BENCH, script), ...args], {
      stdio: 'inherit',
      env: { ...process.env, BENCH_VIDEO_COMMAND: command },
    })
    child.once('error', () => resolve(1))
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)))
  })
}

/**
 * The video rows, one after the other (each needs the machine to itself): bench/video.js
 * with `args` (bytes, quality, encode cost, latency), then viewers held at ≥ 99% on H.264 vs
 * tuned TS on JPEG, the TypeScript CDP source vs the native one, a shaped link (that one
 * skips itself without root or network namespaces), and server CPU per WebRTC peer.
 * Resolves to the worst exit code.
 */
async function runVideoBench(args) {
  const quick = args.includes('--quick')
  const codes = [await runScript('video.js', args)]
  codes.push(await runScript('video-delivery.js', quick ? ['--quick'] : []))
  codes.push(await runScript('source-side.js', quick ? ['--quick'] : []))
  codes.push(await runScript('video-link.js', quick ? ['--seconds', '5'] : []))
  codes.push(await runScript('webrtc.js', quick ? ['--quick'] : []))
  return Math.max(...codes)
}

async function main() {
  if (process.argv.includes('--video-only')) {
    prepare()
    process.exitCode = await runVideoBench(process.argv.slice(2).filter((arg) => arg !== '--video-only'))
    return
  }
  if (process.argv.includes('--help')) {
    printHeadComment(__filename)
    return
  }
  const video = !process.argv.includes('--no-video')
  const relay = !process.argv.includes('--no-relay')
  const options = parseOptions(process.argv.slice(2).filter((arg) => arg !== '--no-video' && arg !== '--no-relay'))
  const started = Date.now()
  prepare()
  const meta = {
    date: new Date().toISOString(),
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    cpu: os.cpus()[0]?.model ?? 'unknown CPU',
    cpus: os.cpus().length,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    rustc: execFileSync('rustc', ['--version']).toString().trim(),
  }
  const results = { meta, options, sweep: [] }
  for (const sizeKB of options.sizesKB) {
    for (const viewers of options.viewers) {
      for (const name of options.contenders) results.sweep.push(await cell(name, sizeKB, viewers, 0, options))
    }
  }
  if (options.stalled) {
    const sizeKB = options.sizesKB.includes(100) ? 100 : options.sizesKB[0]
    const rows = []
    for (const name of options.contenders) {
      const withStalled = await cell(name, sizeKB, 100, 100, options)
      const without = results.sweep.find((s) => s.name === name && s.sizeKB === sizeKB && s.viewers === 100)
      const perStalledKB = without && withStalled.peakRssMB != null && without.peakRssMB != null ? ((withStalled.peakRssMB - without.peakRssMB) * 1024) / 100 : null
      rows.push({ name, with: withStalled, without: without ?? null, perStalledKB })
    }
    results.stalled = { sizeKB, healthy: 100, stalled: 100, rows }
  }
  if (options.capacity) {
    const sizeKB = options.sizesKB[0]
    const rows = []
    for (const name of options.contenders) rows.push(await capacity(name, results.sweep, sizeKB, options))
    results.capacity = { sizeKB, rows }
  }
  results.elapsedSeconds = (Date.now() - started) / 1000
  const markdown = report(results, options, meta) + `\nElapsed: ${results.elapsedSeconds.toFixed(0)} s.\n`
  const resultsDir = path.join(BENCH, 'results')
  fs.mkdirSync(resultsDir, { recursive: true })
  const base = path.join(resultsDir, `${meta.date.replace(/[:.]/g, '-')}-${options.mode}`)
  fs.writeFileSync(`${base}.json`, JSON.stringify(results, null, 2))
  fs.writeFileSync(`${base}.md`, markdown)
  process.stdout.write(markdown)
  process.stderr.write(`bench: results in ${path.relative(ROOT, base)}.{json,md}\n`)
  // The quick mode proves the benchmark works (CI): every run must have produced a result.
  const failures = [...results.sweep, ...(results.stalled?.rows.map((r) => r.with) ?? [])].flatMap((c) => c.failed)
  if (options.mode === 'quick' && failures.length > 0) {
    process.stderr.write(`bench: ${failures.length} run(s) failed: ${failures[0]}\n`)
    process.exitCode = 1
  }
  if (relay) {
    process.stderr.write('bench: the relay benchmark (bench/relay.js)…\n')
    const code = await runScript('relay.js', options.mode === 'quick' ? ['--quick'] : [])
    if (code === 2) process.stderr.write('bench: the relay benchmark was skipped (no nats-server)\n')
    else if (code !== 0) {
      process.stderr.write(`bench: the relay benchmark ended with ${code}\n`)
      process.exitCode = 1
    }
  }
  if (video) {
    process.stderr.write('bench: the video benchmark (bench/video.js)…\n')
    const code = await runVideoBench(options.mode === 'quick' ? ['--quick'] : [])
    if (code === 2) process.stderr.write('bench: the video benchmark was skipped (no Chromium)\n')
    else if (code !== 0) {
      process.stderr.write(`bench: the video benchmark ended with ${code}\n`)
      process.exitCode = 1
    }
  }
}

main().catch((err) => {
  process.stderr.write(`bench: ${err.stack ?? err}\n`)
  process.exit(1)
})

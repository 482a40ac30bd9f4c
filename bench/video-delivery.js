'use strict'
// Viewers held at ≥ 99 % delivery: the addon's H.264 wire against tuned TS on JPEG
// (`node bench/video-delivery.js [--quick]`). For each viewer count of the sweep, a fresh
// server process and one run of the load generator (bench/rust `loadgen`):
//   addon, H.264  this file with --serve: setupBrowserStream with the Rust replay source on
//                 the real 1280×720 JPEGs of --frames-dir (stamped, looped at --fps), video
//                 options at their defaults; every viewer on browser-stream.v1 asks for video
//                 (loadgen --video): delivery = chunks received in the window within the
//                 deadline ÷ chunks the encoder made in it (highest − lowest chunk number seen
//                 + 1), gaps in the chunk numbers = chunks the server skipped for a viewer
//   tuned TS      bench/dist/tuned.js as bench/run.js starts it (BENCH_IMAGE, BENCH_FPS), on
//                 the frame of the same set whose size is the median (it replays one image),
//                 raw JPEG binary frames: delivery = frames ÷ fps × window
// The server is pinned to CPU 0 and the load generator to CPU 1 (taskset, when there are 2
// CPUs), as in bench/run.js. CPU: user+sys of all the server's threads over the window
// (/proc), the load generator's own (it reads /proc/self/stat) and as seen from outside.
// A contender's sweep stops at its first count below 99 %. Bounded: each run has a time
// limit and the whole benchmark a deadline. No timing assertion: it fails only when a run
// cannot be carried out. Results: a Markdown table on stdout and
// bench/results/<date>-video-delivery.json.
//
// Options: --quick | --viewers 50,100,200,400 | --contenders video,tuned | --fps 30 |
//          --window-ms N | --warmup-ms N | --deadline-ms 1000 | --frames-dir bench/.work/frames720 |
//          --frames f (prefix of the files: f animated, t scrolled text; '' all) |
//          --no-pin (let the scheduler place the server and the load generator)

const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const readline = require('node:readline')
const { parseFlags, printHeadComment, processCpuSeconds, rssBytes } = require('./proc')

const { ROOT, BENCH, LOADGEN, canPin, pinned, stopProcess } = require('./load')
const AGENT = 'bench'

const CONTENDERS = {
  video: { label: 'addon, H.264 (browser-stream.v1)' },
  tuned: { label: 'tuned TS, JPEG' },
}

// ---- options ------------------------------------------------------------------------------

function parseOptions(argv) {
  const flags = parseFlags(argv)
  const quick = flags.quick === true
  const list = (value, fallback) => (value ? String(value).split(',').map((v) => v.trim()).filter(Boolean) : fallback)
  const options = {
    mode: quick ? 'quick' : 'full',
    viewers: list(flags.viewers, quick ? ['50', '200'] : ['50', '100', '200', '400']).map(Number),
    contenders: list(flags.contenders, Object.keys(CONTENDERS)),
    fps: Number(flags.fps ?? 30),
    warmupMs: Number(flags['warmup-ms'] ?? (quick ? 1500 : 2000)),
    windowMs: Number(flags['window-ms'] ?? (quick ? 3000 : 5000)),
    deadlineMs: Number(flags['deadline-ms'] ?? 1000),
    framesDir: String(flags['frames-dir'] ?? path.join(BENCH, '.work', 'frames720')),
    framesPrefix: flags.frames === true ? '' : String(flags.frames ?? 'f'),
    // Kills everything past this: the benchmark must stop by itself.
    totalDeadlineMs: quick ? 90_000 : 240_000,
  }
  for (const name of options.contenders) if (!CONTENDERS[name]) throw new Error(`unknown contender ${name} (${Object.keys(CONTENDERS).join(', ')})`)
  for (const n of [...options.viewers, options.fps, options.warmupMs, options.windowMs, options.deadlineMs]) {
    if (!Number.isFinite(n) || n <= 0) throw new Error('--viewers, --fps, --warmup-ms, --window-ms and --deadline-ms must be positive numbers')
  }
  options.viewers.sort((a, b) => a - b)
  return options
}

// ---- frames -------------------------------------------------------------------------------

/** The JPEG files of the set, sorted; made with Chromium screenshots when there are none. */
async function frameFiles(options) {
  const pick = () =>
    fs.existsSync(options.framesDir)
      ? fs
          .readdirSync(options.framesDir)
          .filter((f) => /\.jpe?g$/i.test(f) && f.startsWith(options.framesPrefix))
          .sort()
          .map((f) => path.join(options.framesDir, f))
      : []
  let files = pick()
  if (files.length === 0) {
    log(`no ${options.framesPrefix}*.jpeg in ${options.framesDir}: making 20 screenshots of examples/demo/animated.html`)
    await makeFrames(options.framesDir, options.framesPrefix || 'f')
    files = pick()
  }
  if (files.length === 0) throw new Error(`no JPEG frames in ${options.framesDir}`)
  return files
}

/** 20 1280×720 JPEG screenshots of the animated demo page (playwright-core, local Chromium). */
async function makeFrames(dir, prefix) {
  const { chromium } = require('playwright-core')
  const { findChromium } = require(path.join(ROOT, '__test__', 'support', 'chromium'))
  const browser = await chromium.launch({ executablePath: findChromium(), args: ['--no-sandbox', '--disable-gpu'] })
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } })
    await page.goto(`file://${path.join(ROOT, 'examples/demo/animated.html')}`)
    fs.mkdirSync(dir, { recursive: true })
    for (let i = 0; i < 20; i++) {
      await page.screenshot({ path: path.join(dir, `${prefix}${String(i).padStart(2, '0')}.jpeg`), type: 'jpeg', quality: 70 })
      await new Promise((resolve) => setTimeout(resolve, 33))
    }
  } finally {
    await browser.close()
  }
}

// ---- the addon server (child) -------------------------------------------------------------

/**
 * `node bench/video-delivery.js --serve`: the Hono app of the benchmark (GET /ping) with
 * setupBrowserStream on the Rust replay source of BENCH_FRAMES (JSON list of files) at
 * BENCH_FPS, the limits of bench/servers/addon.ts, GET /stats; reports its port over IPC.
 */
function serveMain() {
  const { Hono } = require('hono')
  const { serve } = require('@hono/node-server')
  const { setupBrowserStream } = require(ROOT)
  const frames = JSON.parse(process.env.BENCH_FRAMES).map((file) => fs.readFileSync(file))
  const fps = Number(process.env.BENCH_FPS ?? 30)
  const app = new Hono()
  app.get('/ping', (c) => c.text('ok'))
  const { injectWebSocket, registry } = setupBrowserStream(app, {
    maxViewersPerAgent: 100_000,
    maxViewersTotal: 100_000,
    lingerMs: 1000,
    getReplayFrames: () => ({ frames, fps, stampFrames: true, width: 1280, height: 720 }),
  })
  app.get('/stats', (c) => c.json(registry.stats()))
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, (info) => process.send?.({ type: 'ready', port: info.port }))
  injectWebSocket(server)
  const shutdown = () => {
    setTimeout(() => process.exit(0), 1000).unref()
    Promise.resolve(registry.close()).finally(() => process.exit(0))
  }
  process.on('SIGTERM', shutdown)
  process.on('disconnect', shutdown)
}

// ---- helpers ------------------------------------------------------------------------------

function log(message) {
  process.stderr.write(`video-delivery: ${message}\n`)
}

function getJson(port, pathname) {
  return fetch(`http://127.0.0.1:${port}${pathname}`, { signal: AbortSignal.timeout(2000) })
    .then((r) => r.json())
    .catch(() => null)
}

// ---- one run ------------------------------------------------------------------------------

function startServer(name, frames, options) {
  const env = { ...process.env, BENCH_FPS: String(options.fps) }
  let script
  if (name === 'video') {
    script = [__filename, '--serve']
    env.BENCH_FRAMES = JSON.stringify(frames.files)
  } else {
    script = [path.join(BENCH, 'dist/tuned.js')]
    env.BENCH_IMAGE = frames.median
  }
  const [command, args] = pinned(0, process.execPath, script)
  const child = spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const ready = new Promise((resolve, reject) => {
    child.on('message', (message) => {
      if (message?.type === 'ready') resolve(message.port)
    })
    child.once('exit', (code) => reject(new Error(`${name} exited with ${code} before listening`)))
    setTimeout(() => reject(new Error(`${name} did not listen within 15 s`)), 15000).unref()
  })
  ready.catch(() => {})
  return { child, ready }
}

async function runOnce(name, viewers, frames, options) {
  const server = startServer(name, frames, options)
  const pid = server.child.pid
  let peakRss = 0
  const guard = setInterval(() => (peakRss = Math.max(peakRss, rssBytes(pid) ?? 0)), 200)
  try {
    const port = await server.ready
    const maxSeconds = Math.ceil((options.warmupMs + options.windowMs + options.deadlineMs) / 1000) + 20 + 10
    const [command, args] = pinned(1, LOADGEN, [
      '--url', `ws://127.0.0.1:${port}/browser/${AGENT}/stream`,
      '--viewers', String(viewers),
      '--fps', String(options.fps),
      '--warmup-ms', String(options.warmupMs),
      '--window-ms', String(options.windowMs),
      '--deadline-ms', String(options.deadlineMs),
      '--connect-phase-ms', '20000',
      '--ping-path', '/ping',
      '--first-frame-probes', '0',
      '--max-seconds', String(maxSeconds),
      ...(name === 'video' ? ['--video'] : []),
    ])
    const loadgen = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] })
    const exited = new Promise((resolve) => loadgen.once('exit', (code, signal) => resolve(code ?? signal)))
    const marks = {}
    let result = null
    let stats = null
    for await (const line of readline.createInterface({ input: loadgen.stdout })) {
      let event
      try {
        event = JSON.parse(line)
      } catch {
        continue
      }
      if (event.event === 'window_start') marks.start = { cpu: processCpuSeconds(pid), loadgen: processCpuSeconds(loadgen.pid) }
      else if (event.event === 'window_end') {
        marks.end = { cpu: processCpuSeconds(pid), loadgen: processCpuSeconds(loadgen.pid) }
        if (name === 'video') stats = getJson(port, '/stats')
      } else if (event.event === 'result') result = event
    }
    const code = await exited
    if (!result) return { name, viewers, failed: `no result: the load generator ended with ${code}` }
    const windowSecs = result.windowSecs
    const diff = (key) => (marks.end?.[key] != null && marks.start?.[key] != null ? marks.end[key] - marks.start[key] : null)
    // Asked again when the server was too busy to answer at the window's end.
    const channel = ((await stats) ?? (name === 'video' ? await getJson(port, '/stats') : null))?.channels?.[0]
    const v = result.video
    return {
      name,
      viewers,
      failed: null,
      delivered: result.deliveredFraction,
      viewerFractionMin: result.viewerFractionMin,
      viewerFractionP1: result.viewerFractionP1,
      connected: result.connected,
      connectErrors: result.connectErrors,
      closedEarly: result.closedEarly,
      latencyP50: result.latencyMs.p50,
      latencyP99: result.latencyMs.p99,
      lateFrames: result.lateFrames,
      pingP99: result.pingMs.p99,
      expectedPerViewer: result.expectedFramesPerViewer,
      serverCpuPct: diff('cpu') == null ? null : (100 * diff('cpu')) / windowSecs,
      loadgenCpuPct: result.loadgenCpu?.windowPct ?? null,
      loadgenCpuPctOutside: diff('loadgen') == null ? null : (100 * diff('loadgen')) / windowSecs,
      bytesPerViewerPerSec: result.connected ? result.bytesDelivered / result.connected / windowSecs : null,
      // Pictures (frames or chunks) each viewer got per second, on time.
      picturesPerViewerPerSec: result.connected ? result.framesDelivered / result.connected / windowSecs : null,
      late: v ? v.lateChunks : result.lateFrames,
      peakRssMB: peakRss / 2 ** 20,
      video: v
        ? {
            chunksMadeInWindow: v.chunksMadeInWindow,
            chunksPerSecond: v.chunksPerSecond,
            gapsInWindow: v.gapsInWindow,
            skippedChunksInWindow: v.skippedChunksInWindow,
            viewersWithGaps: v.viewersWithGaps,
            gaps: v.gaps,
            keyframesPerViewer: v.keyframesPerViewer,
            refinements: v.refinements,
            viewersWithoutVideo: v.viewersWithoutVideo,
            jpegFramesAfterVideo: v.jpegFramesAfterVideo,
            errors: v.errors,
            errorSamples: v.errorSamples,
            encoder: channel?.video ?? null,
          }
        : null,
      raw: result,
    }
  } catch (err) {
    return { name, viewers, failed: err.message }
  } finally {
    clearInterval(guard)
    await stopProcess(server.child)
  }
}

// ---- report -------------------------------------------------------------------------------

const fmt = (value, digits = 1) => (value == null || !Number.isFinite(value) ? '–' : Number(value).toFixed(digits))
const pct = (value) => (value == null ? '–' : `${(100 * value).toFixed(1)}%`)

function report(results) {
  const { meta, options, rows, runs } = results
  const out = []
  out.push(`## Viewers held at ≥ 99 % delivery: H.264 wire vs tuned TS on JPEG (${meta.date}, ${options.mode})`, '')
  out.push(`Machine: ${meta.cpu}, ${meta.cpus} CPUs, load average ${meta.loadAverage.map((l) => l.toFixed(1)).join(' ')} at the start; Node ${meta.node}. Command: \`${meta.command}\`. Server pinned to CPU 0, load generator to CPU 1: ${canPin ? 'yes' : 'no'}.`)
  out.push(`${options.fps} fps replay of ${meta.frames.count} 1280×720 JPEGs (${meta.frames.dir}/${options.framesPrefix}*, ${fmt(meta.frames.meanKB)} KB mean; tuned TS replays ${path.basename(meta.frames.median)}, ${fmt(meta.frames.medianKB)} KB). Warm-up ${options.warmupMs} ms, window ${options.windowMs} ms, deadline ${options.deadlineMs} ms. CPU % = CPU seconds over the window ÷ window (100 % = one core).`, '')
  out.push('| contender | viewers held at ≥ 99 % | probes (N: delivered) | server CPU % | load generator CPU % | KB/s per viewer | pictures/s per viewer | latency p50 / p99 ms |')
  out.push('| --- | --- | --- | --- | --- | --- | --- | --- |')
  for (const row of rows) {
    const at = row.heldRun ?? row.firstRun
    const probes = row.probes.map((p) => `${p.viewers}: ${p.failed ? 'failed' : pct(p.delivered)}`).join(', ')
    const held = row.held == null ? `< ${row.probes[0]?.viewers}` : `${row.held}${row.capped ? ' (top of the range tried)' : ''}`
    out.push(`| ${CONTENDERS[row.name].label} | ${held} | ${probes} | ${fmt(at?.serverCpuPct)} | ${fmt(at?.loadgenCpuPct)} | ${fmt(at?.bytesPerViewerPerSec / 1000)} | ${fmt(at?.picturesPerViewerPerSec)} | ${fmt(at?.latencyP50)} / ${fmt(at?.latencyP99)} |`)
  }
  out.push('', 'CPU, bytes, pictures and latency are those of the largest count held (of the smallest tried when none held). Delivery on H.264 is relative to the chunks the encoder made (it may make fewer than the fps offered: rate control, or a starved encoder thread); pictures/s shows what a viewer actually got.', '')
  out.push('### Every run', '')
  out.push('| contender | viewers | delivered | viewer min | server CPU % | loadgen CPU % (own / outside) | KB/s per viewer | latency p99 ms | late | chunks/s made | gaps (viewers) | keyframes per viewer | encode ms p50 / p99 |')
  out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
  for (const r of runs) {
    if (r.failed) {
      out.push(`| ${CONTENDERS[r.name].label} | ${r.viewers} | failed: ${r.failed} | | | | | | | | | | |`)
      continue
    }
    const v = r.video
    const enc = v?.encoder
    out.push(
      `| ${CONTENDERS[r.name].label} | ${r.viewers} | ${pct(r.delivered)} | ${pct(r.viewerFractionMin)} | ${fmt(r.serverCpuPct)} | ${fmt(r.loadgenCpuPct)} / ${fmt(r.loadgenCpuPctOutside)} | ${fmt(r.bytesPerViewerPerSec / 1000)} | ${fmt(r.latencyP99)} | ${r.late} | ${v ? fmt(v.chunksPerSecond) : 'n/a'} | ${v ? `${v.gapsInWindow} (${v.viewersWithGaps})` : 'n/a'} | ${v ? fmt(v.keyframesPerViewer) : 'n/a'} | ${enc ? `${fmt(enc.encodeMsP50)} / ${fmt(enc.encodeMsP99)}` : 'n/a'} |`,
    )
  }
  out.push('')
  return out.join('\n')
}

// ---- main ---------------------------------------------------------------------------------

async function main() {
  if (process.argv[2] === '--serve') return serveMain()
  if (process.argv.includes('--help')) {
    printHeadComment(__filename)
    return
  }
  const options = parseOptions(process.argv.slice(2).filter((arg) => arg !== '--no-pin'))
  const started = Date.now()
  const killer = setTimeout(() => {
    log(`deadline of ${options.totalDeadlineMs / 1000} s passed: giving up`)
    process.exit(1)
  }, options.totalDeadlineMs)
  killer.unref()
  try {
    require(ROOT)
  } catch (err) {
    throw new Error(`the addon is not built (${err.message})`)
  }
  if (!fs.existsSync(LOADGEN)) throw new Error(`${path.relative(ROOT, LOADGEN)} is missing: cd bench/rust && cargo build --release`)
  if (options.contenders.includes('tuned') && !fs.existsSync(path.join(BENCH, 'dist/tuned.js'))) {
    log('compiling the TypeScript contenders (tsc)…')
    execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(BENCH, 'tsconfig.json')], { stdio: 'inherit' })
  }
  const files = await frameFiles(options)
  const sizes = files.map((f) => fs.statSync(f).size)
  const bySize = files.map((f, i) => [sizes[i], f]).sort((a, b) => a[0] - b[0])
  const medianEntry = bySize[bySize.length >> 1]
  const frames = { files, median: medianEntry[1] }
  const meta = {
    date: new Date().toISOString(),
    command: `node bench/video-delivery.js${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`,
    cpu: os.cpus()[0]?.model ?? 'unknown CPU',
    cpus: os.cpus().length,
    loadAverage: os.loadavg(),
    node: process.version,
    frames: {
      dir: options.framesDir,
      count: files.length,
      meanKB: sizes.reduce((a, b) => a + b, 0) / sizes.length / 1000,
      median: medianEntry[1],
      medianKB: medianEntry[0] / 1000,
    },
  }
  const runs = []
  const rows = []
  for (const name of options.contenders) {
    const probes = []
    let held = null
    let heldRun = null
    for (const viewers of options.viewers) {
      const run = await runOnce(name, viewers, frames, options)
      runs.push(run)
      probes.push({ viewers, delivered: run.failed ? null : run.delivered, failed: run.failed })
      log(
        `${CONTENDERS[name].label}, ${viewers} viewers: ` +
          (run.failed
            ? run.failed
            : `delivered ${pct(run.delivered)} (min ${pct(run.viewerFractionMin)}), server CPU ${fmt(run.serverCpuPct)}%, loadgen CPU ${fmt(run.loadgenCpuPct)}%, ${fmt(run.bytesPerViewerPerSec / 1000)} KB/s per viewer` +
              (run.video ? `, ${fmt(run.video.chunksPerSecond)} chunks/s, gaps ${run.video.gapsInWindow} in ${run.video.viewersWithGaps} viewers, ${run.video.viewersWithoutVideo} without video` : '')),
      )
      if (!run.failed && run.delivered >= 0.99) {
        held = viewers
        heldRun = run
      } else break
    }
    rows.push({ name, held, heldRun, firstRun: runs.find((r) => r.name === name && !r.failed), capped: held === options.viewers.at(-1), probes })
  }
  const results = { meta, options, rows: rows.map(({ heldRun, firstRun, ...row }) => ({ ...row, atHeld: heldRun ? { ...heldRun, raw: undefined } : null })), runs, elapsedSeconds: (Date.now() - started) / 1000 }
  const markdown = report({ meta, options, rows, runs }) + `\nElapsed: ${results.elapsedSeconds.toFixed(0)} s.\n`
  const dir = path.join(BENCH, 'results')
  fs.mkdirSync(dir, { recursive: true })
  const file = path.join(dir, `${meta.date.replace(/[:.]/g, '-')}-video-delivery.json`)
  fs.writeFileSync(file, JSON.stringify(results, null, 2))
  process.stdout.write(markdown)
  log(`results in ${path.relative(ROOT, file)}`)
  if (runs.some((r) => r.failed)) process.exitCode = 1
}

main().catch((err) => {
  log(err.stack ?? String(err))
  process.exit(1)
})

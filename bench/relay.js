'use strict'
// Bench row: what the NATS relay adds. The same 100 viewers of one agent, first on the
// instance that has its browser (local), then on a second instance that has none, so that
// every frame crosses a real nats-server (relayed: owner → NATS → subscriber → viewers, one
// subscription for the 100). Both instances are the "addon, Rust source" server with the relay
// on (bench/servers/relay.ts): frames stamped with their capture time by the Rust replay
// source, 30 fps; the load generator measures each frame's age on arrival. Reported: delivery,
// latency p50/p99 and what the relay adds to them, the CPU of the owner, nats-server and the
// subscriber over the window, and the CPU the relay adds per relayed frame (the three
// processes of the relayed run minus the owner of the local run, divided by the frames of the
// window). Servers and nats-server share CPU 0, the load generator has CPU 1. Runs alternate
// local/relayed; medians of --reps runs are shown. No timing assertion: it fails only when a
// run cannot be carried out. Without nats-server it says so and exits 2 (skipped).
//
//   node bench/relay.js [--quick] [--viewers 100] [--sizes 50,100] [--reps N] [--json file]
// (results go to bench/results/<time>-relay-<mode>.{json,md} unless --json names another file)

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { parseFlags, printHeadComment, processCpuSeconds } = require('./proc')
const { ROOT, BENCH, prepare, benchImage, canPin, startNodeServer, stopProcess, runLoadgen } = require('./load')
const { startNats, natsServerAvailable } = require(path.join(ROOT, '__test__', 'support', 'nats'))

const FPS = 30

function parseOptions(argv) {
  const flags = parseFlags(argv)
  const quick = flags.quick === true
  const numbers = (value, fallback) => (value ? String(value).split(',').map(Number) : fallback)
  const options = {
    mode: quick ? 'quick' : 'full',
    viewers: Number(flags.viewers ?? 100),
    sizesKB: numbers(flags.sizes, quick ? [50] : [50, 100]),
    reps: Number(flags.reps ?? (quick ? 1 : 3)),
    fps: FPS,
    warmupMs: quick ? 1500 : 3000,
    windowMs: quick ? 3000 : 8000,
    deadlineMs: 1000,
    json: flags.json,
  }
  for (const n of [options.viewers, options.reps, ...options.sizesKB]) {
    if (!Number.isInteger(n) || n <= 0) throw new Error('viewers, sizes and reps must be positive integers')
  }
  return options
}

/** Pins every thread of `pid` to CPU 0, beside the servers (nats-server is started unpinned). */
function pinToServerCpu(pid) {
  if (canPin) execFileSync('taskset', ['-a', '-p', '-c', '0', String(pid)], { stdio: 'ignore' })
}

function startInstance(role, imageFile, natsUrl) {
  const env = { ...process.env, BENCH_IMAGE: imageFile, BENCH_FPS: String(FPS), BENCH_RELAY_ROLE: role, BENCH_NATS: natsUrl }
  return startNodeServer(`relay ${role}`, 'relay.js', env)
}

async function listening(server, what) {
  let timer
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not listen within 15 s`)), 15000)
  })
  try {
    return await Promise.race([server.ready, late])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * One run: `viewers` viewers on the owner (`relayed` false) or on a subscriber instance. CPU
 * seconds of each process over the window, the load generator's result, frames of the window.
 */
async function runOnce({ relayed, sizeKB, nats, options }) {
  const imageFile = benchImage(sizeKB * 1000)
  const owner = startInstance('owner', imageFile, nats.url)
  const subscriber = relayed ? startInstance('subscriber', imageFile, nats.url) : null
  // Awaited one after the other: a failure of the first must not leave the second's unhandled.
  for (const server of [owner, subscriber]) server?.ready.catch(() => {})
  try {
    await listening(owner, 'the owner')
    const port = await listening(subscriber ?? owner, relayed ? 'the subscriber' : 'the owner')
    const pids = { owner: owner.child.pid, nats: nats.pid, ...(subscriber ? { subscriber: subscriber.child.pid } : {}) }
    const marks = {}
    const onWindow = (edge) => {
      marks[edge] = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, processCpuSeconds(pid)]))
    }
    const { result, exitCode } = await runLoadgen({ url: `ws://127.0.0.1:${port}/browser/bench/stream`, viewers: options.viewers, options, onWindow })
    if (!result) return { relayed, sizeKB, failed: `no result: the load generator ended with ${exitCode}` }
    const cpuSeconds = {}
    for (const name of Object.keys(pids)) {
      const [start, end] = [marks.start?.[name], marks.end?.[name]]
      cpuSeconds[name] = start == null || end == null ? null : end - start
    }
    return {
      relayed,
      sizeKB,
      failed: result.connected < options.viewers ? `${options.viewers - result.connected} viewers did not connect` : null,
      delivered: result.deliveredFraction,
      latencyP50: result.latencyMs.p50,
      latencyP99: result.latencyMs.p99,
      windowSecs: result.windowSecs,
      // Frames a viewer received in the window (on average), not the nominal rate: what crossed the bus.
      frames: result.connected > 0 ? result.framesDelivered / result.connected : null,
      cpuSeconds,
    }
  } finally {
    await Promise.all([stopProcess(owner.child), subscriber && stopProcess(subscriber.child)])
  }
}

function median(values) {
  const sorted = values.filter((v) => v != null && Number.isFinite(v)).sort((a, b) => a - b)
  if (sorted.length === 0) return null
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

const totalCpu = (run) => Object.values(run.cpuSeconds).reduce((sum, v) => (sum == null || v == null ? null : sum + v), 0)

/** Medians of the runs of one setup, CPU in % of one core. */
function summarize(runs) {
  const ok = runs.filter((r) => !r.failed)
  const cpuPct = (name) => median(ok.map((r) => (r.cpuSeconds[name] == null ? null : (100 * r.cpuSeconds[name]) / r.windowSecs)))
  return {
    runs: runs.length,
    failed: runs.filter((r) => r.failed).map((r) => r.failed),
    delivered: median(runs.map((r) => (r.failed ? 0 : r.delivered))),
    latencyP50: median(ok.map((r) => r.latencyP50)),
    latencyP99: median(ok.map((r) => r.latencyP99)),
    cpuPct: { owner: cpuPct('owner'), nats: cpuPct('nats'), subscriber: cpuPct('subscriber') },
    totalCpuPct: median(ok.map((r) => (totalCpu(r) == null ? null : (100 * totalCpu(r)) / r.windowSecs))),
    // CPU ms per frame of the window, all processes of the setup (the local one: the owner and an idle nats-server).
    cpuMsPerFrame: median(ok.map((r) => (totalCpu(r) == null || !r.frames ? null : (1000 * totalCpu(r)) / r.frames))),
  }
}

const fmt = (value, digits = 1) => (value == null ? '–' : Number(value).toFixed(digits))
const pct = (value) => (value == null ? '–' : `${(100 * value).toFixed(1)}%`)
const plus = (a, b, digits = 1) => (a == null || b == null ? '–' : `${a - b >= 0 ? '+' : ''}${(a - b).toFixed(digits)}`)

function report(rows, options, meta) {
  const out = [`## Relay over NATS (${options.mode}, ${meta.date})`, '']
  out.push(
    `Command: \`${meta.command}\`. ${options.viewers} viewers of one agent, ${options.fps} fps, warm-up ${options.warmupMs} ms, window ${options.windowMs} ms, ${options.reps} run(s) per row (medians). ` +
      `Servers and nats-server on CPU 0, load generator on CPU 1: ${canPin ? 'yes' : 'no'}. ${meta.nats}.`,
    '',
  )
  for (const { sizeKB, local, relayed } of rows) {
    out.push(`### ${options.viewers} viewers, ${sizeKB} KB frames`, '')
    out.push('| setup | delivered | latency p50 / p99 ms | CPU % owner / nats-server / subscriber | CPU % all | CPU ms per frame, all |')
    out.push('| --- | --- | --- | --- | --- | --- |')
    for (const [label, s] of [[`local: the ${options.viewers} viewers on the owner`, local], [`relayed: the ${options.viewers} viewers on a second instance`, relayed]]) {
      const failed = s.failed.length ? ` (${s.failed.length} run(s) failed: ${s.failed[0]})` : ''
      out.push(
        `| ${label}${failed} | ${pct(s.delivered)} | ${fmt(s.latencyP50)} / ${fmt(s.latencyP99)} | ${fmt(s.cpuPct.owner)} / ${fmt(s.cpuPct.nats)} / ${s.cpuPct.subscriber == null ? 'n/a' : fmt(s.cpuPct.subscriber)} | ${fmt(s.totalCpuPct)} | ${fmt(s.cpuMsPerFrame, 2)} |`,
      )
    }
    out.push('')
    out.push(
      `Added by the relay: latency p50 ${plus(relayed.latencyP50, local.latencyP50)} ms, p99 ${plus(relayed.latencyP99, local.latencyP99)} ms; ` +
        `CPU ${plus(relayed.cpuMsPerFrame, local.cpuMsPerFrame, 2)} ms per relayed frame (owner, nats-server and subscriber together).`,
      '',
    )
  }
  return out.join('\n')
}

async function main() {
  if (process.argv.includes('--help')) {
    printHeadComment(__filename)
    return
  }
  const options = parseOptions(process.argv.slice(2))
  if (!natsServerAvailable()) {
    process.stderr.write('bench relay: nats-server not found (install Debian\'s nats-server); skipped\n')
    process.exitCode = 2
    return
  }
  prepare()
  const meta = {
    date: new Date().toISOString(),
    command: process.env.BENCH_VIDEO_COMMAND ?? `node bench/relay.js ${process.argv.slice(2).join(' ')}`.trim(),
    nats: execFileSync(process.env.NATS_SERVER_PATH ?? 'nats-server', ['--version']).toString().trim(),
  }
  const nats = await startNats()
  pinToServerCpu(nats.pid)
  const rows = []
  try {
    for (const sizeKB of options.sizesKB) {
      const runs = { local: [], relayed: [] }
      for (let rep = 0; rep < options.reps; rep++) {
        for (const relayed of [false, true]) {
          const run = await runOnce({ relayed, sizeKB, nats, options })
          process.stderr.write(
            `bench relay: ${relayed ? 'relayed' : 'local'}, ${sizeKB} KB, run ${rep + 1}/${options.reps}: ` +
              (run.failed ?? `delivered ${pct(run.delivered)}, p50 ${fmt(run.latencyP50)} ms, p99 ${fmt(run.latencyP99)} ms`) +
              '\n',
          )
          runs[relayed ? 'relayed' : 'local'].push(run)
        }
      }
      rows.push({ sizeKB, local: summarize(runs.local), relayed: summarize(runs.relayed), rawRuns: runs })
    }
  } finally {
    await nats.kill()
  }
  const markdown = report(rows, options, meta)
  const resultsDir = path.join(BENCH, 'results')
  fs.mkdirSync(resultsDir, { recursive: true })
  const base = options.json ? options.json.replace(/\.json$/, '') : path.join(resultsDir, `${meta.date.replace(/[:.]/g, '-')}-relay-${options.mode}`)
  fs.writeFileSync(`${base}.json`, JSON.stringify({ meta, options, rows }, null, 2))
  fs.writeFileSync(`${base}.md`, markdown)
  process.stdout.write(`${markdown}\n`)
  process.stderr.write(`bench relay: results in ${path.relative(ROOT, base)}.{json,md}\n`)
  const failures = rows.flatMap((r) => [...r.local.failed, ...r.relayed.failed])
  if (failures.length > 0) {
    process.stderr.write(`bench relay: ${failures.length} run(s) failed: ${failures[0]}\n`)
    process.exitCode = 1
  }
}

main().catch((err) => {
  process.stderr.write(`bench relay: ${err.stack ?? err}\n`)
  process.exit(1)
})

'use strict'
// What the bench scripts that drive the load generator share (bench/run.js, bench/relay.js):
// where the built tools are, building them (`prepare`), the padded bench images, CPU pinning,
// stopping a server, and one run of the load generator (`runLoadgen`) with its window marks.
// Must not hold any contender's logic or any report.

const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const readline = require('node:readline')

const ROOT = path.resolve(__dirname, '..')
const BENCH = __dirname
const WORK = path.join(BENCH, '.work')
const LOADGEN = path.join(BENCH, 'rust/target/release/loadgen')
const PHYSICAL = path.join(BENCH, 'rust/target/release/physical-limit')
const FIXTURE = path.join(ROOT, '__test__/fixtures/frame-320x240.jpg')

function prepare() {
  try {
    require(ROOT)
  } catch (err) {
    throw new Error(`the addon is not built (${err.message}); run npm install first`)
  }
  process.stderr.write('bench: building the load generator and the physical limit (cargo)…\n')
  execFileSync('cargo', ['build', '--release', '--locked', '--quiet', '--manifest-path', path.join(BENCH, 'rust/Cargo.toml')], {
    stdio: 'inherit',
  })
  process.stderr.write('bench: compiling the TypeScript contenders (tsc)…\n')
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(BENCH, 'tsconfig.json')], {
    stdio: 'inherit',
  })
  fs.mkdirSync(WORK, { recursive: true })
}

/**
 * A JPEG of exactly `bytes` bytes: the fixture with comment segments of pseudo-random filler
 * (so its base64 is not uniform), the same file for every contender.
 */
function benchImage(bytes) {
  const file = path.join(WORK, `frame-${bytes}.jpg`)
  if (fs.existsSync(file) && fs.statSync(file).size === bytes) return file
  const base = fs.readFileSync(FIXTURE)
  const segments = []
  let total = base.length
  let state = 0x2545f491
  while (total < bytes) {
    const size = Math.min(65533, bytes - total - 4)
    if (size < 1) throw new Error(`cannot pad an image to exactly ${bytes} bytes`)
    const segment = Buffer.alloc(size + 4)
    segment.writeUInt16BE(0xfffe, 0)
    segment.writeUInt16BE(size + 2, 2)
    for (let i = 4; i < segment.length; i++) {
      state ^= state << 13
      state ^= state >>> 17
      state ^= state << 5
      segment[i] = state & 0xff
    }
    segments.push(segment)
    total += segment.length
  }
  const image = Buffer.concat([base.subarray(0, 2), ...segments, base.subarray(2)])
  fs.writeFileSync(file, image)
  return file
}

/** Whether servers and the load generator go on CPUs of their own (`--no-pin`: the scheduler places them). */
const canPin = (() => {
  if (os.cpus().length < 2 || process.argv.includes('--no-pin')) return false
  try {
    execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
})()

function pinned(cpu, command, args) {
  return canPin ? ['taskset', ['-c', String(cpu), command, ...args]] : [command, args]
}

/**
 * Starts the compiled bench server `script` (bench/dist) pinned to CPU 0 with `env`; `ready`
 * resolves to its port once it reports listening over IPC.
 */
function startNodeServer(name, script, env) {
  const [command, args] = pinned(0, process.execPath, [path.join(BENCH, 'dist', script)])
  const child = spawn(command, args, { env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const ready = new Promise((resolve, reject) => {
    child.on('message', (message) => {
      if (message?.type === 'ready') resolve(message.port)
    })
    child.once('exit', (code) => reject(new Error(`${name} exited with ${code} before listening`)))
  })
  return { child, ready, ipc: true }
}

/** Stops a server process: SIGTERM, then SIGKILL after 2 s. */
async function stopProcess(child) {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 2000)
  await exited
  clearTimeout(timer)
}


/**
 * One run of the load generator (pinned to CPU 1): `viewers` viewers of `url` (`stalled` more
 * that never read), a warm-up, the measurement window, then `firstFrameProbes` new viewers one
 * at a time. `onWindow('start' | 'end')` runs as the window opens and closes (the caller reads
 * its servers' CPU there). Resolves to `{ result, exitCode }`; `result` is the generator's
 * result line, null when it gave none.
 */
async function runLoadgen({ url, viewers, stalled = 0, firstFrameProbes = 0, options, extraArgs = [], onWindow = () => {} }) {
  // Connect phase (≤ 60 s), the window, the deadline, the first-frame probes (≤ 3 s each).
  const maxSeconds = Math.ceil((options.warmupMs + options.windowMs + options.deadlineMs) / 1000) + 60 + 3 * firstFrameProbes + 30
  const [command, args] = pinned(1, LOADGEN, [
    '--url', url,
    '--viewers', String(viewers),
    '--stalled', String(stalled),
    '--fps', String(options.fps),
    '--warmup-ms', String(options.warmupMs),
    '--window-ms', String(options.windowMs),
    '--deadline-ms', String(options.deadlineMs),
    '--ping-path', '/ping',
    '--first-frame-probes', String(firstFrameProbes),
    '--max-seconds', String(maxSeconds),
    ...extraArgs,
  ])
  const loadgen = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  const lines = readline.createInterface({ input: loadgen.stdout })
  let result = null
  for await (const line of lines) {
    let event
    try {
      event = JSON.parse(line)
    } catch {
      continue
    }
    if (event.event === 'window_start') onWindow('start', loadgen.pid)
    else if (event.event === 'window_end') onWindow('end', loadgen.pid)
    else if (event.event === 'result') result = event
  }
  const exitCode = await new Promise((resolve) => (loadgen.exitCode !== null ? resolve(loadgen.exitCode) : loadgen.once('exit', resolve)))
  return { result, exitCode }
}

module.exports = { ROOT, BENCH, WORK, LOADGEN, PHYSICAL, prepare, benchImage, canPin, pinned, startNodeServer, stopProcess, runLoadgen }

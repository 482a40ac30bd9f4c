'use strict'
// The video benchmark (`node bench/video.js [--quick]`, or `npm run bench -- --video-only`):
// H.264 video viewers against JPEG (MJPEG) viewers of the same channel, on a real Chromium
// page, in one run. Each scene runs a fresh demo-like server (this file with --serve: the
// routes and setupBrowserStream options of examples/demo.js, its own headless Chromium with a
// 1280×720 viewport, screencast JPEG quality 70, at most 1280×720, video options at their
// defaults) on a page served by this script, and measures:
//   bytes      one extended JPEG viewer and one video viewer (plain `ws` clients) on the same
//              channel at the same time: bytes per viewer per second over a fixed window
//   cpu        the server process's CPU (user+sys of all its threads, /proc, as bench/run.js)
//              with only the JPEG viewer, then with both; the encoder's decode+convert+encode
//              time per frame (stats().channels[].video.encodeMsP50/P99) and its thread's CPU
//   quality    the demo viewer page in a second Chromium (playwright-core), ?mode=video: the
//              decoded picture on its canvas against the JPEG frame of the same seq (luma PSNR)
//   latency    animated scenes only: the demo viewer page, ?mode=jpeg, then ?mode=video, then
//              ?mode=webrtc (the server offers WebRTC as examples/demo.js does; the row fails,
//              with the client's reason, unless the page reports window.streamStats.mode
//              'webrtc' before and after its window); the time code the page paints
//              (Date.now()) read back from the canvas right after each frame is drawn (same
//              algorithm as the page's own, every frame), p50/p99 and frames drawn per second
// Scenes: animated (examples/demo/animated.html), scroll (a long page scrolled continuously by
// its own requestAnimationFrame loop), typing (a form whose textarea gets ~5 characters a
// second from the page's own timer, with a pause after each sentence); animated-30fps, the
// demo page held to 30 frames a second. No timing assertion: it fails only when a run cannot
// be carried out (exit code 2: skipped, no Chromium). Results: a Markdown report on stdout
// and bench/results/<date>-video-<mode>.{json,md}. bench/webrtc.js reuses this file's server
// (`--serve`) and helpers (required as a module, this file runs nothing).
//
// Options: --quick | --scenes animated,animated-30fps,scroll,typing | --window-ms N | --warmup-ms N |
//          --latency-ms N | --quality-ms N | --no-quality | --no-latency

const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const { parseFlags, printHeadComment, processCpuSeconds, threadSchedSeconds, treeCpuSeconds, machineTicks, machineBusyPct, otherCpuPct, isRunning, childPids } = require('./proc')

const ROOT = path.resolve(__dirname, '..')
const BENCH = __dirname
const ANIMATED = path.join(ROOT, 'examples/demo/animated.html')
const AGENT = 'demo'
const SCENES = ['animated', 'animated-30fps', 'scroll', 'typing']
/** What each scene measures besides bytes and CPU. */
const SCENE_EXTRAS = { animated: { quality: true, latency: true }, 'animated-30fps': { latency: true }, scroll: { quality: true }, typing: { quality: true } }
/** The viewer page's modes measured for latency, in this order, one after the other. */
const LATENCY_MODES = ['jpeg', 'video', 'webrtc']
const LATENCY_MODE_NAMES = { jpeg: 'MJPEG (`?mode=jpeg`)', video: 'H.264 over the WebSocket (`?mode=video`)', webrtc: 'H.264 over WebRTC (`?mode=webrtc`)' }
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic']

// ---- options ------------------------------------------------------------------------------

function parseOptions(argv) {
  const flags = parseFlags(argv)
  const quick = flags.quick === true
  const options = {
    mode: quick ? 'quick' : 'full',
    // The quick run leaves out animated-30fps (a minute in all).
    scenes: flags.scenes ? String(flags.scenes).split(',').map((s) => s.trim()) : quick ? SCENES.filter((s) => s !== 'animated-30fps') : SCENES,
    warmupMs: Number(flags['warmup-ms'] ?? (quick ? 1000 : 2000)),
    windowMs: Number(flags['window-ms'] ?? (quick ? 3000 : 8000)),
    qualityMs: Number(flags['quality-ms'] ?? (quick ? 2500 : 4000)),
    latencyMs: Number(flags['latency-ms'] ?? (quick ? 4000 : 8000)),
    quality: flags['no-quality'] !== true,
    latency: flags['no-latency'] !== true,
    // Kills everything past this: the bench must stop by itself.
    deadlineMs: quick ? 150_000 : 300_000,
  }
  for (const scene of options.scenes) if (!SCENES.includes(scene)) throw new Error(`unknown scene ${scene} (${SCENES.join(', ')})`)
  for (const n of [options.warmupMs, options.windowMs, options.qualityMs, options.latencyMs]) {
    if (!Number.isFinite(n) || n <= 0) throw new Error('--warmup-ms, --window-ms, --quality-ms and --latency-ms must be positive numbers')
  }
  return options
}

// ---- scene pages --------------------------------------------------------------------------

const SCROLL_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>scroll scene</title>
<style>
  body { margin: 0; font: 17px/1.5 Georgia, serif; color: #222; background: #fafaf7; }
  main { max-width: 860px; margin: 0 auto; padding: 24px; }
  h2 { font: bold 26px system-ui, sans-serif; margin: 32px 0 8px; }
  .row { display: flex; gap: 12px; margin: 12px 0; }
  .box { flex: 1; height: 90px; border-radius: 8px; color: #fff; font: 600 15px system-ui, sans-serif; padding: 10px; }
  nav { position: fixed; top: 0; right: 0; width: 220px; height: 100%; background: #eceae3; padding: 16px; font: 14px system-ui, sans-serif; }
</style></head>
<body><nav id="nav"></nav><main id="main"></main>
<script>
// A long article (deterministic text and coloured boxes) scrolled continuously by its own
// requestAnimationFrame loop, 300 CSS px per second, wrapping at the end.
const words = 'stream frame viewer channel encoder browser picture latency socket header keyframe chunk canvas decode window page scroll text layout pixel'.split(' ')
let state = 7
const rand = () => ((state = (state * 1103515245 + 12345) % 2147483648) / 2147483648)
const sentence = () => { const n = 8 + Math.floor(rand() * 12); const w = []; for (let i = 0; i < n; i++) w.push(words[Math.floor(rand() * words.length)]); const s = w.join(' '); return s[0].toUpperCase() + s.slice(1) + '.' }
const main = document.getElementById('main')
let html = ''
for (let s = 0; s < 120; s++) {
  html += '<h2>Section ' + (s + 1) + ': ' + sentence().slice(0, 40) + '</h2>'
  for (let p = 0; p < 3; p++) { let t = ''; for (let k = 0; k < 5; k++) t += sentence() + ' '; html += '<p>' + t + '</p>' }
  html += '<div class="row">'
  for (let b = 0; b < 3; b++) html += '<div class="box" style="background:hsl(' + Math.floor(rand() * 360) + ',55%,45%)">Box ' + (s * 3 + b + 1) + '</div>'
  html += '</div>'
}
main.innerHTML = html
document.getElementById('nav').innerHTML = '<b>Contents</b><br>' + Array.from({ length: 30 }, (_, i) => 'Section ' + (i + 1)).join('<br>')
const start = performance.now()
function step(now) {
  const max = document.documentElement.scrollHeight - innerHeight
  scrollTo(0, ((now - start) * 0.3) % max)
  requestAnimationFrame(step)
}
requestAnimationFrame(step)
</script></body></html>`

const TYPING_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>typing scene</title>
<style>
  body { margin: 0; font: 16px system-ui, sans-serif; color: #1d2330; background: #eef1f6; }
  form { width: 900px; margin: 28px auto; background: #fff; border-radius: 10px; padding: 24px 32px; box-shadow: 0 2px 10px #0002; }
  h1 { margin: 0 0 16px; font-size: 26px; }
  label { display: block; margin: 10px 0 4px; font-weight: 600; }
  input, textarea { width: 100%; box-sizing: border-box; font: 16px/1.45 system-ui, sans-serif; padding: 8px 10px; border: 1px solid #b8c0cc; border-radius: 6px; }
  textarea { height: 330px; resize: none; }
  .hint { color: #667; font-size: 13px; }
</style></head>
<body><form onsubmit="return false">
  <h1>Contact support</h1>
  <label>Name</label><input value="Ada Lovelace">
  <label>Email</label><input value="ada@example.com">
  <label>Message</label><textarea id="message" autofocus></textarea>
  <div class="hint">An agent is typing this message: about five characters a second, with a pause after each sentence.</div>
</form>
<script>
// Mostly static: the agent types into the textarea (5 characters a second, a 1.2 s pause
// after each sentence); the caret blinks.
const text = 'Hello, I would like to report a problem with my last order. The parcel arrived on time but one of the items was damaged. Could you send a replacement or refund the item? I have attached a photo of the box. Thank you for your help, and have a nice day. '
const area = document.getElementById('message')
area.focus()
let i = 0
function typeNext() {
  const ch = text[i % text.length]
  i += 1
  area.setRangeText(ch, area.value.length, area.value.length, 'end')
  area.scrollTop = area.scrollHeight
  if (area.value.length > 1500) area.value = ''
  setTimeout(typeNext, ch === '.' || ch === '?' ? 1200 : 200)
}
setTimeout(typeNext, 200)
</script></body></html>`

/**
 * The demo page with its requestAnimationFrame held to 30 callbacks a second (every other
 * 60 Hz frame), so that the screencast runs at ~30 fps: the CPU cell at the rate the issue names.
 */
const RAF_30 = `<script>{
  const raf = window.requestAnimationFrame.bind(window)
  let last = -Infinity
  window.requestAnimationFrame = (callback) => raf(function tick(t) {
    if (t - last >= 1000 / 30 - 4) { last = t; callback(t) } else raf(tick)
  })
}</script>`

/** A plain HTTP server for the scene pages (the source Chromium loads one of them). */
async function startSceneServer() {
  const animated = fs.readFileSync(ANIMATED, 'utf8')
  const pages = {
    '/animated.html': animated,
    '/animated-30fps.html': animated.replace('<head>', `<head>\n${RAF_30}`),
    '/scroll.html': SCROLL_PAGE,
    '/typing.html': TYPING_PAGE,
  }
  const server = http.createServer((req, res) => {
    const page = pages[new URL(req.url, 'http://x').pathname]
    if (!page) {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { server, base: `http://127.0.0.1:${server.address().port}` }
}

// ---- helpers ------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function withTimeout(promise, ms, what) {
  let timer
  return Promise.race([promise, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)))]).finally(() =>
    clearTimeout(timer),
  )
}

async function waitFor(predicate, ms, what, stepMs = 50) {
  const until = Date.now() + ms
  for (;;) {
    const value = await predicate()
    if (value) return value
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await sleep(stepMs)
  }
}

function percentile(values, p) {
  const sorted = values.filter((v) => v != null && Number.isFinite(v)).sort((a, b) => a - b)
  if (sorted.length === 0) return null
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]
}

const log = (line) => process.stderr.write(`bench video: ${line}\n`)

// ---- the server (demo-like) ---------------------------------------------------------------

/**
 * The server child (`node bench/video.js --serve <pageUrl>`): what examples/demo.js runs — the
 * same Hono routes (`/` the demo viewer page, `/client.js`, `/stats`), the same
 * setupBrowserStream options (getCdpEndpoint to a local headless Chromium, screencast JPEG
 * quality 70 at most 1280×720, lingerMs 2000, video options at their defaults) — except that
 * its Chromium's window is resized until the page's viewport is 1280×720 (a 1280×720 headless
 * window has a 1280×577 viewport, which the demo streams). WebRTC as the demo offers it (the
 * UDP socket on loopback, a port the system picks). `registryJson`, when given, adds registry
 * options (bench/webrtc.js raises maxViewersPerAgent for its 100 peers + 1 JPEG viewer).
 */
async function serveMain(pageUrl, registryJson) {
  const { Hono } = require('hono')
  const { serve } = require('@hono/node-server')
  const { setupBrowserStream } = require(ROOT)
  const { launchChromium } = require(path.join(ROOT, '__test__/support/chromium'))
  const demoDir = path.join(ROOT, 'examples/demo')
  const clientFile = path.join(ROOT, 'client/browser-stream-client.js')
  let chromium = null
  const app = new Hono()
  app.get('/', (c) => c.html(fs.readFileSync(path.join(demoDir, 'index.html'), 'utf8')))
  app.get('/client.js', (c) => c.body(fs.readFileSync(clientFile, 'utf8'), 200, { 'content-type': 'text/javascript; charset=utf-8' }))
  const { injectWebSocket, registry } = setupBrowserStream(app, {
    getCdpEndpoint: () => chromium?.endpoint,
    screencastOptions: { format: 'jpeg', quality: 70, maxWidth: 1280, maxHeight: 720 },
    lingerMs: 2000,
    webrtc: { host: '127.0.0.1', port: 0 },
    ...(registryJson ? JSON.parse(registryJson) : {}),
  })
  app.get('/stats', (c) => c.json(registry.stats()))
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 })
  injectWebSocket(server)
  await new Promise((resolve, reject) => {
    server.once('listening', resolve)
    server.once('error', reject)
  })
  chromium = await launchChromium({ url: pageUrl, width: 1280, height: 720 })
  let viewport
  try {
    viewport = await sizeViewport(chromium.endpoint, 1280, 720)
  } catch (err) {
    await chromium.close()
    throw err
  }
  let stopping = false
  // Chromium first: a server that cannot close in time must not leave its browser running.
  const shutdown = async () => {
    if (stopping) return
    stopping = true
    setTimeout(() => {
      chromium.process.kill('SIGKILL')
      process.exit(1)
    }, 5000).unref()
    registry.close()
    await chromium.close()
    server.closeAllConnections?.()
    await Promise.race([new Promise((resolve) => server.close(() => resolve())), sleep(1000)])
    process.exit(0)
  }
  process.on('SIGTERM', () => void shutdown())
  process.on('SIGINT', () => void shutdown())
  process.on('disconnect', () => void shutdown())
  process.send({ type: 'ready', port: server.address().port, viewport, chromiumPid: chromium.process.pid })
}

/** Resizes the browser window until the page's viewport is `width`×`height`; returns it. */
async function sizeViewport(endpoint, width, height) {
  const WebSocket = require('ws')
  const socket = new WebSocket(endpoint)
  await new Promise((resolve, reject) => {
    socket.once('open', resolve)
    socket.once('error', reject)
  })
  let id = 0
  const pending = new Map()
  socket.on('message', (data) => {
    const message = JSON.parse(data)
    const waiter = pending.get(message.id)
    if (!waiter) return
    pending.delete(message.id)
    if (message.error) waiter.reject(new Error(`${waiter.method}: ${message.error.message}`))
    else waiter.resolve(message.result)
  })
  const call = (method, params = {}, sessionId) =>
    new Promise((resolve, reject) => {
      const n = ++id
      pending.set(n, { resolve, reject, method })
      socket.send(JSON.stringify({ id: n, method, params, ...(sessionId ? { sessionId } : {}) }))
    })
  try {
    const { targetInfos } = await call('Target.getTargets')
    const target = targetInfos.find((t) => t.type === 'page')
    const { sessionId } = await call('Target.attachToTarget', { targetId: target.targetId, flatten: true })
    const { windowId } = await call('Browser.getWindowForTarget', { targetId: target.targetId })
    let windowHeight = height
    let size = null
    for (let attempt = 0; attempt < 5; attempt++) {
      const { result } = await call('Runtime.evaluate', { expression: '[innerWidth, innerHeight]', returnByValue: true }, sessionId)
      size = { width: result.value[0], height: result.value[1] }
      if (size.width === width && size.height === height) break
      windowHeight += height - size.height
      await call('Browser.setWindowBounds', { windowId, bounds: { width: width + (width - size.width), height: windowHeight } })
      await sleep(300)
    }
    await call('Target.detachFromTarget', { sessionId })
    return size
  } finally {
    socket.close()
  }
}

/**
 * The server child on `pageUrl` (`registry`: registry options added to the demo's); resolves
 * once it listens and its Chromium shows the page.
 */
async function startServer(pageUrl, registry = null) {
  const args = [__filename, '--serve', pageUrl, ...(registry ? [JSON.stringify(registry)] : [])]
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  let chromiumPid = null
  const kill = () => {
    for (const pid of [...childPids(child.pid), chromiumPid].filter(Boolean)) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {}
    }
    child.kill('SIGKILL')
  }
  cleanups.add(kill)
  const ready = await withTimeout(
    new Promise((resolve, reject) => {
      child.on('message', (message) => {
        if (message?.type === 'ready') resolve(message)
      })
      child.once('exit', (code, signal) => reject(new Error(`the server exited (${code ?? signal}) before it was ready`)))
    }),
    40_000,
    'the server and its Chromium to start',
  ).catch((err) => {
    kill()
    throw err
  })
  chromiumPid = ready.chromiumPid
  const base = `http://127.0.0.1:${ready.port}`
  return {
    child,
    pid: child.pid,
    base,
    viewport: ready.viewport,
    chromiumPid: ready.chromiumPid,
    wsUrl: `ws://127.0.0.1:${ready.port}/browser/${AGENT}/stream`,
    async stats() {
      const response = await fetch(`${base}/stats`)
      return response.json()
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGTERM')
        const timer = setTimeout(kill, 8000)
        await exited
        clearTimeout(timer)
      }
      // Its Chromium must be gone with it.
      if (isRunning(chromiumPid)) {
        log(`the server left its Chromium (pid ${chromiumPid}) running: killed`)
        try {
          process.kill(chromiumPid, 'SIGKILL')
        } catch {}
      }
      cleanups.delete(kill)
    },
  }
}

function channelStats(stats) {
  return stats.channels?.find((c) => c.agentId === AGENT) ?? stats.channels?.[0] ?? null
}

// ---- ws viewers ---------------------------------------------------------------------------

/**
 * A plain `ws` viewer on the extended wire, counting what it receives; `video: true` asks for
 * H.264. `window(startMs, endMs)` sums what arrived in that stretch of time.
 */
function wsViewer(url, { video }) {
  const WebSocket = require('ws')
  const socket = new WebSocket(url, ['browser-stream.v1'])
  const viewer = {
    socket,
    video,
    arrivals: [], // [time, kind, bytes, flags]
    textBytes: 0,
    config: null,
    errors: [],
    firstKeyAt: null,
    firstFrameAt: null,
    opened: new Promise((resolve, reject) => {
      socket.once('open', resolve)
      socket.once('error', reject)
    }),
    close() {
      try {
        socket.close(1000, 'bye')
      } catch {}
    },
    window(start, end) {
      const stretch = viewer.arrivals.filter(([t]) => t >= start && t < end)
      const secs = (end - start) / 1000
      const sum = (kind) => stretch.filter((a) => a[1] === kind).reduce((n, a) => n + a[2], 0)
      const count = (kind) => stretch.filter((a) => a[1] === kind).length
      return {
        secs,
        bytes: stretch.reduce((n, a) => n + a[2], 0),
        jpegBytes: sum(1),
        videoBytes: sum(2),
        jpegFrames: count(1),
        videoChunks: count(2),
        keyframes: stretch.filter((a) => a[1] === 2 && a[3] & 1).length,
        refinements: stretch.filter((a) => a[1] === 2 && a[3] & 2).length,
        jpegRefinements: stretch.filter((a) => a[1] === 1 && a[3] & 2).length,
        bytesPerSecond: stretch.reduce((n, a) => n + a[2], 0) / secs,
      }
    },
  }
  socket.on('message', (data, isBinary) => {
    const now = Date.now()
    if (!isBinary) {
      viewer.textBytes += data.length
      let message
      try {
        message = JSON.parse(data.toString())
      } catch {
        return
      }
      if (message.type === 'video-config') viewer.config = message
      else if (typeof message.error === 'string') viewer.errors.push(message.error)
      return
    }
    if (data.length < 56) return
    const kind = data[0]
    const flags = data[3]
    viewer.arrivals.push([now, kind, data.length, flags])
    if (kind === 1 && viewer.firstFrameAt === null) viewer.firstFrameAt = now
    if (kind === 2 && flags & 1 && viewer.firstKeyAt === null) viewer.firstKeyAt = now
  })
  socket.on('error', (err) => viewer.errors.push(String(err.message ?? err)))
  if (video) {
    socket.once('open', () => socket.send(JSON.stringify({ type: 'config', video: { codecs: ['avc1.42E01F'] } })))
  }
  return viewer
}

// ---- the viewer page (playwright) ---------------------------------------------------------

/**
 * Instruments the demo viewer page (examples/demo/index.html as the demo serves it): wraps its
 * client's onFrame so that, after the page has drawn each frame on its canvas, the time code is
 * read back (the page's own algorithm, for every frame instead of its last 30) and, for video
 * frames every `qualityEveryMs`, the canvas is compared with the JPEG frame of the same seq
 * (received by a second, raw extended socket of this page).
 */
function instrumentPage({ quality, qualityEveryMs, viewportWidth }) {
  const client = window.streamClient
  const canvas = document.getElementById('view')
  const ctx = canvas.getContext('2d', { willReadFrequently: true })
  const B = (window.__bench = { sampling: false, samples: [], psnr: [], missing: 0, mismatched: 0, lastQuality: 0, jpegs: new Map(), demoMedians: [] })
  if (quality) {
    const socket = new WebSocket(`ws://${location.host}/browser/demo/stream`, ['browser-stream.v1'])
    socket.binaryType = 'arraybuffer'
    socket.onmessage = (event) => {
      if (typeof event.data === 'string' || event.data.byteLength < 56) return
      const view = new DataView(event.data)
      if (view.getUint8(0) !== 1) return
      B.jpegs.set(Number(view.getBigUint64(4)), event.data.slice(view.getUint8(1)))
      if (B.jpegs.size > 150) B.jpegs.delete(B.jpegs.keys().next().value)
    }
  }
  function stamp(width, info) {
    // WebRTC pictures carry no header: the page's viewport (the server's) gives the scale.
    const scale = info.deviceWidth ? width / info.deviceWidth : viewportWidth ? width / viewportWidth : 1
    if (34 * 16 * scale > width) return null
    const row = ctx.getImageData(0, Math.floor(8 * scale), Math.ceil(34 * 16 * scale), 1).data
    const level = (i) => {
      const x = Math.floor((i * 16 + 8) * scale) * 4
      return (row[x] + row[x + 1] + row[x + 2]) / 3
    }
    if (level(0) < 160 || level(1) > 96) return null
    let value = 0
    for (let i = 2; i < 34; i++) value = value * 2 + (level(i) > 128 ? 1 : 0)
    const age = (Date.now() % 2 ** 32) - value
    const latency = age < 0 ? age + 2 ** 32 : age
    return latency < 60_000 ? latency : null
  }
  const luma = (data) => {
    const y = new Float32Array(data.length / 4)
    for (let i = 0, j = 0; j < y.length; i += 4, j++) y[j] = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2]
    return y
  }
  async function compare(seq, width, height, videoLuma, refine) {
    let jpeg = B.jpegs.get(seq)
    if (!jpeg) {
      await new Promise((resolve) => setTimeout(resolve, 300))
      jpeg = B.jpegs.get(seq)
    }
    if (!jpeg) {
      B.missing += 1
      return
    }
    const bitmap = await createImageBitmap(new Blob([jpeg], { type: 'image/jpeg' }))
    if (bitmap.width !== width || bitmap.height !== height) {
      B.mismatched += 1
      bitmap.close()
      return
    }
    const off = new OffscreenCanvas(width, height)
    const octx = off.getContext('2d', { willReadFrequently: true })
    octx.drawImage(bitmap, 0, 0)
    bitmap.close()
    const reference = luma(octx.getImageData(0, 0, width, height).data)
    let se = 0
    for (let i = 0; i < reference.length; i++) {
      const e = reference[i] - videoLuma[i]
      se += e * e
    }
    const mse = se / reference.length
    B.psnr.push({ seq, refine, db: mse === 0 ? 99 : 10 * Math.log10((255 * 255) / mse) })
  }
  const original = client.handlers.onFrame
  client.handlers.onFrame = function (picture, info) {
    original.call(this, picture, info)
    if (!B.sampling) return
    // WebRTC pictures come as the video element itself (info.mode 'webrtc', no header).
    const kind = info.mode === 'webrtc' ? 'webrtc' : info.kind ?? 'frame'
    B.samples.push({ kind, at: Date.now(), latency: stamp(info.width, info), seq: info.seq, bytes: info.bytes, key: !!info.key, refine: !!info.refine })
    if (quality && kind === 'video' && performance.now() - B.lastQuality >= qualityEveryMs) {
      B.lastQuality = performance.now()
      const videoLuma = luma(ctx.getImageData(0, 0, info.width, info.height).data)
      void compare(info.seq, info.width, info.height, videoLuma, !!info.refine)
    }
  }
  setInterval(() => {
    if (B.sampling && window.streamStats) B.demoMedians.push(window.streamStats.latencyMs)
  }, 500)
}

async function launchViewerBrowser() {
  const { chromium } = require('playwright-core')
  return chromium.launch({ executablePath: process.env.CHROME_PATH ?? '/usr/bin/chromium', args: CHROMIUM_ARGS })
}

/** In the demo viewer page: the mode it reports, why (the newest of window.streamModes) and how many mode changes it made. */
function webrtcModeInPage() {
  const modes = window.streamModes ?? []
  const last = modes[modes.length - 1]
  return { mode: window.streamStats?.mode ?? null, reason: last ? `${last.mode}: ${last.reason}` : 'no mode chosen', changes: modes.length, modes }
}

/** The demo viewer page in `mode` (jpeg, video or webrtc), sampled for `windowMs` after a warm-up. */
async function viewerPage(browser, demo, { mode, windowMs, warmupMs, quality }) {
  const context = await browser.newContext({ viewport: { width: 1320, height: 820 } })
  const page = await context.newPage()
  try {
    await page.goto(`${demo.base}/?agent=${AGENT}&mode=${mode}`)
    await page.waitForFunction(() => window.streamClient && window.streamClient.handlers, null, { timeout: 10_000 })
    if (mode === 'video') {
      await page.waitForFunction(() => window.streamClient.mode !== null, null, { timeout: 10_000 })
      const using = await page.evaluate(() => ({ mode: window.streamClient.mode, reason: document.getElementById('using').title }))
      if (using.mode !== 'video') throw new Error(`the viewer page did not use video (${using.mode}): ${using.reason}`)
    }
    let modeChanges = 0
    if (mode === 'webrtc') {
      // The mode the page reports (window.streamStats, refreshed every 500 ms): 'webrtc' once
      // the video element presented a picture, another mode when the client fell back (after
      // at most its webrtcTimeoutMs, 5 s); the reason is in window.streamModes.
      await page.waitForFunction(() => window.streamStats?.mode != null, null, { timeout: 15_000 }).catch(() => {})
      const using = await page.evaluate(webrtcModeInPage)
      if (using.mode !== 'webrtc') throw new Error(`WebRTC did not come up (the page uses ${using.mode ?? 'nothing'}): ${using.reason}`)
      modeChanges = using.changes
    }
    await page.evaluate(instrumentPage, { quality, qualityEveryMs: 250, viewportWidth: demo.viewport?.width ?? null })
    // Wait for the mode in use (video: the first keyframe drawn; WebRTC: a picture the video
    // element presented), then the warm-up.
    const wanted = mode === 'video' ? 'video' : mode === 'webrtc' ? 'webrtc' : 'frame'
    await page.evaluate(() => (window.__bench.sampling = true))
    await page.waitForFunction((kind) => window.__bench.samples.some((s) => s.kind === kind), wanted, { timeout: 15_000 })
    await page.evaluate(() => {
      window.__bench.sampling = false
      window.__bench.samples = []
      window.__bench.psnr = []
      window.__bench.demoMedians = []
    })
    await sleep(warmupMs)
    const statsBefore = channelStats(await demo.stats())
    const t0 = Date.now()
    const machine0 = machineTicks()
    const mine0 = treeCpuSeconds(process.pid)
    const encoder0 = threadSchedSeconds(demo.pid, 'bsn-video')
    const before = await page.evaluate(() => ({ frames: window.streamClient.stats.frames, dropped: window.streamClient.stats.framesDropped }))
    await page.evaluate(() => (window.__bench.sampling = true))
    await sleep(windowMs)
    const result = await page.evaluate(() => {
      const B = window.__bench
      B.sampling = false
      return { samples: B.samples, psnr: B.psnr, missing: B.missing, mismatched: B.mismatched, demoMedians: B.demoMedians, stats: window.streamClient.stats, mode: window.streamClient.mode }
    })
    const machine1 = machineTicks()
    const mine1 = treeCpuSeconds(process.pid)
    const encoder1 = threadSchedSeconds(demo.pid, 'bsn-video')
    const secs = (Date.now() - t0) / 1000
    const statsAfter = channelStats(await demo.stats())
    if (mode === 'webrtc') {
      // It must still be WebRTC at the window's end: a fallback meanwhile fails the row.
      const using = await page.evaluate(webrtcModeInPage)
      if (using.mode !== 'webrtc' || using.changes > modeChanges) throw new Error(`WebRTC did not last the window (the page uses ${using.mode}): ${using.reason}`)
    }
    const peer = (statsAfter?.viewers ?? []).find((v) => v.webrtc)?.webrtc ?? null
    const server = {
      framesInPerSecond: statsAfter && statsBefore ? (statsAfter.framesIn - statsBefore.framesIn) / secs : null,
      chunksPerSecond: statsAfter?.video && statsBefore?.video ? (statsAfter.video.chunks - statsBefore.video.chunks) / secs : null,
      encodeMsP50: statsAfter?.video?.encodeMsP50 ?? null,
      encodeMsP99: statsAfter?.video?.encodeMsP99 ?? null,
      encoderCpuPct: encoder0?.threads && encoder1?.threads ? (100 * (encoder1.cpu - encoder0.cpu)) / secs : null,
      encoderRunQueueWaitPct: encoder0?.threads && encoder1?.threads ? (100 * (encoder1.wait - encoder0.wait)) / secs : null,
      // WebRTC: the viewer's peer as the server sees it at the window's end.
      webrtcPeer: mode === 'webrtc' ? peer : undefined,
      viewerModes: statsAfter?.viewerModes ?? null,
    }
    // Comparisons still under way finish within a moment.
    if (quality) {
      await sleep(500)
      Object.assign(result, await page.evaluate(() => ({ psnr: window.__bench.psnr, missing: window.__bench.missing, mismatched: window.__bench.mismatched })))
    }
    const samples = result.samples.filter((s) => s.kind === wanted)
    const latencies = samples.map((s) => s.latency).filter((v) => v != null)
    return {
      mode,
      modeInUse: result.mode,
      secs,
      machineBusyPct: machineBusyPct(machine0, machine1),
      otherCpuPct: otherCpuPct(machine0, machine1, mine1 - mine0, secs),
      server,
      framesDrawn: samples.length,
      fpsDrawn: samples.length / secs,
      framesDropped: result.stats.framesDropped - before.dropped,
      latencySamples: latencies.length,
      latencyP50: percentile(latencies, 50),
      latencyP99: percentile(latencies, 99),
      latencyMax: latencies.length ? Math.max(...latencies) : null,
      demoMedianLatency: percentile(result.demoMedians.filter((v) => v != null), 50),
      // [ms since the window start, latency ms or null, bytes, keyframe]
      series: samples.map((x) => [x.at - t0, x.latency, x.bytes, x.key ? 1 : 0]),
      psnr: result.psnr,
      psnrMissing: result.missing,
      psnrMismatched: result.mismatched,
    }
  } finally {
    await context.close().catch(() => {})
  }
}

// ---- one scene ----------------------------------------------------------------------------

async function runScene(scene, { sceneBase, browser, options, quality, latency }) {
  const demo = await startServer(`${sceneBase}/${scene}.html`)
  log(`${scene}: server at ${demo.base} (pid ${demo.pid}), viewport ${demo.viewport?.width}×${demo.viewport?.height}`)
  const result = { scene, viewport: demo.viewport }
  const viewers = []
  try {
    // Phase A: one JPEG viewer. The channel (and its CDP screencast) starts with it.
    const jpeg = wsViewer(demo.wsUrl, { video: false })
    viewers.push(jpeg)
    await withTimeout(jpeg.opened, 10_000, 'the JPEG viewer to connect')
    await waitFor(() => jpeg.firstFrameAt !== null, 20_000, 'the first JPEG frame')
    await sleep(options.warmupMs)
    result.jpegOnly = await measureWindow(demo, [jpeg], options.windowMs)
    log(`${scene}: JPEG only: ${fmt(result.jpegOnly.viewers[0].bytesPerSecond / 1e3)} KB/s, ${fmt(result.jpegOnly.viewers[0].jpegFrames / result.jpegOnly.secs)} fps, server CPU ${fmt(result.jpegOnly.cpuPct)}%`)

    // Phase B: a video viewer joins the same channel; both measured over the same window.
    const video = wsViewer(demo.wsUrl, { video: true })
    viewers.push(video)
    await withTimeout(video.opened, 10_000, 'the video viewer to connect')
    await waitFor(() => video.firstKeyAt !== null || video.errors.length > 0, 20_000, 'the first keyframe')
    if (video.firstKeyAt === null) throw new Error(`the video viewer got no video: ${video.errors.join(', ')}`)
    result.videoConfig = video.config
    await sleep(options.warmupMs)
    result.both = await measureWindow(demo, [jpeg, video], options.windowMs)
    const [j, v] = result.both.viewers
    result.ratio = v.bytesPerSecond > 0 ? j.bytesPerSecond / v.bytesPerSecond : null
    log(`${scene}: JPEG ${fmt(j.bytesPerSecond / 1e3)} KB/s vs H.264 ${fmt(v.bytesPerSecond / 1e3)} KB/s (${fmt(result.ratio, 2)}×), encode p50/p99 ${fmt(result.both.video?.encodeMsP50, 2)}/${fmt(result.both.video?.encodeMsP99, 2)} ms, server CPU ${fmt(result.both.cpuPct)}%`)
    for (const viewer of viewers) viewer.close()
    viewers.length = 0
    await sleep(300)

    if (browser && quality) {
      try {
        const q = await viewerPage(browser, demo, { mode: 'video', windowMs: options.qualityMs, warmupMs: Math.min(options.warmupMs, 1000), quality: true })
        const dbs = q.psnr.map((p) => p.db)
        result.quality = {
          framesDrawn: q.framesDrawn,
          fpsDrawn: q.fpsDrawn,
          samples: dbs.length,
          refineSamples: q.psnr.filter((p) => p.refine).length,
          psnrP50: percentile(dbs, 50),
          psnrP10: percentile(dbs, 10),
          psnrMin: dbs.length ? Math.min(...dbs) : null,
          missing: q.psnrMissing,
          mismatched: q.psnrMismatched,
          modeInUse: q.modeInUse,
          raw: q.psnr,
        }
        log(`${scene}: quality: PSNR-Y p50 ${fmt(result.quality.psnrP50, 2)} dB, p10 ${fmt(result.quality.psnrP10, 2)} dB over ${dbs.length} frames (${q.psnrMissing} without their JPEG, ${q.psnrMismatched} of another size; ${q.framesDrawn} video frames drawn, ${fmt(q.fpsDrawn)}/s)`)
      } catch (err) {
        result.quality = { failed: String(err.message ?? err).split('\n')[0] }
        log(`${scene}: quality not measured: ${err.message ?? err}`)
      }
    }
    if (browser && latency) {
      result.latency = {}
      for (const mode of LATENCY_MODES) {
        try {
          const l = await viewerPage(browser, demo, { mode, windowMs: options.latencyMs, warmupMs: options.warmupMs, quality: false })
          result.latency[mode] = l
          log(`${scene}: latency ${mode} (using ${l.modeInUse}): p50 ${fmt(l.latencyP50, 0)} ms, p99 ${fmt(l.latencyP99, 0)} ms over ${l.latencySamples} frames, ${fmt(l.fpsDrawn)} fps drawn, machine ${fmt(l.machineBusyPct, 0)}% busy`)
        } catch (err) {
          result.latency[mode] = { mode, failed: String(err.message ?? err).split('\n')[0] }
          log(`${scene}: latency ${mode} not measured: ${err.message ?? err}`)
        }
      }
    }
  } finally {
    for (const viewer of viewers) viewer.close()
    await demo.stop()
  }
  return result
}

/** One window: server CPU, the server's stats before and after, and what each viewer got. */
async function measureWindow(demo, viewers, windowMs) {
  const statsBefore = channelStats(await demo.stats())
  const cpu0 = processCpuSeconds(demo.pid)
  const machine0 = machineTicks()
  const chromium0 = treeCpuSeconds(demo.chromiumPid)
  const mine0 = treeCpuSeconds(process.pid)
  const encoder0 = threadSchedSeconds(demo.pid, 'bsn-video')
  const t0 = Date.now()
  await sleep(windowMs)
  const t1 = Date.now()
  const cpu1 = processCpuSeconds(demo.pid)
  const machine1 = machineTicks()
  const chromium1 = treeCpuSeconds(demo.chromiumPid)
  const mine1 = treeCpuSeconds(process.pid)
  const encoder1 = threadSchedSeconds(demo.pid, 'bsn-video')
  const statsAfter = channelStats(await demo.stats())
  const secs = (t1 - t0) / 1000
  const encoderFrames = statsAfter?.video && statsBefore?.video ? statsAfter.video.framesIn - statsBefore.video.framesIn : null
  const encoder =
    encoder1?.threads && encoder0?.threads
      ? {
          cpuPct: (100 * (encoder1.cpu - encoder0.cpu)) / secs,
          runQueueWaitPct: (100 * (encoder1.wait - encoder0.wait)) / secs,
        }
      : null
  const chunksInWindow = statsAfter?.video && statsBefore?.video ? statsAfter.video.chunks - statsBefore.video.chunks : null
  if (encoder && chunksInWindow) encoder.cpuMsPerChunk = (1000 * (encoder.cpuPct / 100) * secs) / chunksInWindow
  const video = statsAfter?.video ?? null
  const delta = (field) => (video && statsBefore?.video ? video[field] - statsBefore.video[field] : video?.[field] ?? null)
  const serverViewers = (stats) => stats?.viewers ?? []
  return {
    secs,
    cpuPct: cpu0 == null || cpu1 == null ? null : (100 * (cpu1 - cpu0)) / secs,
    machineBusyPct: machineBusyPct(machine0, machine1),
    sourceChromiumCpuPct: (100 * (chromium1 - chromium0)) / secs,
    otherCpuPct: otherCpuPct(machine0, machine1, mine1 - mine0, secs),
    encoderThread: encoder,
    encoderFramesIn: encoderFrames,
    framesInPerSecond: statsAfter?.framesIn != null && statsBefore?.framesIn != null ? (statsAfter.framesIn - statsBefore.framesIn) / secs : null,
    viewers: viewers.map((v) => v.window(t0, t1)),
    serverBytesPerSecond: serverViewers(statsAfter).map((after) => {
      const before = serverViewers(statsBefore).find((b) => b.id === after.id)
      return { video: after.video, bytesPerSecond: before ? (after.bytesSent - before.bytesSent) / secs : null }
    }),
    video: video && {
      state: video.state,
      codec: video.codec,
      width: video.width,
      height: video.height,
      fpsIn: video.fpsIn,
      fpsOut: video.fpsOut,
      bitrate: video.bitrate,
      encodeMsP50: video.encodeMsP50,
      encodeMsP99: video.encodeMsP99,
      framesIn: delta('framesIn'),
      chunks: delta('chunks'),
      bytes: delta('bytes'),
      keyframesForced: delta('keyframesForced'),
      keyframesPeriodic: delta('keyframesPeriodic'),
      refinements: delta('refinements'),
      decodeErrors: video.decodeErrors,
      encodeErrors: video.encodeErrors,
    },
    channelAfter: statsAfter,
  }
}

// ---- report -------------------------------------------------------------------------------

const fmt = (value, digits = 1) => (value == null || !Number.isFinite(Number(value)) ? '–' : Number(value).toFixed(digits))
const kb = (bytes) => (bytes == null ? '–' : `${(bytes / 1000).toFixed(1)} KB/s`)

function report(results, options, meta) {
  const out = []
  const scenes = results.scenes
  const label = (name) => (name === 'animated-30fps' ? 'animated, 30 fps' : name)
  out.push(`## Video run of ${meta.date} (${options.mode})`, '')
  out.push(`Machine: ${meta.cpu}, ${meta.cpus} CPUs, ${meta.memGiB} GiB, Linux ${meta.kernel}; Node ${meta.node}; ${meta.chromium}. Machine busy before the run: ${fmt(meta.idleBusyPct, 0)}% (1 s sample). Addon: ${meta.addon?.file ?? '?'} built ${meta.addon?.built ?? '?'}, on ${meta.addon?.commit ?? '?'}.`)
  const viewport = scenes.find((r) => r.viewport)?.viewport
  out.push(`Command: \`${meta.command}\`. Server: \`bench/video.js --serve\`, the routes and setupBrowserStream options of examples/demo.js (its own headless Chromium, viewport ${viewport ? `${viewport.width}×${viewport.height}` : '?'}, screencast JPEG quality 70, max 1280×720; registry defaults: video 2 Mbit/s, a keyframe at least every 5 s; after 600 ms of a quiet page a refinement — an H.264 keyframe at a low quantiser for video viewers, a quality-90 screenshot for JPEG viewers), a fresh server and Chromium per scene. Nothing pinned: the source Chromium, the server, the viewer Chromium and this script share the machine's ${meta.cpus} CPUs.`)
  if (meta.idleBusyPct > 25) out.push(`**The machine was ${fmt(meta.idleBusyPct, 0)}% busy before this run started (another workload): every figure below is affected by it.**`)
  const others = scenes.flatMap((r) => [r.jpegOnly?.otherCpuPct, r.both?.otherCpuPct, ...LATENCY_MODES.map((m) => r.latency?.[m]?.otherCpuPct)]).filter((v) => v != null)
  const worst = others.length ? Math.max(...others) : 0
  if (worst > 15) out.push(`**Other processes used up to ${fmt(worst, 0)}% of a core during a measuring window (see the *other processes* columns): the figures of those windows are affected.**`)
  out.push(`Warm-up ${options.warmupMs} ms, window ${options.windowMs} ms per bytes/CPU cell; quality window ${options.qualityMs} ms; latency window ${options.latencyMs} ms per mode. One run per cell.`, '')

  out.push('### Bytes per viewer per second (one JPEG viewer and one H.264 viewer on the same channel, same window)', '')
  out.push('| scene | JPEG frames/s | JPEG viewer | H.264 viewer | JPEG ÷ H.264 | H.264 chunks/s | KB per picture, JPEG / H.264 | H.264 keyframes in window (periodic / forced) | refinements received (JPEG / H.264) | H.264 vs JPEG, luma PSNR p50 / p10 / min dB (frames) |')
  out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
  for (const r of scenes) {
    if (r.failed) {
      out.push(`| ${label(r.scene)} | failed: ${r.failed} | | | | | | | | |`)
      continue
    }
    const [j, v] = r.both.viewers
    const vid = r.both.video
    const q = r.quality
    const qText = !q ? 'not measured' : q.failed ? `failed: ${q.failed}` : `${fmt(q.psnrP50, 1)} / ${fmt(q.psnrP10, 1)} / ${fmt(q.psnrMin, 1)} (${q.samples}${q.refineSamples ? `, ${q.refineSamples} refinements` : ''})`
    out.push(
      `| ${label(r.scene)} | ${fmt(j.jpegFrames / j.secs)} | ${kb(j.bytesPerSecond)} (${fmt((j.bytesPerSecond * 8) / 1e6, 2)} Mbit/s) | ${kb(v.bytesPerSecond)} (${fmt((v.bytesPerSecond * 8) / 1e6, 2)} Mbit/s) | **${fmt(r.ratio, 1)}×** | ${fmt(v.videoChunks / v.secs)} | ${fmt(j.jpegFrames ? j.jpegBytes / j.jpegFrames / 1000 : null)} / ${fmt(v.videoChunks ? v.videoBytes / v.videoChunks / 1000 : null)} | ${vid ? `${vid.keyframesPeriodic} / ${vid.keyframesForced}` : '–'} | ${j.jpegRefinements} / ${v.refinements} | ${qText} |`,
    )
  }
  out.push('')
  out.push('Bytes: whole binary messages as the `ws` clients receive them (56-byte header + JPEG or H.264 access unit; WebSocket framing and the few JSON text messages not counted), both viewers in the same window. Goal of the issue: ≥ 8× fewer bytes on H.264. *animated, 30 fps* is the same demo page with its `requestAnimationFrame` held to 30 callbacks a second (no quality or latency measured on it).')
  out.push('Quality: not matched by a setting but measured. The demo viewer page (second Chromium, `?mode=video`, WebCodecs decode) compares the picture it drew on its canvas with the JPEG frame of the same `seq` (received by a raw extended socket in the same page), every ≥ 250 ms: PSNR of BT.601 luma over the whole frame. The JPEG frame is what the MJPEG viewer shows (Chromium\'s quality-70 screencast JPEG), so this is how far the H.264 picture departs from the MJPEG picture, not from the page itself.', '')

  out.push('### Encoder cost and server CPU per agent', '')
  out.push('| scene | frame | encode (decode + convert + encode) ms p50 / p99, wall | encoder thread CPU ms per chunk | chunks/s | server CPU, 1 JPEG viewer | server CPU, 1 JPEG + 1 H.264 viewer | difference | source Chromium CPU | machine busy (JPEG only / both) | other processes\' CPU (JPEG only / both) |')
  out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
  for (const r of scenes) {
    if (r.failed) continue
    const vid = r.both.video
    const enc = r.both.encoderThread
    out.push(
      `| ${label(r.scene)} | ${vid ? `${vid.width}×${vid.height}` : '–'} | ${fmt(vid?.encodeMsP50, 1)} / ${fmt(vid?.encodeMsP99, 1)} | ${fmt(enc?.cpuMsPerChunk, 1)} | ${fmt(vid?.chunks != null ? vid.chunks / r.both.secs : null)} | ${fmt(r.jpegOnly.cpuPct)}% | ${fmt(r.both.cpuPct)}% | ${r.jpegOnly.cpuPct != null && r.both.cpuPct != null ? `+${fmt(r.both.cpuPct - r.jpegOnly.cpuPct)} points` : '–'} | ${fmt(r.both.sourceChromiumCpuPct, 0)}% | ${fmt(r.jpegOnly.machineBusyPct, 0)}% / ${fmt(r.both.machineBusyPct, 0)}% | ${fmt(r.jpegOnly.otherCpuPct, 0)}% / ${fmt(r.both.otherCpuPct, 0)}% |`,
    )
  }
  out.push('')
  out.push('Server CPU: user+sys of the server process (Node, the addon and all their threads; Chromium is separate and not included) over the window, in % of one core, from `/proc/<pid>/stat` (10 ms ticks), as bench/run.js measures it. Encode times: `stats().channels[].video.encodeMsP50/P99` at the window end (wall time of the pipeline\'s last 256 frames, so they include time the encoder thread waited for a CPU). Encoder thread CPU per chunk: on-CPU time of the `bsn-video` thread (`/proc/<pid>/task/<tid>/schedstat`) over the window ÷ chunks made. Source Chromium: its whole process tree, % of one core. Machine busy: all CPUs, from `/proc/stat`. Other processes: the machine\'s busy time minus this benchmark\'s own process tree (another workload), % of one core.', '')

  const withLatency = scenes.filter((r) => r.latency)
  out.push('### Glass-to-glass latency (animated page → the demo viewer page\'s canvas)', '')
  if (withLatency.length) {
    out.push('| scene | mode | mode in use | frames drawn/s | samples | p50 ms | p99 ms | max ms | the page\'s own median (cross-check) | server: frames in/s, H.264 chunks/s, encode p50 / p99 ms | encoder thread CPU / waiting for a CPU | WebRTC peer (server): RTT ms, loss, NACKs / PLIs, chunks skipped | machine busy | other processes\' CPU |')
    out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    for (const r of withLatency) {
      for (const mode of LATENCY_MODES) {
        const l = r.latency[mode]
        if (!l) continue
        const name = LATENCY_MODE_NAMES[mode]
        if (l.failed) {
          out.push(`| ${label(r.scene)} | ${name} | failed: ${l.failed.replace(/\|/g, '\\|')} | | | | | | | | | | | |`)
          continue
        }
        const sv = l.server ?? {}
        const encoded = mode !== 'jpeg'
        const serverText = encoded ? `${fmt(sv.framesInPerSecond)}, ${fmt(sv.chunksPerSecond)}, ${fmt(sv.encodeMsP50, 1)} / ${fmt(sv.encodeMsP99, 1)}` : `${fmt(sv.framesInPerSecond)}, –, –`
        const encoderText = encoded ? `${fmt(sv.encoderCpuPct, 0)}% / ${fmt(sv.encoderRunQueueWaitPct, 0)}%` : '–'
        const p = sv.webrtcPeer
        const peerText = mode !== 'webrtc' ? '–' : !p ? 'no peer in stats' : `${fmt(p.rttMs, 1)}, ${fmt(p.loss != null ? 100 * p.loss : null, 1)}%, ${p.nacks} / ${p.plis}, ${p.chunksSkipped}`
        out.push(`| ${label(r.scene)} | ${name} | ${l.modeInUse} | ${fmt(l.fpsDrawn)} | ${l.latencySamples} | ${fmt(l.latencyP50, 0)} | ${fmt(l.latencyP99, 0)} | ${fmt(l.latencyMax, 0)} | ${fmt(l.demoMedianLatency, 0)} | ${serverText} | ${encoderText} | ${peerText} | ${fmt(l.machineBusyPct, 0)}% | ${fmt(l.otherCpuPct, 0)}% |`)
      }
    }
    out.push('')
    out.push('Latency: the animated page paints `Date.now()` as a 34-square time code each frame; the viewer page (examples/demo/index.html served as the demo serves it, in a second headless Chromium, the only viewer then; `?mode=jpeg`, then `?mode=video`, then `?mode=webrtc`) reads it back from its canvas right after drawing each frame — the page\'s own algorithm, applied to every frame instead of its last 30 (its own median, polled from `window.streamStats`, is the cross-check column). It spans page paint → screencast → server → (H.264 encode) → WebSocket or RTP/UDP → decode → drawn, on one machine clock. In WebRTC mode a frame is each picture the `<video>` element presents (`requestVideoFrameCallback`), drawn on the canvas by the page; the row counts only when the page reports `window.streamStats.mode` = webrtc before and after the window (a fallback fails it, with the reason from `window.streamModes`). The peer column: the server\'s stats of that viewer\'s peer at the window end (totals since it connected). Goal of the issue: p99 < 100 ms.', '')
  } else {
    out.push('Not measured in this run (`--no-latency`, no animated scene, or no viewer browser).', '')
  }

  out.push('### Further video rows', '')
  out.push('Run after this by `npm run bench` (each prints its own table): viewers held at ≥ 99% delivery, H.264 vs tuned TS on JPEG (`bench/video-delivery.js`); the TypeScript CDP source vs the native one, 4 agents (`bench/source-side.js`); one viewer behind a shaped link in a network namespace (`bench/video-link.js`); server CPU per WebRTC peer and 100 peers joining at once (`bench/webrtc.js`).')
  out.push('')
  return out.join('\n')
}

// ---- main ---------------------------------------------------------------------------------

/** Which build of the addon ran: its file's time, and the commit it was built on. */
function addonBuild() {
  let commit = 'unknown commit'
  try {
    commit = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim()
    const dirty = execFileSync('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src', 'Cargo.toml', 'Cargo.lock'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim()
    if (dirty) commit += ' with uncommitted changes under src/'
  } catch {}
  const file = fs.readdirSync(ROOT).find((name) => name.endsWith('.node'))
  const built = file ? fs.statSync(path.join(ROOT, file)).mtime.toISOString() : 'not found'
  return { file: file ?? null, built, commit }
}

function chromiumVersion() {
  try {
    return execFileSync(process.env.CHROME_PATH ?? '/usr/bin/chromium', ['--version'], { timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim()
  } catch {
    return 'Chromium (version unknown)'
  }
}

async function main() {
  if (process.argv[2] === '--serve') return serveMain(process.argv[3], process.argv[4])
  if (process.argv.includes('--help')) {
    printHeadComment(__filename)
    return
  }
  const options = parseOptions(process.argv.slice(2).filter((a) => a !== '--video-only'))
  const idle0 = machineTicks()
  await sleep(1000)
  const idle1 = machineTicks()
  const { findChromium } = require(path.join(ROOT, '__test__/support/chromium'))
  if (!findChromium()) {
    log('skipped: no Chromium (set CHROME_PATH or install chromium)')
    process.exitCode = 2
    return
  }
  try {
    require(ROOT)
  } catch (err) {
    throw new Error(`the addon is not built (${err.message})`)
  }
  const started = Date.now()
  const deadline = setTimeout(() => {
    log(`stopped: past the ${options.deadlineMs / 1000} s deadline`)
    cleanupAll()
    process.exit(1)
  }, options.deadlineMs)
  deadline.unref()
  const meta = {
    date: new Date().toISOString(),
    command: process.env.BENCH_VIDEO_COMMAND ?? `node bench/video.js${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`,
    cpu: os.cpus()[0]?.model ?? 'unknown CPU',
    cpus: os.cpus().length,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    chromium: chromiumVersion(),
    idleBusyPct: machineBusyPct(idle0, idle1),
    addon: addonBuild(),
  }
  const { server: sceneServer, base: sceneBase } = await startSceneServer()
  let browser = null
  const results = { meta, options, scenes: [] }
  try {
    if (options.quality || options.latency) {
      try {
        browser = await launchViewerBrowser()
        cleanups.add(() => browser?.close().catch(() => {}))
      } catch (err) {
        log(`no viewer browser (quality and latency not measured): ${err.message}`)
      }
    }
    for (const scene of options.scenes) {
      try {
        results.scenes.push(await runScene(scene, { sceneBase, browser, options, quality: options.quality && SCENE_EXTRAS[scene].quality === true, latency: options.latency && SCENE_EXTRAS[scene].latency === true }))
      } catch (err) {
        log(`${scene}: failed: ${err.stack ?? err}`)
        results.scenes.push({ scene, failed: String(err.message ?? err) })
      }
    }
  } finally {
    await browser?.close().catch(() => {})
    sceneServer.close()
  }
  results.elapsedSeconds = (Date.now() - started) / 1000
  const markdown = report(results, options, meta) + `Elapsed: ${results.elapsedSeconds.toFixed(0)} s.\n`
  const resultsDir = path.join(BENCH, 'results')
  fs.mkdirSync(resultsDir, { recursive: true })
  const base = path.join(resultsDir, `${meta.date.replace(/[:.]/g, '-')}-video-${options.mode}`)
  const forJson = results
  fs.writeFileSync(`${base}.json`, JSON.stringify(forJson, null, 2))
  fs.writeFileSync(`${base}.md`, markdown)
  process.stdout.write(markdown)
  log(`results in ${path.relative(ROOT, base)}.{json,md}`)
  const failures = results.scenes.filter((r) => r.failed)
  if (failures.length) {
    log(`${failures.length} scene(s) failed: ${failures[0].failed}`)
    process.exitCode = 1
  }
  clearTimeout(deadline)
}

const cleanups = new Set()
function cleanupAll() {
  for (const fn of cleanups) {
    try {
      fn()
    } catch {}
  }
}

/** Ctrl-C or SIGTERM: everything started goes with this process. */
function onSignals() {
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      cleanupAll()
      process.exit(130)
    })
  }
}

// What bench/webrtc.js shares with this file (its server is this file's --serve).
module.exports = {
  AGENT,
  startSceneServer,
  startServer,
  channelStats,
  wsViewer,
  launchViewerBrowser,
  addonBuild,
  chromiumVersion,
  cleanups,
  cleanupAll,
  onSignals,
  sleep,
  withTimeout,
  waitFor,
  percentile,
  fmt,
}

if (require.main === module) {
  if (process.argv[2] !== '--serve') onSignals()
  main().catch((err) => {
    cleanupAll()
    process.stderr.write(`bench video: ${err.stack ?? err}\n`)
    process.exit(1)
  })
}

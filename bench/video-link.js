'use strict'
// Bench row: one viewer behind a constrained link, MJPEG vs H.264, with real Chromium.
//
// The viewer runs in a network namespace of its own, joined to this one by a veth pair whose
// two ends are shaped by `tc` (token bucket, `--rate`, default 5 Mbit/s each way). The server
// (Hono + setupBrowserStream, native CDP source on the demo's animated page, 1280×720 JPEG
// quality 70) listens on the veth address. For each mode the viewer reports what reached it:
// pictures per second, bytes per second, and the age of each picture on arrival (its header's
// capture time against the clock it shares with Chromium on this machine), p50/p99.
//
// Needs root (ip netns, tc). Without it, or without veth/tbf in the kernel, it prints why and
// skips. netem (added delay) is not in every kernel: with it, `--delay-ms` adds delay each
// way; without it the row is rate-limited only and says so.
//
//   node bench/video-link.js [--seconds 10] [--rate 5mbit] [--delay-ms 20] [--json file]
// (results go to bench/results/<time>-video-link.json unless --json names another file)

const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const ROOT = path.join(__dirname, '..')
const { createNamespace } = require(path.join(ROOT, '__test__', 'support', 'netns'))

function arg(name, fallback) {
  const at = process.argv.indexOf(`--${name}`)
  return at > 0 && process.argv[at + 1] !== undefined ? process.argv[at + 1] : fallback
}

function sh(args, { quiet = false } = {}) {
  const result = spawnSync(args[0], args.slice(1), { encoding: 'utf8' })
  if (result.status !== 0 && !quiet) throw new Error(`${args.join(' ')}: ${(result.stderr || result.stdout || '').trim()}`)
  return result
}

const percentile = (sorted, p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.round((sorted.length - 1) * p))] : null)

/** The viewer, run inside the namespace: connects, optionally asks for video, measures. */
async function viewer(url, mode, seconds) {
  const WebSocket = require(path.join(ROOT, 'node_modules', 'ws'))
  const ws = new WebSocket(url, ['browser-stream.v1'])
  const ages = []
  let pictures = 0
  let bytes = 0
  let started = null
  let videoSeen = false
  const opened = new Promise((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('error', reject)
  })
  // Listening before `open` resolves: session-meta may come in the same read as the 101.
  ws.on('message', (data, isBinary) => {
    const now = Date.now()
    if (started !== null) bytes += data.length
    if (!isBinary) {
      const message = JSON.parse(data.toString())
      if (message.type === 'session-meta' && mode === 'video') ws.send(JSON.stringify({ type: 'config', video: { codecs: ['avc1.42E01F'] } }))
      return
    }
    const kind = data.readUInt8(0)
    if (kind === 2) videoSeen = true
    // In video mode only chunks count, once they flow (the join frame and those before the
    // first keyframe are JPEG).
    if (mode === 'video' && kind !== 2) return
    if (started === null) {
      started = now
      bytes = data.length
    }
    pictures += 1
    ages.push(now - data.readDoubleBE(12))
  })
  await opened
  const deadline = Date.now() + seconds * 1000 + 15_000
  while ((started === null || Date.now() - started < seconds * 1000) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
  ws.terminate()
  const elapsed = started === null ? 0 : (Date.now() - started) / 1000
  ages.sort((a, b) => a - b)
  return { mode, seconds: elapsed, pictures, fps: elapsed ? pictures / elapsed : 0, bytesPerSecond: elapsed ? bytes / elapsed : 0, ageP50: percentile(ages, 0.5), ageP99: percentile(ages, 0.99), videoSeen }
}

/** The viewer's namespace, with both ends of its veth pair shaped to `rate` (and `delayMs`). */
function setUpLink(rate, delayMs) {
  const net = createNamespace(13)
  try {
    const shape = (prefix, dev) => {
      if (delayMs > 0) {
        const netem = sh([...prefix, 'tc', 'qdisc', 'add', 'dev', dev, 'root', 'netem', 'rate', rate, 'delay', `${delayMs}ms`, 'limit', '1000'], { quiet: true })
        if (netem.status === 0) return 'netem'
      }
      sh([...prefix, 'tc', 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', rate, 'burst', '32kbit', 'latency', '200ms'])
      return 'tbf'
    }
    const kinds = [shape([], net.hostIf), shape(net.command, net.nsIf)]
    const description = kinds.every((k) => k === 'netem') ? `${rate} each way, ${delayMs} ms delay each way (netem)` : `${rate} each way (tbf; netem is not in this kernel, so no added delay)`
    return { net, description }
  } catch (error) {
    net.close()
    throw error
  }
}

async function main() {
  if (process.argv[2] === '--viewer') {
    const [, , , url, mode, seconds] = process.argv
    process.stdout.write(JSON.stringify(await viewer(url, mode, Number(seconds))))
    return
  }
  const seconds = Number(arg('seconds', '10'))
  const rate = arg('rate', '5mbit')
  const delayMs = Number(arg('delay-ms', '20'))
  const jsonFile = arg('json', path.join(ROOT, 'bench', 'results', `${new Date().toISOString().replace(/[:.]/g, '-')}-video-link.json`))
  const skip = (why) => {
    const row = { skipped: why }
    console.log(`constrained link: skipped (${why})`)
    if (jsonFile) fs.writeFileSync(jsonFile, JSON.stringify(row, null, 2))
    return row
  }
  if (process.getuid?.() !== 0) return skip('needs root for ip netns and tc')
  if (spawnSync('ip', ['netns', 'list']).status !== 0 || spawnSync('tc', ['-V']).status !== 0) return skip('ip netns or tc missing (iproute2)')
  let net
  let link
  try {
    ;({ net, description: link } = setUpLink(rate, delayMs))
  } catch (error) {
    return skip(`network namespaces are not available here: ${error.message}`)
  }
  const HOST_IP = net.hostIp
  const { Hono } = require('hono')
  const { serve } = require('@hono/node-server')
  const { setupBrowserStream } = require(ROOT)
  const { launchChromium } = require(path.join(ROOT, '__test__', 'support', 'chromium'))
  let browser = null
  let server = null
  let registry = null
  const results = []
  try {
    const app = new Hono()
    app.get('/animated', (c) => c.html(fs.readFileSync(path.join(ROOT, 'examples', 'demo', 'animated.html'), 'utf8')))
    ;({ registry } = (() => {
      const setup = setupBrowserStream(app, { getCdpEndpoint: () => browser?.endpoint, screencastOptions: { format: 'jpeg', quality: 70, maxWidth: 1280, maxHeight: 720 }, lingerMs: 0 })
      server = serve({ fetch: app.fetch, hostname: HOST_IP, port: 0 })
      setup.injectWebSocket(server)
      return setup
    })())
    await new Promise((resolve) => server.once('listening', resolve))
    const { port } = server.address()
    browser = await launchChromium({ url: `http://${HOST_IP}:${port}/animated`, width: 1280, height: 720 })
    for (const mode of ['jpeg', 'video']) {
      const child = spawn(net.command[0], [...net.command.slice(1), process.execPath, __filename, '--viewer', `ws://${HOST_IP}:${port}/browser/link-agent/stream`, mode, String(seconds)], { stdio: ['ignore', 'pipe', 'inherit'] })
      let out = ''
      child.stdout.on('data', (d) => (out += d))
      await new Promise((resolve) => child.once('exit', resolve))
      results.push(JSON.parse(out))
      // The channel ends with its viewer (linger 0): each mode starts from a fresh screencast.
      await new Promise((r) => setTimeout(r, 500))
    }
  } finally {
    registry?.close()
    server?.closeAllConnections?.()
    await new Promise((resolve) => (server ? server.close(() => resolve()) : resolve()))
    await browser?.close()
    net.close()
  }
  const [jpeg, video] = results
  const row = { link, seconds, jpeg, video }
  console.log(`\nConstrained link (${link}), ${seconds} s per mode, animated demo page 1280×720:`)
  console.log('| mode | pictures/s | bytes/s | age on arrival p50 | p99 |')
  console.log('| --- | ---: | ---: | ---: | ---: |')
  for (const r of results) console.log(`| ${r.mode === 'video' ? 'H.264' : 'MJPEG'} | ${r.fps.toFixed(1)} | ${(r.bytesPerSecond / 1024).toFixed(0)} KiB | ${Math.round(r.ageP50)} ms | ${Math.round(r.ageP99)} ms |`)
  if (!video.videoSeen) console.log('(the video viewer never got a chunk)')
  if (jsonFile) fs.writeFileSync(jsonFile, JSON.stringify(row, null, 2))
  return row
}

module.exports = { main }
if (require.main === module) {
  main().catch((error) => {
    console.error(error)
    process.exit(1)
  })
}

'use strict'
// WebRTC delivery (docs/PROTOCOL.md, "WebRTC"): the main job (examples/demo.js, a real
// Chromium streamed by the native CDP source) watched by a second headless Chromium through
// the client module in WebRTC mode: the <video> plays pictures of the page, the controller's
// click lands on the page's button, the fallback chain steps down when UDP is blocked (and
// when WebCodecs is missing too), and a peer that goes silent ends without disturbing the
// others. Then, with plain WebSocket clients speaking the wire: every bad signalling message
// gets its documented answer, a crowd of offers stays within maxPeers, and peers that never
// connect are given up.
//
// Loopback ICE needs no browser flag with Chromium 156: the server is ICE-lite and offers its
// 127.0.0.1 host candidate in the answer; the viewer's checks to it succeed as they are.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const http = require('node:http')
const path = require('node:path')
const { chromium: playwright } = require('playwright-core')
const { findChromium, launchChromium } = require('./support/chromium')
const { createNamespace, namespaceUnavailable } = require('./support/netns')
const { startDemo } = require('./support/demo')
const { startServer, Viewer, waitFor } = require('./support')

const ROOT = path.join(__dirname, '..')
const chromePath = findChromium()
const skip = chromePath ? false : 'Chromium not found: install chromium or set CHROME_PATH'
/** An offer Chromium made for one recvonly H.264 video transceiver (also used by the Rust tests). */
const OFFER_SDP = fs.readFileSync(path.join(ROOT, 'src', 'webrtc', 'testdata', 'chromium-recvonly-h264.sdp'), 'utf8')
/** The client's bound for a first WebRTC picture (client/browser-stream-client.js). */
const WEBRTC_TIMEOUT_MS = 5000
const BROWSER_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic']

// The streamed page: three colour fields and a button in the middle; a click on the button
// reports itself to the test's HTTP server.
const PAGE = `<!doctype html><meta charset="utf-8"><title>webrtc target</title>
<style>
  html, body { margin: 0; height: 100%; overflow: hidden; }
  #left { position: fixed; left: 0; top: 0; width: 50%; height: 100%; background: rgb(220, 30, 30); }
  #right { position: fixed; right: 0; top: 0; width: 50%; height: 100%; background: rgb(30, 60, 220); }
  #press { position: fixed; left: 40%; top: 40%; width: 20%; height: 20%; background: rgb(30, 200, 60); border: 0; font-size: 24px; }
  #tick { position: fixed; left: 2%; top: 2%; width: 40px; height: 40px; background: #fff; }
</style>
<div id="left"></div><div id="right"></div><div id="tick"></div>
<button id="press" onclick="fetch('/clicked', { method: 'POST' })">press</button>
<script>
  // Something changes every frame, so the screencast keeps sending pictures.
  let n = 0
  const tick = document.getElementById('tick')
  ;(function step() { n++; tick.style.background = n % 2 ? '#fff' : '#ccc'; requestAnimationFrame(step) })()
</script>`

async function pageServer() {
  const clicks = []
  const server = http.createServer((req, res) => {
    if (req.method === 'POST' && req.url === '/clicked') {
      clicks.push(Date.now())
      res.end('ok')
      return
    }
    res.setHeader('content-type', 'text/html; charset=utf-8')
    res.end(PAGE)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${server.address().port}/`, clicks, close: () => new Promise((resolve) => server.close(resolve)) }
}

async function viewerBrowser(t, { args = [], executablePath = chromePath } = {}) {
  const browser = await playwright.launch({ executablePath, headless: true, args: [...BROWSER_ARGS, ...args] })
  t.after(() => browser.close().catch(() => {}))
  return browser
}

/** Colour of the picture the <video> shows at (fx, fy) of its size. */
function videoPixel(page, fx, fy) {
  return page.evaluate(
    ([fx, fy]) => {
      const video = document.getElementById('rtc')
      const canvas = new OffscreenCanvas(video.videoWidth, video.videoHeight)
      const ctx = canvas.getContext('2d')
      ctx.drawImage(video, 0, 0)
      const [r, g, b] = ctx.getImageData(Math.floor(fx * video.videoWidth), Math.floor(fy * video.videoHeight), 1, 1).data
      return { r, g, b }
    },
    [fx, fy],
  )
}

const near = (pixel, [r, g, b], tolerance = 50) => Math.abs(pixel.r - r) <= tolerance && Math.abs(pixel.g - g) <= tolerance && Math.abs(pixel.b - b) <= tolerance

test('WebRTC in the demo: the <video> plays the page, the controller clicks its button, stats and close follow', { skip, timeout: 180_000 }, async (t) => {
  const target = await pageServer()
  t.after(() => target.close())
  const demo = await startDemo(t, { args: [target.url] })
  const browser = await viewerBrowser(t)
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
  await page.goto(`${demo.url}?mode=webrtc`)
  await page.waitForFunction(() => window.streamStats?.mode === 'webrtc' && window.streamStats.webrtcFrames >= 30, null, { timeout: 60_000 })
  const modes = await page.evaluate(() => window.streamModes)
  assert.deepEqual(modes.map((m) => m.mode), ['webrtc'], 'pinned WebRTC ran without a fallback')
  assert.equal(await page.textContent('#using'), 'webrtc')

  // The video element plays (not the canvas), with the page's pictures in it.
  const playing = await page.evaluate(() => {
    const v = document.getElementById('rtc')
    return { hidden: v.hidden, paused: v.paused, width: v.videoWidth, height: v.videoHeight, time: v.currentTime, canvasHidden: document.getElementById('view').hidden }
  })
  t.diagnostic(`video ${playing.width}×${playing.height}, currentTime ${playing.time.toFixed(2)} s`)
  assert.equal(playing.hidden, false)
  assert.equal(playing.canvasHidden, true)
  assert.equal(playing.paused, false)
  assert.ok(playing.width >= 640 && playing.height >= 360, 'a real picture size')
  const before = await page.evaluate(() => document.getElementById('rtc').currentTime)
  await page.waitForFunction((t0) => document.getElementById('rtc').currentTime > t0 + 0.5, before, { timeout: 30_000 })
  const left = await videoPixel(page, 0.2, 0.8)
  const right = await videoPixel(page, 0.8, 0.8)
  // Inside the button, clear of its label.
  const button = await videoPixel(page, 0.44, 0.44)
  t.diagnostic(`pixels: left ${JSON.stringify(left)}, right ${JSON.stringify(right)}, button ${JSON.stringify(button)}`)
  assert.ok(near(left, [220, 30, 30]), 'the left field is red, as on the page')
  assert.ok(near(right, [30, 60, 220]), 'the right field is blue')
  assert.ok(near(button, [30, 200, 60]), 'the button is green, in the middle')

  // The server: one peer, connected, sending; the viewer counted as a WebRTC viewer, and no
  // JPEG frames to it meanwhile.
  const stats = await demo.stats()
  const viewer = stats.channels[0].viewers[0]
  assert.equal(stats.webrtc.peers, 1)
  assert.ok(stats.webrtc.port > 0)
  assert.equal(viewer.webrtc.state, 'connected')
  assert.ok(viewer.webrtc.chunksSent > 0 && viewer.webrtc.packetsSent > 0)
  assert.equal(stats.channels[0].viewerModes.webrtc, 1)
  const framesAt = viewer.framesSent
  await waitFor(async () => (await demo.stats()).channels[0].viewers[0].webrtc.chunksSent >= viewer.webrtc.chunksSent + 30, { what: '30 more chunks over WebRTC' })
  assert.equal((await demo.stats()).channels[0].viewers[0].framesSent, framesAt, 'no JPEG frames while WebRTC shows the pictures')

  // Take control, then click the button in the video: the click lands on the page.
  await page.check('#control')
  await page.waitForFunction(() => window.streamClient.hasControl, null, { timeout: 15_000 })
  const box = await page.locator('#rtc').boundingBox()
  await page.mouse.click(box.x + box.width * 0.5, box.y + box.height * 0.5)
  await waitFor(() => target.clicks.length >= 1, { what: 'the click on the streamed button', timeout: 15_000 })

  // Switching to WebSocket video and back keeps the connection and changes the delivery.
  await page.selectOption('#mode', 'video')
  await page.waitForFunction(() => window.streamStats?.mode === 'video', null, { timeout: 15_000 })
  await waitFor(async () => (await demo.stats()).webrtc.peers === 0, { what: 'the peer ended on webrtc-close' })
  await page.selectOption('#mode', 'webrtc')
  await page.waitForFunction(() => window.streamStats?.mode === 'webrtc', null, { timeout: 30_000 })
  assert.equal((await demo.stats()).webrtc.peers, 1)

  // Ctrl-C: registry.close() ends the peer with the rest, and the process exits cleanly.
  demo.child.kill('SIGINT')
  const { code } = await demo.exited
  assert.equal(code, 0, demo.output())
})

// UDP blocked, as for a viewer on another host when the server offers only an address that
// host cannot reach: the viewer runs in a network namespace, reaching the demo's HTTP port
// over a veth pair, while the server's WebRTC candidate is its own 127.0.0.1 (the demo's
// default), which in the namespace is nobody's. No connectivity check succeeds.
const nsSkip = skip || namespaceUnavailable() || false

test('fallback: with UDP blocked the client steps down to WebSocket video within its bound, and without WebCodecs to JPEG', { skip: nsSkip, timeout: 180_000 }, async (t) => {
  const target = await pageServer()
  t.after(() => target.close())
  const demo = await startDemo(t, { args: [target.url], env: { HOST: '0.0.0.0' } })
  const net = createNamespace(71)
  t.after(() => net.close())
  const liveUrl = demo.url.replace('localhost', net.hostIp)
  // WebCodecs needs a secure context: plain http from another host is not one (a deployer
  // serves viewers over https). The flag makes this origin count as secure.
  const origin = new URL(liveUrl).origin
  const browser = await viewerBrowser(t, { executablePath: net.wrap(chromePath), args: [`--unsafely-treat-insecure-origin-as-secure=${origin}`] })

  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
  const started = Date.now()
  await page.goto(`${liveUrl}?mode=auto`)
  await page.waitForFunction(() => window.streamStats?.mode === 'video' && window.streamStats.videoFrames >= 10, null, { timeout: WEBRTC_TIMEOUT_MS + 30_000 })
  const elapsed = Date.now() - started
  const modes = await page.evaluate(() => window.streamModes)
  t.diagnostic(`auto with UDP blocked: ${JSON.stringify(modes)} after ${elapsed} ms`)
  const video = modes.find((m) => m.mode === 'video')
  assert.match(video.reason, /WebRTC: (no picture within 5000 ms|the connection failed)/, 'the reason names the WebRTC failure')
  assert.ok(!modes.some((m) => m.mode === 'webrtc'), 'WebRTC never showed a picture')
  // The client closed the peer; the server let it go.
  await waitFor(async () => (await demo.stats()).webrtc.peers === 0, { what: 'no peer left' })
  assert.ok((await demo.stats()).webrtc.offers >= 1, 'WebRTC was tried')
  await page.close()

  // WebCodecs missing too: WebRTC fails, video is unavailable, JPEG shows.
  const jpegPage = await browser.newPage({ viewport: { width: 1400, height: 900 } })
  await jpegPage.addInitScript(() => {
    delete window.VideoDecoder
    delete window.EncodedVideoChunk
  })
  await jpegPage.goto(`${liveUrl}?mode=auto`)
  await jpegPage.waitForFunction(() => window.streamStats?.mode === 'jpeg' && window.streamStats.frames >= 10, null, { timeout: WEBRTC_TIMEOUT_MS + 30_000 })
  const jpegModes = await jpegPage.evaluate(() => window.streamModes)
  t.diagnostic(`auto with UDP blocked and no WebCodecs: ${JSON.stringify(jpegModes)}`)
  const jpeg = jpegModes.find((m) => m.mode === 'jpeg')
  assert.match(jpeg.reason, /video unavailable: .*WebRTC: /)
})

/** Every process under `pid` (Chromium's renderer, GPU and network processes), itself included. */
function processTree(pid) {
  const children = new Map()
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (!children.has(ppid)) children.set(ppid, [])
      children.get(ppid).push(Number(entry))
    } catch {}
  }
  const all = [pid]
  for (let i = 0; i < all.length; i++) all.push(...(children.get(all[i]) ?? []))
  return all
}

test('a viewer that goes silent (its browser frozen) loses its peer to ICE consent; the other peer keeps playing', { skip, timeout: 180_000 }, async (t) => {
  const target = await pageServer()
  t.after(() => target.close())
  const demo = await startDemo(t, { args: [target.url] })
  const steady = await (await viewerBrowser(t)).newPage()
  await steady.goto(`${demo.url}?mode=webrtc`)
  await steady.waitForFunction(() => window.streamStats?.mode === 'webrtc', null, { timeout: 60_000 })
  // The frozen one is launched by hand, on the viewer page, so that its processes can be
  // stopped and resumed.
  const frozen = await launchChromium({ url: `${demo.url}?mode=webrtc` })
  t.after(() => frozen.close())
  const delivering = (stats) => stats.channels[0].viewers.filter((v) => v.webrtc?.state === 'connected' && v.webrtc.chunksSent > 0).length
  await waitFor(async () => delivering(await demo.stats()) === 2, { what: 'two peers delivering', timeout: 60_000 })
  const ids = (await demo.stats()).channels[0].viewers.map((v) => v.id)

  const pids = processTree(frozen.process.pid)
  for (const pid of pids) process.kill(pid, 'SIGSTOP')
  t.after(() => {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGCONT')
      } catch {}
    }
  })
  // No consent checks from it for 15 s: str0m's ICE-lite agent calls it disconnected, long
  // before the WebSocket's 45 s heartbeat timeout would close the viewer.
  await waitFor(async () => (await demo.stats()).webrtc.peers === 1, { what: 'the frozen viewer’s peer ended', timeout: 40_000 })
  const stats = await demo.stats()
  const viewers = stats.channels[0].viewers
  assert.equal(viewers.length, 2, 'both viewers are still connected (only the peer ended)')
  const alive = viewers.filter((v) => v.webrtc?.state === 'connected')
  assert.equal(alive.length, 1)
  const sent = alive[0].webrtc.chunksSent
  await waitFor(async () => (await demo.stats()).channels[0].viewers.find((v) => v.id === alive[0].id).webrtc.chunksSent >= sent + 30, { what: 'the steady peer keeps receiving' })
  assert.ok(ids.includes(alive[0].id))
  const frames = await steady.evaluate(() => window.streamStats.webrtcFrames)
  await steady.waitForFunction((n) => window.streamStats.webrtcFrames >= n + 30, frames, { timeout: 30_000 })
  for (const pid of pids) process.kill(pid, 'SIGCONT')
})

// ---- The signalling wire, with plain WebSocket clients and a fake toolset source. ----

const FRAMES_DIR = path.join(ROOT, 'examples', 'frames')
const FRAMES = fs
  .readdirSync(FRAMES_DIR)
  .filter((f) => f.endsWith('.jpeg'))
  .sort()
  .map((f) => fs.readFileSync(path.join(FRAMES_DIR, f)))

/** A server playing real screencast frames from the Rust replay source at 20 fps. */
function replayServer(config = {}) {
  return startServer({ getReplayFrames: () => ({ frames: FRAMES, fps: 20, width: 320, height: 180 }), getToolset: () => undefined, ...config })
}

function webrtcServer(webrtc = { host: '127.0.0.1' }, config = {}) {
  return replayServer({ webrtc, ...config })
}

async function extendedViewer(srv, agent = 'rtc-agent') {
  const viewer = new Viewer(srv.url(agent), { extended: true, keepImages: false })
  await viewer.untilMeta()
  return viewer
}

const errorsOf = (viewer, code) => viewer.json.filter((m) => m.error === code)

test('signalling: bad offers and candidates get documented answers; foreign candidates draw no traffic; others are unaffected', async (t) => {
  const srv = await webrtcServer({ host: '127.0.0.1', connectTimeoutMs: 60_000 })
  t.after(() => srv.close())
  const bystander = await extendedViewer(srv)
  const viewer = await extendedViewer(srv)
  const meta = viewer.json.find((m) => m.type === 'session-meta')
  assert.deepEqual(meta.webrtc, { iceServers: [] }, 'session-meta offers WebRTC')

  // A candidate or a close before any offer.
  viewer.send({ type: 'webrtc-candidate', candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host' })
  await waitFor(() => errorsOf(viewer, 'webrtc_inactive').length === 1, { what: 'webrtc_inactive for a candidate' })
  viewer.send({ type: 'webrtc-close' })
  await waitFor(() => errorsOf(viewer, 'webrtc_inactive').length === 2, { what: 'webrtc_inactive for a close' })

  // Malformed messages and SDP.
  viewer.send({ type: 'webrtc-offer' })
  viewer.send({ type: 'webrtc-offer', sdp: 'x'.repeat(40_000) })
  await waitFor(() => errorsOf(viewer, 'bad_message').length === 2, { what: 'bad_message for a missing and an oversized sdp' })
  viewer.send({ type: 'webrtc-offer', sdp: 'v=0\r\nthis is not sdp\r\n' })
  await waitFor(() => errorsOf(viewer, 'bad_sdp').length === 1, { what: 'bad_sdp for garbage' })
  // An offer without video to receive.
  viewer.send({ type: 'webrtc-offer', sdp: OFFER_SDP.replace('a=recvonly', 'a=inactive') })
  await waitFor(() => errorsOf(viewer, 'bad_sdp').length === 2, { what: 'bad_sdp for an offer without video' })
  assert.match(errorsOf(viewer, 'bad_sdp')[1].message, /no video/)
  for (const e of errorsOf(viewer, 'bad_sdp')) assert.doesNotMatch(e.message, /parse error|pointer|expected|line \d/i, 'no parser internals to the viewer')

  // A valid offer: an answer with the server's candidate, ICE-lite.
  viewer.send({ type: 'webrtc-offer', sdp: OFFER_SDP })
  await waitFor(() => viewer.json.some((m) => m.type === 'webrtc-answer'), { what: 'the answer' })
  const answer = viewer.json.find((m) => m.type === 'webrtc-answer').sdp
  assert.match(answer, /a=ice-lite/)
  const port = srv.registry.stats().webrtc.port
  assert.match(answer, new RegExp(`127\\.0\\.0\\.1 ${port} typ host`))

  // Candidates naming foreign addresses are checked, never used: the server sends nothing to
  // them (it is ICE-lite). A listener on one of them proves it.
  const dgram = require('node:dgram')
  const foreign = dgram.createSocket('udp4')
  await new Promise((resolve) => foreign.bind(0, '127.0.0.1', resolve))
  t.after(() => foreign.close())
  let foreignReceived = 0
  foreign.on('message', () => foreignReceived++)
  viewer.send({ type: 'webrtc-candidate', candidate: `candidate:7 1 udp 2122260223 127.0.0.1 ${foreign.address().port} typ host` })
  viewer.send({ type: 'webrtc-candidate', candidate: 'candidate:8 1 udp 2122260223 203.0.113.9 9 typ host' })
  viewer.send({ type: 'webrtc-candidate', candidate: 'candidate:9 1 udp 2122260223 4a1c0e2d-7a6b-4f3e-9c8d-112233445566.local 5000 typ host' })
  viewer.send({ type: 'webrtc-candidate', candidate: null })
  viewer.send({ type: 'webrtc-candidate', candidate: 'candidate:bad' })
  viewer.send({ type: 'webrtc-candidate', candidate: 'candidate:1 1 udp 1 evil.example.com 5000 typ host' })
  await waitFor(() => errorsOf(viewer, 'bad_candidate').length === 2, { what: 'bad_candidate for the two malformed ones' })
  // Answered in order: the valid ones before were processed, and drew no datagram.
  assert.equal(srv.registry.stats().webrtc.datagramsOut, 0, 'nothing sent to candidates the viewer only named')
  assert.equal(foreignReceived, 0)

  // A flood of candidates: told once, the rest dropped; the socket and the bystander go on.
  for (let i = 0; i < 100; i++) viewer.send({ type: 'webrtc-candidate', candidate: `candidate:${i} 1 udp 1 192.0.2.${i % 250} ${1000 + i} typ host` })
  await waitFor(() => errorsOf(viewer, 'too_many_candidates').length === 1, { what: 'too_many_candidates' })
  viewer.send({ type: 'snapshot-request' })
  await waitFor(() => viewer.json.some((m) => m.type === 'snapshot'), { what: 'the viewer is still served' })
  assert.equal(errorsOf(viewer, 'too_many_candidates').length, 1, 'told once')
  const bystanderFrames = bystander.frameCount
  await waitFor(() => bystander.frameCount >= bystanderFrames + 5, { what: 'the bystander keeps getting frames' })
  assert.equal(bystander.json.filter((m) => m.error).length, 0, 'the bystander saw no error')

  // webrtc-close ends the peer: the viewer is told, the count drops.
  viewer.send({ type: 'webrtc-close' })
  await waitFor(() => viewer.json.some((m) => m.type === 'webrtc-state' && m.state === 'closed'), { what: 'webrtc-state closed' })
  assert.equal(viewer.json.find((m) => m.type === 'webrtc-state' && m.state === 'closed').reason, 'closed')
  await waitFor(() => srv.registry.stats().webrtc.peers === 0, { what: 'no peer' })
  const stats = srv.registry.stats().webrtc
  assert.ok(stats.offersRefused >= 2 && stats.offers >= 3)
})

test('signalling: a server without WebRTC, or without video, says so; a peer that never connects is given up', async (t) => {
  const plain = await replayServer()
  t.after(() => plain.close())
  const a = await extendedViewer(plain)
  assert.equal(a.json.find((m) => m.type === 'session-meta').webrtc, null)
  a.send({ type: 'webrtc-offer', sdp: OFFER_SDP })
  await waitFor(() => errorsOf(a, 'webrtc_unavailable').length === 1, { what: 'webrtc_unavailable' })
  assert.equal(plain.registry.stats().webrtc, undefined)

  const noVideo = await webrtcServer({ host: '127.0.0.1' }, { video: false })
  t.after(() => noVideo.close())
  const b = await extendedViewer(noVideo)
  assert.equal(b.json.find((m) => m.type === 'session-meta').webrtc, null, 'no WebRTC without video')
  b.send({ type: 'webrtc-offer', sdp: OFFER_SDP })
  await waitFor(() => errorsOf(b, 'webrtc_unavailable').length === 1, { what: 'webrtc_unavailable without video' })

  // Nobody answers the server's part of ICE for this offer: after connectTimeoutMs the peer
  // ends with `connect_timeout` and the viewer keeps its JPEG frames.
  const srv = await webrtcServer({ host: '127.0.0.1', connectTimeoutMs: 1000 })
  t.after(() => srv.close())
  const c = await extendedViewer(srv)
  c.send({ type: 'webrtc-offer', sdp: OFFER_SDP })
  await waitFor(() => c.json.some((m) => m.type === 'webrtc-state' && m.state === 'closed'), { what: 'the peer ended' })
  assert.equal(c.json.find((m) => m.type === 'webrtc-state').reason, 'connect_timeout')
  assert.equal(srv.registry.stats().webrtc.peers, 0)
  const frames = c.frameCount
  await waitFor(() => c.frameCount >= frames + 5, { what: 'JPEG frames go on' })
})

test('100 offers at once: at most maxPeers peers, the rest told webrtc_busy; all given up in time, registry.close() ends the rest', async (t) => {
  const srv = await webrtcServer({ host: '127.0.0.1', maxPeers: 40, connectTimeoutMs: 60_000 }, { maxViewersPerAgent: 200, maxInputsPerSecond: 1000 })
  t.after(() => srv.close())
  const viewers = []
  for (let i = 0; i < 100; i++) viewers.push(new Viewer(srv.url('crowd'), { extended: true, keepFrames: false }))
  await Promise.all(viewers.map((v) => v.untilMeta()))
  for (const v of viewers) v.send({ type: 'webrtc-offer', sdp: OFFER_SDP })
  const answered = (v) => v.json.some((m) => m.type === 'webrtc-answer') || errorsOf(v, 'webrtc_busy').length > 0
  await waitFor(() => viewers.every(answered), { what: 'every offer answered', timeout: 30_000 })
  const answers = viewers.filter((v) => v.json.some((m) => m.type === 'webrtc-answer')).length
  assert.equal(answers, 40, 'maxPeers answers')
  assert.equal(viewers.filter((v) => errorsOf(v, 'webrtc_busy').length === 1).length, 60)
  assert.equal(srv.registry.stats().webrtc.peers, 40)
  // The server is still fully responsive: a newcomer joins and gets frames.
  const late = await extendedViewer(srv, 'crowd')
  const frames = late.frameCount
  await waitFor(() => late.frameCount >= frames + 3, { what: 'a newcomer gets frames' })
  srv.registry.close()
  await waitFor(() => srv.registry.stats().webrtc.peers === 0, { what: 'close ended every peer' })
})

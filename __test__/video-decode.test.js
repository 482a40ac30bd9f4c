'use strict'
// The real decode: a Chromium page shows the demo's animated page, our native CDP source and
// H.264 encoder stream it, and a second Chromium (playwright-core) runs the client module in
// video mode — WebCodecs' VideoDecoder — next to a JPEG client on the same channel. Each
// decoded video picture is compared with the JPEG of the same frame (same `seq`): the video
// must be drawn, not blank, and match the source picture within the bound below.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { chromium: playwright } = require('playwright-core')
const { startServer } = require('./support')
const { launchChromium, findChromium } = require('./support/chromium')

const chromePath = findChromium()
const skip = chromePath ? false : 'Chromium not found: install chromium or set CHROME_PATH'
const ROOT = path.join(__dirname, '..')
/**
 * Least median PSNR (luma, dB) of a decoded video picture against the JPEG of the same frame,
 * at the default 2 Mbit/s. JPEG itself is lossy; 30 dB is where text stays legible and a
 * broken decode (wrong frame, colour planes swapped, garbage) lands far below (< 15 dB).
 */
const MIN_MEDIAN_PSNR_DB = 30
const SAMPLES = 30

const VIEWER_PAGE = `<!doctype html><meta charset=utf-8><body>
<canvas id=video></canvas><canvas id=jpeg></canvas>
<script type=module>
import { BrowserStreamClient } from '/client.js'
const url = 'ws://' + location.host + '/browser/decode-agent/stream'
const results = (window.results = { mode: null, modeReason: null, videoFrames: 0, jpegFrames: 0, psnr: [], lumaStd: [], errors: [] })
const video = new Map(), jpeg = new Map()
function pixels(picture, info, canvas) {
  canvas.width = info.width
  canvas.height = info.height
  const ctx = canvas.getContext('2d', { willReadFrequently: true })
  ctx.drawImage(picture, 0, 0)
  return { width: info.width, height: info.height, data: ctx.getImageData(0, 0, info.width, info.height).data }
}
const luma = (d, i) => 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]
function compare(seq) {
  const a = video.get(seq), b = jpeg.get(seq)
  if (!a || !b || results.psnr.length >= ${SAMPLES}) return
  // The encoder crops an odd side to even: compare the area both pictures have.
  const width = Math.min(a.width, b.width), height = Math.min(a.height, b.height)
  let se = 0, sum = 0, sum2 = 0, n = 0
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const ya = luma(a.data, (y * a.width + x) * 4), yb = luma(b.data, (y * b.width + x) * 4)
      se += (ya - yb) ** 2
      sum += ya
      sum2 += ya * ya
      n++
    }
  }
  const mse = se / n
  results.psnr.push(mse === 0 ? 99 : 10 * Math.log10((255 * 255) / mse))
  results.lumaStd.push(Math.sqrt(sum2 / n - (sum / n) ** 2))
  video.delete(seq)
  jpeg.delete(seq)
}
function keep(map, seq, data) {
  map.set(seq, data)
  for (const key of map.keys()) if (map.size > 40) map.delete(key)
  compare(seq)
}
new BrowserStreamClient(url, {
  mode: 'video',
  onMode: (mode, reason) => { results.mode = mode; results.modeReason = reason },
  onError: (e) => results.errors.push(e.error),
  onFrame: (picture, info) => {
    if (info.kind !== 'video') return
    results.videoFrames++
    if (results.videoFrames % 3 === 0) keep(video, info.seq, pixels(picture, info, document.getElementById('video')))
  },
}).connect()
new BrowserStreamClient(url, {
  mode: 'jpeg',
  onFrame: (picture, info) => {
    results.jpegFrames++
    keep(jpeg, info.seq, pixels(picture, info, document.getElementById('jpeg')))
  },
}).connect()
</script>`

test('Chromium decodes the H.264 stream of a real animated page with WebCodecs, matching the JPEG of the same frame', { skip, timeout: 180_000 }, async (t) => {
  let browser = null
  const srv = await startServer(
    { getCdpEndpoint: () => browser?.endpoint, screencastOptions: { format: 'jpeg', quality: 80, maxWidth: 1280, maxHeight: 720 } },
    {
      configure(app) {
        app.get('/client.js', (c) => c.body(fs.readFileSync(path.join(ROOT, 'client', 'browser-stream-client.js'), 'utf8'), 200, { 'content-type': 'text/javascript' }))
        app.get('/animated', (c) => c.html(fs.readFileSync(path.join(ROOT, 'examples', 'demo', 'animated.html'), 'utf8')))
        app.get('/viewer', (c) => c.html(VIEWER_PAGE))
      },
    },
  )
  browser = await launchChromium({ url: `http://127.0.0.1:${srv.port}/animated`, width: 1280, height: 720 })
  const viewerBrowser = await playwright.launch({
    executablePath: chromePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic'],
  })
  t.after(async () => {
    await viewerBrowser.close()
    await srv.close()
    await browser.close()
  })
  const page = await viewerBrowser.newPage()
  await page.goto(`http://127.0.0.1:${srv.port}/viewer`)
  await page.waitForFunction((n) => window.results.psnr.length >= n || window.results.mode === 'jpeg', SAMPLES, { timeout: 120_000 })
  const results = await page.evaluate(() => window.results)
  assert.equal(results.mode, 'video', `the client fell back: ${results.modeReason}`)
  const sorted = [...results.psnr].sort((a, b) => a - b)
  const median = sorted[sorted.length >> 1]
  const stats = srv.registry.stats().channels[0]
  t.diagnostic(
    `${results.videoFrames} video pictures decoded (${results.jpegFrames} JPEG); PSNR vs JPEG of the same frame: ` +
      `min ${sorted[0].toFixed(1)} / median ${median.toFixed(1)} dB; encoder ${stats.video.width}×${stats.video.height} ` +
      `${(stats.video.bitrate / 1e6).toFixed(2)} Mbit/s, encode p50 ${stats.video.encodeMsP50.toFixed(1)} ms`,
  )
  assert.deepEqual(results.errors, [])
  assert.ok(results.videoFrames >= SAMPLES, 'video pictures drawn')
  assert.ok(Math.min(...results.lumaStd) > 10, 'the pictures are not blank')
  assert.ok(median >= MIN_MEDIAN_PSNR_DB, `median PSNR ${median.toFixed(1)} dB below ${MIN_MEDIAN_PSNR_DB}`)
  assert.deepEqual(stats.viewerModes, { compat: 0, jpeg: 1, video: 1, webrtc: 0 })
})

'use strict'
// The main job end to end: `npm run demo` (examples/demo.js) launches Chromium and serves the
// viewer page; the page, opened in a second headless Chromium by playwright-core, must draw
// real frames (a screenshot is saved under test-output/ and its pixels checked), show fps and
// a latency read from the frames, use WebRTC (the demo offers it on loopback), switch to JPEG,
// WebSocket video (WebCodecs) and back on request, and Ctrl-C must stop everything cleanly.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { chromium: playwright } = require('playwright-core')
const { findChromium } = require('./support/chromium')
const { startDemo } = require('./support/demo')
const { decodePng, pixelSummary } = require('./support/png')

const ROOT = path.join(__dirname, '..')
const OUTPUT = path.join(ROOT, 'test-output')
const chromePath = findChromium()
const skip = chromePath ? false : 'Chromium not found: install chromium or set CHROME_PATH'

test('npm run demo: the viewer page draws the live stream in a real browser', { skip, timeout: 120_000 }, async (t) => {
  const { child: demo, url: liveUrl, exited, output } = await startDemo(t)

  const browser = await playwright.launch({
    executablePath: chromePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic'],
  })
  t.after(() => browser.close())
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
  await page.goto(liveUrl)
  await page.waitForFunction(() => window.streamStats?.frames >= 15 && window.streamStats?.latencyMs != null, null, { timeout: 30_000 })
  const stats = await page.evaluate(() => window.streamStats)
  t.diagnostic(`viewer page: ${stats.frames} frames, ${stats.fps} fps, ${stats.width}×${stats.height}, latency ${stats.latencyMs} ms`)
  assert.ok(stats.fps > 0, 'fps shown')
  assert.ok(stats.width >= 320 && stats.height >= 200, 'real frame size')
  assert.ok(stats.latencyMs >= 0 && stats.latencyMs < 5000, `capture-to-display latency ${stats.latencyMs} ms`)
  assert.equal(await page.textContent('#status'), 'streaming')
  // The demo offers WebRTC on loopback: 'auto' picked it, the page says so, and what it draws
  // are the pictures the <video> presents (webrtc.test.js checks them in detail).
  assert.equal(stats.mode, 'webrtc')
  assert.equal(await page.textContent('#using'), 'webrtc')
  await page.waitForFunction((n) => window.streamStats.webrtcFrames >= n + 15, stats.webrtcFrames, { timeout: 30_000 })

  const shot = await page.locator('#rtc').screenshot({ type: 'png' })
  fs.mkdirSync(OUTPUT, { recursive: true })
  const file = path.join(OUTPUT, 'demo-viewer.png')
  fs.writeFileSync(file, shot)
  const summary = pixelSummary(decodePng(shot))
  t.diagnostic(`screenshot ${path.relative(ROOT, file)}: ${summary.distinctColours} colours, mean brightness ${summary.meanBrightness.toFixed(1)}`)
  assert.ok(summary.distinctColours > 30, 'the canvas shows a picture, not a blank')
  assert.ok(summary.meanBrightness > 3 && summary.meanBrightness < 252, 'neither black nor white')

  // A person switches to JPEG, WebSocket video and back to WebRTC: the page keeps drawing in each.
  for (const mode of ['jpeg', 'video', 'webrtc']) {
    await page.selectOption('#mode', mode)
    await page.waitForFunction((m) => window.streamStats?.mode === m, mode, { timeout: 15_000 })
    const before = await page.evaluate(() => ({ ...window.streamStats }))
    await page.waitForFunction((n) => window.streamStats.frames >= n + 10, before.frames, { timeout: 30_000 })
    const after = await page.evaluate(() => ({ ...window.streamStats }))
    assert.equal(await page.textContent('#using'), mode)
    if (mode === 'video') assert.ok(after.videoFrames >= before.videoFrames + 10, 'video pictures drawn again')
    else if (mode === 'webrtc') assert.ok(after.webrtcFrames >= before.webrtcFrames + 10, 'WebRTC pictures shown again')
    else {
      // In JPEG mode the page draws JPEG frames: the count of video pictures stops (allowing
      // for those already decoding when the mode changed).
      const settled = await page.evaluate(() => window.streamStats.videoFrames)
      await page.waitForFunction((n) => window.streamStats.frames >= n + 10, after.frames, { timeout: 30_000 })
      assert.equal(await page.evaluate(() => window.streamStats.videoFrames), settled, 'no video pictures in JPEG mode')
    }
  }

  demo.kill('SIGINT')
  const { code } = await Promise.race([exited, new Promise((_, reject) => setTimeout(() => reject(new Error('the demo did not stop on Ctrl-C')), 10_000))])
  assert.equal(code, 0, `clean exit on Ctrl-C:\n${output()}`)
})

'use strict'
// Takeover (extended mode, `browser-stream.v1`) against a real headless Chromium through the
// native CDP source: a viewer takes control and drives the page with input in FRAME pixels
// (computed from the binary frame header), another viewer is refused, control is handed over,
// and scaled frames (maxWidth/maxHeight) still map clicks onto the right element. The page is
// inspected as an agent would, with playwright-core.

const test = require('node:test')
const assert = require('node:assert/strict')
const { chromium: playwright } = require('playwright-core')
const { launchChromium, findChromium } = require('./support/chromium')
const { startSite } = require('./support/site')
const { startServer, Viewer, waitFor, sleep, jpegSize } = require('./support')

const chromePath = findChromium()
const skip = chromePath ? false : 'Chromium not found: install chromium or set CHROME_PATH'

/** Waits on a busy CI machine too (the default waitFor bound is 5 s). */
const slow = { timeout: 15_000 }

const PAGE = `<!doctype html>
<html><head><title>takeover</title><style>
  html, body { margin: 0; padding: 0; background: #fff; font: 28px sans-serif; overflow: hidden; }
  #button { position: absolute; left: 100px; top: 80px; width: 240px; height: 100px; font-size: 28px; }
  #text { position: absolute; left: 100px; top: 240px; width: 400px; height: 50px; font-size: 28px; }
  #clicks { position: absolute; left: 100px; top: 330px; font-size: 60px; }
  #far { position: absolute; left: 840px; top: 460px; width: 120px; height: 80px; font-size: 28px; }
  #farClicks { position: absolute; left: 600px; top: 330px; font-size: 60px; }
</style></head><body>
  <button id="button">click me</button>
  <input id="text" autocomplete="off" spellcheck="false">
  <div id="clicks">clicks: 0</div>
  <button id="far">far</button>
  <div id="farClicks">far: 0</div>
  <script>
    let clicks = 0
    let far = 0
    document.getElementById('button').addEventListener('click', () => {
      clicks += 1
      document.getElementById('clicks').textContent = 'clicks: ' + clicks
      document.body.style.background = clicks % 2 ? '#fd8' : '#8df'
    })
    document.getElementById('far').addEventListener('click', () => {
      far += 1
      document.getElementById('farClicks').textContent = 'far: ' + far
    })
  </script>
</body></html>`

/** The centre of an element in CSS pixels of the viewport. */
function centreOf(page, selector) {
  return page.evaluate((sel) => {
    const r = document.querySelector(sel).getBoundingClientRect()
    return { x: r.left + r.width / 2, y: r.top + r.height / 2 }
  }, selector)
}

/** CSS pixels → pixels of `frame`'s image (the inverse of the server's mapping). */
function toFramePixels(frame, css) {
  assert.ok(frame.imageWidth > 0 && frame.deviceWidth > 0, 'the frame header knows both sizes')
  return {
    x: Math.round((css.x * frame.imageWidth) / frame.deviceWidth),
    y: Math.round(((css.y + frame.offsetTop) * frame.imageHeight) / frame.deviceHeight),
  }
}

/** A full click (move, press, release) in frame pixels of `frame`. */
function click(viewer, frame, at) {
  const common = { type: 'input', kind: 'mouse', x: at.x, y: at.y, frameSeq: frame.seq }
  viewer.send({ ...common, eventType: 'mouseMoved' })
  viewer.send({ ...common, eventType: 'mousePressed', button: 'left', clickCount: 1 })
  viewer.send({ ...common, eventType: 'mouseReleased', button: 'left', clickCount: 1 })
}


async function connect(srv, agentId) {
  const viewer = new Viewer(srv.url(agentId), { extended: true })
  await viewer.opened
  await viewer.untilMeta()
  return viewer
}

/** Control for `viewer`, as told by the server. */
async function takeControl(viewer) {
  const from = viewer.json.length
  viewer.send({ type: 'control-request' })
  await viewer.waitJson((m) => m.type === 'control' && m.you === true, { from, what: 'control granted', ...slow })
}

/**
 * Cleanups run last in, first out (node:test runs `after` hooks in registration order): the
 * stream server, then the agent connection, then the browser, then the site.
 */
function cleanups(t) {
  const steps = []
  t.after(async () => {
    for (const step of steps.reverse()) await step().catch((err) => t.diagnostic(`cleanup: ${err.message}`))
  })
  return (step) => steps.push(step)
}

/** A browser with the takeover page, viewed at 1280x720 CSS pixels, and an agent connection. */
async function browserWithPage(defer, site) {
  const browser = await launchChromium({ url: 'about:blank', width: 1280, height: 720 })
  defer(() => browser.close())
  const agent = await playwright.connectOverCDP(browser.endpoint)
  defer(() => agent.close())
  const page = agent.contexts()[0].pages()[0]
  await page.setViewportSize({ width: 1280, height: 720 })
  await page.goto(site.url('/takeover'))
  assert.deepEqual(await page.evaluate(() => [innerWidth, innerHeight]), [1280, 720])
  return { browser, page }
}

test('takeover: the controller drives the page in frame pixels, others are refused, control is handed over', { skip, timeout: 120_000 }, async (t) => {
  const defer = cleanups(t)
  const site = await startSite({ '/takeover': PAGE })
  defer(() => site.close())
  const { browser, page } = await browserWithPage(defer, site)
  const srv = await startServer({
    getCdpEndpoint: async () => browser.endpoint,
    screencastOptions: { format: 'jpeg', quality: 70 },
    lingerMs: 200,
  })
  defer(() => srv.close())

  const a = await connect(srv, 'agent')
  await waitFor(() => a.statuses().includes('streaming'), { what: 'streaming', ...slow })
  await a.waitFrames(1, slow)
  const b = await connect(srv, 'agent')
  await b.waitFrames(1, slow)
  const first = a.lastFrame()
  assert.equal(first.kind, 1)
  assert.equal(first.format, 1, 'JPEG')
  assert.ok(first.imageWidth > 0 && first.imageHeight > 0, 'image size known')
  assert.deepEqual(jsonSafeSize(first), { deviceWidth: 1280, deviceHeight: 720 })
  assert.deepEqual(jpegSize(first.image), { width: first.imageWidth, height: first.imageHeight }, 'header size = JPEG size')

  await takeControl(a)
  assert.deepEqual(await b.waitJson((m) => m.type === 'control', { what: 'control told to B', ...slow }), {
    type: 'control',
    controller: a.viewerId,
    you: false,
  })

  // A clicks the button, in pixels of the frame it shows.
  const beforeClick = a.lastFrame()
  const framesBefore = a.frames.length
  click(a, beforeClick, toFramePixels(beforeClick, await centreOf(page, '#button')))
  await waitFor(async () => (await page.textContent('#clicks')) === 'clicks: 1', { what: 'the click in the DOM', ...slow })
  await waitFor(() => a.frames.slice(framesBefore).some((f) => !f.image.equals(beforeClick.image)), {
    what: 'a frame that shows the change',
    ...slow,
  })
  assert.equal(a.errors().length, 0, JSON.stringify(a.errors()))

  // A types: kind text (insertText), then key events.
  const field = a.lastFrame()
  click(a, field, toFramePixels(field, await centreOf(page, '#text')))
  await waitFor(() => page.evaluate(() => document.activeElement?.id === 'text'), { what: 'the input focused', ...slow })
  a.send({ type: 'input', kind: 'text', text: 'héllo' })
  await waitFor(async () => (await page.inputValue('#text')) === 'héllo', { what: 'inserted text', ...slow })
  for (const key of ['x', 'y']) {
    const code = `Key${key.toUpperCase()}`
    a.send({ type: 'input', kind: 'key', eventType: 'keyDown', key, code, text: key })
    a.send({ type: 'input', kind: 'key', eventType: 'keyUp', key, code })
  }
  await waitFor(async () => (await page.inputValue('#text')) === 'hélloxy', { what: 'typed keys', ...slow })
  assert.equal(a.errors().length, 0, JSON.stringify(a.errors()))

  // B may not drive: refused, the DOM does not change.
  const bFrame = b.lastFrame()
  click(b, bFrame, toFramePixels(bFrame, await centreOf(page, '#button')))
  b.send({ type: 'input', kind: 'text', text: 'intruder' })
  await waitFor(() => b.errors('not_controller').length === 4, { what: 'not_controller for each of B\'s inputs', ...slow })
  await sleep(500)
  assert.equal(await page.textContent('#clicks'), 'clicks: 1', "B's click did not reach the page")
  assert.equal(await page.inputValue('#text'), 'hélloxy', "B's text did not reach the page")

  // A releases; B takes control and clicks.
  a.send({ type: 'control-release' })
  await b.waitJson((m) => m.type === 'control' && m.controller === null, { what: 'control released', ...slow })
  await takeControl(b)
  const bNow = b.lastFrame()
  click(b, bNow, toFramePixels(bNow, await centreOf(page, '#button')))
  await waitFor(async () => (await page.textContent('#clicks')) === 'clicks: 2', { what: "B's click in the DOM", ...slow })
  assert.deepEqual(b.errors().filter((m) => m.error !== 'not_controller'), [])

  // Now A is refused.
  a.send({ type: 'input', kind: 'key', eventType: 'keyDown', key: 'q', code: 'KeyQ', text: 'q' })
  await a.waitJson((m) => m.error === 'not_controller', { what: 'not_controller for A', ...slow })

  const channel = srv.registry.stats().channels.find((c) => c.key === 'agent')
  if (channel && 'controller' in channel) assert.equal(channel.controller, b.viewerId, 'stats name the controller')
  await Promise.all([a.close(), b.close()])
})

test('takeover on scaled frames: maxWidth/maxHeight shrink the image, clicks in frame pixels still land', { skip, timeout: 120_000 }, async (t) => {
  const defer = cleanups(t)
  const site = await startSite({ '/takeover': PAGE })
  defer(() => site.close())
  const { browser, page } = await browserWithPage(defer, site)
  const srv = await startServer({
    getCdpEndpoint: async () => browser.endpoint,
    screencastOptions: { format: 'jpeg', quality: 70, maxWidth: 640, maxHeight: 480 },
    lingerMs: 200,
  })
  defer(() => srv.close())

  const a = await connect(srv, 'scaled')
  await waitFor(() => a.frames.some((f) => f.deviceWidth === 1280), { what: 'a frame of the 1280 px wide page', ...slow })
  const frame = a.frames.findLast((f) => f.deviceWidth === 1280)
  t.diagnostic(`image ${frame.imageWidth}x${frame.imageHeight}, device ${frame.deviceWidth}x${frame.deviceHeight}, offsetTop ${frame.offsetTop}`)
  assert.ok(frame.imageWidth > 0 && frame.imageWidth <= 640, `image width ${frame.imageWidth} ≤ 640`)
  assert.ok(frame.imageHeight > 0 && frame.imageHeight <= 480, `image height ${frame.imageHeight} ≤ 480`)
  assert.ok(frame.imageWidth < frame.deviceWidth, 'the image is smaller than the page')
  assert.equal(frame.deviceHeight, 720)
  assert.deepEqual(jpegSize(frame.image), { width: frame.imageWidth, height: frame.imageHeight }, 'header size = JPEG size')

  const far = await centreOf(page, '#far')
  assert.deepEqual(far, { x: 900, y: 500 }, 'the far button is centred at CSS (900, 500)')
  await takeControl(a)
  const current = a.lastFrame()
  const at = toFramePixels(current, far)
  assert.ok(at.x < 640 && at.y < 480, `frame pixels ${JSON.stringify(at)} are inside the scaled image`)
  click(a, current, at)
  await waitFor(async () => (await page.textContent('#farClicks')) === 'far: 1', { what: 'the click on the far button', ...slow })
  assert.equal(await page.textContent('#clicks'), 'clicks: 0', 'no other element was hit')
  assert.equal(a.errors().length, 0, JSON.stringify(a.errors()))
  await a.close()
})

function jsonSafeSize(frame) {
  return { deviceWidth: frame.deviceWidth, deviceHeight: frame.deviceHeight }
}

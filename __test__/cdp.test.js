'use strict'
// The native CDP source against a real headless Chromium (Debian's `chromium`, or CHROME_PATH):
// frames from the browser straight into Rust, one DevTools session per agent whatever the
// number of viewers, following navigation and new tabs, input relay, the screenshot fallback,
// crash reporting and restart. The browser is driven as an agent would, with playwright-core.

const test = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const fs = require('node:fs')
const path = require('node:path')
const { chromium: playwright } = require('playwright-core')
const { launchChromium, findChromium } = require('./support/chromium')
const { startSite } = require('./support/site')
const { startServer, Viewer, waitFor, sleep, settledStatuses, logCapture, VIEWER_ERROR_TEXT } = require('./support')

const chromePath = findChromium()
const skip = chromePath ? false : 'Chromium not found: install chromium or set CHROME_PATH'
const ANIMATED = fs.readFileSync(path.join(__dirname, '..', 'examples', 'demo', 'animated.html'), 'utf8')

/** A local site: the demo's animated page, a second animated page, and a static page. */
const SITE_PAGES = {
  '/animated': ANIMATED,
  '/second': ANIMATED.replace('<title>browser-stream-native demo page</title>', '<title>second</title>'),
  '/static': '<!doctype html><title>static</title><body style="background:#2a6"><h1>Nothing moves here</h1></body>',
}

/** Frames a viewer received (count), and waits for `n` more. */
async function moreFrames(viewer, n, what) {
  const start = viewer.frameCount
  await waitFor(() => viewer.frameCount >= start + n, { what, timeout: 15_000 })
}

/** Waits on a busy CI machine too (the default waitFor bound is 5 s). */
const slow = { timeout: 15_000 }

function channelStats(srv, key) {
  return srv.registry.stats().channels.find((c) => c.key === key)
}

test('native CDP source', { skip, timeout: 180_000 }, async (t) => {
  const site = await startSite(SITE_PAGES)
  t.after(() => site.close())
  const browser = await launchChromium({ url: site.url('/animated') })
  t.after(() => browser.close())
  /** agent → its browser's endpoint (default: `browser`) */
  const endpoints = new Map()
  const logs = logCapture()
  const srv = await startServer({
    logger: logs.logger,
    getCdpEndpoint: async (agentId) => {
      if (agentId === 'throws') throw new Error('no browser registry')
      return agentId === 'no-browser' ? undefined : endpoints.get(agentId) ?? browser.endpoint
    },
    screencastOptions: { format: 'jpeg', quality: 60 },
    lingerMs: 200,
  })
  t.after(() => srv.close())
  const agent = await playwright.connectOverCDP(browser.endpoint)
  t.after(() => agent.close().catch(() => {}))
  const context = agent.contexts()[0]
  const page = context.pages()[0]

  await t.test('the first frame arrives fast and frames keep coming from an animated page', async () => {
    const started = Date.now()
    const viewer = new Viewer(srv.url('agent'), { keepFrames: true })
    await viewer.untilStreaming('streaming')
    await waitFor(() => viewer.frames.length >= 1, { what: 'first frame', timeout: 10_000 })
    const firstFrameMs = Date.now() - started
    assert.ok(firstFrameMs < 10_000, `first frame after ${firstFrameMs} ms`)
    assert.ok(viewer.frames[0].startsWith('/9j/'), 'base64 JPEG, as Studio expects')
    assert.deepEqual(settledStatuses(viewer.statuses()).slice(0, 2), ['connected', 'streaming'])
    assert.ok(viewer.json.some((m) => m.url === site.url('/animated')), 'url from CDP')
    assert.ok(viewer.json.some((m) => m.viewport?.width > 0 && m.viewport?.height > 0), 'viewport from frame metadata')
    await moreFrames(viewer, 10, '10 more frames')
    t.diagnostic(`first frame ${firstFrameMs} ms after connect`)
    await viewer.close()
    await waitFor(() => srv.registry.stats().cdpConnections === 0, { what: 'session stopped after the linger', ...slow })
  })

  await t.test('several viewers share one DevTools session', async () => {
    const viewers = [0, 1, 2].map(() => new Viewer(srv.url('shared'), { keepFrames: false }))
    await Promise.all(viewers.map((v) => v.untilStreaming('streaming')))
    await Promise.all(viewers.map((v) => moreFrames(v, 5, '5 frames on every viewer')))
    const stats = srv.registry.stats()
    const channel = channelStats(srv, 'shared')
    assert.equal(channel.viewers.length, 3)
    assert.equal(channel.cdp.attaches, 1, 'one page attachment')
    assert.ok(channel.cdp.connected)
    assert.ok(channel.cdp.framesAcked >= 5)
    assert.ok(channel.lastFrame.width > 0 && channel.lastFrame.pageScaleFactor > 0, 'frame metadata kept')
    assert.equal(stats.cdpConnections, 1, 'one DevTools connection for the agent')
    assert.equal(channel.starts, 1)
    await Promise.all(viewers.map((v) => v.close()))
    await waitFor(() => srv.registry.stats().cdpConnections === 0, { what: 'session stopped after the last viewer', ...slow })
  })

  await t.test('navigation and a new tab keep the stream', async () => {
    const viewer = new Viewer(srv.url('follow'), { keepFrames: false })
    await viewer.untilStreaming('streaming')
    await moreFrames(viewer, 3, 'frames before navigating')
    await page.goto(site.url('/second'))
    await waitFor(() => viewer.json.some((m) => m.url === site.url('/second')), { what: 'url after navigation', ...slow })
    await moreFrames(viewer, 5, 'frames after navigating')

    const tab = await context.newPage()
    t.after(() => tab.close().catch(() => {}))
    await tab.goto(site.url('/animated?tab=2'))
    await waitFor(() => viewer.json.some((m) => m.url === site.url('/animated?tab=2')), { what: 'url of the new tab', ...slow })
    await moreFrames(viewer, 5, 'frames from the new tab')
    const shown = channelStats(srv, 'follow').cdp
    assert.equal(shown.attaches, 2, 'attached to the new tab')
    assert.equal(shown.url, site.url('/animated?tab=2'))

    await tab.close()
    await waitFor(() => channelStats(srv, 'follow').cdp.attaches === 3, { what: 'back to the first tab', ...slow })
    await moreFrames(viewer, 5, 'frames after the tab closed')
    assert.equal(channelStats(srv, 'follow').cdp.url, site.url('/second'))
    await viewer.close()
  })

  await t.test("Studio's mouse and keyboard messages reach the page", async () => {
    await page.goto(site.url('/animated'))
    const viewer = new Viewer(srv.url('input'), { keepFrames: false })
    await viewer.untilStreaming('streaming')
    await moreFrames(viewer, 2, 'frames')
    const button = await page.locator('#button').boundingBox()
    const at = { x: button.x + button.width / 2, y: button.y + button.height / 2 }
    viewer.send({ type: 'mouse', eventType: 'mouseMoved', ...at })
    viewer.send({ type: 'mouse', eventType: 'mousePressed', ...at, button: 'left', clickCount: 1 })
    viewer.send({ type: 'mouse', eventType: 'mouseReleased', ...at, button: 'left', clickCount: 1 })
    await waitFor(async () => (await page.textContent('#clicks')) === 'clicks: 1', { what: 'the click in the DOM', ...slow })
    const box = await page.locator('#text').boundingBox()
    const inField = { x: box.x + 10, y: box.y + box.height / 2 }
    viewer.send({ type: 'mouse', eventType: 'mousePressed', ...inField, button: 'left', clickCount: 1 })
    viewer.send({ type: 'mouse', eventType: 'mouseReleased', ...inField, button: 'left', clickCount: 1 })
    for (const key of ['h', 'i']) {
      viewer.send({ type: 'keyboard', eventType: 'keyDown', key, code: `Key${key.toUpperCase()}`, text: key })
      viewer.send({ type: 'keyboard', eventType: 'keyUp', key, code: `Key${key.toUpperCase()}` })
    }
    await waitFor(async () => (await page.inputValue('#text')) === 'hi', { what: 'typed text in the input', ...slow })
    assert.ok(channelStats(srv, 'input').cdp.inputsDispatched >= 7)
    await viewer.close()
  })

  await t.test('a static page gives a new viewer a frame at once', async () => {
    await page.goto(site.url('/static'))
    await sleep(300)
    const viewer = new Viewer(srv.url('static'), { keepFrames: false })
    await viewer.untilStreaming('streaming')
    await waitFor(() => viewer.frameCount >= 1, { what: 'a frame of a page that does not change', timeout: 5000 })
    const late = new Viewer(srv.url('static'), { keepFrames: false })
    await waitFor(() => late.frameCount >= 1, { what: 'the newest frame for a late joiner', timeout: 2000 })
    await Promise.all([viewer.close(), late.close()])
    await page.goto(site.url('/animated'))
  })

  await t.test('an http://host:port endpoint is resolved through /json/version', async () => {
    endpoints.set('by-http', `http://127.0.0.1:${browser.port}`)
    const viewer = new Viewer(srv.url('by-http'), { keepFrames: false })
    await viewer.untilStreaming('streaming')
    await moreFrames(viewer, 3, 'frames through the resolved endpoint')
    await viewer.close()
  })

  await t.test('an unreachable browser or a failing getCdpEndpoint: screencast_failed, then a later start works', async () => {
    endpoints.set('unreachable', 'ws://127.0.0.1:9/devtools/browser/none')
    const viewer = new Viewer(srv.url('unreachable'), { keepFrames: false })
    await waitFor(() => viewer.statuses().includes('browser_closed'), { what: 'browser_closed', timeout: 15_000 })
    const failure = viewer.json.find((m) => m.error)
    assert.equal(failure.error, 'screencast_failed')
    // Viewers get the fixed text; the endpoint and the cause go to the log only.
    assert.equal(failure.message, VIEWER_ERROR_TEXT.screencast_failed)
    await waitFor(() => logs.has(/unreachable: screencast_failed: .*(cannot connect|no answer).*127\.0\.0\.1:9/), { what: 'the cause in the log' })
    assert.equal(channelStats(srv, 'unreachable').sourceState, 'idle')
    endpoints.set('unreachable', browser.endpoint)
    viewer.send({ type: 'relaunch' })
    await moreFrames(viewer, 3, 'frames once the browser is reachable')
    await viewer.close()

    const thrower = new Viewer(srv.url('throws'))
    await waitFor(() => thrower.statuses().includes('browser_closed'), { what: 'browser_closed after a throw' })
    assert.deepEqual(thrower.json.find((m) => m.error), { error: 'screencast_failed', message: VIEWER_ERROR_TEXT.screencast_failed })
    await waitFor(() => logs.has(/getCdpEndpoint failed: no browser registry/), { what: "the deployer's error in the log" })
    await thrower.close()
  })

  await t.test('a popup that opens and closes at once does not end the stream', async () => {
    const viewer = new Viewer(srv.url('popup'), { keepFrames: false })
    await viewer.untilStreaming('streaming')
    await moreFrames(viewer, 2, 'frames before the popup')
    const popup = await context.newPage()
    await popup.close()
    await moreFrames(viewer, 5, 'frames after the popup')
    assert.equal(viewer.json.filter((m) => m.error).length, 0, 'no error for a vanished tab')
    assert.equal(channelStats(srv, 'popup').sourceState, 'running')
    await viewer.close()
  })

  await t.test('closeBrowserSession ends the native session; a relaunch starts it again', async () => {
    const viewer = new Viewer(srv.url('closing'), { keepFrames: false })
    await viewer.untilStreaming('streaming')
    await moreFrames(viewer, 2, 'frames')
    await srv.registry.closeBrowserSession('closing')
    await waitFor(() => viewer.statuses().includes('browser_closed'), { what: 'browser_closed' })
    await waitFor(() => channelStats(srv, 'closing').cdp === undefined, { what: 'DevTools session ended', ...slow })
    assert.equal(channelStats(srv, 'closing').sourceState, 'idle')
    viewer.send({ type: 'relaunch' })
    await waitFor(() => viewer.statuses().filter((s) => s === 'streaming').length === 2, { what: 'streaming again', ...slow })
    await moreFrames(viewer, 2, 'frames after the relaunch')
    await viewer.close()
  })

  await t.test('an agent without a browser falls back to the toolset path', async () => {
    const viewer = new Viewer(srv.url('no-browser'))
    await viewer.opened
    await sleep(200)
    assert.deepEqual(viewer.statuses(), ['connected'])
    assert.equal(srv.registry.stats().channels.find((c) => c.key === 'no-browser').cdp, undefined)
    await viewer.close()
  })

  await t.test('a dead browser: browser_crashed then browser_closed, no server crash, then a restart', async () => {
    const bystander = new Viewer(srv.url('agent'), { keepFrames: false })
    await bystander.untilStreaming('bystander streaming')
    const crashing = await launchChromium({ url: site.url('/animated') })
    t.after(() => crashing.close())
    endpoints.set('crash', crashing.endpoint)
    const viewer = new Viewer(srv.url('crash'), { keepFrames: false })
    await viewer.untilStreaming('streaming')
    await moreFrames(viewer, 3, 'frames before the crash')
    crashing.process.kill('SIGKILL')
    await waitFor(() => viewer.statuses().includes('browser_closed'), { what: 'browser_closed', timeout: 10_000 })
    const crashAt = viewer.json.findIndex((m) => m.error === 'browser_crashed')
    const closedAt = viewer.json.findIndex((m) => m.status === 'browser_closed')
    assert.ok(crashAt >= 0, 'browser_crashed sent')
    assert.ok(crashAt < closedAt, 'the error comes first')
    assert.equal(viewer.json[crashAt].message, VIEWER_ERROR_TEXT.browser_crashed)
    await waitFor(() => logs.has(/crash: browser_crashed: .*(DevTools connection closed|crashed)/), { what: 'the cause in the log' })
    const channel = channelStats(srv, 'crash')
    assert.equal(channel.sourceState, 'idle', 'the channel returned to idle')
    assert.equal(channel.viewers.length, 1, 'the viewer stays connected')
    assert.equal(viewer.closeCode, null)

    // The other agent's stream is undisturbed.
    await moreFrames(bystander, 3, 'frames on another agent')

    // The agent's browser comes back; a relaunch from the viewer starts a new session.
    const again = await launchChromium({ url: site.url('/second') })
    t.after(() => again.close())
    endpoints.set('crash', again.endpoint)
    viewer.send({ type: 'relaunch' })
    await waitFor(() => viewer.statuses().filter((s) => s === 'streaming').length >= 2, { what: 'streaming again', ...slow })
    await moreFrames(viewer, 3, 'frames from the new browser')
    assert.equal(channelStats(srv, 'crash').starts, 2)
    await Promise.all([viewer.close(), bystander.close()])
  })
})

test('startCdpSource refuses bad arguments with clear errors', () => {
  const { NativeRegistry } = require('..')
  const native = new NativeRegistry(async () => {}, {})
  assert.throws(() => native.startCdpSource('k', 1, 'http://127.0.0.1:9222'), /must be a ws:\/\/ or wss:\/\/ DevTools URL/)
  assert.throws(() => native.startCdpSource('k', 1, 'ws://x/devtools/browser/y', { format: 'gif' }), /format "gif" is not jpeg or png/)
  assert.throws(() => native.startCdpSource('k', 1, 'ws://x/devtools/browser/y', { quality: 101 }), /quality must be 0 to 100/)
  assert.throws(() => native.startCdpSource('k', 1, 'ws://x/devtools/browser/y', { maxWidth: 8 }), /maxWidth must be 16 to 16384/)
  assert.throws(() => native.startCdpSource('k', 1, 'ws://x/devtools/browser/y', { everyNthFrame: 0 }), /everyNthFrame must be 1 to 60/)
  assert.equal(native.startCdpSource('k', 1, 'ws://x/devtools/browser/y'), false, 'no such live session')
  native.close()
})

test('resolveDevtoolsUrl: ws URLs as they are, http endpoints through /json/version, clear errors', async () => {
  const { resolveDevtoolsUrl } = require('../lib/sources/cdp')
  assert.equal(await resolveDevtoolsUrl('ws://h:1/devtools/browser/x'), 'ws://h:1/devtools/browser/x')
  await assert.rejects(resolveDevtoolsUrl('ftp://h'), /not a ws:\/\/ or http:\/\/ URL/)
  await assert.rejects(resolveDevtoolsUrl(''), /non-empty string/)
  const server = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(req.url === '/json/version' ? JSON.stringify({ webSocketDebuggerUrl: 'ws://localhost:1234/devtools/browser/abc' }) : '{}')
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  // The host the app gave wins over the one Chrome names (e.g. behind a proxy).
  assert.equal(await resolveDevtoolsUrl(`http://127.0.0.1:${port}`), `ws://127.0.0.1:${port}/devtools/browser/abc`)
  await new Promise((resolve) => server.close(resolve))
  await assert.rejects(resolveDevtoolsUrl(`http://127.0.0.1:${port}`), /fetch failed|ECONNREFUSED/)
})

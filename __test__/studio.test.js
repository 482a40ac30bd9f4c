'use strict'
// Mastra Studio's browser view against this package, end to end with real parts: a Hono app on
// @hono/node-server with setupBrowserStream, an agent's headless Chromium driven through a
// MastraBrowser-shaped toolset over CDP (support/cdp-toolset.js), and a second headless
// Chromium showing a Studio-like viewer page (fixtures/studio-viewer.*) that probes the
// session, streams, clicks, types and closes the browser as Studio does. The thread id holds a
// '/' and a space, which Studio percent-encodes: every toolset call must get it decoded.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { Hono } = require('hono')
const { serve } = require('@hono/node-server')
const { chromium } = require('playwright-core')
const { setupBrowserStream } = require('..')
const { findChromium } = require('./support/chromium')
const { waitFor } = require('./support')
const { CdpToolset } = require('./support/cdp-toolset')

const chromePath = findChromium()
const skip = chromePath ? false : 'Chromium not found: install chromium or set CHROME_PATH'

const AGENT = 'agent-1'
const THREAD = 'thread/1 2'
const WAIT_MS = 20_000
/** 16:10, shown in Studio's 16:9 box: pillarboxed, so click mapping must account for the bars. */
const TARGET_VIEWPORT = { width: 1024, height: 640 }

/** Where each toolset method Mastra gives a thread id takes it. */
const THREAD_ARGUMENT = {
  onBrowserReady: (args) => args[1],
  onBrowserClosed: (args) => args[1],
  isBrowserRunning: (args) => args[0],
  startScreencastIfBrowserActive: (args) => args[0]?.threadId,
  getCurrentUrl: (args) => args[0],
  injectMouseEvent: (args) => args[1],
  injectKeyboardEvent: (args) => args[1],
}

const fixture = (name) => fs.readFileSync(path.join(__dirname, 'fixtures', name), 'utf8')

/** The Hono app: the viewer page, the agent's page and the browser-stream routes, on one origin. */
async function startApp(getToolset) {
  const app = new Hono()
  app.get('/studio', (c) => c.html(fixture('studio-viewer.html')))
  app.get('/studio/viewer.js', (c) => c.body(fixture('studio-viewer.js'), 200, { 'content-type': 'text/javascript; charset=utf-8' }))
  app.get('/target', (c) => c.html(fixture('studio-target.html')))
  const { injectWebSocket, registry } = setupBrowserStream(app, { getToolset, apiPrefix: '/api' })
  const server = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s))
  })
  injectWebSocket(server)
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    registry,
    async close() {
      await registry.close()
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

test("Studio's browser view streams and drives a real Chromium through a CDP toolset", { skip, timeout: 170_000 }, async (t) => {
  // Cleanups run last in, first out, whatever part of the setup got done.
  const cleanups = []
  t.after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch((err) => t.diagnostic(`cleanup: ${err.message}`))
  })

  let toolset
  const app = await startApp((agentId) => (agentId === AGENT ? toolset : undefined))
  cleanups.push(() => app.close())
  const agentBrowser = await chromium.launch({ executablePath: chromePath })
  cleanups.push(() => agentBrowser.close())
  const target = await agentBrowser.newPage({ viewport: TARGET_VIEWPORT })
  await target.goto(`${app.base}/target`)
  toolset = await CdpToolset.create(target, { threadId: THREAD })
  const viewerBrowser = await chromium.launch({ executablePath: chromePath })
  cleanups.push(() => viewerBrowser.close())
  const viewer = await viewerBrowser.newPage({ viewport: { width: 1000, height: 700 } })
  await viewer.goto(`${app.base}/studio?agentId=${AGENT}&threadId=${encodeURIComponent(THREAD)}`)

  const studio = () => viewer.evaluate(() => window.studio)

  /** What a failed wait reports: the viewer's state (input log shortened) and the agent's page. */
  async function situation() {
    // Each part on its own: one that fails (a closed page) must not hide the others.
    const part = async (read) => {
      try {
        return await read()
      } catch (err) {
        return `(unavailable: ${err.message})`
      }
    }
    const viewerState = await part(async () => {
      const { sent, ...state } = await studio()
      return { ...state, sentCount: sent.length, lastSent: sent.slice(-6) }
    })
    const page = await part(() =>
      target.evaluate(() => ({
        clicks: document.getElementById('clicks').textContent,
        text: document.getElementById('text').value,
        entered: document.getElementById('entered').textContent,
      })),
    )
    // Where frames stopped: Chrome's screencast (framesSeen), the registry (in/out), the viewer.
    const streams = await part(() => [...(toolset?.streams ?? [])].map((stream) => ({ active: stream.active, framesSeen: stream.framesSeen })))
    const channels = await part(() =>
      app.registry.stats().channels.map(({ key, sourceState, status, lastSeq, framesIn, framesOut, framesStale, framesRejected }) => ({
        key, sourceState, status, lastSeq, framesIn, framesOut, framesStale, framesRejected,
      })),
    )
    return JSON.stringify({ viewer: viewerState, page, streams, channels })
  }

  /** Waits (at most WAIT_MS) for `predicate` to give a truthy value, and returns it. */
  async function until(what, predicate) {
    try {
      return await waitFor(predicate, { timeout: WAIT_MS, interval: 50, what })
    } catch (err) {
      throw new Error(`${err.message}\n${await situation().catch((e) => `(no state: ${e.message})`)}`)
    }
  }

  /** Waits for the viewer state's `key` to be set, and returns its value. */
  const studioValue = (what, key) => until(what, async () => (await studio())[key])

  /** The viewer-page point over the centre of `selector` on the agent's page (Studio's box math, inverted). */
  async function viewerPointOver(selector) {
    const box = await target.locator(selector).boundingBox()
    const { viewport } = await studio()
    const rect = await viewer.locator('#screen').boundingBox()
    const scale = Math.min(rect.width / viewport.width, rect.height / viewport.height)
    return {
      x: rect.x + (rect.width - viewport.width * scale) / 2 + (box.x + box.width / 2) * scale,
      y: rect.y + (rect.height - viewport.height * scale) / 2 + (box.y + box.height / 2) * scale,
    }
  }

  // Steps run in order; one whose prerequisite failed is skipped instead of timing out again.
  const PROBE = 'the session probe answers a live, streamable session'
  const STREAM = 'the viewer streams: status, frames, url, viewport'
  const passed = new Set()
  const step = (name, needs, fn) => {
    const missing = needs.find((need) => !passed.has(need))
    return t.test(name, { skip: missing ? `needs "${missing}", which failed` : false }, async () => {
      await fn()
      passed.add(name)
    })
  }

  await step(PROBE, [], async () => {
    const probe = await studioValue('the session probe answer', 'probe')
    assert.deepEqual(probe, { status: 200, body: { hasSession: true, screencastAvailable: true } })
  })

  await step(STREAM, [PROBE], async () => {
    await until('status streaming', async () => (await studio()).status === 'streaming')
    await until('a frame drawn on the <img>', () =>
      viewer.evaluate(() => window.studio.framesDrawn > 0 && document.getElementById('screen').naturalWidth > 0),
    )
    assert.equal(await studioValue('the url message', 'url'), target.url())
    assert.deepEqual(await studioValue('the viewport message', 'viewport'), TARGET_VIEWPORT)
  })

  await step('a click on the viewer image clicks the button on the agent page', [STREAM], async () => {
    const at = await viewerPointOver('#button')
    await viewer.mouse.click(at.x, at.y)
    await until('the click counted on the agent page', async () => (await target.textContent('#clicks')) === 'clicks: 1')
    // The page turned yellow (#fd8): a corner pixel of the drawn frame shows it to the viewer.
    await until('a frame with the new background drawn in the viewer', () =>
      viewer.evaluate(() => {
        const img = document.getElementById('screen')
        if (!img.naturalWidth) return false
        const canvas = document.createElement('canvas')
        canvas.width = img.naturalWidth
        canvas.height = img.naturalHeight
        const context = canvas.getContext('2d')
        context.drawImage(img, 0, 0)
        const [r, g, b] = context.getImageData(4, 4, 1, 1).data
        return r > 220 && g > 190 && g < 245 && b < 190
      }),
    )
  })

  await step('keys typed in the viewer reach the agent page input', [STREAM], async () => {
    const at = await viewerPointOver('#text')
    await viewer.mouse.click(at.x, at.y)
    await until('the input focused on the agent page', () => target.evaluate(() => document.activeElement?.id === 'text'))
    for (const key of ['a', 'b', 'Enter']) await viewer.keyboard.press(key)
    await until('"ab" in the agent page input', async () => (await target.inputValue('#text')) === 'ab')
    await until('Enter seen by the agent page input', async () => (await target.textContent('#entered')) === 'entered: ab')
    const enterEvents = () =>
      toolset
        .callsOf('injectKeyboardEvent')
        .map(({ args: [event] }) => event)
        .filter((event) => event.key === 'Enter')
    // The page acts on keyDown; the keyUp may still be on its way to the toolset.
    await until('the keyUp of Enter relayed', () => enterEvents().some((event) => event.type === 'keyUp'))
    const enter = enterEvents()
    assert.deepEqual(
      enter.map((event) => [event.type, event.windowsVirtualKeyCode]),
      [['keyDown', 13], ['keyUp', 13]],
      'Enter reaches the toolset as keyDown/keyUp with windowsVirtualKeyCode 13',
    )
  })

  await step('every toolset call gets the decoded thread id', [], async () => {
    const distinct = (values) => [...new Set(values)]
    const seen = Object.fromEntries(
      Object.entries(THREAD_ARGUMENT).map(([method, threadOf]) => [method, distinct(toolset.callsOf(method).map(({ args }) => threadOf(args)))]),
    )
    const expected = Object.fromEntries(Object.keys(THREAD_ARGUMENT).map((method) => [method, [THREAD]]))
    assert.deepEqual(seen, expected, 'thread ids received per toolset method ([] = never called)')
    // The probe may ask hasThreadSession; when it does, for this thread.
    for (const { args } of toolset.callsOf('hasThreadSession')) assert.equal(args[0], THREAD, 'hasThreadSession asked for this thread')
  })

  await step("Close browser ends this thread's session, and the viewer is told", [], async () => {
    const from = (await studio()).statusMessages.length
    await viewer.click('#close')
    const closeResponse = await studioValue('the answer to POST /api/agents/agent-1/browser/close', 'closeResponse')
    assert.deepEqual(closeResponse, { status: 200, body: { success: true } })
    await until('{status:"browser_closed"} after the close', async () => (await studio()).statusMessages.slice(from).includes('browser_closed'))
    assert.deepEqual((await studio()).socketCloses, [], 'the viewer stays connected')
    assert.deepEqual(
      toolset.callsOf('closeThreadSession').map(({ args }) => args),
      [[THREAD]],
      'closeThreadSession called once, with the thread id from the body',
    )
    assert.equal(toolset.callsOf('close').length, 0, 'a thread-scoped close leaves the whole browser open (no toolset.close())')
  })
})

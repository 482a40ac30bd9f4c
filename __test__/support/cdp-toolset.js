'use strict'
// A browser toolset with the shape of Mastra's `MastraBrowser` in thread scope, driving one real
// page over the DevTools protocol (a playwright-core page's CDP session): screencast frames
// from `Page.screencastFrame` (acknowledged), input with `Input.dispatch*`. It holds one
// browser session, owned by `threadId`, open from the start and never relaunched. Every call
// is recorded in `calls` (method and arguments) so tests can check what the server passed.
//
// Like Mastra's thread-scoped browser, a call without a thread id is not refused: it means
// "the browser" (the one page), so a server that forgets the id still streams and the test can
// show which calls lacked it.

const { EventEmitter } = require('node:events')

/** One `Page.startScreencast` on its own CDP session, as an EventEmitter stream. */
class CdpScreencast extends EventEmitter {
  constructor(cdp, options = {}) {
    super()
    this.cdp = cdp
    this.options = options
    this.active = false
    /** Frames Chrome sent on this stream (a failed test tells "no frame came" from "not delivered"). */
    this.framesSeen = 0
    this.onFrame = ({ data, metadata, sessionId }) => {
      this.framesSeen += 1
      // Chrome sends the next frame only after this one is acknowledged.
      this.cdp.send('Page.screencastFrameAck', { sessionId }).catch(() => {})
      this.emit('frame', { data, viewport: { width: metadata.deviceWidth, height: metadata.deviceHeight } })
    }
  }

  async start() {
    const { format = 'jpeg', quality = 80, maxWidth, maxHeight, everyNthFrame } = this.options
    this.cdp.on('Page.screencastFrame', this.onFrame)
    await this.cdp.send('Page.startScreencast', { format, quality, maxWidth, maxHeight, everyNthFrame })
    this.active = true
  }

  async stop() {
    if (!this.active) return
    this.active = false
    this.cdp.off('Page.screencastFrame', this.onFrame)
    // The page may be gone already; the stream is stopped either way.
    await this.cdp.send('Page.stopScreencast').catch(() => {})
    await this.cdp.detach().catch(() => {})
    this.emit('stop', 'manual')
  }
}

class CdpToolset {
  /**
   * @param {import('playwright-core').Page} page the page the agent drives
   * @param {{ threadId: string }} options the thread that owns the browser session
   */
  static async create(page, { threadId }) {
    const input = await page.context().newCDPSession(page)
    return new CdpToolset(page, input, threadId)
  }

  constructor(page, input, threadId) {
    this.page = page
    this.input = input
    this.threadId = threadId
    this.open = true
    this.calls = []
    this.streams = new Set()
    this.closedListeners = new Set()
  }

  record(method, args) {
    this.calls.push({ method, args })
  }

  /** The recorded calls of `method`, oldest first. */
  callsOf(method) {
    return this.calls.filter((call) => call.method === method)
  }

  /** Whether a call for `threadId` (or for no thread: "the browser") reaches the open session. */
  reaches(threadId) {
    return this.open && (threadId === undefined || threadId === this.threadId)
  }

  getScope() {
    this.record('getScope', [])
    return 'thread'
  }

  hasThreadSession(threadId) {
    this.record('hasThreadSession', [threadId])
    return this.open && threadId === this.threadId
  }

  isBrowserRunning(threadId) {
    this.record('isBrowserRunning', [threadId])
    return this.reaches(threadId)
  }

  /** Like Mastra's: fires at once when the session exists (this one is never relaunched later). */
  onBrowserReady(callback, threadId) {
    this.record('onBrowserReady', [callback, threadId])
    if (this.reaches(threadId)) callback()
    return () => {}
  }

  onBrowserClosed(callback, threadId) {
    this.record('onBrowserClosed', [callback, threadId])
    const listener = { callback, threadId }
    this.closedListeners.add(listener)
    return () => this.closedListeners.delete(listener)
  }

  async startScreencastIfBrowserActive(options) {
    this.record('startScreencastIfBrowserActive', [options])
    if (!this.reaches(options?.threadId)) return null
    return this.openScreencast(options)
  }

  async startScreencast(options) {
    this.record('startScreencast', [options])
    return this.openScreencast(options)
  }

  async openScreencast(options = {}) {
    const { threadId, ...screencastOptions } = options
    // A CDP session per stream: two streams never stop or acknowledge each other's frames.
    const stream = new CdpScreencast(await this.page.context().newCDPSession(this.page), screencastOptions)
    this.streams.add(stream)
    stream.once('stop', () => this.streams.delete(stream))
    await stream.start()
    return stream
  }

  getCurrentUrl(threadId) {
    this.record('getCurrentUrl', [threadId])
    return this.reaches(threadId) ? this.page.url() : null
  }

  async injectMouseEvent(event, threadId) {
    this.record('injectMouseEvent', [event, threadId])
    const { type, x, y, button, clickCount, deltaX, deltaY, modifiers } = event
    await this.input.send('Input.dispatchMouseEvent', { type, x, y, button, clickCount, deltaX, deltaY, modifiers })
  }

  async injectKeyboardEvent(event, threadId) {
    this.record('injectKeyboardEvent', [event, threadId])
    const { type, key, code, text, modifiers, windowsVirtualKeyCode } = event
    await this.input.send('Input.dispatchKeyEvent', { type, key, code, text, modifiers, windowsVirtualKeyCode })
  }

  async closeThreadSession(threadId) {
    this.record('closeThreadSession', [threadId])
    if (threadId === this.threadId) await this.endSession()
  }

  async close() {
    this.record('close', [])
    await this.endSession()
  }

  /** Ends the browser session: streams stop, `onBrowserClosed` listeners of its thread fire. */
  async endSession() {
    if (!this.open) return
    this.open = false
    await Promise.all([...this.streams].map((stream) => stream.stop()))
    for (const { callback, threadId } of [...this.closedListeners]) {
      if (threadId === undefined || threadId === this.threadId) callback()
    }
  }
}

module.exports = { CdpToolset }

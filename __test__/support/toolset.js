'use strict'
// A fake browser toolset of the Mastra shape, driven by the test, that emits real JPEG bytes.

const { EventEmitter } = require('node:events')
const { jpegFrame } = require('./frames')

class FakeStream extends EventEmitter {
  constructor(toolset) {
    super()
    this.toolset = toolset
    this.stopped = false
  }
  async stop() {
    if (this.stopped) return
    this.stopped = true
    this.toolset.stops += 1
    this.emit('stop', 'stopped')
  }
}

/**
 * A browser toolset of Mastra's `MastraBrowser` shape, driven by the test. Every call that
 * Mastra gives a thread records it in `threads` (method → threads seen), so tests can check
 * that thread-scoped viewers reach the thread's session.
 */
class FakeToolset {
  constructor({ running = true, url = 'https://example.test/start', scope = 'shared' } = {}) {
    this.running = running
    this.url = url
    this.scope = scope
    this.starts = 0
    this.stops = 0
    this.current = null
    this.readyCallbacks = new Set()
    this.closedCallbacks = new Set()
    this.mouse = []
    this.keys = []
    this.closed = 0
    this.threadsClosed = []
    this.threads = {}
  }
  #saw(method, threadId) {
    ;(this.threads[method] ??= []).push(threadId)
  }
  isBrowserRunning(threadId) {
    this.#saw('isBrowserRunning', threadId)
    return this.running
  }
  hasThreadSession(threadId) {
    this.#saw('hasThreadSession', threadId)
    return this.running
  }
  getScope() {
    return this.scope
  }
  onBrowserReady(callback, threadId) {
    this.#saw('onBrowserReady', threadId)
    this.readyCallbacks.add(callback)
    return () => this.readyCallbacks.delete(callback)
  }
  onBrowserClosed(callback, threadId) {
    this.#saw('onBrowserClosed', threadId)
    this.closedCallbacks.add(callback)
    return () => this.closedCallbacks.delete(callback)
  }
  launch() {
    this.running = true
    for (const callback of this.readyCallbacks) callback()
  }
  /** The browser goes away from outside (Mastra calls the closed callbacks). */
  externalClose() {
    this.running = false
    for (const callback of this.closedCallbacks) callback()
  }
  async startScreencastIfBrowserActive(options) {
    this.#saw('startScreencastIfBrowserActive', options?.threadId)
    if (!this.running) return null
    return this.startScreencast(options)
  }
  async startScreencast() {
    this.starts += 1
    this.current = new FakeStream(this)
    return this.current
  }
  /** Emits frame `seq` on the current stream; returns its base64 data. */
  emitFrame(seq, { size = 0, width = 1280, height = 720 } = {}) {
    const data = jpegFrame(seq, size).toString('base64')
    this.current?.emit('frame', {
      data,
      timestamp: Date.now(),
      viewport: { width, height, offsetTop: 0, scrollOffsetX: 0, scrollOffsetY: 0, pageScaleFactor: 1 },
      sessionId: 1,
    })
    return data
  }
  getCurrentUrl(threadId) {
    this.#saw('getCurrentUrl', threadId)
    return this.url
  }
  async injectMouseEvent(event, threadId) {
    this.#saw('injectMouseEvent', threadId)
    this.mouse.push(event)
  }
  async injectKeyboardEvent(event, threadId) {
    this.#saw('injectKeyboardEvent', threadId)
    this.keys.push(event)
  }
  async closeThreadSession(threadId) {
    this.threadsClosed.push(threadId)
    await this.current?.stop()
  }
  /** Closes the whole browser; like a real MastraBrowser it then calls the closed callbacks. */
  async close() {
    this.closed += 1
    this.running = false
    await this.current?.stop()
    for (const callback of this.closedCallbacks) callback()
  }
}

module.exports = { FakeToolset, FakeStream }

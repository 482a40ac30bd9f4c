'use strict'
// The JS frame source: one screencast session of a Mastra-style browser toolset for one
// channel. Owns calling the toolset (getToolset, onBrowserReady, startScreencast, inject*),
// with the toolset timeout and its default, and forwarding its events to the native registry,
// tagged with the session's generation so that late events of a stopped session are ignored in
// Rust. Must not fan out or hold viewers, nor end its session itself (HostEvents does, through
// the `fail` and `idle` it is given).

const { Status } = require('../native-rules')
const { errorText, withTimeout } = require('../util')

const DEFAULT_TOOLSET_TIMEOUT_MS = 10_000

/**
 * Calls the deployer's `getToolset` as Mastra does: `(agentId)`, plus the thread when the
 * viewer is thread-scoped (Mastra's lookup ignores it; a thread-aware one may use it).
 */
function callGetToolset(getToolset, agentId, threadId) {
  return threadId === undefined ? getToolset(agentId) : getToolset(agentId, threadId)
}

/**
 * The agent's toolset as `getToolset` answers it within `timeoutMs` (default
 * DEFAULT_TOOLSET_TIMEOUT_MS), `undefined` when there is none (or no `getToolset`); rejects
 * when the lookup fails or hangs. Whether the answer is a toolset is the caller's to check.
 */
async function lookUpToolset(getToolset, agentId, threadId, timeoutMs) {
  if (typeof getToolset !== 'function') return undefined
  const toolset = await withTimeout(
    Promise.resolve().then(() => callGetToolset(getToolset, agentId, threadId)),
    timeoutMs ?? DEFAULT_TOOLSET_TIMEOUT_MS,
    'getToolset',
  )
  return toolset ?? undefined
}

/** Errors of a toolset whose browser went away (Mastra's list). */
function isDisconnectionError(err) {
  const text = err instanceof Error ? err.message.toLowerCase() : ''
  return ['target closed', 'browser has been closed', 'page has been closed', 'session closed', 'browser has disconnected'].some((m) =>
    text.includes(m),
  )
}

/** Errors of a toolset whose browser is not ready yet: not worth a log line (Mastra's list). */
function isExpectedInjectionError(err) {
  const text = err instanceof Error ? err.message.toLowerCase() : ''
  return (
    ['no cdp session', 'browser not launched', 'not connected to browser', 'no active target'].some((m) => text.includes(m)) ||
    (text.includes('target') && text.includes('not attached'))
  )
}

/**
 * Applies one validated input (`kind` mouse | keyboard | text) to a toolset with the thread
 * as Mastra passes it. A failure that means the browser is gone closes that thread's session
 * (or tells the toolset it was disconnected), so its `onBrowserClosed` tells the viewers;
 * other failures are logged unless they only mean "not ready yet". Resolves either way;
 * rejects only when `rethrow` is set (the registry counts failed inputs).
 */
async function injectInput(toolset, kind, event, threadId, { log, timeoutMs = DEFAULT_TOOLSET_TIMEOUT_MS, rethrow = false }) {
  // A toolset has no text insertion: a `char` key event with the whole text does the same.
  if (kind === 'text') [kind, event] = ['keyboard', { type: 'char', text: event.text }]
  const method = { mouse: 'injectMouseEvent', keyboard: 'injectKeyboardEvent' }[kind]
  if (!method || typeof toolset[method] !== 'function') return
  try {
    // A hung injection must not block the channel's input queue forever.
    await withTimeout(Promise.resolve().then(() => toolset[method](event, threadId)), timeoutMs, method)
  } catch (err) {
    if (isDisconnectionError(err)) notifyBrowserClosed(toolset, threadId)
    else if (!isExpectedInjectionError(err)) log.warn(`[browser-stream] ${method} failed: ${errorText(err)}`)
    if (rethrow) throw err
  }
}

function notifyBrowserClosed(toolset, threadId) {
  const disconnected = () => {
    try {
      toolset.handleBrowserDisconnected?.()
    } catch {
      // Best effort: the browser is gone either way.
    }
  }
  if (threadId !== undefined && typeof toolset.closeThreadSession === 'function') {
    Promise.resolve()
      .then(() => toolset.closeThreadSession(threadId))
      .catch(disconnected)
    return
  }
  disconnected()
}

/** Whether `value` looks like a browser toolset this module can stream from. */
function isToolset(value) {
  return (
    value !== null &&
    typeof value === 'object' &&
    typeof value.isBrowserRunning === 'function' &&
    (typeof value.startScreencast === 'function' || typeof value.startScreencastIfBrowserActive === 'function')
  )
}

class ToolsetSource {
  /**
   * @param {object} o
   * @param {import('../../binding').NativeRegistry} o.native
   * @param {string} o.key channel key
   * @param {string} o.agentId
   * @param {string | undefined} o.threadId
   * @param {number} o.generation source generation from the native `start` event
   * @param {Function | undefined} o.getToolset (agentId, threadId?) => toolset | undefined | Promise
   * @param {object | undefined} o.screencastOptions passed to startScreencast
   * @param {number | undefined} o.toolsetTimeoutMs
   * @param {{info: Function, warn: Function, error: Function}} o.log
   * @param {(detail: string) => void} o.reportFailure tells the viewers the screencast failed
   * @param {(detail: string) => void} o.fail ends the session as failed
   * @param {() => void} o.idle ends the session quietly (no toolset yet)
   */
  constructor(o) {
    this.native = o.native
    this.key = o.key
    this.agentId = o.agentId
    this.threadId = o.threadId
    this.generation = o.generation
    this.getToolset = o.getToolset
    this.screencastOptions = o.screencastOptions
    this.timeoutMs = o.toolsetTimeoutMs ?? DEFAULT_TOOLSET_TIMEOUT_MS
    this.log = o.log
    this.onReportFailure = o.reportFailure
    this.onFail = o.fail
    this.onIdle = o.idle
    this.toolset = null
    this.stream = null
    this.starting = false
    this.stopped = false
    this.unsubscribeReady = null
    this.unsubscribeClosed = null
    this.lastUrl = null
    this.closedReported = false
    /** Times the session was closed (`closeStream`); a start under way when it changes yields. */
    this.closes = 0
  }

  /** The toolset for this channel, `undefined` when there is none. Throws on a bad answer. */
  async resolveToolset() {
    if (this.toolset) return this.toolset
    const toolset = await lookUpToolset(this.getToolset, this.agentId, this.threadId, this.timeoutMs)
    if (toolset === undefined) return undefined
    if (!isToolset(toolset)) {
      throw new Error('getToolset returned something that is not a browser toolset')
    }
    return toolset
  }

  /**
   * The toolset itself failed (lookup, callbacks): the session ends (the registry's `fail`:
   * viewers get a fixed text, the log the detail) and the next viewer starts a new one.
   */
  fail(detail) {
    this.onFail(detail)
  }

  /**
   * A screencast did not start: viewers are told (the registry's `reportFailure`: a fixed
   * text, the detail to the log) and the session keeps its browser callbacks, so the browser's
   * next ready event (or a `relaunch`) tries again, as Mastra's registry does.
   */
  startFailed(detail) {
    this.onReportFailure(detail)
    this.reportClosed()
  }

  /**
   * Starts the session; never rejects. As Mastra's registry does: the browser's ready and
   * closed callbacks are registered for this thread whether or not the browser runs now (a
   * browser closed from outside and launched again restarts the stream), and the screencast
   * starts at once when the browser already runs.
   */
  async start() {
    let toolset
    try {
      toolset = await this.resolveToolset()
    } catch (err) {
      if (!this.stopped) this.fail(`could not get the browser toolset: ${errorText(err)}`)
      return
    }
    if (this.stopped) return
    if (!toolset) {
      // No browser for this agent yet: viewers stay connected and the next viewer looks the
      // toolset up again, as the TypeScript module does.
      this.log.info(`[browser-stream] no toolset for ${this.key}; viewers wait`)
      this.onIdle()
      return
    }
    this.toolset = toolset
    // The browser is this instance's (whether it runs yet or not): the relay answers for it.
    this.native.markLocalSource(this.key, this.generation)
    try {
      this.subscribe(toolset)
    } catch (err) {
      this.fail(`the toolset's browser callbacks failed: ${errorText(err)}`)
      return
    }
    let running = false
    try {
      running = toolset.isBrowserRunning(this.threadId) === true
    } catch (err) {
      this.fail(`toolset.isBrowserRunning failed: ${errorText(err)}`)
      return
    }
    if (running) await this.begin()
  }

  subscribe(toolset) {
    const unsubscribe = (fn) => (typeof fn === 'function' ? fn : null)
    if (typeof toolset.onBrowserReady === 'function') {
      this.unsubscribeReady = unsubscribe(
        toolset.onBrowserReady(() => {
          if (this.stopped) return
          // A new browser: the old stream (if any) belongs to the one that went away.
          const old = this.stream
          this.stream = null
          if (old) void stopQuietly(old)
          void this.begin()
        }, this.threadId),
      )
    }
    if (typeof toolset.onBrowserClosed === 'function') {
      this.unsubscribeClosed = unsubscribe(
        toolset.onBrowserClosed(() => {
          if (this.stopped) return
          this.stream = null
          this.lastUrl = null
          this.reportClosed()
        }, this.threadId),
      )
    }
  }

  /** Starts the screencast of a running browser (`startScreencastIfBrowserActive`, with the thread). */
  async begin() {
    const toolset = this.toolset
    if (!toolset || this.stopped || this.starting || this.stream) return
    this.starting = true
    this.closedReported = false
    const closes = this.closes
    this.native.setStatus(this.key, Status.BROWSER_STARTING, this.generation)
    try {
      const start =
        typeof toolset.startScreencastIfBrowserActive === 'function' ? toolset.startScreencastIfBrowserActive : toolset.startScreencast
      const options = this.threadId === undefined ? this.screencastOptions : { ...(this.screencastOptions ?? {}), threadId: this.threadId }
      const stream = await withTimeout(
        Promise.resolve().then(() => start.call(toolset, options)),
        this.timeoutMs,
        'startScreencast',
      )
      if (!stream) {
        this.reportClosed()
        return
      }
      if (typeof stream.on !== 'function') {
        this.startFailed('startScreencast returned something that is not a screencast stream')
        return
      }
      // Stopped, or the session was closed (close route) while this start was under way: the
      // new stream belongs to nobody.
      if (this.stopped || this.closes !== closes) {
        await stopQuietly(stream)
        return
      }
      this.attach(stream)
      this.closedReported = false
      this.native.setStatus(this.key, Status.STREAMING, this.generation)
      this.syncUrl()
    } catch (err) {
      if (!this.stopped) this.startFailed(`could not start the screencast: ${errorText(err)}`)
    } finally {
      this.starting = false
    }
  }

  attach(stream) {
    this.stream = stream
    stream.on('frame', (frame) => {
      if (this.stream !== stream) return
      const data = frame?.data
      if (typeof data !== 'string' && !Buffer.isBuffer(data)) return
      const viewport = frame.viewport ?? {}
      this.native.pushFrame(
        this.key,
        data,
        {
          width: viewport.width,
          height: viewport.height,
          offsetTop: viewport.offsetTop,
          scrollOffsetX: viewport.scrollOffsetX,
          scrollOffsetY: viewport.scrollOffsetY,
          pageScaleFactor: viewport.pageScaleFactor,
          timestamp: typeof frame.timestamp === 'number' ? frame.timestamp : undefined,
        },
        this.generation,
      )
      this.syncUrl()
    })
    stream.on('url', (url) => {
      if (this.stream === stream) this.setUrl(url)
    })
    stream.on('stop', () => {
      if (this.stream !== stream) return
      this.stream = null
      this.reportClosed()
    })
    stream.on('error', (err) => {
      if (this.stream !== stream) return
      // As Mastra: an errored stream is stopped and the viewers see the browser as closed;
      // the error's text is for the log only.
      this.log.warn(`[browser-stream] screencast error for ${this.key}: ${errorText(err)}`)
      this.stream = null
      void stopQuietly(stream)
      this.reportClosed()
    })
  }

  /**
   * Tells the viewers the browser session is over, once per session: the close route ending
   * the session and the toolset's own `onBrowserClosed` for the same close are one event.
   */
  reportClosed() {
    if (this.closedReported) return
    this.closedReported = true
    this.native.setStatus(this.key, Status.BROWSER_CLOSED, this.generation)
  }

  setUrl(url) {
    if (typeof url !== 'string' || url === '' || url === this.lastUrl) return
    this.lastUrl = url
    if (Buffer.byteLength(url) > 8192) return // not a URL a viewer can use; Rust would refuse it
    try {
      this.native.setUrl(this.key, url, this.generation)
    } catch {
      // A URL is a nicety; never let it disturb frames.
    }
  }

  syncUrl() {
    const toolset = this.toolset
    if (!toolset || typeof toolset.getCurrentUrl !== 'function') return
    try {
      const url = toolset.getCurrentUrl(this.threadId)
      if (url && typeof url.then === 'function') {
        url.then((u) => this.setUrl(u), () => {})
      } else {
        this.setUrl(url)
      }
    } catch {
      // A URL is a nicety; a failing getter must not disturb frames.
    }
  }

  /** Applies one input from a viewer; rejects when the toolset fails (counted in Rust). */
  async input(kind, event) {
    if (this.stopped) return
    if (kind === 'relaunch') {
      // The newest Mastra ignores `relaunch` (Studio no longer sends it) and launches no
      // browser for a viewer; here it only restarts the screencast of a browser that runs.
      if (!this.stream && this.toolset?.isBrowserRunning(this.threadId) === true) await this.begin()
      return
    }
    const toolset = this.toolset ?? (await this.resolveToolset())
    if (!toolset) return
    await injectInput(toolset, kind, event, this.threadId, { log: this.log, timeoutMs: this.timeoutMs, rethrow: true })
  }

  /**
   * Ends the browser session but keeps waiting for the next one (drop-in
   * `closeBrowserSession`): viewers get `{status:'browser_closed'}` exactly once.
   */
  async closeStream() {
    this.closes += 1
    const stream = this.stream
    this.stream = null
    this.lastUrl = null
    if (stream) await stopQuietly(stream)
    this.reportClosed()
  }

  /** Stops the session for good (last viewer gone, or registry closed). Never rejects. */
  async stop() {
    this.stopped = true
    for (const unsubscribe of [this.unsubscribeReady, this.unsubscribeClosed]) {
      try {
        unsubscribe?.()
      } catch {
        // The toolset's unsubscribe failing must not keep the stream alive.
      }
    }
    this.unsubscribeReady = null
    this.unsubscribeClosed = null
    const stream = this.stream
    this.stream = null
    // Errored streams are stopped too: a stream is always stopped exactly once.
    if (stream) await stopQuietly(stream)
  }
}

async function stopQuietly(stream) {
  try {
    await stream.stop?.()
  } catch {
    // Stopping a dead stream may throw; it is stopped either way.
  }
}

module.exports = { ToolsetSource, isToolset, callGetToolset, lookUpToolset, injectInput, DEFAULT_TOOLSET_TIMEOUT_MS }

'use strict'
// HostEvents: the JS side of the native host callback, which ViewerRegistry hands to its
// NativeRegistry. Owns the source sessions of the channels (starting the JS toolset source or a
// Rust one — CDP, replay — for a generation, relaying input to it, stopping, failing and ending
// it, and closing it for the drop-in API and the close route), the writes and closes Rust asks
// of JS-bridged sockets, the control-change callback and Rust's log lines. Must not fan out
// frames (every frame goes through Rust once), hold sockets or map drop-in keys: ViewerRegistry
// owns those and lends only what is needed (see the constructor).

const { ToolsetSource } = require('./sources/toolset')
const { startCdpSource } = require('./sources/cdp')
const { ErrorCode, Status } = require('./native-rules')
const { errorText } = require('./util')
const { redact } = require('./log')

class HostEvents {
  #native
  #log
  #getToolset
  /** agentId → prerecorded frames replayed by the Rust source instead of a toolset */
  #getReplayFrames
  /** agentId → DevTools endpoint of its browser, for the native CDP source */
  #getCdpEndpoint
  #screencastOptions
  #toolsetTimeoutMs
  /** how long the browser may take to answer the native CDP source */
  #cdpTimeoutMs
  /** (agentId, controller, {threadId, key, reason?}) on every control change */
  #onControlChange
  /** (agentId, {viewerId, canControl, threadId, key, to, reply, event?}) on every viewer's reply */
  #onViewerReply
  /** the registry's channel book, lent: remember, toolsetGetter, forget, pruneGone */
  #channels
  /** the registry's JS-bridged sockets, lent: get, take */
  #sockets
  /** channel key → source of the live session (a ToolsetSource, or the record of a Rust one) */
  #sources = new Map()

  /**
   * @param {object} o options already checked by ViewerRegistry
   * @param {import('../binding').NativeRegistry} o.native
   * @param {{info: Function, warn: Function, error: Function}} o.log
   * @param {Function} [o.getToolset]
   * @param {Function} [o.getReplayFrames]
   * @param {Function} [o.getCdpEndpoint]
   * @param {object} [o.screencastOptions]
   * @param {number} [o.toolsetTimeoutMs]
   * @param {number} [o.cdpTimeoutMs]
   * @param {Function} [o.onControlChange]
   * @param {Function} [o.onViewerReply]
   * @param {object} o.channels what JS keeps of channels: `remember(key, {agentId, threadId})`
   *   when a source starts, `toolsetGetter(key)` (a drop-in viewer's getToolset), `forget(key)`
   *   once its source stopped, `pruneGone()` for channels Rust let go without a `stop`
   * @param {object} o.sockets the JS-bridged sockets by viewer id: `get(id)`, `take(id)` (gets
   *   and forgets), each `{ send(data): Promise, close(code, reason), terminate() }`
   */
  constructor(o) {
    this.#native = o.native
    this.#log = o.log
    this.#getToolset = o.getToolset
    this.#getReplayFrames = o.getReplayFrames
    this.#getCdpEndpoint = o.getCdpEndpoint
    this.#screencastOptions = o.screencastOptions
    this.#toolsetTimeoutMs = o.toolsetTimeoutMs
    this.#cdpTimeoutMs = o.cdpTimeoutMs
    this.#onControlChange = o.onControlChange
    this.#onViewerReply = o.onViewerReply
    this.#channels = o.channels
    this.#sockets = o.sockets
  }

  /**
   * The host callback. `input` and `send` are awaited by Rust (which counts a failed input);
   * nobody awaits the others, so their failures are logged here rather than left as unhandled
   * rejections.
   */
  handle(event) {
    const handled = this.#dispatch(event)
    if (event.kind === 'input' || event.kind === 'send') return handled
    return handled.catch((err) => this.#log.error(`[browser-stream] ${event.kind} of ${event.key ?? event.viewerId}: ${errorText(err)}`))
  }

  async #dispatch(event) {
    switch (event.kind) {
      case 'start':
        this.#startSource(event)
        return
      case 'stop':
        await this.#stopSource(event)
        return
      case 'input':
        await this.#relayInput(event)
        return
      case 'send': {
        const socket = this.#sockets.get(event.viewerId)
        if (!socket) throw new Error(`viewer ${event.viewerId} is gone`)
        await socket.send(event.data ?? event.text)
        return
      }
      case 'control':
        this.#controlChanged(event)
        return
      case 'reply':
        // Resolved once the hook ran: the viewer's `reply-ok` waits for it.
        await this.#viewerReplied(event)
        return
      case 'probe':
        this.#native.answerProbe(event.probeId, await this.#hasBrowser(event))
        return
      case 'log': {
        // Rust's diagnostics may quote a deployer's error: credentials in it are blanked.
        // `level` is named as the logger method (HostLogLevel); the structured fields
        // (agent, thread, viewer, reason, suppressed) follow as an object, for loggers that
        // take one (pino, Mastra's), and are blanked the same way.
        const line = `[browser-stream] ${redact(event.text)}`
        if (!event.fields) {
          this.#log[event.level](line)
          return
        }
        const fields = {}
        for (const [name, value] of Object.entries(event.fields)) fields[name] = redact(value)
        this.#log[event.level](line, fields)
        return
      }
      case 'close':
        this.#sockets.take(event.viewerId)?.close(event.code, event.reason)
        return
      case 'terminate':
        this.#sockets.take(event.viewerId)?.terminate()
        return
      default:
        this.#log.warn(`[browser-stream] unknown host event ${event.kind}`)
    }
  }

  #startSource(event) {
    const { key, agentId, threadId, generation } = event
    this.#pruneGone()
    this.#channels.remember(key, { agentId, threadId: threadId ?? undefined })
    const previous = this.#sources.get(key)
    if (previous && previous.generation !== generation) void previous.stop()
    if (this.#getCdpEndpoint) {
      // Native source: Rust owns the session once started; the entry only marks it live.
      this.#sources.set(key, this.#nativeSourceEntry(key, generation))
      startCdpSource({
        native: this.#native,
        key,
        generation,
        agentId,
        threadId: threadId ?? undefined,
        getCdpEndpoint: this.#getCdpEndpoint,
        screencastOptions: this.#screencastOptions,
        timeoutMs: this.#toolsetTimeoutMs,
        cdpTimeoutMs: this.#cdpTimeoutMs,
        isCurrent: () => this.#sources.get(key)?.generation === generation,
        fail: (detail) => this.#endSession(key, generation, { failure: detail }),
      }).then(
        (started) => {
          if (!started && this.#sources.get(key)?.generation === generation) this.#startToolsetSource(event)
        },
        (err) => this.#log.warn(`[browser-stream] CDP source of ${key}: ${errorText(err)}`),
      )
      return
    }
    this.#startToolsetSource(event)
  }

  #startToolsetSource({ key, agentId, threadId, generation }) {
    if (this.#getReplayFrames) {
      let replay
      try {
        replay = this.#getReplayFrames(agentId, threadId ?? undefined)
      } catch (err) {
        this.#sources.set(key, this.#nativeSourceEntry(key, generation))
        this.#endSession(key, generation, { failure: `getReplayFrames: ${errorText(err)}` })
        return
      }
      if (replay) {
        this.#startReplay(key, generation, replay)
        return
      }
    }
    const source = new ToolsetSource({
      native: this.#native,
      key,
      agentId,
      threadId: threadId ?? undefined,
      generation,
      getToolset: this.#channels.toolsetGetter(key) ?? this.#getToolset,
      screencastOptions: this.#screencastOptions,
      toolsetTimeoutMs: this.#toolsetTimeoutMs,
      log: this.#log,
      reportFailure: (detail) => this.#reportFailure(key, generation, detail),
      fail: (detail) => this.#endSession(key, generation, { failure: detail }),
      idle: () => this.#noBrowserHere(key, generation),
    })
    this.#sources.set(key, source)
    source.start().catch(() => {})
  }

  /**
   * This instance has no browser for session `generation` of `key`: with a relay its viewers
   * watch the instance that has one (a Rust relay source, which keeps looking for it);
   * without, the session ends quietly and the next viewer looks again.
   */
  #noBrowserHere(key, generation) {
    if (!this.#native.hasRelay) {
      this.#endSession(key, generation)
      return
    }
    this.#sources.set(key, this.#nativeSourceEntry(key, generation))
    this.#native.startRelaySource(key, generation)
  }

  /**
   * Whether this instance has the browser of a channel, as the relay asks for another
   * instance's viewers: its `getCdpEndpoint` names one, its `getReplayFrames` gives frames,
   * or its `getToolset` has a toolset for the agent. Errors count as no (logged).
   */
  async #hasBrowser({ key, agentId, threadId }) {
    const thread = threadId ?? undefined
    try {
      if (this.#getCdpEndpoint) {
        const endpoint = await this.#getCdpEndpoint(agentId, thread)
        if (endpoint !== undefined && endpoint !== null && endpoint !== false) return true
      }
      if (this.#getReplayFrames && this.#getReplayFrames(agentId, thread)) return true
      const getToolset = this.#channels.toolsetGetter(key) ?? this.#getToolset
      if (typeof getToolset === 'function') {
        const toolset = await (thread === undefined ? getToolset(agentId) : getToolset(agentId, thread))
        if (toolset) return true
      }
    } catch (err) {
      this.#log.warn(`[browser-stream] relay: looking up the browser of ${key}: ${errorText(err)}`)
    }
    return false
  }

  /**
   * The JS record of a source that runs in Rust (CDP, replay): stopping and input happen in
   * Rust; `closeStream` (drop-in closeBrowserSession) ends the session and leaves the channel
   * idle with its viewers, so a relaunch or the next viewer starts a new one.
   */
  #nativeSourceEntry(key, generation) {
    return {
      generation,
      // Holds nothing in JS (see #pruneGone).
      runsInRust: true,
      stop: async () => {},
      input: async () => {},
      closeStream: async () => this.#endSession(key, generation, { closed: true, keepEntry: true }),
    }
  }

  /** Runs a replay source in Rust; it stops by itself when its generation ends. */
  #startReplay(key, generation, { frames, fps, stampFrames, width, height }) {
    this.#sources.set(key, this.#nativeSourceEntry(key, generation))
    try {
      this.#native.startReplaySource(key, generation, frames, { fps, stampFrames, width, height })
    } catch (err) {
      this.#endSession(key, generation, { failure: `replay source: ${errorText(err)}` })
    }
  }

  /**
   * Tells the viewers of session `generation` that its screencast failed: `screencast_failed`
   * with Rust's fixed text; `detail` goes to the log only. Whether the session ends is the
   * caller's (a toolset whose screencast did not start keeps waiting for its browser).
   */
  #reportFailure(key, generation, detail) {
    this.#native.broadcastError(key, ErrorCode.SCREENCAST_FAILED, detail, generation)
  }

  /**
   * Ends session `generation` of channel `key`: the one place JS ends a source session (Rust
   * ends one with `stop`), whether it failed (could not start or broke), went idle (no toolset
   * yet) or was closed (a Rust source's `closeStream`). Viewers are told first: after a `failure` (the log's detail) they
   * get `screencast_failed` and `browser_closed`, after a close `browser_closed`, after going
   * idle nothing. Then the channel goes idle in Rust with its viewers, so a relaunch or the
   * next viewer starts a new session. No `stop` comes for a session that ended by itself, so
   * its JS side is dropped here, except with `keepEntry` (a closed Rust source): its record
   * stays until the next session replaces it or the channel goes, so that closing the same
   * session again is stale in Rust rather than told to the viewers once more.
   */
  #endSession(key, generation, { failure, closed = failure !== undefined, keepEntry = false } = {}) {
    if (failure !== undefined) this.#reportFailure(key, generation, failure)
    if (closed) this.#native.setStatus(key, Status.BROWSER_CLOSED, generation)
    this.#native.sourceEnded(key, generation)
    if (keepEntry) return
    const source = this.#sources.get(key)
    if (source?.generation === generation) {
      this.#sources.delete(key)
      void source.stop()
    }
    this.#pruneGone()
  }

  async #stopSource({ key, generation }) {
    const source = this.#sources.get(key)
    if (!source || source.generation !== generation) return
    this.#sources.delete(key)
    this.#channels.forget(key)
    try {
      await source.stop()
    } catch (err) {
      this.#log.warn(`[browser-stream] stopping ${key}: ${errorText(err)}`)
    }
  }

  async #relayInput({ key, generation, inputKind, input, text }) {
    const source = this.#sources.get(key)
    if (!source || source.generation !== generation) return
    await source.input(inputKind, inputKind === 'text' ? { text } : input)
  }

  async #viewerReplied({ key, agentId, threadId, viewerId, canControl, to, reply, event }) {
    if (!this.#onViewerReply) return
    try {
      // Rust checked it is JSON (and bounded it) before sending it here.
      const answer = { viewerId, canControl, threadId: threadId ?? undefined, key, to, reply: JSON.parse(reply) }
      if (event !== undefined && event !== null) answer.event = JSON.parse(event)
      await this.#onViewerReply(agentId, answer)
    } catch (err) {
      // A hook that fails is the deployer's to see; the viewer's reply did arrive.
      this.#log.warn(`[browser-stream] onViewerReply: ${errorText(err)}`)
    }
  }

  #controlChanged({ key, agentId, threadId, controller, reason }) {
    if (!this.#onControlChange) return
    try {
      const info = { threadId: threadId ?? undefined, key }
      if (reason !== undefined && reason !== null) info.reason = reason
      const result = this.#onControlChange(agentId, controller ?? null, info)
      if (result && typeof result.then === 'function') {
        result.then(undefined, (err) => this.#log.warn(`[browser-stream] onControlChange: ${errorText(err)}`))
      }
    } catch (err) {
      this.#log.warn(`[browser-stream] onControlChange: ${errorText(err)}`)
    }
  }

  /**
   * Forgets what JS keeps of channels the registry let go without a `stop` (their session
   * ended by itself, then the last viewer left): nothing else would drop it.
   */
  #pruneGone() {
    // Only Rust sources: a JS source of a gone channel still gets its `stop`, which stops it.
    for (const [key, source] of this.#sources) if (source.runsInRust && !this.#native.hasChannel(key)) this.#sources.delete(key)
    this.#channels.pruneGone()
  }

  /**
   * Ends the browser session of one channel (drop-in closeBrowserSession, the close route):
   * its page state is cleared and its viewers are told `browser_closed`; they stay connected
   * for the next session.
   * @param {string} key channel key
   */
  async closeSession(key) {
    this.#native.clearPageState(key)
    const source = this.#sources.get(key)
    if (source) await source.closeStream()
    else this.#native.setStatus(key, Status.BROWSER_CLOSED)
  }

  /**
   * Forgets every session (the registry is closing) and returns what stops them: a function
   * whose promise resolves once each has stopped.
   */
  releaseAll() {
    const sources = [...this.#sources.values()]
    this.#sources.clear()
    return () => Promise.all(sources.map((source) => source.stop()))
  }
}

module.exports = { HostEvents }

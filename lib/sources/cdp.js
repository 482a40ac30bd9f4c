'use strict'
// The JS side of a native CDP source: asks the app for the agent's DevTools endpoint
// (`getCdpEndpoint`), resolves an `http://host:port` endpoint to the browser's WebSocket URL,
// and hands it to Rust (`startCdpSource`). The DevTools timeout's default is Rust's.
// Must not touch frames or input: once started, the session lives in Rust (screencast, acks,
// input relay, crash reporting); a failure is reported through the `fail` it is given.

const { CDP_SOURCE_DEFAULTS } = require('../native-rules')
const { errorText, withTimeout } = require('../util')
const { DEFAULT_TOOLSET_TIMEOUT_MS } = require('./toolset')

/** How long the browser may take to answer (`cdpTimeoutMs`) when unset: the Rust source's. */
const DEFAULT_CDP_TIMEOUT_MS = CDP_SOURCE_DEFAULTS.timeoutMs

/** `screencastOptions` (the toolset's startScreencast options) → CdpSourceOptions. */
function cdpOptions(screencastOptions = {}, targetId, followNewTabs, timeoutMs) {
  const options = {}
  const { format, quality, maxWidth, maxHeight, everyNthFrame } = screencastOptions ?? {}
  if (format !== undefined) options.format = format
  if (quality !== undefined) options.quality = quality
  if (maxWidth !== undefined) options.maxWidth = maxWidth
  if (maxHeight !== undefined) options.maxHeight = maxHeight
  if (everyNthFrame !== undefined) options.everyNthFrame = everyNthFrame
  if (targetId !== undefined) options.targetId = targetId
  if (followNewTabs !== undefined) options.followNewTabs = followNewTabs
  if (timeoutMs !== undefined) options.timeoutMs = timeoutMs
  return options
}

/**
 * The browser's DevTools WebSocket URL for `endpoint`: a `ws(s)://` URL as is, or the
 * `webSocketDebuggerUrl` that `http(s)://host:port/json/version` answers.
 */
async function resolveDevtoolsUrl(endpoint, timeoutMs = DEFAULT_CDP_TIMEOUT_MS) {
  if (typeof endpoint !== 'string' || endpoint === '') throw new TypeError('the CDP endpoint must be a non-empty string')
  if (/^wss?:\/\//i.test(endpoint)) return endpoint
  if (!/^https?:\/\//i.test(endpoint)) throw new TypeError(`the CDP endpoint ${endpoint} is not a ws:// or http:// URL`)
  const base = endpoint.replace(/\/+$/, '').replace(/\/json\/version$/, '')
  const response = await fetch(`${base}/json/version`, { signal: AbortSignal.timeout(timeoutMs) })
  if (!response.ok) throw new Error(`${base}/json/version answered ${response.status}`)
  const version = await response.json()
  const url = version?.webSocketDebuggerUrl
  if (typeof url !== 'string' || !/^wss?:\/\//.test(url)) throw new Error(`${base}/json/version has no webSocketDebuggerUrl`)
  // Chrome names itself by the address it bound; keep the host the app gave (e.g. a proxy).
  const given = new URL(base)
  const debuggerUrl = new URL(url)
  debuggerUrl.host = given.host
  debuggerUrl.protocol = given.protocol === 'https:' ? 'wss:' : 'ws:'
  return debuggerUrl.toString()
}

/**
 * Starts the CDP source of one session. Resolves to true when Rust took it over, false when
 * `getCdpEndpoint` had no browser for this agent (the caller falls back to the toolset).
 * `getCdpEndpoint` gets as long as `getToolset` would (`timeoutMs`, the toolset timeout).
 */
async function startCdpSource({ native, key, generation, agentId, threadId, getCdpEndpoint, screencastOptions, timeoutMs = DEFAULT_TOOLSET_TIMEOUT_MS, cdpTimeoutMs, isCurrent, fail }) {
  let found
  try {
    found = await withTimeout(
      Promise.resolve().then(() => getCdpEndpoint(agentId, threadId)),
      timeoutMs,
      'getCdpEndpoint',
    )
  } catch (err) {
    fail(`getCdpEndpoint failed: ${errorText(err)}`)
    return true
  }
  if (found === undefined || found === null || found === false) return false
  if (!isCurrent()) return true
  const { endpoint, targetId, followNewTabs } = typeof found === 'string' ? { endpoint: found } : found
  let url
  try {
    url = await resolveDevtoolsUrl(endpoint, cdpTimeoutMs)
  } catch (err) {
    fail(`cannot reach the browser at ${endpoint}: ${errorText(err)}`)
    return true
  }
  if (!isCurrent()) return true
  try {
    native.startCdpSource(key, generation, url, cdpOptions(screencastOptions, targetId, followNewTabs, cdpTimeoutMs))
  } catch (err) {
    fail(errorText(err))
  }
  return true
}

module.exports = { startCdpSource, resolveDevtoolsUrl, cdpOptions }

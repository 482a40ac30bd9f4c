'use strict'
// handleInputMessage: the drop-in for `@mastra/server/browser-stream`'s function of the same
// name, for deployers who run their own WebSocket route and registry. Owns the per-thread
// ordering of inputs handed to a toolset. Must not validate messages itself (the native
// parser does, with the stream route's rules) nor touch sockets.

const { parseInputMessage } = require('./native')
const { callGetToolset, injectInput } = require('./sources/toolset')
const { errorText } = require('./util')
const { createLogger } = require('./log')

const log = createLogger()

/** (agentId, threadId) → tail of that thread's input chain */
const chains = new Map()

/** Runs `task` after every task queued before it for the same agent and thread. */
function enqueue(queueKey, task) {
  const tail = (chains.get(queueKey) ?? Promise.resolve()).then(task).catch(() => {})
  chains.set(queueKey, tail)
  // Forget a thread whose inputs are all applied, so the map does not grow with threads.
  tail.then(() => {
    if (chains.get(queueKey) === tail) chains.delete(queueKey)
  })
}

/**
 * Parses one client message of the compat wire and applies a valid mouse or keyboard input to
 * the agent's toolset (`injectMouseEvent` / `injectKeyboardEvent` with the thread, keyboard
 * events with `windowsVirtualKeyCode`), in order per agent and thread. Anything else
 * (invalid JSON, unknown types, `relaunch`, no toolset) is ignored silently, as in Mastra.
 * Resolves once the input is queued, not when it was applied.
 * @param {string} data the message text
 * @param {(agentId: string, threadId?: string) => any} getToolset
 * @param {string} agentId
 * @param {string} [threadId]
 * @returns {Promise<void>}
 */
async function handleInputMessage(data, getToolset, agentId, threadId) {
  if (typeof data !== 'string') return
  const input = parseInputMessage(data)
  if (!input || (input.kind !== 'mouse' && input.kind !== 'keyboard')) return
  // Looked up now, as Mastra does, but applied in arrival order: an async lookup that answers
  // a later input first must not reorder a press and its release.
  let found
  try {
    found = Promise.resolve(callGetToolset(getToolset, agentId, threadId))
  } catch (err) {
    log.warn(`[browser-stream] getToolset failed for an input: ${errorText(err)}`)
    return
  }
  // Handled in the queued task; until then a rejection must not count as unhandled (Node
  // would end the process).
  found.catch(() => {})
  const queueKey = JSON.stringify([agentId, threadId ?? null])
  enqueue(queueKey, async () => {
    let toolset
    try {
      toolset = await found
    } catch (err) {
      log.warn(`[browser-stream] getToolset failed for an input: ${errorText(err)}`)
      return
    }
    if (toolset) await injectInput(toolset, input.kind, input.event, threadId, { log })
  })
}

module.exports = { handleInputMessage }

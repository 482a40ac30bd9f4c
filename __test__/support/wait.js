'use strict'
// Waiting: `waitFor` polls for a condition, which is how tests wait for what they expect;
// `sleep` only lets time pass (pacing a sender, giving a stray message time to arrive before a
// negative check), never stands in for a condition.

/** Resolves with the first truthy value of `predicate` (polled); throws after `timeout` ms. */
async function waitFor(predicate, { timeout = 5000, interval = 10, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout
  for (;;) {
    const value = await predicate()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, interval))
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

module.exports = { waitFor, sleep }

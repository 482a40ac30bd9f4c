'use strict'
// Small helpers with no policy of their own, shared by the glue: how an error reads in a log
// line or a refusal, and a deadline on a promise of the deployer's code. Must not log, call the
// native registry or know about toolsets, routes or sockets.

/** The text of a thrown value: an Error's message, anything else as a string. */
function errorText(err) {
  if (err instanceof Error) return err.message
  return String(err)
}

/** Resolves `promise`, or rejects after `ms` with a message naming `what`. */
function withTimeout(promise, ms, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms)
    timer.unref?.()
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

module.exports = { errorText, withTimeout }

'use strict'
// The close codes of the stream socket (docs/PROTOCOL.md): exported as `CloseCode` and used by
// the glue where JS closes a socket itself. Owns their names and values on the JS side (Rust
// has its own, which these match). Must not close anything.

/** Close codes used on the stream socket (docs/PROTOCOL.md). */
const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  INVALID_PAYLOAD: 1007,
  POLICY: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  TRY_AGAIN_LATER: 1013,
  SLOW_CONSUMER: 4001,
})

module.exports = { CloseCode }

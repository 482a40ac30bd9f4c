'use strict'
// browser-stream-native: drop-in for the TypeScript browser-stream module (setupBrowserStream,
// ViewerRegistry) with the hot path in Rust. See README.md.

const { setupBrowserStream, EXTENDED_PROTOCOL } = require('./lib/browser-stream')
const { ViewerRegistry } = require('./lib/viewer-registry')
const { handleInputMessage } = require('./lib/input-handler')
const { NativeRegistry } = require('./binding')

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

module.exports = { setupBrowserStream, ViewerRegistry, handleInputMessage, NativeRegistry, CloseCode, EXTENDED_PROTOCOL }

'use strict'
// browser-stream-native: drop-in for the TypeScript browser-stream module (setupBrowserStream,
// ViewerRegistry) with the hot path in Rust. See README.md.

const { setupBrowserStream, EXTENDED_PROTOCOL } = require('./lib/browser-stream')
const { ViewerRegistry } = require('./lib/viewer-registry')
const { handleInputMessage } = require('./lib/input-handler')
const { CloseCode } = require('./lib/close-codes')
const { NativeRegistry } = require('./binding')

module.exports = { setupBrowserStream, ViewerRegistry, handleInputMessage, NativeRegistry, CloseCode, EXTENDED_PROTOCOL }

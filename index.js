'use strict'
// browser-stream-native: drop-in for the TypeScript browser-stream module (setupBrowserStream,
// ViewerRegistry) with the hot path in Rust. See README.md.

const { setupBrowserStream } = require('./lib/browser-stream')
const { ViewerRegistry } = require('./lib/viewer-registry')
const { handleInputMessage } = require('./lib/input-handler')
const { CloseCode, EXTENDED_PROTOCOL } = require('./lib/native-rules')
const { NativeRegistry } = require('./lib/native')

module.exports = { setupBrowserStream, ViewerRegistry, handleInputMessage, NativeRegistry, CloseCode, EXTENDED_PROTOCOL }

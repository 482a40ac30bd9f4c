'use strict'
// The native addon, loaded once through napi-rs's generated `binding.js` (prebuilt platform
// package or a binary built beside it). Owns the error when nothing loads: it says which
// platform this is, why no binary fits and how to build one, and keeps binding.js's attempts
// as its cause. Must not pick binaries itself (binding.js does) or build them.

const { missingBinaryMessage } = require('./platform')

let binding
try {
  binding = require('../binding')
} catch (error) {
  throw new Error(missingBinaryMessage(), { cause: error })
}

module.exports = binding

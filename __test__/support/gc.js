'use strict'
// Memory measurements of the load tests and the churn harness.

/**
 * Forces a full garbage collection: `global.gc` when node runs with --expose-gc, else a `gc`
 * function obtained by turning the flag on at run time. Returns false if neither works.
 */
function forceGc() {
  if (typeof global.gc === 'function') {
    global.gc()
    return true
  }
  try {
    require('node:v8').setFlagsFromString('--expose-gc')
    const gc = require('node:vm').runInNewContext('gc')
    if (typeof gc === 'function') {
      global.gc = gc
      gc()
      return true
    }
  } catch {
    // Not available: callers report RSS without a forced collection.
  }
  return false
}

module.exports = { forceGc }

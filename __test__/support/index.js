'use strict'
// The shared test parts in one require: a real Hono server with setupBrowserStream
// (server.js), a fake browser toolset of the Mastra shape that emits real JPEG bytes
// (toolset.js), WebSocket viewers (viewers.js), frame bytes and wire formats (frames.js),
// waiting for conditions (wait.js) and forced GC (gc.js). Also in this folder, required by
// path: chromium.js (launches a local Chromium; the demo uses it too), cdp-toolset.js (a
// toolset on a real page over CDP), png.js (screenshot pixels) and churn.js (connect/disconnect
// churn for load.test.js and scripts/soak-churn.js).

module.exports = {
  ...require('./frames'),
  ...require('./toolset'),
  ...require('./server'),
  ...require('./viewers'),
  ...require('./wait'),
  ...require('./gc'),
}

'use strict'
// One deployer instance for the relay tests, as its own process: a Hono server on
// @hono/node-server with setupBrowserStream and `relay: { nats }`. It has the browser of at
// most one agent (`owns`): a real Chromium (`source: 'chromium'`, through getCdpEndpoint) or
// prerecorded frames (`source: 'replay'`). Test routes: GET /test/stats (registry.stats()),
// POST /test/event/:agentId (registry.publishEvent), POST /test/close/:agentId (its sessions end,
// as the close route ends a toolset's), POST /test/privacy/:agentId `{on, reason}`
// (registry.setPrivacy), POST /test/release-control/:agentId (registry.releaseControl). `watchOnly: true` makes every viewer view-only
// (authorizeControl). `lookupDelayMs` makes its browser lookup (getCdpEndpoint) answer that
// late, as a deployer's slow lookup: its sessions are undecided (local or relayed) meanwhile.
// `video: false` turns its H.264 video off. `page: 'button'` opens GET /test/button, a page that is one button whose
// click sets the URL's hash. Prints `{"port":N}` once listening;
// SIGTERM closes everything and exits 0. Usage: node relay-instance.js '<json options>'.

const { Hono } = require('hono')
const { serve } = require('@hono/node-server')
const { setupBrowserStream } = require('../..')
const { jpegFrame } = require('./frames')
const { launchChromium } = require('./chromium')

/** The replayed images: five distinct real JPEGs, so a relayed frame can be matched to one. */
const REPLAY_IMAGES = [1, 2, 3, 4, 5].map((n) => jpegFrame(n, 0, 0))

async function main() {
  const options = JSON.parse(process.argv[2])
  const { nats, owns = null, source = 'replay', leaseIntervalMs, ownerTimeoutMs, lingerMs = 200, page, watchOnly = false, lookupDelayMs = 0, video = true } = options
  let chromium = null
  const app = new Hono()
  const config = {
    lingerMs,
    video,
    authorizeControl: () => !watchOnly,
    relay: { nats: { servers: nats, leaseIntervalMs, ownerTimeoutMs, name: `test-instance-${process.pid}` } },
    getCdpEndpoint: async (agentId) => {
      if (lookupDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, lookupDelayMs))
      return chromium && agentId === owns ? chromium.endpoint : null
    },
    getReplayFrames: (agentId) => (!chromium && agentId === owns ? { frames: REPLAY_IMAGES, fps: 20 } : null),
    logger: { info: (...a) => console.error(...a), warn: (...a) => console.error(...a), error: (...a) => console.error(...a) },
  }
  const { injectWebSocket, registry } = setupBrowserStream(app, config)
  app.get('/test/stats', (c) => c.json(registry.stats()))
  // What the close route does for a toolset's browser, for the browser-less replay source.
  app.post('/test/close/:agentId', async (c) => {
    await registry.closeAgentSessions(c.req.param('agentId'))
    return c.json({ success: true })
  })
  // A page that is one big button; a click on it changes the URL's hash (reported as `url`).
  app.get('/test/button', (c) =>
    c.html('<body style="margin:0"><button onclick="location.hash=\'clicked\'" style="position:fixed;inset:0;width:100%;height:100%;font:48px sans-serif;background:#2a6">relayed</button></body>'),
  )
  app.post('/test/event/:agentId', async (c) => c.json({ published: registry.publishEvent(c.req.param('agentId'), await c.req.json()) }))
  // The operators' controls: the privacy blackout and the agent taking control back.
  app.post('/test/privacy/:agentId', async (c) => {
    const { on, reason } = await c.req.json()
    registry.setPrivacy(c.req.param('agentId'), undefined, on, { reason })
    return c.json({ private: registry.isPrivate(c.req.param('agentId')) })
  })
  app.post('/test/release-control/:agentId', (c) => c.json({ released: registry.releaseControl(c.req.param('agentId'), undefined, 'agent resumed') }))
  const server = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s))
  })
  injectWebSocket(server)
  const port = server.address().port
  if (owns !== null && source === 'chromium') {
    const url = page === 'button' ? `http://127.0.0.1:${port}/test/button` : (page ?? 'about:blank')
    chromium = await launchChromium({ url })
  }
  process.stdout.write(`${JSON.stringify({ port })}\n`)
  process.on('SIGTERM', async () => {
    await registry.close()
    server.closeAllConnections?.()
    server.close()
    await chromium?.close()
    process.exit(0)
  })
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err)
    process.exit(1)
  })
}

module.exports = { REPLAY_IMAGES }

'use strict'
// The main job: `npm run demo [url]`. Launches a local headless Chromium on an animated page
// (or the URL given), serves a Hono app whose setupBrowserStream reads that browser's
// screencast natively (getCdpEndpoint: frames go from Chromium to Rust to the viewers without
// touching JS), and a viewer page at http://localhost:4111/ that draws the stream on a canvas
// with status, fps, frame size and latency. Ctrl-C shuts everything down.

const fs = require('node:fs')
const path = require('node:path')
const { Hono } = require('hono')
const { serve } = require('@hono/node-server')
const { setupBrowserStream } = require('..')
const { launchChromium, findChromium, INSTALL_HINT } = require('../__test__/support/chromium')

const PORT = Number(process.env.PORT ?? 4111)
const HOST = process.env.HOST ?? '127.0.0.1'
const DEMO = path.join(__dirname, 'demo')
const CLIENT = path.join(__dirname, '..', 'client', 'browser-stream-client.js')

async function main() {
  const executablePath = findChromium()
  if (!executablePath) {
    console.error(INSTALL_HINT)
    process.exit(1)
  }
  let chromium = null
  const app = new Hono()
  app.get('/', (c) => c.html(fs.readFileSync(path.join(DEMO, 'index.html'), 'utf8')))
  app.get('/client.js', (c) => c.body(fs.readFileSync(CLIENT, 'utf8'), 200, { 'content-type': 'text/javascript; charset=utf-8' }))
  app.get('/demo/animated.html', (c) => c.html(fs.readFileSync(path.join(DEMO, 'animated.html'), 'utf8')))
  const { injectWebSocket, registry } = setupBrowserStream(app, {
    getCdpEndpoint: () => chromium?.endpoint,
    screencastOptions: { format: 'jpeg', quality: 70, maxWidth: 1280, maxHeight: 720 },
    lingerMs: 2000,
    // WebRTC for viewers on this machine (the UDP socket listens on loopback). To serve
    // viewers elsewhere, set WEBRTC_HOST to the address they reach and open WEBRTC_PORT/udp.
    webrtc: { host: process.env.WEBRTC_HOST ?? '127.0.0.1', port: Number(process.env.WEBRTC_PORT ?? 0) },
  })
  app.get('/stats', (c) => c.json(registry.stats()))

  const server = serve({ fetch: app.fetch, hostname: HOST, port: PORT })
  injectWebSocket(server)
  await new Promise((resolve, reject) => {
    server.once('listening', resolve)
    server.once('error', reject)
  })
  const address = server.address()
  const base = `http://${HOST === '0.0.0.0' ? 'localhost' : HOST}:${address.port}`
  const pageUrl = process.argv[2] ?? `${base}/demo/animated.html`
  chromium = await launchChromium({ executablePath, url: pageUrl })
  console.log(`Chromium (${executablePath}) is showing ${pageUrl}`)
  console.log(`Live view: ${base}/   (stats: ${base}/stats; Ctrl-C to stop)`)

  let stopping = false
  const shutdown = async (signal) => {
    if (stopping) return
    stopping = true
    console.log(`\n${signal}: stopping`)
    const force = setTimeout(() => process.exit(1), 5000)
    force.unref()
    registry.close()
    server.closeAllConnections?.()
    await new Promise((resolve) => server.close(() => resolve()))
    await chromium.close()
    process.exit(0)
  }
  process.on('SIGINT', () => void shutdown('SIGINT'))
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  chromium.process.once('exit', (code, sig) => {
    if (!stopping) console.error(`Chromium exited (${code ?? sig}); viewers were told browser_crashed. Ctrl-C to stop.`)
  })
}

main().catch((err) => {
  console.error(err.message ?? err)
  process.exit(1)
})

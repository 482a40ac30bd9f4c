#!/usr/bin/env node
'use strict'
// A runnable example without a browser (examples/demo.js streams a real Chromium): a Hono
// server with setupBrowserStream and a stand-in toolset that plays prerecorded JPEG frames
// (examples/frames) at 10 fps, plus a viewer page at / written against the compat wire (what
// Mastra Studio does).
//   node examples/server.js [port]

const fs = require('node:fs')
const path = require('node:path')
const { EventEmitter } = require('node:events')
const { Hono } = require('hono')
const { serve } = require('@hono/node-server')
const { setupBrowserStream } = require('..')

const framesDir = path.join(__dirname, 'frames')
const frames = fs
  .readdirSync(framesDir)
  .filter((f) => f.endsWith('.jpeg'))
  .sort()
  .map((f) => fs.readFileSync(path.join(framesDir, f)).toString('base64'))

/** Plays the prerecorded frames like a browser toolset's screencast stream. */
function recordedToolset() {
  return {
    isBrowserRunning: () => true,
    getCurrentUrl: () => 'about:recorded',
    async startScreencast() {
      const stream = new EventEmitter()
      let i = 0
      const timer = setInterval(() => {
        stream.emit('frame', { data: frames[i++ % frames.length], timestamp: Date.now(), viewport: { width: 320, height: 180 } })
      }, 100)
      stream.stop = async () => {
        clearInterval(timer)
        stream.emit('stop', 'stopped')
      }
      console.log('screencast started (first viewer)')
      return stream
    },
    async injectMouseEvent(e) {
      console.log('mouse', e.type, e.x, e.y)
    },
    async injectKeyboardEvent(e) {
      console.log('key', e.type, e.key ?? e.text)
    },
  }
}

const page = `<!doctype html><meta charset="utf-8"><title>browser-stream-native example</title>
<body style="font:14px sans-serif;background:#111;color:#ddd">
<p>status: <b id="status">connecting</b> · fps: <b id="fps">0</b></p>
<img id="view" style="border:1px solid #444;width:640px">
<script>
const img = document.getElementById('view'), statusEl = document.getElementById('status'), fpsEl = document.getElementById('fps')
let count = 0
setInterval(() => { fpsEl.textContent = count; count = 0 }, 1000)
function connect() {
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/browser/example/stream')
  ws.onmessage = (e) => {
    if (e.data[0] === '{') { const m = JSON.parse(e.data); if (m.status) statusEl.textContent = m.status; return }
    img.src = 'data:image/jpeg;base64,' + e.data; count++
  }
  ws.onclose = () => { statusEl.textContent = 'disconnected'; setTimeout(connect, 1000) }
  img.onclick = (e) => ws.send(JSON.stringify({ type: 'mouse', eventType: 'mousePressed', x: e.offsetX / 2, y: e.offsetY / 2, button: 'left', clickCount: 1 }))
}
connect()
</script>`

const app = new Hono()
app.get('/', (c) => c.html(page))
const { injectWebSocket, registry } = setupBrowserStream(app, { getToolset: () => recordedToolset() })
const port = Number(process.argv[2] ?? process.env.PORT ?? 4111)
const server = serve({ fetch: app.fetch, port }, (info) => {
  console.log(`viewer page: http://localhost:${info.port}/  (stream: ws://localhost:${info.port}/browser/example/stream)`)
})
injectWebSocket(server)
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    await registry.close()
    server.close(() => process.exit(0))
  })
}

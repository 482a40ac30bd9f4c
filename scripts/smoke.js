#!/usr/bin/env node
'use strict'
// The drop-in smoke of an installed or freshly built addon: a real Hono server on
// @hono/node-server with `setupBrowserStream` and a stand-in Mastra toolset, one real `ws`
// viewer that must receive the status, a screencast frame byte for byte, and get a click through
// to the toolset. The release workflow runs it on every platform's binary; package.test.js runs
// it inside fresh installs. Exits 0 on success, 1 with the reason otherwise, within 20 s.
//
//   smoke.js [--package dir] [--from dir]
// --package: the browser-stream-native to load (default: this checkout); --from: where hono,
// @hono/node-server and ws resolve from (default: the package's own resolution).

const { createRequire } = require('node:module')
const path = require('node:path')
const { parseArgs } = require('node:util')
const { FakeToolset } = require('../__test__/support/toolset')

const { values: options } = parseArgs({
  options: { package: { type: 'string', default: path.join(__dirname, '..') }, from: { type: 'string' } },
})
const packageDir = path.resolve(options.package)
const load = createRequire(path.join(path.resolve(options.from ?? packageDir), 'package.json'))

const deadline = setTimeout(() => {
  console.error('smoke: no frame and click round trip within 20 s')
  process.exit(1)
}, 20_000)

async function main() {
  const started = process.hrtime.bigint()
  const { setupBrowserStream } = require(packageDir)
  const loadedMs = Number(process.hrtime.bigint() - started) / 1e6
  const { Hono } = load('hono')
  const { serve } = load('@hono/node-server')
  const WebSocket = load('ws')

  const toolset = new FakeToolset()
  const app = new Hono()
  const stream = await setupBrowserStream(app, { getToolset: () => toolset })
  const server = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s))
  })
  stream.injectWebSocket(server)

  const viewer = new WebSocket(`ws://127.0.0.1:${server.address().port}/browser/smoke-agent/stream`)
  const messages = []
  let wake = () => {}
  viewer.on('message', (data) => {
    messages.push(data.toString())
    wake()
  })
  const until = (check) =>
    new Promise((resolve) => {
      wake = () => check() && resolve()
      wake()
    })
  await new Promise((resolve, reject) => {
    viewer.once('open', resolve)
    viewer.once('error', reject)
  })
  await until(() => messages.some((text) => text.includes('"status"')))

  // The frame source starts once a viewer is attached; frames keep coming until one arrives.
  const sent = new Set()
  const ticker = setInterval(() => sent.add(toolset.emitFrame(sent.size + 1)), 50)
  await until(() => messages.some((text) => sent.has(text)))
  clearInterval(ticker)

  viewer.send(JSON.stringify({ type: 'mouse', eventType: 'mousePressed', x: 10, y: 20, button: 'left', clickCount: 1 }))
  while (toolset.mouse.length === 0) await new Promise((resolve) => setTimeout(resolve, 10))

  viewer.close()
  await new Promise((resolve) => viewer.once('close', resolve))
  await stream.registry.close()
  server.close()
  clearTimeout(deadline)
  console.log(
    `smoke: ok (${process.platform}-${process.arch}, Node ${process.versions.node}, ` +
      `addon loaded in ${loadedMs.toFixed(0)} ms, frame and click round trip)`,
  )
}

main().catch((error) => {
  console.error(`smoke: ${error.stack ?? error}`)
  process.exit(1)
})

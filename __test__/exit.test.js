'use strict'
// registry.close() closes every viewer with 1001 and lets the Node process exit by itself.

const test = require('node:test')
const assert = require('node:assert/strict')
const { fork } = require('node:child_process')
const path = require('node:path')
const { Viewer, waitFor, stalledViewer } = require('./support')

test('close() sends 1001 to every viewer and the process exits promptly', async () => {
  const child = fork(path.join(__dirname, 'fixtures', 'exit-child.js'), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })))
  const messages = []
  child.on('message', (m) => messages.push(m))
  const { port } = await waitFor(() => messages.find((m) => m.port), { what: 'child port' })
  const viewers = Array.from({ length: 5 }, () => new Viewer(`ws://127.0.0.1:${port}/browser/exit-agent/stream`))
  await Promise.all(viewers.map((v) => v.opened))
  await Promise.all(viewers.map((v) => v.untilStreaming()))
  const closedAt = Date.now()
  child.send('close')
  const stats = (await waitFor(() => messages.find((m) => m.stats), { what: 'stats' })).stats
  assert.equal(stats.viewers, 5)
  await waitFor(() => viewers.every((v) => v.closeCode !== null), { what: 'viewers closed' })
  assert.deepEqual(
    viewers.map((v) => v.closeCode),
    [1001, 1001, 1001, 1001, 1001],
  )
  const timeout = setTimeout(() => child.kill('SIGKILL'), 10_000)
  const result = await exited
  clearTimeout(timeout)
  assert.equal(result.signal, null, 'exited by itself, not killed')
  assert.equal(result.code, 0)
  assert.ok(result.at - closedAt < 5000, `exit took ${result.at - closedAt} ms`)
})

test('close() under load: 200 viewers (compat, extended, stalled) get 1001 or are cut, and the process exits promptly', async () => {
  const child = fork(path.join(__dirname, 'fixtures', 'exit-child.js'), {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, EXIT_CHILD_FPS: '30' },
  })
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })))
  const messages = []
  child.on('message', (m) => messages.push(m))
  const { port } = await waitFor(() => messages.find((m) => m.port), { what: 'child port' })
  const url = `ws://127.0.0.1:${port}/browser/exit-agent/stream`
  const compat = Array.from({ length: 100 }, () => new Viewer(url, { keepFrames: false }))
  const extended = Array.from({ length: 90 }, () => new Viewer(url, { extended: true, keepImages: false }))
  const stalled = []
  for (let i = 0; i < 10; i++) stalled.push(await stalledViewer(port, 'exit-agent'))
  await Promise.all([...compat, ...extended].map((v) => v.opened))
  await waitFor(() => compat.every((v) => v.frameCount > 3) && extended.every((v) => v.frames.length > 3), {
    what: 'frames flowing to every viewer',
    timeout: 20_000,
  })
  const closedAt = Date.now()
  child.send('close')
  const stats = (await waitFor(() => messages.find((m) => m.stats), { what: 'stats' })).stats
  assert.equal(stats.viewers, 200)
  await waitFor(() => [...compat, ...extended].every((v) => v.closeCode !== null), { what: 'viewers closed', timeout: 10_000 })
  const codes = (vs) => Object.entries(vs.reduce((m, v) => ({ ...m, [v.closeCode]: (m[v.closeCode] ?? 0) + 1 }), {}))
  assert.ok(compat.every((v) => v.closeCode === 1001), JSON.stringify(codes(compat)))
  assert.ok(extended.every((v) => v.closeCode === 1001), JSON.stringify(codes(extended)))
  const timeout = setTimeout(() => child.kill('SIGKILL'), 15_000)
  const result = await exited
  clearTimeout(timeout)
  // The stalled sockets were cut (they could not take a close frame): they end.
  for (const socket of stalled) socket.resume()
  await waitFor(() => stalled.every((s) => s.destroyed || s.readableEnded), { what: 'stalled sockets ended', timeout: 10_000 })
  for (const socket of stalled) socket.destroy()
  assert.equal(result.signal, null, 'exited by itself, not killed')
  assert.equal(result.code, 0)
  assert.ok(result.at - closedAt < 5000, `exit took ${result.at - closedAt} ms`)
})

'use strict'
// registry.close() closes every viewer with 1001 and lets the Node process exit by itself.

const test = require('node:test')
const assert = require('node:assert/strict')
const { fork } = require('node:child_process')
const path = require('node:path')
const { Viewer, waitFor } = require('./helpers')

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

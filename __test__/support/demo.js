'use strict'
// The main job as a child process: `examples/demo.js` (its own Chromium, the Hono server and
// the viewer page), started on a free port. Resolves once it prints its live-view URL. At the
// end of the test it is stopped with SIGINT — the demo then closes its Chromium — and only
// killed if it does not exit, so no browser outlives the test.

const path = require('node:path')
const { spawn } = require('node:child_process')

const DEMO = path.join(__dirname, '..', '..', 'examples', 'demo.js')

async function startDemo(t, { args = [], env = {} } = {}) {
  const child = spawn(process.execPath, [DEMO, ...args], {
    env: { ...process.env, PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout.on('data', (d) => (output += d))
  child.stderr.on('data', (d) => (output += d))
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  t.after(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGINT')
    const stopped = await Promise.race([exited.then(() => true), new Promise((resolve) => setTimeout(() => resolve(false), 10_000))])
    if (!stopped) child.kill('SIGKILL')
  })
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the demo did not start:\n${output}`)), 30_000)
    const check = () => {
      const match = /Live view: (http:\/\/\S+\/)/.exec(output)
      if (match) {
        clearTimeout(timer)
        resolve(match[1])
      }
    }
    child.stdout.on('data', check)
    exited.then(() => reject(new Error(`the demo exited:\n${output}`)))
  })
  const stats = async () => (await fetch(`${url}stats`)).json()
  return { child, url, stats, exited, output: () => output }
}

module.exports = { startDemo }

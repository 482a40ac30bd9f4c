'use strict'
// A real nats-server (Debian's `nats-server`) on a free loopback port, for the relay tests:
// started, stopped (SIGKILL, as a crash) and started again on the same port.

const { spawn, spawnSync } = require('node:child_process')
const { waitFor } = require('./wait')
const { freePort, accepting } = require('./ports')

const NATS_SERVER = process.env.NATS_SERVER_PATH ?? 'nats-server'

/** Whether nats-server can run here (the relay tests skip with a message otherwise). */
function natsServerAvailable() {
  return spawnSync(NATS_SERVER, ['--version'], { stdio: 'ignore' }).status === 0
}

/** Starts nats-server on `port` (a free one when omitted); resolves once it accepts. */
async function startNats({ port } = {}) {
  port ??= await freePort()
  const child = spawn(NATS_SERVER, ['-a', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-4000)
  })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`nats-server exited: ${stderr}`)
    return accepting(port)
  }, { timeout: 10_000, what: `nats-server on ${port}` })
  return {
    port,
    pid: child.pid,
    url: `nats://127.0.0.1:${port}`,
    /** Kills it (SIGKILL: no goodbye to clients) and waits for the exit. */
    async kill() {
      child.kill('SIGKILL')
      await exited
    },
  }
}

module.exports = { startNats, natsServerAvailable }

'use strict'
// Loopback ports for the servers tests start themselves (nats-server, the npm registry): a free
// one, and whether something accepts connections on one.

const net = require('node:net')

/** A free TCP port on 127.0.0.1 (bound once, then released for the caller to bind). */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address()
      probe.close(() => resolve(port))
    })
  })
}

/** Whether something accepts TCP connections on `port` of 127.0.0.1. */
function accepting(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

module.exports = { freePort, accepting }

// Bench server of bench/relay.js: the "addon, Rust source" contender with the NATS relay on
// (`relay: { nats: { servers: BENCH_NATS } }`). BENCH_RELAY_ROLE=owner has the agent's browser
// (the Rust replay source, frames stamped with their capture time); =subscriber has none, so
// its viewers are relayed from the owner over the bus, one subscription for all of them.

import { setupBrowserStream } from '../../index.js'
import { ADDON_LIMITS, benchApp, benchEnv, listen, VIEWPORT } from './harness'

const env = benchEnv()
const role = process.env.BENCH_RELAY_ROLE
const servers = process.env.BENCH_NATS
if (role !== 'owner' && role !== 'subscriber') throw new Error('BENCH_RELAY_ROLE must be owner or subscriber')
if (!servers) throw new Error('BENCH_NATS is not set')
const app = benchApp()
const { injectWebSocket, registry } = setupBrowserStream(app, {
  ...ADDON_LIMITS,
  relay: { nats: { servers, name: `bench-${role}-${process.pid}` } },
  getReplayFrames: () => (role === 'owner' ? { frames: [env.image], fps: env.fps, stampFrames: true, ...VIEWPORT } : null),
})
// Listening (and so measured) once on the bus: a viewer that came earlier would be told
// relay_unavailable and wait for its retry, which is not what the row measures.
const onBus = setInterval(() => {
  if (!registry.stats().relay?.connected) return
  clearInterval(onBus)
  listen(app, (server) => injectWebSocket(server as never))
}, 20)

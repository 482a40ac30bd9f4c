// Contender "addon": this package's setupBrowserStream on the same Hono app. Viewer sockets
// are handed to Rust by file descriptor. BENCH_SOURCE=js pushes the frames of the same JS
// frame clock through the toolset stream (pushFrame per frame); BENCH_SOURCE=rust replays the
// same image from the addon's Rust replay source, stamped the same way, so frames never touch
// JS (this separates the cost of pushing from the cost of fanning out).

import { setupBrowserStream } from '../../index.js'
import { ADDON_LIMITS, benchApp, benchEnv, benchToolset, listen, VIEWPORT } from './harness'

const env = benchEnv()
const source = process.env.BENCH_SOURCE ?? 'js'
const app = benchApp()
const toolset = benchToolset(env)
const { injectWebSocket } =
  source === 'rust'
    ? setupBrowserStream(app, {
        ...ADDON_LIMITS,
        getReplayFrames: () => ({ frames: [env.image], fps: env.fps, stampFrames: true, ...VIEWPORT }),
      })
    : setupBrowserStream(app, { ...ADDON_LIMITS, getToolset: () => toolset as never })
listen(app, (server) => injectWebSocket(server as never))

// What every Node contender of the benchmark shares: the Hono app with a plain `GET /ping`
// route (its latency is measured during the load), the frame clock that plays the browser,
// and the measurement hooks the orchestrator drives over IPC (event-loop delay). Only the
// viewer registry differs between contenders.

import { readFileSync } from 'node:fs'
import { EventEmitter } from 'node:events'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { Hono } from 'hono'
import { serve } from '@hono/node-server'

export const AGENT_ID = 'bench'
export const VIEWPORT = { width: 1280, height: 720 }
/** The addon's registry limits in every bench server: far above any viewer count measured. */
export const ADDON_LIMITS = { maxViewersPerAgent: 100_000, maxViewersTotal: 100_000, lingerMs: 1000 }

export interface BenchEnv {
  image: Buffer
  fps: number
}

export function benchEnv(): BenchEnv {
  const imagePath = process.env.BENCH_IMAGE
  if (!imagePath) throw new Error('BENCH_IMAGE is not set')
  return { image: readFileSync(imagePath), fps: Number(process.env.BENCH_FPS ?? 30) }
}

/** Microseconds since the epoch, finer than Date.now(). */
function wallClockUs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000)
}

/**
 * Plays the browser: emits the base64 text of frame n, stamped `bsn:seq=n;t=<µs>;` with its
 * scheduled capture time, on a fixed grid of 1/fps; a late timer catches up in a burst, as a
 * browser's queued CDP messages would arrive. The stamp layout is the one of
 * `src/source/replay.rs` (48-byte head, so its base64 joins the rest without padding).
 */
export class FrameClock {
  readonly #afterSoi: string
  readonly #head = Buffer.alloc(48, 0x20)
  readonly #periodMs: number
  #timer: NodeJS.Timeout | undefined
  #slot = 0
  #startMs = 0

  constructor(jpeg: Buffer, fps: number, readonly onFrame: (data: string) => void) {
    if (jpeg[0] !== 0xff || jpeg[1] !== 0xd8) throw new Error('the bench image must be a JPEG')
    this.#afterSoi = jpeg.subarray(2).toString('base64')
    Buffer.from([0xff, 0xd8, 0xff, 0xfe, 0x00, 0x2c]).copy(this.#head)
    this.#periodMs = 1000 / fps
  }

  frameText(seq: number, timeUs: number): string {
    const tag = `bsn:seq=${String(seq).padStart(10, '0')};t=${String(timeUs).padStart(16, '0')};`
    this.#head.write(tag, 6, 'latin1')
    return this.#head.toString('base64') + this.#afterSoi
  }

  start(): void {
    this.#startMs = performance.timeOrigin + performance.now()
    this.#slot = 0
    this.#tick()
  }

  stop(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #tick = (): void => {
    const nowMs = performance.timeOrigin + performance.now()
    while (this.#startMs + this.#slot * this.#periodMs <= nowMs) {
      const dueUs = Math.round((this.#startMs + this.#slot * this.#periodMs) * 1000)
      this.#slot += 1
      this.onFrame(this.frameText(this.#slot, dueUs))
    }
    const nextMs = this.#startMs + this.#slot * this.#periodMs
    this.#timer = setTimeout(this.#tick, Math.max(0, nextMs - nowMs))
  }
}

/** A screencast stream as a Mastra browser toolset returns it. */
export class BenchScreencast extends EventEmitter {
  readonly #clock: FrameClock
  constructor(env: BenchEnv) {
    super()
    this.#clock = new FrameClock(env.image, env.fps, (data) =>
      this.emit('frame', { data, viewport: { ...VIEWPORT, offsetTop: 0, pageScaleFactor: 1 } }),
    )
    this.#clock.start()
  }
  async stop(): Promise<void> {
    this.#clock.stop()
    this.emit('stop', 'stopped')
  }
}

/** The toolset shape both registries call (a running browser on a fixed page). */
export function benchToolset(env: BenchEnv) {
  return {
    isBrowserRunning: () => true,
    onBrowserReady: () => () => {},
    getCurrentUrl: () => 'https://bench.invalid/',
    startScreencast: async () => new BenchScreencast(env),
    startScreencastIfBrowserActive: async () => new BenchScreencast(env),
    injectMouseEvent: async () => {},
    injectKeyboardEvent: async () => {},
  }
}

export function benchApp(): Hono {
  const app = new Hono()
  app.get('/ping', (c) => c.text('ok'))
  return app
}

/**
 * Serves `app` on a free loopback port, then reports `{type:'ready', port}` over IPC and
 * answers the orchestrator's window markers with the event-loop delay of the window.
 */
export function listen(app: Hono, onServer: (server: ReturnType<typeof serve>) => void): void {
  const delay = monitorEventLoopDelay({ resolution: 10 })
  delay.enable()
  const port = Number(process.env.BENCH_PORT ?? 0)
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port }, (info) => {
    if (process.send) process.send({ type: 'ready', port: info.port })
    else console.error(`bench server on http://127.0.0.1:${info.port}`)
  })
  onServer(server)
  process.on('message', (message: { type?: string }) => {
    if (message?.type === 'window_start') {
      delay.reset()
    } else if (message?.type === 'window_end') {
      // No sample at all means the loop never turned during the window: report unknown.
      const sampled = delay.count > 0
      process.send?.({
        type: 'event_loop_delay',
        p50Ms: sampled ? delay.percentile(50) / 1e6 : null,
        p99Ms: sampled ? delay.percentile(99) / 1e6 : null,
        maxMs: sampled ? delay.max / 1e6 : null,
      })
    }
  })
  process.on('disconnect', () => process.exit(0))
}

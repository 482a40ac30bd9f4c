// Contender "seed TS": the TypeScript design planned for the Mastra deployer, written here
// as a faithful baseline (not shipped in the package). @hono/node-ws upgrades the route; a
// ViewerRegistry keeps Map<agentId, Set<WSContext>>, starts the screencast for the first viewer
// and stops it after the last, and sends every frame's base64 string to every viewer with
// ws.send, checking viewport and URL changes on each frame.

import { createNodeWebSocket } from '@hono/node-ws'
import type { WSContext } from 'hono/ws'
import { AGENT_ID, benchApp, benchEnv, benchToolset, listen } from './harness'

type Toolset = ReturnType<typeof benchToolset>
type Screencast = Awaited<ReturnType<Toolset['startScreencastIfBrowserActive']>>

export class SeedViewerRegistry {
  protected viewers = new Map<string, Set<WSContext>>()
  private screencasts = new Map<string, Screencast>()
  private lastUrls = new Map<string, string>()
  private lastViewports = new Map<string, { width: number; height: number }>()

  async addViewer(agentId: string, ws: WSContext, getToolset: (id: string) => Toolset | undefined) {
    let set = this.viewers.get(agentId)
    if (!set) {
      set = new Set()
      this.viewers.set(agentId, set)
    }
    const first = set.size === 0
    set.add(ws)
    if (first) await this.startScreencast(agentId, getToolset)
  }

  async removeViewer(agentId: string, ws: WSContext) {
    const set = this.viewers.get(agentId)
    if (!set) return
    set.delete(ws)
    if (set.size > 0) return
    this.viewers.delete(agentId)
    this.lastUrls.delete(agentId)
    this.lastViewports.delete(agentId)
    const stream = this.screencasts.get(agentId)
    this.screencasts.delete(agentId)
    await stream?.stop()
  }

  broadcastFrame(agentId: string, data: string): void {
    for (const ws of this.viewers.get(agentId) ?? []) {
      try {
        ws.send(data)
      } catch (error) {
        console.warn('[bench seed] send failed', error)
      }
    }
  }

  broadcastJson(agentId: string, message: unknown): void {
    const text = JSON.stringify(message)
    for (const ws of this.viewers.get(agentId) ?? []) {
      try {
        ws.send(text)
      } catch (error) {
        console.warn('[bench seed] send failed', error)
      }
    }
  }

  private urlChanged(agentId: string, url: string | null) {
    if (!url || this.lastUrls.get(agentId) === url) return
    this.lastUrls.set(agentId, url)
    this.broadcastJson(agentId, { url })
  }

  private viewportChanged(agentId: string, viewport: { width: number; height: number }) {
    const last = this.lastViewports.get(agentId)
    if (last && last.width === viewport.width && last.height === viewport.height) return
    this.lastViewports.set(agentId, { width: viewport.width, height: viewport.height })
    this.broadcastJson(agentId, { viewport: { width: viewport.width, height: viewport.height } })
  }

  private async startScreencast(agentId: string, getToolset: (id: string) => Toolset | undefined) {
    const toolset = getToolset(agentId)
    if (!toolset || this.screencasts.has(agentId)) return
    this.broadcastJson(agentId, { status: 'browser_starting' })
    const stream = await toolset.startScreencastIfBrowserActive()
    this.screencasts.set(agentId, stream)
    stream.on('frame', (frame: { data: string; viewport: { width: number; height: number } }) => {
      this.broadcastFrame(agentId, frame.data)
      this.viewportChanged(agentId, frame.viewport)
      this.urlChanged(agentId, toolset.getCurrentUrl())
    })
    this.broadcastJson(agentId, { status: 'streaming' })
    this.urlChanged(agentId, toolset.getCurrentUrl())
  }
}

/** Registers the Mastra-style route with `registry` and serves the app. */
export function serveWith(registry: SeedViewerRegistry): void {
  const env = benchEnv()
  const toolset = benchToolset(env)
  const app = benchApp()
  const { injectWebSocket, upgradeWebSocket } = createNodeWebSocket({ app })
  app.get(
    '/browser/:agentId/stream',
    upgradeWebSocket((c) => {
      const agentId = c.req.param('agentId') ?? AGENT_ID
      return {
        onOpen(_event, ws) {
          ws.send(JSON.stringify({ status: 'connected' }))
          void registry.addViewer(agentId, ws, () => toolset)
        },
        onClose(_event, ws) {
          void registry.removeViewer(agentId, ws)
        },
      }
    }),
  )
  listen(app, (server) => injectWebSocket(server))
}

if (require.main === module) serveWith(new SeedViewerRegistry())

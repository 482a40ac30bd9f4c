// Types of the handwritten glue (lib/); the native types come from binding.d.ts, which napi
// generates from the Rust doc comments.
import type { Hono, Context } from 'hono'
import type { Server as HttpServer } from 'node:http'
import type { Http2SecureServer, Http2Server } from 'node:http2'
import type { NativeRegistry, NativeRegistryOptions, RegistryStats, ChannelStats, ViewerStats, FrameMetadata, HostEvent } from './binding'

export { NativeRegistry }
export type { NativeRegistryOptions, RegistryStats, ChannelStats, ViewerStats, FrameMetadata, HostEvent }

/** A frame as a toolset's screencast stream emits it. */
export interface ScreencastFrame {
  /** Base64 JPEG (or the image bytes). */
  data: string | Buffer
  timestamp?: number
  viewport?: {
    width: number
    height: number
    offsetTop?: number
    scrollOffsetX?: number
    scrollOffsetY?: number
    pageScaleFactor?: number
  }
  sessionId?: number | string
}

/** The stream `startScreencast` returns. */
export interface ScreencastStreamLike {
  on(event: 'frame', handler: (frame: ScreencastFrame) => void): unknown
  on(event: 'url', handler: (url: string) => void): unknown
  on(event: 'stop', handler: (reason?: string) => void): unknown
  on(event: 'error', handler: (error: Error) => void): unknown
  stop(): Promise<void> | void
}

/** The mouse event handed to `injectMouseEvent` (already validated). */
export interface MouseEventInput {
  type: 'mousePressed' | 'mouseReleased' | 'mouseMoved' | 'mouseWheel'
  x: number
  y: number
  button?: 'none' | 'left' | 'middle' | 'right' | 'back' | 'forward'
  clickCount?: number
  deltaX?: number
  deltaY?: number
  modifiers?: number
}

/** The keyboard event handed to `injectKeyboardEvent` (already validated). */
export interface KeyboardEventInput {
  type: 'keyDown' | 'keyUp' | 'char'
  key?: string
  code?: string
  text?: string
  modifiers?: number
}

/** The browser toolset shape (Mastra's `BrowserToolsetLike`). */
export interface BrowserToolsetLike {
  isBrowserRunning(): boolean
  onBrowserReady?(callback: () => void): (() => void) | void
  startScreencast?(options?: unknown): Promise<ScreencastStreamLike | null | undefined> | ScreencastStreamLike | null | undefined
  startScreencastIfBrowserActive?(options?: unknown): Promise<ScreencastStreamLike | null | undefined> | ScreencastStreamLike | null | undefined
  getCurrentUrl?(): string | null | undefined | Promise<string | null | undefined>
  injectMouseEvent?(event: MouseEventInput): Promise<void> | void
  injectKeyboardEvent?(event: KeyboardEventInput): Promise<void> | void
  close?(): Promise<void> | void
}

export type GetToolset = (
  agentId: string,
  threadId?: string,
) => BrowserToolsetLike | undefined | null | Promise<BrowserToolsetLike | undefined | null>

export interface Logger {
  info?(...args: unknown[]): void
  warn?(...args: unknown[]): void
  error?(...args: unknown[]): void
}

/** Prerecorded frames for the Rust replay source. */
export interface ReplayFrames {
  /** JPEG, PNG or WebP images, replayed in order, in a loop. */
  frames: Buffer[]
  /** Frames per second (above 0, at most 240). */
  fps: number
  /** Stamp each JPEG frame with `bsn:seq=…;t=…;` (latency measurement). */
  stampFrames?: boolean
  /** Device size reported as `{viewport}`. */
  width?: number
  height?: number
}

/**
 * Where an agent's browser is: its DevTools endpoint (`ws://host:port/devtools/browser/…`, or
 * `http://host:port`, resolved through `/json/version`), optionally with the page to show.
 */
export type CdpEndpoint =
  | string
  | {
      endpoint: string
      /** Target id of the page to show (default: the most recently opened page). */
      targetId?: string
      /** Switch to pages the agent opens in new tabs (default true). */
      followNewTabs?: boolean
    }

/** An agent event for `publishEvent`: a JSON object with a string `type`. */
export interface AgentEvent {
  /** `text_delta` (merged over `eventBatchMs`), `text_complete`, `tool_start`, `tool_result`, `complete`, `error`, or your own. */
  type: string
  [field: string]: unknown
}

/** Options of a `ViewerRegistry` (all optional). */
export interface ViewerRegistryOptions extends NativeRegistryOptions {
  /**
   * Called whenever control of an agent's page changes hands (extended viewers'
   * `control-request` / `control-release`, the controller leaving): `controller` is the viewer
   * id now in control, or null. Use it to pause and resume the agent.
   */
  onControlChange?: (agentId: string, controller: number | null, info: { threadId?: string; key: string }) => void | Promise<void>
  /** Default toolset lookup for channels started without one. */
  getToolset?: GetToolset
  /** Passed to `startScreencast` / `startScreencastIfBrowserActive`. */
  screencastOptions?: unknown
  /**
   * Native source: the DevTools endpoint of the agent's browser. When it returns one, the
   * screencast is read and fanned out in Rust (frames never touch JS) and input goes to the
   * page from Rust; `screencastOptions` (`format`, `quality`, `maxWidth`, `maxHeight`,
   * `everyNthFrame`) apply. Nothing returned falls back to `getToolset`. May be async.
   */
  getCdpEndpoint?: (agentId: string, threadId?: string) => CdpEndpoint | null | undefined | Promise<CdpEndpoint | null | undefined>
  /**
   * Browser-less source: when it returns frames for an agent, they are replayed in a loop by
   * the Rust runtime instead of asking `getToolset` (demos, benchmarks).
   */
  getReplayFrames?: (agentId: string, threadId?: string) => ReplayFrames | null | undefined
  /**
   * Native CDP source: milliseconds connecting or one DevTools call may take before the
   * browser counts as gone (`browser_crashed`, or `screencast_failed` while starting); the
   * source also checks this often (at most every 5 s) that the browser still answers
   * (default 10000).
   */
  cdpTimeoutMs?: number
  /** Milliseconds `getToolset` and `startScreencast` may take (default 10000). */
  toolsetTimeoutMs?: number
  /** Where diagnostics go (default: warnings and errors to the console). */
  logger?: Logger
}

/** Configuration of `setupBrowserStream`. */
export interface BrowserStreamConfig extends ViewerRegistryOptions {
  /** The toolset of an agent (and thread), or undefined when it has no browser. */
  getToolset?: GetToolset
  /**
   * Decides whether an upgrade request may watch. Gets the Hono context and the token from
   * `Authorization: Bearer …` or `?apiKey=`. Falsy → 401 `{error:'auth_failed'}`; a Response
   * is sent as it is.
   */
  authenticate?: (c: Context, token: string | undefined) => boolean | Response | Promise<boolean | Response>
  /**
   * Decides, on the upgrade request, whether this viewer may ever control the page (send
   * input); others are view-only. Default: every admitted viewer may.
   */
  authorizeControl?: (c: Context) => boolean | Promise<boolean>
  /** Origins allowed to open the stream (403 otherwise); a function decides per origin. */
  allowedOrigins?: string[] | ((origin: string | undefined) => boolean)
  /** Prefix of the session probe and close routes (default `/api`). */
  apiPrefix?: string
  /** Set false to keep every socket in JS (no file-descriptor handover). */
  nativeSockets?: boolean
  /** Use this registry instead of creating one. */
  registry?: ViewerRegistry
}

/** The drop-in `ViewerRegistry`, backed by the native registry. */
export declare class ViewerRegistry {
  constructor(options?: ViewerRegistryOptions)
  addViewer(
    key: string,
    ws: { send(data: string): void; close?(code?: number, reason?: string): void; raw?: unknown },
    getToolset?: GetToolset,
    agentId?: string,
    threadId?: string,
  ): Promise<void>
  removeViewer(key: string, ws: object): Promise<void>
  broadcastFrame(key: string, data: string | Buffer): void
  broadcastStatus(key: string, status: { status: string } | Record<string, unknown>): void
  getViewerCount(key: string): number
  hasActiveScreencast(key: string): boolean
  closeBrowserSession(key: string): Promise<void>
  /** Why a viewer of this agent would be refused now, or null. */
  checkAdmission(agentId: string, threadId?: string): string | null
  /** Disconnects one viewer (ids in `stats()`) with a close code (default 1008) and reason. */
  closeViewer(viewerId: number, code?: number, reason?: string): boolean
  /**
   * Sends an agent event to the extended viewers of `agentId` (and `threadId`), numbered and
   * kept for resume; `text_delta`s are merged over `eventBatchMs`. False when nobody watches.
   * Throws a `TypeError` for an event that is not an object with a string `type`, and an
   * `Error` for one larger than `maxEventBytes`.
   */
  publishEvent(agentId: string, event: AgentEvent, threadId?: string): boolean
  stats(): RegistryStats
  close(): Promise<void>
}

export declare function setupBrowserStream(
  app: Hono<any, any, any>,
  config?: BrowserStreamConfig,
): {
  injectWebSocket: (server: HttpServer | Http2Server | Http2SecureServer | import('node:https').Server) => void
  registry: ViewerRegistry
}

/** The subprotocol of the extended mode: `browser-stream.v1`. */
export declare const EXTENDED_PROTOCOL: 'browser-stream.v1'

/** Close codes used on the stream socket (docs/PROTOCOL.md). */
export declare const CloseCode: Readonly<{
  NORMAL: 1000
  GOING_AWAY: 1001
  PROTOCOL_ERROR: 1002
  INVALID_PAYLOAD: 1007
  POLICY: 1008
  MESSAGE_TOO_BIG: 1009
  INTERNAL_ERROR: 1011
  TRY_AGAIN_LATER: 1013
  SLOW_CONSUMER: 4001
}>

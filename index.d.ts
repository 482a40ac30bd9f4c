// Types of the handwritten glue (lib/); the native types come from binding.d.ts, which napi
// generates from the Rust doc comments.
import type { Hono, Context } from 'hono'
import type { Server as HttpServer } from 'node:http'
import type { Http2SecureServer, Http2Server } from 'node:http2'
import type { NativeRegistry, NativeRegistryOptions, NativeWebRtcOptions, NativeNatsOptions, RegistryStats, ChannelStats, ViewerStats, FrameMetadata, HostEvent } from './binding'

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
  /** Windows virtual key code of `key` (Enter 13, Backspace 8, arrows, F-keys, letters…). */
  windowsVirtualKeyCode?: number
}

/**
 * The browser toolset shape: Mastra's `MastraBrowser` (`@mastra/core/browser`). Every call
 * that takes a thread gets the viewer's `threadId` (undefined when not thread-scoped).
 */
export interface BrowserToolsetLike {
  isBrowserRunning(threadId?: string): boolean
  /** Probe route: whether this thread has a browser session. */
  hasThreadSession?(threadId: string): boolean
  /** Close route: `'thread'` closes only the thread's session. */
  getScope?(): 'thread' | 'shared' | string
  closeThreadSession?(threadId: string): Promise<void> | void
  onBrowserReady?(callback: () => void, threadId?: string): (() => void) | void
  onBrowserClosed?(callback: () => void, threadId?: string): (() => void) | void
  startScreencast?(options?: unknown): Promise<ScreencastStreamLike | null | undefined> | ScreencastStreamLike | null | undefined
  /** Called with `{ ...screencastOptions, threadId }` for thread-scoped viewers. */
  startScreencastIfBrowserActive?(options?: unknown): Promise<ScreencastStreamLike | null | undefined> | ScreencastStreamLike | null | undefined
  getCurrentUrl?(threadId?: string): string | null | undefined | Promise<string | null | undefined>
  injectMouseEvent?(event: MouseEventInput, threadId?: string): Promise<void> | void
  injectKeyboardEvent?(event: KeyboardEventInput, threadId?: string): Promise<void> | void
  /** Called when an input fails because the browser is gone (Mastra's input handler does). */
  handleBrowserDisconnected?(): void
  close?(): Promise<void> | void
}

/** `getToolset` is called `(agentId)` as Mastra calls it, and `(agentId, threadId)` for thread-scoped viewers. */
export type GetToolset = (
  agentId: string,
  threadId?: string,
) => BrowserToolsetLike | undefined | null | Promise<BrowserToolsetLike | undefined | null>

/**
 * The deployer's logger. Lines from Rust come as `(line, fields?)`: `fields` holds the
 * structured facts of the line (`agent`, `thread`, `viewer`, `reason`, `suppressed`) as strings.
 */
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

/** A STUN or TURN server handed to viewers for WebRTC, as in `RTCIceServer`. */
export interface WebRtcIceServer {
  urls: string | string[]
  username?: string
  /** Every admitted viewer receives it: prefer short-lived credentials. */
  credential?: string
}

/** WebRTC delivery (README, "WebRTC"); defaults and ranges are Rust's (`webrtc::config`). */
export interface WebRtcOptions extends Omit<NativeWebRtcOptions, 'iceServers'> {
  iceServers?: WebRtcIceServer[]
}

/** The NATS connection of the relay (README, "Several instances"); checks are Rust's (`relay::config`). */
export interface NatsOptions extends Omit<NativeNatsOptions, 'servers'> {
  /** `nats://host:port` (or `tls://`) URL, or up to 16 of them. */
  servers: string | string[]
}

/** Options of a `ViewerRegistry` (all optional). */
export interface ViewerRegistryOptions extends Omit<NativeRegistryOptions, 'webrtc' | 'relay'> {
  /** WebRTC from the same encoder: `true` for every default (loopback only), or settings. Off by default. */
  webrtc?: boolean | WebRtcOptions
  /** Scale-out over NATS: viewers on any instance watch the instance that has the browser. Off by default. */
  relay?: { nats: NatsOptions }
  /**
   * Called whenever control of an agent's page changes hands (extended viewers'
   * `control-request` / `control-release`, the controller leaving): `controller` is the viewer
   * id now in control, or null. Use it to pause and resume the agent. `reason` says why the
   * server or the deployer ended a control: `idle` (`controlIdleMs`), `controller_left` (its
   * `controlGraceMs` ran out), or the `releaseControl` reason.
   */
  onControlChange?: (agentId: string, controller: number | null, info: { threadId?: string; key: string; reason?: string }) => void | Promise<void>
  /**
   * A person watching answered an agent event (`{"type":"reply","to":seq,"reply":…}`; README,
   * "Human in the loop"): `to` is the event's `seq`, `reply` the parsed answer (at most 16 KiB
   * of JSON). Only viewers allowed to control reply, unless `viewOnlyReplies`. Without this
   * hook viewers are answered `reply_unavailable`.
   */
  onViewerReply?: (agentId: string, answer: ViewerReplyInfo) => void | Promise<void>
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
  /**
   * Key of the scoped viewer links (`createViewerToken`): a string of at least 32 characters or
   * at least 32 bytes. Instances behind a load balancer must share it. Default: a random key per
   * registry, so links work only on this registry in this process.
   */
  viewerTokenSecret?: string | Uint8Array
}

/** A viewer's answer to an agent event, as `onViewerReply` gets it. */
export interface ViewerReplyInfo {
  /** The viewer that answered (ids are in `stats()`). */
  viewerId: number
  /** Whether that viewer may control the page. */
  canControl: boolean
  threadId?: string
  key: string
  /** The `seq` of the event answered. */
  to: number
  /** The answer, any JSON value. */
  reply: unknown
  /** The event answered, while the channel's resume ring still holds it. */
  event?: AgentEvent
}

/** What a scoped viewer link admits (`registry.createViewerToken`; README, "Scoped viewer links"). */
export interface ViewerTokenOptions {
  /** The agent whose stream the link opens. */
  agentId: string
  /** The thread (`?threadId=`) the link opens; without it, the agent's channel without a thread. */
  threadId?: string | null
  /** Whether the viewer may control the page (default false: view-only). `authorizeControl` is not asked. */
  canControl?: boolean
  /** Milliseconds the link admits viewers, 1000 to 86400000 (default 300000, 5 minutes). */
  ttlMs?: number
  /** Admit one viewer only (default false); a second upgrade gets 401 `token_reused`. */
  once?: boolean
}

/** What `setupBrowserStream` needs of a Mastra instance: its server config (`server.auth`). */
export interface MastraLike {
  getServer(): { auth?: unknown } | undefined
}

/**
 * Origins allowed to open the stream, in the shapes of Hono's `cors.origin` (as Mastra's
 * `allowedOrigins`): `'*'`, one origin, a list (may hold `'*'`), or a function answering the
 * origin to allow (or a boolean), sync or async. Requests without `Origin` are not checked.
 */
export type BrowserStreamOrigin =
  | string
  | string[]
  | ((origin: string, c: Context) => string | boolean | null | undefined | Promise<string | boolean | null | undefined>)

/** Configuration of `setupBrowserStream`: Mastra's `HonoBrowserStreamConfig`, plus ours. */
export interface BrowserStreamConfig extends ViewerRegistryOptions {
  /**
   * The Mastra instance: every route (stream, probe, close) is gated by its `server.auth`
   * provider exactly as `@mastra/hono` gates raw routes (`createAuthMiddleware`; session
   * cookie on the upgrade, `?apiKey=`, `Authorization`). Needs the optional peer
   * `@mastra/hono` when `server.auth` is set (setup throws without it).
   */
  mastra?: MastraLike
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
  /** Origins allowed to use the routes (403 otherwise); see `BrowserStreamOrigin`. */
  allowedOrigins?: BrowserStreamOrigin
  /** Prefix of the session probe and close routes (default `/api`). */
  apiPrefix?: string
  /** Serve `registry.metrics()` at `GET {apiPrefix}/browser/metrics`, behind the same gate as the probe and close routes (default false). */
  metricsRoute?: boolean
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
  /** `closeBrowserSession` for an agent (or one of its threads) named by ids of any characters. */
  closeBrowserSessionOf(agentId: string, threadId?: string): Promise<void>
  /** Ends the sessions of the agent and of every one of its threads. */
  closeAgentSessions(agentId: string): Promise<void>
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
  /**
   * Sends one event to the extended viewers of every channel of this registry (e.g.
   * `{ type: 'config_changed' }`), numbered and kept for resume by each. Returns how many
   * channels it went to. Throws as `publishEvent`.
   */
  broadcastEvent(event: AgentEvent): number
  /**
   * A signed, short-lived token for `?token=` on the stream route, admitting exactly this
   * channel (view-only unless `canControl`) until it expires, once if `once`, without
   * `authenticate` or Mastra's auth. Throws a `TypeError` for bad options or ids.
   */
  createViewerToken(options: ViewerTokenOptions): string
  /**
   * Takes control back from the viewer holding it (one in its `controlGraceMs` too): every
   * extended viewer gets `{"type":"control","controller":null,"you":false,"reason":reason}`,
   * `onControlChange` gets `reason`. False when nobody held control. Throws for a reason over
   * 200 bytes or with control characters (default `released`).
   */
  releaseControl(agentId: string, threadId?: string | null, reason?: string): boolean
  /**
   * The privacy blackout (README, "Privacy blackout"): while on, no frame or video chunk of
   * the channel leaves the server, viewers get `{"status":"private","reason":…}` and input and
   * snapshots are refused (`private`). Without `threadId`, the agent and every thread of it.
   * Holds for channels nobody watches yet.
   */
  setPrivacy(agentId: string, threadId: string | null | undefined, on: boolean, options?: { reason?: string }): void
  /**
   * The registry's counters and gauges in the Prometheus text format 0.0.4 (README,
   * "Metrics"): serve it with the content type `text/plain; version=0.0.4`, or turn on the
   * `metricsRoute`.
   */
  metrics(): string
  /** Whether the channel of `agentId` (and `threadId`) is private now. */
  isPrivate(agentId: string, threadId?: string | null): boolean
  stats(): RegistryStats
  close(): Promise<void>
}

/** What `setupBrowserStream` returns. */
export interface BrowserStreamSetup {
  injectWebSocket: (server: HttpServer | Http2Server | Http2SecureServer | import('node:https').Server) => void
  registry: ViewerRegistry
}

/**
 * Registers the stream, probe and close routes on `app`. Returns the setup at once, and is
 * also a promise of it (Mastra's `await setupBrowserStream(…)` works unchanged).
 */
export declare function setupBrowserStream(
  app: Hono<any, any, any>,
  config?: BrowserStreamConfig,
): BrowserStreamSetup & PromiseLike<BrowserStreamSetup>

/** Mastra's name for the config of `@mastra/hono`'s `setupBrowserStream`. */
export type HonoBrowserStreamConfig = BrowserStreamConfig
/** Mastra's name for the result. */
export type BrowserStreamResult = BrowserStreamSetup

/** What adapters use of a registry (Mastra's `ViewerRegistryLike`). */
export interface ViewerRegistryLike {
  addViewer(viewerKey: string, ws: BrowserStreamWebSocket, getToolset: GetToolset, agentId?: string, threadId?: string): Promise<void>
  removeViewer(viewerKey: string, ws: BrowserStreamWebSocket): Promise<void>
  closeBrowserSession(viewerKey: string): Promise<void>
}

/** A socket an adapter hands to `addViewer` (Mastra's `BrowserStreamWebSocket`). */
export interface BrowserStreamWebSocket {
  send(data: string): void
}

/** `{status}` sent to viewers. */
export interface StatusMessage {
  status: 'connected' | 'browser_starting' | 'streaming' | 'browser_closed'
}

/** `{error, message}` sent to viewers (the message is a fixed text per code). */
export interface ErrorMessage {
  error: 'browser_crashed' | 'screencast_failed' | 'auth_failed' | string
  message: string
}

/** `{viewport}` sent to viewers after a frame whose device size changed. */
export interface ViewportMessage {
  viewport: { width: number; height: number }
}

/** Mouse input from a compat viewer (viewport pixels). */
export interface MouseInputMessage {
  type: 'mouse'
  eventType: 'mousePressed' | 'mouseReleased' | 'mouseMoved' | 'mouseWheel'
  x: number
  y: number
  button?: 'left' | 'right' | 'middle' | 'none' | 'back' | 'forward'
  clickCount?: number
  deltaX?: number
  deltaY?: number
  modifiers?: number
}

/** Keyboard input from a compat viewer. */
export interface KeyboardInputMessage {
  type: 'keyboard'
  eventType: 'keyDown' | 'keyUp' | 'char'
  key?: string
  code?: string
  text?: string
  modifiers?: number
}

export type ClientInputMessage = MouseInputMessage | KeyboardInputMessage

/**
 * Mastra's `handleInputMessage`: parses a compat client message and applies a valid mouse or
 * keyboard input to `getToolset(agentId)`'s toolset with `threadId`, in order per agent and
 * thread; anything else is ignored. Resolves once the input is queued.
 */
export declare function handleInputMessage(data: string, getToolset: GetToolset, agentId: string, threadId?: string): Promise<void>

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

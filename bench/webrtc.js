'use strict'
// The WebRTC benchmark (`node bench/webrtc.js [--quick]`; `npm run bench` and
// `npm run bench -- --video-only` run it after bench/video.js): what WebRTC viewers cost the
// server. One demo-like server (bench/video.js --serve: the routes and setupBrowserStream
// options of examples/demo.js, WebRTC included — UDP on loopback, a port the system picks —
// its own headless Chromium on the demo's animated page, 1280×720, held to 30 frames a second
// unless --scene animated: at 60 Hz that Chromium alone takes 1.3 of this machine's 2 CPUs)
// and one plain extended JPEG viewer (a `ws` client in this process)
// that keeps the channel and its source running. Then, from ONE page of a second headless
// Chromium (playwright-core), N WebRTC peers that speak the wire themselves: per peer a
// WebSocket with the subprotocol browser-stream.v1 and an RTCPeerConnection with one recvonly
// video transceiver (H.264 preferred), `webrtc-offer` sent, `webrtc-answer` applied, ICE
// candidates trickled as the client does. No element renders them (--render gives each track
// a muted <video>): Chromium decodes a received track without one, and the page's own CPU is
// measured and reported. Before its offer each peer's socket asks for ack pacing and never
// acks, so it gets one JPEG frame instead of every frame until its peer connects: N sockets
// of JPEG into one page would make the page, not the server, the bottleneck of a join
// (--jpeg-before-connect leaves them unpaced, as the client does). Measured:
//   per peer   the server process's CPU (user+sys of all its threads, /proc/<pid>/stat, as
//              bench/run.js) over a fixed window with 0 peers (only the JPEG viewer), then with
//              N = 1, 10, 50 peers (quick: 1, 10), peers added between windows; a window starts
//              once the server's stats show every peer `connected` and each one's chunksSent
//              rising, and a warm-up. Reported: CPU % of one core, the increment over 0 peers
//              per peer and per peer beyond the first (the first starts the H.264 encoder,
//              shared by all), RTP bytes and packets per peer per second, chunks sent and
//              skipped, RTT, loss, NACKs, PLIs, FIRs, keyframes forced (all from the server's
//              stats), frames each peer decoded (the page's getStats), the viewer Chromium's
//              and the source Chromium's CPU, machine busy and other processes' CPU
//   joining    full mode (--join N, default 100; 0 skips it): a fresh server with the JPEG
//              viewer, then N peers opened as fast as the page can: the time until the
//              server's stats show all of them connected (polled every 100 ms), as seen by
//              the page (connectionState) too, the server's CPU meanwhile, and its memory:
//              VmRSS before, sampled every 50 ms (peak) and after; VmHWM. Peers the server
//              gives up on (its connectTimeoutMs, 10 s after an offer) are counted, not retried
// Quick: 0, 1 and 10 peers, 3 s windows, no join (about 30 s); full: about 2 minutes.
// The registry's default maxViewersPerAgent (100) is raised to the peers + the JPEG viewer when
// they need more. No timing assertion: it fails only when a run cannot be carried out (exit
// code 1; 2: skipped, no Chromium). Results: a Markdown report on stdout and
// bench/results/<date>-webrtc-<mode>.{json,md}.
//
// Options: --quick | --peers 1,10,50 | --join N | --scene animated-30fps|animated |
//          --window-ms N | --warmup-ms N | --render | --jpeg-before-connect

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const proc = require('./proc')
const video = require('./video')

const { sleep, waitFor, percentile, fmt } = video
const ROOT = path.resolve(__dirname, '..')
const BENCH = __dirname
const SCENES = ['animated-30fps', 'animated']
/** Viewers a channel admits by default (the registry's maxViewersPerAgent). */
const DEFAULT_MAX_VIEWERS = 100
/** Peers a registry serves by default (webrtc.maxPeers). */
const DEFAULT_MAX_PEERS = 200
/** How long peers may take to connect (the server gives up on one after 10 s). */
const CONNECT_WAIT_MS = 30_000

const log = (line) => process.stderr.write(`bench webrtc: ${line}\n`)

// ---- options ------------------------------------------------------------------------------

function parseOptions(argv) {
  const flags = proc.parseFlags(argv)
  const quick = flags.quick === true
  const options = {
    mode: quick ? 'quick' : 'full',
    peers: flags.peers ? String(flags.peers).split(',').map(Number) : quick ? [1, 10] : [1, 10, 50],
    join: Number(flags.join ?? (quick ? 0 : 100)),
    scene: String(flags.scene ?? 'animated-30fps'),
    warmupMs: Number(flags['warmup-ms'] ?? (quick ? 1500 : 3000)),
    windowMs: Number(flags['window-ms'] ?? (quick ? 3000 : 8000)),
    render: flags.render === true,
    ackPacing: flags['jpeg-before-connect'] !== true,
    // Kills everything past this: the bench must stop by itself.
    deadlineMs: quick ? 120_000 : 420_000,
  }
  if (!SCENES.includes(options.scene)) throw new Error(`unknown scene ${options.scene} (${SCENES.join(', ')})`)
  for (const n of [...options.peers, options.warmupMs, options.windowMs]) {
    if (!Number.isInteger(n) || n <= 0) throw new Error('--peers, --warmup-ms and --window-ms must be positive whole numbers')
  }
  if (!Number.isInteger(options.join) || options.join < 0) throw new Error('--join must be a whole number (0: no join run)')
  options.peers = [...new Set(options.peers)].sort((a, b) => a - b)
  return options
}

/** Registry options the run needs beyond the demo's: room for its peers and the JPEG viewer. */
function registryFor(options) {
  const viewers = Math.max(...options.peers, options.join) + 1
  const registry = {}
  if (viewers > DEFAULT_MAX_VIEWERS) registry.maxViewersPerAgent = viewers
  if (viewers > DEFAULT_MAX_PEERS) registry.webrtc = { host: '127.0.0.1', port: 0, maxPeers: viewers }
  return Object.keys(registry).length ? registry : null
}

// ---- the peers' page ----------------------------------------------------------------------

/**
 * Runs in the peers' page: `window.__peers` opens WebRTC peers on the extended wire, as
 * client/browser-stream-client.js does (a socket with browser-stream.v1; at `session-meta`
 * an RTCPeerConnection with a recvonly video transceiver, H.264 and its repair codecs first;
 * the offer sent as `webrtc-offer`, candidates as `webrtc-candidate`, the `webrtc-answer`
 * applied), and reports on them.
 */
function peerHarness() {
  const codecs = RTCRtpReceiver.getCapabilities?.('video')?.codecs ?? []
  const h264 = codecs.filter((c) => c.mimeType.toLowerCase() === 'video/h264')
  const repair = codecs.filter((c) => /\/(rtx|red|ulpfec|flexfec-03)$/i.test(c.mimeType))
  const preferred = h264.length ? [...h264, ...repair] : null
  const P = (window.__peers = { list: [] })

  P.open = (url, count, { render, ackPacing }) => {
    for (let k = 0; k < count; k++) {
      const peer = { index: P.list.length, startedAt: Date.now(), offeredAt: null, answeredAt: null, connectedAt: null, state: 'new', serverState: null, error: null, closed: null, socketBinary: 0, socketBinaryBytes: 0, codec: null }
      P.list.push(peer)
      const ws = new WebSocket(url, ['browser-stream.v1'])
      ws.binaryType = 'arraybuffer'
      Object.defineProperty(peer, 'ws', { value: ws, enumerable: false })
      const send = (message) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(message))
      ws.onmessage = async (event) => {
        if (typeof event.data !== 'string') {
          peer.socketBinary += 1
          peer.socketBinaryBytes += event.data.byteLength
          return
        }
        let message
        try {
          message = JSON.parse(event.data)
        } catch {
          return
        }
        if (message.type === 'session-meta') {
          if (peer.pc) return
          if (!message.webrtc) {
            peer.error = 'the server does not offer WebRTC (no webrtc in session-meta)'
            return
          }
          // Ack pacing, never acked: one JPEG frame on this socket until the peer shows pictures
          // (then the server sends none), instead of every frame into this one page N times over.
          if (ackPacing) send({ type: 'config', ack: true })
          const pc = new RTCPeerConnection({ iceServers: message.webrtc.iceServers ?? [] })
          Object.defineProperty(peer, 'pc', { value: pc, enumerable: false })
          const transceiver = pc.addTransceiver('video', { direction: 'recvonly' })
          if (preferred) {
            try {
              transceiver.setCodecPreferences(preferred)
            } catch {}
          }
          pc.onicecandidate = (e) => send({ type: 'webrtc-candidate', candidate: e.candidate ? e.candidate.candidate : null })
          pc.onconnectionstatechange = () => {
            peer.state = pc.connectionState
            if (pc.connectionState === 'connected' && peer.connectedAt === null) peer.connectedAt = Date.now()
          }
          pc.ontrack = (e) => {
            try {
              e.receiver.jitterBufferTarget = 0
            } catch {}
            if (!render) return
            const element = document.createElement('video')
            element.muted = true
            element.playsInline = true
            element.width = 64
            element.height = 36
            element.srcObject = e.streams[0] ?? new MediaStream([e.track])
            document.body.append(element)
            element.play().catch(() => {})
            Object.defineProperty(peer, 'element', { value: element, enumerable: false, configurable: true })
          }
          try {
            await pc.setLocalDescription(await pc.createOffer())
            send({ type: 'webrtc-offer', sdp: pc.localDescription.sdp })
            peer.offeredAt = Date.now()
          } catch (err) {
            peer.error = `the offer failed: ${err?.message ?? err}`
          }
        } else if (message.type === 'webrtc-answer') {
          peer.answeredAt = Date.now()
          peer.pc?.setRemoteDescription({ type: 'answer', sdp: message.sdp }).catch((err) => (peer.error = `the answer was refused: ${err?.message ?? err}`))
        } else if (message.type === 'webrtc-state') {
          peer.serverState = message.state
          if (message.state === 'closed') peer.error = `the server closed it (${message.reason})`
        } else if (typeof message.error === 'string') {
          peer.error = `server: ${message.error}${message.message ? ` (${message.message})` : ''}`
        }
      }
      ws.onclose = (e) => (peer.closed = `${e.code}${e.reason ? ` ${e.reason}` : ''}`)
      ws.onerror = () => (peer.error = peer.error ?? 'socket error')
    }
  }

  /** Each peer's state; with `rtp`, its inbound-rtp counters (getStats) too. */
  P.report = async (rtp) =>
    Promise.all(
      P.list.map(async (peer) => {
        const out = { ...peer }
        if (rtp && peer.pc) {
          try {
            const stats = await peer.pc.getStats()
            for (const entry of stats.values()) {
              if (entry.type !== 'inbound-rtp' || entry.kind !== 'video') continue
              out.rtp = { framesDecoded: entry.framesDecoded ?? 0, framesReceived: entry.framesReceived ?? 0, framesDropped: entry.framesDropped ?? 0, bytesReceived: entry.bytesReceived ?? 0, packetsLost: entry.packetsLost ?? 0, nackCount: entry.nackCount ?? 0, pliCount: entry.pliCount ?? 0, keyFramesDecoded: entry.keyFramesDecoded ?? 0 }
              out.codec = (entry.codecId && stats.get(entry.codecId)?.mimeType) || null
            }
          } catch {}
        }
        return out
      }),
    )

  /** Every peer ends as the client ends one (`webrtc-close`, then the socket). */
  P.closeAll = () => {
    for (const peer of P.list) {
      try {
        if (peer.ws.readyState === WebSocket.OPEN) peer.ws.send(JSON.stringify({ type: 'webrtc-close' }))
        peer.pc?.close()
        peer.element?.remove()
        peer.ws.close(1000, 'bye')
      } catch {}
    }
    P.list = []
  }
}

async function openPeersPage(browser, demo) {
  const context = await browser.newContext()
  const page = await context.newPage()
  // Any page of the server's origin will do (the peers need no document): its 404 page.
  await page.goto(`${demo.base}/webrtc-peers`)
  await page.evaluate(peerHarness)
  return { context, page }
}

// ---- the server's view --------------------------------------------------------------------

/** The channel's viewers that have a WebRTC peer, by viewer id. */
function serverPeers(channel) {
  return new Map((channel?.viewers ?? []).filter((v) => v.webrtc).map((v) => [v.id, v]))
}

function connectedCount(channel, state = 'connected') {
  let n = 0
  for (const v of serverPeers(channel).values()) if (v.webrtc.state === state) n += 1
  return n
}

/** The peers' side in one line, for a failure: states, errors, socket closes. */
function pageSummary(report) {
  const count = (key) => {
    const tally = {}
    for (const p of report) tally[p[key] ?? 'none'] = (tally[p[key] ?? 'none'] ?? 0) + 1
    return Object.entries(tally).map(([k, v]) => `${k} ${v}`).join(', ')
  }
  const errors = [...new Set(report.map((p) => p.error).filter(Boolean))].slice(0, 3)
  const closed = [...new Set(report.map((p) => p.closed).filter(Boolean))].slice(0, 3)
  const has = (key) => report.filter((p) => p[key] != null).length
  return `page: ${report.length} peers, ${has('offeredAt')} offered, ${has('answeredAt')} answered; connection states ${count('state')}; server states ${count('serverState')}${errors.length ? `; errors: ${errors.join('; ')}` : ''}${closed.length ? `; sockets closed: ${closed.join('; ')}` : ''}`
}

/** Waits until the server shows `n` peers connected and each one's chunksSent rising. */
async function waitDelivering(demo, page, n) {
  try {
    await waitFor(async () => connectedCount(video.channelStats(await demo.stats())) >= n, CONNECT_WAIT_MS, `${n} peers connected`, 100)
    let before = serverPeers(video.channelStats(await demo.stats()))
    await waitFor(
      async () => {
        await sleep(500)
        const now = serverPeers(video.channelStats(await demo.stats()))
        const connected = [...now.values()].filter((v) => v.webrtc.state === 'connected')
        const rising = connected.filter((v) => before.has(v.id) && v.webrtc.chunksSent > before.get(v.id).webrtc.chunksSent)
        before = now
        return rising.length >= n
      },
      10_000,
      `chunks to every one of ${n} peers`,
      0,
    )
  } catch (err) {
    const stats = await demo.stats().catch(() => null)
    const channel = stats ? video.channelStats(stats) : null
    const report = await page.evaluate(() => window.__peers.report(false)).catch(() => [])
    throw new Error(`${err.message}: the server shows ${connectedCount(channel)} connected of ${serverPeers(channel).size} peers; ${pageSummary(report)}`)
  }
}

/** The viewer Chromium's processes: this process's children that are not the server's tree. */
function viewerBrowserCpuSeconds(demo) {
  const table = proc.processTable()
  const roots = proc.childPids(process.pid).filter((pid) => pid !== demo.pid)
  let total = 0
  for (const pid of proc.descendants(roots, table)) total += table.get(pid)?.cpu ?? 0
  return total
}

// ---- one window ---------------------------------------------------------------------------

async function measure(demo, page, peers, options) {
  const rtp = peers > 0
  const pageBefore = rtp ? await page.evaluate(() => window.__peers.report(true)) : []
  const before = video.channelStats(await demo.stats())
  const cpu0 = proc.processCpuSeconds(demo.pid)
  const encoder0 = proc.threadSchedSeconds(demo.pid, 'bsn-video')
  const machine0 = proc.machineTicks()
  const mine0 = proc.treeCpuSeconds(process.pid)
  const source0 = proc.treeCpuSeconds(demo.chromiumPid)
  const viewer0 = viewerBrowserCpuSeconds(demo)
  const t0 = Date.now()
  await sleep(options.windowMs)
  const t1 = Date.now()
  const cpu1 = proc.processCpuSeconds(demo.pid)
  const encoder1 = proc.threadSchedSeconds(demo.pid, 'bsn-video')
  const machine1 = proc.machineTicks()
  const mine1 = proc.treeCpuSeconds(process.pid)
  const source1 = proc.treeCpuSeconds(demo.chromiumPid)
  const viewer1 = viewerBrowserCpuSeconds(demo)
  const after = video.channelStats(await demo.stats())
  const pageAfter = rtp ? await page.evaluate(() => window.__peers.report(true)) : []
  const secs = (t1 - t0) / 1000

  const beforePeers = serverPeers(before)
  const rows = [...serverPeers(after).values()].map((v) => {
    const b = beforePeers.get(v.id)
    const d = (field) => (b ? v.webrtc[field] - b.webrtc[field] : null)
    return {
      id: v.id,
      state: v.webrtc.state,
      rttMs: v.webrtc.rttMs ?? null,
      loss: v.webrtc.loss ?? null,
      bytesPerSecond: b ? d('bytesSent') / secs : null,
      packetsPerSecond: b ? d('packetsSent') / secs : null,
      chunksPerSecond: b ? d('chunksSent') / secs : null,
      chunksSkipped: d('chunksSkipped'),
      nacks: d('nacks'),
      plis: d('plis'),
      firs: d('firs'),
      lagged: d('lagged'),
      socketBytesPerSecond: b ? (v.bytesSent - b.bytesSent) / secs : null,
      totals: v.webrtc,
    }
  })
  const valid = rows.filter((r) => r.bytesPerSecond != null)
  const sum = (key) => valid.reduce((n, r) => n + (r[key] ?? 0), 0)
  const mean = (key) => (valid.length ? sum(key) / valid.length : null)
  const pick = (key) => valid.map((r) => r[key]).filter((x) => x != null)
  const decoded = pageAfter
    .map((p) => {
      const q = pageBefore.find((x) => x.index === p.index)
      return p.rtp && q?.rtp ? (p.rtp.framesDecoded - q.rtp.framesDecoded) / secs : null
    })
    .filter((x) => x != null)
  const vAfter = after?.video
  const vBefore = before?.video
  return {
    peers,
    secs,
    serverPeers: rows.length,
    connected: rows.filter((r) => r.state === 'connected').length,
    viewerModes: after?.viewerModes ?? null,
    cpuPct: cpu0 == null || cpu1 == null ? null : (100 * (cpu1 - cpu0)) / secs,
    // The encoder threads (one per channel): their CPU is the video's, shared by every peer.
    encoderCpuPct: encoder0 && encoder1 ? (100 * (encoder1.cpu - encoder0.cpu)) / secs : null,
    chunksDelivered: sum('chunksPerSecond') * secs,
    sourceChromiumCpuPct: (100 * (source1 - source0)) / secs,
    viewerChromiumCpuPct: (100 * (viewer1 - viewer0)) / secs,
    machineBusyPct: proc.machineBusyPct(machine0, machine1),
    otherCpuPct: proc.otherCpuPct(machine0, machine1, mine1 - mine0, secs),
    rssBytes: proc.rssBytes(demo.pid),
    framesInPerSecond: after && before ? (after.framesIn - before.framesIn) / secs : null,
    encoderChunksPerSecond: vAfter && vBefore ? (vAfter.chunks - vBefore.chunks) / secs : null,
    encodeMsP50: vAfter?.encodeMsP50 ?? null,
    encodeMsP99: vAfter?.encodeMsP99 ?? null,
    keyframesForced: vAfter && vBefore ? vAfter.keyframesForced - vBefore.keyframesForced : null,
    perPeer: {
      bytesPerSecond: mean('bytesPerSecond'),
      bytesPerSecondMin: valid.length ? Math.min(...pick('bytesPerSecond')) : null,
      bytesPerSecondMax: valid.length ? Math.max(...pick('bytesPerSecond')) : null,
      packetsPerSecond: mean('packetsPerSecond'),
      chunksPerSecond: mean('chunksPerSecond'),
      chunksPerSecondMin: valid.length ? Math.min(...pick('chunksPerSecond')) : null,
      socketBytesPerSecond: mean('socketBytesPerSecond'),
      framesDecodedPerSecond: decoded.length ? decoded.reduce((a, b) => a + b, 0) / decoded.length : null,
      framesDecodedPerSecondMin: decoded.length ? Math.min(...decoded) : null,
    },
    totals: { chunksSkipped: sum('chunksSkipped'), nacks: sum('nacks'), plis: sum('plis'), firs: sum('firs'), lagged: sum('lagged') },
    rttMsP50: percentile(pick('rttMs'), 50),
    rttMsMax: pick('rttMs').length ? Math.max(...pick('rttMs')) : null,
    lossMax: pick('loss').length ? Math.max(...pick('loss')) : null,
    codecs: [...new Set(pageAfter.map((p) => p.codec).filter(Boolean))],
    pagePeers: pageAfter.map(({ index, state, serverState, error, closed, socketBinary, socketBinaryBytes, rtp: counters }) => ({ index, state, serverState, error, closed, socketBinary, socketBinaryBytes, rtp: counters })),
    peerRows: rows,
  }
}

// ---- the runs -----------------------------------------------------------------------------

/** A server with its JPEG viewer showing frames, and the peers' page on it. */
async function startChannel(browser, options, sceneBase) {
  const demo = await video.startServer(`${sceneBase}/${options.scene}.html`, registryFor(options))
  log(`server at ${demo.base} (pid ${demo.pid}), viewport ${demo.viewport?.width}×${demo.viewport?.height}`)
  const jpeg = video.wsViewer(demo.wsUrl, { video: false })
  try {
    await video.withTimeout(jpeg.opened, 10_000, 'the JPEG viewer to connect')
    await waitFor(() => jpeg.firstFrameAt !== null, 20_000, 'the first JPEG frame')
    const { context, page } = await openPeersPage(browser, demo)
    return { demo, jpeg, context, page }
  } catch (err) {
    jpeg.close()
    await demo.stop()
    throw err
  }
}

async function stopChannel({ demo, jpeg, context, page }) {
  await page.evaluate(() => window.__peers.closeAll()).catch(() => {})
  await context.close().catch(() => {})
  jpeg.close()
  await demo.stop()
}

/** 0 peers, then each count of `options.peers` (peers added between windows). */
async function runSteps(browser, options, sceneBase) {
  const channel = await startChannel(browser, options, sceneBase)
  const { demo, page } = channel
  const steps = []
  try {
    await sleep(options.warmupMs)
    const baseline = await measure(demo, page, 0, options)
    steps.push(baseline)
    log(`0 peers (1 JPEG viewer): server CPU ${fmt(baseline.cpuPct)}%`)
    let open = 0
    for (const n of options.peers) {
      try {
        await page.evaluate(({ url, count, render, ackPacing }) => window.__peers.open(url, count, { render, ackPacing }), { url: demo.wsUrl, count: n - open, render: options.render, ackPacing: options.ackPacing })
        open = n
        await waitDelivering(demo, page, n)
        await sleep(options.warmupMs)
        const step = await measure(demo, page, n, options)
        if (step.connected < n) throw new Error(`${n - step.connected} of ${n} peers were not connected at the window's end (${pageSummary(step.pagePeers)})`)
        steps.push(step)
        log(`${n} peers: server CPU ${fmt(step.cpuPct)}%, ${fmt(step.perPeer.bytesPerSecond / 1e3)} KB/s and ${fmt(step.perPeer.chunksPerSecond)} chunks/s per peer, ${fmt(step.perPeer.framesDecodedPerSecond)} frames/s decoded per peer, NACKs ${step.totals.nacks}, PLIs ${step.totals.plis}, viewer Chromium ${fmt(step.viewerChromiumCpuPct, 0)}%, machine ${fmt(step.machineBusyPct, 0)}% busy`)
      } catch (err) {
        log(`${n} peers: failed: ${err.message}`)
        steps.push({ peers: n, failed: String(err.message ?? err) })
        // More peers on top of a count that failed measure nothing new.
        break
      }
    }
  } finally {
    await stopChannel(channel)
  }
  const zero = steps[0]?.cpuPct
  const one = steps.find((s) => s.peers === 1 && !s.failed)?.cpuPct
  for (const s of steps) {
    if (s.failed || !s.peers || zero == null || s.cpuPct == null) continue
    s.perPeerOverZeroPct = (s.cpuPct - zero) / s.peers
    if (s.peers > 1 && one != null) s.perPeerOverOnePct = (s.cpuPct - one) / (s.peers - 1)
    // What delivery costs, free of the encoder and of how many pictures a starved machine
    // still made: the server's CPU beyond the encoder threads and the JPEG-only baseline, per
    // access unit sent to one peer (packetize, SRTP, send, RTCP), and what that makes for one
    // peer at 30 pictures a second.
    if (s.encoderCpuPct != null && s.chunksDelivered > 0) {
      s.deliveryMicrosPerChunk = ((s.cpuPct - s.encoderCpuPct - zero) / 100) * s.secs * 1e6 / s.chunksDelivered
      s.deliveryPctPerPeerAt30 = (s.deliveryMicrosPerChunk * 30) / 1e4
    }
  }
  return steps
}

/** A fresh server; `n` peers opened at once; until all connected, with the server's memory. */
async function runJoin(browser, options, sceneBase) {
  const channel = await startChannel(browser, options, sceneBase)
  const { demo, page } = channel
  const n = options.join
  try {
    await sleep(options.warmupMs)
    const rssBefore = proc.rssBytes(demo.pid)
    const hwmBefore = proc.peakRssBytes(demo.pid)
    const offers0 = (await demo.stats()).webrtc ?? {}
    let peakRss = rssBefore ?? 0
    const sampler = setInterval(() => (peakRss = Math.max(peakRss, proc.rssBytes(demo.pid) ?? 0)), 50)
    const cpu0 = proc.processCpuSeconds(demo.pid)
    const t0 = Date.now()
    let firstConnectedMs = null
    let allConnectedMs = null
    let settledMs = null
    let lastCount = 0
    let closedCount = 0
    try {
      await page.evaluate(({ url, count, render, ackPacing }) => window.__peers.open(url, count, { render, ackPacing }), { url: demo.wsUrl, count: n, render: options.render, ackPacing: options.ackPacing })
      // Until every peer is connected, or connected or given up by the server (its connect
      // timeout), or the wait ends.
      const until = t0 + CONNECT_WAIT_MS
      while (Date.now() < until) {
        const channel = video.channelStats(await demo.stats())
        lastCount = connectedCount(channel)
        closedCount = connectedCount(channel, 'closed')
        const at = Date.now() - t0
        if (lastCount > 0 && firstConnectedMs === null) firstConnectedMs = at
        if (lastCount >= n) {
          allConnectedMs = at
          settledMs = at
          break
        }
        if (lastCount + closedCount >= n) {
          settledMs = at
          break
        }
        await sleep(100)
      }
    } finally {
      clearInterval(sampler)
    }
    const cpu1 = proc.processCpuSeconds(demo.pid)
    const joinSecs = (Date.now() - t0) / 1000
    const report = await page.evaluate(() => window.__peers.report(false))
    const stats = await demo.stats()
    const pageConnect = report.filter((p) => p.connectedAt != null).map((p) => p.connectedAt - t0)
    // Delivering: a moment after, the peers that connected still connected, their chunks rising.
    let delivering = null
    if (lastCount > 0) {
      try {
        await waitDelivering(demo, page, lastCount)
        delivering = true
      } catch (err) {
        delivering = String(err.message ?? err)
      }
    }
    const result = {
      peers: n,
      allConnectedMs,
      settledMs,
      firstConnectedMs,
      connectedAtEnd: lastCount,
      closedByServer: closedCount,
      closeReasons: [...new Set(report.map((p) => p.error).filter(Boolean))],
      pageConnectedMsP50: percentile(pageConnect, 50),
      pageConnectedMsMax: pageConnect.length ? Math.max(...pageConnect) : null,
      pageConnected: pageConnect.length,
      offers: (stats.webrtc?.offers ?? 0) - (offers0.offers ?? 0),
      offersRefused: (stats.webrtc?.offersRefused ?? 0) - (offers0.offersRefused ?? 0),
      admissionsRefused: stats.admissionsRefused,
      serverCpuPct: cpu0 == null || cpu1 == null ? null : (100 * (cpu1 - cpu0)) / joinSecs,
      serverCpuSeconds: cpu0 == null || cpu1 == null ? null : cpu1 - cpu0,
      rssBeforeBytes: rssBefore,
      rssPeakSampledBytes: Math.max(peakRss, proc.rssBytes(demo.pid) ?? 0),
      rssAfterBytes: proc.rssBytes(demo.pid),
      hwmBeforeBytes: hwmBefore,
      hwmBytes: proc.peakRssBytes(demo.pid),
      delivering,
      pageSummary: pageSummary(report),
    }
    // Peers the server gave up on are a result; none connecting means the run did not work.
    if (lastCount === 0) result.failed = `no peer of ${n} connected within ${CONNECT_WAIT_MS / 1000} s (${result.pageSummary})`
    return result
  } finally {
    await stopChannel(channel)
  }
}

// ---- report -------------------------------------------------------------------------------

const kb = (bytes) => (bytes == null ? '–' : `${(bytes / 1000).toFixed(1)} KB/s`)
const mb = (bytes) => (bytes == null ? '–' : `${(bytes / 2 ** 20).toFixed(0)} MB`)
const signed = (value, digits) => (value == null ? '–' : `${value >= 0 ? '+' : '−'}${fmt(Math.abs(value), digits)} points`)
const cell = (text) => String(text).replace(/\|/g, '\\|')

function report(results, options, meta) {
  const out = []
  out.push(`## WebRTC run of ${meta.date} (${options.mode})`, '')
  out.push(`Machine: ${meta.cpu}, ${meta.cpus} CPUs, ${meta.memGiB} GiB, Linux ${meta.kernel}; Node ${meta.node}; ${meta.chromium}. Machine busy before the run: ${fmt(meta.idleBusyPct, 0)}% (1 s sample). Addon: ${meta.addon?.file ?? '?'} built ${meta.addon?.built ?? '?'}, on ${meta.addon?.commit ?? '?'}.`)
  out.push(`Command: \`${meta.command}\`. Server: \`bench/video.js --serve\` (the routes and setupBrowserStream options of examples/demo.js, WebRTC on loopback${results.registry ? `, plus ${JSON.stringify(results.registry)}` : ''}), its headless Chromium on the ${options.scene === 'animated' ? 'animated page (60 Hz)' : 'animated page held to 30 frames a second'}, 1280×720; one extended JPEG viewer (\`ws\`) throughout. Peers: one page of a second headless Chromium, each peer its own WebSocket and RTCPeerConnection (recvonly, H.264), ${options.render ? 'each track in a small muted <video>' : 'no element rendering them'}; ${options.ackPacing ? 'each socket ack-paced (never acked) before its offer, so it carries one JPEG frame, not the stream, until its peer connects' : 'sockets not paced (JPEG frames until each peer connects, as the client gets them)'}. Nothing pinned: the server, both Chromiums and this script share the machine's ${meta.cpus} CPUs.`)
  if (meta.idleBusyPct > 25) out.push(`**The machine was ${fmt(meta.idleBusyPct, 0)}% busy before this run started (another workload): every figure below is affected by it.**`)
  const steps = results.steps ?? []
  const others = steps.map((s) => s.otherCpuPct).filter((v) => v != null)
  const worst = others.length ? Math.max(...others) : 0
  if (worst > 15) out.push(`**Other processes used up to ${fmt(worst, 0)}% of a core during a measuring window (see the *other processes* column): the figures of those windows are affected.**`)
  out.push(`Warm-up ${options.warmupMs} ms, window ${options.windowMs} ms per row; peers added between rows; one run per row.`, '')

  out.push('### Server CPU per WebRTC peer', '')
  out.push('| peers | server CPU, % of one core | encoder thread | delivery per chunk per peer (server − encoder − JPEG baseline) | one peer at 30 chunks/s | over 0 peers, per peer | over 1 peer, per further peer | RTP bytes per peer per second (min – max) | RTP packets per peer/s | chunks per peer/s (lowest) | encoder chunks/s, encode p50 / p99 ms | server RSS | source Chromium CPU | viewer Chromium CPU (the peers\' page) | machine busy | other processes\' CPU |')
  out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
  for (const s of steps) {
    if (s.failed) {
      out.push(`| ${s.peers} | failed: ${cell(s.failed)} | | | | | | | | | | | | | | |`)
      continue
    }
    const p = s.perPeer
    const bytes = s.peers ? `${kb(p.bytesPerSecond)} (${fmt(p.bytesPerSecondMin / 1e3)} – ${fmt(p.bytesPerSecondMax / 1e3)}), ${fmt((p.bytesPerSecond * 8) / 1e6, 2)} Mbit/s` : '–'
    out.push(
      `| ${s.peers === 0 ? '0 (JPEG viewer only)' : s.peers} | ${fmt(s.cpuPct)}% | ${s.peers ? `${fmt(s.encoderCpuPct)}%` : '–'} | ${s.deliveryMicrosPerChunk != null ? `${fmt(s.deliveryMicrosPerChunk, 0)} µs` : '–'} | ${s.deliveryPctPerPeerAt30 != null ? `${fmt(s.deliveryPctPerPeerAt30, 2)}% of a core` : '–'} | ${signed(s.perPeerOverZeroPct, 2)} | ${signed(s.perPeerOverOnePct, 2)} | ${bytes} | ${s.peers ? fmt(p.packetsPerSecond) : '–'} | ${s.peers ? `${fmt(p.chunksPerSecond)} (${fmt(p.chunksPerSecondMin)})` : '–'} | ${s.peers ? `${fmt(s.encoderChunksPerSecond)}, ${fmt(s.encodeMsP50, 1)} / ${fmt(s.encodeMsP99, 1)}` : '–'} | ${mb(s.rssBytes)} | ${fmt(s.sourceChromiumCpuPct, 0)}% | ${fmt(s.viewerChromiumCpuPct, 0)}% | ${fmt(s.machineBusyPct, 0)}% | ${fmt(s.otherCpuPct, 0)}% |`,
    )
  }
  out.push('')
  out.push('Server CPU: user+sys of the server process (Node, the addon and all their threads; neither Chromium) over the window, % of one core, from `/proc/<pid>/stat` (10 ms ticks), as bench/run.js and bench/video.js measure it. *Over 0 peers, per peer*: (CPU with N peers − CPU with the JPEG viewer alone) ÷ N; it includes the H.264 encoder, which the first peer starts and all share. *Over 1 peer, per further peer*: (CPU with N − CPU with 1) ÷ (N − 1), the cost of one more peer. Bytes and packets: the server\'s per-peer counters (`viewers[].webrtc.bytesSent`, `packetsSent`: RTP with its SRTP overhead, retransmissions included; UDP/IP headers not counted). Viewer Chromium: the whole process tree of the browser holding the peers\' page (it receives, decrypts and decodes every stream).', '')

  out.push('### What the peers received', '')
  out.push('| peers | connected (server) | frames decoded per peer/s (lowest; the page\'s getStats) | codec | RTT ms p50 / max | loss, worst peer | NACKs / PLIs / FIRs in the window (all peers) | chunks skipped / lagged (all peers) | keyframes forced | WebSocket bytes per peer/s |')
  out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
  for (const s of steps) {
    if (s.failed || !s.peers) continue
    const p = s.perPeer
    out.push(
      `| ${s.peers} | ${s.connected} / ${s.serverPeers} | ${fmt(p.framesDecodedPerSecond)} (${fmt(p.framesDecodedPerSecondMin)}) | ${s.codecs.join(', ') || '–'} | ${fmt(s.rttMsP50, 1)} / ${fmt(s.rttMsMax, 1)} | ${fmt(s.lossMax != null ? 100 * s.lossMax : null, 2)}% | ${s.totals.nacks} / ${s.totals.plis} / ${s.totals.firs} | ${s.totals.chunksSkipped} / ${s.totals.lagged} | ${s.keyframesForced ?? '–'} | ${fmt(p.socketBytesPerSecond, 0)} B/s |`,
    )
  }
  out.push('')
  out.push('From the server\'s stats (`channels[].viewers[].webrtc`) unless marked: RTT and loss as the viewers\' RTCP reports give them at the window end; NACKs, PLIs, FIRs, chunks skipped and lagged counted over the window; keyframes forced: the encoder\'s, for joining or lagging peers (coalesced). WebSocket bytes: what each peer\'s socket got meanwhile (JPEG frames stop once its peer shows pictures).', '')

  out.push('### Peers joining at once', '')
  const j = results.join
  if (!j) {
    out.push(options.join ? 'Not measured (the steps above failed first).' : 'Not measured in this run (`--quick` or `--join 0`).', '')
  } else if (j.failed) {
    out.push(`Failed: ${cell(j.failed)}`, '')
  } else {
    out.push('| peers | all connected (server stats) | first connected | page: connected p50 / max | offers / refused | server CPU meanwhile | server RSS before / peak (50 ms samples) / after | VmHWM (peak since start) | delivering after |')
    out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    const delivering = j.delivering === true ? 'yes' : j.delivering == null ? '–' : cell(j.delivering)
    out.push(
      `| ${j.peers} | ${j.allConnectedMs != null ? `${fmt(j.allConnectedMs / 1000, 2)} s` : `not all: ${j.connectedAtEnd} of ${j.peers} connected, ${j.closedByServer} given up by the server${j.settledMs != null ? ` (settled after ${fmt(j.settledMs / 1000, 2)} s)` : ` (after ${CONNECT_WAIT_MS / 1000} s)`}${j.closeReasons?.length ? `: ${cell(j.closeReasons.join('; '))}` : ''}`} | ${j.firstConnectedMs != null ? `${fmt(j.firstConnectedMs / 1000, 2)} s` : '–'} | ${fmt(j.pageConnectedMsP50 / 1000, 2)} / ${fmt(j.pageConnectedMsMax / 1000, 2)} s (${j.pageConnected}) | ${j.offers} / ${j.offersRefused} | ${fmt(j.serverCpuPct, 0)}% (${fmt(j.serverCpuSeconds, 2)} CPU s) | ${mb(j.rssBeforeBytes)} / ${mb(j.rssPeakSampledBytes)} / ${mb(j.rssAfterBytes)} | ${mb(j.hwmBytes)} (before: ${mb(j.hwmBeforeBytes)}) | ${delivering} |`,
    )
    out.push('')
    out.push(`A fresh server with its JPEG viewer; the page opens ${j.peers} sockets at once (Chromium lets one WebSocket to an address be in its handshake at a time, so the handshakes are serial), each offering as soon as its \`session-meta\` arrives. Times from the moment the page was asked to open them; the server\'s stats are polled every 100 ms. *Delivering after*: every peer that connected still connected and its chunks rising a moment later. A peer the server gives up on (\`connect_timeout\`: not connected 10 s after its offer) is counted, not retried.`, '')
  }
  return out.join('\n')
}

// ---- main ---------------------------------------------------------------------------------

async function main() {
  if (process.argv.includes('--help')) {
    proc.printHeadComment(__filename)
    return
  }
  const options = parseOptions(process.argv.slice(2))
  const { findChromium } = require(path.join(ROOT, '__test__/support/chromium'))
  if (!findChromium()) {
    log('skipped: no Chromium (set CHROME_PATH or install chromium)')
    process.exitCode = 2
    return
  }
  try {
    require(ROOT)
  } catch (err) {
    throw new Error(`the addon is not built (${err.message})`)
  }
  const idle0 = proc.machineTicks()
  await sleep(1000)
  const idle1 = proc.machineTicks()
  const started = Date.now()
  const deadline = setTimeout(() => {
    log(`stopped: past the ${options.deadlineMs / 1000} s deadline`)
    video.cleanupAll()
    process.exit(1)
  }, options.deadlineMs)
  deadline.unref()
  const meta = {
    date: new Date().toISOString(),
    command: process.env.BENCH_VIDEO_COMMAND ?? `node bench/webrtc.js${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`,
    cpu: os.cpus()[0]?.model ?? 'unknown CPU',
    cpus: os.cpus().length,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    chromium: video.chromiumVersion(),
    idleBusyPct: proc.machineBusyPct(idle0, idle1),
    addon: video.addonBuild(),
  }
  const results = { meta, options, registry: registryFor(options), steps: [], join: null }
  const { server: sceneServer, base: sceneBase } = await video.startSceneServer()
  let browser = null
  try {
    browser = await video.launchViewerBrowser()
    video.cleanups.add(() => browser?.close().catch(() => {}))
    try {
      results.steps = await runSteps(browser, options, sceneBase)
    } catch (err) {
      log(`failed: ${err.stack ?? err}`)
      results.failed = String(err.message ?? err)
    }
    if (options.join > 0 && !results.failed) {
      try {
        results.join = await runJoin(browser, options, sceneBase)
        const j = results.join
        log(`${j.peers} peers at once: ${j.allConnectedMs != null ? `all connected after ${fmt(j.allConnectedMs / 1000, 2)} s` : `only ${j.connectedAtEnd} connected, ${j.closedByServer} given up by the server (${j.closeReasons.join('; ') || 'no reason given'})`}, server RSS ${mb(j.rssBeforeBytes)} → peak ${mb(j.rssPeakSampledBytes)}, VmHWM ${mb(j.hwmBytes)}`)
      } catch (err) {
        log(`join: failed: ${err.stack ?? err}`)
        results.join = { peers: options.join, failed: String(err.message ?? err) }
      }
    }
  } finally {
    await browser?.close().catch(() => {})
    sceneServer.close()
  }
  results.elapsedSeconds = (Date.now() - started) / 1000
  const markdown = report(results, options, meta) + `Elapsed: ${results.elapsedSeconds.toFixed(0)} s.\n`
  const resultsDir = path.join(BENCH, 'results')
  fs.mkdirSync(resultsDir, { recursive: true })
  const base = path.join(resultsDir, `${meta.date.replace(/[:.]/g, '-')}-webrtc-${options.mode}`)
  fs.writeFileSync(`${base}.json`, JSON.stringify(results, null, 2))
  fs.writeFileSync(`${base}.md`, markdown)
  process.stdout.write(markdown)
  log(`results in ${path.relative(ROOT, base)}.{json,md}`)
  const failures = [results.failed, ...results.steps.map((s) => s.failed), results.join?.failed].filter(Boolean)
  if (failures.length) {
    log(`${failures.length} part(s) failed: ${failures[0]}`)
    process.exitCode = 1
  }
  clearTimeout(deadline)
}

video.onSignals()
main().catch((err) => {
  video.cleanupAll()
  process.stderr.write(`bench webrtc: ${err.stack ?? err}\n`)
  process.exit(1)
})

'use strict'
// H.264 video on the extended wire (docs/PROTOCOL.md, "Video"), with the Rust replay source
// playing real Chromium screencast frames (examples/frames) so the encoder sees real pages:
// a joiner's picture at once then a keyframe, coalesced keyframes for a crowd of joiners, the
// encoder's life following its viewers, a stalled viewer resuming at a keyframe, and every bad
// request answered with its documented error. The real decode in Chromium is in
// video-decode.test.js.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const http = require('node:http')
const https = require('node:https')
const { startServer, Viewer, waitFor, selfSignedCert, FakeToolset } = require('./support')
const { launchChromium, findChromium } = require('./support/chromium')

const chromeSkip = findChromium() ? false : 'Chromium not found: install chromium or set CHROME_PATH'

const FRAMES_DIR = path.join(__dirname, '..', 'examples', 'frames')
const FRAMES = fs
  .readdirSync(FRAMES_DIR)
  .filter((f) => f.endsWith('.jpeg'))
  .sort()
  .map((f) => fs.readFileSync(path.join(FRAMES_DIR, f)))
const KIND_FRAME = 1
const KIND_VIDEO = 2
const FLAG_KEY = 1
const OFFER = { type: 'config', video: { codecs: ['avc1.42E01F'] } }
/** Keyframes forced for joiners are coalesced to one per this many ms (pipeline.rs). */
const KEYFRAME_COALESCE_MS = 300

function replayServer(config = {}, fps = 30) {
  return startServer({
    getReplayFrames: () => ({ frames: FRAMES, fps, width: 320, height: 180 }),
    getToolset: () => undefined,
    ...config,
  })
}

const binary = (viewer) => viewer.log.filter((e) => e.frame).map((e) => e.frame)
const chunks = (viewer) => binary(viewer).filter((f) => f.kind === KIND_VIDEO)
const channelStats = (srv) => srv.registry.stats().channels[0]
const viewerStats = (srv, viewer) => channelStats(srv).viewers.find((v) => v.id === viewer.json.find((m) => m.type === 'session-meta').viewerId)

async function videoViewer(srv, agent = 'video-agent', options = {}) {
  const viewer = new Viewer(srv.url(agent), { extended: true, keepImages: true, ...options })
  await viewer.untilMeta()
  viewer.send(OFFER)
  return viewer
}

test('a video viewer sees a picture at once, then video-config and a keyframe; JPEG viewers are unaffected', async (t) => {
  const srv = await replayServer()
  t.after(() => srv.close())
  const jpeg = new Viewer(srv.url('video-agent'), { extended: true })
  await jpeg.untilMeta()
  const video = new Viewer(srv.url('video-agent'), { extended: true })
  await video.untilMeta()
  // Asked at once: the join frame (queued with session-meta) still comes before any video,
  // so the screen is never blank while the keyframe is made.
  video.send(OFFER)
  await waitFor(() => chunks(video).length >= 20, { what: '20 video chunks' })
  assert.equal(binary(video)[0].kind, KIND_FRAME, 'a JPEG picture first')
  const config = video.json.find((m) => m.type === 'video-config')
  assert.ok(config, 'video-config sent')
  assert.match(config.codec, /^avc1\.42[0-9a-f]{4}$/)
  assert.equal(config.format, 'annexb')
  assert.deepEqual([config.codedWidth, config.codedHeight], [320, 180])
  // video-config precedes the first chunk, the first chunk is a keyframe, and once video
  // started no JPEG frame follows.
  const configAt = video.log.findIndex((e) => e.json?.type === 'video-config')
  const firstChunkAt = video.log.findIndex((e) => e.frame?.kind === KIND_VIDEO)
  assert.ok(configAt < firstChunkAt)
  const first = video.log[firstChunkAt].frame
  assert.equal(first.flags & FLAG_KEY, FLAG_KEY, 'starts at a keyframe')
  assert.equal(first.format, 16, 'H.264 Annex B')
  assert.deepEqual([...first.image.subarray(0, 4)], [0, 0, 0, 1], 'Annex B start code')
  assert.ok(video.log.slice(firstChunkAt).every((e) => !e.frame || e.frame.kind === KIND_VIDEO), 'no JPEG after video started')
  // Chunks carry the geometry of their frame for input mapping, and rising seqs.
  assert.deepEqual([first.imageWidth, first.imageHeight, first.deviceWidth, first.deviceHeight], [320, 180, 320, 180])
  const seqs = chunks(video).map((c) => c.seq)
  assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), 'seqs rise')
  // The JPEG viewer kept getting JPEG frames only.
  const jpegCount = jpeg.frameCount
  await waitFor(() => jpeg.frameCount >= jpegCount + 10, { what: 'JPEG frames keep flowing' })
  assert.ok(binary(jpeg).every((f) => f.kind === KIND_FRAME))
  const stats = channelStats(srv)
  assert.deepEqual(stats.viewerModes, { compat: 0, jpeg: 1, video: 1, webrtc: 0 })
  assert.equal(stats.video.state, 'running')
  assert.equal(stats.video.viewers, 1)
  assert.match(stats.video.codec, /^avc1\.42/)
  assert.ok(stats.video.chunks >= 20 && stats.video.keyframesPeriodic + stats.video.keyframesForced >= 1)
  assert.ok(stats.video.encodeMsP99 >= stats.video.encodeMsP50 && stats.video.encodeMsP50 > 0)
  assert.equal(viewerStats(srv, video).video, true)
  assert.equal(viewerStats(srv, jpeg).video, false)

  // Back to JPEG: frames again, the newest at once.
  const before = binary(video).length
  video.send({ type: 'config', video: null })
  await waitFor(() => binary(video).slice(before).filter((f) => f.kind === KIND_FRAME).length >= 3, { what: 'JPEG frames after video:null' })
  await waitFor(() => channelStats(srv).video.state === 'stopped', { what: 'the encoder stops with its only viewer gone' })

  // And video again: a new encoder, a video-config again, and a keyframe first.
  const configsBefore = video.json.filter((m) => m.type === 'video-config').length
  const logAt = video.log.length
  video.send(OFFER)
  await waitFor(() => video.log.slice(logAt).filter((e) => e.frame?.kind === KIND_VIDEO).length >= 3, { what: 'video again' })
  assert.equal(video.json.filter((m) => m.type === 'video-config').length, configsBefore + 1, 'the decoder is configured again')
  const again = video.log.slice(logAt).find((e) => e.frame?.kind === KIND_VIDEO).frame
  assert.equal(again.flags & FLAG_KEY, FLAG_KEY)
  assert.equal(channelStats(srv).video.state, 'running')
})

test('20 joiners in a second cost a few coalesced keyframes, each starts at one, and the encoder stops after the last leaves', async (t) => {
  // The channel outlives its viewers for a while, so its stats show the encoder stopping.
  const srv = await replayServer({ lingerMs: 10_000 })
  t.after(() => srv.close())
  const first = await videoViewer(srv)
  await waitFor(() => chunks(first).length >= 5, { what: 'video running' })
  const forcedBefore = channelStats(srv).video.keyframesForced
  const joining = Date.now()
  const joiners = []
  for (let i = 0; i < 20; i++) joiners.push(await videoViewer(srv))
  const joinMs = Date.now() - joining
  await Promise.all(joiners.map((j) => waitFor(() => chunks(j).length >= 1, { what: 'a joiner gets video' })))
  for (const j of joiners) assert.equal(chunks(j)[0].flags & FLAG_KEY, FLAG_KEY, 'every joiner starts at a keyframe')
  const stats = channelStats(srv).video
  const forced = stats.keyframesForced - forcedBefore
  t.diagnostic(`20 joiners over ${joinMs} ms: ${forced} forced keyframes (${stats.keyRequests} requests)`)
  assert.ok(forced >= 1)
  assert.ok(forced <= Math.ceil(joinMs / KEYFRAME_COALESCE_MS) + 1, `${forced} forced keyframes for joins over ${joinMs} ms`)
  assert.equal(stats.viewers, 21)
  assert.equal(channelStats(srv).viewerModes.video, 21)

  await Promise.all([first, ...joiners].map((v) => v.close()))
  await waitFor(() => channelStats(srv).video.state === 'stopped', { what: 'the encoder stopped' })
  assert.equal(channelStats(srv).video.viewers, 0)
  assert.equal(channelStats(srv).sourceState, 'lingering', 'while the source still runs')
})

// Real Chromium on a page of moving noise at a high bitrate: chunks large enough that a viewer
// which stops reading fills its socket buffers within seconds.
const NOISE_PAGE = `<!doctype html><body style="margin:0;overflow:hidden"><canvas id=c width=640 height=360></canvas><script>
const c = document.getElementById('c'), g = c.getContext('2d'), img = g.createImageData(640, 360)
function draw() { const d = new Uint32Array(img.data.buffer); for (let i = 0; i < d.length; i++) d[i] = (Math.random() * 0xffffff) | 0xff000000; g.putImageData(img, 0, 0); requestAnimationFrame(draw) }
draw()
</script>`

test('a viewer back after a stall resumes at a keyframe; a healthy viewer is unaffected', { skip: chromeSkip, timeout: 180_000 }, async (t) => {
  const site = http.createServer((req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end(NOISE_PAGE))
  await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve))
  t.after(() => site.close())
  const browser = await launchChromium({ url: `http://127.0.0.1:${site.address().port}/`, width: 640, height: 360 })
  const srv = await startServer({ getCdpEndpoint: () => browser.endpoint, videoBitrate: 20_000_000 })
  // The server first, so its source is stopped before the browser goes.
  t.after(async () => {
    await srv.close()
    await browser.close()
  })
  const healthy = await videoViewer(srv, 'video-agent', { keepImages: false })
  const stalled = await videoViewer(srv, 'video-agent', { keepImages: false })
  await waitFor(() => chunks(stalled).length >= 5 && chunks(healthy).length >= 5, { what: 'both on video', timeout: 30_000 })
  // Stop reading: the server's writes back up into the socket buffers, then its writer waits
  // while the encoder goes on. Wait until the encoder made more chunks beyond what this viewer
  // was sent than a viewer may have waiting (VIDEO_BEHIND, 30): once it reads again, its
  // writer must skip them and wait for a keyframe.
  stalled.ws._socket.pause()
  const sentAtPause = viewerStats(srv, stalled).videoChunksSent
  const chunksAtPause = channelStats(srv).video.chunks
  await waitFor(
    () => {
      const made = channelStats(srv).video.chunks - chunksAtPause
      const sent = viewerStats(srv, stalled).videoChunksSent - sentAtPause
      return made - sent > 30 + 20
    },
    { what: 'the stalled viewer far behind', timeout: 40_000 },
  )
  const receivedAtResume = chunks(stalled).length
  stalled.ws._socket.resume()
  await waitFor(() => viewerStats(srv, stalled).videoLagged >= 1, { what: 'the lag seen by its writer' })
  // What it reads first was in the socket buffers before the skip; wait for chunks made after
  // the lag was seen (a chunk's number is the count of chunks its pipeline made).
  const madeAtLag = channelStats(srv).video.chunks
  await waitFor(() => chunks(stalled).some((c) => c.reserved > madeAtLag + 5), { what: 'video again after the stall' })
  assert.ok(chunks(stalled).length > receivedAtResume)
  // Chunk numbers (header bytes 52–55) count the pipeline's stream: every delta the stalled
  // viewer got follows the chunk before it; after the gap it restarted at a keyframe.
  const got = chunks(stalled)
  let gaps = 0
  for (let i = 1; i < got.length; i++) {
    if (got[i].reserved !== got[i - 1].reserved + 1) {
      gaps += 1
      assert.equal(got[i].flags & FLAG_KEY, FLAG_KEY, `chunk ${got[i].reserved} after a gap is a keyframe`)
    }
  }
  t.diagnostic(`stalled viewer: ${gaps} gap(s), lagged ${viewerStats(srv, stalled).videoLagged}x; healthy viewer: ${chunks(healthy).length} chunks`)
  assert.ok(gaps >= 1, 'the stall skipped chunks')
  assert.equal(viewerStats(srv, healthy).videoLagged, 0, 'the healthy viewer never lagged')
  const numbers = chunks(healthy).map((c) => c.reserved)
  assert.ok(numbers.every((n, i) => i === 0 || n === numbers[i - 1] + 1), 'the healthy viewer got every chunk')
})

test('takeover and input in frame pixels work the same on video', async (t) => {
  // A toolset source (frames pushed from JS: 320×240 JPEGs of a 1280×720 viewport).
  const toolset = new FakeToolset()
  const srv = await startServer({ getToolset: () => toolset })
  t.after(() => srv.close())
  const viewer = await videoViewer(srv, 'video-input')
  await viewer.untilStreaming()
  let seq = 0
  await waitFor(
    () => {
      toolset.emitFrame(++seq)
      return chunks(viewer).length >= 2
    },
    { what: 'video of pushed frames' },
  )
  const chunk = chunks(viewer).at(-1)
  assert.deepEqual([chunk.imageWidth, chunk.imageHeight, chunk.deviceWidth, chunk.deviceHeight], [320, 240, 1280, 720])
  viewer.send({ type: 'control-request' })
  await viewer.waitJson((m) => m.type === 'control' && m.you === true)
  viewer.send({ type: 'input', kind: 'mouse', eventType: 'mousePressed', x: 80, y: 60, button: 'left', clickCount: 1, frameSeq: chunk.seq })
  await waitFor(() => toolset.mouse.length === 1, { what: 'the click relayed' })
  assert.equal(toolset.mouse[0].x, 320, 'x mapped by the chunk geometry (1280 / 320)')
  assert.equal(toolset.mouse[0].y, 180)
})

test('video reaches a JS-bridged viewer (TLS) the same way', async (t) => {
  const srv = await startServer(
    { getReplayFrames: () => ({ frames: FRAMES, fps: 30, width: 320, height: 180 }), getToolset: () => undefined },
    { createServer: https.createServer, serverOptions: selfSignedCert() },
  )
  t.after(() => srv.close())
  const viewer = await videoViewer(srv, 'tls-video', { rejectUnauthorized: false })
  await waitFor(() => chunks(viewer).length >= 10, { what: 'video over the bridge' })
  assert.equal(viewerStats(srv, viewer).transport, 'bridged')
  assert.equal(chunks(viewer)[0].flags & FLAG_KEY, FLAG_KEY)
  const numbers = chunks(viewer).map((c) => c.reserved)
  assert.ok(numbers.every((n, i) => i === 0 || n === numbers[i - 1] + 1), 'every chunk, in order')
  assert.ok(viewer.json.some((m) => m.type === 'video-config'))
})

test('bad video requests get their documented errors and the viewer stays on JPEG', async (t) => {
  const srv = await replayServer()
  t.after(() => srv.close())
  const viewer = new Viewer(srv.url('bad-video'), { extended: true })
  await viewer.untilMeta()
  viewer.send({ type: 'config', video: { codecs: ['vp8', 'av01.0.04M.08'] } })
  await viewer.waitJson((m) => m.error === 'unsupported_codec')
  for (const video of [true, {}, { codecs: [] }, { codecs: [7] }, { codecs: 'avc1.42E01F' }, { codecs: Array(17).fill('avc1.42E01F') }]) {
    const from = viewer.json.length
    viewer.send({ type: 'config', video })
    const answer = await viewer.waitJson((m) => m.error, { from })
    assert.equal(answer.error, 'bad_message', JSON.stringify(video))
    assert.match(answer.message, /video/)
  }
  const count = viewer.frameCount
  await waitFor(() => viewer.frameCount >= count + 5, { what: 'JPEG frames go on' })
  assert.ok(binary(viewer).every((f) => f.kind === KIND_FRAME))
  assert.equal(channelStats(srv).video ?? null, null, 'no encoder started')

  // A compat viewer (no subprotocol) asking for video is told why it gets none.
  const compat = new Viewer(srv.url('bad-video'))
  await compat.opened
  compat.send(OFFER)
  const refused = await compat.waitJson((m) => m.error === 'protocol_required')
  assert.match(refused.message, /browser-stream\.v1/)
  await Promise.all([viewer.close(), compat.close()])
})

test('video off, absurd encoder options and corrupt source JPEGs', async (t) => {
  for (const videoBitrate of [0, 1, 99_999, 50_000_001, 1.5, -2e6]) {
    await assert.rejects(replayServer({ videoBitrate }), /videoBitrate must be an integer from 100000 to 50000000/)
  }
  await assert.rejects(replayServer({ videoKeyframeIntervalMs: 10 }), /videoKeyframeIntervalMs must be an integer from 250/)

  const off = await replayServer({ video: false })
  t.after(() => off.close())
  const viewer = new Viewer(off.url('no-video'), { extended: true })
  await viewer.untilMeta()
  viewer.send(OFFER)
  await viewer.waitJson((m) => m.error === 'video_unavailable')
  await viewer.close()

  // Every other frame of the source is a JPEG whose data is garbage: the encoder counts and
  // skips them and goes on with the good ones.
  const corrupt = Buffer.from(FRAMES[0])
  for (let i = 700; i < corrupt.length - 2; i += 5) corrupt[i] = 0xff
  const broken = [corrupt.subarray(0, 300), FRAMES[1], corrupt, FRAMES[2]]
  const srv = await startServer({ getReplayFrames: () => ({ frames: broken, fps: 30, width: 320, height: 180 }), getToolset: () => undefined })
  t.after(() => srv.close())
  const watcher = await videoViewer(srv, 'corrupt')
  await waitFor(() => (channelStats(srv).video?.decodeErrors ?? 0) >= 2, { what: 'corrupt frames counted' })
  const had = chunks(watcher).length
  await waitFor(() => chunks(watcher).length >= had + 5, { what: 'video goes on after corrupt frames' })
  const stats = channelStats(srv).video
  assert.equal(stats.state, 'running')
  assert.ok(typeof stats.lastError === 'string' && stats.lastError.length > 0)
  assert.equal(watcher.json.filter((m) => m.error).length, 0, 'the viewer is not bothered')
})

test('a quiet page is refined once: a screenshot for JPEG viewers, a low-QP keyframe for video viewers', { skip: chromeSkip, timeout: 120_000 }, async (t) => {
  const TEXT_PAGE = `<!doctype html><body style="font:15px serif;margin:20px">${'A page of small text that stops changing once loaded. '.repeat(120)}</body>`
  const site = http.createServer((req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end(TEXT_PAGE))
  await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve))
  t.after(() => site.close())
  const browser = await launchChromium({ url: `http://127.0.0.1:${site.address().port}/`, width: 800, height: 600 })
  const srv = await startServer({ getCdpEndpoint: () => browser.endpoint, screencastOptions: { format: 'jpeg', quality: 40 }, refineAfterMs: 400 })
  t.after(async () => {
    await srv.close()
    await browser.close()
  })
  const jpeg = new Viewer(srv.url('quiet-agent'), { extended: true })
  await jpeg.untilMeta()
  const refinedFrames = () => binary(jpeg).filter((f) => f.kind === KIND_FRAME && (f.flags & 2) === 2)
  await waitFor(() => refinedFrames().length >= 1, { what: 'a refined JPEG frame', timeout: 30_000 })
  const refined = refinedFrames()[0]
  const plain = binary(jpeg).filter((f) => (f.flags & 2) === 0).at(-1)
  t.diagnostic(`screencast frame ${plain.image.length} B (quality 40), refinement ${refined.image.length} B (quality 90)`)
  assert.deepEqual([...refined.image.subarray(0, 2)], [0xff, 0xd8], 'a JPEG')
  assert.ok(refined.image.length > plain.image.length, 'at a higher quality')
  // Counted (a late paint of Chrome's may already have earned a second one: the rule is
  // checked below, not a count).
  assert.ok(channelStats(srv).jpegRefinements >= 1)

  // A video viewer of the quiet page: a keyframe at once, then nothing more is asked of the
  // source for it (the encoder refines for video viewers).
  const video = await videoViewer(srv, 'quiet-agent')
  await waitFor(() => chunks(video).length >= 1, { what: 'a keyframe of the quiet page' })
  assert.equal(chunks(video)[0].flags & FLAG_KEY, FLAG_KEY)
  // Three more quiet periods. A refinement follows only a new picture of the page (Chrome may
  // still send one, e.g. a late paint): never two refinements in a row of the same picture,
  // and never one for the video viewer's sake.
  await new Promise((resolve) => setTimeout(resolve, 1200))
  const kinds = () => binary(jpeg).map((f) => ((f.flags & 2) === 2 ? 'R' : 'F')).join('')
  // A refinement asked for just now may still be on its way: wait until the channel settles
  // (no refinement asked and no frame received for two quiet periods). Not until every one
  // asked for has arrived: an ask can come to nothing (the screenshot failed, or a late paint
  // superseded it on the way), and `jpegRefinements` counts asks.
  const settled = { at: Date.now(), asked: -1, received: -1 }
  await waitFor(
    () => {
      const asked = channelStats(srv).jpegRefinements
      const received = binary(jpeg).length
      if (asked !== settled.asked || received !== settled.received) Object.assign(settled, { at: Date.now(), asked, received })
      return Date.now() - settled.at >= 800
    },
    { what: 'the quiet page settled (no refinement asked, no frame received for 800 ms)', timeout: 30_000 },
  )
  t.diagnostic(`frames received: ${kinds()}, refinements asked: ${channelStats(srv).jpegRefinements}`)
  assert.ok(!kinds().includes('RR'), `refinements only after a new picture: ${kinds()}`)
  assert.ok(channelStats(srv).jpegRefinements <= [...kinds()].filter((k) => k === 'F').length)
})

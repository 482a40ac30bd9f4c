'use strict'
// The Rust replay source (getReplayFrames): frames made and fanned out without JS, stamped
// with their scheduled capture time, stopped with the channel's source session.

const test = require('node:test')
const assert = require('node:assert/strict')
const { NativeRegistry } = require('..')
const { startServer, Viewer, waitFor, sleep, BASE_JPEG, logCapture, VIEWER_ERROR_TEXT } = require('./support')

/** `bsn:seq=N;t=T;` of a stamped frame, or null. */
function stamp(base64) {
  const text = Buffer.from(base64.slice(0, 64), 'base64').subarray(6).toString('latin1')
  const match = /^bsn:seq=(\d{10});t=(\d{16});/.exec(text)
  return match ? { seq: Number(match[1]), timeUs: Number(match[2]) } : null
}

test('replayed frames reach viewers stamped, in order, at the asked rate, and stop with the session', async (t) => {
  let asked = 0
  const srv = await startServer({
    getReplayFrames: (agentId) => {
      asked += 1
      return agentId === 'replayed' ? { frames: [BASE_JPEG], fps: 50, stampFrames: true, width: 640, height: 360 } : null
    },
    getToolset: () => undefined,
  })
  t.after(() => srv.close())
  const viewer = new Viewer(srv.url('replayed'))
  await viewer.untilStreaming('streaming')
  await waitFor(() => viewer.frames.length >= 25, { what: '25 replayed frames' })
  const stamps = viewer.frames.map(stamp)
  assert.ok(stamps.every(Boolean), 'every frame carries the stamp')
  for (let i = 1; i < stamps.length; i++) {
    assert.ok(stamps[i].seq > stamps[i - 1].seq, 'frame numbers rise')
    assert.equal(stamps[i].timeUs - stamps[i - 1].timeUs, 20_000 * (stamps[i].seq - stamps[i - 1].seq), '50 fps grid')
  }
  const decoded = Buffer.from(viewer.frames[0], 'base64')
  assert.deepEqual(decoded.subarray(48), BASE_JPEG.subarray(2), 'the rest of the image is untouched')
  assert.ok(viewer.json.some((m) => m.viewport?.width === 640 && m.viewport?.height === 360))

  // An agent the replay does not cover falls back to the toolset path (none here).
  const other = new Viewer(srv.url('not-replayed'))
  await other.opened
  await sleep(100)
  assert.equal(other.frames.length, 0)
  await other.close()

  await viewer.close()
  await waitFor(() => srv.registry.stats().channels.length === 0, { what: 'channel gone after the linger' })
  await sleep(150)
  assert.equal(srv.registry.stats().channels.length, 0, 'the replay does not revive the channel')
  assert.equal(srv.registry.stats().starts, 2)
  // The agent without replay or toolset ended its session by itself (idle, waiting for the
  // next viewer to look again): only the replayed one was stopped.
  assert.equal(srv.registry.stats().stops, 1)
  assert.equal(asked, 2)
})

test('bad replay input is an error for the viewers, not a crash', async (t) => {
  const logs = logCapture()
  const srv = await startServer({ logger: logs.logger, getReplayFrames: () => ({ frames: [Buffer.from('not an image')], fps: 30 }) })
  t.after(() => srv.close())
  const viewer = new Viewer(srv.url('bad'))
  await waitFor(() => viewer.json.some((m) => m.error === 'screencast_failed'), { what: 'screencast_failed' })
  const error = viewer.json.find((m) => m.error)
  assert.equal(error.message, VIEWER_ERROR_TEXT.screencast_failed)
  await waitFor(() => logs.has(/replay image 0 is not a JPEG, PNG or WebP image/), { what: 'the cause in the log' })
  await waitFor(() => viewer.statuses().includes('browser_closed'), { what: 'browser_closed after the error' })
  assert.equal(srv.registry.stats().channels.find((c) => c.key === 'bad').sourceState, 'idle', 'a relaunch or the next viewer may retry')
})

test('startReplaySource refuses bad arguments with clear errors and ignores dead sessions', () => {
  const native = new NativeRegistry(async () => {}, {})
  assert.throws(() => native.startReplaySource('k', 1, [], { fps: 30 }), /replay needs at least one image/)
  assert.throws(() => native.startReplaySource('k', 1, [BASE_JPEG], { fps: 0 }), /fps must be a number above 0 and at most 240/)
  assert.throws(() => native.startReplaySource('k', 1, [BASE_JPEG], { fps: 1e9 }), /at most 240/)
  const png = Buffer.from('89504e470d0a1a0a0000', 'hex')
  assert.throws(() => native.startReplaySource('k', 1, [png], { fps: 30, stampFrames: true }), /stampFrames needs JPEG images; image 0/)
  assert.equal(native.startReplaySource('k', 1, [BASE_JPEG], { fps: 30 }), false, 'no such live session')
  native.close()
})

test('a getReplayFrames that throws gives screencast_failed', async (t) => {
  const logs = logCapture()
  const srv = await startServer({
    logger: logs.logger,
    getReplayFrames: () => {
      throw new Error('no recording')
    },
  })
  t.after(() => srv.close())
  const viewer = new Viewer(srv.url('thrower'))
  await waitFor(() => viewer.json.some((m) => m.error === 'screencast_failed'), { what: 'screencast_failed' })
  assert.equal(viewer.json.find((m) => m.error).message, VIEWER_ERROR_TEXT.screencast_failed)
  await waitFor(() => logs.has(/getReplayFrames: no recording/), { what: "the deployer's error in the log" })
})

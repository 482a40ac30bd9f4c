'use strict'
// Rust's diagnostics reach the deployer's `logger` through `tracing`: at their level, with
// structured fields (agent, thread, viewer, reason) as a second argument, credentials blanked,
// and lines about one viewer rate-limited (5 per 10 s per kind of line) while other viewers'
// lines still pass.

const test = require('node:test')
const assert = require('node:assert/strict')
const { FakeToolset, Viewer, startServer, waitFor } = require('./support')

const GARBAGE_SDP = 'v=0\r\nthis is not sdp\r\n'

/** A logger keeping each call's level, line and fields. */
function recordingLogger() {
  const calls = []
  const keep = (level) => (line, fields) => calls.push({ level, line, fields })
  return { logger: { info: keep('info'), warn: keep('warn'), error: keep('error') }, calls }
}

test('a refused WebRTC offer is logged with its fields; one viewer\'s repeats are limited, others pass', async (t) => {
  const { logger, calls } = recordingLogger()
  const srv = await startServer({ getToolset: () => new FakeToolset(), webrtc: true, logger })
  t.after(() => srv.close())
  const noisy = new Viewer(srv.url('log-agent', '?threadId=t-9'), { extended: true })
  const other = new Viewer(srv.url('log-agent', '?threadId=t-9'), { extended: true })
  t.after(() => Promise.all([noisy.close(), other.close()]))
  await Promise.all([noisy.untilMeta(), other.untilMeta()])
  const offerLines = () => calls.filter((c) => /WebRTC offer of viewer/.test(c.line))

  noisy.send({ type: 'webrtc-offer', sdp: GARBAGE_SDP })
  await noisy.waitJson((m) => m.error === 'bad_sdp', { what: 'bad_sdp' })
  await waitFor(() => offerLines().length === 1, { what: 'the line logged' })
  const [first] = offerLines()
  assert.equal(first.level, 'warn')
  assert.match(first.line, /^\[browser-stream\] WebRTC offer of viewer \d+ on channel log-agent:t-9 refused: /)
  assert.deepEqual(
    { agent: first.fields.agent, thread: first.fields.thread, viewer: first.fields.viewer, reason: first.fields.reason },
    { agent: 'log-agent', thread: 't-9', viewer: String(noisy.viewerId), reason: 'bad_sdp' },
  )

  // Six more from the same viewer (each answered: 7 offers of 20 tokens are within the 200 of
  // its burst): five lines in all for it this window.
  for (let i = 0; i < 6; i += 1) noisy.send({ type: 'webrtc-offer', sdp: GARBAGE_SDP })
  await waitFor(() => noisy.errors('bad_sdp').length === 7, { what: 'seven answers' })
  // Another viewer's line still passes, after all of the noisy one's were handled.
  other.send({ type: 'webrtc-offer', sdp: GARBAGE_SDP })
  await waitFor(() => offerLines().some((c) => c.fields.viewer === String(other.viewerId)), { what: "the other viewer's line" })
  const noisyLines = offerLines().filter((c) => c.fields.viewer === String(noisy.viewerId))
  assert.equal(noisyLines.length, 5, 'one viewer logs at most 5 such lines per 10 s')
})

test('a source error is logged with the agent and the code; credentials in it are blanked', async (t) => {
  const { logger, calls } = recordingLogger()
  const srv = await startServer({
    logger,
    getToolset: () => {
      throw new Error('toolset down (see https://internal.example/status?apiKey=sk-live-123)')
    },
  })
  t.after(() => srv.close())
  const viewer = new Viewer(srv.url('failing-agent'), { extended: true })
  t.after(() => viewer.close())
  await viewer.waitJson((m) => m.error === 'screencast_failed', { what: 'screencast_failed', timeout: 15_000 })
  const line = await waitFor(() => calls.find((c) => c.fields?.reason === 'screencast_failed'), { what: 'the structured line' })
  assert.equal(line.level, 'warn')
  assert.equal(line.fields.agent, 'failing-agent')
  assert.equal(line.fields.thread, undefined, 'no thread field for a channel without one')
  for (const call of calls) {
    assert.doesNotMatch(call.line, /sk-live-123/)
    for (const value of Object.values(call.fields ?? {})) assert.doesNotMatch(value, /sk-live-123/)
  }
})

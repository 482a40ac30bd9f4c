'use strict'
// Bad input from peers, each with its documented answer while another viewer keeps streaming:
// a 10 MB message (1009), bytes that are not WebSocket frames (1002), text that is not UTF-8
// (1007), huge and path-tricking agent ids (HTTP 400/431 before any upgrade), and a flood of
// compat input (rate limited silently). Extended-mode message errors are in extended.test.js.

const test = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const crypto = require('node:crypto')
const { startServer, FakeToolset, Viewer, waitFor, sleep, openRawWebSocket } = require('./support')

/** A viewer on another agent that must keep getting every frame while the bad input goes on. */
async function bystander(srv, toolsets) {
  const viewer = new Viewer(srv.url('bystander'), { keepFrames: false })
  await viewer.opened
  await viewer.untilStreaming()
  let seq = 0
  const timer = setInterval(() => toolsets.get('bystander').emitFrame(++seq), 20)
  return {
    viewer,
    /** Stops its frames (also when a test failed before `check`: the timer would keep the process alive). */
    stop() {
      clearInterval(timer)
    },
    async check() {
      await waitFor(() => seq >= 10, { what: 'some frames for the bystander' })
      clearInterval(timer)
      // Latest frame wins: it may skip under load, but it keeps streaming to the last frame.
      await waitFor(() => viewer.frameSeqs.at(-1) === seq, { what: `bystander reached frame ${seq}`, timeout: 10_000 })
      assert.equal(viewer.closeCode, null)
    },
  }
}

async function setup(t, config = {}) {
  const toolsets = new Map()
  const srv = await startServer({
    getToolset: (agentId) => {
      if (!toolsets.has(agentId)) toolsets.set(agentId, new FakeToolset())
      return toolsets.get(agentId)
    },
    ...config,
  })
  t.after(() => srv.close())
  const other = await bystander(srv, toolsets)
  t.after(() => other.stop())
  return { srv, toolsets, other }
}

/** A raw socket that completed the WebSocket handshake for `agentId`; records what it reads. */
async function rawSocket(port, agentId) {
  const { socket, head } = await openRawWebSocket(port, agentId)
  const chunks = [head]
  let ended = false
  socket.on('data', (chunk) => chunks.push(chunk))
  socket.on('close', () => (ended = true))
  return {
    socket,
    ended: () => ended,
    /** The close code of the server's close frame, if one arrived. */
    closeCode() {
      const data = Buffer.concat(chunks)
      const body = data.subarray(data.indexOf('\r\n\r\n') + 4)
      // Walk the server's (unmasked) frames to the close frame.
      for (let at = 0; at + 2 <= body.length; ) {
        const opcode = body[at] & 0x0f
        let len = body[at + 1] & 0x7f
        let head = 2
        if (len === 126) [len, head] = [body.readUInt16BE(at + 2), 4]
        else if (len === 127) [len, head] = [Number(body.readBigUInt64BE(at + 2)), 10]
        if (opcode === 0x8) return body.readUInt16BE(at + head)
        at += head + len
      }
      return null
    },
  }
}

/** The HTTP answer to a WebSocket upgrade request for `path`, sent as it is (no URL normalization). */
function upgradeAnswer(port, path) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port,
      path,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Key': crypto.randomBytes(16).toString('base64'),
        'Sec-WebSocket-Version': '13',
      },
    })
    req.on('upgrade', (res, socket) => {
      socket.destroy()
      resolve({ status: 101 })
    })
    req.on('response', (res) => {
      let body = ''
      res.on('data', (d) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

test('a 10 MB message closes only its sender with 1009, in both modes', async (t) => {
  const { srv, other } = await setup(t)
  const compat = new Viewer(srv.url('big-sender'))
  const extended = new Viewer(srv.url('big-sender'), { extended: true })
  await Promise.all([compat.opened, extended.opened])
  const huge = 'x'.repeat(10 * 1024 * 1024)
  compat.send(huge)
  extended.ws.send(huge)
  await waitFor(() => compat.closeCode !== null && extended.closeCode !== null, { what: 'both closed' })
  assert.equal(compat.closeCode, 1009)
  assert.equal(extended.closeCode, 1009)
  await other.check()
})

/** `length` bytes of a xorshift32 generator from `seed`: noise that is the same on every run. */
function noise(length, seed) {
  const bytes = Buffer.alloc(length)
  let x = seed >>> 0
  for (let i = 0; i < length; i++) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    bytes[i] = x & 0xff
  }
  return bytes
}
/** What the server answers `noise(4096, 0x5eed)` with. */
const NOISE_CLOSE_CODE = 1002

test('bytes that are not WebSocket frames close with 1002; invalid UTF-8 with 1007', async (t) => {
  const { srv, other } = await setup(t)
  // An unmasked client frame (protocol error), then garbage.
  const unmasked = await rawSocket(srv.port, 'garbage-agent')
  unmasked.socket.write(Buffer.from([0x81, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f]))
  // A reserved opcode, masked.
  const reserved = await rawSocket(srv.port, 'garbage-agent')
  reserved.socket.write(Buffer.from([0x83, 0x80, 1, 2, 3, 4]))
  // Noise: the same bytes on every run (a seeded generator), so the close code is known.
  const random = await rawSocket(srv.port, 'garbage-agent')
  random.socket.write(noise(4096, 0x5eed))
  // A masked text frame whose payload is not UTF-8.
  const latin = await rawSocket(srv.port, 'garbage-agent')
  const mask = Buffer.from([9, 8, 7, 6])
  const payload = Buffer.from([0xc3, 0x28, 0xff, 0xfe])
  latin.socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload.map((b, i) => b ^ mask[i % 4])]))
  for (const raw of [unmasked, reserved, random, latin]) await waitFor(() => raw.ended(), { what: 'garbage socket closed' })
  assert.equal(unmasked.closeCode(), 1002)
  assert.equal(reserved.closeCode(), 1002)
  assert.equal(random.closeCode(), NOISE_CLOSE_CODE, 'noise bytes')
  assert.equal(latin.closeCode(), 1007)
  await waitFor(() => srv.registry.getViewerCount('garbage-agent') === 0, { what: 'garbage viewers released' })
  await other.check()
})

test('huge agent ids and ids with control characters are refused before the upgrade; other ids are opaque', async (t) => {
  const { srv, other, toolsets } = await setup(t)
  const refused = [
    ['x'.repeat(300), 400],
    ['x'.repeat(20_000), 431],
    // URL parsing turns %2e%2e into `..` (the app's router then answers: not this route).
    ['%2e%2e', 404],
    ['a%00b', 400],
    ['a%0Ab', 400],
    ['a%7Fb', 400],
  ]
  for (const [id, status] of refused) {
    const answer = await upgradeAnswer(srv.port, `/browser/${id}/stream`)
    assert.equal(answer.status, status, `${id.slice(0, 40)}: ${JSON.stringify(answer).slice(0, 300)}`)
    if (status === 400) assert.equal(JSON.parse(answer.body).error, 'bad_request')
  }
  // Ids are opaque strings, as in Mastra: path tricks and ':' are ids of their own and never
  // reach another agent's channel (the key keeps them apart by structure).
  for (const id of ['..%2Fbystander', 'a%2Fb', 'a%5Cb', 'bystander%3Aevil']) {
    const viewer = new Viewer(srv.url(id))
    await viewer.opened
    await viewer.untilStreaming()
    await viewer.close()
  }
  assert.deepEqual([...toolsets.keys()].sort(), ['../bystander', 'a/b', 'a\\b', 'bystander', 'bystander:evil'])
  assert.ok(
    srv.registry.stats().channels.every((c) => c.key === 'bystander' || c.agentId !== 'bystander'),
    'no other id landed in the bystander channel',
  )
  await other.check()
})

test('a flood of compat input is rate limited silently; the page gets a bounded amount', async (t) => {
  const { srv, other, toolsets } = await setup(t, { maxInputsPerSecond: 50 })
  const flooder = new Viewer(srv.url('flood-agent'))
  await flooder.opened
  await flooder.untilStreaming()
  const floodStart = Date.now()
  for (let i = 0; i < 5000; i++) flooder.send({ type: 'keyboard', eventType: 'char', text: 'x' })
  await waitFor(() => srv.registry.stats().channels.find((c) => c.key === 'flood-agent')?.inputsRateLimited > 4000, {
    what: 'flood counted',
  })
  await sleep(200)
  const toolset = toolsets.get('flood-agent')
  // The bucket: 50 at once, then 50 per second for as long as the flood took to arrive.
  const allowed = 50 + (50 * (Date.now() - floodStart)) / 1000
  assert.ok(toolset.keys.length <= allowed + 1, `relayed ${toolset.keys.length}, allowed ${allowed}`)
  assert.ok(toolset.keys.length >= 40, `relayed ${toolset.keys.length}`)
  // Compat mode answers nothing and keeps the connection.
  assert.equal(flooder.json.filter((m) => m.error).length, 0)
  assert.equal(flooder.closeCode, null)
  await other.check()
})

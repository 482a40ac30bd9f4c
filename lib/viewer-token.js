'use strict'
// Scoped viewer links: the signed tokens `registry.createViewerToken` makes and the stream
// route's gate accepts as `?token=`. Owns the token format (`bsv1.<payload>.<signature>`, the
// payload base64url JSON, the signature an HMAC-SHA256 of `bsv1.<payload>`), the key, checking
// a token against a channel, the refusals of a token (fixed texts, never quoting it) and the
// memory of single-use tokens already admitted. Must not read requests, answer HTTP or log:
// the gate and the stream route (gate.js, routes.js) do, and never with the token.

const { createHmac, randomBytes, timingSafeEqual } = require('node:crypto')
const { channelKey } = require('./native')

const PREFIX = 'bsv1'
/** A viewer token inside a text, for the redaction of log lines (log.js). */
const VIEWER_TOKEN_TEXT = /\bbsv1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g
/** Shortest key: 32 bytes, an HMAC-SHA256 key of full strength. */
const MIN_SECRET_BYTES = 32
/** Lifetimes a link may have: long enough to open it, short enough that a leaked link is soon worthless. */
const MIN_TTL_MS = 1000
const MAX_TTL_MS = 86_400_000
const DEFAULT_TTL_MS = 300_000
/** Longest token checked: ids of 256 bytes each fit with room to spare; longer is no token of ours. */
const MAX_TOKEN_CHARS = 4096
/** Single-use tokens remembered at most (about 100 bytes each); past that, new ones are refused 503. */
const MAX_SINGLE_USE = 100_000
const BASE64URL = /^[A-Za-z0-9_-]+$/
const OPTION_NAMES = new Set(['agentId', 'threadId', 'canControl', 'ttlMs', 'once'])

/** The refusals of a token: status, code and a fixed text (the token is never quoted). */
const refusal = (status, error, message) => Object.freeze({ status, error, message })
const REFUSALS = Object.freeze({
  // Malformed and badly signed alike: which one would tell a forger how far they got.
  invalid: refusal(401, 'token_invalid', 'the viewer link is not valid'),
  expired: refusal(401, 'token_expired', 'the viewer link has expired'),
  wrongChannel: refusal(401, 'token_wrong_channel', 'the viewer link is for another agent or thread'),
  reused: refusal(401, 'token_reused', 'the single-use viewer link was already used'),
  full: refusal(503, 'over_capacity', 'too many single-use viewer links are in use; try again later'),
})

/** The key bytes of a `viewerTokenSecret`, or a random key when none is given. */
function keyOf(secret) {
  if (secret === undefined) return randomBytes(MIN_SECRET_BYTES)
  if (typeof secret === 'string') {
    if (secret.length >= MIN_SECRET_BYTES) return Buffer.from(secret, 'utf8')
  } else if (secret instanceof Uint8Array) {
    // A copy: the caller's buffer may be reused or zeroed later.
    if (secret.byteLength >= MIN_SECRET_BYTES) return Buffer.from(secret)
  }
  const min = MIN_SECRET_BYTES
  throw new TypeError(`ViewerRegistry option viewerTokenSecret must be a string of at least ${min} characters or at least ${min} bytes`)
}

/** The options of `createViewerToken`, checked, with the defaults filled in. */
function tokenOptions(options) {
  const fail = (text) => {
    throw new TypeError(`createViewerToken: ${text}`)
  }
  if (options === null || typeof options !== 'object' || Array.isArray(options)) fail('options must be an object')
  // A misspelled field (`threadID`, `ttl`) must not silently widen the link.
  for (const name of Object.keys(options)) if (!OPTION_NAMES.has(name)) fail(`unknown option ${name}`)
  const { agentId, threadId = undefined, canControl = false, ttlMs = DEFAULT_TTL_MS, once = false } = options
  if (typeof agentId !== 'string' || agentId === '') fail('agentId must be a non-empty string')
  if (threadId !== undefined && threadId !== null && (typeof threadId !== 'string' || threadId === '')) {
    fail('threadId must be a non-empty string when given')
  }
  if (typeof canControl !== 'boolean') fail('canControl must be a boolean')
  if (!Number.isInteger(ttlMs) || ttlMs < MIN_TTL_MS || ttlMs > MAX_TTL_MS) {
    fail(`ttlMs must be an integer from ${MIN_TTL_MS} to ${MAX_TTL_MS}`)
  }
  if (typeof once !== 'boolean') fail('once must be a boolean')
  const thread = threadId ?? undefined
  try {
    // The id rules are the native registry's, as for every other id.
    channelKey(agentId, thread)
  } catch (err) {
    fail(err.message)
  }
  return { agentId, threadId: thread, canControl, ttlMs, once }
}

/** The payload of a signed token, or null when it is not one this format writes. */
function parsePayload(text) {
  let payload
  try {
    payload = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'))
  } catch {
    return null
  }
  if (payload === null || typeof payload !== 'object') return null
  const { a, t, c, e, n, o } = payload
  const ok =
    typeof a === 'string' &&
    (t === null || typeof t === 'string') &&
    typeof c === 'boolean' &&
    Number.isInteger(e) &&
    typeof n === 'string' &&
    typeof o === 'boolean'
  return ok ? payload : null
}

/** The viewer tokens of one registry: its key and its memory of single-use tokens admitted. */
class ViewerTokens {
  #key
  #maxSingleUse
  /** nonce → expiry (ms since epoch) of every single-use token admitted and not yet expired */
  #used = new Map()

  /**
   * @param {string | Uint8Array} [secret] the deployer's key; without it a random one (tokens then work on this registry only)
   * @param {{ maxSingleUse?: number }} [limits] for tests
   */
  constructor(secret, { maxSingleUse = MAX_SINGLE_USE } = {}) {
    this.#key = keyOf(secret)
    this.#maxSingleUse = maxSingleUse
  }

  #sign(payloadText) {
    return createHmac('sha256', this.#key).update(`${PREFIX}.${payloadText}`).digest('base64url')
  }

  /**
   * A token admitting the channel of `agentId` (and `threadId`), with control or view-only,
   * until `ttlMs` from now; `once` admits it a single time.
   */
  create(options) {
    const { agentId, threadId, canControl, ttlMs, once } = tokenOptions(options)
    const nonce = randomBytes(16).toString('base64url')
    const payload = { a: agentId, t: threadId ?? null, c: canControl, e: Date.now() + ttlMs, n: nonce, o: once }
    const payloadText = Buffer.from(JSON.stringify(payload), 'utf8').toString('base64url')
    return `${PREFIX}.${payloadText}.${this.#sign(payloadText)}`
  }

  /**
   * Checks `token` for the channel of `agentId` (and `threadId`, undefined for none): `{ refusal }`
   * (one of REFUSALS), or `{ canControl, consume }` where `consume()` marks a single-use token
   * used, answering a refusal when it already was (or the memory is full), else null.
   */
  check(token, agentId, threadId) {
    const payload = this.#verified(token)
    if (!payload) return { refusal: REFUSALS.invalid }
    if (Date.now() >= payload.e) return { refusal: REFUSALS.expired }
    if (payload.a !== agentId || (payload.t ?? undefined) !== threadId) return { refusal: REFUSALS.wrongChannel }
    if (payload.o && this.#used.has(payload.n)) return { refusal: REFUSALS.reused }
    return { canControl: payload.c, consume: () => (payload.o ? this.#consume(payload.n, payload.e) : null) }
  }

  /** The payload of `token` when it is well formed and signed with this key, else null. */
  #verified(token) {
    if (typeof token !== 'string' || token.length > MAX_TOKEN_CHARS) return null
    const parts = token.split('.')
    if (parts.length !== 3 || parts[0] !== PREFIX || !BASE64URL.test(parts[1]) || !BASE64URL.test(parts[2])) return null
    // The signature's text is compared, not its decoded bytes: base64url's spare bits would
    // let a changed last character decode to the same bytes.
    const expected = Buffer.from(this.#sign(parts[1]), 'latin1')
    const given = Buffer.from(parts[2], 'latin1')
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null
    return parsePayload(parts[1])
  }

  #consume(nonce, expiry) {
    if (this.#used.has(nonce)) return REFUSALS.reused
    this.#forgetExpired()
    if (this.#used.size >= this.#maxSingleUse) return REFUSALS.full
    this.#used.set(nonce, expiry)
    return null
  }

  /**
   * Drops remembered tokens that expired (an expired token is refused by its expiry anyway).
   * Oldest first: entries mostly expire in the order they came, so the sweep stops at the
   * first live one; only a full memory is swept whole.
   */
  #forgetExpired() {
    const now = Date.now()
    const full = this.#used.size >= this.#maxSingleUse
    for (const [nonce, expiry] of this.#used) {
      if (expiry <= now) this.#used.delete(nonce)
      else if (!full) break
    }
  }
}

module.exports = { ViewerTokens, VIEWER_TOKEN_TEXT, REFUSALS }

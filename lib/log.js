'use strict'
// Logging: the deployer's logger as this package calls it, and the redaction of credentials
// from log lines. Owns what counts as a credential of a request (query parameters such as
// `apiKey`, the `Authorization` header, cookie values, a viewer link's token) and how it is
// blanked, for a Node request or a Hono context. Must not decide what is logged (its callers do).

const { VIEWER_TOKEN_TEXT } = require('./viewer-token')

/** Query parameters whose values are credentials. */
const SECRET_PARAM_NAMES = ['apiKey', 'api_key', 'token', 'access_token', 'auth']
const SECRET_PARAM = new RegExp(`^(${SECRET_PARAM_NAMES.join('|')})$`, 'i')
/** Such a parameter inside a text (a URL quoted in an error). */
const SECRET_PARAMS = new RegExp(`([?&;](?:${SECRET_PARAM_NAMES.join('|')})=)[^&#\\s"'<>]*`, 'gi')
/** A bearer credential quoted in a text. */
const BEARER = /(\bBearer\s+)[^\s"',;]+/gi

/**
 * The credentials a request carries: `?apiKey=` (and the like), the `Authorization` header
 * (whole and without its scheme) and the cookie values.
 */
function requestSecrets(url, headers) {
  const secrets = []
  try {
    const params = new URL(url, 'http://localhost').searchParams
    for (const [name, value] of params) if (SECRET_PARAM.test(name) && value) secrets.push(value)
  } catch {
    // An unparsable URL is redacted by pattern below.
  }
  const authorization = headers.authorization
  if (typeof authorization === 'string' && authorization) {
    secrets.push(authorization)
    const credential = authorization.replace(/^\S+\s+/, '').trim()
    if (credential) secrets.push(credential)
  }
  const cookie = headers.cookie
  if (typeof cookie === 'string') {
    // Repeated Cookie headers arrive joined with ', '. Values under 4 characters are left:
    // blanking them everywhere would garble the line, and no session token is that short.
    for (const part of cookie.split(/[;,]/)) {
      const value = part.slice(part.indexOf('=') + 1).trim()
      if (value.length >= 4) secrets.push(value)
    }
  }
  return secrets
}

/**
 * `text` with every credential in `secrets` replaced, plain or URL-encoded, and credentials
 * in the usual places (`?apiKey=…`, `Bearer …`) and viewer link tokens blanked even when not known.
 */
function redact(text, secrets = []) {
  let out = String(text)
  for (const secret of secrets) {
    if (!secret) continue
    for (const form of new Set([secret, encodeURIComponent(secret), encodeURI(secret)])) out = out.split(form).join('[redacted]')
  }
  return out.replace(SECRET_PARAMS, '$1[redacted]').replace(BEARER, '$1[redacted]').replace(VIEWER_TOKEN_TEXT, 'bsv1.[redacted]')
}

/**
 * The deployer's `logger` ({ info, warn, error }, any of them; methods of a class instance
 * work too) with the defaults filled in: info is quiet, warnings and errors go to the console.
 * A logger that throws never disturbs the caller.
 */
function createLogger(logger) {
  const defaults = { info() {}, warn: (...args) => console.warn(...args), error: (...args) => console.error(...args) }
  const out = {}
  for (const level of ['info', 'warn', 'error']) {
    const own = logger?.[level]
    const call = typeof own === 'function' ? own.bind(logger) : defaults[level]
    out[level] = (...args) => {
      try {
        call(...args)
      } catch {
        // A broken logger must not take a stream down.
      }
    }
  }
  return out
}

/** `log` whose warn and error lines are redacted with the credentials in `secrets`. */
function redactingLogger(log, secrets) {
  return { warn: (text) => log.warn(redact(text, secrets)), error: (text) => log.error(redact(text, secrets)) }
}

/** `log` for lines built from the Hono context `c`: its request's credentials never reach the log. */
function contextLogger(log, c) {
  return redactingLogger(log, requestSecrets(c.req.url, Object.fromEntries(c.req.raw.headers)))
}

module.exports = { createLogger, redact, redactingLogger, requestSecrets, contextLogger }

'use strict'
// HTTP answers of the routes and the upgrade: the JSON refusal `{ error, message }` (the one
// shape of this package's refusals, answered through Hono or written raw on an upgrade's
// socket) and writing a Fetch `Response` on a raw socket. Must not decide who is refused (the
// gate, the routes and the upgrade do), nor touch viewers or sources.

const { STATUS_CODES } = require('node:http')

/** The body of a refusal. */
function errorBody(error, message) {
  return { error, message }
}

/** A refusal answered through Hono. */
function jsonError(c, status, error, message) {
  return c.json(errorBody(error, message), status)
}

/** Writes a Fetch `Response` as a raw HTTP/1.1 response on a socket and ends it. */
async function writeHttpResponse(socket, response) {
  let body = Buffer.alloc(0)
  try {
    body = Buffer.from(await response.arrayBuffer())
  } catch {
    // An unreadable body still gets its status line.
  }
  if (socket.destroyed) return
  const status = response.status
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`
  for (const [name, value] of response.headers) {
    if (/^(content-length|connection|transfer-encoding|keep-alive)$/i.test(name)) continue
    head += `${name}: ${value}\r\n`
  }
  head += `Connection: close\r\nContent-Length: ${body.length}\r\n\r\n`
  socket.end(Buffer.concat([Buffer.from(head, 'latin1'), body]))
}

/** A refusal written raw on an upgrade's socket, which it ends. */
function rejectUpgrade(socket, status, error, message, extraHeaders = {}) {
  const response = new Response(JSON.stringify(errorBody(error, message)), {
    status,
    headers: { 'content-type': 'application/json', ...extraHeaders },
  })
  return writeHttpResponse(socket, response)
}

module.exports = { jsonError, writeHttpResponse, rejectUpgrade }

'use strict'
// A local web site for the browser tests: fixed pages by path on a loopback port, for a real
// Chromium to open.

const http = require('node:http')

/**
 * Serves `pages` (path → HTML) on a free loopback port; other paths are 404. `close()` also
 * drops Chromium's keep-alive connections, so it does not wait for them to time out.
 * @param {Record<string, string>} pages
 */
async function startSite(pages) {
  const server = http.createServer((req, res) => {
    const body = pages[req.url.split('?')[0]]
    res.writeHead(body ? 200 : 404, { 'content-type': 'text/html' })
    res.end(body ?? 'not found')
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const base = `http://127.0.0.1:${server.address().port}`
  return {
    url: (p) => `${base}${p}`,
    close() {
      server.closeAllConnections()
      return new Promise((resolve) => server.close(resolve))
    },
  }
}

module.exports = { startSite }

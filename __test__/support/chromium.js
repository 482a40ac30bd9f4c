'use strict'
// Launches a local headless Chromium with remote debugging for the tests and the demo
// (examples/demo.js loads it from here: the one copy), and reports its DevTools endpoint. Not
// part of the package API: an agent platform launches its browsers itself and gives the
// endpoint through `getCdpEndpoint`.

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

/** The Chromium to use: `CHROME_PATH`, else Debian's `/usr/bin/chromium`; null if missing. */
function findChromium() {
  const candidates = [process.env.CHROME_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter(Boolean)
  return candidates.find((file) => {
    try {
      fs.accessSync(file, fs.constants.X_OK)
      return true
    } catch {
      return false
    }
  }) ?? null
}

const INSTALL_HINT =
  'Chromium was not found. Install it (Debian/Ubuntu: sudo apt-get install chromium) or set CHROME_PATH to a Chrome or Chromium binary.'

/**
 * Starts Chromium on `url` and resolves once its DevTools endpoint is known.
 * @returns {Promise<{ endpoint: string, port: number, process: import('node:child_process').ChildProcess, close(): Promise<void> }>}
 */
async function launchChromium({ url = 'about:blank', width = 1280, height = 720, executablePath = findChromium(), args = [], timeoutMs = 30_000 } = {}) {
  if (!executablePath) throw new Error(INSTALL_HINT)
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bsn-chromium-'))
  const flags = [
    '--headless',
    '--disable-gpu',
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-quic',
    '--disable-features=Translate,MediaRouter',
    '--hide-scrollbars',
    '--mute-audio',
    `--window-size=${width},${height}`,
    '--remote-debugging-address=127.0.0.1',
    '--remote-debugging-port=0',
    `--user-data-dir=${userDataDir}`,
    ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
    ...args,
    url,
  ]
  const child = spawn(executablePath, flags, { stdio: ['ignore', 'ignore', 'pipe'] })
  // Chromium's helper processes may still write into the profile for a moment after the main
  // process is gone: retry, and never let a leftover temp folder throw.
  const cleanup = () => {
    try {
      fs.rmSync(userDataDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 })
    } catch {
      // left for the OS's temp cleanup
    }
  }
  let stderr = ''
  const endpoint = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`Chromium did not report its DevTools endpoint within ${timeoutMs} ms:\n${stderr.slice(-2000)}`))
    }, timeoutMs)
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (chunk) => {
      stderr += chunk
      const match = /DevTools listening on (ws:\/\/\S+)/.exec(stderr)
      if (match) {
        clearTimeout(timer)
        resolve(match[1])
      }
    })
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`Chromium exited (${code ?? signal}) before listening:\n${stderr.slice(-2000)}`))
    })
    child.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
  }).catch((err) => {
    cleanup()
    throw err
  })
  // Keep draining stderr so Chromium never blocks on a full pipe.
  child.stderr.resume()
  child.once('exit', cleanup)
  return {
    endpoint,
    port: Number(new URL(endpoint).port),
    process: child,
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
      await exited
      clearTimeout(timer)
    },
  }
}

module.exports = { launchChromium, findChromium, INSTALL_HINT }

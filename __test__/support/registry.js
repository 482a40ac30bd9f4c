'use strict'
// A real npm registry on loopback for the packaging tests: Verdaccio with no uplinks (nothing
// reaches the public registry), storage in a temporary folder, and one user whose token the
// test's .npmrc carries. Also the shell of a package-manager run: a PATH without Rust, with a
// `cargo`/`rustc` shim that records every call, so a test can assert that nothing compiled.

const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const { freePort } = require('./ports')
const path = require('node:path')
const { waitFor } = require('./wait')

const root = path.join(__dirname, '..', '..')

async function ping(url) {
  try {
    return (await fetch(`${url}-/ping`)).ok
  } catch {
    return false
  }
}

/** Starts Verdaccio in `dir`; returns { url, npmrc, stop() }. `npmrc` holds the registry and a token. */
async function startRegistry(dir) {
  fs.mkdirSync(dir, { recursive: true })
  const config = path.join(dir, 'config.yaml')
  fs.writeFileSync(
    config,
    [
      'storage: ./storage',
      'auth:',
      '  htpasswd:',
      '    file: ./htpasswd',
      '    max_users: 1',
      'uplinks: {}',
      'packages:',
      "  '**':",
      '    access: $all',
      '    publish: $authenticated',
      'log: { type: stdout, format: json, level: warn }',
      '',
    ].join('\n'),
  )
  const port = await freePort()
  const url = `http://127.0.0.1:${port}/`
  const bin = path.join(root, 'node_modules', 'verdaccio', 'bin', 'verdaccio')
  const child = spawn(process.execPath, [bin, '--config', config, '--listen', `127.0.0.1:${port}`], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout.on('data', (chunk) => (output += chunk))
  child.stderr.on('data', (chunk) => (output += chunk))
  const exited = new Promise((resolve) => child.once('exit', resolve))
  let token
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`verdaccio exited: ${output}`)
        return ping(url)
      },
      { timeout: 60_000, what: 'verdaccio answering /-/ping' },
    )
    const user = await fetch(`${url}-/user/org.couchdb.user:tester`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'tester', password: 'local-only-test-password' }),
    })
    token = (await user.json()).token
    if (!token) throw new Error(`verdaccio gave no token (HTTP ${user.status})`)
  } catch (error) {
    child.kill()
    await exited
    throw error
  }
  const npmrc = path.join(dir, '.npmrc')
  fs.writeFileSync(npmrc, `registry=${url}\n//127.0.0.1:${port}/:_authToken=${token}\n`)
  return {
    url,
    npmrc,
    output: () => output,
    async stop() {
      child.kill()
      await exited
    },
  }
}

/**
 * A PATH for package-manager runs with no Rust on it: every folder holding `cargo` or `rustc`
 * is left out, and a shim folder first answers both by logging the call to `log` and failing.
 */
function pathWithoutRust(shimDir, log) {
  fs.mkdirSync(shimDir, { recursive: true })
  for (const tool of ['cargo', 'rustc']) {
    const shim = path.join(shimDir, tool)
    fs.writeFileSync(shim, `#!/bin/sh\necho "${tool} $*" >> '${log}'\nexit 127\n`)
    fs.chmodSync(shim, 0o755)
  }
  const has = (dir, tool) => fs.existsSync(path.join(dir, tool))
  const kept = (process.env.PATH ?? '').split(path.delimiter).filter((dir) => dir && !has(dir, 'cargo') && !has(dir, 'rustc'))
  if (!kept.some((dir) => has(dir, 'node'))) kept.push(path.dirname(process.execPath))
  return [shimDir, ...kept].join(path.delimiter)
}

/** Runs a command to completion; returns { status, stdout, stderr, ms }. Never throws on exit status. */
function runCommand(command, args, { cwd, env, timeout = 300_000 } = {}) {
  const started = process.hrtime.bigint()
  const result = spawnSync(command, args, { cwd, env, encoding: 'utf8', timeout, maxBuffer: 64 * 1024 * 1024 })
  const ms = Number(process.hrtime.bigint() - started) / 1e6
  if (result.error) throw result.error
  return { status: result.status, stdout: result.stdout, stderr: result.stderr, ms }
}

module.exports = { startRegistry, pathWithoutRust, runCommand }

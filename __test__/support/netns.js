'use strict'
// A second host for tests: a network namespace joined to this one by a veth pair (as root,
// with iproute2). A program run inside it (`command`) reaches this host at `hostIp` only; this
// host's loopback addresses are not its loopback. Cleaned up by `close()`. The benchmark of a
// constrained link (bench/video-link.js) shapes the same pair with tc.

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

function sh(args, { quiet = false } = {}) {
  const result = spawnSync(args[0], args.slice(1), { encoding: 'utf8' })
  if (result.status !== 0 && !quiet) throw new Error(`${args.join(' ')}: ${(result.stderr || result.stdout || '').trim()}`)
  return result
}

/** Why a namespace cannot be made here, or null. */
function namespaceUnavailable() {
  if (process.getuid?.() !== 0) return 'needs root for ip netns'
  if (spawnSync('ip', ['netns', 'list']).status !== 0) return 'ip netns missing (iproute2)'
  return null
}

/**
 * Makes the namespace. `subnet` is the third octet of 10.214.X.0/30 (distinct per caller, so
 * parallel users do not collide).
 */
function createNamespace(subnet = process.pid % 250) {
  const id = `${process.pid % 100000}${subnet}`
  const ns = `bsn-test-${id}`
  const hostIf = `bsth${id}`.slice(0, 15)
  const nsIf = `bstv${id}`.slice(0, 15)
  const hostIp = `10.214.${subnet}.1`
  const nsIp = `10.214.${subnet}.2`
  sh(['ip', 'netns', 'add', ns])
  try {
    sh(['ip', 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf])
    sh(['ip', 'link', 'set', nsIf, 'netns', ns])
    sh(['ip', 'addr', 'add', `${hostIp}/30`, 'dev', hostIf])
    sh(['ip', 'link', 'set', hostIf, 'up'])
    sh(['ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `${nsIp}/30`, 'dev', nsIf])
    sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', nsIf, 'up'])
    sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up'])
  } catch (err) {
    sh(['ip', 'link', 'del', hostIf], { quiet: true })
    sh(['ip', 'netns', 'del', ns], { quiet: true })
    throw err
  }
  let wrapperDir = null
  return {
    ns,
    hostIp,
    nsIp,
    /** The veth ends: this host's and the namespace's. */
    hostIf,
    nsIf,
    /** The argv prefix that runs a command inside. */
    command: ['ip', 'netns', 'exec', ns],
    /** An executable that runs `program` inside (for launchers that take one path). */
    wrap(program) {
      wrapperDir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'bsn-netns-'))
      const file = path.join(wrapperDir, path.basename(program))
      fs.writeFileSync(file, `#!/bin/sh\nexec ip netns exec ${ns} ${program} "$@"\n`, { mode: 0o755 })
      return file
    },
    close() {
      sh(['ip', 'link', 'del', hostIf], { quiet: true })
      sh(['ip', 'netns', 'del', ns], { quiet: true })
      if (wrapperDir) fs.rmSync(wrapperDir, { recursive: true, force: true })
    },
  }
}

module.exports = { createNamespace, namespaceUnavailable }

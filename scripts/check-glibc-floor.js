#!/usr/bin/env node
'use strict'
// The glibc floor of a Linux binary: the newest GLIBC_x.y symbol version its dynamic symbol
// table asks for (`objdump -T`; OBJDUMP names another objdump, e.g. for an arm64 binary).
// `check-glibc-floor.js <file.node> [floor]` prints it and exits 1 when it is above `floor`.
// Owns the floor the prebuilt linux-*-gnu binaries promise (GLIBC_FLOOR, as the napi-rs
// template targets); the release workflow's `.2.17` build targets spell it again in YAML.

const { spawnSync } = require('node:child_process')

const GLIBC_FLOOR = '2.17'

/** Whether glibc version `a` ([major, minor]) is newer than `b`. */
function newer(a, b) {
  return a[0] > b[0] || (a[0] === b[0] && a[1] > b[1])
}

/** The newest glibc version `file` needs, as [major, minor], or null when it needs none. */
function glibcFloor(file, objdump = process.env.OBJDUMP ?? 'objdump') {
  const dump = spawnSync(objdump, ['-T', file], { encoding: 'utf8' })
  if (dump.error) throw new Error(`cannot run ${objdump}: ${dump.error.message} (binutils provides it)`)
  if (dump.status !== 0) throw new Error(`${objdump} -T ${file} failed: ${dump.stderr.trim()}`)
  let newest = null
  for (const [, major, minor] of dump.stdout.matchAll(/\bGLIBC_(\d+)\.(\d+)/g)) {
    const version = [Number(major), Number(minor)]
    if (!newest || newer(version, newest)) newest = version
  }
  return newest
}

/** Whether `needed` (what glibcFloor found) is above `floor` ('x.y'). */
function aboveFloor(needed, floor = GLIBC_FLOOR) {
  return Boolean(needed) && newer(needed, floor.split('.').map(Number))
}

module.exports = { GLIBC_FLOOR, glibcFloor, aboveFloor }

if (require.main === module) {
  const [file, floor = GLIBC_FLOOR] = process.argv.slice(2)
  if (!file) {
    console.error('usage: check-glibc-floor.js <file.node> [floor]')
    process.exit(2)
  }
  const needed = glibcFloor(file)
  const found = needed ? needed.join('.') : 'none'
  console.log(`${file}: needs glibc ${found} (floor ${floor})`)
  if (aboveFloor(needed, floor)) {
    console.error(`${file} needs glibc ${found}, above the floor ${floor}`)
    process.exit(1)
  }
}

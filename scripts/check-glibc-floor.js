#!/usr/bin/env node
'use strict'
// The glibc floor of a Linux binary: the newest GLIBC_x.y symbol version its dynamic symbol
// table asks for (`objdump -T`; OBJDUMP names another objdump, e.g. for an arm64 binary).
// `check-glibc-floor.js <file.node> [floor]` prints it and exits 1 when it is above `floor`.
// The prebuilt linux-*-gnu binaries promise glibc 2.17, as the napi-rs template does.

const { spawnSync } = require('node:child_process')

/** The newest glibc version `file` needs, as [major, minor], or null when it needs none. */
function glibcFloor(file, objdump = process.env.OBJDUMP ?? 'objdump') {
  const dump = spawnSync(objdump, ['-T', file], { encoding: 'utf8' })
  if (dump.error) throw new Error(`cannot run ${objdump}: ${dump.error.message} (binutils provides it)`)
  if (dump.status !== 0) throw new Error(`${objdump} -T ${file} failed: ${dump.stderr.trim()}`)
  let newest = null
  for (const [, major, minor] of dump.stdout.matchAll(/\bGLIBC_(\d+)\.(\d+)/g)) {
    const version = [Number(major), Number(minor)]
    if (!newest || version[0] > newest[0] || (version[0] === newest[0] && version[1] > newest[1])) newest = version
  }
  return newest
}

module.exports = { glibcFloor }

if (require.main === module) {
  const [file, floor = '2.17'] = process.argv.slice(2)
  if (!file) {
    console.error('usage: check-glibc-floor.js <file.node> [floor]')
    process.exit(2)
  }
  const newest = glibcFloor(file)
  const [major, minor] = floor.split('.').map(Number)
  const found = newest ? newest.join('.') : 'none'
  const above = newest && (newest[0] > major || (newest[0] === major && newest[1] > minor))
  console.log(`${file}: needs glibc ${found} (floor ${floor})`)
  if (above) {
    console.error(`${file} needs glibc ${found}, above the floor ${floor}`)
    process.exit(1)
  }
}

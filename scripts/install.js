#!/usr/bin/env node
'use strict'
// npm install hook: use a prebuilt binary when one fits this platform, else build the addon
// from source with cargo (Rust ≥ 1.88) and put it where binding.js looks for it.
// BROWSER_STREAM_NATIVE_BUILD=1 forces the source build.

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')

/** The platform suffix binding.js looks for (napi-rs naming). */
function platformName() {
  const { platform, arch } = process
  if (platform === 'linux') {
    const glibc = process.report?.getReport?.().header?.glibcVersionRuntime
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  if (platform === 'darwin') return `darwin-${arch}`
  return `${platform}-${arch}`
}

function libraryFile() {
  if (process.platform === 'win32') return 'browser_stream_native.dll'
  if (process.platform === 'darwin') return 'libbrowser_stream_native.dylib'
  return 'libbrowser_stream_native.so'
}

function loads(file) {
  try {
    require(file)
    return true
  } catch {
    return false
  }
}

const name = platformName()
const target = path.join(root, `browser-stream-native.${name}.node`)
const force = process.env.BROWSER_STREAM_NATIVE_BUILD === '1' || process.argv.includes('--build')

if (!force) {
  if (fs.existsSync(target) && loads(target)) process.exit(0)
  try {
    require.resolve(`browser-stream-native-${name}`)
    process.exit(0)
  } catch {
    // No prebuilt package for this platform: build from source below.
  }
}

const cargo = process.env.CARGO ?? 'cargo'
if (spawnSync(cargo, ['--version'], { stdio: 'ignore' }).status !== 0) {
  console.error(
    `browser-stream-native: no prebuilt binary for ${name} and no Rust toolchain to build one.\n` +
      'Install Rust (https://rustup.rs, 1.88 or newer) and run npm install again.',
  )
  process.exit(1)
}

console.log(`browser-stream-native: building the native addon for ${name} with cargo (release)…`)
const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(root, 'target')
const lockfile = fs.existsSync(path.join(root, 'Cargo.lock')) ? ['--locked'] : []
const build = spawnSync(cargo, ['build', '--release', '--lib', ...lockfile], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, CARGO_TARGET_DIR: targetDir },
})
if (build.status !== 0) {
  console.error('browser-stream-native: cargo build failed (see above).')
  process.exit(build.status ?? 1)
}
fs.copyFileSync(path.join(targetDir, 'release', libraryFile()), target)
if (!loads(target)) {
  console.error(`browser-stream-native: built ${target} but Node cannot load it.`)
  process.exit(1)
}
// Installed as a dependency, the build tree is only weight in node_modules.
if (!process.env.CARGO_TARGET_DIR && root.split(path.sep).includes('node_modules')) {
  fs.rmSync(targetDir, { recursive: true, force: true })
}
console.log(`browser-stream-native: built ${path.basename(target)}`)

#!/usr/bin/env node
'use strict'
// The source build of the addon: `npx browser-stream-native build` where no prebuilt binary fits
// (or to replace it), and the checkout's `prepare` (`--if-missing`: only when no binary loads, or
// when BROWSER_STREAM_NATIVE_BUILD=1 forces it). Says why it builds and how long it takes, shows
// cargo's progress, says exactly what to install when Rust is missing, and leaves nothing
// half-built: the binary appears beside binding.js only once it loads, and a failed build removes
// the build tree it made. Owns nothing else: platform names and advice are lib/platform.js's.

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const platform = require('../lib/platform')

const root = platform.packageRoot
const FORCE_VARIABLE = 'BROWSER_STREAM_NATIVE_BUILD'
const USAGE = `usage: browser-stream-native build [--if-missing]

Builds the native addon from source with cargo (release) and puts it beside binding.js, where it
is loaded in preference to a prebuilt platform package.
  --if-missing   build only when no binary loads (${FORCE_VARIABLE}=1 builds anyway)`

function say(line) {
  console.error(`browser-stream-native: ${line}`)
}

/** Whether a binary loads in a fresh Node (so a failing load cannot poison this process). */
function binaryLoads() {
  const probe = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(path.join(root, 'binding.js'))})`], {
    stdio: 'ignore',
  })
  return probe.status === 0
}

/** The Rust version this crate needs: Cargo.toml's `rust-version`, its one owner. */
function requiredRust() {
  const manifest = fs.readFileSync(path.join(root, 'Cargo.toml'), 'utf8')
  return /^rust-version\s*=\s*"([^"]+)"/m.exec(manifest)?.[1] ?? '1.88'
}

function versionBelow(found, wanted) {
  const a = found.split('.').map(Number)
  const b = wanted.split('.').map(Number)
  for (let i = 0; i < b.length; i++) {
    if ((a[i] ?? 0) !== b[i]) return (a[i] ?? 0) < b[i]
  }
  return false
}

/** The Rust toolchain's version, or null when cargo or rustc cannot run. */
function rustVersion(cargo) {
  const found = spawnSync(cargo, ['--version'], { encoding: 'utf8' })
  if (found.status !== 0) return null
  const rustc = spawnSync(process.env.RUSTC ?? 'rustc', ['--version'], { encoding: 'utf8' })
  return /(\d+\.\d+\.\d+)/.exec(rustc.stdout ?? '')?.[1] ?? /(\d+\.\d+\.\d+)/.exec(found.stdout)?.[1] ?? '0.0.0'
}

function libraryFile() {
  if (process.platform === 'win32') return 'browser_stream_native.dll'
  if (process.platform === 'darwin') return 'libbrowser_stream_native.dylib'
  return 'libbrowser_stream_native.so'
}

function main(args) {
  if (args.includes('--help') || args.includes('-h')) {
    console.log(USAGE)
    return 0
  }
  if (args[0] !== 'build' || args.slice(1).some((arg) => arg !== '--if-missing')) {
    console.error(USAGE)
    return 2
  }
  const host = platform.hostPlatform()
  const forced = process.env[FORCE_VARIABLE] === '1'
  let reason
  if (!args.includes('--if-missing')) reason = '`build` was asked for'
  else if (forced) reason = `${FORCE_VARIABLE}=1 forces it`
  else if (binaryLoads()) return 0
  else if (!platform.prebuiltPlatforms().includes(host)) reason = `no prebuilt binary is published for ${host}`
  else if (platform.installedPlatformPackage(host)) reason = `the prebuilt ${platform.platformPackage(host)} does not load here`
  else reason = `the prebuilt ${platform.platformPackage(host)} is not installed`

  const needed = requiredRust()
  say(`building the native addon for ${host} from source: ${reason}.`)
  const cargo = process.env.CARGO ?? 'cargo'
  const found = rustVersion(cargo)
  if (!found) {
    say(`cargo was not found, so nothing was built. ${platform.rustInstallAdvice(needed)}`)
    return 1
  }
  if (versionBelow(found, needed)) {
    say(`Rust ${found} is too old, so nothing was built: this crate needs ${needed} or newer (rustup update stable).`)
    return 1
  }

  // A build tree of its own unless the caller chose one: removed when the build fails, and
  // after success when installed as a dependency (there it is only weight in node_modules).
  const ownTree = !process.env.CARGO_TARGET_DIR
  const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(root, 'target')
  const installed = root.split(path.sep).includes('node_modules')
  const hadTree = fs.existsSync(targetDir)
  const dropTree = () => {
    if (ownTree && !hadTree) fs.rmSync(targetDir, { recursive: true, force: true })
  }
  say(`Rust ${found}; a release build (with the H.264 encoder's C++) takes about 4 minutes on 2 cores. cargo's progress follows.`)
  const lockfile = fs.existsSync(path.join(root, 'Cargo.lock')) ? ['--locked'] : []
  const build = spawnSync(cargo, ['build', '--release', '--lib', ...lockfile], {
    cwd: root,
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, CARGO_TARGET_DIR: targetDir },
  })
  if (build.status !== 0) {
    dropTree()
    say(`cargo build failed (its output is above); nothing was installed.`)
    return build.status ?? 1
  }

  // Into place only once it loads: a half-written or unloadable file never sits where
  // binding.js looks.
  const target = path.join(root, platform.binaryFile(host))
  const partial = target.replace(/\.node$/, `.partial-${process.pid}.node`)
  try {
    fs.copyFileSync(path.join(targetDir, 'release', libraryFile()), partial)
    const probe = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(partial)})`], { encoding: 'utf8' })
    if (probe.status !== 0) throw new Error(`Node cannot load the built addon:\n${probe.stderr.trim()}`)
    fs.renameSync(partial, target)
    // Loaded the way users load it: binding.js must find this file by its platform name.
    if (!binaryLoads()) {
      fs.rmSync(target, { force: true })
      throw new Error(`binding.js does not load ${path.basename(target)} on this platform`)
    }
  } catch (error) {
    fs.rmSync(partial, { force: true })
    dropTree()
    say(`${error.message}\nNothing was installed.`)
    return 1
  }
  if (installed) dropTree()
  say(`built ${path.basename(target)}; it is loaded in preference to a prebuilt package.`)
  return 0
}

process.exitCode = main(process.argv.slice(2))

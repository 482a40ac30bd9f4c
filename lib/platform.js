'use strict'
// Which native binary this machine needs and where it comes from: napi-rs's platform names
// (`linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`, …), the per-platform package that ships
// each prebuilt binary, the prebuilt list (read from `package.json` `napi.targets`, the one
// owner of what is published) and what to say when none loads. The naming rule is napi-rs's
// (`binding.js` loads by it); a test checks this copy against the napi CLI for every target.
// Must not load the binary (native.js does) or build it (scripts/build-from-source.js).

const fs = require('node:fs')
const path = require('node:path')

const packageRoot = path.join(__dirname, '..')
const manifest = require('../package.json')

const binaryName = manifest.napi.binaryName

/** napi-rs's name for a Rust target triple, e.g. `aarch64-unknown-linux-musl` → `linux-arm64-musl`. */
function platformOfTriple(triple) {
  const [cpu, , system, abi] = triple.split('-')
  const arch = { x86_64: 'x64', aarch64: 'arm64', i686: 'ia32', armv7: 'arm' }[cpu] ?? cpu
  if (system === 'darwin') return `darwin-${arch}`
  if (system === 'windows') return `win32-${arch}-${abi}`
  return `${system}-${arch}${abi ? `-${abi}` : ''}`
}

/** Whether this Linux runs musl, asked in `binding.js`'s order: /usr/bin/ldd, then the process report. */
function isMusl() {
  try {
    return fs.readFileSync('/usr/bin/ldd', 'utf8').includes('musl')
  } catch {
    const report = typeof process.report?.getReport === 'function' ? process.report.getReport() : null
    if (!report || report.header?.glibcVersionRuntime) return false
    return (report.sharedObjects ?? []).some((file) => file.includes('libc.musl-') || file.includes('ld-musl-'))
  }
}

/** The platform name of this process, as `binding.js` looks for it. */
function hostPlatform() {
  const { platform, arch } = process
  if (platform === 'linux') {
    const libc = isMusl() ? 'musl' : 'gnu'
    return arch === 'arm' ? `linux-arm-${libc}eabihf` : `linux-${arch}-${libc}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  if (platform === 'android' && arch === 'arm') return 'android-arm-eabi'
  return `${platform}-${arch}`
}

/** Platforms with a prebuilt binary, in `napi.targets` order. */
function prebuiltPlatforms() {
  return manifest.napi.targets.map(platformOfTriple)
}

/** The npm package that carries the prebuilt binary of `platform`. */
function platformPackage(platform) {
  return `${manifest.name}-${platform}`
}

/** The file name of the binary for `platform` (in its package, or beside `binding.js`). */
function binaryFile(platform) {
  return `${binaryName}.${platform}.node`
}

/** Whether the platform package is installed where `binding.js` would find it, and its version. */
function installedPlatformPackage(platform) {
  try {
    const file = require.resolve(`${platformPackage(platform)}/package.json`, { paths: [packageRoot] })
    return { version: require(file).version }
  } catch {
    return null
  }
}

/**
 * The command that builds this very copy from source. By path, not `npx browser-stream-native`:
 * npx finds the bin only for a direct dependency, and would otherwise fetch and build another copy.
 */
const BUILD_COMMAND = `node "${path.join(packageRoot, 'scripts', 'build-from-source.js')}" build`

/** How to get Rust, said the same way everywhere a build needs it. */
function rustInstallAdvice(rustVersion) {
  const rust =
    process.platform === 'win32'
      ? `Install Rust ${rustVersion} or newer with rustup-init.exe from https://rustup.rs and the Visual Studio C++ build tools`
      : `Install Rust ${rustVersion} or newer from https://rustup.rs (curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh) and ` +
        (process.platform === 'darwin'
          ? 'the Xcode command line tools (xcode-select --install)'
          : 'a C toolchain (Debian/Ubuntu: apt-get install build-essential; Alpine: apk add build-base)')
  return `${rust}, then run ${BUILD_COMMAND}.`
}

/** Why no native binary loaded here, and what to do: the text of the error `native.js` throws. */
function missingBinaryMessage(platform = hostPlatform(), installed = installedPlatformPackage(platform)) {
  const name = platformPackage(platform)
  const prebuilt = prebuiltPlatforms()
  const lines = [`browser-stream-native: no native binary loads on this machine (${platform}, Node ${process.versions.node}).`]
  if (!prebuilt.includes(platform)) {
    lines.push(`No prebuilt binary is published for ${platform} (prebuilt: ${prebuilt.join(', ')}).`)
  } else if (!installed) {
    lines.push(
      `Its prebuilt binary comes in the optional dependency ${name}, which is not installed: ` +
        'install again without --omit=optional (or --no-optional), and if package-lock.json was written on ' +
        'another platform, delete it and node_modules first.',
    )
  } else if (installed.version !== manifest.version) {
    lines.push(
      `${name} is at ${installed.version} but this package is ${manifest.version}: reinstall so both match ` +
        '(the error is in this error\'s cause).',
    )
  } else {
    lines.push(`${name}@${installed.version} is installed but Node could not load it (the error is in this error's cause).`)
  }
  lines.push(`To build it from source instead (about 2–3 minutes on 2 cores; needs Rust): ${BUILD_COMMAND}`)
  return lines.join('\n')
}

module.exports = {
  BUILD_COMMAND,
  binaryFile,
  hostPlatform,
  installedPlatformPackage,
  missingBinaryMessage,
  packageRoot,
  platformOfTriple,
  platformPackage,
  prebuiltPlatforms,
  rustInstallAdvice,
}

'use strict'
// Packaging, through real installs: the release flow (scripts/release.js, as the workflow's
// publish job runs it) publishes the linux-x64-gnu platform package and the main package to a
// loopback registry (Verdaccio, no uplinks); then fresh projects install them with npm and pnpm
// on a PATH without Rust (a shim records any cargo call) and run the drop-in smoke
// (scripts/smoke.js: a real Hono server, a real ws viewer, a frame and a click). Also: what is
// published (files, fields, sizes, glibc floor), the committed npm/ folders and the workflow's
// targets, the clear failure without a platform package and without cargo, how the source build
// cleans up after a failure (with a stand-in cargo that fails on cue), and the real source build.
// Runs on linux x64 glibc (the one platform this machine builds); skipped elsewhere.

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const platform = require('../lib/platform')
const { GLIBC_FLOOR, glibcFloor, aboveFloor } = require('../scripts/check-glibc-floor')
const { startRegistry, pathWithoutRust, runCommand } = require('./support/registry')

const root = path.join(__dirname, '..')
const manifest = require('../package.json')
const host = platform.hostPlatform()
const builtBinary = path.join(root, platform.binaryFile(host))
const skip =
  host !== 'linux-x64-gnu'
    ? `the packaging tests publish the linux-x64-gnu package; this machine is ${host}`
    : !fs.existsSync(builtBinary)
      ? `no built ${path.basename(builtBinary)} (npm run build)`
      : false

// What the published packages may weigh (npm's unpacked size): the main package is JS, the
// generated bindings and the Rust sources of the fallback build (which grow with each capability:
// the relay's video took them past 1 MiB, 1.07 MB; about 290 kB packed); a platform package is
// one binary.
// The binary is stripped; it holds the H.264 encoder (OpenH264) and a whole WebRTC stack (ICE,
// DTLS, SRTP, SDP, RTP in pure Rust: str0m with RustCrypto), which took the linux-x64 binary
// from under 8 MiB to 10.0 MB, and the NATS client of the relay with its TLS (async-nats,
// rustls on the aws-lc that DTLS already links, NKey signatures), which took it to 13.7 MB.
// The budget keeps room for one more such part, not for bloat.
const MAIN_PACKAGE_BUDGET = 1536 * 1024
const PLATFORM_PACKAGE_BUDGET = 16 * 1024 * 1024

const platformName = platform.platformPackage(host)
const pnpmCli = path.join(root, 'node_modules', 'pnpm', 'bin', 'pnpm.cjs')

let work
let registry
let seed
let shells = 0

/**
 * This process's environment without what would steer a child past the test's setup: npm's
 * exported config (under `npm test`, e.g. npm_config_registry outranks our .npmrc) and the
 * variables that point at a Rust toolchain or build tree.
 */
function cleanEnv() {
  const env = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (/^(npm_|pnpm_)/i.test(name) || ['INIT_CWD', 'CARGO', 'RUSTC', 'CARGO_TARGET_DIR', 'RUSTUP_TOOLCHAIN'].includes(name)) continue
    env[name] = value
  }
  return env
}

/**
 * A shell for one test's package-manager runs: our registry and npm cache, and unless `rust`,
 * a PATH without Rust whose cargo/rustc shim logs to a file of this shell's own (`calls()`).
 */
function shell({ rust = false } = {}) {
  const dir = path.join(work, `shell-${++shells}`)
  const log = path.join(dir, 'rust-calls.log')
  const env = {
    ...cleanEnv(),
    npm_config_userconfig: registry.npmrc,
    npm_config_cache: path.join(work, 'npm-cache'),
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    npm_config_update_notifier: 'false',
    CI: 'true',
  }
  if (!rust) env.PATH = pathWithoutRust(dir, log)
  return {
    env,
    calls: () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim() : ''),
    npm: (args, cwd, extra = {}) => runCommand('npm', args, { cwd, env: { ...env, ...extra.env }, timeout: extra.timeout }),
    pnpm: (args, cwd) => {
      const isolated = ['--store-dir', path.join(work, 'pnpm-store'), '--cache-dir', path.join(work, 'pnpm-cache')]
      return runCommand(process.execPath, [pnpmCli, ...args, ...isolated], { cwd, env })
    },
    smoke(packageDir, from) {
      const args = [path.join(root, 'scripts', 'smoke.js'), '--package', packageDir, '--from', from]
      const result = runCommand(process.execPath, args, { env })
      assert.equal(result.status, 0, `smoke failed:\n${result.stdout}\n${result.stderr}`)
      assert.match(result.stdout, /smoke: ok/)
      return result.stdout.trim()
    },
  }
}

function must(result, what) {
  assert.equal(result.status, 0, `${what} failed (${result.status}):\n${result.stdout}\n${result.stderr}`)
  return result
}

/** A fresh project folder with `dependencies`; hono and @hono/node-server come from `seed`. */
function project(name, dependencies = {}, extra = {}) {
  const dir = path.join(work, name)
  fs.mkdirSync(dir, { recursive: true })
  const manifestOf = {
    name,
    version: '1.0.0',
    private: true,
    dependencies: { hono: `file:${seed.hono}`, '@hono/node-server': `file:${seed.nodeServer}`, ...dependencies },
    ...extra,
  }
  fs.writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(manifestOf, null, 2)}\n`)
  return dir
}

/** Every file under `dir` (relative), for before/after comparisons. */
function listFiles(dir) {
  const out = []
  const walk = (at) => {
    for (const entry of fs.readdirSync(at, { withFileTypes: true })) {
      const full = path.join(at, entry.name)
      if (entry.isDirectory()) walk(full)
      else out.push(path.relative(dir, full))
    }
  }
  walk(dir)
  return out.sort()
}

/** The tarball entries of a published package (`npm pack` of it from the registry). */
function packedFiles(spec, dir) {
  fs.mkdirSync(dir, { recursive: true })
  const packed = JSON.parse(must(shell().npm(['pack', spec, '--json', '--pack-destination', dir], dir), `npm pack ${spec}`).stdout)[0]
  return { files: packed.files.map((file) => file.path).sort(), unpackedSize: packed.unpackedSize, tarball: path.join(dir, packed.filename) }
}

/** A project with the published package installed from the registry without its platform package. */
function installWithoutPrebuilt(name, sh) {
  const dir = project(name)
  must(sh.npm(['install', `${manifest.name}@${manifest.version}`, '--omit=optional'], dir), 'npm install --omit=optional')
  assert.equal(fs.existsSync(path.join(dir, 'node_modules', platformName)), false)
  return { dir, installed: path.join(dir, 'node_modules', manifest.name) }
}

/**
 * A stand-in for cargo that fails the way a real build can, on cue: `compile-error` makes the
 * build tree and then fails; `bad-library` "succeeds" with a file that is no shared library;
 * `good-library` puts this checkout's built binary where cargo would. It answers --version.
 */
function standInCargo(mode) {
  const file = path.join(work, `cargo-${mode}`)
  const library = path.join('"$CARGO_TARGET_DIR"', 'release', 'libbrowser_stream_native.so')
  const build = {
    'compile-error': 'mkdir -p "$CARGO_TARGET_DIR/release/deps"\necho "error[E0000]: stand-in compile failure" >&2\nexit 101',
    'bad-library': `mkdir -p "$CARGO_TARGET_DIR/release"\necho "not a shared library" > ${library}`,
    'good-library': `mkdir -p "$CARGO_TARGET_DIR/release"\ncp '${builtBinary}' ${library}`,
  }[mode]
  fs.writeFileSync(file, `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "cargo 1.95.0 (stand-in)"; exit 0; fi\n${build}\n`)
  fs.chmodSync(file, 0o755)
  return file
}

before(async () => {
  if (skip) return
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'bsn-package-'))
  registry = await startRegistry(path.join(work, 'registry'))
  const sh = shell({ rust: true })

  // Third-party packages from the npm cache this checkout was installed with: ws is published to
  // the loopback registry (our dependency resolves it by range); hono and @hono/node-server
  // declare publishConfig.registry (the public one), so projects take them as tarballs instead.
  const seedDir = path.join(work, 'seed')
  fs.mkdirSync(seedDir)
  const versionOf = (name) => require(path.join(root, 'node_modules', name, 'package.json')).version
  const packOffline = (name) => {
    const args = ['pack', `${name}@${versionOf(name)}`, '--offline', '--json', '--pack-destination', seedDir]
    // The checkout's own npm cache: that is where `npm ci` left these packages.
    const result = runCommand('npm', args, { cwd: seedDir, env: cleanEnv() })
    assert.equal(result.status, 0, `npm pack ${name} from the cache: ${result.stderr}`)
    return path.join(seedDir, JSON.parse(result.stdout)[0].filename)
  }
  seed = { hono: packOffline('hono'), nodeServer: packOffline('@hono/node-server'), ws: packOffline('ws') }
  must(sh.npm(['publish', seed.ws, '--tag', 'latest'], seedDir), 'publishing ws to the loopback registry')

  // The release, as the workflow's publish job runs it, on a copy of the packed checkout with
  // this machine's binary as the only artifact.
  const stageDir = path.join(work, 'stage')
  fs.mkdirSync(stageDir)
  const packed = JSON.parse(
    must(sh.npm(['pack', '--ignore-scripts', '--json', '--pack-destination', stageDir], root), 'npm pack').stdout,
  )[0]
  must(runCommand('tar', ['xzf', path.join(stageDir, packed.filename), '-C', stageDir]), 'unpacking the tarball')
  const release = path.join(stageDir, 'package')
  fs.cpSync(path.join(root, 'npm'), path.join(release, 'npm'), { recursive: true, filter: (file) => !file.endsWith('.node') })
  const artifacts = path.join(stageDir, 'artifacts')
  fs.mkdirSync(artifacts)
  fs.copyFileSync(builtBinary, path.join(artifacts, path.basename(builtBinary)))
  const released = runCommand(
    process.execPath,
    [path.join(root, 'scripts', 'release.js'), '--cwd', release, '--artifacts', artifacts, '--only', 'x86_64-unknown-linux-gnu'],
    { cwd: release, env: sh.env },
  )
  must(released, 'scripts/release.js')
})

after(async () => {
  await registry?.stop()
  if (work) fs.rmSync(work, { recursive: true, force: true })
})

test('the platform name rule matches napi-rs for every target, and binding.js loads by it', { skip }, () => {
  const { parseTriple } = require('@napi-rs/cli')
  for (const triple of manifest.napi.targets) {
    assert.equal(platform.platformOfTriple(triple), parseTriple(triple).platformArchABI, triple)
  }
  assert.ok(fs.readFileSync(path.join(root, 'binding.js'), 'utf8').includes(`'./${platform.binaryFile(host)}'`))
})

test('the committed npm/ folders are what napi create-npm-dirs makes of package.json', { skip }, () => {
  // napi writes only inside the project it reads, so it reads a copy of package.json.
  const check = path.join(work, 'npm-dirs')
  fs.mkdirSync(check)
  fs.copyFileSync(path.join(root, 'package.json'), path.join(check, 'package.json'))
  const cli = path.join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js')
  must(runCommand(process.execPath, [cli, 'create-npm-dirs'], { cwd: check }), 'napi create-npm-dirs')
  const fresh = path.join(check, 'npm')
  for (const triple of manifest.napi.targets) {
    const name = platform.platformOfTriple(triple)
    for (const file of ['package.json', 'README.md']) {
      assert.equal(
        fs.readFileSync(path.join(root, 'npm', name, file), 'utf8'),
        fs.readFileSync(path.join(fresh, name, file), 'utf8'),
        `npm/${name}/${file} is stale: run napi create-npm-dirs`,
      )
    }
  }
})

test('the release workflow builds and smokes exactly the targets in napi.targets', () => {
  const workflow = fs.readFileSync(path.join(root, '.github', 'workflows', 'release.yml'), 'utf8')
  const targetsIn = (from, to) =>
    [...workflow.slice(workflow.indexOf(from), workflow.indexOf(to)).matchAll(/^\s+target: (\S+)$/gm)].map((m) => m[1]).sort()
  const configured = [...manifest.napi.targets].sort()
  assert.deepEqual(targetsIn('\n  build:', '\n  test:'), configured, 'the build matrix')
  assert.deepEqual(targetsIn('\n  test:', '\n  publish:'), configured, 'the smoke matrices')
})

test('what is published: exact-version optional dependencies, only what users need, within budget', { skip }, (t) => {
  const sh = shell()
  const meta = JSON.parse(must(sh.npm(['view', `${manifest.name}@${manifest.version}`, '--json'], work), 'npm view').stdout)
  assert.deepEqual(meta.optionalDependencies, { [platformName]: manifest.version })
  for (const hook of ['preinstall', 'install', 'postinstall']) {
    assert.equal(meta.scripts?.[hook], undefined, `a published ${hook} script would be blocked or refused by npm 12 and pnpm`)
  }
  assert.ok(meta.bin?.['browser-stream-native'], 'the source-build command is a bin')

  const main = packedFiles(`${manifest.name}@${manifest.version}`, path.join(work, 'inspect-main'))
  const unwanted = main.files.filter((file) => /^(__test__|bench|fuzz|target|examples|npm|test-output)\/|\.node$|^\.|\/tests\.rs$/.test(file))
  assert.deepEqual(unwanted, [], 'tests, benchmarks, fuzzing, build output and binaries stay out of the main package')
  assert.deepEqual(main.files.filter((file) => file.startsWith('scripts/')), ['scripts/build-from-source.js'])
  for (const needed of ['LICENSE', 'README.md', 'index.js', 'index.d.ts', 'binding.js', 'binding.d.ts', 'lib/native.js', 'Cargo.toml', 'Cargo.lock', 'build.rs', 'src/lib.rs']) {
    assert.ok(main.files.includes(needed), `${needed} is in the main package`)
  }
  assert.ok(main.unpackedSize < MAIN_PACKAGE_BUDGET, `main package: ${main.unpackedSize} bytes, budget ${MAIN_PACKAGE_BUDGET}`)

  const pkg = JSON.parse(must(sh.npm(['view', `${platformName}@${manifest.version}`, '--json'], work), 'npm view platform').stdout)
  assert.deepEqual([pkg.os, pkg.cpu, pkg.libc], [['linux'], ['x64'], ['glibc']])
  assert.equal(pkg.engines?.node, manifest.engines.node)
  assert.equal(pkg.license, manifest.license)
  const binary = packedFiles(`${platformName}@${manifest.version}`, path.join(work, 'inspect-platform'))
  assert.deepEqual(binary.files, ['LICENSE', 'README.md', platform.binaryFile(host), 'package.json'])
  assert.ok(binary.unpackedSize < PLATFORM_PACKAGE_BUDGET, `platform package: ${binary.unpackedSize} bytes, budget ${PLATFORM_PACKAGE_BUDGET}`)
  t.diagnostic(`published: main ${main.unpackedSize} bytes (${main.files.length} files), ${platformName} ${binary.unpackedSize} bytes`)
})

test('the published linux-x64-gnu binary runs on glibc 2.17', { skip }, (t) => {
  const newest = glibcFloor(builtBinary)
  const within = !aboveFloor(newest)
  t.diagnostic(`${path.basename(builtBinary)} needs glibc ${newest ? newest.join('.') : 'none'}`)
  if (!within && runCommand('cargo-zigbuild', ['--version']).status !== 0) {
    // npm test builds the release way only where cargo-zigbuild is (.ci/run installs it).
    t.skip(`built without cargo-zigbuild: needs glibc ${newest.join('.')}; .ci/run checks the floor`)
    return
  }
  assert.ok(within, `needs glibc ${newest?.join('.')}, above ${GLIBC_FLOOR}`)
})

test('npm install from the registry takes the prebuilt binary: no cargo, no compile, and it streams', { skip }, (t) => {
  const sh = shell()
  const dir = project('npm-app')
  const install = must(sh.npm(['install', `${manifest.name}@${manifest.version}`, 'ws'], dir), 'npm install')
  assert.equal(sh.calls(), '', 'the install called cargo or rustc')
  assert.doesNotMatch(install.stderr, /install-scripts/, 'npm saw install scripts to approve')
  const installed = path.join(dir, 'node_modules', manifest.name)
  assert.deepEqual(listFiles(installed).filter((file) => file.endsWith('.node') || file.startsWith('target')), [])
  assert.ok(fs.existsSync(path.join(dir, 'node_modules', platformName, platform.binaryFile(host))))
  t.diagnostic(`npm install took ${(install.ms / 1000).toFixed(1)} s; ${sh.smoke(installed, dir)}`)
})

test('npm install <tarball> of the published package still works', { skip }, (t) => {
  const sh = shell()
  const tarball = packedFiles(`${manifest.name}@${manifest.version}`, path.join(work, 'tarball')).tarball
  const dir = project('tarball-app')
  const install = must(sh.npm(['install', tarball, 'ws'], dir), 'npm install <tarball>')
  assert.equal(sh.calls(), '')
  t.diagnostic(`npm install <tarball> took ${(install.ms / 1000).toFixed(1)} s; ${sh.smoke(path.join(dir, 'node_modules', manifest.name), dir)}`)
})

test('pnpm, plain and in a workspace (registry and workspace:*), takes the prebuilt binary', { skip }, (t) => {
  const sh = shell()
  const nodeFiles = (dir) => listFiles(dir).filter((file) => file.endsWith('.node'))
  const plain = project('pnpm-app', { [manifest.name]: manifest.version, ws: '^8' })
  const install = must(sh.pnpm(['install'], plain), 'pnpm install')
  assert.equal(sh.calls(), '')
  const plainPackage = fs.realpathSync(path.join(plain, 'node_modules', manifest.name))
  assert.deepEqual(nodeFiles(plainPackage), [], 'the binary comes from the platform package')
  const version = must(sh.pnpm(['--version'], plain), 'pnpm --version').stdout.trim()
  t.diagnostic(`pnpm ${version} install took ${(install.ms / 1000).toFixed(1)} s; ${sh.smoke(plainPackage, plain)}`)

  // A workspace: one app takes the package from the registry, one links a workspace copy of it
  // (the unpacked tarball with its binary built beside binding.js, as `npm run build` leaves it).
  const workspace = path.join(work, 'pnpm-workspace')
  fs.mkdirSync(path.join(workspace, 'packages'), { recursive: true })
  fs.writeFileSync(path.join(workspace, 'package.json'), '{ "name": "workspace-root", "private": true }\n')
  fs.writeFileSync(
    path.join(workspace, 'pnpm-workspace.yaml'),
    // The loopback registry has no Hono or Mastra, so the workspace copy's own peers are not
    // installed for it (the apps bring Hono, as a deployer's app does).
    "packages:\n  - 'apps/*'\n  - 'packages/*'\nlinkWorkspacePackages: false\nautoInstallPeers: false\n",
  )
  const tarball = packedFiles(`${manifest.name}@${manifest.version}`, path.join(work, 'ws-tarball')).tarball
  must(runCommand('tar', ['xzf', tarball, '-C', path.join(workspace, 'packages')]), 'unpack')
  const local = path.join(workspace, 'packages', manifest.name)
  fs.renameSync(path.join(workspace, 'packages', 'package'), local)
  fs.copyFileSync(builtBinary, path.join(local, platform.binaryFile(host)))
  const localJson = JSON.parse(fs.readFileSync(path.join(local, 'package.json'), 'utf8'))
  // A workspace copy carries its binary itself; its development tools are not the apps'.
  delete localJson.optionalDependencies
  delete localJson.devDependencies
  fs.writeFileSync(path.join(local, 'package.json'), JSON.stringify(localJson, null, 2))
  fs.mkdirSync(path.join(workspace, 'apps'))
  const fromRegistry = project(path.join('pnpm-workspace', 'apps', 'from-registry'), { [manifest.name]: manifest.version, ws: '^8' })
  const fromWorkspace = project(path.join('pnpm-workspace', 'apps', 'from-workspace'), { [manifest.name]: 'workspace:*', ws: '^8' })
  const workspaceInstall = must(sh.pnpm(['install'], workspace), 'pnpm install (workspace)')
  assert.equal(sh.calls(), '', 'the workspace install called cargo or rustc')
  const resolved = (app) => fs.realpathSync(path.join(app, 'node_modules', manifest.name))
  assert.equal(resolved(fromWorkspace), fs.realpathSync(local), 'workspace:* links the workspace copy')
  assert.notEqual(resolved(fromRegistry), fs.realpathSync(local), 'the registry app has the published package')
  assert.deepEqual(nodeFiles(resolved(fromRegistry)), [], 'the registry app takes the binary from the platform package')
  t.diagnostic(`pnpm workspace install took ${(workspaceInstall.ms / 1000).toFixed(1)} s`)
  t.diagnostic(`from the registry: ${sh.smoke(resolved(fromRegistry), fromRegistry)}`)
  t.diagnostic(`workspace:*: ${sh.smoke(resolved(fromWorkspace), fromWorkspace)}`)
})

test('without the platform package and without cargo: a clear load error, and the build says what to install', { skip }, () => {
  const sh = shell()
  const { dir, installed } = installWithoutPrebuilt('no-prebuilt-app', sh)
  const load = runCommand(process.execPath, ['-e', `require(${JSON.stringify(manifest.name)})`], { cwd: dir, env: sh.env })
  assert.notEqual(load.status, 0)
  assert.match(load.stderr, /no native binary loads on this machine \(linux-x64-gnu/)
  assert.match(load.stderr, new RegExp(`optional dependency ${platformName}, which is not installed`))
  // The command that builds this very copy, by its path.
  assert.ok(load.stderr.includes(`node "${fs.realpathSync(installed)}/scripts/build-from-source.js" build`), load.stderr)

  const before = listFiles(installed)
  const build = sh.npm(['exec', '--offline', '--', 'browser-stream-native', 'build'], dir)
  assert.equal(build.status, 1, 'the build without cargo fails')
  assert.match(build.stderr, /cargo was not found, so nothing was built/)
  assert.match(build.stderr, /Install Rust \d+\.\d+ or newer from https:\/\/rustup\.rs/)
  assert.match(build.stderr, /build-essential/)
  assert.deepEqual(listFiles(installed), before)
})

test('a source build that fails leaves nothing half-built: not its build tree, not a library that does not load', { skip }, () => {
  const sh = shell()
  const { dir, installed } = installWithoutPrebuilt('failed-build-app', sh)
  const before = listFiles(installed)

  const failed = sh.npm(['exec', '--offline', '--', 'browser-stream-native', 'build'], dir, { env: { CARGO: standInCargo('compile-error') } })
  assert.equal(failed.status, 101, "cargo's exit status is the build's")
  assert.match(failed.stderr, /stand-in compile failure/, "cargo's output is shown")
  assert.match(failed.stderr, /cargo build failed \(its output is above\); nothing was installed/)
  assert.deepEqual(listFiles(installed), before, 'the failed build left its tree behind')

  const unloadable = sh.npm(['exec', '--offline', '--', 'browser-stream-native', 'build'], dir, { env: { CARGO: standInCargo('bad-library') } })
  assert.equal(unloadable.status, 1)
  assert.match(unloadable.stderr, /Node cannot load the built addon/)
  assert.deepEqual(listFiles(installed), before, 'an unloadable library was left behind')

  // A build that works is put in place and its tree, only weight in node_modules, removed.
  const built = sh.npm(['exec', '--offline', '--', 'browser-stream-native', 'build'], dir, { env: { CARGO: standInCargo('good-library') } })
  assert.equal(built.status, 0, built.stderr)
  assert.deepEqual(listFiles(installed), [...before, platform.binaryFile(host)].sort())
})

test('the source build: with cargo, `npx browser-stream-native build` compiles a binary that loads and streams', { skip }, (t) => {
  const sh = shell({ rust: true })
  const { dir, installed } = installWithoutPrebuilt('source-build-app', sh)
  // The checkout's release build tree (`npm install` here built it) keeps the compiled
  // dependencies, so only this crate compiles; without it this is a full build of about 4 minutes.
  const build = sh.npm(['exec', '--offline', '--', 'browser-stream-native', 'build'], dir, {
    env: { CARGO_TARGET_DIR: path.join(root, 'target') },
    timeout: 900_000,
  })
  assert.equal(build.status, 0, `source build failed:\n${build.stderr}`)
  assert.match(build.stderr, /building the native addon for linux-x64-gnu from source: `build` was asked for/)
  assert.match(build.stderr, /Compiling browser-stream-native/, "cargo's progress is shown")
  assert.deepEqual(listFiles(installed).filter((file) => file.endsWith('.node')), [platform.binaryFile(host)])
  t.diagnostic(`source build took ${(build.ms / 1000).toFixed(0)} s; ${sh.smoke(installed, dir)}`)
})

#!/usr/bin/env node
'use strict'
// The whole test suite, as the README's `npm test`: Rust lint and unit tests (the addon and the
// benchmark's tools), a fresh build of the addon (with a check that the committed napi
// bindings match the Rust code), then the integration tests in __test__/ with Node's test
// runner, the packaging tests (real installs of the packed packages) among them. Exits
// non-zero on any failure.

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { hostPlatform } = require('../lib/platform')
const { GLIBC_FLOOR } = require('./check-glibc-floor')

const root = path.join(__dirname, '..')

function run(command, args, what) {
  console.log(`\n▶ ${what}: ${command} ${args.join(' ')}`)
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit' })
  if (result.status !== 0) {
    console.error(`✖ ${what} failed`)
    process.exit(result.status ?? 1)
  }
}

run('cargo', ['fmt', '--check'], 'rustfmt')
run('cargo', ['clippy', '--all-targets', '--locked', '--', '-D', 'warnings'], 'clippy')
run('cargo', ['test', '--locked'], 'Rust unit tests')
// The benchmark's Rust tools (load generator, physical limit) are held to the same rules.
const bench = ['--manifest-path', path.join('bench', 'rust', 'Cargo.toml')]
run('cargo', ['fmt', '--check', ...bench], 'rustfmt (bench)')
run('cargo', ['clippy', '--release', '--locked', ...bench, '--', '-D', 'warnings'], 'clippy (bench)')
run('cargo', ['test', '--release', '--locked', ...bench], 'Rust unit tests (bench)')

// On linux x64 glibc the addon is built as it is released, against glibc 2.17 through
// cargo-zigbuild (.ci/run installs it), so every test runs the binary users get and
// package.test.js can check its glibc floor. Without cargo-zigbuild and a zig for it to find
// (`zig` on PATH, or PyPI's ziglang beside python3) it is a plain host build.
const succeeds = (command, args) => spawnSync(command, args, { stdio: 'ignore' }).status === 0
const releaseLike =
  hostPlatform() === 'linux-x64-gnu' &&
  succeeds('cargo-zigbuild', ['--version']) &&
  (succeeds('zig', ['version']) || succeeds('python3', ['-c', 'import ziglang']))
const target = releaseLike ? ['--target', `x86_64-unknown-linux-gnu.${GLIBC_FLOOR}`, '--cross-compile'] : []
const napiCli = path.join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js')
if (fs.existsSync(napiCli)) {
  const build = ['build', '--platform', '--release', ...target, '--js', 'binding.js', '--dts', 'binding.d.ts']
  run(process.execPath, [napiCli, ...build], releaseLike ? `napi build (glibc ${GLIBC_FLOOR}, as released)` : 'napi build')
  if (fs.existsSync(path.join(root, '.git'))) {
    run('git', ['diff', '--exit-code', '--', 'binding.d.ts', 'binding.js'], 'generated bindings are committed and current')
  }
} else {
  run(process.execPath, [path.join(root, 'scripts', 'build-from-source.js'), 'build'], 'cargo build')
}

const extra = process.argv.slice(2)
run(
  process.execPath,
  ['--test', '--test-concurrency=1', '--test-timeout=180000', ...(extra.length ? extra : ['__test__/'])],
  'integration tests',
)

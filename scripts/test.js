#!/usr/bin/env node
'use strict'
// The whole test suite, as the README's `npm test`: Rust lint and unit tests (the addon and the
// benchmark's tools), a fresh build of the addon (with a check that the committed napi
// bindings match the Rust code), then the integration tests in __test__/ with Node's test
// runner. Exits non-zero on any failure.

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

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

const napiCli = path.join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js')
if (fs.existsSync(napiCli)) {
  run(process.execPath, [napiCli, 'build', '--platform', '--release', '--js', 'binding.js', '--dts', 'binding.d.ts'], 'napi build')
  if (fs.existsSync(path.join(root, '.git'))) {
    run('git', ['diff', '--exit-code', '--', 'binding.d.ts', 'binding.js'], 'generated bindings are committed and current')
  }
} else {
  run(process.execPath, [path.join(root, 'scripts', 'install.js'), '--build'], 'cargo build')
}

const extra = process.argv.slice(2)
run(
  process.execPath,
  ['--test', '--test-concurrency=1', '--test-timeout=180000', ...(extra.length ? extra : ['__test__/'])],
  'integration tests',
)

#!/usr/bin/env node
'use strict'
// The publish job of .github/workflows/release.yml, as one script so that every step it runs
// also runs locally (package.test.js rehearses it against a loopback registry):
//   1. every target in `napi.targets` has its committed npm/<platform>/ package at this version
//   2. `napi artifacts` moves the built binaries into those packages; none may be missing
//   3. each platform package gets the licence file
//   4. `napi prepublish -t npm` publishes the platform packages and writes the exact-version
//      optionalDependencies into package.json
//   5. `npm publish` of the main package (scripts off: `prepare` would build from source)
// The registry and its token come from npm's own config (npm_config_registry, .npmrc).
//
//   release.js [--cwd dir] [--artifacts dir] [--only triple,…] [--dry-run]
// --only narrows `napi.targets` in <dir>/package.json to the triples given (a local rehearsal
// with the binaries one machine can build); it rewrites that package.json, so use it on a copy.

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { parseArgs } = require('node:util')

const { values: options } = parseArgs({
  options: {
    cwd: { type: 'string', default: process.cwd() },
    artifacts: { type: 'string', default: 'artifacts' },
    only: { type: 'string' },
    'dry-run': { type: 'boolean', default: false },
  },
})
const cwd = path.resolve(options.cwd)
const napiCli = path.join(__dirname, '..', 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js')
const { platformOfTriple } = require('../lib/platform')

function fail(message) {
  console.error(`release: ${message}`)
  process.exit(1)
}

function run(command, args, what) {
  console.log(`\n▶ ${what}: ${path.basename(command)} ${args.join(' ')}`)
  const result = spawnSync(command, args, { cwd, stdio: 'inherit', shell: process.platform === 'win32' })
  if (result.status !== 0) fail(`${what} failed`)
}

const manifestPath = path.join(cwd, 'package.json')
const manifest = JSON.parse(fs.readFileSync(manifestPath, 'utf8'))
// A tag push publishes exactly the version it names.
if (process.env.GITHUB_REF_TYPE === 'tag' && process.env.GITHUB_REF_NAME !== `v${manifest.version}`) {
  fail(`the tag ${process.env.GITHUB_REF_NAME} does not name package.json's version ${manifest.version} (v${manifest.version})`)
}
if (options.only) {
  const only = options.only.split(',')
  const unknown = only.filter((triple) => !manifest.napi.targets.includes(triple))
  if (unknown.length) fail(`--only names targets not in napi.targets: ${unknown.join(', ')}`)
  manifest.napi.targets = only
  fs.writeFileSync(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`)
}

const npmDir = path.join(cwd, 'npm')
const packages = manifest.napi.targets.map((triple) => {
  const platform = platformOfTriple(triple)
  const dir = path.join(npmDir, platform)
  const file = path.join(dir, 'package.json')
  if (!fs.existsSync(file)) fail(`npm/${platform}/package.json is missing: run napi create-npm-dirs and commit it`)
  const { version } = JSON.parse(fs.readFileSync(file, 'utf8'))
  if (version !== manifest.version) fail(`npm/${platform} is at ${version}, the package at ${manifest.version}: run napi version`)
  return { platform, dir }
})

// napi artifacts refuses a missing binary and one for a target not configured.
run(process.execPath, [napiCli, 'artifacts', '--output-dir', path.resolve(cwd, options.artifacts), '--npm-dir', 'npm'], 'napi artifacts')
for (const pkg of packages) fs.copyFileSync(path.join(cwd, 'LICENSE'), path.join(pkg.dir, 'LICENSE'))

const dryRun = options['dry-run'] ? ['--dry-run'] : []
run(process.execPath, [napiCli, 'prepublish', '-t', 'npm', '--no-gh-release', ...dryRun], 'napi prepublish')
run('npm', ['publish', '--ignore-scripts', ...dryRun], 'npm publish')

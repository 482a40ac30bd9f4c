'use strict'
// The published types (index.d.ts over the napi-generated binding.d.ts) accept the drop-in
// usage and match what index.js exports.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const path = require('node:path')
const exported = require('..')

test('index.d.ts type-checks the drop-in usage', () => {
  const tsc = require.resolve('typescript/bin/tsc')
  const result = spawnSync(
    process.execPath,
    [tsc, '--noEmit', '--strict', '--esModuleInterop', '--skipLibCheck', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', path.join(__dirname, 'fixtures', 'usage.ts')],
    { encoding: 'utf8' },
  )
  assert.equal(result.status, 0, result.stdout + result.stderr)
})

test('index.js exports what index.d.ts declares', () => {
  assert.deepEqual(Object.keys(exported).sort(), ['CloseCode', 'EXTENDED_PROTOCOL', 'NativeRegistry', 'ViewerRegistry', 'handleInputMessage', 'setupBrowserStream'])
  assert.equal(exported.EXTENDED_PROTOCOL, 'browser-stream.v1')
  assert.equal(typeof exported.setupBrowserStream, 'function')
  assert.equal(exported.CloseCode.SLOW_CONSUMER, 4001)
})

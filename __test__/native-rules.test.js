'use strict'
// The rules Rust owns, as JS reads them: every registry option comes from Rust's one table
// (name, kind, default, range) and ViewerRegistry enforces exactly that table.

const test = require('node:test')
const assert = require('node:assert/strict')
const binding = require('../binding')
const { ViewerRegistry, CloseCode, EXTENDED_PROTOCOL } = require('..')

test('every registry option of the Rust table is accepted at its bounds and refused past them, naming the option', async () => {
  const options = binding.registryOptions()
  assert.ok(options.length >= 16, 'the table lists the options')
  for (const { name, kind, default: value, min, max } of options) {
    const registries = []
    if (kind === 'flag') {
      assert.equal(typeof value, 'boolean', name)
      registries.push(new ViewerRegistry({ [name]: !value }))
      assert.throws(() => new ViewerRegistry({ [name]: 1 }), { name: 'TypeError', message: new RegExp(`option ${name} must be a boolean`) })
    } else {
      assert.ok(Number.isInteger(value) && value >= min && value <= max, `${name}: default ${value} in ${min}..${max}`)
      registries.push(new ViewerRegistry({ [name]: min }), new ViewerRegistry({ [name]: value }))
      const refused = { name: 'TypeError', message: new RegExp(`option ${name} must be an integer from ${min} to ${max}`) }
      if (min > 0) assert.throws(() => new ViewerRegistry({ [name]: min - 1 }), refused)
      assert.throws(() => new ViewerRegistry({ [name]: max + 1 }), refused)
      assert.throws(() => new ViewerRegistry({ [name]: min + 0.5 }), refused)
      assert.throws(() => new ViewerRegistry({ [name]: String(value) }), { name: 'TypeError', message: new RegExp(`option ${name} must be a number`) })
    }
    for (const registry of registries) await registry.close()
  }
})

test('constants come from the binding: close codes, the subprotocol, statuses and CDP defaults', () => {
  assert.deepEqual(CloseCode, binding.closeCodes())
  assert.ok(Object.isFrozen(CloseCode))
  assert.equal(CloseCode.SLOW_CONSUMER, 4001)
  assert.equal(EXTENDED_PROTOCOL, binding.SUBPROTOCOL)
  assert.equal(binding.statusCodes().STREAMING, 'streaming')
  assert.equal(binding.checkCdpSourceOptions({}).timeoutMs, 10_000)
  assert.equal(binding.checkCdpSourceOptions({ quality: 50 }).quality, 50)
  assert.throws(() => binding.checkCdpSourceOptions({ quality: 101 }), /quality must be 0 to 100/)
})

test('every NativeRegistry method names a channel by its key; a string that is not a key is refused', () => {
  const native = new binding.NativeRegistry(async () => {})
  const key = binding.channelKey('agent:1', 'thread/1 2')
  assert.equal(key, 'agent%3A1:thread/1 2')
  assert.equal(native.checkAdmission(key), null)
  for (const notAKey of ['', 'agent:', 'a%2F', 'a%3a']) {
    assert.throws(() => native.checkAdmission(notAKey), /is not a channel key/, JSON.stringify(notAKey))
    assert.throws(() => native.attachBridged(notAKey, false), /is not a channel key/)
  }
  native.close()
})

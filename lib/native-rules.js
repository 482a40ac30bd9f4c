'use strict'
// The rules the native core owns, read once from the binding so that JS never writes them a
// second time: the registry's options (names, kinds, defaults, ranges), the close codes, the
// extended subprotocol, the statuses and error codes viewers get, and the CDP source's
// defaults. Must not define any of them: a new option or code is an edit in Rust only.

const binding = require('./native')

/** Every NativeRegistry option: `{ name, kind: 'ms' | 'count' | 'flag', default, min, max }`. */
const REGISTRY_OPTIONS = Object.freeze(binding.registryOptions().map((option) => Object.freeze(option)))

const optionByName = new Map(REGISTRY_OPTIONS.map((option) => [option.name, option]))

/** The default of registry option `name` (Rust applies it when the option is not set). */
function registryDefault(name) {
  const option = optionByName.get(name)
  if (!option) throw new Error(`no registry option ${name}`)
  return option.default
}

/** Close codes used on the stream socket (docs/PROTOCOL.md), by name. */
const CloseCode = Object.freeze(binding.closeCodes())

/** Statuses (`{status}`) the core and the JS sources broadcast, by name. */
const Status = Object.freeze(binding.statusCodes())

/** Error codes (`{error, message}`) sources report to viewers, by name. */
const ErrorCode = Object.freeze(binding.errorCodes())

/** The WebSocket subprotocol of the extended mode. */
const EXTENDED_PROTOCOL = binding.SUBPROTOCOL

/** The native CDP source's options with every default filled in. */
const CDP_SOURCE_DEFAULTS = Object.freeze(binding.checkCdpSourceOptions({}))

module.exports = { REGISTRY_OPTIONS, registryDefault, CloseCode, Status, ErrorCode, EXTENDED_PROTOCOL, CDP_SOURCE_DEFAULTS }

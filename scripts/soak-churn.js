#!/usr/bin/env node
'use strict'
// Connect/disconnect soak (issue 6, "Load and churn"): a real Hono server with
// setupBrowserStream, a fake toolset emitting JPEG frames, and `ws` clients connecting and
// leaving 10,000 times (single viewers closing cleanly, terminated, or closing right after the
// handshake; bursts of 100 viewers on one agent), over several agents at once. Checks that the
// toolset's screencast starts == stops == the 0→1 transitions caused (and the registry's
// totals), that no channel or viewer is left, that every admitted viewer was closed, and that
// RSS after a forced GC is back within --rss-limit-mb of the level after the warm-up.
// Prints a JSON summary on stdout (progress on stderr); exits 1 on any failed check or step
// timeout, 2 when the whole run overran its hard limit.
//
//   node scripts/soak-churn.js [--cycles 10000] [--burst 100] [--bursts N] [--agents 8]
//       [--linger-ms 20] [--max-seconds 600] [--step-timeout-ms 15000] [--warmup 500]
//       [--rss-limit-mb 30] [--seed 1] [--no-rss-check]
//
// The script re-runs itself with --expose-gc when node was started without it.

const { spawn } = require('node:child_process')

if (typeof global.gc !== 'function') {
  const child = spawn(process.execPath, ['--expose-gc', ...process.execArgv, __filename, ...process.argv.slice(2)], { stdio: 'inherit' })
  const forward = (signal) => child.kill(signal)
  process.on('SIGINT', forward)
  process.on('SIGTERM', forward)
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)))
  return
}

const { runChurn } = require('../__test__/support/churn')

const USAGE = `usage: node scripts/soak-churn.js [--cycles N] [--burst 100] [--bursts N] [--agents 8]
  [--linger-ms 20] [--max-seconds 600] [--step-timeout-ms 15000] [--warmup 500]
  [--rss-limit-mb 30] [--frame-interval-ms 50] [--seed 1] [--no-rss-check]`

function parseArgs(argv) {
  const names = {
    '--cycles': 'cycles',
    '--burst': 'burstSize',
    '--bursts': 'bursts',
    '--agents': 'agents',
    '--linger-ms': 'lingerMs',
    '--max-seconds': 'maxSeconds',
    '--step-timeout-ms': 'stepTimeoutMs',
    '--warmup': 'warmupCycles',
    '--rss-limit-mb': 'rssLimitMb',
    '--frame-interval-ms': 'frameIntervalMs',
    '--seed': 'seed',
  }
  const options = {}
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]
    if (arg === '--help' || arg === '-h') {
      console.log(USAGE)
      process.exit(0)
    }
    if (arg === '--no-rss-check') {
      options.checkRss = false
      continue
    }
    let value
    const eq = arg.indexOf('=')
    if (eq > 0) [arg, value] = [arg.slice(0, eq), arg.slice(eq + 1)]
    else value = argv[++i]
    const name = names[arg]
    const number = Number(value)
    if (!name || value === undefined || !Number.isFinite(number) || number < 0) {
      console.error(`bad argument ${arg} ${value ?? ''}\n${USAGE}`)
      process.exit(64)
    }
    options[name] = number
  }
  return options
}

async function main() {
  const options = parseArgs(process.argv.slice(2))
  const maxSeconds = options.maxSeconds ?? 600
  // Hard limit: should the run itself hang past its own limit (cleanup included), stop anyway.
  const hard = setTimeout(() => {
    console.error(`soak-churn: still running ${maxSeconds + 60} s after the start; giving up`)
    process.exit(2)
  }, (maxSeconds + 60) * 1000)
  hard.unref()
  const log = (line) => console.error(`[soak-churn] ${line}`)
  log(`starting: ${JSON.stringify(options)}`)
  const summary = await runChurn({ ...options, log })
  console.log(JSON.stringify(summary, null, 2))
  if (!summary.ok) {
    log(`FAILED:\n  ${summary.failures.join('\n  ')}`)
    process.exitCode = 1
  } else {
    log(`ok: ${summary.connections} cycles, ${summary.transitions} transitions in ${summary.durationS} s`)
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})

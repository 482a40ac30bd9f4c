'use strict'
// What the bench scripts share: their flag parser, their --help (the file's head comment) and
// their /proc readings (CPU time of a
// process, a thread, a process tree and the machine; resident memory; process liveness).
// Linux only; every reader returns null (or 0 for a tree) when the process is gone.

const fs = require('node:fs')

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ: 100 on every Linux build we run on). */
const CLK_TCK = 100

/** Prints the head comment of the script `file` (after its first line): its --help. */
function printHeadComment(file) {
  const lines = fs.readFileSync(file, 'utf8').split('\n').slice(1)
  const head = lines.slice(0, lines.findIndex((l) => !l.startsWith('//')))
  process.stdout.write(head.map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n')
}

/**
 * `--name value` and `--flag` arguments into an object (`{ name: 'value', flag: true }`): a
 * value is the next argument unless it starts with `--`. Anything else throws.
 */
function parseFlags(argv) {
  const flags = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${arg}`)
    const next = argv[i + 1]
    if (next !== undefined && !next.startsWith('--')) {
      flags[arg.slice(2)] = next
      i++
    } else {
      flags[arg.slice(2)] = true
    }
  }
  return flags
}

/** The fields of /proc/<pid>/stat after the command name (field 3, the state, is [0]). */
function statFields(file) {
  const stat = fs.readFileSync(file, 'utf8')
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
}

/** user+sys seconds of a process (all its threads, dead ones included; not its children). */
function processCpuSeconds(pid) {
  try {
    const fields = statFields(`/proc/${pid}/stat`)
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK
  } catch {
    return null
  }
}

/** On-CPU seconds of the main thread (the JS event loop of a Node process), from schedstat (ns); stat as fallback. */
function mainThreadCpuSeconds(pid) {
  try {
    return Number(fs.readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e9
  } catch {
    try {
      const fields = statFields(`/proc/${pid}/task/${pid}/stat`)
      return (Number(fields[11]) + Number(fields[12])) / CLK_TCK
    } catch {
      return null
    }
  }
}

/** On-CPU and run-queue-wait seconds of a process's threads named `name` (schedstat, ns). */
function threadSchedSeconds(pid, name) {
  let cpu = 0
  let wait = 0
  let threads = 0
  let tasks = []
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`)
  } catch {
    return null
  }
  for (const tid of tasks) {
    try {
      const comm = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()
      if (comm !== name) continue
      const [onCpu, queued] = fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ').map(Number)
      cpu += onCpu / 1e9
      wait += queued / 1e9
      threads += 1
    } catch {}
  }
  return { cpu, wait, threads }
}

/** Every process now: pid → { ppid, cpu (user+sys seconds) }. */
function processTable() {
  const table = new Map()
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const fields = statFields(`/proc/${entry}/stat`)
      table.set(Number(entry), { ppid: Number(fields[1]), cpu: (Number(fields[11]) + Number(fields[12])) / CLK_TCK })
    } catch {}
  }
  return table
}

/** The pids of `roots` and of all their descendants alive now. */
function descendants(roots, table = processTable()) {
  const seen = new Set()
  const stack = [...roots]
  while (stack.length) {
    const pid = stack.pop()
    if (seen.has(pid)) continue
    seen.add(pid)
    for (const [child, info] of table) if (info.ppid === pid) stack.push(child)
  }
  return seen
}

/** user+sys seconds of a process and all its descendants alive now (Chromium's helpers). */
function treeCpuSeconds(root) {
  const table = processTable()
  let total = 0
  for (const pid of descendants([root], table)) total += table.get(pid)?.cpu ?? 0
  return total
}

/** Busy and total jiffies of the whole machine (/proc/stat). */
function machineTicks() {
  const fields = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  const total = fields.slice(0, 8).reduce((a, b) => a + b, 0)
  const idle = fields[3] + fields[4]
  return { busy: total - idle, total }
}

/** Machine busy time between two `machineTicks()`, in % of all CPUs. */
function machineBusyPct(machine0, machine1) {
  return (100 * (machine1.busy - machine0.busy)) / Math.max(1, machine1.total - machine0.total)
}

/**
 * CPU used meanwhile by processes outside a benchmark's own tree (another workload on the
 * machine), in % of one core: the machine's busy time minus `mineSeconds`, over `secs`.
 */
function otherCpuPct(machine0, machine1, mineSeconds, secs) {
  const busySeconds = (machine1.busy - machine0.busy) / CLK_TCK
  return Math.max(0, (100 * (busySeconds - mineSeconds)) / secs)
}

/** A `Vm…` line of /proc/<pid>/status in bytes (VmRSS now, VmHWM its peak since start). */
function statusBytes(pid, field) {
  try {
    const match = new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
    return match ? Number(match[1]) * 1024 : null
  } catch {
    return null
  }
}

const rssBytes = (pid) => statusBytes(pid, 'VmRSS')
const peakRssBytes = (pid) => statusBytes(pid, 'VmHWM')

/** Alive and not a zombie. */
function isRunning(pid) {
  try {
    return statFields(`/proc/${pid}/stat`)[0] !== 'Z'
  } catch {
    return false
  }
}

/** The direct children of a process (of its main thread). */
function childPids(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return []
  }
}

module.exports = {
  CLK_TCK,
  parseFlags,
  printHeadComment,
  processCpuSeconds,
  mainThreadCpuSeconds,
  threadSchedSeconds,
  processTable,
  descendants,
  treeCpuSeconds,
  machineTicks,
  machineBusyPct,
  otherCpuPct,
  rssBytes,
  peakRssBytes,
  isRunning,
  childPids,
}

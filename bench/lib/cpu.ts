import { readdirSync, readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'

/** Linux reports process times in clock ticks of 1/100 s on every platform Node supports here. */
const TICK_MS = 10

function stat(pid: number): { ppid: number; cpuMs: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may contain spaces: split after its closing parenthesis.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
    // utime, stime, and cutime, cstime: the latter hold the backends that already exited.
    return { ppid: Number(fields[1]), cpuMs: (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) * TICK_MS }
  } catch {
    return undefined
  }
}

/**
 * CPU time used so far by a process and its children that are still alive
 * (a Postgres server and its backends), in ms. Unlike throughput, CPU per
 * message hardly moves when other work shares the machine.
 */
export function treeCpuMs(root: number): number {
  const children = new Map<number, number[]>()
  for (const name of readdirSync('/proc')) {
    const pid = Number(name)
    if (!Number.isInteger(pid)) continue
    const info = stat(pid)
    if (!info) continue
    const list = children.get(info.ppid) ?? []
    list.push(pid)
    children.set(info.ppid, list)
  }
  let total = 0
  const stack = [root]
  while (stack.length > 0) {
    const pid = stack.pop()!
    total += stat(pid)?.cpuMs ?? 0
    stack.push(...(children.get(pid) ?? []))
  }
  return total
}

/** This process's own CPU so far (the bench's: it is the poster), in ms. */
export function ownCpuMs(): number {
  const { user, system } = process.cpuUsage()
  return (user + system) / 1000
}

export interface CpuShares {
  cores: number
  /** Each named process's CPU over the interval, as a share of one core. */
  shares: Record<string, number>
  /** CPU time the hypervisor gave to others while this VM's cores wanted it (steal), as a share of one core. */
  steal: number
}

/** The machine's steal time so far (ms), from /proc/stat's first line; NaN where there is none. */
function stealMs(): number {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/)
    // cpu user nice system idle iowait irq softirq steal …
    return Number(fields[8]) * TICK_MS
  } catch {
    return NaN
  }
}

/**
 * Who used the machine from now until the returned function is called: each
 * named process's CPU (given as a running total in ms) as a share of one
 * core. On two cores a latency figure means little without it: the load
 * generators, Postgres and the node take turns on the same cores, and how
 * full they were is what the figure mostly follows. (The machine's own busy
 * share from /proc/stat is sampled at each tick and reads low when the load
 * comes in short bursts, so the processes' sum stands in for it.)
 */
export function cpuShares(processes: Record<string, () => number>): () => CpuShares {
  const start = Object.fromEntries(Object.entries(processes).map(([name, cpuMs]) => [name, cpuMs()]))
  const steal0 = stealMs()
  const t0 = performance.now()
  return () => {
    const wallMs = performance.now() - t0
    return {
      cores: availableParallelism(),
      shares: Object.fromEntries(Object.entries(processes).map(([name, cpuMs]) => [name, (cpuMs() - start[name]!) / wallMs])),
      steal: (stealMs() - steal0) / wallMs,
    }
  }
}

/**
 * `1.63 of 2 cores: node 82%, postgres 36%, … of one core`, and the steal
 * when there was any: on a VM whose host is busy, the cores come and go
 * under every process at once (a P2 run with 6% of the machine's time
 * stolen had p50 21 ms, one with 0.1% had 3.2 ms, minutes apart), which no
 * figure here can tell apart from the app without it.
 */
export function describeShares({ cores, shares, steal }: CpuShares): string {
  const known = Object.entries(shares).filter(([, share]) => Number.isFinite(share))
  const total = known.reduce((sum, [, share]) => sum + share, 0)
  const stolen = Number.isFinite(steal) && steal >= 0.005 ? `; steal ${Math.round(steal * 100)}% of one core` : ''
  return `${total.toFixed(2)} of ${cores} cores: ${known.map(([name, share]) => `${name} ${Math.round(share * 100)}%`).join(', ')} of one core${stolen}`
}

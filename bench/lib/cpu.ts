import { readdirSync, readFileSync } from 'node:fs'

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

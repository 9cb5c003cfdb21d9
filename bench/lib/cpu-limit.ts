import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/**
 * `--cpus N`: the whole bench (this process and all it starts afterwards, the
 * embedded Postgres included) shares a CPU quota of N cores. A stand-in for a
 * slower host of this kind, on whatever host is at hand: the app's figures at
 * 500 msg/s need the same share of a smaller machine. It is not the same as
 * a slower CPU: each step runs at full speed, and a group that spends its
 * quota early in a period waits for the next one (the period is short, 10 ms,
 * so that wait stays under it).
 *
 * Needs root and a writable cgroup file system. Only v1's cpu controller
 * has been tried (this kind of machine mounts v1); the v2 path follows the
 * kernel's documentation and stops with the error it meets.
 */
export function limitCpus(cores: number, periodUs = 10_000): CpuLimit {
  const quotaUs = Math.round(cores * periodUs)
  const v1 = '/sys/fs/cgroup/cpu'
  const v2 = '/sys/fs/cgroup'
  try {
    if (existsSync(join(v1, 'cpu.cfs_quota_us'))) {
      const group = join(v1, 'live-tea-bench')
      mkdirSync(group, { recursive: true })
      writeFileSync(join(group, 'cpu.cfs_period_us'), String(periodUs))
      writeFileSync(join(group, 'cpu.cfs_quota_us'), String(quotaUs))
      writeFileSync(join(group, 'cgroup.procs'), String(process.pid))
      return new CpuLimit(cores, periodUs, join(group, 'cpu.stat'))
    }
    if (readFileSync(join(v2, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('cpu')) {
      // A child group has cpu.max only once the parent hands the controller down.
      writeFileSync(join(v2, 'cgroup.subtree_control'), '+cpu')
      const group = join(v2, 'live-tea-bench')
      mkdirSync(group, { recursive: true })
      writeFileSync(join(group, 'cpu.max'), `${quotaUs} ${periodUs}`)
      writeFileSync(join(group, 'cgroup.procs'), String(process.pid))
      return new CpuLimit(cores, periodUs, join(group, 'cpu.stat'))
    }
  } catch (error) {
    throw new Error(`--cpus ${cores}: could not set a CPU quota (needs root and a writable cgroup file system): ${(error as Error).message}`)
  }
  throw new Error(`--cpus ${cores}: no cgroup cpu controller found under /sys/fs/cgroup`)
}

export class CpuLimit {
  private readonly start: { periods: number; throttled: number }

  constructor(
    readonly cores: number,
    readonly periodUs: number,
    private readonly statFile: string,
  ) {
    this.start = this.read()
  }

  /** Periods since the start in which the bench ran out of its quota and waited. */
  describe(): string {
    const now = this.read()
    const periods = now.periods - this.start.periods
    const throttled = now.throttled - this.start.throttled
    return `CPU quota ${this.cores} cores (cgroup, ${this.periodUs / 1000} ms periods; out of quota in ${throttled.toLocaleString('en-US')} of ${periods.toLocaleString('en-US')} periods)`
  }

  private read(): { periods: number; throttled: number } {
    const fields = new Map(
      readFileSync(this.statFile, 'utf8')
        .trim()
        .split('\n')
        .map((line) => line.split(' ') as [string, string]),
    )
    return { periods: Number(fields.get('nr_periods') ?? NaN), throttled: Number(fields.get('nr_throttled') ?? NaN) }
  }
}

export interface LatencyWindowProps {
  windowMs: number
  /** Past this many samples in the window the oldest are dropped, so a burst cannot grow memory or sorting without bound. */
  maxSamples?: number
}

/** Exact percentiles of the durations observed in a sliding time window. */
export class LatencyWindow {
  private readonly windowMs: number
  private readonly maxSamples: number
  private times: number[] = []
  private durations: number[] = []

  constructor({ windowMs, maxSamples = 20_000 }: LatencyWindowProps) {
    this.windowMs = windowMs
    this.maxSamples = maxSamples
  }

  observe(durationMs: number, now = performance.now()): void {
    this.times.push(now)
    this.durations.push(durationMs)
    if (this.times.length > this.maxSamples * 2) this.trim(now)
  }

  /** Nearest-rank percentiles (0..100) of the window; undefined when nothing was observed in it. */
  percentiles(ranks: number[], now = performance.now()): (number | undefined)[] {
    this.trim(now)
    if (this.durations.length === 0) return ranks.map(() => undefined)
    const sorted = [...this.durations].sort((a, b) => a - b)
    return ranks.map((rank) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((rank / 100) * sorted.length) - 1))])
  }

  private trim(now: number): void {
    let start = 0
    while (start < this.times.length && this.times[start]! <= now - this.windowMs) start++
    start = Math.max(start, this.times.length - this.maxSamples)
    if (start > 0) {
      this.times = this.times.slice(start)
      this.durations = this.durations.slice(start)
    }
  }
}

/** Order statistics over a sample; `p` in 0..100. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]!
}

export function sortNumbers(values: Iterable<number>): Float64Array {
  return Float64Array.from(values).sort()
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  if (sorted.length === 0) return NaN
  const middle = sorted.length >> 1
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

/** A growable list of numbers without boxing (millions of latency samples). */
export class Samples {
  private data = new Float64Array(1024)
  length = 0

  push(value: number): void {
    if (this.length === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2)
      bigger.set(this.data)
      this.data = bigger
    }
    this.data[this.length++] = value
  }

  sorted(): Float64Array {
    return this.data.slice(0, this.length).sort()
  }
}

/**
 * Milliseconds on a clock that every process on this machine shares: the
 * kernel's monotonic clock. (`performance.timeOrigin + performance.now()`
 * reads the wall clock once, when each process starts: when the wall clock
 * was corrected between the start of the poster and of the SSE clients,
 * every latency of a run came out shifted by the correction, ~500 ms in
 * both the app and its baseline.)
 */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

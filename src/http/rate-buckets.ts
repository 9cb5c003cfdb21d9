import { LRUCache } from 'lru-cache'

/**
 * Token buckets by key (a person, an address): a burst, then a steady rate.
 * `take` answers how many seconds to wait, 0 to go ahead (and takes one).
 * Bounded memory: the least recently seen keys go first, which only ever
 * forgives a key, never blocks one.
 */
export class RateBuckets {
  private readonly buckets: LRUCache<string, { tokens: number; at: number }>

  constructor(
    private readonly burst: number,
    private readonly perSecond: number,
    max = 50_000,
  ) {
    this.buckets = new LRUCache({ max })
  }

  take(key: string): number {
    const now = Date.now()
    const bucket = this.buckets.get(key) ?? { tokens: this.burst, at: now }
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond)
    bucket.at = now
    this.buckets.set(key, bucket)
    if (bucket.tokens < 1) return Math.max(1, Math.ceil((1 - bucket.tokens) / this.perSecond))
    bucket.tokens -= 1
    return 0
  }
}

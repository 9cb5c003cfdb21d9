import type pg from 'pg'

/**
 * Sends `pg_notify(channel, '')` after commits, coalesced: at most one in
 * flight per process and at most one per `spacingMs`, and every request
 * that arrives meanwhile folds into one follow-up. A NOTIFY takes a
 * cluster-wide lock at commit; one per write would serialize all writers,
 * and at a few hundred lone appends a second it was a query of its own for
 * almost every post. The notification is only a wake-up hint for other
 * nodes' projectors (they also poll, and this node's own projector was
 * woken at commit), so a few milliseconds' wait or a lost payload costs
 * nothing.
 */
export class CoalescedNotify {
  private inFlight = false
  private again = false
  private timer: NodeJS.Timeout | undefined
  private lastAt = -Infinity

  constructor(
    private readonly pool: pg.Pool,
    private readonly channel: string,
    private readonly onError: (error: unknown) => void = () => {},
    private readonly spacingMs = 0,
  ) {}

  hint(): void {
    if (this.inFlight || this.timer) {
      this.again = true
      return
    }
    const wait = this.lastAt + this.spacingMs - performance.now()
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = undefined
        this.send()
      }, wait)
      this.timer.unref()
      return
    }
    this.send()
  }

  private send(): void {
    this.inFlight = true
    this.again = false
    this.lastAt = performance.now()
    this.pool
      .query('select pg_notify($1, $2)', [this.channel, ''])
      .catch(this.onError)
      .finally(() => {
        this.inFlight = false
        if (this.again) this.hint()
      })
  }
}

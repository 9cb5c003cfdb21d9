import type pg from 'pg'

/**
 * Sends `pg_notify(channel, '')` after commits, coalesced: at most one in
 * flight per process, and every request that arrives meanwhile folds into one
 * follow-up. A NOTIFY takes a cluster-wide lock at commit; one per write
 * would serialize all writers. The notification is only a wake-up hint
 * (listeners also poll), so losing the payload costs nothing.
 */
export class CoalescedNotify {
  private inFlight = false
  private again = false

  constructor(
    private readonly pool: pg.Pool,
    private readonly channel: string,
    private readonly onError: (error: unknown) => void = () => {},
  ) {}

  hint(): void {
    if (this.inFlight) {
      this.again = true
      return
    }
    this.inFlight = true
    this.pool
      .query('select pg_notify($1, $2)', [this.channel, ''])
      .catch(this.onError)
      .finally(() => {
        this.inFlight = false
        if (this.again) {
          this.again = false
          this.hint()
        }
      })
  }
}

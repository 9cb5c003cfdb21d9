import { sql } from 'kysely'
import type { DB } from '../db/database.js'
import type { Tx } from '../event-store/event-store.js'

/** A place in the log, in projector order: (transaction_id, global_position). */
export interface Checkpoint {
  txid: string
  gp: number
}

/** What one batch projected. */
export interface ProjectedBatch {
  /** Events the batch covered (every type, projected or not). */
  count: number
  /** The last event covered, the next checkpoint; undefined when count is 0. */
  last?: Checkpoint
  /** Per stream key the projection cares about (a chat), the highest version it now shows. */
  heads: Map<string, number>
}

/**
 * A read model the projector keeps up to date. It projects in SQL, on the
 * server: events never travel to the app and back. The projector decides
 * which events (`committedAfter`); the projection decides what they become.
 */
export interface Projection {
  name: string
  /**
   * Projects the `committedAfter(after, limit)` events inside the projector's
   * transaction. Must be idempotent: a batch may be projected again after a
   * crash between its writes and the checkpoint's.
   */
  project(tx: Tx, after: Checkpoint, limit: number): Promise<ProjectedBatch>
  /** Empties the read model, inside the rebuild's transaction. */
  reset(tx: Tx): Promise<void>
}

export interface ProjectorProps {
  db: DB
  projection: Projection
  batchSize?: number
  /** Safety net when a wake-up hint is lost. */
  pollIntervalMs?: number
  /**
   * How long a wake-up may wait before it drains (0: at once). Under load a
   * drain after every append projects a few events at a time, each batch a
   * transaction of its own; a projection nobody reads live (search) waits a
   * moment and takes many in one batch instead.
   */
  settleMs?: number
  /**
   * Drains start at least this far apart (0: no spacing). The first wake-up
   * after a quiet spell drains at once; under load, the wake-ups of the next
   * few milliseconds fold into one batch, instead of a transaction of six
   * round trips for each append.
   */
  spacingMs?: number
  /** Called after each committed batch. */
  onProjected?: (batch: ProjectedBatch, durationMs: number) => void
  onError?: (error: unknown) => void
}

/**
 * The gap-free read, as a query for a projection to build on: at most
 * `limit` events after `after` whose transactions have all ended (below the
 * snapshot's xmin), in (transaction_id, global_position) order. Columns:
 * transaction_id, global_position, stream_id, stream_version, event_id,
 * event_type, data, metadata, recorded_at.
 */
export function committedAfter(after: Checkpoint, limit: number) {
  return sql`
    select transaction_id, global_position, stream_id, stream_version, event_id, event_type, data, metadata, recorded_at
    from events
    where (transaction_id, global_position) > (${after.txid}::xid8, ${after.gp}::bigint)
      and transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    order by transaction_id, global_position
    limit ${limit}
  `
}

/**
 * Keeps one projection up to date with the event log, gap-free.
 *
 * It reads only events whose transaction id is below the snapshot's xmin
 * (every transaction below it has ended, so nothing can still commit behind
 * the cursor), in (transaction_id, global_position) order after its
 * checkpoint. A plain `global_position > n` cursor would skip events whose
 * sequence number was taken before, but committed after, the last one read.
 *
 * Each batch is one transaction that locks the checkpoint row, so several
 * app nodes can run the same projector safely: they take turns.
 *
 * @example
 * const projector = new Projector({ db, projection: messagesProjection })
 * await projector.start()   // drains now, then on every wake() and poll
 * projector.wake()          // after an append, or on a NOTIFY
 */
export class Projector {
  private readonly db: DB
  private readonly projection: Projection
  private readonly batchSize: number
  private readonly pollIntervalMs: number
  private readonly settleMs: number
  private readonly spacingMs: number
  private settleTimer: NodeJS.Timeout | undefined
  private lastDrainAt = -Infinity
  /** This node appended since the last batch began: its next batch skips the look for anything new. */
  private appended = false
  private readonly onProjected: NonNullable<ProjectorProps['onProjected']>
  private readonly onError: NonNullable<ProjectorProps['onError']>
  private draining: Promise<void> | undefined
  private wakeAgain = false
  private stopped = true
  private pollTimer: NodeJS.Timeout | undefined
  /** The checkpoint after the last batch this process committed. */
  position: Checkpoint | undefined
  lastBatchAt: Date | undefined

  constructor({ db, projection, batchSize = 1000, pollIntervalMs = 500, settleMs = 0, spacingMs = 0, onProjected = () => {}, onError = () => {} }: ProjectorProps) {
    this.db = db
    this.projection = projection
    this.batchSize = batchSize
    this.pollIntervalMs = pollIntervalMs
    this.settleMs = settleMs
    this.spacingMs = spacingMs
    this.onProjected = onProjected
    this.onError = onError
  }

  get name(): string {
    return this.projection.name
  }

  get running(): boolean {
    return !this.stopped
  }

  /** Ensures the checkpoint row, then drains in the background (now, on wake(), and every poll). */
  async start(): Promise<void> {
    this.stopped = false
    await this.ensureCheckpoint()
    this.wake()
    this.pollTimer = setInterval(() => this.wake(), this.pollIntervalMs)
    this.pollTimer.unref()
    // Not awaiting the first drain: a node with a large backlog serves (and
    // says "not ready" on /readyz) instead of being silent until caught up.
  }

  /** Stops after the batch in progress. */
  async stop(): Promise<void> {
    this.stopped = true
    clearInterval(this.pollTimer)
    clearTimeout(this.settleTimer)
    this.settleTimer = undefined
    await this.draining
  }

  /**
   * Asks for a drain. Calls during a drain fold into one more pass; calls
   * within settleMs (or spacingMs of the last drain) fold into one drain.
   * `appended`: this node just committed events, so there is something to
   * project (no need to look first).
   */
  wake(appended = false): void {
    if (this.stopped) return
    if (appended) this.appended = true
    if (this.draining) {
      this.wakeAgain = true
      return
    }
    if (this.settleTimer) return
    const delay = Math.max(this.settleMs, this.lastDrainAt + this.spacingMs - performance.now())
    if (delay <= 0) return this.drain()
    this.settleTimer = setTimeout(() => {
      this.settleTimer = undefined
      if (!this.stopped && !this.draining) this.drain()
    }, delay)
  }

  private drain(): void {
    this.lastDrainAt = performance.now()
    this.draining = this.drainLoop().finally(() => {
      this.draining = undefined
      // Woken during the drain: one more, when settling and spacing allow.
      if (this.wakeAgain) {
        this.wakeAgain = false
        this.wake()
      }
    })
  }

  /** Projects everything committed so far, running or not; resolves when caught up. */
  async catchUp(): Promise<void> {
    while (this.draining) await this.draining
    await this.drainLoop(true)
  }

  private async drainLoop(evenIfStopped = false): Promise<void> {
    try {
      while (evenIfStopped || !this.stopped) {
        if ((await this.projectBatch()) < this.batchSize) break
      }
    } catch (error) {
      if (evenIfStopped) throw error
      // The poll timer tries again (not every wake-up that came meanwhile, at once: the database may be down).
      this.wakeAgain = false
      this.onError(error)
    }
  }

  /** One batch, one transaction. Returns how many events it covered. */
  async projectBatch(): Promise<number> {
    const started = performance.now()
    // Most wake-ups after the first of a burst find nothing new (this node's
    // own NOTIFY, the poll): one query says so, instead of a transaction
    // that locks the checkpoint to read nothing. The checkpoint only moves
    // forward, so nothing after it is missed by looking after this position.
    const appended = this.appended
    this.appended = false
    if (this.position && !appended && !(await this.anythingAfter(this.position))) return 0
    const { batch, from } = await this.db.transaction().execute(async (tx) => {
      const from = await this.lockCheckpoint(tx)
      const projected = await this.projection.project(tx, from, this.batchSize)
      if (projected.last) await this.moveCheckpoint(tx, projected.last)
      return { batch: projected, from }
    })
    this.position = batch.last ?? from
    if (batch.last) {
      this.lastBatchAt = new Date()
      this.onProjected(batch, performance.now() - started)
    }
    return batch.count
  }

  /**
   * Rebuilds the read model from the first event, in ONE transaction that
   * holds the checkpoint row lock: a live app keeps reading the old rows
   * until the commit, and its projectors wait instead of racing the rebuild.
   * The same projection as live batches, in larger ones.
   */
  async rebuild({ batchSize = 50_000, onProgress }: { batchSize?: number; onProgress?: (projected: number) => void } = {}): Promise<number> {
    await this.ensureCheckpoint()
    return this.db.transaction().execute(async (tx) => {
      await this.lockCheckpoint(tx)
      await this.projection.reset(tx)
      let from: Checkpoint = { txid: '0', gp: 0 }
      let total = 0
      for (;;) {
        const batch = await this.projection.project(tx, from, batchSize)
        if (!batch.last) break
        from = batch.last
        total += batch.count
        onProgress?.(total)
        if (batch.count < batchSize) break
      }
      await this.moveCheckpoint(tx, from)
      return total
    })
  }

  private async anythingAfter(position: Checkpoint): Promise<boolean> {
    const { rows } = await sql`select 1 from (${committedAfter(position, 1)}) as next`.execute(this.db)
    return rows.length > 0
  }

  private async moveCheckpoint(tx: Tx, to: Checkpoint): Promise<void> {
    await tx
      .updateTable('projector_checkpoints')
      .set({ last_txid: to.txid, last_gp: to.gp, updated_at: sql`now()` })
      .where('name', '=', this.projection.name)
      .execute()
  }

  private async ensureCheckpoint(): Promise<void> {
    await this.db.insertInto('projector_checkpoints').values({ name: this.projection.name }).onConflict((oc) => oc.column('name').doNothing()).execute()
  }

  private async lockCheckpoint(tx: Tx): Promise<Checkpoint> {
    const row = await tx
      .selectFrom('projector_checkpoints')
      .select(['last_txid', 'last_gp'])
      .where('name', '=', this.projection.name)
      .forUpdate()
      .executeTakeFirstOrThrow()
    return { txid: row.last_txid, gp: Number(row.last_gp) }
  }
}

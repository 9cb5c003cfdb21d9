import { sql } from 'kysely'
import type { DB } from '../db/database.js'
import type { StoredEvent, Tx } from '../event-store/event-store.js'

/** An event as the projector sees it: with its place in the global, commit-ordered read. */
export interface LoggedEvent extends StoredEvent {
  transactionId: string
  globalPosition: number
}

/** A read model the projector keeps up to date. */
export interface Projection {
  name: string
  /** Applies one batch inside the projector's transaction. Must be idempotent. */
  apply(tx: Tx, events: LoggedEvent[]): Promise<void>
  /** Empties the read model, inside the rebuild's transaction. */
  reset(tx: Tx): Promise<void>
  /**
   * Optional, for rebuilds: projects every event whose transaction id is
   * below `xmin` into the emptied read model in set-based SQL, producing the
   * rows `apply` would have, and returns how many events it projected.
   */
  replayBelow?(tx: Tx, xmin: string): Promise<number>
}

export interface ProjectorProps {
  db: DB
  projection: Projection
  batchSize?: number
  /** Safety net when a wake-up hint is lost. */
  pollIntervalMs?: number
  /** Called after each committed batch with its events. */
  onProjected?: (events: LoggedEvent[], durationMs: number) => void
  onError?: (error: unknown) => void
}

interface Checkpoint {
  txid: string
  gp: number
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
  private readonly onProjected: NonNullable<ProjectorProps['onProjected']>
  private readonly onError: NonNullable<ProjectorProps['onError']>
  private draining: Promise<void> | undefined
  private wakeAgain = false
  private stopped = true
  private pollTimer: NodeJS.Timeout | undefined
  /** The checkpoint after the last batch this process committed. */
  position: Checkpoint | undefined
  lastBatchAt: Date | undefined

  constructor({ db, projection, batchSize = 1000, pollIntervalMs = 500, onProjected = () => {}, onError = () => {} }: ProjectorProps) {
    this.db = db
    this.projection = projection
    this.batchSize = batchSize
    this.pollIntervalMs = pollIntervalMs
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
    await this.draining
  }

  /** Asks for a drain. Calls during a drain fold into one more pass. */
  wake(): void {
    if (this.stopped) return
    if (this.draining) {
      this.wakeAgain = true
      return
    }
    this.draining = this.drainLoop().finally(() => (this.draining = undefined))
  }

  /** Projects everything committed so far, running or not; resolves when caught up. */
  async catchUp(): Promise<void> {
    while (this.draining) await this.draining
    await this.drainLoop(true)
  }

  private async drainLoop(evenIfStopped = false): Promise<void> {
    do {
      this.wakeAgain = false
      try {
        while (evenIfStopped || !this.stopped) {
          if ((await this.projectBatch()) < this.batchSize) break
        }
      } catch (error) {
        if (evenIfStopped) throw error
        // The poll timer (or the next wake-up) tries again.
        this.onError(error)
        return
      }
    } while (this.wakeAgain && !this.stopped)
  }

  /** One batch, one transaction. Returns how many events it projected. */
  async projectBatch(): Promise<number> {
    const started = performance.now()
    const events = await this.db.transaction().execute(async (tx) => {
      const from = await this.lockCheckpoint(tx)
      const batch = await readCommitted(tx, from, this.batchSize)
      if (batch.length === 0) return batch
      await this.projection.apply(tx, batch)
      const last = batch[batch.length - 1]!
      await tx
        .updateTable('projector_checkpoints')
        .set({ last_txid: last.transactionId, last_gp: last.globalPosition, updated_at: sql`now()` })
        .where('name', '=', this.projection.name)
        .execute()
      this.position = { txid: last.transactionId, gp: last.globalPosition }
      return batch
    })
    if (events.length > 0) {
      this.lastBatchAt = new Date()
      this.onProjected(events, performance.now() - started)
    }
    return events.length
  }

  /**
   * Rebuilds the read model from the first event, in ONE transaction that
   * holds the checkpoint row lock: a live app keeps reading the old rows
   * until the commit, and its projectors wait instead of racing the rebuild.
   */
  async rebuild({ batchSize = 5000, onProgress }: { batchSize?: number; onProgress?: (projected: number) => void } = {}): Promise<number> {
    await this.ensureCheckpoint()
    return this.db.transaction().execute(async (tx) => {
      await this.lockCheckpoint(tx)
      await this.projection.reset(tx)
      let from: Checkpoint = { txid: '0', gp: 0 }
      let total = 0
      if (this.projection.replayBelow) {
        // One horizon for both statements: each statement takes a new snapshot.
        const { rows } = await sql<{ xmin: string }>`select pg_snapshot_xmin(pg_current_snapshot())::text as xmin`.execute(tx)
        const xmin = rows[0]!.xmin
        total = await this.projection.replayBelow(tx, xmin)
        const last = await sql<{ txid: string; gp: number }>`
          select transaction_id::text as txid, global_position as gp from events
          where transaction_id < ${xmin}::xid8
          order by transaction_id desc, global_position desc
          limit 1
        `.execute(tx)
        if (last.rows[0]) from = { txid: last.rows[0].txid, gp: Number(last.rows[0].gp) }
        onProgress?.(total)
      }
      for (;;) {
        const batch = await readCommitted(tx, from, batchSize)
        if (batch.length === 0) break
        await this.projection.apply(tx, batch)
        const last = batch[batch.length - 1]!
        from = { txid: last.transactionId, gp: last.globalPosition }
        total += batch.length
        onProgress?.(total)
      }
      await tx
        .updateTable('projector_checkpoints')
        .set({ last_txid: from.txid, last_gp: from.gp, updated_at: sql`now()` })
        .where('name', '=', this.projection.name)
        .execute()
      return total
    })
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

/** Events after the checkpoint whose transactions have all ended, in commit-safe order. */
async function readCommitted(tx: Tx, from: Checkpoint, limit: number): Promise<LoggedEvent[]> {
  const { rows } = await sql<{
    global_position: number
    transaction_id: string
    stream_id: string
    stream_version: number
    event_id: string
    event_type: string
    data: Record<string, unknown>
    metadata: Record<string, unknown>
    recorded_at: Date
  }>`
    select global_position, transaction_id::text as transaction_id, stream_id, stream_version, event_id, event_type, data, metadata, recorded_at
    from events
    where (transaction_id, global_position) > (${from.txid}::xid8, ${from.gp}::bigint)
      and transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    order by transaction_id, global_position
    limit ${limit}
  `.execute(tx)
  return rows.map((row) => ({
    transactionId: row.transaction_id,
    globalPosition: Number(row.global_position),
    streamId: row.stream_id,
    version: Number(row.stream_version),
    eventId: row.event_id,
    type: row.event_type,
    data: row.data,
    metadata: row.metadata,
    recordedAt: row.recorded_at,
  }))
}

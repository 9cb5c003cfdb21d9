import { sql, type RawBuilder } from 'kysely'
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
  /**
   * The claim held: the checkpoint moved from the batch's start to `last`
   * and the batch was written. False when another projector moved the
   * checkpoint first: nothing was written. (True for an empty batch.)
   */
  claimed: boolean
}

/**
 * `claimed as (…)`, the first CTE of a batch's write statement: moves the
 * checkpoint to `to` if it is still where the batch started, and returns one
 * row when it did. It is an UPDATE, so it row-locks the checkpoint: a second
 * projector's claim from the same start waits for the first to commit, then
 * finds the checkpoint moved and returns nothing.
 */
export type Claim = (to: Checkpoint) => RawBuilder<unknown>

/** The claim of a batch of `projection` that starts at `from`. */
export function checkpointClaim(projection: string, from: Checkpoint): Claim {
  return (to) => sql`claimed as (
    update projector_checkpoints set last_txid = ${to.txid}::xid8, last_gp = ${to.gp}, updated_at = now()
    where name = ${projection} and last_txid = ${from.txid}::xid8 and last_gp = ${from.gp}
    returning 1
  )`
}

/**
 * A read model the projector keeps up to date. The projector decides which
 * events (`committedAfter`) and where a batch starts; the projection decides
 * what they become.
 */
export interface Projection {
  name: string
  /**
   * Projects the `committedAfter(after, limit)` events: reads them (and any
   * rows it needs) with `db`, then writes the whole batch in ONE statement
   * that begins `with ${claim(last)}, …`, where every write is guarded by
   * `where exists (select from claimed)` (so a claim that failed writes
   * nothing, and the claim takes the checkpoint's lock before any write
   * does) and that returns `(select count(*) from claimed) as claimed`. A
   * non-empty batch always runs that statement, even with nothing of its own
   * to write: it is what moves the checkpoint. Must be idempotent, for a
   * checkpoint set back by hand.
   */
  project(db: DB, after: Checkpoint, limit: number, claim: Claim): Promise<ProjectedBatch>
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
   * drain after every append projects a few events at a time, each batch
   * two statements of its own; a projection nobody reads live (search) waits a
   * moment and takes many in one batch instead.
   */
  settleMs?: number
  /**
   * Drains start at least this far apart (0: no spacing). The first wake-up
   * after a quiet spell drains at once; under load, the wake-ups of the next
   * few milliseconds fold into one batch, instead of a batch for each
   * append.
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
 * Each batch is two statements, no transaction held between them: a read
 * from the checkpoint as this process last knew it, then one statement that
 * writes the whole batch and moves the checkpoint by compare-and-set (the
 * claim). Several app nodes can run the same projector safely: of two
 * batches from the same checkpoint, the second's claim waits on the
 * first's row lock, finds the checkpoint moved and writes nothing, and that
 * projector reads again from where the checkpoint is now. (A transaction
 * holding the row lock from the read to the write took six round trips a
 * batch instead of two: under a steady stream of posts, about two fifths
 * of the app's queries.)
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
  private readonly onProjected: NonNullable<ProjectorProps['onProjected']>
  private readonly onError: NonNullable<ProjectorProps['onError']>
  private draining: Promise<void> | undefined
  private wakeAgain = false
  private stopped = true
  private pollTimer: NodeJS.Timeout | undefined
  /** The checkpoint as this process last saw it (after its last batch); undefined until read. */
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
   */
  wake(): void {
    if (this.stopped) return
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

  /** One batch: a read, then one statement that writes it. Returns how many events it covered. */
  async projectBatch(): Promise<number> {
    const started = performance.now()
    for (;;) {
      const from = this.position ?? (await this.readCheckpoint(this.db))
      const batch = await this.projection.project(this.db, from, this.batchSize, checkpointClaim(this.projection.name, from))
      if (!batch.last) {
        this.position = from
        return 0
      }
      if (!batch.claimed) {
        // Another projector wrote these first (or the checkpoint was set back): go on from where it is now.
        this.position = undefined
        continue
      }
      this.position = batch.last
      this.lastBatchAt = new Date()
      this.onProjected(batch, performance.now() - started)
      return batch.count
    }
  }

  /**
   * Rebuilds the read model from the first event, in ONE transaction that
   * holds the checkpoint row lock: a live app keeps reading the old rows
   * until the commit, and its projectors' claims wait instead of racing the
   * rebuild (then find the checkpoint moved, and read again from there).
   * The same projection as live batches, in larger ones.
   */
  async rebuild({ batchSize = 50_000, onProgress }: { batchSize?: number; onProgress?: (projected: number) => void } = {}): Promise<number> {
    await this.ensureCheckpoint()
    return this.db.transaction().execute(async (tx) => {
      await this.readCheckpoint(tx, true)
      await this.projection.reset(tx)
      let from: Checkpoint = { txid: '0', gp: 0 }
      await this.moveCheckpoint(tx, from)
      let total = 0
      for (;;) {
        const batch = await this.projection.project(tx, from, batchSize, checkpointClaim(this.projection.name, from))
        if (!batch.last) break
        if (!batch.claimed) throw new Error(`rebuild of ${this.projection.name}: the checkpoint moved under its lock`)
        from = batch.last
        total += batch.count
        onProgress?.(total)
        if (batch.count < batchSize) break
      }
      return total
    })
  }

  /** The checkpoint as committed; `forUpdate`: and hold its row lock until the transaction ends (a rebuild). */
  private async readCheckpoint(db: DB, forUpdate = false): Promise<Checkpoint> {
    const query = db.selectFrom('projector_checkpoints').select(['last_txid', 'last_gp']).where('name', '=', this.projection.name)
    const row = await (forUpdate ? query.forUpdate() : query).executeTakeFirstOrThrow()
    return { txid: row.last_txid, gp: Number(row.last_gp) }
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
}

import { sql } from 'kysely'
import type { DB } from '../db/database.js'

export interface ProjectorLag {
  /** Committed events after the projector's checkpoint. */
  events: number
  /** Age of the oldest of them; 0 when caught up. */
  seconds: number
}

/** Up to this many events behind, the lag is counted exactly; beyond, it is estimated from positions. */
export const LAG_COUNT_LIMIT = 10_000

/**
 * How far a projection is behind the log, read from its checkpoint and the
 * index the projector itself reads by, (transaction_id, global_position):
 * the cost grows with the lag, never with the size of the log. Beyond
 * LAG_COUNT_LIMIT the count is estimated from the head position (positions
 * can have holes, so it may overstate).
 *
 * "Seconds behind" is the age of the oldest unprojected event: it keeps
 * growing while the projector is stuck even when nothing new is written.
 */
export async function readProjectorLag(db: DB, projection: string): Promise<ProjectorLag> {
  const { rows } = await sql<{ counted: number; estimated: number | null; oldest_age: number | null }>`
    with checkpoint as (
      select coalesce((select last_txid from projector_checkpoints where name = ${projection}), '0'::xid8) as txid,
             coalesce((select last_gp from projector_checkpoints where name = ${projection}), 0) as gp
    )
    select
      (select count(*) from (
        select 1 from events
        where (transaction_id, global_position) > ((select txid from checkpoint), (select gp from checkpoint))
        limit ${LAG_COUNT_LIMIT}
      ) as behind) as counted,
      (select max(global_position) from events) - (select gp from checkpoint) as estimated,
      (select extract(epoch from clock_timestamp() - recorded_at)::float8 from events
        where (transaction_id, global_position) > ((select txid from checkpoint), (select gp from checkpoint))
        order by transaction_id, global_position
        limit 1) as oldest_age
  `.execute(db)
  const row = rows[0]!
  const counted = Number(row.counted)
  const events = counted < LAG_COUNT_LIMIT ? counted : Math.max(counted, Number(row.estimated ?? 0))
  return { events, seconds: events === 0 ? 0 : Math.max(0, Number(row.oldest_age ?? 0)) }
}

/** Where an incremental count of the log has got to, in the projector's (transaction_id, global_position) order. */
export interface LogCursor {
  txid: string
  gp: number
}

export interface LogCount {
  events: number
  messages: number
  cursor: LogCursor
}

/**
 * Counts the events committed after `cursor`, gap-free the way the
 * projector reads: only transactions below the snapshot's xmin, so an event
 * that commits late behind the cursor is counted on a later call instead
 * of never. Both parts read the (transaction_id, global_position) index;
 * the first call (cursor 0) counts the whole log once.
 */
export async function countEventsAfter(db: DB, cursor: LogCursor): Promise<LogCount> {
  const { rows } = await sql<{ events: number; messages: number; last_txid: string | null; last_gp: number | null }>`
    with horizon as (select pg_snapshot_xmin(pg_current_snapshot()) as xmin),
    counted as (
      select count(*) as events, count(*) filter (where event_type = 'MessageSent') as messages
      from events
      where (transaction_id, global_position) > (${cursor.txid}::xid8, ${cursor.gp}::bigint)
        and transaction_id < (select xmin from horizon)
    ),
    last as (
      select transaction_id::text as last_txid, global_position as last_gp
      from events
      where (transaction_id, global_position) > (${cursor.txid}::xid8, ${cursor.gp}::bigint)
        and transaction_id < (select xmin from horizon)
      order by transaction_id desc, global_position desc
      limit 1
    )
    select counted.events, counted.messages, last.last_txid, last.last_gp from counted left join last on true
  `.execute(db)
  const row = rows[0]!
  return {
    events: Number(row.events),
    messages: Number(row.messages),
    cursor: row.last_txid === null ? cursor : { txid: row.last_txid, gp: Number(row.last_gp) },
  }
}

/** Chats with a message in the last `minutes` (the chats table is indexed by activity). */
export async function countActiveChats(db: DB, minutes: number): Promise<number> {
  const { rows } = await sql<{ active: number }>`
    select count(*) as active from chats where last_sent_at > now() - make_interval(mins => ${minutes})
  `.execute(db)
  return Number(rows[0]!.active)
}

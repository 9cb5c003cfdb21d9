import { randomUUID } from 'node:crypto'
import { sql, type Transaction } from 'kysely'
import type { Database, DB } from '../db/database.js'
import { prepared } from '../db/connect.js'

export type Tx = Transaction<Database>

/** What a decider emits: `{ type, data, metadata }`. */
export interface NewEvent {
  type: string
  data: object
  metadata: object
}

export interface StoredEvent {
  streamId: string
  version: number
  eventId: string
  type: string
  data: Record<string, unknown>
  metadata: Record<string, unknown>
  recordedAt: Date
}

export interface StreamAppend {
  streamId: string
  streamType: string
  /** The version the events were decided on: 0 for a stream that does not exist yet. */
  expectedVersion: number
  events: NewEvent[]
}

/** The stream moved past the expected version: reload, decide again. */
export class ConcurrencyConflict extends Error {
  constructor(streamIds: string[]) {
    super(`stream changed concurrently: ${streamIds.join(', ')}`)
    this.name = 'ConcurrencyConflict'
  }
}

/**
 * The write side's only door. Appends happen inside a transaction the caller
 * opens (so several commands can share one commit), in this order:
 * `lockStreams`, `readVersions` (and events newer than the caller's state),
 * decide, `append`. Within one stream, versions are gapless and commit in
 * order, because the transaction id is assigned after the stream lock.
 *
 * @example
 * await db.transaction().execute(async (tx) => {
 *   await lockStreams(tx, ['chat-tea'])
 *   const version = (await readVersions(tx, ['chat-tea'])).get('chat-tea') ?? 0
 *   const result = await append(tx, [{ streamId: 'chat-tea', streamType: 'chat', expectedVersion: version, events }])
 *   if ('moved' in result) throw new ConcurrencyConflict(['chat-tea'])
 * })
 */
export async function lockStreams(tx: Tx, streamIds: string[]): Promise<void> {
  // Writers of one stream queue here instead of failing a compare-and-set and
  // retrying. Locks are taken in lock-key order, so transactions that lock
  // several streams cannot deadlock each other. An advisory lock assigns no
  // transaction id: the id comes at the first write, after every lock.
  await sql`
    select pg_advisory_xact_lock(key)
    from (select distinct hashtextextended(id, 0) as key from unnest(${[...new Set(streamIds)]}::text[]) as id order by key) as keys
  `.execute(tx)
}

/** Current version of each stream; absent streams are left out (version 0). */
export async function readVersions(tx: Tx | DB, streamIds: string[]): Promise<Map<string, number>> {
  const rows = await tx.selectFrom('streams').select(['stream_id', 'version']).where('stream_id', 'in', streamIds).execute()
  return new Map(rows.map((row) => [row.stream_id, Number(row.version)]))
}

/** Events of several streams, each after its own version, in version order per stream. */
export async function readEventsAfter(tx: Tx | DB, ranges: { streamId: string; after: number }[]): Promise<StoredEvent[]> {
  if (ranges.length === 0) return []
  const { rows } = await sql<EventRecord>`
    select e.stream_id, e.stream_version, e.event_id, e.event_type, e.data, e.metadata, e.recorded_at
    from unnest(${ranges.map((range) => range.streamId)}::text[], ${ranges.map((range) => range.after)}::bigint[]) as r(stream_id, after)
    -- Lateral, so each stream's tail is an index range read (events_pkey): a
    -- plain join was planned as a scan of the whole log once it grew large.
    cross join lateral (
      select * from events
      where events.stream_id = r.stream_id and events.stream_version > r.after
      order by events.stream_version
    ) as e
    order by e.stream_id, e.stream_version
  `.execute(tx)
  return rows.map(toStoredEvent)
}

/** Reads one stream forwards from `after` (exclusive). */
export async function readStream(db: Tx | DB, streamId: string, { after = 0, limit = 1000 } = {}): Promise<StoredEvent[]> {
  const rows = await db
    .selectFrom('events')
    .select(['stream_id', 'stream_version', 'event_id', 'event_type', 'data', 'metadata', 'recorded_at'])
    .where('stream_id', '=', streamId)
    .where('stream_version', '>', after)
    .orderBy('stream_version')
    .limit(limit)
    .execute()
  return rows.map(toStoredEvent)
}

/** Reads one stream backwards: the `limit` events before `before` (exclusive), returned in version order. */
export async function readStreamBackwards(db: Tx | DB, streamId: string, { before, limit }: { before: number; limit: number }): Promise<StoredEvent[]> {
  const rows = await db
    .selectFrom('events')
    .select(['stream_id', 'stream_version', 'event_id', 'event_type', 'data', 'metadata', 'recorded_at'])
    .where('stream_id', '=', streamId)
    .where('stream_version', '<', before)
    .orderBy('stream_version', 'desc')
    .limit(limit)
    .execute()
  return rows.reverse().map(toStoredEvent)
}

/** The event a person's command id appended to a stream, if it did. */
export async function findCommand(db: Tx | DB, streamId: string, personId: string | undefined, commandId: string): Promise<StoredEvent | undefined> {
  const row = await db
    .selectFrom('events')
    .select(['stream_id', 'stream_version', 'event_id', 'event_type', 'data', 'metadata', 'recorded_at'])
    .where('stream_id', '=', streamId)
    .where(sql`coalesce(metadata ->> 'personId', '')`, '=', personId ?? '')
    .where(sql`metadata ->> 'commandId'`, '=', commandId)
    .where(sql<boolean>`metadata ? 'commandId'`)
    .executeTakeFirst()
  return row && toStoredEvent(row)
}

/**
 * The events of some messages of one stream, up to a version, in version
 * order: each message's first event (at its own version) and every event
 * whose `data.messageId` names it, found by index however long the stream.
 */
export async function readMessageEvents(db: Tx | DB, streamId: string, messageIds: number[], upTo: number): Promise<StoredEvent[]> {
  if (messageIds.length === 0) return []
  const { rows } = await sql<EventRecord>`
    select stream_id, stream_version, event_id, event_type, data, metadata, recorded_at
    from events where stream_id = ${streamId} and stream_version = any(${messageIds}::bigint[]) and stream_version <= ${upTo}
    union
    select stream_id, stream_version, event_id, event_type, data, metadata, recorded_at
    from events
    where stream_id = ${streamId} and data ? 'messageId' and (data ->> 'messageId')::bigint = any(${messageIds}::bigint[]) and stream_version <= ${upTo}
    order by stream_version
  `.execute(db)
  return rows.map(toStoredEvent)
}

/**
 * Appends the events of several streams, each at the version it was decided
 * on, in ONE statement: the `append_events` function takes the streams'
 * advisory locks (re-entrant: a caller that locked them already is fine),
 * compare-and-sets every stream's version and inserts, or writes nothing.
 * Every stream the decisions read is listed, also those that get no event, so
 * that what was decided on a cached state (duplicates, rate limits) is checked
 * against the log too. Never `ON CONFLICT DO NOTHING` on events: the primary
 * key (stream_id, stream_version) must fail loudly.
 *
 * Runs alone (autocommit: one round trip for a whole group of commands) or
 * inside a transaction. When a stream moved, `moved` holds each moved
 * stream's current version: reload, decide again.
 */
export async function append(db: Tx | DB, appends: StreamAppend[]): Promise<{ stored: StoredEvent[] } | { moved: Map<string, number> }> {
  if (appends.length === 0) return { stored: [] }
  const stored = toStore(appends)
  const { rows } = await sql<{ moved_stream_id: string; current_version: number }>`${prepared}
    select * from append_events(
      ${appends.map((a) => a.streamId)}::text[],
      ${appends.map((a) => a.streamType)}::text[],
      ${appends.map((a) => a.expectedVersion)}::bigint[],
      ${appends.map((a) => a.events.length)}::bigint[],
      ${stored.map((e) => e.streamId)}::text[],
      ${stored.map((e) => e.version)}::bigint[],
      ${stored.map((e) => e.eventId)}::uuid[],
      ${stored.map((e) => e.type)}::text[],
      ${stored.map((e) => JSON.stringify(e.data))}::jsonb[],
      ${stored.map((e) => JSON.stringify(e.metadata))}::jsonb[]
    )
  `.execute(db)
  if (rows.length > 0) return { moved: new Map(rows.map((row) => [row.moved_stream_id, Number(row.current_version)])) }
  return { stored }
}

function toStore(appends: StreamAppend[]): StoredEvent[] {
  const stored: StoredEvent[] = []
  for (const { streamId, expectedVersion, events } of appends) {
    events.forEach((event, index) => {
      stored.push({
        streamId,
        version: expectedVersion + index + 1,
        eventId: randomUUID(),
        type: event.type,
        data: event.data as Record<string, unknown>,
        metadata: event.metadata as Record<string, unknown>,
        recordedAt: new Date(),
      })
    })
  }
  return stored
}

/** An events row as pg returns it. */
export interface EventRecord {
  stream_id: string
  stream_version: number | string
  event_id: string
  event_type: string
  data: Record<string, unknown>
  metadata: Record<string, unknown>
  recorded_at: Date
}

export function toStoredEvent(row: EventRecord): StoredEvent {
  return {
    streamId: row.stream_id,
    version: Number(row.stream_version),
    eventId: row.event_id,
    type: row.event_type,
    data: row.data,
    metadata: row.metadata,
    recordedAt: row.recorded_at,
  }
}

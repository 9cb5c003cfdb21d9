import { sql } from 'kysely'
import type { DB } from '../db/database.js'
import { readMessageEvents, readVersions, type StoredEvent } from '../event-store/event-store.js'
import { streamIdOf, toChatEvent } from './chat-commands.js'
import { timeOf } from './chat.js'
import { foldMessage, type Message } from './messages-projection.js'

export interface ChatAsOf {
  chatId: string
  /** The chat version shown. */
  at: number
  /** When that version happened, by the clock of the command that made it. */
  atTime: Date
  /** The chat's version now. */
  head: number
  /** Oldest first: the `limit` latest messages sent at or before `at` (and before `before`, for older pages). */
  messages: Message[]
  hasOlder: boolean
}

/**
 * A chat as it was at version `at`, built from the log, never from the
 * current read model: the messages sent at or before `at`, each folded from
 * its own events up to `at` (content and reactions as they were then). A
 * message retracted at any time stays retracted: what was taken back is not
 * shown again by going back in time.
 *
 * The cost is bounded by the page, not the chat: the window's message ids
 * come from an index of MessageSent by version, their events from the
 * by-message index, and later retractions of those ids likewise.
 * Undefined when the chat has no version `at`.
 */
export async function chatAsOf(db: DB, chatId: string, at: number, { before, limit = 50 }: { before?: number; limit?: number } = {}): Promise<ChatAsOf | undefined> {
  const streamId = streamIdOf(chatId)
  const head = (await readVersions(db, [streamId])).get(streamId) ?? 0
  if (at < 1 || at > head) return undefined
  const upTo = Math.min(at, (before ?? at + 1) - 1)
  const [{ rows: sentRows }, { rows: atRows }] = await Promise.all([
    sql<{ stream_version: number }>`
      select stream_version from events
      where stream_id = ${streamId} and event_type = 'MessageSent' and stream_version <= ${upTo}
      order by stream_version desc
      limit ${limit + 1}
    `.execute(db),
    sql<{ event_type: string; data: Record<string, unknown>; metadata: Record<string, unknown>; recorded_at: Date }>`
      select event_type, data, metadata, recorded_at from events where stream_id = ${streamId} and stream_version = ${at}
    `.execute(db),
  ])
  const ids = sentRows.slice(0, limit).map((row) => Number(row.stream_version)).reverse()
  const atEvent = atRows[0]!
  const atTime = new Date(timeOf(toChatEvent({ streamId, version: at, eventId: '', type: atEvent.event_type, data: atEvent.data, metadata: atEvent.metadata, recordedAt: atEvent.recorded_at })))
  const [events, retractions] = await Promise.all([readMessageEvents(db, streamId, ids, at), laterRetractions(db, streamId, ids, at)])
  const messages = ids.map((id) => {
    const own = events.filter((event) => (event.version === id && event.type === 'MessageSent') || (event.type !== 'MessageSent' && Number(event.data.messageId) === id))
    const [sent, ...changes] = own
    const retraction = retractions.get(id)
    return foldMessage(sent!, retraction ? [...changes, retraction] : changes)
  })
  return { chatId, at, atTime: Number.isNaN(atTime.getTime()) ? atEvent.recorded_at : atTime, head, messages, hasOlder: sentRows.length > limit }
}

/** Retractions after `at` of these messages: a message taken back stays taken back in every view of the past. */
async function laterRetractions(db: DB, streamId: string, ids: number[], at: number): Promise<Map<number, StoredEvent>> {
  if (ids.length === 0) return new Map()
  const { rows } = await sql<{ stream_version: number; event_id: string; data: Record<string, unknown>; metadata: Record<string, unknown>; recorded_at: Date }>`
    select stream_version, event_id, data, metadata, recorded_at from events
    where stream_id = ${streamId} and data ? 'messageId' and (data ->> 'messageId')::bigint = any(${ids}::bigint[])
      and event_type = 'MessageRetracted' and stream_version > ${at}
  `.execute(db)
  return new Map(
    rows.map((row) => [
      Number(row.data.messageId),
      { streamId, version: Number(row.stream_version), eventId: row.event_id, type: 'MessageRetracted', data: row.data, metadata: row.metadata, recordedAt: row.recorded_at },
    ]),
  )
}

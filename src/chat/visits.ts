import { sql } from 'kysely'
import type { DB } from '../db/database.js'

/** A room a person has visited, with what they have not seen yet. */
export interface Room {
  chatId: string
  visitedAt: Date
  /** Messages by others sent after the version the person last saw (edits and reactions are not messages; retracted ones do not count). */
  unread: number
  messageCount: number
  lastSender: string | undefined
  lastSentAt: Date | undefined
}

/** Unread counts stop here ("999+"): counting a room's whole backlog is not worth a query that grows with it. */
export const UNREAD_CAP = 999

/**
 * Rows per statement when sightings are written. With 1,000 live streams a
 * flush is 1,000 rows, 20–47 ms of one Postgres backend in one statement
 * (P2, on two cores), and the appends that ran beside it took about 20 ms.
 * In statements of this size, one after the other, it is the same work in
 * steps of 4–12 ms.
 */
const ROWS_PER_STATEMENT = 100

/**
 * "New since your last visit": per person and chat, the last chat version
 * the person has seen, from the pages they loaded and the frames their
 * stream delivered. Sightings are kept in memory and written at most every
 * `flushMs` (one statement for everyone), not per message.
 *
 * @example
 * const before = await visits.lastSeen(personId, 'tea')   // for the "New" divider
 * visits.seen(personId, 'tea', head)
 */
export class Visits {
  private readonly db: DB
  private readonly flushMs: number
  private readonly onError: (error: unknown) => void
  private pending = new Map<string, Sighting>()
  /** Taken from `pending` by a flush and not written yet: still what the person has seen. */
  private readonly writing = new Map<string, Sighting>()
  private timer: NodeJS.Timeout | undefined
  private flushing: Promise<void> | undefined

  constructor({ db, flushMs = 2_000, onError = () => {} }: { db: DB; flushMs?: number; onError?: (error: unknown) => void }) {
    this.db = db
    this.flushMs = flushMs
    this.onError = onError
  }

  /** The person has seen the chat up to `version` (a page, or frames delivered). */
  seen(personId: string, chatId: string, version: number): void {
    const key = keyOf({ personId, chatId })
    const pending = this.pending.get(key)
    if (pending && pending.version >= version) {
      pending.at = new Date()
      return
    }
    this.pending.set(key, { personId, chatId, version, at: new Date() })
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined
        this.flushing = this.flush().catch(this.onError)
      }, this.flushMs)
      this.timer.unref()
    }
  }

  /** The last version the person saw of the chat, counting sightings not yet written; undefined on a first visit. */
  async lastSeen(personId: string, chatId: string): Promise<number | undefined> {
    // Memory first: a sighting written while the row is read is then counted from one or the other.
    const key = keyOf({ personId, chatId })
    const pending = Math.max(this.pending.get(key)?.version ?? -1, this.writing.get(key)?.version ?? -1)
    const row = await this.db.selectFrom('visits').select('seen_version').where('person_id', '=', personId).where('chat_id', '=', chatId).executeTakeFirst()
    if (row === undefined) return pending < 0 ? undefined : pending
    return Math.max(Number(row.seen_version), pending)
  }

  /** The first message by someone else after `seenVersion` that is still visible: where the "New" divider goes. */
  async firstUnseen(personId: string, chatId: string, seenVersion: number): Promise<number | undefined> {
    const { rows } = await sql<{ id: number | null }>`
      select min(message_id) as id from messages
      where chat_id = ${chatId} and message_id > ${seenVersion} and retracted_at is null and author_id is distinct from ${personId}
    `.execute(this.db)
    return rows[0]?.id === null || rows[0] === undefined ? undefined : Number(rows[0].id)
  }

  /** The rooms this person has visited, most recent first, with their unread counts. Nobody else's rooms. */
  async rooms(personId: string, limit = 20): Promise<Room[]> {
    // What was seen a moment ago counts: the person may come straight from a room.
    await this.flushing
    await this.flush()
    const { rows } = await sql<{ chat_id: string; visited_at: Date; unread: number; message_count: number | null; last_sender: string | null; last_sent_at: Date | null }>`
      select v.chat_id, v.visited_at, c.message_count, c.last_sender, c.last_sent_at,
             (select count(*) from (
                select 1 from messages m
                where m.chat_id = v.chat_id and m.message_id > v.seen_version and m.retracted_at is null and m.author_id is distinct from v.person_id
                limit ${UNREAD_CAP + 1}
              ) as unseen)::int as unread
      from visits v left join chats c on c.chat_id = v.chat_id
      where v.person_id = ${personId}
      order by v.visited_at desc
      limit ${limit}
    `.execute(this.db)
    return rows.map((row) => ({ chatId: row.chat_id, visitedAt: row.visited_at, unread: row.unread, messageCount: Number(row.message_count ?? 0), lastSender: row.last_sender ?? undefined, lastSentAt: row.last_sent_at ?? undefined }))
  }

  /** Writes what is pending now (shutdown, tests). */
  async flush(): Promise<void> {
    clearTimeout(this.timer)
    this.timer = undefined
    // In key order: two nodes writing the same rows lock them in the same order.
    const batch = [...this.pending.values()].sort((a, b) => compare(a.personId, b.personId) || compare(a.chatId, b.chatId))
    this.pending = new Map()
    for (const sighting of batch) this.writing.set(keyOf(sighting), sighting)
    const written = (rows: Sighting[]) => {
      for (const sighting of rows) if (this.writing.get(keyOf(sighting)) === sighting) this.writing.delete(keyOf(sighting))
    }
    for (let start = 0; start < batch.length; start += ROWS_PER_STATEMENT) {
      const rows = batch.slice(start, start + ROWS_PER_STATEMENT)
      try {
        await sql`
          insert into visits (person_id, chat_id, seen_version, visited_at)
          select * from unnest(${rows.map((b) => b.personId)}::text[], ${rows.map((b) => b.chatId)}::text[], ${rows.map((b) => b.version)}::bigint[], ${rows.map((b) => b.at.toISOString())}::timestamptz[])
          on conflict (person_id, chat_id) do update
            set seen_version = greatest(visits.seen_version, excluded.seen_version), visited_at = greatest(visits.visited_at, excluded.visited_at)
        `.execute(this.db)
        written(rows)
      } catch (error) {
        // Not lost: this statement's rows and the rest are tried again with the next sightings.
        const rest = batch.slice(start)
        for (const b of rest) if ((this.pending.get(keyOf(b))?.version ?? -1) < b.version) this.pending.set(keyOf(b), b)
        written(rest)
        throw error
      }
    }
  }
}

interface Sighting {
  personId: string
  chatId: string
  version: number
  at: Date
}

function keyOf({ personId, chatId }: { personId: string; chatId: string }): string {
  return `${personId} ${chatId}`
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

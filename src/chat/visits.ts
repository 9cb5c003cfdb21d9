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
  private pending = new Map<string, { personId: string; chatId: string; version: number; at: Date }>()
  private timer: NodeJS.Timeout | undefined
  private flushing: Promise<void> | undefined

  constructor({ db, flushMs = 2_000, onError = () => {} }: { db: DB; flushMs?: number; onError?: (error: unknown) => void }) {
    this.db = db
    this.flushMs = flushMs
    this.onError = onError
  }

  /** The person has seen the chat up to `version` (a page, or frames delivered). */
  seen(personId: string, chatId: string, version: number): void {
    const key = `${personId} ${chatId}`
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
    const row = await this.db.selectFrom('visits').select('seen_version').where('person_id', '=', personId).where('chat_id', '=', chatId).executeTakeFirst()
    const pending = this.pending.get(`${personId} ${chatId}`)?.version
    if (row === undefined) return pending
    return Math.max(Number(row.seen_version), pending ?? 0)
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
    const batch = [...this.pending.values()]
    this.pending = new Map()
    if (batch.length === 0) return
    try {
      await sql`
        insert into visits (person_id, chat_id, seen_version, visited_at)
        select * from unnest(${batch.map((b) => b.personId)}::text[], ${batch.map((b) => b.chatId)}::text[], ${batch.map((b) => b.version)}::bigint[], ${batch.map((b) => b.at.toISOString())}::timestamptz[])
        on conflict (person_id, chat_id) do update
          set seen_version = greatest(visits.seen_version, excluded.seen_version), visited_at = greatest(visits.visited_at, excluded.visited_at)
      `.execute(this.db)
    } catch (error) {
      // Not lost: tried again with the next sightings.
      for (const b of batch) if ((this.pending.get(`${b.personId} ${b.chatId}`)?.version ?? -1) < b.version) this.pending.set(`${b.personId} ${b.chatId}`, b)
      throw error
    }
  }
}

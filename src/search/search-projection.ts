import { sql } from 'kysely'
import { prepared } from '../db/connect.js'
import type { DB } from '../db/database.js'
import type { Tx } from '../event-store/event-store.js'
import { toChatEvent } from '../chat/chat-commands.js'
import type { ChatEvent } from '../chat/chat.js'
import { escapeHtml } from '../http/views.js'
import { committedAfter, type Claim, type Projection } from '../projector/projector.js'

/** A message found by a search, with its best passage highlighted (HTML: escaped text and <mark>). */
export interface SearchResult {
  chatId: string
  messageId: number
  sender: string
  snippet: string
  sentAt: Date
}

interface Entry {
  chatId: string
  messageId: number
  /** Present when the batch sent the message (the whole row is written); absent for an edit of an older one. */
  sender?: string
  sentAt?: string
  content?: string
  deleted: boolean
}

/**
 * What each event does to the index. A Record over every event type: a new
 * event type does not compile until it says whether search cares.
 */
const INDEX: { [Type in ChatEvent['type']]: (entry: Entry, event: Extract<ChatEvent, { type: Type }>) => void } = {
  MessageSent: (entry, { data }) => {
    entry.sender = data.sender
    entry.sentAt = data.sentAt
    entry.content = data.content
    entry.deleted = false
  },
  MessageEdited: (entry, { data }) => {
    if (!entry.deleted) entry.content = data.content
  },
  // What people can no longer see is no longer found.
  MessageRetracted: (entry) => {
    entry.deleted = true
  },
  ReactionAdded: () => {},
  ReactionRemoved: () => {},
}

const CHAT_STREAM_PREFIX = 'chat-'

/**
 * Full-text search over what people can see now, as a second projection of
 * the same log: its own checkpoint, so it can be added to a running system
 * and backfill from the first event in batches while the app serves. Edits
 * re-index, retractions delete.
 */
export const searchProjection: Projection = {
  name: 'search',

  async project(db, after, limit, claim) {
    // The index is made of event data alone: metadata would only be parsed and dropped.
    const { rows } = await sql<{ transaction_id: string; global_position: number; stream_id: string; stream_version: number; event_type: string; data: Record<string, unknown> }>`${prepared}
      select transaction_id::text, global_position, stream_id, stream_version, event_type, data
      from (${committedAfter(after, limit)}) as batch
    `.execute(db)
    const last = rows.at(-1)
    if (!last) return { count: 0, heads: new Map(), claimed: true }
    const entries = new Map<string, Entry>()
    for (const row of rows) {
      if (!row.stream_id.startsWith(CHAT_STREAM_PREFIX)) continue
      const chatId = row.stream_id.slice(CHAT_STREAM_PREFIX.length)
      const event = toChatEvent({ streamId: row.stream_id, version: Number(row.stream_version), eventId: '', type: row.event_type, data: row.data, metadata: {}, recordedAt: new Date() })
      const messageId = event.type === 'MessageSent' ? Number(row.stream_version) : Number(event.data.messageId)
      const key = `${chatId} ${messageId}`
      const entry = entries.get(key) ?? { chatId, messageId, deleted: false }
      entries.set(key, entry)
      ;(INDEX[event.type] as (entry: Entry, event: ChatEvent) => void)(entry, event)
    }
    const to = { txid: last.transaction_id, gp: Number(last.global_position) }
    const claimed = await write(db, claim(to), [...entries.values()])
    return { count: rows.length, last: to, heads: new Map(), claimed }
  },

  async reset(tx: Tx) {
    await sql`truncate search_index`.execute(tx)
  },
}

/** New rows, re-indexed text and deletions of one batch, and the checkpoint's move, in one statement, all of it only if the claim held. */
async function write(db: DB, claim: ReturnType<Claim>, entries: Entry[]): Promise<boolean> {
  const sent = entries.filter((e) => !e.deleted && e.sender !== undefined)
  const edited = entries.filter((e) => !e.deleted && e.sender === undefined && e.content !== undefined)
  const gone = entries.filter((e) => e.deleted)
  const { rows } = await sql<{ claimed: string }>`${prepared}
    with ${claim},
    inserted as (
      insert into search_index (chat_id, message_id, sender, content, sent_at)
      select * from unnest(${sent.map((e) => e.chatId)}::text[], ${sent.map((e) => e.messageId)}::bigint[], ${sent.map((e) => e.sender!)}::text[],
                           ${sent.map((e) => e.content!)}::text[], ${sent.map((e) => e.sentAt!)}::timestamptz[])
      where exists (select from claimed)
      on conflict (chat_id, message_id) do update set sender = excluded.sender, content = excluded.content, sent_at = excluded.sent_at
      returning 1
    ),
    updated as (
      update search_index s set content = e.content
      from unnest(${edited.map((e) => e.chatId)}::text[], ${edited.map((e) => e.messageId)}::bigint[], ${edited.map((e) => e.content!)}::text[]) as e(chat_id, message_id, content)
      where s.chat_id = e.chat_id and s.message_id = e.message_id and exists (select from claimed)
      returning 1
    ),
    deleted as (
      delete from search_index s
      using unnest(${gone.map((e) => e.chatId)}::text[], ${gone.map((e) => e.messageId)}::bigint[]) as e(chat_id, message_id)
      where s.chat_id = e.chat_id and s.message_id = e.message_id and exists (select from claimed)
      returning 1
    )
    select (select count(*) from claimed) as claimed,
           (select count(*) from inserted) + (select count(*) from updated) + (select count(*) from deleted) as written
  `.execute(db)
  return Number(rows[0]!.claimed) === 1
}

/** Marks around matches that cannot occur in text people type (control characters are stripped from messages). */
const START = '\u0001'
const STOP = '\u0002'
/**
 * Stands in for "<" while PostgreSQL reads the text: its parser takes "<b>",
 * "<script>" or "<!-- … -->" for HTML tags, which it leaves out of a
 * document and strips from a headline. People type text, not markup: with
 * "<" out of the way, what they wrote is found by its words and comes back
 * whole in the snippet (escaped). The index's document does the same (a
 * space there; see migration 0006).
 */
const LT = '\u0003'

/**
 * A message up to this long is its own snippet, whole, with the matches
 * marked. Longer ones show their best passages; a passage starts and ends
 * at a word (PostgreSQL's fragments drop the punctuation around them, which
 * on a short message reads as text cut off: "(tea)" came back as "tea").
 */
const WHOLE_UP_TO = 280

export const MAX_QUERY_LENGTH = 200
export const SEARCH_LIMIT = 50

/**
 * Searches what people can see now: web-search syntax ("quoted phrase",
 * or, -excluded), language-neutral, best matches first, each with its best
 * passage. The snippet is escaped here and only the match marks become HTML.
 */
export async function search(db: DB, query: string, { chatId, limit = SEARCH_LIMIT }: { chatId?: string; limit?: number } = {}): Promise<SearchResult[]> {
  const { rows } = await sql<{ chat_id: string; message_id: number; sender: string; snippet: string; sent_at: Date }>`
    with q as (select websearch_to_tsquery('simple', translate(${query}, '<', ' ')) as query)
    select s.chat_id, s.message_id, s.sender, s.sent_at,
           case when char_length(s.content) <= ${WHOLE_UP_TO}
                then ts_headline('simple', translate(s.content, '<', ${LT}), q.query, ${`StartSel=${START}, StopSel=${STOP}, HighlightAll=true`})
                else ts_headline('simple', translate(s.content, '<', ${LT}), q.query, ${`StartSel=${START}, StopSel=${STOP}, MaxWords=35, MinWords=15, ShortWord=0, MaxFragments=2, FragmentDelimiter=" … "`})
           end as snippet
    from search_index s, q
    where s.document @@ q.query ${chatId === undefined ? sql`` : sql`and s.chat_id = ${chatId}`}
    order by ts_rank(s.document, q.query) desc, s.sent_at desc
    limit ${limit}
  `.execute(db)
  return rows.map((row) => ({
    chatId: row.chat_id,
    messageId: Number(row.message_id),
    sender: row.sender,
    snippet: escapeHtml(row.snippet).replaceAll(LT, '&lt;').replaceAll(START, '<mark>').replaceAll(STOP, '</mark>'),
    sentAt: row.sent_at,
  }))
}

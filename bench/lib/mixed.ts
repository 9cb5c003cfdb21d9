/**
 * The mixed workload (issue 10): sends, reactions and edits in chats that
 * already hold a long history, from people with sessions.
 *
 * - `seedLongChats` writes the history straight into the event log, in the
 *   shapes the app appends (MessageSent, ReactionAdded, MessageEdited with
 *   their authors in data and metadata), dated long ago so no rate window
 *   reaches back to it; the read model is then built by the app's own
 *   rebuild (`Projector.rebuild`), so it is exactly what the app would have.
 * - `RecentMessages` polls the read model for each chat's latest messages and
 *   their authors: what a reader sees on the page, and so what people react
 *   to and edit.
 * - `mixedCommands` turns request number i into a command: 7 in 10 sends,
 *   2 reactions, 1 edit. An edit is made by the author of the message it
 *   edits (their session cookie), so the rules accept it.
 */
import { createHmac, randomUUID } from 'node:crypto'
import { signedCookie } from 'cookie-parser'
import type pg from 'pg'
import { REACTIONS } from '../../src/chat/chat.js'
import { newPersonId, parseSession, SESSION_COOKIE } from '../../src/http/session.js'
import { COMPOSER, FORM, type RequestSpec } from './load.js'
import { nowMs, sleep } from './stats.js'

/** The app nodes of the bench sign their session cookies with this. */
export const BENCH_SESSION_SECRET = 'bench-session-secret'

export type Kind = 'send' | 'react' | 'edit'
export const KINDS: readonly Kind[] = ['send', 'react', 'edit']

/** Of every 10 commands: 7 sends, 2 reactions, 1 edit. */
export function kindOf(i: number): Kind {
  const k = i % 10
  return k < 7 ? 'send' : k < 9 ? 'react' : 'edit'
}

export interface Person {
  cookie: string
  personId: string
}

/** The person a session cookie (as `sessions()` returns it: `name=value; …`) belongs to, read as the app reads it. */
/**
 * A session cookie for a new person, signed here as the app signs it
 * (cookie-signature: HMAC-SHA256, base64 without padding): thousands of
 * people without thousands of requests before the clock starts.
 */
export function benchSession(name: string): string {
  const value = `p1.${newPersonId()}.${name}`
  const signature = createHmac('sha256', BENCH_SESSION_SECRET).update(value).digest('base64').replace(/=+$/, '')
  return `${SESSION_COOKIE}=${encodeURIComponent(`s:${value}.${signature}`)}`
}

export function personOf(cookie: string): Person {
  const raw = cookie
    .split('; ')
    .find((pair) => pair.startsWith(`${SESSION_COOKIE}=`))
    ?.slice(SESSION_COOKIE.length + 1)
  const value = raw === undefined ? false : signedCookie(decodeURIComponent(raw), BENCH_SESSION_SECRET)
  const personId = value === false ? undefined : parseSession(value)?.personId
  if (!personId) throw new Error(`no person in the session cookie ${cookie}`)
  return { cookie, personId }
}

/**
 * Appends `eventsPerChat` events to each chat's stream and sets its version,
 * interleaved across chats like live traffic, in statements of about 20,000
 * events. Version v of a chat is, by v % 10: 1–7 a MessageSent, 8 and 9 a
 * ReactionAdded to the message at v % 10 = 7 of the same ten, 0 a
 * MessageEdited of the message at v - 4 by its author. 97 people wrote it.
 *
 * The log's secondary indexes are dropped meanwhile and built again after,
 * from their definitions in the catalog (the same indexes, built in one
 * sorted pass): kept up row by row, those on random keys (event and command
 * ids) make millions of appends ten times slower once they outgrow the
 * buffer cache.
 */
export async function seedLongChats(pool: pg.Pool, chatIds: string[], eventsPerChat: number): Promise<void> {
  // An index behind a constraint (unique event_id, global_position) goes and comes back as that constraint.
  const { rows: indexes } = await pool.query<{ index: string; definition: string; constraint: string | null; constraint_definition: string | null }>(
    `select i.indexrelid::regclass::text as index, pg_get_indexdef(i.indexrelid) as definition,
            quote_ident(c.conname) as constraint, pg_get_constraintdef(c.oid) as constraint_definition
     from pg_index i left join pg_constraint c on c.conindid = i.indexrelid and c.conrelid = i.indrelid
     where i.indrelid = 'events'::regclass and not i.indisprimary`,
  )
  for (const index of indexes) {
    await pool.query(index.constraint ? `alter table events drop constraint ${index.constraint}` : `drop index ${index.index}`)
  }
  try {
    await appendHistory(pool, chatIds, eventsPerChat)
  } finally {
    for (const index of indexes) {
      await pool.query(index.constraint ? `alter table events add constraint ${index.constraint} ${index.constraint_definition}` : index.definition)
    }
  }
}

async function appendHistory(pool: pg.Pool, chatIds: string[], eventsPerChat: number): Promise<void> {
  await pool.query(`insert into streams (stream_id, stream_type, version) select 'chat-' || id, 'chat', $2 from unnest($1::text[]) as id`, [chatIds, eventsPerChat])
  const step = Math.max(10, Math.floor(20_000 / chatIds.length))
  for (let from = 1; from <= eventsPerChat; from += step) {
    await pool.query(
      `with person(n, id, name) as (
         select n, 'seed-person-' || lpad(n::text, 10, '0'), 'seed person ' || n from generate_series(0, 96) n
       ),
       version as (
         select c.id as chat_id, c.n as chat_n, v, v % 10 as k,
                to_jsonb(timestamptz '2025-01-01' + (v::bigint * $4 + c.n) * interval '1 ms') as at
         from unnest($1::text[]) with ordinality as c(id, n), generate_series($2::int, $3::int) as v
       ),
       event as (
         select chat_id, v, 'MessageSent' as type, author.id as actor,
                jsonb_build_object('chatId', chat_id, 'authorId', author.id, 'sender', author.name,
                                   'content', 'message ' || v || ' in ' || chat_id || ', a sentence of ordinary length', 'sentAt', at) as data
         from version join person author on author.n = (v * 7 + chat_n) % 97
         where k between 1 and 7
         union all
         select chat_id, v, 'ReactionAdded', by.id,
                jsonb_build_object('messageId', v - k + 7, 'by', by.id, 'name', by.name, 'emoji', ($5::text[])[1 + (v / 10 + k) % 6], 'reactedAt', at)
         from version join person by on by.n = (v * 13 + chat_n + 1) % 97
         where k in (8, 9)
         union all
         select chat_id, v, 'MessageEdited', author.id,
                jsonb_build_object('messageId', v - 4, 'authorId', author.id,
                                   'content', 'message ' || (v - 4) || ' in ' || chat_id || ', edited at version ' || v, 'editedAt', at)
         from version join person author on author.n = ((v - 4) * 7 + chat_n) % 97
         where k = 0
       )
       insert into events (stream_id, stream_version, event_id, event_type, data, metadata)
       select 'chat-' || chat_id, v, gen_random_uuid(), type, data, jsonb_build_object('commandId', gen_random_uuid()::text, 'personId', actor)
       from event
       order by v, chat_id`,
      [chatIds, from, Math.min(eventsPerChat, from + step - 1), chatIds.length, [...REACTIONS]],
    )
  }
}

export interface RecentMessage {
  messageId: number
  authorId: string | null
}

/**
 * Each chat's latest messages as the read model shows them (newest last),
 * polled every `intervalMs`: the messages on a reader's page. Each poll reads
 * only the messages newer than the last one it saw, by primary key.
 */
export class RecentMessages {
  private latest = new Map<string, RecentMessage[]>()
  private running = false
  private loop: Promise<void> | undefined

  constructor(
    private readonly pool: pg.Pool,
    private readonly chatIds: string[],
    private readonly depth = 100,
    private readonly intervalMs = 200,
  ) {}

  async start(): Promise<void> {
    await this.poll()
    this.running = true
    this.loop = (async () => {
      while (this.running) {
        await sleep(this.intervalMs)
        await this.poll().catch(() => {})
      }
    })()
  }

  async stop(): Promise<void> {
    this.running = false
    await this.loop
  }

  of(chatId: string): RecentMessage[] {
    return this.latest.get(chatId) ?? []
  }

  private async poll(): Promise<void> {
    const after = this.chatIds.map((chatId) => this.of(chatId).at(-1)?.messageId ?? 0)
    const { rows } = await this.pool.query<{ chat_id: string; message_id: string; author_id: string | null }>(
      `select c.chat_id, m.message_id, m.author_id
       from unnest($1::text[], $2::bigint[]) as c(chat_id, after)
       cross join lateral (
         select message_id, author_id from messages
         where chat_id = c.chat_id and message_id > c.after
         order by message_id desc limit $3
       ) as m
       order by c.chat_id, m.message_id`,
      [this.chatIds, after, this.depth],
    )
    const added = new Map<string, RecentMessage[]>()
    for (const row of rows) {
      const list = added.get(row.chat_id) ?? []
      list.push({ messageId: Number(row.message_id), authorId: row.author_id })
      added.set(row.chat_id, list)
    }
    const latest = new Map(this.latest)
    for (const [chatId, list] of added) latest.set(chatId, [...this.of(chatId), ...list].slice(-this.depth))
    this.latest = latest
  }
}

export interface MixedSpec extends RequestSpec {
  kind: Kind
  chatId: string
  /** When the request was made, on the clock every process shares. */
  stamp: number
}

/** How many of the latest messages people react to: about a page's worth. */
const REACT_WINDOW = 50
/** Numbers every edit's text, across workloads and runs: an edit to the same text is no event, and every answered command must make one. */
let editSerial = 0

/**
 * Request i of the mixed workload. Sends and reactions come from a random one
 * of `people`; an edit picks a recent message in the chat written by one of
 * `authors` and is made by that person (with no such message in sight yet,
 * at the very start, it becomes a send; `counts` says what was made).
 * `json`: answered with JSON (which carries the new version) instead of what
 * htmx gets (the fresh composer, or the changed message's fragment).
 * `sendsOnly`: the same people and chats, sending only (a control).
 */
export function mixedCommands({ chatIds, people, authors, recent, json, sendsOnly = false }: { chatIds: string[]; people: Person[]; authors: Map<string, Person>; recent: RecentMessages; json: boolean; sendsOnly?: boolean }) {
  const counts: Record<Kind, number> = { send: 0, react: 0, edit: 0 }
  const base = json ? { ...FORM, accept: 'application/json' } : COMPOSER
  const pick = <T>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)]!
  const post = (kind: Kind, chatId: string, person: Person, path: string, body: string): MixedSpec => {
    counts[kind]++
    return { kind, chatId, stamp: nowMs(), method: 'POST', path: `/chats/${chatId}${path}`, headers: { ...base, cookie: person.cookie }, body: `${body}&commandId=${randomUUID()}` }
  }
  const send = (i: number, chatId: string) => post('send', chatId, pick(people), '/messages', `content=${encodeURIComponent(`hello from the bench, a message of ordinary length ${i}`)}`)
  const next = (i: number): MixedSpec => {
    const chatId = pick(chatIds)
    const messages = recent.of(chatId)
    switch (sendsOnly ? 'send' : kindOf(i)) {
      case 'send':
        return send(i, chatId)
      case 'react': {
        if (messages.length === 0) return send(i, chatId)
        const target = pick(messages.slice(-REACT_WINDOW))
        return post('react', chatId, pick(people), `/messages/${target.messageId}/reactions`, `emoji=${encodeURIComponent(pick(REACTIONS))}`)
      }
      case 'edit': {
        const own = messages.filter((message) => message.authorId !== null && authors.has(message.authorId))
        if (own.length === 0) return send(i, chatId)
        const target = pick(own)
        return post('edit', chatId, authors.get(target.authorId!)!, `/messages/${target.messageId}/edits`, `content=${encodeURIComponent(`edited by the bench, edit ${++editSerial}`)}`)
      }
    }
  }
  return { next, counts }
}

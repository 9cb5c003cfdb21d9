import { sql } from 'kysely'
import { prepared } from '../db/connect.js'
import type { DB } from '../db/database.js'
import { toStoredEvent, type EventRecord, type StoredEvent, type Tx } from '../event-store/event-store.js'
import { committedAfter, type Claim, type Projection } from '../projector/projector.js'
import { REACTIONS, type ChatEvent, type Emoji } from './chat.js'
import { toChatEvent } from './chat-commands.js'

/** {emoji: {personId: name}}: who reacted with what, standing now. */
export type Reactions = Partial<Record<Emoji, Record<string, string>>>

/** A message as the read side shows it: its current state. Its id is the chat version it was sent at. */
export interface Message {
  chatId: string
  messageId: number
  eventId: string
  /** Undefined for messages from before people had ids: they belong to no one. */
  authorId: string | undefined
  sender: string
  /** Null once retracted: the read model keeps no content of a retracted message. */
  content: string | null
  sentAt: Date
  editedAt: Date | undefined
  retractedAt: Date | undefined
  reactions: Reactions
  /** The chat version of the message's latest change: anything rendered from it is valid until this moves. */
  changedVersion: number
}

/** One chat version, as the live stream sends it: the message it changed, as that message is now. */
export interface Change {
  version: number
  message: Message
}

export const MESSAGES_CHANNEL = 'messages'
/** pg_notify payloads must stay under 8000 bytes. */
const MAX_PAYLOAD = 7000
const CHAT_STREAM_PREFIX = 'chat-'

/**
 * A message as the event that sent it describes it: what the live stream
 * sends at commit, before the projection has run.
 */
export function sentMessage(event: StoredEvent): Message | undefined {
  const chatEvent = toChatEvent(event)
  if (chatEvent.type !== 'MessageSent') return undefined
  const { data } = chatEvent
  return {
    chatId: event.streamId.slice(CHAT_STREAM_PREFIX.length),
    messageId: event.version,
    eventId: event.eventId,
    authorId: data.authorId,
    sender: data.sender,
    content: data.content,
    sentAt: new Date(data.sentAt),
    editedAt: undefined,
    retractedAt: undefined,
    reactions: {},
    changedVersion: event.version,
  }
}

/**
 * How each event changes the message it concerns. A Record over every event
 * type: adding an event type without saying what it does to the read model
 * does not compile.
 */
const APPLY: { [Type in ChatEvent['type']]: (message: Message, event: Extract<ChatEvent, { type: Type }>) => void } = {
  MessageSent: () => {},
  MessageEdited: (message, { data }) => {
    if (message.retractedAt) return
    message.content = data.content
    message.editedAt = new Date(data.editedAt)
  },
  MessageRetracted: (message, { data }) => {
    message.content = null
    message.retractedAt = new Date(data.retractedAt)
    message.reactions = {}
  },
  ReactionAdded: (message, { data }) => {
    if (message.retractedAt) return
    message.reactions[data.emoji] = { ...message.reactions[data.emoji], [data.by]: data.name }
  },
  ReactionRemoved: (message, { data }) => {
    const people = { ...message.reactions[data.emoji] }
    delete people[data.by]
    if (Object.keys(people).length === 0) delete message.reactions[data.emoji]
    else message.reactions[data.emoji] = people
  },
}

function apply(message: Message, event: ChatEvent): void {
  ;(APPLY[event.type] as (message: Message, event: ChatEvent) => void)(message, event)
}

/**
 * A message folded from its own events: its MessageSent, then the changes
 * that name it, in version order. The same fold as the projection's, for
 * views built from the log rather than the read model (time travel).
 */
export function foldMessage(sent: StoredEvent, changes: StoredEvent[]): Message {
  const message = sentMessage(sent)!
  for (const change of changes) {
    apply(message, toChatEvent(change))
    message.changedVersion = change.version
  }
  return message
}

interface BatchEvent extends StoredEvent {
  transactionId: string
  globalPosition: number
}

/**
 * The `messages` read model, with `chat_changes` (which message each chat
 * version changed) and one `chats` row per chat. Each batch reads the
 * committed events, folds them in order into the messages they concern, and
 * writes the result in one statement, which also notifies `messages` with
 * each touched chat's highest version (never the bodies: listeners read what
 * they need).
 */
export const messagesProjection: Projection = {
  name: 'messages',

  async project(db, after, limit, claim) {
    const { rows } = await sql<EventRecord & { transaction_id: string; global_position: number | string }>`${prepared}
      select transaction_id::text, global_position, stream_id, stream_version, event_id, event_type, data, metadata, recorded_at
      from (${committedAfter(after, limit)}) as batch
    `.execute(db)
    const events: BatchEvent[] = rows.map((row) => ({ ...toStoredEvent(row), transactionId: row.transaction_id, globalPosition: Number(row.global_position) }))
    const last = events.at(-1)
    const heads = new Map<string, number>()
    if (!last) return { count: 0, heads, claimed: true }

    const chatEvents = events.filter((event) => event.streamId.startsWith(CHAT_STREAM_PREFIX))
    // Read outside any lock: were these rows changed since, another batch claimed the checkpoint first, and this one writes nothing.
    const messages = await touchedMessages(db, chatEvents)
    const changes: { chatId: string; version: number; messageId: number }[] = []
    const chats = new Map<string, ChatDelta>()
    for (const stored of chatEvents) {
      const chatId = stored.streamId.slice(CHAT_STREAM_PREFIX.length)
      const event = toChatEvent(stored)
      const messageId = event.type === 'MessageSent' ? stored.version : Number(event.data.messageId)
      const key = messageKey(chatId, messageId)
      const chat = chats.get(chatId) ?? { chatId, firstVersion: stored.version, version: stored.version, messageDelta: 0, lastSender: '', lastSentAt: new Date(0) }
      chats.set(chatId, chat)
      chat.version = stored.version
      heads.set(chatId, stored.version)
      if (event.type === 'MessageSent') {
        const message = sentMessage(stored)!
        messages.set(key, message)
        chat.messageDelta++
        chat.lastSender = message.sender
        chat.lastSentAt = message.sentAt
      }
      const message = messages.get(key)
      // Every change names a message sent before it in the same chat; one that does not is left out rather than invented.
      if (!message) continue
      const wasVisible = !message.retractedAt
      apply(message, event)
      if (wasVisible && message.retractedAt) chat.messageDelta--
      message.changedVersion = stored.version
      changes.push({ chatId, version: stored.version, messageId })
    }
    const to = { txid: last.transactionId, gp: last.globalPosition }
    const claimed = await write(db, claim(to), [...messages.values()].filter((message) => message.changedVersion > 0), changes, [...chats.values()], notificationPayloads([...heads].map(([chatId, version]) => ({ chatId, version }))))
    return { count: events.length, last: to, heads, claimed }
  },

  async reset(tx: Tx) {
    // Inside the rebuild's transaction: readers of these tables wait for its
    // commit instead of seeing them empty, and the new rows go into fresh
    // files rather than beside a whole table of dead ones (DELETE measured
    // 1.5x slower on 50,000 rows, and leaves that much bloat behind).
    await sql`truncate messages, chat_changes, chats`.execute(tx)
  },
}

interface ChatDelta {
  chatId: string
  firstVersion: number
  version: number
  messageDelta: number
  lastSender: string
  lastSentAt: Date
}

const messageKey = (chatId: string, messageId: number) => `${chatId} ${messageId}`

/**
 * The current rows of the messages this batch changes but did not send
 * (edits, reactions, retractions of earlier messages). Marked with
 * changedVersion 0 until an event of the batch changes them, so untouched
 * rows are not written back.
 */
async function touchedMessages(db: DB, events: BatchEvent[]): Promise<Map<string, Message>> {
  const sentHere = new Set<string>()
  const wanted = new Map<string, { chatId: string; messageId: number }>()
  for (const event of events) {
    const chatId = event.streamId.slice(CHAT_STREAM_PREFIX.length)
    if (event.type === 'MessageSent') sentHere.add(messageKey(chatId, event.version))
    else {
      const messageId = Number(event.data.messageId)
      const key = messageKey(chatId, messageId)
      if (!sentHere.has(key)) wanted.set(key, { chatId, messageId })
    }
  }
  const found = new Map<string, Message>()
  if (wanted.size === 0) return found
  const list = [...wanted.values()]
  const { rows } = await sql<MessageRecord>`
    select m.* from unnest(${list.map((w) => w.chatId)}::text[], ${list.map((w) => w.messageId)}::bigint[]) as w(chat_id, message_id)
    join messages m on m.chat_id = w.chat_id and m.message_id = w.message_id
  `.execute(db)
  for (const row of rows) found.set(messageKey(row.chat_id, Number(row.message_id)), { ...fromRow(row), changedVersion: 0 })
  return found
}

/** Every write of a batch, its notifications and the checkpoint's move, in one statement, all of it only if the claim held. */
async function write(db: DB, claim: ReturnType<Claim>, messages: Message[], changes: { chatId: string; version: number; messageId: number }[], chats: ChatDelta[], payloads: string[]): Promise<boolean> {
  const { rows } = await sql<{ claimed: string }>`${prepared}
    with ${claim},
    upserted as (
      insert into messages (chat_id, message_id, event_id, author_id, sender, content, sent_at, edited_at, retracted_at, reactions, changed_version)
      select * from unnest(
        ${messages.map((m) => m.chatId)}::text[], ${messages.map((m) => m.messageId)}::bigint[], ${messages.map((m) => m.eventId)}::uuid[],
        ${messages.map((m) => m.authorId ?? null)}::text[], ${messages.map((m) => m.sender)}::text[], ${messages.map((m) => m.content)}::text[],
        ${messages.map((m) => m.sentAt.toISOString())}::timestamptz[], ${messages.map((m) => m.editedAt?.toISOString() ?? null)}::timestamptz[],
        ${messages.map((m) => m.retractedAt?.toISOString() ?? null)}::timestamptz[], ${messages.map((m) => JSON.stringify(m.reactions))}::jsonb[],
        ${messages.map((m) => m.changedVersion)}::bigint[]
      )
      where exists (select from claimed)
      on conflict (chat_id, message_id) do update set
        event_id = excluded.event_id, author_id = excluded.author_id, sender = excluded.sender, content = excluded.content,
        sent_at = excluded.sent_at, edited_at = excluded.edited_at, retracted_at = excluded.retracted_at,
        reactions = excluded.reactions, changed_version = excluded.changed_version
      returning 1
    ),
    changed as (
      insert into chat_changes (chat_id, version, message_id)
      select * from unnest(${changes.map((c) => c.chatId)}::text[], ${changes.map((c) => c.version)}::bigint[], ${changes.map((c) => c.messageId)}::bigint[])
      where exists (select from claimed)
      on conflict (chat_id, version) do update set message_id = excluded.message_id
      returning 1
    ),
    moved as (
      -- message_count carries this batch's change; last_sender '' means "no message sent in this batch".
      insert into chats (chat_id, version, message_count, last_sender, last_sent_at)
      select chat_id, version, delta, sender, sent_at
      from unnest(${chats.map((c) => c.chatId)}::text[], ${chats.map((c) => c.version)}::bigint[], ${chats.map((c) => c.messageDelta)}::bigint[],
                  ${chats.map((c) => c.lastSender)}::text[], ${chats.map((c) => c.lastSentAt.toISOString())}::timestamptz[], ${chats.map((c) => c.firstVersion)}::bigint[])
        as c(chat_id, version, delta, sender, sent_at, first_version)
      where exists (select from claimed)
      on conflict (chat_id) do update set
        version = excluded.version,
        message_count = chats.message_count + excluded.message_count,
        last_sender = case when excluded.last_sender = '' then chats.last_sender else excluded.last_sender end,
        -- The last message by version, as a rebuild sees it (send times need not follow versions under group commit).
        last_sent_at = case when excluded.last_sender = '' then chats.last_sent_at else excluded.last_sent_at end
        where chats.version < excluded.version
      returning 1
    )
    select (select count(*) from claimed) as claimed,
           (select count(*) from upserted) + (select count(*) from changed) + (select count(*) from moved) as written,
           (select count(*) from (select pg_notify(${MESSAGES_CHANNEL}, payload) from unnest(${payloads}::text[]) as payload where exists (select from claimed)) as sent) as notified
  `.execute(db)
  return Number(rows[0]!.claimed) === 1
}

/** `{"chatId": highestVersion, ...}`, split so that each stays under the NOTIFY limit. */
export function notificationPayloads(heads: { chatId: string; version: number }[]): string[] {
  const payloads: string[] = []
  let current: Record<string, number> = {}
  let size = 2
  for (const { chatId, version } of heads) {
    const entry = JSON.stringify(chatId).length + String(version).length + 2
    if (size + entry > MAX_PAYLOAD) {
      payloads.push(JSON.stringify(current))
      current = {}
      size = 2
    }
    current[chatId] = version
    size += entry
  }
  if (size > 2) payloads.push(JSON.stringify(current))
  return payloads
}

export function parseNotification(payload: string): Map<string, number> {
  try {
    const parsed = JSON.parse(payload) as Record<string, unknown>
    return new Map(Object.entries(parsed).filter((entry): entry is [string, number] => typeof entry[1] === 'number'))
  } catch {
    return new Map()
  }
}


interface MessageRecord {
  chat_id: string
  message_id: number | string
  event_id: string
  author_id: string | null
  sender: string
  content: string | null
  sent_at: Date
  edited_at: Date | null
  retracted_at: Date | null
  reactions: Reactions
  changed_version: number | string
}

function fromRow(row: MessageRecord): Message {
  return {
    chatId: row.chat_id,
    messageId: Number(row.message_id),
    eventId: row.event_id,
    authorId: row.author_id ?? undefined,
    sender: row.sender,
    content: row.retracted_at ? null : row.content,
    sentAt: row.sent_at,
    editedAt: row.edited_at ?? undefined,
    retractedAt: row.retracted_at ?? undefined,
    reactions: row.reactions ?? {},
    changedVersion: Number(row.changed_version),
  }
}

/**
 * Versions form an unbroken run in what these return: the projector writes
 * each chat's changes in version order, one committed batch at a time.
 * `unbrokenRun` still guards every reader, so a hole could only delay a
 * frame, never skip it.
 */
export function unbrokenRun<T extends { version: number }>(changes: T[], after: number): T[] {
  let expected = after + 1
  let end = 0
  while (end < changes.length && changes[end]!.version === expected) {
    end++
    expected++
  }
  return end === changes.length ? changes : changes.slice(0, end)
}

/** The chat's changes after a version, oldest first, each with its message as it is now; an unbroken run only. */
export async function changesAfter(db: DB, chatId: string, after: number, limit = 1000): Promise<Change[]> {
  const { rows } = await sql<MessageRecord & { version: number | string }>`
    select c.version, m.*
    from chat_changes c join messages m on m.chat_id = c.chat_id and m.message_id = c.message_id
    where c.chat_id = ${chatId} and c.version > ${after}
    order by c.version
    limit ${limit}
  `.execute(db)
  return unbrokenRun(
    rows.map((row) => ({ version: Number(row.version), message: fromRow(row) })),
    after,
  )
}

/** The latest `limit` messages before a message id (all when undefined), oldest first. */
export async function messagesBefore(db: DB, chatId: string, before: number | undefined, limit = 50): Promise<Message[]> {
  const { rows } = await sql<MessageRecord>`
    select * from messages
    where chat_id = ${chatId} and message_id < ${before ?? Number.MAX_SAFE_INTEGER}
    order by message_id desc
    limit ${limit}
  `.execute(db)
  return rows.reverse().map(fromRow)
}

/** One message as it is now, if the chat has it. */
export async function messageById(db: DB, chatId: string, messageId: number): Promise<Message | undefined> {
  const { rows } = await sql<MessageRecord>`select * from messages where chat_id = ${chatId} and message_id = ${messageId}`.execute(db)
  return rows[0] && fromRow(rows[0])
}

/** The chat's highest projected version (0 for a chat with no events). */
export async function headVersion(db: DB, chatId: string): Promise<number> {
  const row = await db.selectFrom('chats').select('version').where('chat_id', '=', chatId).executeTakeFirst()
  return Number(row?.version ?? 0)
}

/** Reaction counts by emoji, in the order they are offered; emoji nobody chose are left out. */
export function reactionCounts(reactions: Reactions): Partial<Record<Emoji, number>> {
  const counts: Partial<Record<Emoji, number>> = {}
  for (const emoji of REACTIONS) {
    const count = Object.keys(reactions[emoji] ?? {}).length
    if (count > 0) counts[emoji] = count
  }
  return counts
}

/** The JSON shape of a message (DESIGN: Message JSON); `version` stays as a synonym of `messageId` for older clients. */
export function messageJson(message: Message) {
  return {
    chatId: message.chatId,
    messageId: message.messageId,
    version: message.messageId,
    sender: message.sender,
    content: message.retractedAt ? null : message.content,
    sentAt: message.sentAt.toISOString(),
    editedAt: message.editedAt?.toISOString() ?? null,
    retracted: Boolean(message.retractedAt),
    reactions: reactionCounts(message.reactions),
  }
}


/**
 * A database written by the previous main (migrations 0001-0003, MessageSent
 * without authorId, metadata {commandId} only, the old `messages`/`chats`
 * rows keyed by `version`, a projector checkpoint), upgraded in place by
 * migrateToLatest: pages, JSON, the SSE replay and a rebuild all work; old
 * messages belong to no one (no edit or retract actions, 403), take
 * reactions, and new messages get versions after the old ones.
 */
import assert from 'node:assert/strict'
import { createHmac, randomUUID } from 'node:crypto'
import { copyFile, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before, test } from 'node:test'
import { sql } from 'kysely'
import request, { type Response } from 'supertest'
import { messagesProjection } from '../../src/chat/messages-projection.js'
import { createDb, createPool } from '../../src/db/connect.js'
import type { DB } from '../../src/db/database.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { SESSION_COOKIE } from '../../src/http/session.js'
import { Projector } from '../../src/projector/projector.js'
import { freshDatabase, type TestDatabase } from '../support/database.js'
import { SESSION_SECRET, startTestNode, waitForProjection, type TestNode } from '../support/node.js'
import { SseClient } from '../support/sse.js'

const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url))
/** The schema the previous main ran on. */
const PREVIOUS_MIGRATIONS = ['0001_event_store.sql', '0002_messages.sql', '0003_append_events_function.sql']

interface OldMessage {
  chatId: string
  sender: string
  content: string
  sentAt: string
  commandId: string
}

/** What the previous main wrote: chat "oldtea" (three messages projected, a fourth committed but not yet projected) and "quiet". */
const OLD: OldMessage[] = [
  { chatId: 'oldtea', sender: 'Ada', content: 'first, from before people had ids', sentAt: '2025-03-03T14:05:00.123Z', commandId: 'old-cmd-1' },
  { chatId: 'oldtea', sender: 'Bob', content: 'a <b>reply</b>\nover two lines', sentAt: '2025-03-03T14:06:30.000Z', commandId: 'old-cmd-2' },
  { chatId: 'quiet', sender: 'Cy', content: 'anyone?', sentAt: '2025-03-04T09:00:00.000Z', commandId: 'old-cmd-1' },
  { chatId: 'oldtea', sender: 'Ada', content: 'third', sentAt: '2025-03-03T14:07:00.000Z', commandId: 'old-cmd-3' },
  { chatId: 'oldtea', sender: 'Bob', content: 'committed, not yet projected', sentAt: '2025-03-03T14:08:00.000Z', commandId: 'old-cmd-4' },
]
const PROJECTED = 4

let database: TestDatabase
let node: TestNode
let eventsBefore: unknown[]

/** Appends one old MessageSent as the previous main did (its own transaction), and answers its version. */
async function appendOld(db: DB, message: OldMessage): Promise<number> {
  return db.transaction().execute(async (tx) => {
    const streamId = `chat-${message.chatId}`
    const { rows } = await sql<{ version: number }>`
      insert into streams (stream_id, stream_type, version) values (${streamId}, 'chat', 1)
      on conflict (stream_id) do update set version = streams.version + 1
      returning version
    `.execute(tx)
    const version = Number(rows[0]!.version)
    await sql`
      insert into events (stream_id, stream_version, event_id, event_type, data, metadata)
      values (${streamId}, ${version}, ${randomUUID()}, 'MessageSent',
              ${JSON.stringify({ chatId: message.chatId, sender: message.sender, content: message.content, sentAt: message.sentAt })}::jsonb,
              ${JSON.stringify({ commandId: message.commandId })}::jsonb)
    `.execute(tx)
    return version
  })
}

/** The old read model of one event, and the old projector's checkpoint after it (as one old batch would leave them). */
async function projectOld(db: DB, message: OldMessage, version: number): Promise<void> {
  const streamId = `chat-${message.chatId}`
  await db.transaction().execute(async (tx) => {
    const { rows } = await sql<{ event_id: string; txid: string; gp: number }>`
      select event_id, transaction_id::text as txid, global_position as gp from events where stream_id = ${streamId} and stream_version = ${version}
    `.execute(tx)
    const event = rows[0]!
    await sql`insert into messages (chat_id, version, event_id, sender, content, sent_at) values (${message.chatId}, ${version}, ${event.event_id}, ${message.sender}, ${message.content}, ${message.sentAt})`.execute(tx)
    await sql`
      insert into chats (chat_id, version, last_sender, last_sent_at) values (${message.chatId}, ${version}, ${message.sender}, ${message.sentAt})
      on conflict (chat_id) do update set version = excluded.version, last_sender = excluded.last_sender, last_sent_at = excluded.last_sent_at
    `.execute(tx)
    await sql`
      insert into projector_checkpoints (name, last_txid, last_gp) values ('messages', ${event.txid}::xid8, ${event.gp})
      on conflict (name) do update set last_txid = excluded.last_txid, last_gp = excluded.last_gp, updated_at = now()
    `.execute(tx)
  })
}

async function allEvents(db: DB) {
  return db.selectFrom('events').selectAll().orderBy('global_position').execute()
}

before(async () => {
  database = await freshDatabase()
  const pool = createPool({ connectionString: database.url, max: 4 })
  const db = createDb(pool)
  const previous = await mkdtemp(join(tmpdir(), 'live-tea-previous-'))
  try {
    for (const file of PREVIOUS_MIGRATIONS) await copyFile(join(MIGRATIONS_DIR, file), join(previous, file))
    const applied = await migrateToLatest(db, `${previous}/`)
    assert.deepEqual(applied.map((result) => result.migrationName), PREVIOUS_MIGRATIONS.map((file) => file.replace(/\.sql$/, '')))
    const { rows: columns } = await sql<{ column_name: string }>`select column_name from information_schema.columns where table_name = 'messages' order by ordinal_position`.execute(db)
    assert.deepEqual(columns.map((c) => c.column_name), ['chat_id', 'version', 'event_id', 'sender', 'content', 'sent_at'], 'premise: the old read model')

    for (const [i, message] of OLD.entries()) {
      const version = await appendOld(db, message)
      if (i < PROJECTED) await projectOld(db, message, version)
    }
    eventsBefore = await allEvents(db)

    // The upgrade: the real migrations directory, whatever it holds now.
    const upgraded = await migrateToLatest(db)
    assert.ok(upgraded.some((result) => result.migrationName === '0004_every_change_is_an_event'), 'premise: 0004 was applied here')
    assert.ok(upgraded.every((result) => result.status === 'Success'))
  } finally {
    await pool.end()
    await rm(previous, { recursive: true, force: true })
  }
  node = await startTestNode({ databaseUrl: database.url })
})
after(async () => {
  await node?.close()
  await database?.drop()
})

function sessionCookieOf(res: Response): string {
  const line = ([res.headers['set-cookie'] ?? []].flat() as string[]).find((cookie) => cookie.startsWith(`${SESSION_COOKIE}=`))
  assert.ok(line, 'a session cookie')
  return line.split(';')[0]!
}

async function joinAs(name: string): Promise<string> {
  return sessionCookieOf(await request(node.url).post('/session').type('form').send({ name }).expect(303))
}

/** A cookie as the previous main set it: the signed display name alone. */
function oldSessionCookie(name: string): string {
  const signature = createHmac('sha256', SESSION_SECRET).update(name).digest('base64').replace(/=+$/, '')
  return `${SESSION_COOKIE}=${encodeURIComponent(`s:${name}.${signature}`)}`
}

const ARTICLE = /<article\b[^>]*\bid="(message-[a-z0-9_-]+-\d+)"[^>]*>[\s\S]*?<\/article>/g

async function chatVersion(chatId: string): Promise<number> {
  const row = await node.db.selectFrom('streams').select('version').where('stream_id', '=', `chat-${chatId}`).executeTakeFirst()
  return Number(row?.version ?? 0)
}

test('the upgrade rewrites no event, and the message committed before it but not yet projected is projected after it', async () => {
  assert.deepEqual(await allEvents(node.db), eventsBefore)
  await waitForProjection(node, 'oldtea', 4)
  const rows = await node.db.selectFrom('messages').selectAll().where('chat_id', '=', 'oldtea').orderBy('message_id').execute()
  assert.deepEqual(
    rows.map((row) => [row.message_id, row.sender, row.content, row.sent_at.toISOString(), row.author_id, row.reactions, row.changed_version]),
    [
      [1, 'Ada', OLD[0]!.content, OLD[0]!.sentAt, null, {}, 1],
      [2, 'Bob', OLD[1]!.content, OLD[1]!.sentAt, null, {}, 2],
      [3, 'Ada', OLD[3]!.content, OLD[3]!.sentAt, null, {}, 3],
      [4, 'Bob', OLD[4]!.content, OLD[4]!.sentAt, null, {}, 4],
    ],
  )
})

test('old messages show on the page and in JSON, with no edit or retract actions for anyone; editing or retracting them is 403', async () => {
  await waitForProjection(node, 'oldtea', 4)
  const ada = await joinAs('Ada') // the same name as the old author: a name is no identity
  const oldAda = oldSessionCookie('Ada') // even a session from before the upgrade
  for (const cookie of [ada, oldAda]) {
    const page = await request(node.url).get('/chats/oldtea').set('cookie', cookie).expect(200)
    const articles = [...page.text.matchAll(ARTICLE)]
    assert.deepEqual(articles.map((match) => match[1]), [1, 2, 3, 4].map((id) => `message-oldtea-${id}`))
    for (const [article] of articles) {
      assert.doesNotMatch(article, /data-author=/, 'nobody wrote it, so nobody sees it as theirs')
      assert.doesNotMatch(article, /own-actions|\/edit"|\/retraction"/, 'no edit or retract action')
      assert.match(article, /\/reactions"/, 'reactions offered')
    }
    assert.ok(page.text.includes('a &lt;b&gt;reply&lt;/b&gt;\nover two lines'))
    assert.match(page.text, /3 Mar 14:05/)

    for (const id of [1, 2, 3, 4]) {
      const post = (path: string) => request(node.url).post(`/chats/oldtea/messages/${id}/${path}`).set('cookie', cookie).set('accept', 'application/json')
      const edit = await post('edits').send({ content: 'my words now' })
      assert.equal(edit.status, 403, edit.text)
      assert.equal(typeof edit.body.error, 'string')
      assert.equal((await post('retraction').send({})).status, 403)
      await request(node.url).get(`/chats/oldtea/messages/${id}/edit`).set('cookie', cookie).expect(403)
    }
  }
  assert.equal(await chatVersion('oldtea'), 4, 'nothing appended')

  const { body } = await request(node.url).get('/chats/oldtea/messages').set('accept', 'application/json').expect(200)
  assert.deepEqual(body.messages[0], {
    chatId: 'oldtea',
    messageId: 1,
    version: 1,
    sender: 'Ada',
    content: OLD[0]!.content,
    sentAt: OLD[0]!.sentAt,
    editedAt: null,
    retracted: false,
    reactions: {},
  })
  const history = await request(node.url).get('/chats/oldtea/messages/2/history').set('accept', 'application/json').expect(200)
  assert.deepEqual(history.body, { chatId: 'oldtea', messageId: 2, versions: [{ version: 2, content: OLD[1]!.content, at: OLD[1]!.sentAt }] })
})

test('reactions on old messages work; new messages get versions after the old ones and belong to their author', async () => {
  await waitForProjection(node, 'oldtea', 4)
  const eve = await joinAs('Eve')
  const react = await request(node.url).post('/chats/oldtea/messages/1/reactions').set('cookie', eve).send({ emoji: '👍' }).expect(200)
  assert.deepEqual(react.body, { chatId: 'oldtea', messageId: 1, version: 5, reacted: true })
  // A command id the old log used is free for a new person: idempotency is per person.
  const sent = await request(node.url).post('/chats/oldtea/messages').set('cookie', eve).send({ content: 'new here', commandId: 'old-cmd-2' }).expect(201)
  assert.deepEqual(sent.body, { chatId: 'oldtea', version: 6 })
  await request(node.url).post('/chats/oldtea/messages/6/edits').set('cookie', eve).send({ content: 'new here, edited' }).expect(200)
  const quiet = await request(node.url).post('/chats/quiet/messages').set('cookie', eve).send({ content: 'me!' }).expect(201)
  assert.equal(quiet.body.version, 2)

  await waitForProjection(node, 'oldtea', 7)
  await waitForProjection(node, 'quiet', 2)
  const { body } = await request(node.url).get('/chats/oldtea/messages').set('accept', 'application/json').expect(200)
  assert.deepEqual(
    body.messages.map((m: Record<string, unknown>) => [m.messageId, m.content, m.reactions, m.editedAt === null]),
    [
      [1, OLD[0]!.content, { '👍': 1 }, true],
      [2, OLD[1]!.content, {}, true],
      [3, OLD[3]!.content, {}, true],
      [4, OLD[4]!.content, {}, true],
      [6, 'new here, edited', {}, false],
    ],
  )
  const page = await request(node.url).get('/chats/oldtea').set('cookie', eve).expect(200)
  assert.match(page.text, /<article class="message" id="message-oldtea-6" data-author="[^"]+">[\s\S]*?class="own-actions"/, 'a new message has its author and actions')
  await request(node.url).get('/chats/quiet').set('cookie', eve).expect(200)
  // Eve's rooms, with the counts the upgrade carried over (old messages count as messages).
  const home = await request(node.url).get('/').set('cookie', eve).expect(200)
  assert.match(home.text, /<a href="\/chats\/oldtea">#oldtea<\/a>\s*(?:<span class="unread"[^>]*>\d+<\/span>\s*)?<span class="muted">5 messages ·/)
  assert.match(home.text, /<a href="\/chats\/quiet">#quiet<\/a>\s*(?:<span class="unread"[^>]*>\d+<\/span>\s*)?<span class="muted">2 messages ·/)
})

test('an SSE replay from ?after=0 gives every version, old and new, each last frame equal to the page fragment; a rebuild equals the live read model', async () => {
  const head = await chatVersion('oldtea')
  assert.ok(head >= 7, 'after the previous test')
  await waitForProjection(node, 'oldtea', head)
  const stream = await SseClient.open(`${node.url}/chats/oldtea/events?after=0`)
  await stream.waitForCount(head)
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.deepEqual(stream.ids, Array.from({ length: head }, (_, i) => i + 1))
  stream.close()

  const page = await request(node.url).get('/chats/oldtea').expect(200)
  const fragments = new Map([...page.text.matchAll(ARTICLE)].map((match) => [match[1]!, match[0]]))
  const last = new Map<string, string>()
  for (const frame of stream.messages) last.set(/id="(message-oldtea-\d+)"/.exec(frame.data)![1]!, frame.data)
  assert.deepEqual([...last.keys()].sort(), [...fragments.keys()].sort())
  for (const [id, fragment] of fragments) assert.equal(last.get(id), fragment, id)

  const readModel = async () => ({
    messages: await node.db.selectFrom('messages').selectAll().orderBy('chat_id').orderBy('message_id').execute(),
    changes: await node.db.selectFrom('chat_changes').selectAll().orderBy('chat_id').orderBy('version').execute(),
    chats: await node.db.selectFrom('chats').selectAll().orderBy('chat_id').execute(),
  })
  const live = await readModel()
  assert.equal(live.changes.length, (await allEvents(node.db)).length)
  const replayed = await new Projector({ db: node.db, projection: messagesProjection }).rebuild()
  assert.equal(replayed, live.changes.length)
  assert.deepEqual(await readModel(), live)
})

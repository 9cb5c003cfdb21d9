import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import { sql } from 'kysely'
import { messagesProjection } from '../../src/chat/messages-projection.js'
import { SendMessageHandler } from '../../src/chat/send-message.js'
import { createDb, createPool } from '../../src/db/connect.js'
import type { DB } from '../../src/db/database.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { Projector } from '../../src/projector/projector.js'
import { freshDatabase, type TestDatabase } from '../support/database.js'

let database: TestDatabase
let pool: ReturnType<typeof createPool>
let db: DB
before(async () => {
  database = await freshDatabase()
  pool = createPool({ connectionString: database.url, max: 20 })
  db = createDb(pool)
  await migrateToLatest(db)
})
after(async () => {
  await pool.end()
  await database.drop()
})

const send = (handler: SendMessageHandler, chatId: string, i: number) =>
  handler.send({ type: 'SendMessage', data: { chatId, sender: `s${i % 17}-${randomUUID().slice(0, 8)}`, content: `message ${i}`, commandId: randomUUID() }, metadata: { now: new Date() } })

async function readModel() {
  const messages = await db.selectFrom('messages').selectAll().orderBy('chat_id').orderBy('version').execute()
  const chats = await db.selectFrom('chats').selectAll().orderBy('chat_id').execute()
  return { messages, chats }
}

async function eventCount(): Promise<number> {
  return Number((await db.selectFrom('events').select(sql<number>`count(*)`.as('n')).executeTakeFirstOrThrow()).n)
}

/**
 * Drains until every event is projected. One catchUp() may stop short: the
 * horizon (oldest running transaction) is cluster-wide, and other test files
 * run transactions on the same server.
 */
async function projectEverything(projector: Projector): Promise<void> {
  const total = await eventCount()
  for (const deadline = Date.now() + 10_000; ; ) {
    await projector.catchUp()
    const { n } = await db.selectFrom('messages').select(sql<number>`count(*)`.as('n')).executeTakeFirstOrThrow()
    if (Number(n) >= total) return
    if (Date.now() > deadline) throw new Error(`projected ${n} of ${total} events`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

describe('messages projector', () => {
  test('stopping and restarting it mid-stream leaves the read model equal to a full replay', async () => {
    const handler = new SendMessageHandler({ db })
    let projector = new Projector({ db, projection: messagesProjection, batchSize: 7 })
    await projector.start()
    for (let round = 0; round < 5; round++) {
      await Promise.all(Array.from({ length: 40 }, (_, i) => send(handler, `restart-${i % 3}`, round * 40 + i)))
      await projector.stop()
      projector = new Projector({ db, projection: messagesProjection, batchSize: 7 })
      await projector.start()
    }
    await projectEverything(projector)
    await projector.stop()
    const live = await readModel()
    assert.equal(live.messages.length, await eventCount())

    await new Projector({ db, projection: messagesProjection }).rebuild()
    assert.deepEqual(await readModel(), live)
  })

  test('two projectors running at once produce the same read model as one replay', async () => {
    const handler = new SendMessageHandler({ db })
    const one = new Projector({ db, projection: messagesProjection, batchSize: 5, pollIntervalMs: 5 })
    const two = new Projector({ db, projection: messagesProjection, batchSize: 5, pollIntervalMs: 5 })
    await Promise.all([one.start(), two.start()])
    await Promise.all(Array.from({ length: 300 }, (_, i) => send(handler, `pair-${i % 4}`, i)))
    await projectEverything(one)
    await Promise.all([one.stop(), two.stop()])
    const live = await readModel()
    assert.equal(live.messages.length, await eventCount())
    for (const chat of live.chats) {
      const versions = live.messages.filter((m) => m.chat_id === chat.chat_id).map((m) => Number(m.version))
      assert.deepEqual(versions, Array.from({ length: Number(chat.version) }, (_, i) => i + 1), `chat ${chat.chat_id} is an unbroken run`)
    }
    await new Projector({ db, projection: messagesProjection }).rebuild()
    assert.deepEqual(await readModel(), live)
  })

  test('an event that commits after a later-numbered one is not skipped (reads below the snapshot xmin)', async () => {
    const projector = new Projector({ db, projection: messagesProjection })
    await projector.catchUp()
    const slow = await pool.connect()
    const fast = await pool.connect()
    try {
      const insert = (chatId: string) => [
        `insert into streams (stream_id, stream_type, version) values ('chat-${chatId}', 'chat', 1)`,
        `insert into events (stream_id, stream_version, event_id, event_type, data, metadata) values ('chat-${chatId}', 1, gen_random_uuid(), 'MessageSent',
           '{"chatId": "${chatId}", "sender": "x", "content": "${chatId}", "sentAt": "2026-01-01T00:00:00Z"}', '{"commandId": "${randomUUID()}"}')`,
      ]
      await slow.query('begin')
      for (const statement of insert('slow')) await slow.query(statement)
      // The fast transaction takes a later global position and transaction id, and commits first.
      await fast.query('begin')
      for (const statement of insert('fast')) await fast.query(statement)
      await fast.query('commit')

      await projector.catchUp()
      const early = await db.selectFrom('messages').select('chat_id').where('chat_id', 'in', ['slow', 'fast']).execute()
      assert.deepEqual(early, [], 'nothing is projected while an older transaction is still open')

      await slow.query('commit')
      // The horizon is cluster-wide: other transactions on the server (other test files) may hold it back a moment longer.
      let later: { chat_id: string }[] = []
      for (const deadline = Date.now() + 10_000; later.length < 2 && Date.now() < deadline; ) {
        await projector.catchUp()
        later = await db.selectFrom('messages').select('chat_id').where('chat_id', 'in', ['slow', 'fast']).orderBy('chat_id').execute()
        if (later.length < 2) await new Promise((resolve) => setTimeout(resolve, 20))
      }
      assert.deepEqual(later.map((row) => row.chat_id), ['fast', 'slow'])
    } finally {
      slow.release()
      fast.release()
    }
  })

  test('a rebuild while writers and a live projector run ends with the same rows as the log', async () => {
    const handler = new SendMessageHandler({ db })
    const live = new Projector({ db, projection: messagesProjection, pollIntervalMs: 5 })
    await live.start()
    const writing = Promise.all(Array.from({ length: 200 }, (_, i) => send(handler, `rebuild-${i % 5}`, i)))
    const rebuilt = await new Projector({ db, projection: messagesProjection }).rebuild()
    await writing
    await projectEverything(live)
    await live.stop()
    assert.ok(rebuilt > 0)
    const { messages } = await readModel()
    assert.equal(messages.length, await eventCount())
  })
})

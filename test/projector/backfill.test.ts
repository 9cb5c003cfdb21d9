/**
 * Several projections, one log (DESIGN "Several projections"): a projection
 * new to a database backfills from the first event in batches of its own,
 * with its own checkpoint; projecting a batch again changes nothing; one
 * projection that cannot write holds back neither the app nor the others;
 * two nodes backfill the same new projection together.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { sql } from 'kysely'
import type pg from 'pg'
import request from 'supertest'
import { messagesProjection } from '../../src/chat/messages-projection.js'
import { createDb, createPool } from '../../src/db/connect.js'
import type { DB } from '../../src/db/database.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { Projector, type ProjectedBatch } from '../../src/projector/projector.js'
import { searchProjection } from '../../src/search/search-projection.js'
import { freshDatabase, type TestDatabase } from '../support/database.js'
import { projectionCaughtUp as caughtUp, startTestNode, waitForProjection, type TestNode } from '../support/node.js'
import { until } from '../support/until.js'

/**
 * `chats` × `versions` events in the app's shapes, chats interleaved: per ten
 * versions of a chat, six MessageSent, an edit of the second, a retraction of
 * the third, a reaction to the first and its removal.
 */
async function seed(pool: pg.Pool, chats: number, versions: number): Promise<void> {
  await pool.query(`insert into streams (stream_id, stream_type, version) select 'chat-s' || c, 'chat', $1 from generate_series(1, $2) c`, [versions, chats])
  const iso = `to_char((timestamptz '2025-01-01 00:00:00+00' + (v * 20 + c) * interval '1 second') at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`
  for (let from = 1; from <= versions; from += 100) {
    await pool.query(
      `insert into events (stream_id, stream_version, event_id, event_type, data, metadata)
       select 'chat-s' || c, v, gen_random_uuid(),
              case (v - 1) % 10 when 6 then 'MessageEdited' when 7 then 'MessageRetracted' when 8 then 'ReactionAdded' when 9 then 'ReactionRemoved' else 'MessageSent' end,
              case (v - 1) % 10
                when 6 then jsonb_build_object('messageId', v - 5, 'authorId', 'seed-' || (v - 5) % 7, 'content', 'edited ' || (v - 5) || ' in s' || c, 'editedAt', ${iso})
                when 7 then jsonb_build_object('messageId', v - 5, 'authorId', 'seed-' || (v - 5) % 7, 'retractedAt', ${iso})
                when 8 then jsonb_build_object('messageId', v - 8, 'by', 'seed-r', 'name', 'reactor', 'emoji', '👍', 'reactedAt', ${iso})
                when 9 then jsonb_build_object('messageId', v - 9, 'by', 'seed-r', 'name', 'reactor', 'emoji', '👍', 'reactedAt', ${iso})
                else jsonb_build_object('chatId', 's' || c, 'authorId', 'seed-' || v % 7, 'sender', 'seeder' || v % 7, 'content', 'message ' || v || ' in s' || c, 'sentAt', ${iso})
              end,
              jsonb_build_object('commandId', gen_random_uuid()::text, 'personId', case when (v - 1) % 10 >= 8 then 'seed-r' else 'seed-' || v % 7 end)
       from generate_series($1::int, $2::int) v, generate_series(1, $3::int) c
       order by v, c`,
      [from, Math.min(versions, from + 99), chats],
    )
  }
}

/**
 * A database written by a version without search: the log, an up-to-date
 * messages projection, no search checkpoint and an empty index.
 */
async function databaseWithoutSearch(chats: number, versions: number): Promise<TestDatabase> {
  const database = await freshDatabase()
  const pool = createPool({ connectionString: database.url, max: 2 })
  const db = createDb(pool)
  try {
    await migrateToLatest(db)
    await seed(pool, chats, versions)
    await new Projector({ db, projection: messagesProjection }).rebuild()
    await sql`delete from projector_checkpoints where name = 'search'`.execute(db)
    await sql`truncate search_index`.execute(db)
  } finally {
    await db.destroy()
  }
  return database
}

type Row = Record<string, unknown>

async function searchIndex(db: DB): Promise<Row[]> {
  const { rows } = await sql<Row>`select chat_id, message_id, sender, content, sent_at from search_index order by chat_id, message_id`.execute(db)
  return rows
}

async function visibleMessages(db: DB): Promise<Row[]> {
  const { rows } = await sql<Row>`select chat_id, message_id, sender, content, sent_at from messages where retracted_at is null order by chat_id, message_id`.execute(db)
  return rows
}

async function checkpoint(db: DB, name: string) {
  return db.selectFrom('projector_checkpoints').selectAll().where('name', '=', name).executeTakeFirst()
}

describe('a projection new to a database', () => {
  const CHATS = 10
  const VERSIONS = 500
  let database: TestDatabase
  let db: DB
  before(async () => {
    database = await databaseWithoutSearch(CHATS, VERSIONS)
    db = createDb(createPool({ connectionString: database.url, max: 4 }))
  })
  after(async () => {
    await db?.destroy()
    await database?.drop()
  })

  test('starts at the first event, backfills in batches of its own size, and moves only its own checkpoint', async () => {
    const messagesBefore = await checkpoint(db, 'messages')
    assert.ok(messagesBefore)
    assert.equal(await checkpoint(db, 'search'), undefined)
    const batches: ProjectedBatch[] = []
    const projector = new Projector({ db, projection: searchProjection, batchSize: 400, onProjected: (batch) => batches.push(batch) })
    await projector.start()
    try {
      await until('the search projection caught up', () => caughtUp(db, 'search'), 15_000)
    } finally {
      await projector.stop()
    }
    assert.equal(batches.reduce((sum, batch) => sum + batch.count, 0), CHATS * VERSIONS, 'every event once')
    assert.equal(batches.length, Math.ceil((CHATS * VERSIONS) / 400), 'in batches of its size, each its own transaction')
    assert.ok(batches.slice(0, -1).every((batch) => batch.count === 400))
    assert.deepEqual(await checkpoint(db, 'messages'), messagesBefore, 'the messages checkpoint did not move')
    assert.deepEqual(await searchIndex(db), await visibleMessages(db))
    assert.equal((await searchIndex(db)).length, CHATS * (VERSIONS / 10) * 5)
  })

  test('projecting batches again (a checkpoint set back, from the start or the middle) changes nothing', async () => {
    const expected = await searchIndex(db)
    const end = await checkpoint(db, 'search')
    const { rows } = await sql<{ txid: string; gp: number }>`
      select transaction_id::text as txid, global_position as gp from events order by transaction_id, global_position offset ${Math.floor((CHATS * VERSIONS) / 3)} limit 1
    `.execute(db)
    for (const from of [{ txid: '0', gp: 0 }, rows[0]!]) {
      await db.updateTable('projector_checkpoints').set({ last_txid: from.txid, last_gp: from.gp }).where('name', '=', 'search').execute()
      await new Projector({ db, projection: searchProjection, batchSize: 700 }).catchUp()
      assert.deepEqual(await searchIndex(db), expected, `projected again from ${from.gp}`)
      const now = await checkpoint(db, 'search')
      assert.equal(now?.last_gp, end?.last_gp)
    }
  })
})

describe('a projection that cannot write', () => {
  let node: TestNode
  before(async () => {
    node = await startTestNode()
  })
  after(() => node?.close())

  test('holds back neither the app nor the messages projection, and catches up once it can write again', async () => {
    await request(node.url).post('/chats/steady/messages').send({ content: 'before the trouble' }).expect(201)
    await until('the search index has the first message', async () => (await searchIndex(node.db)).length === 1, 15_000)
    await sql`alter table search_index rename to search_index_away`.execute(node.db)
    try {
      const sent = await request(node.url).post('/chats/steady/messages').send({ content: 'during the trouble, a pelican' }).expect(201)
      await waitForProjection(node, 'steady', sent.body.version)
      const page = await request(node.url).get('/chats/steady').expect(200)
      assert.ok(page.text.includes('during the trouble, a pelican'), 'the chat page is served, from the messages projection')
      const search = await checkpoint(node.db, 'search')
      const messages = await checkpoint(node.db, 'messages')
      assert.ok(Number(search!.last_gp) < Number(messages!.last_gp), 'the search checkpoint stayed behind')
    } finally {
      await sql`alter table search_index_away rename to search_index`.execute(node.db)
    }
    await until('the search projection caught up', () => caughtUp(node.db, 'search'), 10_000)
    const found = await request(node.url).get('/search').query({ q: 'pelican' }).set('accept', 'application/json').expect(200)
    assert.deepEqual(found.body.results.map((r: { chatId: string; messageId: number }) => [r.chatId, r.messageId]), [['steady', 2]])
  })
})

describe('two nodes on a database without search', () => {
  let database: TestDatabase
  let nodes: TestNode[] = []
  before(async () => {
    database = await databaseWithoutSearch(20, 500)
  })
  after(async () => {
    await Promise.all(nodes.map((node) => node.close()))
    await database?.drop()
  })

  test('backfill the new projection together, taking turns, while both take posts, and end equal to a rebuild', async () => {
    nodes = await Promise.all([startTestNode({ databaseUrl: database.url }), startTestNode({ databaseUrl: database.url })])
    const posts = []
    for (let i = 0; i < 20; i++) posts.push(request(nodes[i % 2]!.url).post(`/chats/both-${i % 4}/messages`).send({ content: `from node ${i % 2}, post ${i}` }).expect(201))
    await Promise.all(posts)
    const db = nodes[0]!.db
    await until('the search projection caught up', () => caughtUp(db, 'search'), 30_000)
    await until('the messages projection caught up', () => caughtUp(db, 'messages'), 10_000)
    const live = await searchIndex(db)
    assert.deepEqual(live, await visibleMessages(db))
    await new Projector({ db, projection: searchProjection }).rebuild()
    assert.deepEqual(await searchIndex(db), live)
    assert.equal((await db.selectFrom('projector_checkpoints').select('name').where('name', '=', 'search').execute()).length, 1, 'one checkpoint row, shared')
  })
})

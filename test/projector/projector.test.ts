import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import { sql } from 'kysely'
import { messagesProjection } from '../../src/chat/messages-projection.js'
import { chatHandler, type ChatHandler } from '../../src/chat/chat-commands.js'
import { REACTIONS } from '../../src/chat/chat.js'
import { createDb, createPool, prepared } from '../../src/db/connect.js'
import type { DB } from '../../src/db/database.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { checkpointClaim, committedAfter, Projector, type Checkpoint, type Projection } from '../../src/projector/projector.js'
import { PROJECTIONS } from '../../src/projections.js'
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

const person = (i: number) => `person-${String(i % 17).padStart(16, '0')}`
const send = (handler: ChatHandler, chatId: string, i: number) =>
  handler.handle({ type: 'SendMessage', data: { chatId, personId: randomUUID(), sender: `s${i % 17}`, content: `message ${i}`, commandId: randomUUID() }, metadata: { now: new Date() } })

/** Every kind of change on a chat: each person sends, then edits, reacts to and retracts what is there. */
async function changeEverything(handler: ChatHandler, chatId: string, people: number): Promise<void> {
  const sent = await Promise.all(
    Array.from({ length: people }, (_, i) =>
      handler.handle({ type: 'SendMessage', data: { chatId, personId: person(i), sender: `p${i}`, content: `first from ${i}`, commandId: randomUUID() }, metadata: { now: new Date() } }),
    ),
  )
  const now = () => ({ now: new Date() })
  await Promise.all(
    sent.flatMap(({ version: messageId }, i) => [
      handler.handle({ type: 'EditMessage', data: { chatId, personId: person(i), messageId, content: `edited by ${i}`, commandId: randomUUID() }, metadata: now() }),
      handler.handle({ type: 'ToggleReaction', data: { chatId, personId: person(i + 1), name: `p${i + 1}`, messageId, emoji: REACTIONS[i % 6]!, commandId: randomUUID() }, metadata: now() }),
      handler.handle({ type: 'ToggleReaction', data: { chatId, personId: person(i + 2), name: `p${i + 2}`, messageId, emoji: REACTIONS[0], commandId: randomUUID() }, metadata: now() }),
    ]),
  )
  await Promise.all(
    sent
      .filter((_, i) => i % 3 === 0)
      .map(({ version: messageId }, i) => handler.handle({ type: 'RetractMessage', data: { chatId, personId: person(i * 3), messageId, commandId: randomUUID() }, metadata: now() })),
  )
}

async function readModel() {
  const messages = await db.selectFrom('messages').selectAll().orderBy('chat_id').orderBy('message_id').execute()
  const changes = await db.selectFrom('chat_changes').selectAll().orderBy('chat_id').orderBy('version').execute()
  const chats = await db.selectFrom('chats').selectAll().orderBy('chat_id').execute()
  return { messages, changes, chats }
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
    const { n } = await db.selectFrom('chat_changes').select(sql<number>`count(*)`.as('n')).executeTakeFirstOrThrow()
    if (Number(n) >= total) return
    if (Date.now() > deadline) throw new Error(`projected ${n} of ${total} events`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

describe('messages projector', () => {
  test('stopping and restarting it mid-stream leaves the read model equal to a full replay', async () => {
    const handler = chatHandler({ db })
    let projector = new Projector({ db, projection: messagesProjection, batchSize: 7 })
    await projector.start()
    for (let round = 0; round < 5; round++) {
      await Promise.all([...Array.from({ length: 40 }, (_, i) => send(handler, `restart-${i % 3}`, round * 40 + i)), changeEverything(handler, `restart-mixed-${round}`, 8)])
      await projector.stop()
      projector = new Projector({ db, projection: messagesProjection, batchSize: 7 })
      await projector.start()
    }
    await projectEverything(projector)
    await projector.stop()
    const live = await readModel()
    assert.equal(live.changes.length, await eventCount())
    assert.ok(live.messages.some((m) => m.retracted_at !== null && m.content === null), 'premise: some messages were retracted')
    assert.ok(live.messages.some((m) => m.edited_at !== null && Object.keys(m.reactions).length > 0), 'premise: some were edited and reacted to')

    await new Projector({ db, projection: messagesProjection }).rebuild()
    assert.deepEqual(await readModel(), live)
  })

  test('two projectors running at once produce the same read model as one replay', async () => {
    const handler = chatHandler({ db })
    const one = new Projector({ db, projection: messagesProjection, batchSize: 5, pollIntervalMs: 5 })
    const two = new Projector({ db, projection: messagesProjection, batchSize: 5, pollIntervalMs: 5 })
    await Promise.all([one.start(), two.start()])
    await Promise.all([...Array.from({ length: 300 }, (_, i) => send(handler, `pair-${i % 4}`, i)), changeEverything(handler, 'pair-mixed', 20)])
    await projectEverything(one)
    await Promise.all([one.stop(), two.stop()])
    const live = await readModel()
    assert.equal(live.changes.length, await eventCount())
    for (const chat of live.chats) {
      const versions = live.changes.filter((m) => m.chat_id === chat.chat_id).map((m) => Number(m.version))
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
    const handler = chatHandler({ db })
    const live = new Projector({ db, projection: messagesProjection, pollIntervalMs: 5 })
    await live.start()
    const writing = Promise.all(Array.from({ length: 200 }, (_, i) => send(handler, `rebuild-${i % 5}`, i)))
    const rebuilt = await new Projector({ db, projection: messagesProjection }).rebuild()
    await writing
    await projectEverything(live)
    await live.stop()
    assert.ok(rebuilt > 0)
    const { changes } = await readModel()
    assert.equal(changes.length, await eventCount())
  })
})

describe('a projector that settles (search) or spaces its batches (messages)', () => {
  /** Counts what each batch covered, and writes nothing: the projector's own timing is what is under test. */
  const counting = (name: string, batches: number[], drains: number[] = []): Projection => ({
    name,
    async project(db, after, limit, claim) {
      drains.push(Date.now())
      const { rows } = await sql<{ txid: string; gp: string }>`select transaction_id::text as txid, global_position as gp from (${committedAfter(after, limit)}) as batch`.execute(db)
      const last = rows.at(-1)
      if (!last) return { count: 0, heads: new Map(), claimed: true }
      batches.push(rows.length)
      const to = { txid: last.txid, gp: Number(last.gp) }
      const { rows: [moved] } = await sql<{ claimed: string }>`with ${claim(to)} select count(*) as claimed from claimed`.execute(db)
      return { count: rows.length, last: to, heads: new Map(), claimed: Number(moved!.claimed) === 1 }
    },
    async reset() {},
  })

  /** A counting projector of its own checkpoint, past the backlog of the tests before it, not started. */
  async function caughtUp(prefix: string, timing: { settleMs?: number; spacingMs?: number }): Promise<{ projector: Projector; batches: number[]; drains: number[] }> {
    const batches: number[] = []
    const drains: number[] = []
    const name = `${prefix}-${randomUUID()}`
    const projector = new Projector({ db, projection: counting(name, batches, drains), pollIntervalMs: 60_000, ...timing })
    await db.insertInto('projector_checkpoints').values({ name }).execute()
    await projector.catchUp()
    batches.length = 0
    drains.length = 0
    return { projector, batches, drains }
  }

  const sum = (numbers: number[]) => numbers.reduce((total, n) => total + n, 0)

  test('folds the wake-ups of a burst into one drain after settleMs, and still projects every event', async () => {
    const SETTLE_MS = 3_000
    const handler = chatHandler({ db })
    const { projector, batches } = await caughtUp('settle', { settleMs: SETTLE_MS })
    try {
      const started = Date.now()
      await projector.start()
      for (let i = 0; i < 10; i++) {
        await send(handler, 'settle', i)
        projector.wake()
      }
      // Each append woke it, yet it has not drained: the wake-ups wait for the settle time.
      if (Date.now() - started < SETTLE_MS - 500) assert.deepEqual(batches, [])
      const total = () => sum(batches)
      for (const deadline = Date.now() + SETTLE_MS + 10_000; total() < 10; ) {
        if (Date.now() > deadline) throw new Error(`projected ${total()} of 10 events in batches ${JSON.stringify(batches)}`)
        await new Promise((resolve) => setTimeout(resolve, 100))
        // An event still behind the cluster-wide horizon waits for the next wake-up (other test files run transactions).
        if (Date.now() - started > SETTLE_MS) projector.wake()
      }
      assert.equal(total(), 10)
      // Without settling, each of the ten wake-ups drains its own batch.
      assert.ok(batches.length <= 3, `batches ${JSON.stringify(batches)}`)
    } finally {
      await projector.stop()
    }
  })

  test('with spacingMs, a lone wake-up drains at once, and the wake-ups of a burst share a few batches', async () => {
    const SPACING_MS = 1_000
    const handler = chatHandler({ db })
    const { projector, batches, drains } = await caughtUp('spacing', { spacingMs: SPACING_MS })
    const projectedAll = async (n: number) => {
      for (const deadline = Date.now() + 10_000; sum(batches) < n; ) {
        if (Date.now() > deadline) throw new Error(`projected ${sum(batches)} of ${n} events in batches ${JSON.stringify(batches)}`)
        await new Promise((resolve) => setTimeout(resolve, 20))
        projector.wake()
      }
    }
    try {
      await projector.start()
      await new Promise((resolve) => setTimeout(resolve, SPACING_MS))
      // A lone append after a quiet spell: its batch starts at once, well before the spacing is up
      // (it may find the event still behind the cluster-wide horizon; a later wake-up projects it).
      await send(handler, 'spacing', 0)
      const lone = Date.now()
      projector.wake()
      await projectedAll(1)
      assert.ok(drains[0]! - lone < SPACING_MS / 2, `the lone append's batch started after ${drains[0]! - lone} ms`)
      // A burst right after: its wake-ups wait for the spacing, then fold into one batch (or two, behind the horizon).
      batches.length = 0
      for (let i = 1; i <= 10; i++) {
        await send(handler, 'spacing', i)
        projector.wake()
      }
      await new Promise((resolve) => setTimeout(resolve, 100))
      if (Date.now() - lone < SPACING_MS - 300) assert.deepEqual(batches, [], 'nothing drained within the spacing of the last drain')
      await projectedAll(10)
      assert.ok(batches.length <= 3, `batches ${JSON.stringify(batches)}`)
    } finally {
      await projector.stop()
    }
  })
})

describe('a batch whose claim another projector took first', () => {
  const START: Checkpoint = { txid: '0', gp: 0 }
  const ROLLED_BACK = new Error('rolled back')

  /** Projects every event from the start inside a transaction that is rolled back; says whether the batch wrote anything. */
  async function projectFromStart(projection: Projection, claimFrom: Checkpoint): Promise<{ claimed: boolean; count: number; wrote: boolean }> {
    let outcome: { claimed: boolean; count: number; wrote: boolean } | undefined
    await db
      .transaction()
      .execute(async (tx) => {
        const batch = await projection.project(tx, START, 100_000, checkpointClaim(projection.name, claimFrom))
        // A transaction is given an id at its first write: none means nothing was written.
        const { rows } = await sql<{ xid: string | null }>`select pg_current_xact_id_if_assigned()::text as xid`.execute(tx)
        outcome = { claimed: batch.claimed, count: batch.count, wrote: rows[0]!.xid !== null }
        throw ROLLED_BACK
      })
      .catch((error) => {
        if (error !== ROLLED_BACK) throw error
      })
    return outcome!
  }

  for (const projection of PROJECTIONS) {
    test(`${projection.name}: writes nothing (the claim guards every write), where the same batch with the claim writes`, async () => {
      await changeEverything(chatHandler({ db }), `claim-${projection.name}`, 6)
      // Another projector has moved the checkpoint past the start.
      await db.insertInto('projector_checkpoints').values({ name: projection.name }).onConflict((oc) => oc.column('name').doNothing()).execute()
      await sql`
        update projector_checkpoints set (last_txid, last_gp) = (select transaction_id, global_position from events order by transaction_id, global_position limit 1)
        where name = ${projection.name} and last_txid = '0'
      `.execute(db)
      const lost = await projectFromStart(projection, START)
      assert.ok(lost.count > 0)
      assert.deepEqual({ claimed: lost.claimed, wrote: lost.wrote }, { claimed: false, wrote: false })

      const row = await db.selectFrom('projector_checkpoints').select(['last_txid', 'last_gp']).where('name', '=', projection.name).executeTakeFirstOrThrow()
      const held = await projectFromStart(projection, { txid: row.last_txid, gp: Number(row.last_gp) })
      assert.deepEqual({ claimed: held.claimed, wrote: held.wrote }, { claimed: true, wrote: true })
    })
  }
})

describe('statements marked prepared (the projector\'s, the append)', () => {
  test('are parsed once per connection and run again by name; other statements are not kept', async () => {
    const single = createDb(createPool({ connectionString: database.url, max: 1 }))
    try {
      const answers: number[] = []
      for (let i = 0; i < 3; i++) answers.push((await sql<{ n: number }>`${prepared} select ${i}::int as n`.execute(single)).rows[0]!.n)
      await sql`select ${1}::int as unmarked`.execute(single)
      assert.deepEqual(answers, [0, 1, 2])
      const { rows } = await sql<{ statement: string }>`select statement from pg_prepared_statements`.execute(single)
      assert.deepEqual(rows.map((row) => row.statement), ['/* prepared */ select $1::int as n'])
    } finally {
      await single.destroy()
    }
  })
})

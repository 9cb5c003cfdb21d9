/**
 * Search as a second projection of the log (DESIGN "Several projections",
 * issue 12), against a real node and PostgreSQL.
 *
 * First the deployment story: a database of 50,000 events written by a
 * version without search (its messages projection up to date, no search
 * checkpoint, an empty index) gets a node with search. The new projection
 * backfills from the first event in batches while 10 writers keep posting
 * (sends, edits, retractions), the messages projection keeps serving
 * meanwhile, and the index ends equal to a rebuild of it and to the visible
 * messages of the read model.
 *
 * Then search itself, on the same node: a message is found within 1 s of its
 * commit and no longer after its retraction; edits re-index; `chat=` limits
 * to one chat; names and text in other scripts are found; snippets are
 * escaped text with only <mark> as markup.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import { sql } from 'kysely'
import type pg from 'pg'
import request from 'supertest'
import { messagesProjection } from '../../src/chat/messages-projection.js'
import { createDb, createPool } from '../../src/db/connect.js'
import type { DB } from '../../src/db/database.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { Projector } from '../../src/projector/projector.js'
import { searchProjection } from '../../src/search/search-projection.js'
import { freshDatabase, type TestDatabase } from '../support/database.js'
import { join as joinAs, type Person } from '../support/people.js'
import { projectionCaughtUp as caughtUp, startTestNode, waitForProjection, type TestNode } from '../support/node.js'
import { SseClient } from '../support/sse.js'

const SEED_CHATS = 20
const SEED_VERSIONS = 2_500
const SEED_EVENTS = SEED_CHATS * SEED_VERSIONS
const WRITERS = 10

let database: TestDatabase
let node: TestNode

interface Found {
  chatId: string
  messageId: number
  sender: string
  snippet: string
  sentAt: string
}

const join = (name: string) => joinAs(node.url, name)

/** Commands as JSON with the person's cookie: the raw answer (writers tolerate 429). */
function as(person: Person) {
  const post = (path: string, body: object) => request(node.url).post(path).set('cookie', person.cookie).send({ commandId: randomUUID(), ...body })
  return {
    send: (chatId: string, content: string) => post(`/chats/${chatId}/messages`, { content }),
    edit: (chatId: string, messageId: number, content: string) => post(`/chats/${chatId}/messages/${messageId}/edits`, { content }),
    retract: (chatId: string, messageId: number) => post(`/chats/${chatId}/messages/${messageId}/retraction`, {}),
  }
}

async function sent(person: Person, chatId: string, content: string): Promise<number> {
  const res = await as(person).send(chatId, content)
  assert.equal(res.status, 201, res.text)
  return res.body.version as number
}

async function searchJson(q: string, chat?: string): Promise<{ query: string; results: Found[] }> {
  const res = await request(node.url)
    .get('/search')
    .query(chat === undefined ? { q } : { q, chat })
    .set('accept', 'application/json')
  assert.equal(res.status, 200, `search ${q}: ${res.status} ${res.text}`)
  assert.match(String(res.headers['content-type']), /application\/json/)
  return res.body
}

async function found(q: string, chat?: string): Promise<Found[]> {
  return (await searchJson(q, chat)).results
}

/** Polls until `predicate` holds of the results; answers how long it took. */
async function untilResults(q: string, predicate: (results: Found[]) => boolean, timeoutMs: number): Promise<number> {
  const started = performance.now()
  for (;;) {
    const results = await found(q)
    if (predicate(results)) return performance.now() - started
    if (performance.now() - started > timeoutMs) assert.fail(`search "${q}" did not change as expected within ${timeoutMs} ms: ${JSON.stringify(results)}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

async function untilCaughtUp(name: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await caughtUp(node.db, name))) {
    if (Date.now() > deadline) assert.fail(`the ${name} projection did not catch up within ${timeoutMs} ms`)
    node.projectors.forEach((projector) => projector.wake())
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

type IndexRow = { chat_id: string; message_id: number; sender: string; content: string; sent_at: string }

async function searchIndex(db: DB): Promise<IndexRow[]> {
  const { rows } = await sql<IndexRow>`
    select chat_id, message_id, sender, content, to_char(sent_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS') as sent_at
    from search_index order by chat_id, message_id
  `.execute(db)
  return rows
}

async function visibleMessages(db: DB): Promise<IndexRow[]> {
  const { rows } = await sql<IndexRow>`
    select chat_id, message_id, sender, content, to_char(sent_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS') as sent_at
    from messages where retracted_at is null order by chat_id, message_id
  `.execute(db)
  return rows
}

/**
 * 50,000 events in the app's shapes, written the way the log grows (chats
 * interleaved, transactions of 2,000 events): per ten versions of a chat, six
 * MessageSent, an edit of the second, a retraction of the third, a reaction
 * to the first and its removal. Every message carries a word of its own,
 * `sw<chat>v<version>`; edits say `swe<chat>v<message>` instead.
 */
async function seed(pool: pg.Pool): Promise<void> {
  await pool.query(`insert into streams (stream_id, stream_type, version) select 'chat-bf' || c, 'chat', $1 from generate_series(1, $2) c`, [SEED_VERSIONS, SEED_CHATS])
  const iso = (expr: string) => `to_char((timestamptz '2025-01-01 00:00:00+00' + (${expr}) * interval '1 second') at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`
  for (let from = 1; from <= SEED_VERSIONS; from += 100) {
    await pool.query(
      `insert into events (stream_id, stream_version, event_id, event_type, data, metadata)
       select 'chat-bf' || c, v, gen_random_uuid(),
              case (v - 1) % 10 when 6 then 'MessageEdited' when 7 then 'MessageRetracted' when 8 then 'ReactionAdded' when 9 then 'ReactionRemoved' else 'MessageSent' end,
              case (v - 1) % 10
                when 6 then jsonb_build_object('messageId', v - 5, 'authorId', 'seed-' || (v - 5) % 7, 'content', 'edited swe' || c || 'v' || (v - 5) || ' tea is ready', 'editedAt', ${iso('v * 20 + c')})
                when 7 then jsonb_build_object('messageId', v - 5, 'authorId', 'seed-' || (v - 5) % 7, 'retractedAt', ${iso('v * 20 + c')})
                when 8 then jsonb_build_object('messageId', v - 8, 'by', 'seed-r', 'name', 'reactor', 'emoji', '👍', 'reactedAt', ${iso('v * 20 + c')})
                when 9 then jsonb_build_object('messageId', v - 9, 'by', 'seed-r', 'name', 'reactor', 'emoji', '👍', 'reactedAt', ${iso('v * 20 + c')})
                else jsonb_build_object('chatId', 'bf' || c, 'authorId', 'seed-' || v % 7, 'sender', 'seeder' || v % 7,
                                        'content', 'message sw' || c || 'v' || v || ' about ' || (array['tea', 'coffee', 'cake', 'rain'])[1 + v % 4], 'sentAt', ${iso('v * 20 + c')})
              end,
              jsonb_build_object('commandId', gen_random_uuid()::text, 'personId', case (v - 1) % 10 when 8 then 'seed-r' when 9 then 'seed-r' else 'seed-' || v % 7 end)
       from generate_series($1::int, $2::int) v, generate_series(1, $3::int) c
       order by v, c`,
      [from, Math.min(SEED_VERSIONS, from + 99), SEED_CHATS],
    )
  }
}

before(async () => {
  database = await freshDatabase()
  // The previous version's database: the log and an up-to-date messages projection, no search yet.
  const pool = createPool({ connectionString: database.url, max: 2 })
  const db = createDb(pool)
  try {
    await migrateToLatest(db)
    await seed(pool)
    await new Projector({ db, projection: messagesProjection }).rebuild()
    await sql`delete from projector_checkpoints where name = 'search'`.execute(db)
    await sql`truncate search_index`.execute(db)
    await pool.query('vacuum analyze events')
  } finally {
    await db.destroy()
  }
})
after(async () => {
  await node?.close()
  await database?.drop()
})

describe('a search projection added to a database of 50,000 events', () => {
  test('backfills in batches while 10 writers keep posting and the messages projection keeps serving, and ends equal to a rebuild of it', async () => {
    const seedEnd = await (async () => {
      const pool = createPool({ connectionString: database.url, max: 1 })
      const db = createDb(pool)
      try {
        assert.equal(Number((await sql<{ n: number }>`select count(*) as n from events`.execute(db)).rows[0]!.n), SEED_EVENTS)
        assert.equal((await db.selectFrom('projector_checkpoints').select('name').where('name', '=', 'search').execute()).length, 0, 'no search checkpoint yet')
        const { rows } = await sql<{ gp: number }>`select max(global_position) as gp from events`.execute(db)
        return rows[0]!.gp
      } finally {
        await db.destroy()
      }
    })()

    const started = performance.now()
    node = await startTestNode({ databaseUrl: database.url })
    assert.deepEqual(node.projectors.map((projector) => projector.name), ['messages', 'search'])

    // Where the search checkpoint stands, sampled through the backfill: it moves in many steps (batches), not one.
    const positions = new Set<number>()
    let backfilledAt: number | undefined
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        const row = await node.db.selectFrom('projector_checkpoints').select('last_gp').where('name', '=', 'search').executeTakeFirst()
        const gp = Number(row?.last_gp ?? 0)
        if (gp > 0 && gp < seedEnd) positions.add(gp)
        if (gp >= seedEnd && backfilledAt === undefined) backfilledAt = performance.now()
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    })()

    // The messages projection serves meanwhile: an edit reaches a live stream through it (a send would arrive at commit without it).
    const watcher = await join('watcher')
    const stream = await SseClient.open(`${node.url}/chats/during/events?after=0`)
    const first = await sent(watcher, 'during', 'posted during the backfill')
    const edit = await as(watcher).edit('during', first, 'edited during the backfill')
    assert.equal(edit.status, 200, edit.text)
    await stream.waitFor((client) => client.messages.some((m) => m.id === '2' && m.data.includes('edited during the backfill')), 10_000, 'the edit frame')
    const frameAt = performance.now()
    stream.close()

    // Ten writers post, edit and retract in their own rooms and in the old ones until the backfill is done, and a moment longer.
    const writers = await Promise.all(Array.from({ length: WRITERS }, (_, i) => join(`writer${i}`)))
    let writing = true
    const tally = { sent: 0, edited: 0, retracted: 0, limited: 0 }
    const failures: string[] = []
    const write = async (writer: Person, i: number) => {
      for (let k = 1; writing; k++) {
        const chatId = k % 2 === 0 ? `w${i}-${k % 8}` : `bf${((i + k) % SEED_CHATS) + 1}`
        const res = await as(writer).send(chatId, `writer ${i} post ${k} wsw${i}k${k}`)
        if (res.status === 429) {
          tally.limited++
          continue
        }
        if (res.status !== 201) {
          failures.push(`send: ${res.status} ${res.text}`)
          continue
        }
        tally.sent++
        const id = res.body.version as number
        if (k % 5 === 0) {
          const edited = await as(writer).edit(chatId, id, `writer ${i} post ${k} rewritten wswe${i}k${k}`)
          if (edited.status === 200) tally.edited++
          else if (edited.status !== 429) failures.push(`edit: ${edited.status} ${edited.text}`)
        }
        if (k % 9 === 0) {
          const retracted = await as(writer).retract(chatId, id)
          if (retracted.status === 200) tally.retracted++
          else if (retracted.status !== 429) failures.push(`retract: ${retracted.status} ${retracted.text}`)
        }
      }
    }
    const writing10 = writers.map(write)
    let foundMs: number
    let goneMs: number
    try {
      // The seed's last event is the end of the backfill (every later event has a later transaction id and position).
      for (const deadline = Date.now() + 30_000; backfilledAt === undefined; ) {
        if (Date.now() > deadline) assert.fail(`the search backfill did not reach the seed's end within 30 s (${positions.size} positions seen)`)
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
      assert.ok(frameAt < backfilledAt!, `the edit's frame arrived (${Math.round(frameAt - started)} ms) while search was still backfilling (done at ${Math.round(backfilledAt! - started)} ms)`)

      // Still under write load, now live: a word is found within a second of its commit, and gone within a second of its retraction.
      const probe = await sent(watcher, 'during', 'a quokka appears')
      foundMs = await untilResults('quokka', (results) => results.some((r) => r.chatId === 'during' && r.messageId === probe), 1_000)
      const retraction = await as(watcher).retract('during', probe)
      assert.equal(retraction.status, 200, retraction.text)
      goneMs = await untilResults('quokka', (results) => results.length === 0, 1_000)
    } finally {
      writing = false
      await Promise.all(writing10)
      sampling = false
      await sampler
    }
    const backfillMs = backfilledAt! - started
    assert.deepEqual(failures, [], 'writers were refused only by the rate limit')
    assert.ok(tally.sent >= WRITERS, `every writer got posts in: ${JSON.stringify(tally)}`)
    assert.ok(positions.size >= 5, `the backfill moved its checkpoint in batches (${positions.size} positions seen below the seed's end)`)

    // Quiet now: both projections take in the last writes, then the live index must equal a rebuild of it, and the visible messages.
    await untilCaughtUp('messages')
    await untilCaughtUp('search')
    const live = await searchIndex(node.db)
    assert.deepEqual(live, await visibleMessages(node.db), 'the index holds exactly the visible messages, as they read now')
    const rebuilt = await new Projector({ db: node.db, projection: searchProjection }).rebuild()
    assert.ok(rebuilt >= SEED_EVENTS)
    assert.deepEqual(await searchIndex(node.db), live, 'a rebuild of the index gives the same rows')

    // Some of the seeded history, as searched: sent, edited (old word gone), retracted.
    assert.deepEqual((await found('sw7v1')).map((r) => [r.chatId, r.messageId]), [['bf7', 1]])
    assert.deepEqual(await found('sw7v2'), [], 'an edited message is not found by what it said before')
    assert.deepEqual((await found('swe7v2')).map((r) => [r.chatId, r.messageId]), [['bf7', 2]])
    assert.deepEqual(await found('sw7v3'), [], 'a retracted message is not found')
    const seeded = Number((await sql<{ n: number }>`select count(*) as n from search_index where chat_id like 'bf%' and sender like 'seeder%'`.execute(node.db)).rows[0]!.n)
    assert.equal(seeded, SEED_CHATS * (SEED_VERSIONS / 10) * 5, 'five of every six seeded messages are visible')

    console.log(
      `# backfill of ${SEED_EVENTS} events: ${Math.round(backfillMs)} ms (${Math.round(SEED_EVENTS / (backfillMs / 1000))} events/s) with ${WRITERS} writers: ${JSON.stringify(tally)}; ` +
        `checkpoint seen at ${positions.size} positions; edit frame at ${Math.round(frameAt - started)} ms; found in ${Math.round(foundMs)} ms, gone in ${Math.round(goneMs)} ms`,
    )
  })
})

describe('searching what people can see now', () => {
  let ada: Person
  let boris: Person

  before(async () => {
    node ??= await startTestNode({ databaseUrl: database.url })
    ada = await join('Ada Lovelace')
    boris = await join('Борис')
  })

  test('a message is found within 1 s of its commit and not after its retraction', async () => {
    for (let round = 0; round < 3; round++) {
      const word = `wombat${round}x${randomUUID().slice(0, 8)}`
      const id = await sent(ada, 'live', `have you seen the ${word}?`)
      const foundMs = await untilResults(word, (results) => results.length === 1 && results[0]!.messageId === id && results[0]!.chatId === 'live', 1_000)
      assert.ok(foundMs < 1_000, `found in ${foundMs} ms`)
      const res = await as(ada).retract('live', id)
      assert.equal(res.status, 200, res.text)
      const goneMs = await untilResults(word, (results) => results.length === 0, 1_000)
      assert.ok(goneMs < 1_000, `gone in ${goneMs} ms`)
    }
  })

  test('an edit re-indexes: the old word is no longer found, the new one is', async () => {
    const id = await sent(ada, 'fruit', 'apple and banana')
    await untilResults('banana', (results) => results.some((r) => r.messageId === id && r.chatId === 'fruit'), 2_000)
    const res = await as(ada).edit('fruit', id, 'apple and cherry')
    assert.equal(res.status, 200, res.text)
    await untilResults('cherry', (results) => results.some((r) => r.messageId === id && r.chatId === 'fruit'), 2_000)
    assert.deepEqual(await found('banana', 'fruit'), [])
    const apples = await found('apple', 'fruit')
    assert.equal(apples.length, 1, 'one message, once')
    assert.equal(apples[0]!.snippet, '<mark>apple</mark> and cherry')
  })

  test('chat= searches one chat only, and a chat name that cannot exist is 404', async () => {
    const word = `teapot${randomUUID().slice(0, 6)}`
    const here = await sent(ada, 'room-one', `the ${word} is here`)
    const there = await sent(boris, 'room-two', `another ${word} there`)
    await untilResults(word, (results) => results.length === 2, 2_000)
    assert.deepEqual((await found(word, 'room-one')).map((r) => [r.chatId, r.messageId]), [['room-one', here]])
    assert.deepEqual((await found(word, 'room-two')).map((r) => [r.chatId, r.messageId]), [['room-two', there]])
    assert.deepEqual(await found(word, 'room-three'), [])
    assert.deepEqual((await found(word)).map((r) => r.chatId).sort(), ['room-one', 'room-two'])
    await request(node.url).get('/search').query({ q: word, chat: 'Not A Room!' }).set('accept', 'application/json').expect(404)
  })

  test('q or chat given twice is 400, not a search for nothing', async () => {
    for (const query of [`q=tea&q=pot`, `q=tea&chat=room-one&chat=room-two`]) {
      const res = await request(node.url).get(`/search?${query}`).set('accept', 'application/json').expect(400)
      assert.match(res.body.error, /once each/)
    }
  })

  test('control characters in a search (a NUL, which PostgreSQL refuses in text) are dropped, as in messages: never a 500', async () => {
    const word = `kettle${randomUUID().slice(0, 6)}`
    const id = await sent(ada, 'controls', `the ${word} sings`)
    await untilResults(word, (results) => results.some((r) => r.messageId === id), 2_000)
    for (const q of ['\u0000', `${word}\u0000`, `\u0007${word}`, `${word}\u001b`]) {
      for (const chat of [undefined, 'controls']) {
        const res = await request(node.url).get('/search').query({ q, ...(chat ? { chat } : {}) }).set('accept', 'application/json')
        assert.equal(res.status, 200, `${JSON.stringify(q)}: ${res.text}`)
        assert.deepEqual(res.body.results.map((r: { messageId: number }) => r.messageId), q === '\u0000' ? [] : [id])
      }
      await request(node.url).get('/search').query({ q }).expect(200)
    }
  })

  test('names are found: a search for the sender finds what they wrote, whatever the case', async () => {
    const id = await sent(ada, 'names', 'nothing in here says who wrote it')
    await untilResults('lovelace', (results) => results.some((r) => r.chatId === 'names' && r.messageId === id), 2_000)
    const results = await found('Lovelace', 'names')
    assert.deepEqual(results.map((r) => [r.messageId, r.sender]), [[id, 'Ada Lovelace']])
    // A name in another script is found too, in either case.
    const hers = await sent(boris, 'names', 'just a message')
    await untilResults('борис', (results) => results.some((r) => r.chatId === 'names' && r.messageId === hers), 2_000)
    assert.deepEqual((await found('БОРИС', 'names')).map((r) => r.messageId), [hers])
  })

  test('text in other scripts is found word by word, as written; CJK without spaces is one word ("simple" splits on spaces and punctuation only)', async () => {
    const russian = await sent(boris, 'world', 'Привет, МИР! Чай готов.')
    const greek = await sent(ada, 'world', 'Καλημέρα κόσμε')
    const accents = await sent(ada, 'world', 'naïve café in Ærøskøbing')
    const chinese = await sent(ada, 'world', '今天 天气 很好')
    const japanese = await sent(boris, 'world', '日本語の文章です')
    await waitForProjection(node, 'world', japanese)
    await untilResults('日本語の文章です', (results) => results.some((r) => r.messageId === japanese), 2_000)
    const ids = async (q: string) => (await found(q, 'world')).map((r) => r.messageId)
    assert.deepEqual(await ids('мир'), [russian], 'Cyrillic, case-folded')
    assert.deepEqual(await ids('чай'), [russian])
    assert.deepEqual(await ids('"привет мир"'), [russian], 'a phrase across punctuation')
    assert.deepEqual(await ids('καλημέρα'), [greek])
    assert.deepEqual(await ids('café'), [accents])
    assert.deepEqual(await ids('cafe'), [], 'accents are not folded: words match as written')
    assert.deepEqual(await ids('ærøskøbing'), [accents])
    assert.deepEqual(await ids('天气'), [chinese], 'CJK words separated by spaces are found one by one')
    assert.deepEqual(await ids('日本語の文章です'), [japanese], 'a CJK sentence without spaces is found whole')
    assert.deepEqual(await ids('日本語'), [], 'but not by a part of it: no CJK word splitting in "simple"')
    const [hit] = await found('мир', 'world')
    assert.equal(hit!.snippet, 'Привет, <mark>МИР</mark>! Чай готов.', 'a short message is its own snippet, whole, punctuation and all')
  })

  test('web search syntax: "a phrase", or, and -excluded', async () => {
    const one = await sent(ada, 'syntax', 'green tea with mint')
    const two = await sent(ada, 'syntax', 'mint tea, green later')
    const three = await sent(ada, 'syntax', 'black coffee')
    await untilResults('coffee', (results) => results.some((r) => r.messageId === three), 2_000)
    const ids = async (q: string) => (await found(q, 'syntax')).map((r) => r.messageId).sort((a, b) => a - b)
    assert.deepEqual(await ids('"green tea"'), [one])
    assert.deepEqual(await ids('green tea'), [one, two])
    assert.deepEqual(await ids('mint -green'), [])
    assert.deepEqual(await ids('tea -later'), [one])
    assert.deepEqual(await ids('coffee or mint'), [one, two, three])
    // Queries that say nothing, or are malformed, find nothing and fail nothing.
    for (const q of ['', '   ', '!!!', '"', '-', 'or', '"unclosed phrase', '& | ! <->', "'", '\\']) {
      const body = await searchJson(q, 'syntax')
      assert.ok(Array.isArray(body.results), `${JSON.stringify(q)} answers a list`)
    }
    await request(node.url).get('/search').query({ q: 'x'.repeat(201) }).set('accept', 'application/json').expect(422)
    await request(node.url).get('/search').query({ q: 'x'.repeat(200) }).set('accept', 'application/json').expect(200)
    // A page gets its search form back with the words and the reason, not an error page.
    const page = await request(node.url).get('/search').query({ q: `${'y'.repeat(200)}<b>`, chat: 'syntax' }).expect(422)
    assert.match(page.text, /<form class="search-box"/)
    assert.ok(page.text.includes(`value="${'y'.repeat(200)}&lt;b&gt;"`), 'the words as typed, escaped')
    assert.match(page.text, /role="alert">A search is at most 200 characters; this one has 203\./)
    assert.match(page.text, /name="chat" value="syntax"/)
  })

  test('the JSON answer is {query, results: [{chatId, messageId, sender, snippet, sentAt}]}', async () => {
    const id = await sent(ada, 'shape', 'the shape of an answer, platypus')
    await untilResults('platypus', (results) => results.some((r) => r.messageId === id), 2_000)
    const body = await searchJson('  platypus ')
    assert.equal(body.query, 'platypus')
    assert.equal(body.results.length, 1)
    const [result] = body.results
    assert.deepEqual(Object.keys(result!).sort(), ['chatId', 'messageId', 'sender', 'sentAt', 'snippet'])
    assert.equal(result!.chatId, 'shape')
    assert.equal(result!.messageId, id)
    assert.equal(result!.sender, 'Ada Lovelace')
    assert.match(result!.sentAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    const row = await node.db.selectFrom('messages').select('sent_at').where('chat_id', '=', 'shape').where('message_id', '=', id).executeTakeFirstOrThrow()
    assert.equal(result!.sentAt, row.sent_at.toISOString())
  })

  test('a short message is its own snippet, whole; a long one shows its best passages around the matches', async () => {
    const short = await sent(ada, 'snippets', '(capybara) — really?\nyes: a capybara!')
    const filler = (n: number, word: string) => Array.from({ length: n }, (_, i) => `${word}${i}`).join(' ')
    const long = await sent(ada, 'snippets', `${filler(60, 'alpha')} the axolotl is here. ${filler(60, 'beta')} another axolotl there. ${filler(60, 'gamma')}`)
    await untilResults('axolotl', (results) => results.some((r) => r.messageId === long), 2_000)
    const [whole] = await found('capybara', 'snippets')
    assert.equal(whole!.messageId, short)
    assert.equal(whole!.snippet, '(<mark>capybara</mark>) — really?\nyes: a <mark>capybara</mark>!')
    const [passages] = await found('axolotl', 'snippets')
    assert.equal(passages!.snippet.match(/<mark>axolotl<\/mark>/g)?.length, 2, passages!.snippet)
    assert.ok(passages!.snippet.includes(' … '), 'two passages, with a cut between them')
    assert.ok(!passages!.snippet.includes('alpha0 ') && !passages!.snippet.includes('gamma59'), 'not the whole message')
    assert.ok(passages!.snippet.split(/\s+/).length <= 2 * 35 + 2, `at most two passages of 35 words: ${passages!.snippet}`)
  })

  test('a snippet is escaped text with only <mark> as markup, on the page too', async () => {
    const content = 'look <b>bold</b> & <script>alert("x")</script> <img src=x onerror=alert(1)> needle "quoted" \'single\''
    const id = await sent(ada, 'html', content)
    await untilResults('needle', (results) => results.some((r) => r.chatId === 'html' && r.messageId === id), 2_000)
    const [hit] = await found('needle', 'html')
    assert.ok(hit!.snippet.includes('<mark>needle</mark>'), hit!.snippet)
    assert.ok(hit!.snippet.includes('&lt;b&gt;bold&lt;/b&gt;'), hit!.snippet)
    assert.ok(hit!.snippet.includes('&lt;script&gt;'), hit!.snippet)
    assert.ok(hit!.snippet.includes('&amp;'), hit!.snippet)
    assert.equal(hit!.snippet.replace(/<\/?mark>/g, '').includes('<'), false, `no markup but <mark>: ${hit!.snippet}`)
    assert.equal(hit!.snippet.replace(/<\/?mark>/g, '').includes('>'), false, `no markup but <mark>: ${hit!.snippet}`)
    // A word that is part of the markup someone typed is found as text, and marked inside the escaped text.
    const [script] = await found('script', 'html')
    assert.equal(script!.snippet.replace(/<\/?mark>/g, '').includes('<'), false, script!.snippet)
    assert.ok(script!.snippet.includes('&lt;<mark>script</mark>&gt;'), script!.snippet)

    // Typed markup is text to search, also in a query.
    assert.deepEqual((await found('<b>', 'html')).map((r) => r.messageId), [id])
    assert.deepEqual((await found('"<img src=x"', 'html')).map((r) => r.messageId), [id])

    const page = await request(node.url).get('/search').query({ q: 'needle', chat: 'html' }).expect(200)
    assert.match(String(page.headers['content-type']), /text\/html/)
    assert.ok(page.text.includes(hit!.snippet), 'the page shows the same escaped snippet')
    assert.ok(!page.text.includes('<b>bold</b>') && !page.text.includes('<img src=x'), 'what people typed is never markup on the page')
    assert.ok(page.text.includes(`href="/chats/html?at=${id}#message-html-${id}"`), 'the result links to the chat as of that message')
    // The query is shown escaped in the page too.
    const echoed = await request(node.url).get('/search').query({ q: '<img src=x onerror=alert(1)>' }).expect(200)
    assert.ok(!echoed.text.includes('<img src=x'), 'the query is escaped where the page repeats it')
  })
})

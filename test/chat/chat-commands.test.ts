import assert from 'node:assert/strict'
import { createHash, randomUUID } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import { Kysely, PostgresDialect, sql } from 'kysely'
import request from 'supertest'
import { BODY_LIMIT } from '../../src/app.js'
import { RATE_LIMIT, RECENT_COMMANDS, type SendMessage } from '../../src/chat/chat.js'
import { chatHandler } from '../../src/chat/chat-commands.js'
import { Overloaded } from '../../src/event-store/command-handler.js'
import type { Database } from '../../src/db/database.js'
import { readStream } from '../../src/event-store/event-store.js'
import { startTestNode, type TestNode } from '../support/node.js'

let node: TestNode
before(async () => (node = await startTestNode()))
after(() => node.close())

async function eventCount(chatId?: string): Promise<number> {
  let query = node.db.selectFrom('events').select(sql<number>`count(*)`.as('n'))
  if (chatId) query = query.where('stream_id', '=', `chat-${chatId}`)
  return Number((await query.executeTakeFirstOrThrow()).n)
}

/** A person per name in these tests: the id the session would give them. */
const personOf = (name: string) => createHash('sha256').update(name).digest('base64url').slice(0, 22)

function command(chatId: string, sender: string, now = new Date(), commandId: string = randomUUID()): SendMessage {
  return { type: 'SendMessage', data: { chatId, personId: personOf(sender), sender, content: `hello from ${sender}`, commandId }, metadata: { now } }
}

describe('POST /chats/:chatId/messages', () => {
  test('answers 201 {chatId, version} to JSON and the event is in the log', async () => {
    const res = await request(node.url).post('/chats/tea/messages').send({ content: 'hi' }).expect(201)
    assert.deepEqual(res.body, { chatId: 'tea', version: 1 })
    const event = await node.db.selectFrom('events').selectAll().where('stream_id', '=', 'chat-tea').executeTakeFirstOrThrow()
    assert.equal(event.event_type, 'MessageSent')
    assert.equal(event.data.content, 'hi')
    assert.equal(Number(event.stream_version), 1)
  })

  test('20 concurrent posts to one chat get versions 1..20, all 201, 20 events', async () => {
    const posts = Array.from({ length: 20 }, (_, i) => request(node.url).post('/chats/busy/messages').send({ content: `message ${i}` }))
    const responses = await Promise.all(posts)
    assert.deepEqual(responses.map((res) => res.status), Array(20).fill(201))
    const versions = responses.map((res) => res.body.version).sort((a, b) => a - b)
    assert.deepEqual(versions, Array.from({ length: 20 }, (_, i) => i + 1))
    assert.equal(await eventCount('busy'), 20)
    const stream = await node.db.selectFrom('streams').selectAll().where('stream_id', '=', 'chat-busy').executeTakeFirstOrThrow()
    assert.equal(Number(stream.version), 20)
  })

  test('a commandId repeated by the same person stores one event and answers with the same version, also concurrently', async () => {
    const commandId = randomUUID()
    const first = await request(node.url).post('/chats/retry/messages').send({ content: 'once', commandId }).expect(201)
    const cookie = first.headers['set-cookie']!
    const again = await Promise.all(Array.from({ length: 5 }, () => request(node.url).post('/chats/retry/messages').set('cookie', cookie).send({ content: 'once', commandId })))
    for (const res of again) assert.deepEqual([res.status, res.body], [201, first.body])
    assert.equal(await eventCount('retry'), 1)
  })

  test('the same commandId from two people is two messages: idempotency is per person', async () => {
    const commandId = randomUUID()
    const a = await request(node.url).post('/chats/retry-two/messages').send({ content: 'from A', commandId }).expect(201)
    const b = await request(node.url).post('/chats/retry-two/messages').send({ content: 'from B', commandId }).expect(201)
    assert.deepEqual([a.body.version, b.body.version], [1, 2])
    const contents = (await node.db.selectFrom('events').select('data').where('stream_id', '=', 'chat-retry-two').orderBy('stream_version').execute()).map((row) => row.data.content)
    assert.deepEqual(contents, ['from A', 'from B'])
  })

  test('a form post answers 303 to the chat page (Post/Redirect/Get)', async () => {
    const res = await request(node.url).post('/chats/forms/messages').type('form').send({ content: 'from a form', commandId: randomUUID() }).expect(303)
    assert.equal(res.headers.location, '/chats/forms')
    assert.equal(await eventCount('forms'), 1)
  })

  test('the sender comes from the session cookie, never from the body', async () => {
    const agent = request.agent(node.url)
    await agent.post('/session').type('form').send({ name: 'Alice', chatId: 'who' }).expect(303).expect('location', '/chats/who')
    await agent.post('/chats/who/messages').send({ content: 'it is me', sender: 'mallory' }).expect(201)
    const event = await node.db.selectFrom('events').select('data').where('stream_id', '=', 'chat-who').executeTakeFirstOrThrow()
    assert.equal(event.data.sender, 'Alice')
  })

  test('without a session, a random adjective-noun name is given and kept in a signed cookie', async () => {
    const res = await request(node.url).post('/chats/anon/messages').send({ content: 'hi' }).expect(201)
    const cookie = String(res.headers['set-cookie'])
    assert.match(cookie, /live_tea_session=s%3Ap1\.[A-Za-z0-9_-]{22}\.[a-z]+-[a-z]+-\d+\./)
    assert.match(cookie, /HttpOnly/)
    assert.match(cookie, /SameSite=Lax/)
  })

  const badInputs: { name: string; chatId?: string; send: (req: request.Test) => request.Test; status: number; error: RegExp }[] = [
    { name: 'empty content', send: (req) => req.send({ content: '' }), status: 422, error: /empty/ },
    { name: 'blank content', send: (req) => req.send({ content: '   \n ' }), status: 422, error: /empty/ },
    { name: 'missing content', send: (req) => req.send({}), status: 422, error: /empty/ },
    { name: 'content over 4000 characters', send: (req) => req.send({ content: 'x'.repeat(4001) }), status: 422, error: /at most 4000/ },
    { name: 'a body over the limit', send: (req) => req.send({ content: 'x'.repeat(BODY_LIMIT) }), status: 413, error: /too large/ },
    { name: 'malformed JSON', send: (req) => req.set('content-type', 'application/json').send('{"content": "hi"'), status: 400, error: /not valid JSON/ },
    { name: 'a JSON array', send: (req) => req.send([{ content: 'hi' }]), status: 400, error: /JSON object/ },
    { name: 'content that is not a string', send: (req) => req.send({ content: 42 }), status: 400, error: /string/ },
    { name: 'a text/plain body', send: (req) => req.set('content-type', 'text/plain').send('hello'), status: 415, error: /form|JSON/ },
    { name: 'an invalid chat id', chatId: 'Not_Valid', send: (req) => req.send({ content: 'hi' }), status: 422, error: /chat name/ },
    { name: 'a chat id of 65 characters', chatId: 'x'.repeat(65), send: (req) => req.send({ content: 'hi' }), status: 422, error: /chat name/ },
    { name: 'a malformed commandId', send: (req) => req.send({ content: 'hi', commandId: 'no spaces allowed' }), status: 422, error: /command id/ },
  ]
  for (const { name, chatId = 'bad-input', send, status, error } of badInputs) {
    test(`${name} answers ${status} with a readable error and appends nothing`, async () => {
      const before = await eventCount()
      const res = await send(request(node.url).post(`/chats/${chatId}/messages`).set('accept', 'application/json')).expect(status)
      assert.match(res.body.error, error)
      assert.equal(await eventCount(), before)
    })
  }

  test(`the ${RATE_LIMIT + 1}th message of one sender within a minute answers 429 with Retry-After, and appends nothing`, async () => {
    const agent = request.agent(node.url)
    await agent.post('/session').type('form').send({ name: 'chatty' }).expect(303)
    for (let i = 0; i < RATE_LIMIT; i++) await agent.post('/chats/rate/messages').send({ content: `m${i}` }).expect(201)
    const res = await agent.post('/chats/rate/messages').send({ content: 'one too many' }).expect(429)
    assert.match(res.body.error, /Slow down/)
    assert.ok(Number(res.headers['retry-after']) >= 1)
    assert.equal(await eventCount('rate'), RATE_LIMIT)
  })

  test('an htmx post that breaks a rule gets the composer back with the error and the typed text', async () => {
    const res = await request(node.url).post('/chats/htmx-bad/messages').set('hx-request', 'true').type('form').send({ content: 'x'.repeat(4001), commandId: 'keep-me' }).expect(422)
    assert.match(res.text, /<form id="composer"/)
    assert.match(res.text, /at most 4000 characters/)
    assert.match(res.text, /value="keep-me"/)
    assert.ok(res.text.includes('x'.repeat(4001)))
  })

  test('a plain form post that breaks a rule gets the chat page with the error (422)', async () => {
    const res = await request(node.url).post('/chats/form-bad/messages').type('form').send({ content: '  ' }).expect(422)
    assert.match(res.text, /<title>#form-bad/)
    assert.match(res.text, /cannot be empty/)
  })
})

describe('the chat command handler', () => {
  test('a repeat of a command older than the remembered window is still caught (unique index)', async () => {
    const handler = chatHandler({ db: node.db })
    const first = await handler.handle(command('long-memory', 'first', new Date(), 'the-first-command'))
    for (let i = 0; i < RECENT_COMMANDS + 5; i++) await handler.handle(command('long-memory', `sender-${i}`))
    const again = await handler.handle(command('long-memory', 'first', new Date(), 'the-first-command'))
    assert.deepEqual(again, { ...first, duplicate: true })
    assert.equal(await eventCount('long-memory'), RECENT_COMMANDS + 6)
  })

  test('an old command id used again for another message is refused there too (422), and nothing is appended', async () => {
    const handler = chatHandler({ db: node.db })
    const first = command('long-reuse', 'first', new Date(), 'reused-later')
    await handler.handle(first)
    for (let i = 0; i < RECENT_COMMANDS + 5; i++) await handler.handle(command('long-reuse', `sender-${i}`))
    const other: SendMessage = { ...first, data: { ...first.data, content: 'another message under the same id' } }
    await assert.rejects(handler.handle(other), (error: Error & { status?: number }) => error.status === 422 && /used before/.test(error.message))
    assert.equal(await eventCount('long-reuse'), RECENT_COMMANDS + 6)
  })

  test('an old repeat inside a shared transaction splits it: the others still commit, the repeat answers as the first did', async () => {
    const handler = chatHandler({ db: node.db, maxConcurrentBatches: 1 })
    const blocker = handler.handle(command('long-memory', 'blocker'))
    const repeat = handler.handle(command('long-memory', 'first', new Date(), 'the-first-command'))
    const fresh = handler.handle(command('long-memory', 'fresh'))
    await blocker
    assert.deepEqual(await repeat, { version: 1, type: 'MessageSent', duplicate: true })
    assert.equal((await fresh).duplicate, false)
  })

  test('a cold handler (restart) folds only the stream tail, and still enforces the rate over the whole window', async () => {
    const now = new Date()
    const warm = chatHandler({ db: node.db })
    for (let i = 0; i < RATE_LIMIT; i++) await warm.handle(command('cold', 'speedy', now))
    // Push speedy's sends out of the last RECENT_COMMANDS events, but not out of the minute.
    await Promise.all(Array.from({ length: RECENT_COMMANDS + 50 }, (_, i) => warm.handle(command('cold', `other-${i}`, now))))
    const cold = chatHandler({ db: node.db })
    await assert.rejects(cold.handle(command('cold', 'speedy', now)), (error: Error & { status?: number }) => error.status === 429)
    const other = await cold.handle(command('cold', 'newcomer', now))
    assert.equal(other.version, RATE_LIMIT + RECENT_COMMANDS + 50 + 1)
  })

  test('commands for many chats arriving together share transactions and each gets its own answer', async () => {
    const handler = chatHandler({ db: node.db, maxConcurrentBatches: 1 })
    const results = await Promise.all(Array.from({ length: 60 }, (_, i) => handler.handle(command(`group-${i % 6}`, `s${i}`))))
    for (let chat = 0; chat < 6; chat++) {
      const versions = results.filter((_, i) => i % 6 === chat).map((r) => r.version).sort((a, b) => a - b)
      assert.deepEqual(versions, Array.from({ length: 10 }, (_, i) => i + 1))
    }
  })

  test('what arrives while a batch is in flight waits for it and shares the next append', async () => {
    let appends = 0
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: node.pool }), log: (event) => void (event.query.sql.includes('append_events') && appends++) })
    const handler = chatHandler({ db })
    await Promise.all([handler.handle(command('gather-a', 'warm')), handler.handle(command('gather-b', 'warm'))])
    appends = 0
    // The first starts at once; the other 20 come while it is in flight (the same tick, far inside overlapAfterMs).
    const results = await Promise.all(Array.from({ length: 21 }, (_, i) => handler.handle(command(i % 2 ? 'gather-a' : 'gather-b', `s${i}`))))
    assert.deepEqual(results.map((r) => r.version).sort((a, b) => a - b), [...Array.from({ length: 11 }, (_, i) => i + 2), ...Array.from({ length: 10 }, (_, i) => i + 2)].sort((a, b) => a - b))
    assert.equal(appends, 2, 'one append for the first command, one for the twenty that waited')
  })

  test('a batch that is slow does not hold up the others: the next starts beside it', async () => {
    const handler = chatHandler({ db: node.db })
    await handler.handle(command('beside-fast', 'warm'))
    // Another writer holds the cold chat's stream lock: its batch (read from the log, under that lock) waits.
    const holder = await node.pool.connect()
    try {
      await holder.query('begin')
      await holder.query('select pg_advisory_xact_lock(hashtextextended($1, 0))', ['chat-beside-slow'])
      const slow = handler.handle(command('beside-slow', 'stuck'))
      let slowDone = false
      void slow.then(() => (slowDone = true), () => (slowDone = true))
      // Should the fast chat wait for the slow one, the lock goes after 10 s and the order below fails the test (rather than hanging it).
      const release = setTimeout(() => void holder.query('commit'), 10_000)
      const fast = await handler.handle(command('beside-fast', 'free'))
      assert.equal(fast.version, 2)
      assert.equal(slowDone, false, 'the fast chat was answered while the slow one still waited on its lock')
      clearTimeout(release)
      await holder.query('commit')
      assert.equal((await slow).version, 1)
    } finally {
      holder.release()
    }
  })

  test('a command refused inside a shared transaction does not sink the others', async () => {
    const handler = chatHandler({ db: node.db, maxConcurrentBatches: 1 })
    for (let i = 0; i < RATE_LIMIT; i++) await handler.handle(command('shared-b', 'hasty'))
    // Occupy the only batch slot so the next commands queue up and share one transaction.
    const blocker = handler.handle(command('shared-a', 'blocker'))
    const good = handler.handle(command('shared-a', 'good'))
    const tooFast = handler.handle(command('shared-b', 'hasty'))
    const alsoGood = handler.handle(command('shared-b', 'calm'))
    await blocker
    assert.equal((await good).version, 2)
    await assert.rejects(tooFast, /Slow down/)
    assert.equal((await alsoGood).version, RATE_LIMIT + 1)
  })

  test('a command invalid in itself is refused before it reaches the database', async () => {
    const invalid = { ...command('tea', 'x'), data: { ...command('tea', 'x').data, chatId: 'nul\u0000byte' } }
    await assert.rejects(chatHandler({ db: node.db }).handle(invalid), /chat name/)
  })

  test('a cached state that another writer moved past is noticed: the command is decided again on the new events', async () => {
    const a = chatHandler({ db: node.db })
    const b = chatHandler({ db: node.db })
    const now = new Date()
    assert.equal((await a.handle(command('two-writers', 'ann', now))).version, 1)
    for (let i = 0; i < RATE_LIMIT; i++) await b.handle(command('two-writers', 'bob', now))
    // a's cache still says version 1 and knows nothing of bob's sends.
    assert.equal((await a.handle(command('two-writers', 'ann', now))).version, RATE_LIMIT + 2)
    const viaB = await b.handle(command('two-writers', 'carol', now, 'sent-through-b'))
    assert.deepEqual(await a.handle(command('two-writers', 'carol', now, 'sent-through-b')), { ...viaB, duplicate: true })
    await assert.rejects(a.handle(command('two-writers', 'bob', now)), (error: Error & { status?: number }) => error.status === 429)
    assert.equal(await eventCount('two-writers'), RATE_LIMIT + 3)
  })
})

// Batches side by side at once (overlapAfterMs: 0), as when each takes longer than the overlap wait.
describe('a hot chat: batches in flight on one chat', () => {
  async function versionsOf(chatId: string): Promise<number[]> {
    return (await readStream(node.db, `chat-${chatId}`, { limit: 10_000 })).map((event) => event.version)
  }

  test('the next batch decides on the state the one in flight leads to: no conflict, no fallback to the log, versions gapless', async () => {
    const outcomes: string[] = []
    // The same pool, watched: the transactional path is the one that takes the stream locks itself.
    let lockedByHandler = 0
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: node.pool }), log: (event) => void (event.query.sql.includes('pg_advisory_xact_lock') && lockedByHandler++) })
    const handler = chatHandler({ overlapAfterMs: 0, db, onOutcome: (outcome) => outcomes.push(outcome) })
    await handler.handle(command('hot-line', 'warm-up'))
    assert.equal(lockedByHandler, 1, 'a cold chat is read from the log under its lock (the premise)')
    // Waves of 25 commands, each wave queued while the waves before it are in flight.
    const waves = Array.from({ length: 8 }, (_, wave) => Array.from({ length: 25 }, (_, i) => handler.handle(command('hot-line', `w${wave}-${i}`))))
    const results = await Promise.all(waves.flat())
    assert.deepEqual(results.map((r) => r.version).sort((a, b) => a - b), Array.from({ length: 200 }, (_, i) => i + 2))
    assert.deepEqual(await versionsOf('hot-line'), Array.from({ length: 201 }, (_, i) => i + 1))
    assert.deepEqual(new Set(outcomes), new Set(['accepted']), 'every command accepted the first time, none in conflict')
    assert.equal(lockedByHandler, 1, 'no batch fell back to reading the log')
  })

  test('a batch that fails takes down nothing decided on it: what was decided on its state is decided again on the log', async () => {
    const handler = chatHandler({ overlapAfterMs: 0, db: node.db })
    const first = await handler.handle(command('hot-failure', 'first', new Date(), 'said-long-ago'))
    for (let i = 0; i < RECENT_COMMANDS + 5; i++) await handler.handle(command('hot-failure', `filler-${i}`))
    // The repeat is out of the remembered window: decided as new, it fails on the unique index in
    // the database. The batches queued behind it were decided on the state it would have led to.
    const repeat = handler.handle(command('hot-failure', 'first', new Date(), 'said-long-ago'))
    const behind = Array.from({ length: 30 }, (_, i) => handler.handle(command('hot-failure', `behind-${i}`)))
    // Repeated again behind it: on the failing batch's state, this was a duplicate of a version that never was.
    const repeatBehind = handler.handle(command('hot-failure', 'first', new Date(), 'said-long-ago'))
    const results = await Promise.all(behind)
    assert.deepEqual(await repeat, { ...first, duplicate: true })
    assert.deepEqual(await repeatBehind, { ...first, duplicate: true })
    const base = RECENT_COMMANDS + 6
    assert.deepEqual(results.map((r) => r.version).sort((a, b) => a - b), Array.from({ length: 30 }, (_, i) => base + i + 1))
    assert.ok(results.every((r) => !r.duplicate))
    assert.deepEqual(await versionsOf('hot-failure'), Array.from({ length: base + 30 }, (_, i) => i + 1))
  })

  test('a repeat of a command still in flight answers as that command did, once it is durable', async () => {
    const handler = chatHandler({ overlapAfterMs: 0, db: node.db })
    await handler.handle(command('hot-repeat', 'warm-up'))
    const original = handler.handle(command('hot-repeat', 'ann', new Date(), 'in-flight'))
    const others = Array.from({ length: 10 }, (_, i) => handler.handle(command('hot-repeat', `other-${i}`)))
    const repeats = Array.from({ length: 3 }, () => handler.handle(command('hot-repeat', 'ann', new Date(), 'in-flight')))
    const answer = await original
    await Promise.all(others)
    for (const repeat of await Promise.all(repeats)) assert.deepEqual(repeat, { ...answer, duplicate: true })
    assert.deepEqual(await versionsOf('hot-repeat'), Array.from({ length: 12 }, (_, i) => i + 1))
  })
})

describe('events table', () => {
  test('is append-only: UPDATE, DELETE and TRUNCATE are refused by the database', async () => {
    await request(node.url).post('/chats/frozen/messages').send({ content: 'carved in stone' }).expect(201)
    await assert.rejects(sql`update events set data = '{}' where stream_id = 'chat-frozen'`.execute(node.db), /append-only/)
    await assert.rejects(sql`delete from events where stream_id = 'chat-frozen'`.execute(node.db), /append-only/)
    await assert.rejects(sql`truncate events cascade`.execute(node.db), /append-only/)
    assert.equal(await eventCount('frozen'), 1)
  })

  test('a stream reads back in version order, from a version on', async () => {
    for (const content of ['one', 'two', 'three']) await request(node.url).post('/chats/read-back/messages').send({ content }).expect(201)
    const all = await readStream(node.db, 'chat-read-back')
    assert.deepEqual(all.map((event) => [event.version, event.type, event.data.content]), [[1, 'MessageSent', 'one'], [2, 'MessageSent', 'two'], [3, 'MessageSent', 'three']])
    assert.deepEqual((await readStream(node.db, 'chat-read-back', { after: 1 })).map((event) => event.version), [2, 3])
  })

  test('the (stream_id, stream_version) key refuses a second event at a version', async () => {
    await request(node.url).post('/chats/unique/messages').send({ content: 'first' }).expect(201)
    await assert.rejects(
      sql`insert into events (stream_id, stream_version, event_id, event_type, data) values ('chat-unique', 1, gen_random_uuid(), 'MessageSent', '{}')`.execute(node.db),
      /events_pkey/,
    )
  })
})

describe('under more load than the node sustains', () => {
  test('commands past the bounded queue are shed with 503 at once, nothing appended for them, and what is accepted still commits', async () => {
    let shed = 0
    const handler = chatHandler({ db: node.db, maxConcurrentBatches: 1, maxBatch: 5, maxQueued: 20, onOutcome: (outcome) => outcome === 'shed' && shed++ })
    const results = await Promise.allSettled(Array.from({ length: 60 }, (_, i) => handler.handle(command('shed-queue', `person-${i}`))))
    const accepted = results.filter((result) => result.status === 'fulfilled')
    const refused = results.filter((result): result is PromiseRejectedResult => result.status === 'rejected')
    assert.ok(refused.length > 0, 'premise: the queue overflowed')
    for (const { reason } of refused) {
      assert.equal((reason as { status?: number }).status, 503)
      assert.ok((reason as { retryAfterSeconds?: number }).retryAfterSeconds! >= 1)
    }
    assert.equal(shed, refused.length)
    assert.equal(await eventCount('shed-queue'), accepted.length, 'exactly the accepted commands are in the log')
  })

  test('a command that waited too long to start is shed rather than served late', async () => {
    const handler = chatHandler({ db: node.db, maxConcurrentBatches: 1, maxBatch: 1, maxQueued: 1000, maxWaitMs: 30 })
    const results = await Promise.allSettled(Array.from({ length: 200 }, (_, i) => handler.handle(command('shed-wait', `person-${i}`))))
    const refused = results.filter((result) => result.status === 'rejected')
    assert.ok(refused.length > 0, 'premise: some waited past 30 ms')
    assert.equal(await eventCount('shed-wait'), results.length - refused.length)
  })

  test('commands waiting behind a stalled database are shed when their wait is up, not when the stall ends', async () => {
    // The chat's lock held elsewhere: the first batch waits on it, and with one batch at a time nothing else can start.
    const holder = await node.pool.connect()
    let stallOver = false
    try {
      await holder.query(`select pg_advisory_lock(hashtextextended('chat-shed-stall', 0))`)
      const handler = chatHandler({ db: node.db, maxConcurrentBatches: 1, maxBatch: 1, maxWaitMs: 200 })
      const stuck = handler.handle(command('shed-stall', 'first'))
      const waiting = Array.from({ length: 5 }, (_, i) =>
        handler.handle(command('shed-stall', `person-${i}`)).then(
          () => ({ shed: false, duringStall: !stallOver }),
          (error: unknown) => ({ shed: error instanceof Overloaded, duringStall: !stallOver }),
        ),
      )
      // The stall lasts until every waiting command has its answer, or 10 s.
      let timer: NodeJS.Timeout | undefined
      const answers = await Promise.race([Promise.all(waiting), new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), 10_000)))])
      clearTimeout(timer)
      stallOver = true
      await holder.query(`select pg_advisory_unlock(hashtextextended('chat-shed-stall', 0))`)
      await stuck
      assert.ok(answers, 'the waiting commands had no answer after 10 s of stall')
      assert.deepEqual(answers, Array.from({ length: 5 }, () => ({ shed: true, duringStall: true })))
      assert.equal(await eventCount('shed-stall'), 1, 'only the command that was under way is in the log')
    } finally {
      stallOver = true
      holder.release()
    }
  })

  test('POST answers 503 with Retry-After and a readable reason when its command is shed', async () => {
    const original = node.chats.handle.bind(node.chats)
    node.chats.handle = () => Promise.reject(new Overloaded(2))
    try {
      const res = await request(node.url).post('/chats/shed-http/messages').send({ content: 'too busy?' }).expect(503)
      assert.equal(res.headers['retry-after'], '2')
      assert.match(res.body.error, /too busy.*nothing was saved/)
    } finally {
      node.chats.handle = original
    }
  })
})

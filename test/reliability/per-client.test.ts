import assert from 'node:assert/strict'
import http from 'node:http'
import { connect } from 'node:net'
import pg from 'pg'
import { after, before, describe, test } from 'node:test'
import request from 'supertest'
import { SseClient } from '../support/sse.js'
import { startTestNode, type TestNode } from '../support/node.js'

/*
 * Budgets shared by everyone are taken per client address: one address
 * cannot take every stream, connection, dashboard or new room.
 * 127.0.0.1 and 127.0.0.2 are two clients on this machine's loopback.
 */

let node: TestNode
before(async () => {
  node = await startTestNode({ maxStreamsPerAddress: 5, maxConnectionsPerAddress: 40, newChatsPerMinutePerAddress: 3, maxReadsPerAddress: 2 })
})
after(() => node.close())

/** An SSE stream opened from a given local address (another client, as far as the server can tell). */
function openFrom(localAddress: string, path: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Promise<string>; close(): void }> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${node.url}${path}`, { localAddress, agent: false, headers: { accept: 'text/event-stream' } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => (body += chunk))
      const ended = new Promise<string>((done) => res.on('close', () => done(body)))
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: ended, close: () => req.destroy() })
    })
    req.on('error', reject)
  })
}

describe('live streams per client address', () => {
  test('an address gets its 5 streams; the 6th is refused with 429 and Retry-After; another address is not affected; a closed stream frees its place', async () => {
    const mine = await Promise.all(Array.from({ length: 5 }, (_, i) => openFrom('127.0.0.1', `/chats/budget-${i}/events`)))
    assert.deepEqual(mine.map((stream) => stream.status), [200, 200, 200, 200, 200])
    const sixth = await openFrom('127.0.0.1', '/chats/budget-6/events')
    assert.equal(sixth.status, 429)
    assert.ok(Number(sixth.headers['retry-after']) >= 1)
    assert.match(await sixth.body, /Too many live streams from your address/)
    const theirs = await openFrom('127.0.0.2', '/chats/budget-0/events')
    assert.equal(theirs.status, 200, 'someone else still gets a stream')
    theirs.close()
    mine[0]!.close()
    for (const deadline = Date.now() + 2_000; ; ) {
      const again = await openFrom('127.0.0.1', '/chats/budget-7/events')
      if (again.status === 200) {
        again.close()
        break
      }
      if (Date.now() > deadline) assert.fail('a closed stream did not free its place')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    for (const stream of mine) stream.close()
  })
})

describe('dashboards per client address', () => {
  test('the 6th dashboard stream of one address is refused with 429', async () => {
    const open = await Promise.all(Array.from({ length: 5 }, () => SseClient.open(`${node.url}/dashboard/stream`)))
    assert.deepEqual(open.map((client) => client.status), [200, 200, 200, 200, 200])
    const sixth = await request(node.url).get('/dashboard/stream').set('accept', 'application/json').expect(429)
    assert.match(sixth.body.error, /Too many dashboards/)
    assert.ok(Number(sixth.headers['retry-after']) >= 1)
    for (const client of open) client.close()
  })
})

describe('connections per client address', () => {
  test('past 40 open connections from one address the next is answered 429 and closed; another address still connects', async () => {
    const sockets = await Promise.all(
      Array.from({ length: 40 }, () => new Promise<ReturnType<typeof connect>>((resolve) => {
        const socket = connect({ host: '127.0.0.1', port: Number(new URL(node.url).port) }, () => resolve(socket))
      })),
    )
    await new Promise((resolve) => setTimeout(resolve, 100))
    const answer = await new Promise<string>((resolve) => {
      let text = ''
      const socket = connect({ host: '127.0.0.1', port: Number(new URL(node.url).port) })
      socket.setEncoding('utf8')
      socket.on('data', (chunk) => (text += chunk))
      socket.on('close', () => resolve(text))
    })
    assert.match(answer, /^HTTP\/1\.1 429 /)
    assert.match(answer, /Retry-After: \d+/)
    assert.match(answer, /Too many connections from your address/)
    const other = await openFrom('127.0.0.2', '/chats/other-address/events')
    assert.equal(other.status, 200)
    other.close()
    for (const socket of sockets) socket.destroy()
    // Closed connections give their places back.
    for (const deadline = Date.now() + 3_000; ; ) {
      const res = await fetch(`${node.url}/healthz`).catch(() => undefined)
      if (res?.status === 200) break
      if (Date.now() > deadline) assert.fail('closed connections did not free their places')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  })
})

describe('new rooms per client address', () => {
  test('an address may start 3 rooms a minute; the 4th new room is refused with 429, nothing appended, while posting in an existing room goes on', async () => {
    for (let i = 0; i < 3; i++) await request(node.url).post(`/chats/fresh-room-${i}/messages`).send({ content: 'first!' }).expect(201)
    const refused = await request(node.url).post('/chats/fresh-room-3/messages').send({ content: 'one room too many' }).expect(429)
    assert.match(refused.body.error, /Too many new rooms/)
    assert.ok(Number(refused.headers['retry-after']) >= 1)
    const stream = await node.db.selectFrom('streams').select('stream_id').where('stream_id', '=', 'chat-fresh-room-3').executeTakeFirst()
    assert.equal(stream, undefined, 'the refused room was not started')
    const again = await request(node.url).post('/chats/fresh-room-0/messages').send({ content: 'still talking here' })
    assert.equal(again.status, 201, again.text)
  })
})

/** A JSON request sent from a given local address, answered with its status and body. */
function jsonFrom(localAddress: string, method: string, path: string, body?: unknown): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    const req = http.request(`${node.url}${path}`, { method, localAddress, agent: false, headers: { accept: 'application/json', ...(payload ? { 'content-type': 'application/json' } : {}) } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => (text += chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
    })
    req.on('error', reject)
    req.end(payload)
  })
}

/** The search index locked by another transaction: every search waits inside the database, on its connection, until `unlock`. */
async function lockSearchIndex() {
  const blocker = new pg.Client({ connectionString: node.databaseUrl })
  await blocker.connect()
  await blocker.query('begin')
  await blocker.query('lock table search_index in access exclusive mode')
  // pg_stat_activity is read once per transaction unless told to look again.
  const stuck = async () =>
    Number((await blocker.query(`select pg_stat_clear_snapshot(), (select count(*)::int from pg_stat_activity where wait_event_type = 'Lock' and query like '%websearch_to_tsquery%') as n`)).rows[0].n)
  return {
    /** Searches waiting on the lock in the database now. */
    stuck,
    /** Waits until `count` searches are stuck, then a little longer, for any more to arrive had they been let through. */
    async settled(count: number): Promise<number> {
      for (const deadline = Date.now() + 5_000; (await stuck()) < count && Date.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 20))
      await new Promise((resolve) => setTimeout(resolve, 300))
      return stuck()
    },
    unlock: () => blocker.query('commit'),
    close: () => blocker.end(),
  }
}

describe('reads per client address', () => {
  test("one address's reads past 2 wait in its own line: twelve stuck searches hold 2 of the pool's connections, and another address reads and posts meanwhile", async () => {
    const lock = await lockSearchIndex()
    try {
      const searches = Array.from({ length: 12 }, (_, i) => jsonFrom('127.0.0.1', 'GET', `/search?q=kettle${i}`))
      assert.equal(await lock.settled(2), 2, 'two searches of that address in the database, the other ten waiting in its line')
      // Another address is not in that line: its page and its post go through while the searches wait (the pool has 10 connections).
      const page = await jsonFrom('127.0.0.2', 'GET', '/chats/reads-elsewhere/messages')
      assert.equal(page.status, 200, page.text)
      const post = await jsonFrom('127.0.0.2', 'POST', '/chats/reads-elsewhere/messages', { content: 'not stuck behind the searches' })
      assert.equal(post.status, 201, post.text)
      await lock.unlock()
      const answers = await Promise.all(searches)
      assert.deepEqual(answers.map((answer) => answer.status), Array(12).fill(200), 'every search waited its turn and was answered')
    } finally {
      await lock.close()
    }
  })

  test('a read whose client hangs up keeps its place until it answers: hanging up at once lets no address start more', async () => {
    const lock = await lockSearchIndex()
    try {
      const hungUp = Array.from({ length: 2 }, (_, i) => {
        const req = http.get(`${node.url}/search?q=gone${i}`, { localAddress: '127.0.0.1', agent: false, headers: { accept: 'application/json' } })
        req.on('error', () => {})
        return req
      })
      assert.equal(await lock.settled(2), 2)
      for (const req of hungUp) req.destroy()
      await new Promise((resolve) => setTimeout(resolve, 200))
      const after = Array.from({ length: 2 }, (_, i) => jsonFrom('127.0.0.1', 'GET', `/search?q=after${i}`))
      assert.equal(await lock.settled(2), 2, 'the two searches nobody waits for still hold the places; the next two wait')
      await lock.unlock()
      assert.deepEqual((await Promise.all(after)).map((answer) => answer.status), [200, 200])
    } finally {
      await lock.close()
    }
  })
})

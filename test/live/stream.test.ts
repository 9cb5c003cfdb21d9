import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { sql } from 'kysely'
import request from 'supertest'
import { admin } from '../support/database.js'
import { SseClient } from '../support/sse.js'
import { startTestNode, waitForProjection, type TestNode } from '../support/node.js'

let node: TestNode
before(async () => (node = await startTestNode()))
after(() => node.close())

const post = (target: TestNode, chatId: string, content: string) => request(target.url).post(`/chats/${chatId}/messages`).send({ content }).expect(201)

async function postMany(target: TestNode, chatId: string, count: number, prefix = 'm'): Promise<void> {
  for (let i = 1; i <= count; i++) await post(target, chatId, `${prefix}${i}`)
}

describe('GET /chats/:chatId/events', () => {
  test('a post reaches two live subscribers as one escaped fragment each, id = version', async () => {
    const a = await SseClient.open(`${node.url}/chats/two/events`)
    const b = await SseClient.open(`${node.url}/chats/two/events`)
    assert.equal(a.status, 200)
    assert.match(String(a.headers['content-type']), /^text\/event-stream/)
    await post(node, 'two', '<script>alert(1)</script>\nsecond line')
    await Promise.all([a.waitForCount(1), b.waitForCount(1)])
    for (const client of [a, b]) {
      assert.equal(client.messages.length, 1)
      const [message] = client.messages
      assert.equal(message!.id, '1')
      assert.ok(message!.data.includes('&lt;script&gt;alert(1)&lt;/script&gt;'), message!.data)
      assert.ok(!message!.data.includes('<script>'))
      assert.match(message!.data, /second line/)
      assert.match(message!.data, /id="message-two-1"/)
    }
    a.close()
    b.close()
  })

  test('resuming with Last-Event-ID: N gives exactly N+1.. and then live messages', async () => {
    await postMany(node, 'resume', 5)
    // A real cursor comes from what the read side showed, so it is never ahead of the projection (one that is gets clamped).
    await waitForProjection(node, 'resume', 5)
    const client = await SseClient.open(`${node.url}/chats/resume/events`, { 'Last-Event-ID': '2' })
    await client.waitForCount(3)
    await postMany(node, 'resume', 2, 'live')
    await client.waitForCount(5)
    assert.deepEqual(client.ids, [3, 4, 5, 6, 7])
    client.close()
  })

  test('resuming with ?after=N gives exactly N+1.. and then live messages', async () => {
    await postMany(node, 'after', 4)
    await waitForProjection(node, 'after', 4)
    const client = await SseClient.open(`${node.url}/chats/after/events?after=1`)
    await client.waitForCount(3)
    await post(node, 'after', 'live')
    await client.waitForCount(4)
    assert.deepEqual(client.ids, [2, 3, 4, 5])
    client.close()
  })

  test('Last-Event-ID wins over ?after (htmx reconnects with the header but keeps the URL)', async () => {
    await postMany(node, 'both', 4)
    await waitForProjection(node, 'both', 4)
    const client = await SseClient.open(`${node.url}/chats/both/events?after=1`, { 'Last-Event-ID': '3' })
    await client.waitForCount(1)
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.deepEqual(client.ids, [4])
    client.close()
  })

  test('without a cursor the stream starts at the head: live messages only', async () => {
    await postMany(node, 'head', 3)
    // "The head" is what the read side has shown; a 201 does not wait for the projection.
    await waitForProjection(node, 'head', 3)
    const client = await SseClient.open(`${node.url}/chats/head/events`)
    await client.waitFor((c) => c.comments.some((line) => line.includes('after now')), 5_000, 'the opening comment')
    await post(node, 'head', 'new')
    await client.waitForCount(1)
    assert.deepEqual(client.ids, [4])
    client.close()
  })

  test('a cursor from the future (a reset database) is clamped to the head, so new messages still arrive', async () => {
    await postMany(node, 'future', 2)
    await waitForProjection(node, 'future', 2)
    const client = await SseClient.open(`${node.url}/chats/future/events`, { 'Last-Event-ID': '999' })
    await post(node, 'future', 'third')
    await client.waitForCount(1)
    assert.deepEqual(client.ids, [3])
    client.close()
  })

  test('a malformed Last-Event-ID or ?after answers 400; an impossible chat id 404', async () => {
    await request(node.url).get('/chats/tea/events').set('Last-Event-ID', 'abc').expect(400)
    await request(node.url).get('/chats/tea/events?after=-1').expect(400)
    await request(node.url).get('/chats/tea/events?after=1e3').expect(400)
    await request(node.url).get('/chats/NO%20PE/events').expect(404)
  })

  test('a closed client is removed at once', async () => {
    const client = await SseClient.open(`${node.url}/chats/bye/events`)
    await client.waitFor(() => node.hub.subscriberCount > 0, 2_000, 'subscription')
    const count = node.hub.subscriberCount
    client.close()
    const deadline = Date.now() + 2_000
    while (node.hub.subscriberCount >= count && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
    assert.equal(node.hub.subscriberCount, count - 1)
  })

  test('a plain stream that just got a frame skips its comment heartbeat; a quiet one still gets it', async () => {
    const busy = await SseClient.open(`${node.url}/chats/beats-busy/events`)
    const quiet = await SseClient.open(`${node.url}/chats/beats-quiet/events`)
    await busy.waitFor(() => node.hub.subscriberCount >= 2, 2_000, 'both subscriptions')
    await post(node, 'beats-busy', 'a frame is as good as a heartbeat')
    await busy.waitForCount(1)
    const beats = (client: SseClient) => client.comments.filter((comment) => comment === 'heartbeat').length
    const before = { busy: beats(busy), quiet: beats(quiet) }
    // Every slice of the period, now instead of over 15 s.
    for (let slot = 0; slot < 15; slot++) node.hub['beat'](slot)
    await quiet.waitFor(() => beats(quiet) > before.quiet, 2_000, 'the quiet stream\'s heartbeat')
    assert.equal(beats(busy), before.busy, 'no heartbeat right after a frame')
    busy.close()
    quiet.close()
  })

  test('an HTTP/1.0 stream (no chunked encoding) gets its frames as plain bytes', async () => {
    const socket = connect(Number(new URL(node.url).port), '127.0.0.1')
    let received = ''
    socket.setEncoding('utf8')
    socket.on('data', (text: string) => (received += text))
    socket.write('GET /chats/old-client/events HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n')
    const until = async (predicate: () => boolean, what: string) => {
      for (const deadline = Date.now() + 5_000; !predicate(); await new Promise((resolve) => setTimeout(resolve, 10))) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; received ${JSON.stringify(received)}`)
      }
    }
    await until(() => received.includes(': live tea'), 'the stream to open')
    await post(node, 'old-client', 'hello, 1996')
    await until(() => received.includes('hello, 1996'), 'the frame')
    assert.match(received, /^HTTP\/1\.1 200 /)
    assert.doesNotMatch(received, /Transfer-Encoding: chunked/i)
    const body = received.slice(received.indexOf('\r\n\r\n') + 4)
    assert.match(body, /\n\nid: 1\ndata: <article/, 'the frame follows the preamble directly, with no chunk size line')
    socket.destroy()
  })

  test('1,000 messages from 20 concurrent writers arrive at a subscriber exactly once each, in version order', async () => {
    const client = await SseClient.open(`${node.url}/chats/flood/events?after=0`)
    const writers = Array.from({ length: 20 }, async (_, writer) => {
      // No session cookie: each post gets a fresh random sender, so the per-sender rate limit stays out of the way.
      for (let i = 0; i < 50; i++) await post(node, 'flood', `w${writer} #${i}`)
    })
    await Promise.all(writers)
    await client.waitForCount(1000, 30_000)
    await new Promise((resolve) => setTimeout(resolve, 200))
    assert.equal(client.messages.length, 1000, 'no duplicates')
    assert.deepEqual(client.ids, Array.from({ length: 1000 }, (_, i) => i + 1))
    client.close()
  })
})

describe('across app nodes', () => {
  test('a stream with no cursor gets every message posted after its answer arrived, even when its node reads the head late', async () => {
    // One database connection, held by a slow query: the node's first look at the chat's head waits behind it,
    // while another node takes the post, commits and projects it. Read after the stream had answered, that head
    // included the post, and the stream started past it.
    const slow = await startTestNode({ databaseUrl: node.databaseUrl, poolSize: 1 })
    try {
      const held = sql`select pg_sleep(1.5)`.execute(slow.db)
      const client = await SseClient.open(`${slow.url}/chats/late-head/events`)
      await post(node, 'late-head', 'posted after the stream answered')
      await waitForProjection(node, 'late-head', 1)
      await held
      await client.waitForCount(1)
      assert.deepEqual(client.ids, [1])
      client.close()
    } finally {
      await slow.close()
    }
  })

  test('killing the LISTEN connections loses nothing: a subscriber on another node keeps receiving after reconnect', async () => {
    const other = await startTestNode({ databaseUrl: node.databaseUrl })
    try {
      const client = await SseClient.open(`${other.url}/chats/cut/events?after=0`)
      await post(node, 'cut', 'before the cut')
      await client.waitForCount(1)

      const { rowCount } = await admin((c) =>
        c.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and application_name = 'live-tea listener'`, [node.database!.name]),
      )
      assert.ok((rowCount ?? 0) >= 2, `need both nodes' listeners to terminate, got ${rowCount}`)
      // Posted while the other node cannot hear any notification.
      await postMany(node, 'cut', 30, 'during')
      await client.waitForCount(31, 15_000)
      await post(node, 'cut', 'after')
      await client.waitForCount(32)
      assert.deepEqual(client.ids, Array.from({ length: 32 }, (_, i) => i + 1))
      assert.ok(other.listener.reconnects >= 1, 'the listener reconnected')
      client.close()
    } finally {
      await other.close()
    }
  })
})

test('a cursor taken from a 201 answer, ahead of the projection, resumes after it without repeating it', async () => {
  // Hold the projection back, so the cursor is ahead of everything this node has shown.
  await node.projector.stop()
  const { body } = await post(node, 'ahead', 'first')
  const client = await SseClient.open(`${node.url}/chats/ahead/events`, { 'Last-Event-ID': String(body.version) })
  await client.waitFor(() => node.hub.subscriberCount > 0, 2_000, 'subscription')
  await node.projector.start()
  await post(node, 'ahead', 'second')
  await client.waitForCount(1)
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.deepEqual(client.ids, [2])
  client.close()
})

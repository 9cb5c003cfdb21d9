import assert from 'node:assert/strict'
import net from 'node:net'
import { after, before, test } from 'node:test'
import request from 'supertest'
import { SseClient } from '../support/sse.js'
import { until } from '../support/until.js'
import { startTestNode, type TestNode } from '../support/node.js'

let node: TestNode
before(async () => (node = await startTestNode({ maxSubscribers: 3, headersTimeoutMs: 500, postsPerMinutePerAddress: 40 })))
after(() => node.close())

test('over the cap of live streams per process, a new stream gets 503 with Retry-After; a freed slot is reusable', async () => {
  const open = await Promise.all([1, 2, 3].map(() => SseClient.open(`${node.url}/chats/cap/events`)))
  assert.deepEqual(open.map((client) => client.status), [200, 200, 200])
  await open[0]!.waitFor(() => node.hub.subscriberCount === 3, 2_000, 'three subscribers')

  const refused = await request(node.url).get('/chats/cap/events').set('accept', 'application/json').expect(503)
  assert.ok(Number(refused.headers['retry-after']) >= 1)
  assert.match(refused.body.error, /Too many live connections/)

  open[0]!.close()
  await open[1]!.waitFor(() => node.hub.subscriberCount === 2, 2_000, 'a freed slot')
  const again = await SseClient.open(`${node.url}/chats/cap/events`)
  assert.equal(again.status, 200)
  for (const client of [...open, again]) client.close()
})

test('streams that start together, of chats this node does not stream yet, still get 503 past the cap, not a 200 that ends at once', async () => {
  await until('the streams of the test before closed', () => node.hub.subscriberCount === 0, 2_000)
  // Each waits for its chat's head from the database before answering: the cap is checked again after that wait.
  const answers = await Promise.all(['cap-a', 'cap-b', 'cap-c', 'cap-d', 'cap-e'].map((chatId) => SseClient.open(`${node.url}/chats/${chatId}/events`)))
  assert.deepEqual(answers.map((client) => client.status).sort(), [200, 200, 200, 503, 503])
  const open = answers.filter((client) => client.status === 200)
  await open[0]!.waitFor(() => node.hub.subscriberCount === 3, 2_000, 'three subscribers')
  // The three that got 200 are streams that stay open.
  await new Promise((resolve) => setTimeout(resolve, 200))
  assert.equal(node.hub.subscriberCount, 3)
  for (const client of answers) client.close()
  await open[0]!.waitFor(() => node.hub.subscriberCount === 0, 2_000, 'all closed')
})

test('a client that never finishes its headers is cut off (slowloris)', async () => {
  const socket = net.connect(Number(new URL(node.url).port), '127.0.0.1')
  socket.write('GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ')
  const started = Date.now()
  let answer = ''
  socket.on('data', (chunk) => (answer += chunk))
  await new Promise<void>((resolve) => socket.on('close', () => resolve()))
  assert.match(answer, /^HTTP\/1\.1 408/, 'answered 408 Request Timeout, then closed')
  assert.ok(Date.now() - started < 30_000)
})

test('one address may not flood posts, whatever names it uses: 429 with Retry-After, and nothing appended', async () => {
  let accepted = 0
  let refused: request.Response | undefined
  for (let i = 0; i < 60 && !refused; i++) {
    // No cookie: every post would be a new random sender, which the per-sender rule alone cannot stop.
    const res = await request(node.url).post('/chats/flood-guard/messages').send({ content: `spam ${i}` })
    if (res.status === 201) accepted++
    else refused = res
  }
  assert.equal(accepted, 40)
  assert.equal(refused?.status, 429)
  assert.match(refused!.body.error, /Too many messages from your address/)
  assert.ok(Number(refused!.headers['retry-after']) >= 1)
  const stored = await node.db.selectFrom('events').select('stream_version').where('stream_id', '=', 'chat-flood-guard').execute()
  assert.equal(stored.length, 40)
})

test('typing hints are not messages: an address that used up its posts can still say it is typing, and hints use none of them', async () => {
  // After the flood above, this address has no posts left this minute.
  await request(node.url).post('/chats/flood-guard/messages').send({ content: 'one more' }).expect(429)
  for (let i = 0; i < 45; i++) await request(node.url).post('/chats/flood-guard/typing').expect(204)
})

test('a client sending X-Forwarded-For to a node that trusts no proxy prints nothing to the log: whom to trust is TRUST_PROXY\'s decision', async () => {
  // A node of its own: the rate limiter checks its settings on the first request it sees.
  const fresh = await startTestNode({ postsPerMinutePerAddress: 40 })
  const printed: unknown[][] = []
  const original = console.error
  console.error = (...args: unknown[]) => void printed.push(args)
  try {
    await request(fresh.url).post('/chats/forwarded/messages').set('x-forwarded-for', '203.0.113.9').send({ content: 'hi' }).expect(201)
  } finally {
    console.error = original
    await fresh.close()
  }
  assert.deepEqual(printed, [])
})

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { sql } from 'kysely'
import request from 'supertest'
import { SseClient } from '../support/sse.js'
import { startTestNode, type TestNode } from '../support/node.js'

let one: TestNode
let two: TestNode
before(async () => {
  one = await startTestNode()
  two = await startTestNode({ databaseUrl: one.databaseUrl })
})
after(async () => {
  await two.close()
  await one.close()
})

test('50 writers × 20 messages into one chat across 2 nodes: every subscriber on both nodes gets exactly 1..1000 in order', async () => {
  const nodes = [one, two]
  const subscribers = await Promise.all(Array.from({ length: 6 }, (_, i) => SseClient.open(`${nodes[i % 2]!.url}/chats/crowd/events?after=0`)))

  const writers = Array.from({ length: 50 }, async (_, writer) => {
    // Each writer is one person with a session; their posts alternate between the nodes, as behind a load balancer.
    const cookie = (await request(one.url).post('/session').type('form').send({ name: `writer ${writer}` }).expect(303)).headers['set-cookie']!
    for (let i = 0; i < 20; i++) {
      const node = nodes[(writer + i) % 2]!
      await request(node.url).post('/chats/crowd/messages').set('cookie', cookie).send({ content: `w${writer} m${i}` }).expect(201)
    }
  })
  await Promise.all(writers)

  const expected = Array.from({ length: 1000 }, (_, i) => i + 1)
  for (const subscriber of subscribers) {
    await subscriber.waitForCount(1000, 30_000)
    assert.deepEqual(subscriber.ids, expected)
    subscriber.close()
  }
  const count = async (table: 'events' | 'messages') => Number((await one.db.selectFrom(table).select(sql<number>`count(*)`.as('n')).executeTakeFirstOrThrow()).n)
  assert.equal(await count('events'), 1000)
  assert.equal(await count('messages'), 1000)

  // Every writer's own messages are in the order they were sent.
  const rows = await one.db.selectFrom('messages').select(['sender', 'content', 'message_id']).where('chat_id', '=', 'crowd').orderBy('message_id').execute()
  for (let writer = 0; writer < 50; writer++) {
    const mine = rows.filter((row) => row.sender === `writer ${writer}`).map((row) => row.content)
    assert.deepEqual(mine, Array.from({ length: 20 }, (_, i) => `w${writer} m${i}`))
  }
})

test('a session cookie signed by one node is honoured by the other (shared SESSION_SECRET)', async () => {
  const cookie = (await request(one.url).post('/session').type('form').send({ name: 'Roaming' }).expect(303)).headers['set-cookie']!
  await request(two.url).post('/chats/roam/messages').set('cookie', cookie).send({ content: 'hi from node two' }).expect(201)
  const event = await two.db.selectFrom('events').select('data').where('stream_id', '=', 'chat-roam').executeTakeFirstOrThrow()
  assert.equal(event.data.sender, 'Roaming')
})

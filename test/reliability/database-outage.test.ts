import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, test } from 'node:test'
import { sql } from 'kysely'
import { freshDatabase, type TestDatabase } from '../support/database.js'
import { startTestNode, type TestNode } from '../support/node.js'
import { ReconnectingSubscriber } from '../support/sse.js'
import { TcpProxy } from '../support/tcp-proxy.js'

let database: TestDatabase
let proxy: TcpProxy
let node: TestNode
before(async () => {
  database = await freshDatabase()
  proxy = await TcpProxy.start(new URL(database.url))
  node = await startTestNode({ databaseUrl: proxy.via(database.url) })
})
after(async () => {
  await node.stop()
  await proxy.close()
  await database.drop()
})

/** A person's session: a retry is recognised as a repeat only when the same person sends it. */
async function person(name: string): Promise<string> {
  const session = await fetch(`${node.url}/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name }) })
  return session.headers.getSetCookie().map((line) => line.split(';')[0]).join('; ')
}

async function post(cookie: string, chatId: string, commandId: string, content: string) {
  return fetch(`${node.url}/chats/${chatId}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', cookie },
    body: JSON.stringify({ content, commandId }),
  })
}

test('while the database is away commands answer 503 with a clear message; afterwards the node recovers by itself and no acknowledged message is lost', async (t) => {
  const subscriber = new ReconnectingSubscriber(() => [node.url], '/chats/outage/events?after=0')
  t.after(() => subscriber.stop())
  const acknowledged = new Map<string, number>()
  const attempted: string[] = []

  // A client that retries with the same commandId until it gets an answer, as the composer does.
  async function send(i: number, retryUntilAccepted: boolean): Promise<number> {
    const commandId = randomUUID()
    attempted.push(commandId)
    const cookie = await person(`writer ${i}`)
    for (;;) {
      const res = await post(cookie, 'outage', commandId, `message ${i}`).catch(() => undefined)
      if (res?.status === 201) {
        acknowledged.set(commandId, ((await res.json()) as { version: number }).version)
        return 201
      }
      if (!retryUntilAccepted) return res?.status ?? 0
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }

  for (let i = 0; i < 20; i++) await send(i, false)
  proxy.cut()

  const res = await post(await person('nobody'), 'outage', randomUUID(), 'nobody hears this')
  assert.equal(res.status, 503)
  assert.match(((await res.json()) as { error: string }).error, /database is unreachable/)
  assert.ok(res.headers.get('retry-after'))

  // Messages sent during the outage keep retrying; the database comes back under them.
  const during = Array.from({ length: 10 }, (_, i) => send(100 + i, true))
  await new Promise((resolve) => setTimeout(resolve, 1_000))
  proxy.restore()
  await Promise.all(during)
  for (let i = 0; i < 20; i++) assert.equal(await send(200 + i, false), 201, 'commands work again without a restart')

  const total = attempted.length
  assert.equal(acknowledged.size, total)
  await subscriber.waitForCount(total, 30_000)
  await new Promise((resolve) => setTimeout(resolve, 200))
  await subscriber.stop()

  const events = await node.db.selectFrom('events').select(['stream_version', sql<string>`metadata->>'commandId'`.as('commandId')]).where('stream_id', '=', 'chat-outage').execute()
  const stored = new Map(events.map((event) => [event.commandId, Number(event.stream_version)]))
  const lost = [...acknowledged].filter(([commandId, version]) => stored.get(commandId) !== version)
  assert.equal(lost.length, 0, 'acknowledged messages lost')
  assert.equal(events.length, total, 'nothing stored twice, nothing refused stored')
  assert.deepEqual(subscriber.ids, Array.from({ length: total }, (_, i) => i + 1), 'the subscriber saw every version once, in order')
})

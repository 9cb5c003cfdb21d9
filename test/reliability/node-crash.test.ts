import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, test } from 'node:test'
import pg from 'pg'
import { freshDatabase, type TestDatabase } from '../support/database.js'
import { startProcessNode, type ProcessNode } from '../support/process-node.js'
import { ReconnectingSubscriber } from '../support/sse.js'

let database: TestDatabase
const nodes: ProcessNode[] = []
before(async () => {
  database = await freshDatabase()
})
after(async () => {
  await Promise.all(nodes.map((node) => node.kill('SIGKILL')))
  await database.drop()
})

test('a node killed with SIGKILL mid-load: the other goes on, nothing acknowledged is lost or doubled, and the restarted node catches up', async (t) => {
  const a = await startProcessNode(database.url)
  const b = await startProcessNode(database.url)
  nodes.push(a, b)
  let aAlive = true
  const living = () => (aAlive ? [a.url, b.url] : [b.url])

  const subscribers = [0, 1, 2, 3].map((i) => new ReconnectingSubscriber(() => (i % 2 === 0 ? living() : [b.url, ...living()]), '/chats/crash/events?after=0'))
  t.after(() => Promise.all(subscribers.map((subscriber) => subscriber.stop())))

  const acknowledged = new Map<string, number>()
  let attempts = 0
  // A client that retries with the same commandId, as the same person (its session cookie), on any
  // living node until it is answered: a repeat is recognised per person.
  async function send(cookie: string, content: string): Promise<void> {
    const commandId = randomUUID()
    for (let turn = 0; ; turn++) {
      const urls = living()
      const url = urls[turn % urls.length]!
      attempts++
      const res = await fetch(`${url}/chats/crash/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', cookie },
        body: JSON.stringify({ content, commandId }),
      }).catch(() => undefined)
      if (res?.status === 201) return void acknowledged.set(commandId, ((await res.json()) as { version: number }).version)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  const writers = Array.from({ length: 20 }, async (_, writer) => {
    const session = await fetch(`${b.url}/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: `writer ${writer}` }) })
    const cookie = session.headers.getSetCookie().map((line) => line.split(';')[0]).join('; ')
    for (let i = 0; i < 20; i++) {
      await send(cookie, `w${writer} m${i}`)
      if (writer === 0 && i === 5) {
        // Mid-load, while the other writers are posting to both nodes.
        await a.kill('SIGKILL')
        aAlive = false
      }
    }
  })
  await Promise.all(writers)
  assert.equal(aAlive, false, 'the kill happened during the load')
  assert.equal(acknowledged.size, 400)

  // The killed node comes back on its address and serves the whole chat.
  const restarted = await startProcessNode(database.url, a.port)
  nodes.push(restarted)
  aAlive = true
  const late = new ReconnectingSubscriber(() => [restarted.url], '/chats/crash/events?after=0')
  t.after(() => late.stop())

  const expected = Array.from({ length: 400 }, (_, i) => i + 1)
  for (const subscriber of [...subscribers, late]) {
    await subscriber.waitForCount(400, 30_000)
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.deepEqual(subscriber.ids, expected, 'every version once, in order')
  }

  const client = new pg.Client({ connectionString: database.url })
  await client.connect()
  try {
    const { rows } = await client.query<{ command_id: string; version: string }>(
      `select metadata->>'commandId' as command_id, stream_version as version from events where stream_id = 'chat-crash'`,
    )
    const stored = new Map(rows.map((row) => [row.command_id, Number(row.version)]))
    const lost = [...acknowledged].filter(([commandId, version]) => stored.get(commandId) !== version)
    assert.equal(lost.length, 0, 'acknowledged messages lost')
    assert.equal(rows.length, 400, 'no message stored twice')
    const projected = await client.query(`select count(*)::int as n from messages where chat_id = 'crash'`)
    assert.equal(projected.rows[0].n, 400)
  } finally {
    await client.end()
  }
  assert.ok(attempts >= 400)
})

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import request from 'supertest'
import { admin } from '../support/database.js'
import { scrape, valueOf } from '../support/metrics.js'
import { startTestNode, type TestNode } from '../support/node.js'

/** Asks /readyz until it answers `status`, then returns that answer. */
async function readyzUntil(node: TestNode, status: number, timeoutMs = 10_000): Promise<{ status: number; text: string }> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const res = await request(node.url).get('/readyz')
    if (res.status === status) return { status: res.status, text: res.text }
    if (Date.now() > deadline) throw new Error(`/readyz still answers ${res.status} (${res.text.trim()}), not ${status}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

async function post(node: TestNode, chatId: string, count: number): Promise<void> {
  for (let i = 1; i <= count; i++) await request(node.url).post(`/chats/${chatId}/messages`).send({ content: `m${i}` }).expect(201)
}

describe('GET /healthz and /readyz', () => {
  test('a fresh node is alive and ready', async () => {
    const node = await startTestNode()
    try {
      const health = await request(node.url).get('/healthz').expect(200)
      assert.equal(health.text, 'ok\n')
      const ready = await request(node.url).get('/readyz').expect(200)
      assert.match(ready.text, /^ready: database answers; projector 0 events, 0\.0 s behind/)
      assert.equal(ready.headers['set-cookie'], undefined, 'probes get no session cookie')
    } finally {
      await node.close()
    }
  })

  test('/readyz turns 503 when the projector is stopped and events pile up, and 200 again once it has run', async () => {
    const node = await startTestNode({ readiness: { maxLagEvents: 2 } })
    try {
      await readyzUntil(node, 200)
      await node.projector.stop()
      await post(node, 'piling', 3)

      const stale = await request(node.url).get('/readyz').expect(503)
      assert.match(stale.text, /^not ready: projector "messages" is 3 events behind \(limit 2\)/)
      const lagging = await scrapeUntilLag(node, (events) => events === 3)
      assert.ok(valueOf(lagging, 'live_tea_projector_lag_seconds', { projection: 'messages' }) > 0)

      await node.projector.start()
      const ready = await readyzUntil(node, 200)
      assert.match(ready.text, /projector 0 events, 0\.0 s behind/)
      await scrapeUntilLag(node, (events) => events === 0)
    } finally {
      await node.close()
    }
  })

  test('/readyz turns 503 when the oldest unprojected event is older than the limit, even with few events waiting', async () => {
    const node = await startTestNode({ readiness: { maxLagSeconds: 0.2 } })
    try {
      await node.projector.stop()
      await post(node, 'slow', 1)
      const stale = await readyzUntil(node, 503)
      assert.match(stale.text, /^not ready: projector "messages" is \d+\.\d s behind: its oldest unprojected event is that old \(limit 0\.2 s\)/)
      await node.projector.start()
      await readyzUntil(node, 200)
    } finally {
      await node.close()
    }
  })

  test('when the database goes away the node stays up, /readyz answers 503 with the reason, /healthz still answers', async () => {
    const node = await startTestNode()
    try {
      await readyzUntil(node, 200)
      // A client checked out between two statements (as in any transaction) has no pool error listener.
      const held = await node.pool.connect()
      await admin((client) => client.query(`drop database ${node.database!.name} with (force)`))
      const gone = await readyzUntil(node, 503)
      assert.match(gone.text, /^not ready: database unreachable: /)
      await request(node.url).get('/healthz').expect(200)
      held.release(new Error('its backend was terminated'))
    } finally {
      await node.close()
    }
  })
})

async function scrapeUntilLag(node: TestNode, predicate: (events: number) => boolean, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const samples = await scrape(node.url)
    const events = valueOf(samples, 'live_tea_projector_lag_events', { projection: 'messages' })
    if (predicate(events)) return samples
    if (Date.now() > deadline) throw new Error(`live_tea_projector_lag_events is still ${events}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

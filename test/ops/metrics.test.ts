import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import request from 'supertest'
import { admin } from '../support/database.js'
import { has, scrape, valueOf, type Sample } from '../support/metrics.js'
import { startTestNode, waitForProjection, type TestNode } from '../support/node.js'
import { SseClient } from '../support/sse.js'

let node: TestNode
before(async () => (node = await startTestNode()))
after(() => node.close())

const COMMAND_ROUTE = { method: 'POST', route: '/chats/:chatId/messages', status: '201' }

/** Scrapes until `predicate` holds (gauges fed by the once-a-second sampler catch up within a few seconds). */
async function scrapeUntil(target: TestNode, predicate: (samples: Sample[]) => boolean, what: string, timeoutMs = 10_000): Promise<Sample[]> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const samples = await scrape(target.url)
    if (predicate(samples)) return samples
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

describe('GET /metrics', () => {
  test('sending a message moves the command, event, projector and HTTP figures by exactly that message', async () => {
    const before = await scrape(node.url)
    const { body } = await request(node.url).post('/chats/metered/messages').send({ content: 'count me' }).expect(201)
    await waitForProjection(node, 'metered', body.version)
    const after = await scrapeUntil(node, (samples) => valueOf(samples, 'live_tea_events_in_log') >= valueOf(before, 'live_tea_events_in_log') + 1, 'the sampler to count the event')

    assert.equal(valueOf(after, 'live_tea_commands_total', { outcome: 'accepted' }) - valueOf(before, 'live_tea_commands_total', { outcome: 'accepted' }), 1)
    assert.equal(valueOf(after, 'live_tea_events_appended_total', { type: 'MessageSent' }) - valueOf(before, 'live_tea_events_appended_total', { type: 'MessageSent' }), 1)
    assert.equal(valueOf(after, 'live_tea_projector_events_total', { projection: 'messages' }) - valueOf(before, 'live_tea_projector_events_total', { projection: 'messages' }), 1)
    assert.ok(valueOf(after, 'live_tea_projector_batch_duration_seconds_count', { projection: 'messages' }) > valueOf(before, 'live_tea_projector_batch_duration_seconds_count', { projection: 'messages' }))
    assert.equal(valueOf(after, 'live_tea_http_request_duration_seconds_count', COMMAND_ROUTE) - valueOf(before, 'live_tea_http_request_duration_seconds_count', COMMAND_ROUTE), 1)
    assert.ok(valueOf(after, 'live_tea_http_request_duration_seconds_sum', COMMAND_ROUTE) > 0)
    const position = await node.db.selectFrom('events').select('global_position').where('stream_id', '=', 'chat-metered').executeTakeFirstOrThrow()
    assert.ok(valueOf(after, 'live_tea_projector_checkpoint_position') >= position.global_position)
  })

  test('rejections and repeated command ids are counted by outcome', async () => {
    const before = await scrape(node.url)
    await request(node.url).post('/chats/outcomes/messages').send({ content: '   ' }).expect(422)
    const commandId = randomUUID()
    const first = await request(node.url).post('/chats/outcomes/messages').send({ content: 'once', commandId }).expect(201)
    // The same person again: a repeat is per person.
    await request(node.url).post('/chats/outcomes/messages').set('cookie', first.headers['set-cookie']!).send({ content: 'once', commandId }).expect(201)
    const after = await scrape(node.url)
    const moved = (outcome: string) => valueOf(after, 'live_tea_commands_total', { outcome }) - valueOf(before, 'live_tea_commands_total', { outcome })
    assert.deepEqual(
      { accepted: moved('accepted'), duplicate: moved('duplicate'), rejected: moved('rejected'), conflict: moved('conflict'), failed: moved('failed') },
      { accepted: 1, duplicate: 1, rejected: 1, conflict: 0, failed: 0 },
    )
    assert.equal(valueOf(after, 'live_tea_http_request_duration_seconds_count', { ...COMMAND_ROUTE, status: '422' }) - valueOf(before, 'live_tea_http_request_duration_seconds_count', { ...COMMAND_ROUTE, status: '422' }), 1)
  })

  test('an SSE client connecting raises the subscriber gauge, a message to it counts as pushed, leaving lowers the gauge', async () => {
    const before = await scrape(node.url)
    const client = await SseClient.open(`${node.url}/chats/watched/events`)
    const connected = await scrape(node.url)
    assert.equal(valueOf(connected, 'live_tea_sse_subscribers') - valueOf(before, 'live_tea_sse_subscribers'), 1)
    assert.equal(valueOf(connected, 'live_tea_sse_chats') - valueOf(before, 'live_tea_sse_chats'), 1)

    await request(node.url).post('/chats/watched/messages').send({ content: 'to the watcher' }).expect(201)
    await client.waitForCount(1)
    const pushed = await scrape(node.url)
    assert.equal(valueOf(pushed, 'live_tea_sse_messages_pushed_total') - valueOf(before, 'live_tea_sse_messages_pushed_total'), 1)

    client.close()
    await scrapeUntil(node, (samples) => valueOf(samples, 'live_tea_sse_subscribers') === valueOf(before, 'live_tea_sse_subscribers'), 'the subscriber to leave')
  })

  test('routes are labelled by their pattern, never by the URL asked for', async () => {
    await request(node.url).post('/chats/alpha-room/messages').send({ content: 'a' }).expect(201)
    await request(node.url).post('/chats/beta-room/messages').send({ content: 'b' }).expect(201)
    await request(node.url).get('/no/such/page/7f3a').expect(404)
    await request(node.url).get('/static/app.css').expect(200)
    const samples = await scrape(node.url)
    const routes = new Set(samples.filter((sample) => sample.name === 'live_tea_http_request_duration_seconds_count').map((sample) => sample.labels.route))
    assert.ok(routes.has('/chats/:chatId/messages'))
    assert.ok(routes.has('unmatched'))
    assert.ok(routes.has('/static'))
    for (const route of routes) assert.doesNotMatch(String(route), /alpha-room|beta-room|7f3a|app\.css/)
  })

  test('a pool connection checked out shows as in use, and as idle again once released', async () => {
    // Nothing else of the node may use the pool meanwhile: the projectors poll and the sampler reads
    // every second. Presence and visits still write now and then: a reading during one of those is
    // taken again, and a gauge that does not move never shows the one connection held.
    for (const projector of node.projectors) await projector.stop()
    await node.sampler.stop()
    let before: Sample[] = [], during: Sample[] = [], after: Sample[] = []
    const inUse = (samples: Sample[]) => valueOf(samples, 'live_tea_pg_pool_in_use')
    try {
      for (let attempt = 0; attempt < 5; attempt++) {
        before = await scrape(node.url)
        const held = await node.pool.connect()
        try {
          during = await scrape(node.url)
        } finally {
          held.release()
        }
        after = await scrape(node.url)
        if (inUse(during) - inUse(before) === 1 && inUse(after) === inUse(before)) break
      }
    } finally {
      node.sampler.start()
      for (const projector of node.projectors) await projector.start()
    }
    assert.equal(inUse(during) - inUse(before), 1)
    assert.equal(valueOf(after, 'live_tea_pg_pool_in_use'), valueOf(before, 'live_tea_pg_pool_in_use'))
    assert.ok(valueOf(after, 'live_tea_pg_pool_idle') >= 1)
    assert.equal(valueOf(during, 'live_tea_pg_pool_waiting'), 0)
  })

  test('LISTEN and Node process figures are there', async () => {
    const samples = await scrape(node.url)
    assert.equal(valueOf(samples, 'live_tea_listen_connected'), 1)
    assert.ok(valueOf(samples, 'process_resident_memory_bytes') > 0)
    assert.ok(has(samples, 'nodejs_eventloop_lag_seconds'))
  })

  test('a lost LISTEN connection shows as a reconnect', async () => {
    const before = await scrape(node.url)
    assert.equal(valueOf(before, 'live_tea_listen_connected'), 1)
    const { rows } = await admin((client) =>
      client.query(`select pg_terminate_backend(pid) as done from pg_stat_activity where datname = $1 and application_name = 'live-tea listener'`, [node.database!.name]),
    )
    assert.equal(rows.length, 1, 'need the listener backend for this to mean anything')
    const after = await scrapeUntil(node, (samples) => valueOf(samples, 'live_tea_listen_reconnects_total') > valueOf(before, 'live_tea_listen_reconnects_total'), 'the reconnect')
    assert.equal(valueOf(after, 'live_tea_listen_reconnects_total') - valueOf(before, 'live_tea_listen_reconnects_total'), 1)
    assert.equal(valueOf(after, 'live_tea_listen_connected'), 1)
  })

  test('each node counts in its own registry, even in one process', async () => {
    const other = await startTestNode()
    try {
      await request(node.url).post('/chats/mine/messages').send({ content: 'only here' }).expect(201)
      const [mine, theirs] = await Promise.all([scrape(node.url), scrape(other.url)])
      assert.ok(valueOf(mine, 'live_tea_commands_total', { outcome: 'accepted' }) >= 1)
      assert.equal(valueOf(theirs, 'live_tea_commands_total', { outcome: 'accepted' }), 0)
      assert.equal(valueOf(theirs, 'live_tea_events_appended_total', { type: 'MessageSent' }), 0)
      // Process figures describe the one process both nodes share.
      assert.ok(has(theirs, 'process_cpu_user_seconds_total'))
    } finally {
      await other.close()
    }
  })
})

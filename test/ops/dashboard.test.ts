import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import request from 'supertest'
import { startTestNode, waitForProjection, type TestNode } from '../support/node.js'
import { SseClient } from '../support/sse.js'

let node: TestNode
before(async () => (node = await startTestNode()))
after(() => node.close())

/** The figure a dashboard fragment shows for `id`, as text. */
function figure(html: string, id: string): string | undefined {
  return new RegExp(`data-figure="${id}">([^<]*)<`).exec(html)?.[1]
}

async function post(chatId: string, content: string): Promise<number> {
  const { body } = await request(node.url).post(`/chats/${chatId}/messages`).send({ content }).expect(201)
  return body.version
}

describe('GET /dashboard', () => {
  test('the page renders the real figures, with a sparkline each, and connects to its stream under the CSP nonce', async () => {
    await post('dash-one', 'a')
    await post('dash-one', 'b')
    await waitForProjection(node, 'dash-two', await post('dash-two', 'c'))
    let html = ''
    const deadline = Date.now() + 10_000
    while (figure(html, 'events') !== '3' || figure(html, 'active-chats') !== '2') {
      assert.ok(Date.now() < deadline, `the page never showed 3 events in 2 chats: events ${figure(html, 'events')}, chats ${figure(html, 'active-chats')}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
      const res = await request(node.url).get('/dashboard').expect(200)
      html = res.text
      const nonce = /script-src 'nonce-([^']+)'/.exec(String(res.headers['content-security-policy']))?.[1]
      assert.ok(nonce)
      assert.match(html, new RegExp(`hx-sse:connect="/dashboard/stream" hx-swap="innerHTML" hx-nonce="${nonce}"`))
    }
    assert.equal(figure(html, 'projector-lag'), '0 events')
    assert.equal(figure(html, 'sse-subscribers'), '0')
    assert.match(figure(html, 'latency-p50')!, /^\d+(\.\d)? ms$/)
    assert.match(figure(html, 'latency-p99')!, /^\d+(\.\d)? ms$/)
    // One per figure, and a lag figure per projection (messages, search).
    assert.equal((html.match(/<svg class="sparkline"/g) ?? []).length, 10)
    assert.match(figure(html, 'projector-lag-search')!, /^\d+ events$/)
    assert.match(html, /<polyline points="[\d., ]+"\/>/)
    assert.doesNotMatch(html, /<script(?![^>]*nonce=)/, 'every script carries the nonce')
    assert.doesNotMatch(html, /\sstyle=/, 'no inline style attributes: the CSP would block them')
  })

  test('the stream sends the figures at once, then every second, and they follow what happens', async () => {
    const dashboard = await SseClient.open(`${node.url}/dashboard/stream`)
    assert.equal(dashboard.status, 200)
    assert.match(String(dashboard.headers['content-type']), /^text\/event-stream/)
    await dashboard.waitForCount(1, 2_000)
    assert.deepEqual(dashboard.retries, [2000])
    assert.match(dashboard.messages[0]!.data, /data-figure="events"/)

    const watcher = await SseClient.open(`${node.url}/chats/watched/events`)
    await dashboard.waitFor((c) => figure(c.messages.at(-1)!.data, 'sse-subscribers') === '1', 5_000, 'the dashboard to show one subscriber')
    const events = Number(figure(dashboard.messages.at(-1)!.data, 'events'))
    await post('watched', 'seen on the dashboard')
    await dashboard.waitFor((c) => Number(figure(c.messages.at(-1)!.data, 'events')) === events + 1, 10_000, 'the dashboard to count the new event')
    assert.match(dashboard.messages.at(-1)!.data, /1 dashboard open on this node/)
    assert.ok(dashboard.messages.every((message) => message.id === '' && !/hx-/.test(message.data)), 'a fragment rendered once for all carries no htmx attributes or ids')
    watcher.close()
    dashboard.close()
  })

  test('two open dashboards get the very same fragment from each sample', async () => {
    const a = await SseClient.open(`${node.url}/dashboard/stream`)
    const b = await SseClient.open(`${node.url}/dashboard/stream`)
    assert.equal(node.sampler.subscriberCount, 2)
    await Promise.all([a.waitForCount(3, 5_000), b.waitForCount(3, 5_000)])
    // Every frame after the first (which is the latest sample at connect time) comes from a shared tick.
    const shared = a.messages.slice(1).map((m) => m.data).filter((data) => b.messages.some((other) => other.data === data))
    assert.ok(shared.length >= 1, 'both dashboards received the very same rendered fragment')
    a.close()
    b.close()
  })
})

describe('DASHBOARD_TOKEN', () => {
  const TOKEN = 'operator-secret-token'
  let guarded: TestNode
  before(async () => (guarded = await startTestNode({ dashboardToken: TOKEN })))
  after(() => guarded.close())

  test('without the token the dashboard, its stream and /metrics answer 401; probes stay open', async () => {
    const page = await request(guarded.url).get('/dashboard').expect(401)
    assert.match(String(page.headers['www-authenticate']), /^Bearer/)
    assert.match(page.text, /\?token=/)
    await request(guarded.url).get('/dashboard/stream').expect(401)
    const metrics = await request(guarded.url).get('/metrics').expect(401)
    assert.match(metrics.text, /^This page is for operators: .*Bearer/)
    await request(guarded.url).get('/dashboard?token=wrong').expect(401)
    await request(guarded.url).get('/metrics').set('Authorization', 'Bearer wrong').expect(401)
    await request(guarded.url).get('/healthz').expect(200)
    await request(guarded.url).get('/readyz').expect(200)
  })

  test('?token= sets a cookie that is not the token and redirects to the address without it; the cookie then opens page, stream and metrics', async () => {
    const login = await request(guarded.url).get('/dashboard?token=' + TOKEN).expect(303)
    assert.equal(login.headers.location, '/dashboard')
    const cookie = (login.headers['set-cookie'] as unknown as string[]).find((c) => c.startsWith('live_tea_ops='))
    assert.ok(cookie)
    assert.match(cookie, /HttpOnly/)
    assert.match(cookie, /SameSite=Lax/)
    assert.ok(!cookie.includes(TOKEN), 'the cookie does not carry the token itself')
    const pair = cookie.split(';')[0]!
    const page = await request(guarded.url).get('/dashboard').set('Cookie', pair).expect(200)
    assert.match(page.text, /data-figure="events"|Collecting the first figures/)
    await request(guarded.url).get('/metrics').set('Cookie', pair).expect(200)
    const stream = await SseClient.open(`${guarded.url}/dashboard/stream`, { Cookie: pair })
    assert.equal(stream.status, 200)
    stream.close()
    await request(guarded.url).get('/dashboard').set('Cookie', 'live_tea_ops=forged').expect(401)
  })

  test('the cookie is good for 12 hours on the server too: an old one, or one with its time changed, is refused', async () => {
    const login = await request(guarded.url).get('/dashboard?token=' + TOKEN).expect(303)
    const value = decodeURIComponent((login.headers['set-cookie'] as unknown as string[]).find((c) => c.startsWith('live_tea_ops='))!.split(';')[0]!.slice('live_tea_ops='.length))
    const [issuedAt, mac] = value.split('.')
    assert.ok(Math.abs(Number(issuedAt) - Date.now()) < 60_000, 'it carries the time it was issued')
    // Moved back 13 hours: the signature no longer matches. Signed 13 hours ago with the token: too old.
    await request(guarded.url).get('/metrics').set('Cookie', `live_tea_ops=${Number(issuedAt) - 13 * 3600_000}.${mac}`).expect(401)
    const old = Date.now() - 13 * 3600_000
    const signedLongAgo = `${old}.${createHmac('sha256', TOKEN).update(`live-tea operations cookie v2 ${old}`).digest('base64url')}`
    await request(guarded.url).get('/metrics').set('Cookie', `live_tea_ops=${signedLongAgo}`).expect(401)
    const recent = Date.now() - 11 * 3600_000
    const signedRecently = `${recent}.${createHmac('sha256', TOKEN).update(`live-tea operations cookie v2 ${recent}`).digest('base64url')}`
    await request(guarded.url).get('/metrics').set('Cookie', `live_tea_ops=${signedRecently}`).expect(200)
  })

  test('a Bearer header opens /metrics for a scraper', async () => {
    const res = await request(guarded.url).get('/metrics').set('Authorization', `Bearer ${TOKEN}`).expect(200)
    assert.match(res.text, /^live_tea_commands_total\{outcome="accepted"\} \d+$/m)
  })
})

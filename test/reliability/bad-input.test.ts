import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { sql } from 'kysely'
import request from 'supertest'
import { BODY_LIMIT } from '../../src/app.js'
import { SESSION_COOKIE } from '../../src/http/session.js'
import { startTestNode, type TestNode } from '../support/node.js'

let node: TestNode
before(async () => (node = await startTestNode()))
after(() => node.close())

async function eventCount(): Promise<number> {
  return Number((await node.db.selectFrom('events').select(sql<number>`count(*)`.as('n')).executeTakeFirstOrThrow()).n)
}

interface BadInput {
  name: string
  send: () => request.Test
  status: number
  /** What a person reads: in the JSON error, or in the HTML page. */
  says: RegExp
}

const json = (path: string) => request(node.url).post(path).set('accept', 'application/json')
const form = (path: string) => request(node.url).post(path).type('form')

const BAD_INPUTS: BadInput[] = [
  { name: 'empty content (JSON)', send: () => json('/chats/tea/messages').send({ content: '' }), status: 422, says: /cannot be empty/ },
  { name: 'blank content (form)', send: () => form('/chats/tea/messages').send({ content: ' \n\t ' }), status: 422, says: /cannot be empty/ },
  { name: 'blank content (htmx)', send: () => form('/chats/tea/messages').set('hx-request', 'true').send({ content: '   ' }), status: 422, says: /cannot be empty/ },
  { name: 'content over 4000 characters', send: () => json('/chats/tea/messages').send({ content: 'é'.repeat(4001) }), status: 422, says: /at most 4000/ },
  { name: 'a 1 MB body', send: () => json('/chats/tea/messages').send({ content: 'x'.repeat(1 << 20) }), status: 413, says: /too large/ },
  { name: 'an oversized form body', send: () => form('/chats/tea/messages').send({ content: 'x'.repeat(BODY_LIMIT) }), status: 413, says: /too large/ },
  { name: 'malformed JSON', send: () => json('/chats/tea/messages').set('content-type', 'application/json').send('{"content":'), status: 400, says: /not valid JSON/ },
  { name: 'JSON that is not an object', send: () => json('/chats/tea/messages').set('content-type', 'application/json').send('"hello"'), status: 400, says: /JSON object|not valid JSON/ },
  { name: 'a wrong content type', send: () => json('/chats/tea/messages').set('content-type', 'text/csv').send('content,hi'), status: 415, says: /form|JSON/ },
  { name: 'multipart form data', send: () => json('/chats/tea/messages').field('content', 'hi'), status: 415, says: /form|JSON/ },
  { name: 'an uppercase chat id', send: () => json('/chats/Tea/messages').send({ content: 'hi' }), status: 422, says: /chat name/ },
  { name: 'a 2,000-character chat id', send: () => json(`/chats/${'a'.repeat(2000)}/messages`).send({ content: 'hi' }), status: 422, says: /chat name/ },
  { name: 'a path trick in the chat id (..%2F)', send: () => json('/chats/..%2Fadmin/messages').send({ content: 'hi' }), status: 422, says: /chat name/ },
  { name: 'a NUL byte in the chat id', send: () => json('/chats/tea%00/messages').send({ content: 'hi' }), status: 422, says: /chat name/ },
  { name: 'a malformed commandId', send: () => json('/chats/tea/messages').send({ content: 'hi', commandId: '../../etc' }), status: 422, says: /command id/ },
  { name: 'a cross-site form post (Sec-Fetch-Site)', send: () => form('/chats/tea/messages').set('sec-fetch-site', 'cross-site').send({ content: 'csrf' }), status: 403, says: /another site/ },
  { name: 'a same-site (not same-origin) form post', send: () => form('/chats/tea/messages').set('sec-fetch-site', 'same-site').send({ content: 'csrf' }), status: 403, says: /another site/ },
  { name: 'a post from another Origin', send: () => form('/chats/tea/messages').set('origin', 'https://evil.example').send({ content: 'csrf' }), status: 403, says: /another origin/ },
  { name: 'a post that says same-origin but comes from another Origin', send: () => form('/chats/tea/messages').set('sec-fetch-site', 'same-origin').set('origin', 'https://evil.example').send({ content: 'csrf' }), status: 403, says: /another origin/ },
  { name: 'a post with Origin: null', send: () => form('/chats/tea/messages').set('origin', 'null').send({ content: 'csrf' }), status: 403, says: /another origin/ },
  { name: 'a cross-site POST /session', send: () => form('/session').set('sec-fetch-site', 'cross-site').send({ name: 'pwned' }), status: 403, says: /another site/ },
  { name: 'an empty name', send: () => form('/session').send({ name: '  ', chatId: 'tea' }), status: 422, says: /Pick a name/ },
  { name: 'a 41-character name', send: () => form('/session').send({ name: 'n'.repeat(41) }), status: 422, says: /at most 40/ },
  { name: 'an impossible room name', send: () => form('/session').send({ name: 'ok', chatId: '!!!' }), status: 422, says: /room name/ },
]

describe('bad input gets the right 4xx, a readable message, and appends nothing', () => {
  for (const { name, send, status, says } of BAD_INPUTS) {
    test(name, async () => {
      const before = await eventCount()
      const res = await send()
      assert.equal(res.status, status, res.text.slice(0, 300))
      const readable = res.body?.error ?? res.text
      assert.match(readable, says)
      if (res.type === 'text/html') assert.match(res.text, /role="alert"/, 'the message is shown in the page')
      assert.equal(await eventCount(), before)
    })
  }
})

describe('reads with bad input', () => {
  const cases: [string, string, Record<string, string>, number][] = [
    ['a malformed Last-Event-ID', '/chats/tea/events', { 'last-event-id': 'x1' }, 400],
    ['a negative ?after', '/chats/tea/events?after=-5', {}, 400],
    ['an absurd ?after', '/chats/tea/events?after=99999999999999999999', {}, 400],
    ['a repeated ?after', '/chats/tea/events?after=1&after=2', {}, 400],
    ['a bad ?before', '/chats/tea/messages?before=abc', {}, 400],
    ['an impossible chat page', '/chats/..%2F..%2Fetc%2Fpasswd', {}, 404],
    ['a traversal out of the static folder', '/static/..%2F..%2Fpackage.json', {}, 404],
    ['a traversal out of the htmx folder', '/htmx/..%2F..%2F..%2Fpackage.json', {}, 404],
  ]
  for (const [name, path, headers, status] of cases) {
    test(`${name} answers ${status}`, async () => {
      const res = await request(node.url).get(path).set(headers)
      assert.equal(res.status, status)
      assert.doesNotMatch(res.text, /"dependencies"/, 'no file outside the served folders leaks')
    })
  }
})

describe('who is speaking', () => {
  test('a "sender" field in the body is ignored: the sender comes from the session', async () => {
    const agent = request.agent(node.url)
    await agent.post('/session').type('form').send({ name: 'Honest Abe' }).expect(303)
    const { body } = await agent.post('/chats/who/messages').send({ content: 'hi', sender: 'Impostor' }).expect(201)
    const event = await node.db.selectFrom('events').select('data').where('stream_id', '=', 'chat-who').where('stream_version', '=', body.version).executeTakeFirstOrThrow()
    assert.equal(event.data.sender, 'Honest Abe')
  })

  test('a forged or tampered session cookie is treated as no session', async () => {
    const agent = request.agent(node.url)
    const res = await agent.post('/session').type('form').send({ name: 'Real Person' }).expect(303)
    const signed = /live_tea_session=([^;]+)/.exec(String(res.headers['set-cookie']))![1]!
    const tampered = signed.replace('Real%20Person', 'Real%20Persom')
    const unsigned = encodeURIComponent('Real Person')
    const forged = `s%3AReal%20Person.${'A'.repeat(43)}`
    // The genuine cookie first, twice: its check is remembered, and only an exact repeat may use that.
    for (let i = 0; i < 2; i++) {
      const { body } = await request(node.url).post('/chats/forgery/messages').set('cookie', `${SESSION_COOKIE}=${signed}`).send({ content: 'me' }).expect(201)
      const event = await node.db.selectFrom('events').select('data').where('stream_id', '=', 'chat-forgery').where('stream_version', '=', body.version).executeTakeFirstOrThrow()
      assert.equal(event.data.sender, 'Real Person')
    }
    for (const cookie of [tampered, unsigned, forged]) {
      const { body } = await request(node.url).post('/chats/forgery/messages').set('cookie', `${SESSION_COOKIE}=${cookie}`).send({ content: 'who am I?' }).expect(201)
      const event = await node.db.selectFrom('events').select('data').where('stream_id', '=', 'chat-forgery').where('stream_version', '=', body.version).executeTakeFirstOrThrow()
      assert.notEqual(event.data.sender, 'Real Person', `cookie ${cookie} was honoured`)
    }
  })

  test('POST /session answers one Set-Cookie for the session, not two', async () => {
    const res = await request(node.url).post('/session').type('form').send({ name: 'Once' }).expect(303)
    const cookies = ([] as string[]).concat(res.headers['set-cookie'] ?? [])
    assert.equal(cookies.filter((cookie) => cookie.startsWith(`${SESSION_COOKIE}=`)).length, 1)
  })
})

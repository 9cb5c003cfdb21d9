import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { sql } from 'kysely'
import request from 'supertest'
import { BODY_LIMIT } from '../../src/app.js'
import { MAX_CONTENT_LENGTH } from '../../src/chat/chat.js'
import { startTestNode, type TestNode } from '../support/node.js'

let node: TestNode
before(async () => (node = await startTestNode()))
after(() => node.close())

async function eventCount(): Promise<number> {
  return Number((await node.db.selectFrom('events').select(sql<number>`count(*)`.as('n')).executeTakeFirstOrThrow()).n)
}

async function storedContent(chatId: string, version: number): Promise<string> {
  const event = await node.db.selectFrom('events').select('data').where('stream_id', '=', `chat-${chatId}`).where('stream_version', '=', version).executeTakeFirstOrThrow()
  return String(event.data.content)
}

/** JSON as a client that escapes everything outside ASCII writes it (Python's json.dumps does by default). */
function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(/[\u0080-\uffff]/g, (unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

describe('every message the rules allow fits in a request body, in any script', () => {
  const scripts: [string, string][] = [
    ['Cyrillic', 'ж'],
    ['CJK', '茶'],
    ['emoji (4-byte UTF-8, a surrogate pair)', '🍵'],
  ]
  for (const [script, character] of scripts) {
    const content = character.repeat(MAX_CONTENT_LENGTH)
    const encodings: [string, (chatId: string) => request.Test][] = [
      ['a form', (chatId) => request(node.url).post(`/chats/${chatId}/messages`).set('accept', 'application/json').type('form').send({ content })],
      ['JSON', (chatId) => request(node.url).post(`/chats/${chatId}/messages`).send({ content })],
      ['ASCII-escaped JSON', (chatId) => request(node.url).post(`/chats/${chatId}/messages`).set('content-type', 'application/json').send(asciiJson({ content }))],
    ]
    for (const [encoding, send] of encodings) {
      test(`${MAX_CONTENT_LENGTH} characters of ${script} as ${encoding} are accepted and stored as sent`, async () => {
        const chatId = `long-${encoding}-${script}`.toLowerCase().replace(/[^a-z0-9]+/g, '-').slice(0, 60)
        const res = await send(chatId)
        assert.equal(res.status, 201, res.text.slice(0, 200))
        assert.equal(await storedContent(chatId, res.body.version), content)
      })
    }
  }

  test('the worst case of the rules is what the limit is made of, and a byte more than the limit is still 413', async () => {
    const worst = Buffer.byteLength(new URLSearchParams({ content: '🍵'.repeat(MAX_CONTENT_LENGTH), commandId: 'c'.repeat(64) }).toString())
    assert.ok(worst <= BODY_LIMIT, `the longest allowed form body (${worst} bytes) fits under ${BODY_LIMIT}`)
    const before = await eventCount()
    const form = await request(node.url).post('/chats/too-big/messages').set('accept', 'application/json').type('form').send(`content=${'x'.repeat(BODY_LIMIT)}`)
    assert.equal(form.status, 413)
    assert.match(form.body.error, /too large/)
    const json = await request(node.url).post('/chats/too-big/messages').set('content-type', 'application/json').send(JSON.stringify({ content: 'x'.repeat(BODY_LIMIT) }))
    assert.equal(json.status, 413)
    assert.equal(await eventCount(), before)
  })
})

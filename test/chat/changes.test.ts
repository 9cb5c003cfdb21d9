/**
 * Edits, retractions and reactions over HTTP, against a real node: the JSON
 * contract of DESIGN's "Every change is an event", its refusals (each of
 * which appends nothing), idempotency per person, people who share a display
 * name, the htmx and plain-form variants, history, and the promise that a
 * retracted message's content is shown nowhere after the retraction.
 */
import assert from 'node:assert/strict'
import { createHmac, randomUUID } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import cookieParser from 'cookie-parser'
import { sql } from 'kysely'
import request, { type Response, type Test } from 'supertest'
import { RATE_LIMIT } from '../../src/chat/chat.js'
import { personTag, SESSION_COOKIE } from '../../src/http/session.js'
import { join as joinAs, type Person as SessionHolder } from '../support/people.js'
import { SseClient } from '../support/sse.js'
import { SESSION_SECRET, startTestNode, waitForProjection, type TestNode } from '../support/node.js'

let node: TestNode
let alice: Person
let bob: Person
before(async () => {
  node = await startTestNode()
  alice = await join('alice')
  bob = await join('bob')
})
after(() => node.close())

/** Someone with a session, and the person id it holds (read back from the signed cookie). */
type Person = SessionHolder & { personId: string }

/** The session cookie a response sets, ready to send back. */
function sessionCookieOf(res: Response): string | undefined {
  const setCookie = [res.headers['set-cookie'] ?? []].flat() as string[]
  return setCookie.find((line) => line.startsWith(`${SESSION_COOKIE}=`))?.split(';')[0]
}

/** The signed value a session cookie holds (cookie-parser's unsigning with the test secret). */
function sessionValueOf(cookie: string): string {
  const raw = decodeURIComponent(cookie.slice(SESSION_COOKIE.length + 1))
  const value = cookieParser.signedCookie(raw, SESSION_SECRET)
  assert.equal(typeof value, 'string', `a validly signed session cookie: ${raw}`)
  return value as string
}

function personIdOf(cookie: string): string {
  const match = /^p1\.([A-Za-z0-9_-]{22})\./.exec(sessionValueOf(cookie))
  assert.ok(match, `a session cookie with a person id: ${sessionValueOf(cookie)}`)
  return match[1]!
}

/** Someone who picked a display name on the home page (POST /session): a new person, whatever the name. */
async function join(name: string): Promise<Person> {
  const person = await joinAs(node.url, name)
  return { ...person, personId: personIdOf(person.cookie) }
}

/** Commands as JSON (a JSON body), with the person's cookie. */
function as(person: Person) {
  const post = (path: string) => request(node.url).post(path).set('cookie', person.cookie)
  return {
    send: (chatId: string, content: string, commandId?: string) => post(`/chats/${chatId}/messages`).send({ content, commandId }),
    edit: (chatId: string, messageId: number | string, content: unknown, commandId?: string) => post(`/chats/${chatId}/messages/${messageId}/edits`).send({ content, commandId }),
    retract: (chatId: string, messageId: number | string, commandId?: string) => post(`/chats/${chatId}/messages/${messageId}/retraction`).send({ commandId }),
    react: (chatId: string, messageId: number | string, emoji: unknown, commandId?: string) => post(`/chats/${chatId}/messages/${messageId}/reactions`).send({ emoji, commandId }),
  }
}

/** Sends a message and answers its id (the chat version it was appended at). */
async function sent(person: Person, chatId: string, content: string): Promise<number> {
  const res = await as(person).send(chatId, content).expect(201)
  return res.body.version as number
}

async function eventCount(): Promise<number> {
  return Number((await node.db.selectFrom('events').select(sql<number>`count(*)`.as('n')).executeTakeFirstOrThrow()).n)
}

async function chatVersion(chatId: string): Promise<number> {
  const row = await node.db.selectFrom('streams').select('version').where('stream_id', '=', `chat-${chatId}`).executeTakeFirst()
  return Number(row?.version ?? 0)
}

/** A refused command: its status, a JSON {error}, and not one event appended. */
async function refused(req: Test, status: number, message?: RegExp): Promise<Response> {
  const before = await eventCount()
  const res = await req
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${res.text}`)
  assert.match(String(res.headers['content-type']), /application\/json/)
  assert.equal(typeof res.body.error, 'string', res.text)
  assert.ok(res.body.error.length > 0)
  if (message) assert.match(res.body.error, message)
  assert.equal(await eventCount(), before, 'a refused command appends nothing')
  return res
}

async function messagesJson(chatId: string, query = ''): Promise<{ chatId: string; messages: Record<string, unknown>[] }> {
  const res = await request(node.url).get(`/chats/${chatId}/messages${query}`).set('accept', 'application/json').expect(200)
  return res.body
}

async function messageJson(chatId: string, messageId: number): Promise<Record<string, unknown>> {
  await waitForProjection(node, chatId, await chatVersion(chatId))
  const { messages } = await messagesJson(chatId)
  const message = messages.find((m) => m.messageId === messageId)
  assert.ok(message, `message ${messageId} is in the JSON of #${chatId}`)
  return message
}

describe('answers (JSON)', () => {
  test('an edit answers 200 {chatId, messageId, version} and appends one MessageEdited by its author', async () => {
    const id = await sent(alice, 'edits', 'helo')
    await sent(bob, 'edits', 'hi alice')
    const res = await as(alice).edit('edits', id, 'hello').expect(200)
    assert.match(String(res.headers['content-type']), /application\/json/)
    assert.deepEqual(res.body, { chatId: 'edits', messageId: id, version: 3 })
    const event = await node.db.selectFrom('events').selectAll().where('stream_id', '=', 'chat-edits').where('stream_version', '=', 3).executeTakeFirstOrThrow()
    assert.equal(event.event_type, 'MessageEdited')
    assert.equal(event.data.messageId, id)
    assert.equal(event.data.content, 'hello')
    assert.equal(event.data.authorId, alice.personId)
    assert.equal(event.metadata.personId, alice.personId)
    const message = await messageJson('edits', id)
    assert.equal(message.content, 'hello')
    assert.equal(typeof message.editedAt, 'string')
  })

  test('an edit to the same text (after trimming) answers the current version and appends nothing', async () => {
    const id = await sent(alice, 'noop', 'same text')
    await sent(bob, 'noop', 'something else')
    const before = await eventCount()
    for (const content of ['same text', '  same text \n']) {
      const res = await as(alice).edit('noop', id, content).expect(200)
      assert.deepEqual(res.body, { chatId: 'noop', messageId: id, version: 2 })
    }
    assert.equal(await eventCount(), before)
    assert.equal((await messageJson('noop', id)).editedAt, null, 'not marked as edited')
  })

  test('a reaction answers 200 with "reacted" toggling true, false, true; each toggle is an event', async () => {
    const id = await sent(bob, 'react', 'react to me')
    const before = await eventCount()
    const answers = []
    for (let i = 0; i < 3; i++) answers.push((await as(alice).react('react', id, '👍').expect(200)).body)
    assert.deepEqual(answers, [
      { chatId: 'react', messageId: id, version: 2, reacted: true },
      { chatId: 'react', messageId: id, version: 3, reacted: false },
      { chatId: 'react', messageId: id, version: 4, reacted: true },
    ])
    assert.equal(await eventCount(), before + 3)
    const types = await node.db.selectFrom('events').select('event_type').where('stream_id', '=', 'chat-react').orderBy('stream_version').execute()
    assert.deepEqual(types.map((row) => row.event_type), ['MessageSent', 'ReactionAdded', 'ReactionRemoved', 'ReactionAdded'])
    // Another person's reaction with the same emoji is theirs: it adds, and counts.
    assert.equal((await as(bob).react('react', id, '👍').expect(200)).body.reacted, true)
    assert.deepEqual((await messageJson('react', id)).reactions, { '👍': 2 })
  })

  test('a heart without its emoji selector (❤, or ❤︎ as text) is the ❤️ of the set, recorded as ❤️', async () => {
    const id = await sent(bob, 'hearts', 'love it')
    assert.equal((await as(alice).react('hearts', id, '\u2764').expect(200)).body.reacted, true)
    assert.equal((await as(alice).react('hearts', id, '\u2764\uFE0E').expect(200)).body.reacted, false, 'the same reaction, toggled off')
    assert.equal((await as(bob).react('hearts', id, '\u2764').expect(200)).body.reacted, true)
    const events = await node.db.selectFrom('events').select('data').where('stream_id', '=', 'chat-hearts').where('event_type', 'in', ['ReactionAdded', 'ReactionRemoved']).execute()
    assert.deepEqual(events.map((row) => (row.data as { emoji: string }).emoji), ['❤️', '❤️', '❤️'])
    assert.deepEqual((await messageJson('hearts', id)).reactions, { '❤️': 1 })
    // Spaces around a reaction (a pasted emoji) are not part of it.
    assert.equal((await as(alice).react('hearts', id, ' 🎉\n').expect(200)).body.reacted, true)
    assert.deepEqual((await messageJson('hearts', id)).reactions, { '❤️': 1, '🎉': 1 })
  })

  test('a retraction answers 200 {chatId, messageId, version}', async () => {
    const id = await sent(alice, 'retract', 'oops')
    const res = await as(alice).retract('retract', id).expect(200)
    assert.deepEqual(res.body, { chatId: 'retract', messageId: id, version: 2 })
    const message = await messageJson('retract', id)
    assert.equal(message.retracted, true)
    assert.equal(message.content, null)
  })
})

describe('refusals: {error} with a status, and nothing appended', () => {
  test('400: content (or commandId, or emoji) that is not a string', async () => {
    const id = await sent(alice, 'bad-types', 'hello')
    await refused(as(alice).edit('bad-types', id, 42), 400, /content/)
    await refused(as(alice).edit('bad-types', id, ['a', 'b']), 400)
    await refused(as(alice).edit('bad-types', id, { text: 'x' }), 400)
    await refused(request(node.url).post(`/chats/bad-types/messages/${id}/edits`).set('cookie', alice.cookie).send({ content: 'x', commandId: 7 }), 400, /commandId/)
    await refused(request(node.url).post(`/chats/bad-types/messages/${id}/retraction`).set('cookie', alice.cookie).send({ commandId: ['x'] }), 400)
    await refused(as(alice).react('bad-types', id, ['👍']), 400)
  })

  test('403: only the author edits or retracts, even against someone with the same display name', async () => {
    const id = await sent(alice, 'not-yours', 'mine')
    const otherAlice = await join('alice')
    assert.notEqual(otherAlice.personId, alice.personId, 'two people who pick the same name are two people')
    for (const someone of [bob, otherAlice]) {
      await refused(as(someone).edit('not-yours', id, 'hijacked'), 403, /Only the person who wrote/)
      await refused(as(someone).retract('not-yours', id), 403)
      await request(node.url).get(`/chats/not-yours/messages/${id}/edit`).set('cookie', someone.cookie).expect(403)
    }
    // Anyone may react, and the author may still edit.
    await as(otherAlice).react('not-yours', id, '🎉').expect(200)
    await as(alice).edit('not-yours', id, 'still mine').expect(200)
    assert.equal((await messageJson('not-yours', id)).content, 'still mine')
  })

  test('404: an unknown message id, an id that is not a number, a version that is not a message, an unknown chat', async () => {
    const id = await sent(alice, 'unknown', 'here')
    const edited = (await as(alice).edit('unknown', id, 'here!').expect(200)).body.version as number
    const cases: [string, number | string][] = [
      ['unknown', 999],
      ['unknown', 'abc'],
      ['unknown', '1.5'],
      ['unknown', '-1'],
      ['unknown', 0],
      ['unknown', edited], // a version, but an edit's: no message has that id
      ['never-spoken-in', 1], // a valid chat name with no events
      ['NOT_A_CHAT', id], // cannot name a chat
    ]
    for (const [chatId, messageId] of cases) {
      await refused(as(alice).edit(chatId, messageId, 'x'), 404)
      await refused(as(alice).retract(chatId, messageId), 404)
      await refused(as(alice).react(chatId, messageId, '👍'), 404)
      const history = await request(node.url).get(`/chats/${chatId}/messages/${messageId}/history`).set('accept', 'application/json')
      assert.equal(history.status, 404, `history of ${chatId}/${messageId}: ${history.text}`)
      assert.equal(typeof history.body.error, 'string')
    }
    // A message of another chat is not this chat's message.
    await refused(as(alice).edit('unknown-too', id, 'x'), 404)
  })

  test('422: a reaction outside the fixed set, an empty or too long edit, any change to a retracted message', async () => {
    const id = await sent(alice, 'invalid', 'valid')
    for (const emoji of ['💩', '', 'thumbs up', '👍👍', ' ']) await refused(as(bob).react('invalid', id, emoji), 422, /reaction is one of/)
    await refused(request(node.url).post(`/chats/invalid/messages/${id}/reactions`).set('cookie', bob.cookie).send({}), 422)
    for (const content of ['', '   ', '\n\t ']) await refused(as(alice).edit('invalid', id, content), 422, /empty/)
    await refused(as(alice).edit('invalid', id, 'x'.repeat(4001)), 422, /at most 4000/)

    await as(bob).react('invalid', id, '❤️').expect(200)
    await as(alice).retract('invalid', id).expect(200)
    await refused(as(alice).edit('invalid', id, 'after all'), 422, /retracted/)
    await refused(as(alice).retract('invalid', id), 422, /retracted/)
    await refused(as(bob).react('invalid', id, '👍'), 422, /retracted/)
    await refused(as(bob).react('invalid', id, '❤️'), 422, /retracted/) // not even taking a reaction back
  })

  test(`429: the rate counts every command of a person (${RATE_LIMIT} a minute), and two people named alice have their own`, async () => {
    const chatId = 'rate'
    const first = await join('alice')
    const second = await join('alice')
    const id = await sent(first, chatId, 'version 0') // 1
    for (let i = 1; i <= 9; i++) await as(first).edit(chatId, id, `version ${i}`).expect(200) // 10
    for (let i = 0; i < 17; i++) await as(first).react(chatId, id, '😂').expect(200) // 27
    const other = await sent(first, chatId, 'take me back') // 28
    await as(first).retract(chatId, other).expect(200) // 29
    await as(first).react(chatId, id, '🙏').expect(200) // 30
    assert.equal(await chatVersion(chatId), RATE_LIMIT)

    for (const req of [as(first).send(chatId, 'one more'), as(first).edit(chatId, id, 'one more'), as(first).react(chatId, id, '👍'), as(first).retract(chatId, id)]) {
      const res = await refused(req, 429, /Slow down/)
      assert.match(String(res.headers['retry-after']), /^\d+$/)
    }
    // The other alice is another person: her own limit, and still not the author.
    await as(second).send(chatId, 'I am alice too').expect(201)
    await as(second).react(chatId, id, '👍').expect(200)
    await refused(as(second).edit(chatId, id, 'not mine'), 403)
    // Refusals are not commands that count: the first alice is still refused, not worse.
    await refused(as(first).send(chatId, 'still too fast'), 429)
    // And the limit is per chat.
    await as(first).send('rate-elsewhere', 'fine here').expect(201)
  })
})

describe('idempotency is per person', () => {
  test('the same commandId from the same person twice (also at once) is one event and the same answer', async () => {
    const id = await sent(alice, 'idem', 'first')
    const before = await eventCount()
    const editId = randomUUID()
    const edits = await Promise.all([as(alice).edit('idem', id, 'second', editId), as(alice).edit('idem', id, 'second', editId)])
    const editAgain = await as(alice).edit('idem', id, 'second', editId)
    for (const res of [...edits, editAgain]) assert.deepEqual([res.status, res.body], [200, { chatId: 'idem', messageId: id, version: 2 }])

    const reactId = randomUUID()
    const reactions = [await as(bob).react('idem', id, '🎉', reactId), await as(bob).react('idem', id, '🎉', reactId)]
    for (const res of reactions) assert.deepEqual([res.status, res.body], [200, { chatId: 'idem', messageId: id, version: 3, reacted: true }])
    assert.equal(await eventCount(), before + 2)
    // A new command id toggles it off; repeating that one does not toggle it back.
    const offId = randomUUID()
    assert.equal((await as(bob).react('idem', id, '🎉', offId).expect(200)).body.reacted, false)
    assert.deepEqual((await as(bob).react('idem', id, '🎉', offId).expect(200)).body, { chatId: 'idem', messageId: id, version: 4, reacted: false })

    const retractId = randomUUID()
    const retractions = [await as(alice).retract('idem', id, retractId), await as(alice).retract('idem', id, retractId)]
    for (const res of retractions) assert.deepEqual([res.status, res.body], [200, { chatId: 'idem', messageId: id, version: 5 }])
    assert.equal(await eventCount(), before + 4)
  })

  test('a commandId used again for another change is refused (422) and appends nothing, whatever the change', async () => {
    const id = await sent(alice, 'idem-other', 'one message')
    const reactId = randomUUID()
    await as(bob).react('idem-other', id, '👍', reactId).expect(200)
    const before = await eventCount()
    // Another emoji, a message that does not exist, another kind of command: none of them is a retry of the 👍.
    for (const res of [
      await as(bob).react('idem-other', id, '🙏', reactId),
      await as(bob).react('idem-other', 999, '👍', reactId),
      await as(bob).send('idem-other', 'a new message', reactId),
    ]) {
      assert.equal(res.status, 422, res.text)
      assert.match(res.body.error, /used before for a different change/)
    }
    const editId = randomUUID()
    await as(alice).edit('idem-other', id, 'one message, edited', editId).expect(200)
    assert.equal((await as(alice).retract('idem-other', id, editId)).status, 422)
    assert.equal((await as(alice).edit('idem-other', id, 'edited again', editId)).status, 422)
    assert.equal(await eventCount(), before + 1)
    assert.deepEqual((await messageJson('idem-other', id)).reactions, { '👍': 1 })
    assert.equal((await messageJson('idem-other', id)).retracted, false)
  })

  test('the htmx composer whose command id was used for another message comes back with the text and a new id', async () => {
    const commandId = randomUUID()
    await as(alice).send('idem-composer', 'sent, but the answer was lost', commandId).expect(201)
    const res = await request(node.url)
      .post('/chats/idem-composer/messages')
      .set('cookie', alice.cookie)
      .set('hx-request', 'true')
      .type('form')
      .send({ content: 'typed after that', commandId })
    assert.equal(res.status, 422, res.text)
    assert.match(res.text, /<form id="composer"/)
    assert.ok(res.text.includes('>typed after that</textarea>'), 'the text as typed')
    const newId = /name="commandId" value="([^"]+)"/.exec(res.text)?.[1]
    assert.ok(newId && newId !== commandId, 'a new command id, so that sending again sends it')
    await as(alice).send('idem-composer', 'typed after that', newId).expect(201)
  })

  test('the same commandId from two people is two commands: two events, two answers', async () => {
    const id = await sent(alice, 'idem-two', 'react to me')
    const commandId = randomUUID()
    const before = await eventCount()
    const a = await as(alice).react('idem-two', id, '👍', commandId).expect(200)
    const b = await as(bob).react('idem-two', id, '👍', commandId).expect(200)
    assert.deepEqual([a.body.version, a.body.reacted, b.body.version, b.body.reacted], [2, true, 3, true])
    // And a command id two people used for reactions is still free for a third person's message, then her edit.
    const carol = await join('carol')
    const carolsId = (await as(carol).send('idem-two', 'carol writes', commandId).expect(201)).body.version as number
    assert.equal(carolsId, 4)
    await as(carol).edit('idem-two', carolsId, 'carol edits', randomUUID()).expect(200)
    assert.equal(await eventCount(), before + 4)
    assert.deepEqual((await messageJson('idem-two', id)).reactions, { '👍': 2 })
  })
})

describe('htmx and plain forms', () => {
  test('an htmx edit that breaks a rule gets the edit form back with its error and the text as typed', async () => {
    const id = await sent(alice, 'htmx-edit', 'short')
    // The edit form is offered for a message on the page: one the read model shows.
    await waitForProjection(node, 'htmx-edit', id)
    const typed = `a long <b>draft</b> ${'x'.repeat(4000)}`
    const before = await eventCount()
    const res = await request(node.url)
      .post(`/chats/htmx-edit/messages/${id}/edits`)
      .set('cookie', alice.cookie)
      .set('hx-request', 'true')
      .type('form')
      .send({ content: typed, commandId: 'edit-1' })
    assert.equal(res.status, 422, res.text)
    assert.match(String(res.headers['content-type']), /text\/html/)
    assert.match(res.text, new RegExp(`^<form class="message editing" id="edit-htmx-edit-${id}"`))
    assert.ok(res.text.includes(`>a long &lt;b&gt;draft&lt;/b&gt; ${'x'.repeat(4000)}</textarea>`), 'the text as typed, escaped')
    assert.match(res.text, /role="alert">A message is at most 4000 characters/)
    assert.ok(res.text.includes('value="edit-1"'), 'the same command id, so a fixed retry is still one command')
    assert.equal(await eventCount(), before)

    // Without JavaScript the same refusal is the edit page, text kept.
    const page = await request(node.url).post(`/chats/htmx-edit/messages/${id}/edits`).set('cookie', alice.cookie).type('form').send({ content: '   ', commandId: 'edit-2' })
    assert.equal(page.status, 422)
    assert.match(page.text, /<!doctype html>/i)
    assert.match(page.text, /<textarea[^>]*>   <\/textarea>/)
    assert.match(page.text, /cannot be empty/)
    assert.equal(await eventCount(), before)
  })

  test('an htmx change answers the message fragment as it is now; a refused one, the fragment with its error', async () => {
    const id = await sent(alice, 'htmx-act', 'hello')
    const res = await request(node.url).post(`/chats/htmx-act/messages/${id}/reactions`).set('cookie', bob.cookie).set('hx-request', 'true').type('form').send({ emoji: '😮' }).expect(200)
    assert.match(res.text, new RegExp(`^<article class="message" id="message-htmx-act-${id}"`))
    assert.match(res.text, /aria-label="😮 1"/)
    const refusedRes = await request(node.url).post(`/chats/htmx-act/messages/${id}/retraction`).set('cookie', bob.cookie).set('hx-request', 'true').type('form').send({})
    assert.equal(refusedRes.status, 403)
    assert.match(refusedRes.text, new RegExp(`^<article class="message" id="message-htmx-act-${id}"`))
    assert.match(refusedRes.text, /role="alert">Only the person who wrote a message can retract it/)
  })

  test('a plain form post of each change answers 303 back to the message on the chat page', async () => {
    const id = await sent(alice, 'plain', 'hello')
    const location = `/chats/plain#message-plain-${id}`
    const form = (person: Person, path: string, fields: Record<string, string>) => request(node.url).post(`/chats/plain/messages/${id}/${path}`).set('cookie', person.cookie).type('form').send(fields)
    for (const req of [form(alice, 'edits', { content: 'hello, edited' }), form(bob, 'reactions', { emoji: '👍' }), form(alice, 'retraction', {})]) {
      const res = await req
      assert.equal(res.status, 303, res.text)
      assert.equal(res.headers.location, location)
    }
    // The redirect waited for the projection: the page it leads to shows the retraction.
    const page = await request(node.url).get('/chats/plain').set('cookie', alice.cookie).expect(200)
    assert.match(page.text, /This message was retracted\./)
  })
})

describe('older messages', () => {
  test('the chat page and each older page link further back by message id, until the first message', async () => {
    const chatId = 'long'
    // Without a cookie every post is a new person, so no rate limit applies; a change between sends makes ids differ from counts.
    for (let i = 1; i <= 110; i++) {
      const res = await request(node.url).post(`/chats/${chatId}/messages`).send({ content: `message ${i}` }).expect(201)
      if (i === 3) await as(bob).react(chatId, res.body.version, '👍').expect(200)
    }
    await waitForProjection(node, chatId, 111)
    const idsIn = (html: string) => [...html.matchAll(new RegExp(`<article[^>]* id="message-${chatId}-(\\d+)"`, 'g'))].map((m) => Number(m[1]))
    const olderLink = (html: string) => /href="\/chats\/long\/messages\?before=([^"]*)"/.exec(html)?.[1]
    const page = (await request(node.url).get(`/chats/${chatId}`).expect(200)).text
    assert.deepEqual(idsIn(page), Array.from({ length: 50 }, (_, i) => i + 62))
    assert.equal(olderLink(page), '62')
    for (const hx of [true, false]) {
      const get = (before: string) => request(node.url).get(`/chats/${chatId}/messages?before=${before}`).set(hx ? { 'hx-request': 'true' } : {}).expect(200)
      const older = (await get('62')).text
      assert.deepEqual(idsIn(older), Array.from({ length: 50 }, (_, i) => i + 12), hx ? 'htmx fragment' : 'page')
      // views/partials/_older.ejs reads messages[0].version, which a Message no longer has (it is messageId): the link says before=.
      assert.equal(olderLink(older), '12', `the ${hx ? 'fragment' : 'page'} links further back`)
      const oldest = (await get('12')).text
      assert.deepEqual(idsIn(oldest), [1, 2, 3, 5, 6, 7, 8, 9, 10, 11])
      assert.equal(olderLink(oldest), undefined, 'nothing before the first message')
    }
  })
})

describe('history', () => {
  test('JSON {chatId, messageId, versions: [{version, content, at}]}, oldest first, edits only (reactions are no versions)', async () => {
    const id = await sent(alice, 'history', 'draft one')
    await as(bob).react('history', id, '👍').expect(200)
    await sent(bob, 'history', 'other message')
    await as(alice).edit('history', id, 'draft two').expect(200)
    await as(alice).edit('history', id, 'draft two').expect(200) // no-op: no version
    await as(alice).edit('history', id, 'draft three').expect(200)
    const res = await request(node.url).get(`/chats/history/messages/${id}/history`).set('accept', 'application/json').expect(200)
    const events = await node.db.selectFrom('events').selectAll().where('stream_id', '=', 'chat-history').orderBy('stream_version').execute()
    assert.deepEqual(res.body, {
      chatId: 'history',
      messageId: id,
      versions: [
        { version: 1, content: 'draft one', at: events[0]!.data.sentAt },
        { version: 4, content: 'draft two', at: events[3]!.data.editedAt },
        { version: 5, content: 'draft three', at: events[4]!.data.editedAt },
      ],
    })
    const message = await messageJson('history', id)
    assert.equal(message.editedAt, events[4]!.data.editedAt)
    // The page shows the same versions.
    const page = await request(node.url).get(`/chats/history/messages/${id}/history`).expect(200)
    const shown = [...page.text.matchAll(/<p class="content">([^<]*)<\/p>/g)].map((m) => m[1])
    assert.deepEqual(shown, ['draft one', 'draft two', 'draft three'])
  })

  test('a retracted message has no history: 410', async () => {
    const id = await sent(alice, 'history-gone', 'regrettable')
    await as(alice).edit('history-gone', id, 'more regrettable').expect(200)
    await as(alice).retract('history-gone', id).expect(200)
    const res = await request(node.url).get(`/chats/history-gone/messages/${id}/history`).set('accept', 'application/json').expect(410)
    assert.equal(typeof res.body.error, 'string')
    const page = await request(node.url).get(`/chats/history-gone/messages/${id}/history`).expect(410)
    assert.ok(!page.text.includes('regrettable'))
  })
})

describe('message JSON', () => {
  test('{chatId, messages: [{chatId, messageId, version, sender, content, sentAt, editedAt, retracted, reactions}]}, oldest first', async () => {
    const chatId = 'shape'
    const one = await sent(alice, chatId, 'first')
    const two = await sent(bob, chatId, 'second')
    const three = await sent(alice, chatId, 'third')
    await as(alice).edit(chatId, one, 'first, edited').expect(200)
    const carol = await join('carol')
    await as(bob).react(chatId, one, '👍').expect(200)
    await as(carol).react(chatId, one, '👍').expect(200)
    await as(carol).react(chatId, one, '❤️').expect(200)
    await as(carol).react(chatId, two, '😂').expect(200)
    await as(carol).react(chatId, two, '😂').expect(200) // taken back: no entry with 0
    await as(alice).react(chatId, three, '🙏').expect(200)
    await as(alice).retract(chatId, three).expect(200)
    await waitForProjection(node, chatId, await chatVersion(chatId))

    const events = await node.db.selectFrom('events').selectAll().where('stream_id', '=', `chat-${chatId}`).orderBy('stream_version').execute()
    const at = (version: number, field: string) => events[version - 1]!.data[field]
    const body = await messagesJson(chatId)
    assert.deepEqual(body, {
      chatId,
      messages: [
        { chatId, messageId: one, version: one, sender: 'alice', content: 'first, edited', sentAt: at(one, 'sentAt'), editedAt: at(4, 'editedAt'), retracted: false, reactions: { '👍': 2, '❤️': 1 } },
        { chatId, messageId: two, version: two, sender: 'bob', content: 'second', sentAt: at(two, 'sentAt'), editedAt: null, retracted: false, reactions: {} },
        { chatId, messageId: three, version: three, sender: 'alice', content: null, sentAt: at(three, 'sentAt'), editedAt: null, retracted: true, reactions: {} },
      ],
    })
    // ?before= pages back by message id.
    assert.deepEqual((await messagesJson(chatId, `?before=${three}`)).messages.map((m) => m.messageId), [one, two])
    // One message alone has the same shape.
    const single = await request(node.url).get(`/chats/${chatId}/messages/${one}`).set('accept', 'application/json').expect(200)
    assert.deepEqual(single.body, body.messages[0])
  })
})

describe('a retracted message', () => {
  test('its content appears in no page, frame sent after the retraction, JSON answer or history', async () => {
    const chatId = 'secrets'
    const secret = 'SECRET-Q7X'
    const live = await SseClient.open(`${node.url}/chats/${chatId}/events?after=0`)
    const before = await sent(bob, chatId, 'before it')
    const id = await sent(alice, chatId, `the ${secret} first`)
    await as(alice).edit(chatId, id, `the ${secret} second`).expect(200)
    await as(bob).react(chatId, id, '😮').expect(200)
    await live.waitForCount(4)
    assert.ok(live.messages.some((m) => m.data.includes(secret)), 'premise: the content was out there before')

    // With htmx the retraction answers the fragment: already without the content.
    const retraction = await request(node.url).post(`/chats/${chatId}/messages/${id}/retraction`).set('cookie', alice.cookie).set('hx-request', 'true').type('form').send({}).expect(200)
    assert.ok(!retraction.text.includes(secret))
    assert.match(retraction.text, /This message was retracted\./)
    const retractedAt = await chatVersion(chatId)
    // Changes after it, to the neighbour, still stream.
    await as(alice).react(chatId, before, '🎉').expect(200)
    await sent(bob, chatId, 'after it')
    const head = await chatVersion(chatId)
    await waitForProjection(node, chatId, head)
    await live.waitForCount(head)
    const after = live.messages.filter((m) => Number(m.id) >= retractedAt)
    assert.equal(after.length, head - retractedAt + 1)
    for (const frame of after) assert.ok(!frame.data.includes(secret), `frame ${frame.id} after the retraction: ${frame.data}`)
    assert.match(after[0]!.data, new RegExp(`id="message-${chatId}-${id}"[\\s\\S]*This message was retracted\\.`))
    live.close()

    // A fresh stream from the start replays every version, none with the content.
    const replay = await SseClient.open(`${node.url}/chats/${chatId}/events?after=0`)
    await replay.waitForCount(head)
    assert.deepEqual(replay.ids, Array.from({ length: head }, (_, i) => i + 1))
    for (const frame of replay.messages) assert.ok(!frame.data.includes(secret), `replayed frame ${frame.id}: ${frame.data}`)
    replay.close()

    const get = (path: string, headers: Record<string, string> = {}) => request(node.url).get(path).set('cookie', alice.cookie).set(headers)
    const answers = [
      await get(`/chats/${chatId}`).expect(200),
      await get(`/chats/${chatId}/messages?before=${head + 1}`).expect(200), // the "older" page
      await get(`/chats/${chatId}/messages?before=${head + 1}`, { 'hx-request': 'true' }).expect(200),
      await get(`/chats/${chatId}/messages`, { accept: 'application/json' }).expect(200),
      await get(`/chats/${chatId}/messages/${id}`, { accept: 'application/json' }).expect(200),
      await get(`/chats/${chatId}/messages/${id}`, { 'hx-request': 'true' }).expect(200),
      await get(`/chats/${chatId}/messages/${id}/history`, { accept: 'application/json' }).expect(410),
      await get(`/chats/${chatId}/messages/${id}/history`).expect(410),
      await get(`/chats/${chatId}/messages/${id}/edit`).expect(410),
      await get(`/chats/${chatId}/messages/${id}/edit`, { 'hx-request': 'true' }).expect(410),
      await get('/').expect(200),
    ]
    for (const [i, res] of answers.entries()) assert.ok(!res.text.includes(secret), `answer ${i} (${res.status}): ${res.text.slice(0, 500)}`)
    assert.match(answers[0]!.text, new RegExp(`<article class="message retracted" id="message-${chatId}-${id}"`))
    // Refused changes to it do not echo it either.
    for (const req of [as(alice).edit(chatId, id, 'x'), as(bob).react(chatId, id, '👍'), as(alice).retract(chatId, id)]) assert.ok(!(await refused(req, 422)).text.includes(secret))

    // Nor does the read model hold it: only the append-only log does.
    const row = await node.db.selectFrom('messages').selectAll().where('chat_id', '=', chatId).where('message_id', '=', id).executeTakeFirstOrThrow()
    assert.equal(row.content, null)
    assert.deepEqual(row.reactions, {})
    assert.ok(!JSON.stringify(await node.db.selectFrom('messages').selectAll().execute()).includes(secret))
  })

  test('the home page counts messages: not versions, not retracted ones', async () => {
    const chatId = 'counted'
    const ids = [await sent(alice, chatId, 'one'), await sent(bob, chatId, 'two'), await sent(alice, chatId, 'three')]
    await as(alice).edit(chatId, ids[0]!, 'one, edited').expect(200)
    await as(bob).react(chatId, ids[0]!, '👍').expect(200)
    await as(alice).retract(chatId, ids[2]!).expect(200)
    await as(bob).react(chatId, ids[1]!, '❤️').expect(200)
    await waitForProjection(node, chatId, await chatVersion(chatId))
    assert.equal(await chatVersion(chatId), 7)
    // Alice's rooms (she wrote there); Bob's messages she has not seen show as unread, but the count is of messages.
    const home = await request(node.url).get('/').set('cookie', alice.cookie).expect(200)
    assert.match(home.text, new RegExp(`<a href="/chats/${chatId}">#${chatId}</a>\\s*(?:<span class="unread"[^>]*>\\d+</span>\\s*)?<span class="muted">2 messages ·`))
    // One message left is "1 message".
    await as(alice).retract(chatId, ids[0]!).expect(200)
    await waitForProjection(node, chatId, await chatVersion(chatId))
    const again = await request(node.url).get('/').set('cookie', alice.cookie).expect(200)
    assert.match(again.text, new RegExp(`<a href="/chats/${chatId}">#${chatId}</a>\\s*(?:<span class="unread"[^>]*>\\d+</span>\\s*)?<span class="muted">1 message ·`))
  })
})

describe('people', () => {
  test('"mine" on the chat page is keyed on each reader\'s person tag: the other alice\'s page does not style the author\'s message as her own', async () => {
    const chatId = 'two-alices'
    const first = await join('alice')
    const second = await join('alice')
    const id = await sent(first, chatId, 'written by the first alice')
    await as(second).react(chatId, id, '❤️').expect(200)
    await waitForProjection(node, chatId, 2)
    const pageOf = async (person: Person) => (await request(node.url).get(`/chats/${chatId}`).set('cookie', person.cookie).expect(200)).text
    const mineRule = (page: string) => /\.message\[data-author="([^"]+)"\]/.exec(page)?.[1]
    const myReactionRule = (page: string) => /\.reaction\[data-by~="([^"]+)"\]/.exec(page)?.[1]
    const [firstPage, secondPage] = [await pageOf(first), await pageOf(second)]
    const article = new RegExp(`<article class="message" id="message-${chatId}-${id}" data-author="([^"]+)"`)
    // The message is rendered once for every reader, with its author's tag.
    assert.equal(article.exec(firstPage)?.[1], personTag(first.personId))
    assert.equal(article.exec(secondPage)?.[1], personTag(first.personId))
    assert.equal(mineRule(firstPage), personTag(first.personId))
    assert.equal(mineRule(secondPage), personTag(second.personId))
    assert.notEqual(mineRule(secondPage), article.exec(secondPage)?.[1], "the second alice's page does not call the first alice's message hers")
    assert.equal(myReactionRule(secondPage), personTag(second.personId))
    assert.match(secondPage, new RegExp(`data-by="${personTag(second.personId)}"`), "her reaction carries her tag, so her page marks it as hers")
    assert.ok(!firstPage.includes(first.personId) && !secondPage.includes(second.personId), 'pages show tags, never the ids themselves')
  })

  test('a new display name keeps the person: the same id, still the author of what they wrote under the old name', async () => {
    const person = await join('dora')
    const id = await sent(person, 'renamed', 'as dora')
    const res = await request(node.url).post('/session').set('cookie', person.cookie).type('form').send({ name: 'Dora the Second', chatId: 'renamed' }).expect(303)
    const renamed: Person = { name: 'Dora the Second', cookie: sessionCookieOf(res)!, personId: personIdOf(sessionCookieOf(res)!) }
    assert.equal(renamed.personId, person.personId)
    await as(renamed).edit('renamed', id, 'as dora, edited later').expect(200)
    await as(renamed).react('renamed', id, '🙏').expect(200)
    const later = await sent(renamed, 'renamed', 'under the new name')
    const message = await messageJson('renamed', id)
    assert.deepEqual([message.sender, message.content], ['dora', 'as dora, edited later'], 'a message keeps the name it was sent under')
    assert.equal((await messageJson('renamed', later)).sender, 'Dora the Second')
  })

  test('an old-style session cookie (a signed name only) is upgraded on first use: the name is kept and a person id added', async () => {
    // What the previous main set: res.cookie(name, value, {signed: true}) with the same secret.
    const signed = `s:${sign('Old Timer', SESSION_SECRET)}`
    assert.equal(cookieParser.signedCookie(signed, SESSION_SECRET), 'Old Timer', 'premise: signed as cookie-parser expects')
    const oldCookie = `${SESSION_COOKIE}=${encodeURIComponent(signed)}`

    const page = await request(node.url).get('/chats/old-cookie').set('cookie', oldCookie).expect(200)
    const upgraded = sessionCookieOf(page)
    assert.ok(upgraded, 'the page sets a new session cookie')
    const value = sessionValueOf(upgraded)
    assert.match(value, /^p1\.[A-Za-z0-9_-]{22}\.Old Timer$/)
    const personId = personIdOf(upgraded)
    assert.equal(/\.message\[data-author="([^"]+)"\]/.exec(page.text)?.[1], personTag(personId), 'the page is already keyed on the new person')

    // With the upgraded cookie: the same person, the same name, no new cookie.
    const person: Person = { name: 'Old Timer', cookie: upgraded, personId }
    const post = await as(person).send('old-cookie', 'still me').expect(201)
    assert.equal(sessionCookieOf(post), undefined)
    const event = await node.db.selectFrom('events').selectAll().where('stream_id', '=', 'chat-old-cookie').executeTakeFirstOrThrow()
    assert.equal(event.data.sender, 'Old Timer')
    assert.equal(event.data.authorId, personId)
    await as(person).edit('old-cookie', post.body.version, 'still me, edited').expect(200)

    // A command as the first use works too: it is the upgraded person's, and their next request is theirs.
    const direct = await request(node.url).post('/chats/old-cookie/messages').set('cookie', oldCookie).send({ content: 'straight in' }).expect(201)
    const directCookie = sessionCookieOf(direct)
    assert.ok(directCookie)
    const directPerson: Person = { name: 'Old Timer', cookie: directCookie, personId: personIdOf(directCookie) }
    const directEvent = await node.db.selectFrom('events').selectAll().where('stream_id', '=', 'chat-old-cookie').where('stream_version', '=', direct.body.version).executeTakeFirstOrThrow()
    assert.equal(directEvent.data.sender, 'Old Timer')
    assert.equal(directEvent.data.authorId, directPerson.personId)
    await as(directPerson).edit('old-cookie', direct.body.version, 'straight in, edited').expect(200)

    // A tampered old cookie is no session: a random name, not "Old Timer".
    const tampered = await request(node.url).get('/chats/old-cookie').set('cookie', `${SESSION_COOKIE}=${encodeURIComponent(signed.replace('Old', 'Odd'))}`).expect(200)
    assert.doesNotMatch(sessionValueOf(sessionCookieOf(tampered)!), /Timer/)
  })
})

/** cookie-signature's sign(), which cookie-parser and res.cookie({signed: true}) use: value.HMAC-SHA256 in base64 without padding. */
function sign(value: string, secret: string): string {
  return `${value}.${createHmac('sha256', secret).update(value).digest('base64').replace(/=+$/, '')}`
}

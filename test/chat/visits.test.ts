/**
 * "New since your last visit" and "your rooms, not everyone's" (issue 12),
 * against a real node and PostgreSQL: per person and chat the server keeps
 * the last chat version the person has seen, from the pages they loaded and
 * the frames their stream delivered; the home page lists the person's own
 * rooms with unread counts; the chat page puts a "New" divider before the
 * first message by someone else they have not seen.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import request from 'supertest'
import { SESSION_COOKIE } from '../../src/http/session.js'
import { SseClient } from '../support/sse.js'
import { as as asPerson, join as joinAs, type Person } from '../support/people.js'
import { startTestNode, waitForProjection, type TestNode } from '../support/node.js'

let node: TestNode

before(async () => {
  node = await startTestNode()
})
after(() => node.close())




/** The person opens the chat page (after the projection has what was said: a reader does not outrun it). */
async function openChat(person: Person, chatId: string): Promise<string> {
  const head = await streamVersion(chatId)
  if (head > 0) await waitForProjection(node, chatId, head)
  const res = await request(node.url).get(`/chats/${chatId}`).set('cookie', person.cookie).expect(200)
  return res.text
}

async function streamVersion(chatId: string): Promise<number> {
  const row = await node.db.selectFrom('streams').select('version').where('stream_id', '=', `chat-${chatId}`).executeTakeFirst()
  return Number(row?.version ?? 0)
}

async function home(person: Person | undefined): Promise<string> {
  const req = request(node.url).get('/')
  if (person) req.set('cookie', person.cookie)
  return (await req.expect(200)).text
}

/** The rooms on a home page, in order, each with its unread count (0 when the page shows none). */
function roomsOn(html: string): { chatId: string; unread: number }[] {
  const list = /<ul class="rooms">([\s\S]*?)<\/ul>/.exec(html)?.[1] ?? ''
  return [...list.matchAll(/<li>([\s\S]*?)<\/li>/g)].map(([, item]) => ({
    chatId: /<a href="\/chats\/([^"]+)">/.exec(item!)![1]!,
    unread: Number(/<span class="unread"[^>]*>(\d+)<\/span>/.exec(item!)?.[1] ?? 0),
  }))
}

function unreadIn(html: string, chatId: string): number | undefined {
  return roomsOn(html).find((room) => room.chatId === chatId)?.unread
}

/** The message ids on a chat page in order, with "new" where the divider is. */
function dividerAndMessages(html: string, chatId: string): (number | 'new')[] {
  return [...html.matchAll(new RegExp(`<p class="new-divider"|<article class="message[^"]*" id="message-${chatId}-(\\d+)"`, 'g'))].map((match) => (match[1] ? Number(match[1]) : 'new'))
}

describe('new since your last visit', () => {
  let alice: Person
  let bob: Person
  before(async () => {
    alice = await join('alice')
    bob = await join('bob')
  })

  test('after 3 messages, an edit and a reaction by someone else: 3 unread on the home page, the divider before the first of them, and gone after the visit', async () => {
    const chatId = 'catch-up'
    const a = as(alice, chatId)
    const b = as(bob, chatId)
    const old1 = await a.send('morning')
    const old2 = await b.send('morning alice')
    // Alice wrote here without opening the page (JSON): the room is hers, and bob's reply is new to her.
    assert.deepEqual(dividerAndMessages(await openChat(alice, chatId), chatId), [old1, 'new', old2])
    const newcomer = await join('newcomer')
    assert.deepEqual(dividerAndMessages(await openChat(newcomer, chatId), chatId), [old1, old2], 'a first visit has no divider')

    const n1 = await b.send('news one')
    const n2 = await b.send('news two')
    const n3 = await b.send('news three')
    await b.edit(n2, 'news two, edited')
    await b.react(old1, '👍')
    await b.react(n3, '🎉')
    await b.edit(old2, 'good morning alice')
    await waitForProjection(node, chatId, await streamVersion(chatId))

    const page = await home(alice)
    assert.equal(unreadIn(page, chatId), 3, 'three new messages; edits and reactions are not messages')
    assert.match(page, new RegExp(`<a href="/chats/${chatId}">#${chatId}</a>\\s*<span class="unread"[^>]*>3</span>`), 'an element with class "unread" holds the number')

    const html = await openChat(alice, chatId)
    assert.deepEqual(dividerAndMessages(html, chatId), [old1, old2, 'new', n1, n2, n3], 'the divider sits right before the first unseen message')
    assert.match(html, new RegExp(`<p class="new-divider"[^>]*>[\\s\\S]*?</p>\\s*<article class="message" id="message-${chatId}-${n1}"`), 'immediately before it')

    assert.equal(unreadIn(await home(alice), chatId), 0, 'after the visit nothing is unread')
    assert.ok(!(await home(alice)).includes('class="unread"'), 'no unread badge at all')
    assert.deepEqual(dividerAndMessages(await openChat(alice, chatId), chatId), [old1, old2, n1, n2, n3], 'and the next visit has no divider')
  })

  test("one's own messages never count, and the divider passes them by", async () => {
    const chatId = 'own-words'
    const a = as(alice, chatId)
    const b = as(bob, chatId)
    const hello = await b.send('hello')
    await openChat(alice, chatId)
    const mine1 = await a.send('I say one thing')
    const mine2 = await a.send('and another')
    await waitForProjection(node, chatId, mine2)
    assert.equal(unreadIn(await home(alice), chatId), 0, 'only my own messages since my visit: nothing unread')

    const theirs = await b.send('bob answers')
    const mine3 = await a.send('me again')
    await waitForProjection(node, chatId, mine3)
    assert.equal(unreadIn(await home(alice), chatId), 1)
    assert.deepEqual(dividerAndMessages(await openChat(alice, chatId), chatId), [hello, mine1, mine2, 'new', theirs, mine3])
    // Bob wrote in the room (which makes it his) but never opened its page: alice's three messages are new to him, his own are not.
    assert.equal(unreadIn(await home(bob), chatId), 3)
  })

  test('a retracted message is not unread, and the divider skips it', async () => {
    const chatId = 'taken-back'
    const b = as(bob, chatId)
    await b.send('before')
    await openChat(alice, chatId)
    const gone = await b.send('oops, wrong room')
    const kept = await b.send('this one stays')
    await b.retract(gone)
    await waitForProjection(node, chatId, await streamVersion(chatId))
    assert.equal(unreadIn(await home(alice), chatId), 1)
    const order = dividerAndMessages(await openChat(alice, chatId), chatId)
    assert.deepEqual(order.slice(order.indexOf('new')), ['new', kept])
  })

  test('frames delivered on an open stream count as seen: after more than 2 s nothing is unread, and the visit is written', async () => {
    const chatId = 'streamed'
    const b = as(bob, chatId)
    await b.send('first')
    await openChat(alice, chatId)
    const head = await streamVersion(chatId)
    const stream = await SseClient.open(`${node.url}/chats/${chatId}/events?after=${head}`, { cookie: alice.cookie })
    try {
      const m1 = await b.send('while you watch, one')
      const m2 = await b.send('while you watch, two')
      await b.react(m1, '😮')
      await stream.waitFor((client) => client.ids.includes(m2 + 1), 10_000, 'the frames of two messages and a reaction')
      // Sightings are written at most every 2 s, in one statement for everyone.
      await new Promise((resolve) => setTimeout(resolve, 2_500))
      const row = await node.db.selectFrom('visits').select('seen_version').where('chat_id', '=', chatId).where('seen_version', '=', m2 + 1).executeTakeFirst()
      assert.ok(row, 'the version the stream delivered was written without another page load')
      await waitForProjection(node, chatId, m2 + 1)
      assert.equal(unreadIn(await home(alice), chatId), 0, 'what the stream showed is not unread')
      assert.deepEqual(
        dividerAndMessages((await request(node.url).get(`/chats/${chatId}`).set('cookie', alice.cookie).expect(200)).text, chatId).filter((x) => x === 'new'),
        [],
        'and no divider',
      )
    } finally {
      stream.close()
    }
  })

  test('a flush of more sightings than one statement writes: every row written, and each still counts while it is being written', async () => {
    const chatId = 'many-sightings'
    const people = Array.from({ length: 250 }, (_, i) => `sighting-person-${String(i).padStart(3, '0')}`)
    people.forEach((personId, i) => node.visits.seen(personId, chatId, i + 1))
    const flushing = node.visits.flush()
    // Taken for writing, not written yet: the last person's row goes in the last statement.
    assert.equal(await node.visits.lastSeen(people.at(-1)!, chatId), 250)
    await flushing
    const rows = await node.db.selectFrom('visits').select(['person_id', 'seen_version']).where('chat_id', '=', chatId).orderBy('person_id').execute()
    assert.deepEqual(
      rows.map((row) => [row.person_id, Number(row.seen_version)]),
      people.map((personId, i) => [personId, i + 1]),
    )
    assert.equal(await node.visits.lastSeen(people[0]!, chatId), 1)
  })

  test('without a stream, what was posted while away stays unread', async () => {
    const chatId = 'away'
    const b = as(bob, chatId)
    await b.send('first')
    await openChat(alice, chatId)
    await b.send('while you were away')
    await new Promise((resolve) => setTimeout(resolve, 2_100))
    await waitForProjection(node, chatId, await streamVersion(chatId))
    assert.equal(unreadIn(await home(alice), chatId), 1)
  })
})

describe('your rooms, not everyone\'s', () => {
  test('a room person A used never appears on the home page of person B, who never visited it', async () => {
    const carol = await join('carol')
    const dave = await join('dave')
    await as(carol, 'carols-secret-room').send('just us here')
    await openChat(carol, 'carols-secret-room')
    await as(carol, 'carols-other-room').send('posting makes a room yours')
    await waitForProjection(node, 'carols-other-room', 1)

    const carols = roomsOn(await home(carol)).map((room) => room.chatId)
    assert.ok(carols.includes('carols-secret-room') && carols.includes('carols-other-room'), `carol's rooms: ${carols}`)
    for (const page of [await home(dave), await home(undefined)]) {
      assert.ok(!page.includes('carols-secret-room'), 'not on the home page of someone who never visited')
      assert.ok(!page.includes('carols-other-room'))
      assert.deepEqual(roomsOn(page), [])
    }
    // Not in Dave's search box either: nothing on his home page names them.
    assert.ok(!(await home(dave)).includes('carol'), "nothing of carol's on dave's home page")
  })

  test('a page or a post without a session cookie (curl, a crawler) records no visit: no row per request for someone who never comes back', async () => {
    const chatId = 'cookieless'
    for (let i = 0; i < 5; i++) await request(node.url).post(`/chats/${chatId}/messages`).send({ content: `from curl ${i}` }).expect(201)
    await waitForProjection(node, chatId, 5)
    for (let i = 0; i < 10; i++) await request(node.url).get(`/chats/${chatId}`).expect(200)
    await node.visits.flush()
    const rows = await node.db.selectFrom('visits').select('person_id').where('chat_id', '=', chatId).execute()
    assert.equal(rows.length, 0, `${rows.length} visits written for requests that carried no session`)
    // With the cookie the first page set, the next page is a visit.
    const first = await request(node.url).get(`/chats/${chatId}`).expect(200)
    const cookie = ([first.headers['set-cookie'] ?? []].flat() as string[]).find((line) => line.startsWith(`${SESSION_COOKIE}=`))!.split(';')[0]!
    await request(node.url).get(`/chats/${chatId}`).set('cookie', cookie).expect(200)
    assert.deepEqual(roomsOn((await request(node.url).get('/').set('cookie', cookie).expect(200)).text), [{ chatId, unread: 0 }])
  })

  test('rooms are listed most recently visited first, and a first visit makes a room yours even when it is empty', async () => {
    const erin = await join('erin')
    await openChat(erin, 'room-aa')
    await new Promise((resolve) => setTimeout(resolve, 20))
    await openChat(erin, 'room-bb')
    await new Promise((resolve) => setTimeout(resolve, 20))
    await openChat(erin, 'room-cc')
    assert.deepEqual(roomsOn(await home(erin)).map((room) => room.chatId), ['room-cc', 'room-bb', 'room-aa'])
    await new Promise((resolve) => setTimeout(resolve, 20))
    await openChat(erin, 'room-aa')
    assert.deepEqual(roomsOn(await home(erin)).map((room) => room.chatId), ['room-aa', 'room-cc', 'room-bb'])
  })
})

const join = (name: string) => joinAs(node.url, name)
const as = (person: Person, chatId: string) => asPerson(node.url, person, chatId)

/**
 * Time travel (DESIGN "Time travel", issue 12): `GET /chats/:id?at=V` and
 * `GET /chats/:id/messages?at=V` against a real node and PostgreSQL. Every
 * view of a scripted history is checked against a fold of the events
 * table's rows written here, independently of the app's own fold; the page
 * and the JSON must say the same; a retracted message is retracted in every
 * view of the past, also in those from before it was retracted.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import { sql } from 'kysely'
import request from 'supertest'
import type { ChatCommand } from '../../src/chat/chat.js'
import { as as asPerson, join as joinAs, type Person } from '../support/people.js'
import { startTestNode, waitForProjection, type TestNode } from '../support/node.js'

let node: TestNode
let alice: Person
let bob: Person


before(async () => {
  node = await startTestNode()
  alice = await join('alice')
  bob = await join('bob')
})
after(() => node.close())



interface MessageView {
  chatId: string
  messageId: number
  version: number
  sender: string
  content: string | null
  sentAt: string
  editedAt: string | null
  retracted: boolean
  reactions: Record<string, number>
}

interface EventRow {
  stream_version: number
  event_type: string
  data: Record<string, unknown>
}

async function eventRows(chatId: string): Promise<EventRow[]> {
  const { rows } = await sql<EventRow>`select stream_version::int as stream_version, event_type, data from events where stream_id = ${`chat-${chatId}`} order by stream_version`.execute(node.db)
  return rows
}

/**
 * The chat as of version `at`, folded here from the events table's rows (not
 * with the app's fold): messages sent at or before `at`, with their latest
 * edit and the reactions standing at `at`; a message retracted at any
 * version, before or after `at`, shows no content and no reactions.
 */
function foldAt(chatId: string, rows: EventRow[], at: number): MessageView[] {
  const retractedEver = new Set(rows.filter((row) => row.event_type === 'MessageRetracted').map((row) => Number(row.data.messageId)))
  const views = new Map<number, MessageView & { people: Map<string, Set<string>> }>()
  for (const row of rows) {
    if (row.stream_version > at) break
    const { data } = row
    if (row.event_type === 'MessageSent') {
      views.set(row.stream_version, {
        chatId,
        messageId: row.stream_version,
        version: row.stream_version,
        sender: String(data.sender),
        content: String(data.content),
        sentAt: new Date(String(data.sentAt)).toISOString(),
        editedAt: null,
        retracted: false,
        reactions: {},
        people: new Map(),
      })
      continue
    }
    const view = views.get(Number(data.messageId))
    assert.ok(view, `event ${row.stream_version} names a message sent before it`)
    if (row.event_type === 'MessageEdited') {
      view.content = String(data.content)
      view.editedAt = new Date(String(data.editedAt)).toISOString()
    } else if (row.event_type === 'ReactionAdded') {
      const people = view.people.get(String(data.emoji)) ?? new Set()
      people.add(String(data.by))
      view.people.set(String(data.emoji), people)
    } else if (row.event_type === 'ReactionRemoved') {
      view.people.get(String(data.emoji))?.delete(String(data.by))
    }
  }
  return [...views.values()]
    .sort((a, b) => a.messageId - b.messageId)
    .map(({ people, ...view }) => {
      const reactions: Record<string, number> = {}
      for (const [emoji, who] of people) if (who.size > 0) reactions[emoji] = who.size
      if (!retractedEver.has(view.messageId)) return { ...view, reactions }
      return { ...view, content: null, retracted: true, reactions: {} }
    })
}

async function jsonAt(chatId: string, at: number, query = ''): Promise<{ chatId: string; at: number; messages: MessageView[] }> {
  const res = await request(node.url).get(`/chats/${chatId}/messages?at=${at}${query}`).set('accept', 'application/json').expect(200)
  assert.match(String(res.headers['content-type']), /application\/json/)
  return res.body
}

async function pageAt(chatId: string, at: number): Promise<string> {
  const res = await request(node.url).get(`/chats/${chatId}?at=${at}`).set('cookie', alice.cookie).expect(200)
  assert.match(String(res.headers['content-type']), /text\/html/)
  return res.text
}

function unescapeHtml(text: string): string {
  return text.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&#34;|&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, '&')
}

/** What a page shows of each message, in the shape of the message JSON. */
function messagesOnPage(html: string, chatId: string): (Omit<MessageView, 'editedAt'> & { edited: boolean })[] {
  const articles = [...html.matchAll(/<article class="message( retracted)?" id="message-([a-z0-9_-]+)-(\d+)"[\s\S]*?<\/article>/g)]
  return articles.map(([article, retracted, chat, id]) => {
    assert.equal(chat, chatId)
    const messageId = Number(id)
    assert.ok(article.includes(`href="/chats/${chatId}?at=${messageId}#message-${chatId}-${messageId}"`), `message ${messageId}'s time links to the chat as of it`)
    const reactions: Record<string, number> = {}
    for (const [, emoji, count] of article.matchAll(/aria-label="(\S+) (\d+)"/g)) if (Number(count) > 0) reactions[emoji!] = Number(count)
    const content = /<p class="content">([\s\S]*?)<\/p>/.exec(article)?.[1]
    return {
      chatId,
      messageId,
      version: messageId,
      sender: unescapeHtml(/<span class="sender">([\s\S]*?)<\/span>/.exec(article)![1]!),
      content: retracted ? null : unescapeHtml(content ?? ''),
      sentAt: /<time datetime="([^"]+)"/.exec(article)![1]!,
      edited: /class="edited"/.test(article),
      retracted: Boolean(retracted),
      reactions,
    }
  })
}

/** The JSON view without editedAt's value (a page says "edited", not when). */
function asOnPage({ editedAt, ...view }: MessageView) {
  return { ...view, edited: editedAt !== null && !view.retracted }
}

describe('a scripted history, at each of its versions', () => {
  const chatId = 'tt'
  let rows: EventRow[]
  let secret: number

  before(async () => {
    const a = as(alice, chatId)
    const b = as(bob, chatId)
    const first = await a.send('hello wrld') // 1
    await a.edit(first, 'hello world') // 2
    const reply = await b.send('hi alice, <b>bold</b> & "quoted"') // 3
    await b.react(first, '👍') // 4
    await a.react(reply, '🎉') // 5
    secret = await a.send('a secret') // 6
    await b.react(secret, '😂') // 7
    await a.edit(secret, 'a bigger secret') // 8
    await a.retract(secret) // 9
    await a.send('after the secret') // 10
    await b.edit(reply, 'hi alice!') // 11
    await b.react(first, '👍') // 12: toggled off
    await a.react(first, '👍') // 13
    const head = await b.send('last word') // 14
    assert.equal(head, 14)
    await waitForProjection(node, chatId, head)
    rows = await eventRows(chatId)
    assert.deepEqual(
      rows.map((row) => row.event_type),
      ['MessageSent', 'MessageEdited', 'MessageSent', 'ReactionAdded', 'ReactionAdded', 'MessageSent', 'ReactionAdded', 'MessageEdited', 'MessageRetracted', 'MessageSent', 'MessageEdited', 'ReactionRemoved', 'ReactionAdded', 'MessageSent'],
    )
  })

  test('the JSON at every version equals a fold of the events up to that version', async () => {
    for (let at = 1; at <= rows.length; at++) {
      const body = await jsonAt(chatId, at)
      assert.equal(body.chatId, chatId)
      assert.equal(body.at, at)
      assert.deepEqual(body.messages, foldAt(chatId, rows, at), `#${chatId} as of version ${at}`)
    }
  })

  test('the fold is the history as it happened: edits, reactions and removals show at their versions, not before', async () => {
    const content = async (at: number, id: number) => (await jsonAt(chatId, at)).messages.find((m) => m.messageId === id)
    assert.equal((await content(1, 1))?.content, 'hello wrld')
    assert.equal((await content(1, 1))?.editedAt, null)
    assert.equal((await content(2, 1))?.content, 'hello world')
    assert.deepEqual((await content(3, 1))?.reactions, {})
    assert.deepEqual((await content(4, 1))?.reactions, { '👍': 1 })
    assert.deepEqual((await content(12, 1))?.reactions, {})
    assert.deepEqual((await content(13, 1))?.reactions, { '👍': 1 })
    assert.equal((await content(10, 3))?.content, 'hi alice, <b>bold</b> & "quoted"')
    assert.equal((await content(11, 3))?.content, 'hi alice!')
    assert.deepEqual((await jsonAt(chatId, 5)).messages.map((m) => m.messageId), [1, 3])
    assert.equal(await content(5, secret), undefined, 'a message appears at the version it was sent, not before')
  })

  test('a retracted message is retracted in every view of the past, also before its retraction', async () => {
    for (let at = secret; at <= rows.length; at++) {
      for (const body of [await jsonAt(chatId, at), { messages: messagesOnPage(await pageAt(chatId, at), chatId) }]) {
        const message = body.messages.find((m) => m.messageId === secret)
        assert.ok(message, `message ${secret} is listed at ${at}`)
        assert.equal(message.retracted, true, `retracted at ${at}`)
        assert.equal(message.content, null)
        assert.deepEqual(message.reactions, {}, 'its reactions went with it')
      }
      const html = await pageAt(chatId, at)
      assert.ok(!html.includes('a secret') && !html.includes('a bigger secret'), `no page as of ${at} shows what was taken back`)
      const res = await request(node.url).get(`/chats/${chatId}/messages?at=${at}`).set('accept', 'application/json').expect(200)
      assert.ok(!res.text.includes('"a secret"') && !res.text.includes('"a bigger secret"'), `no JSON as of ${at} shows what was taken back`)
    }
  })

  test('the page at every version shows what the JSON says', async () => {
    for (let at = 1; at <= rows.length; at++) {
      const json = (await jsonAt(chatId, at)).messages.map(asOnPage)
      assert.deepEqual(messagesOnPage(await pageAt(chatId, at), chatId), json, `page and JSON of #${chatId} as of ${at}`)
    }
  })

  test('the page is read-only: a banner with "back to live", no composer, no live stream', async () => {
    const html = await pageAt(chatId, 5)
    const banner = /<p class="banner"[^>]*>([\s\S]*?)<\/p>/.exec(html)
    assert.ok(banner, 'a banner says which moment this is')
    assert.match(banner[1]!, /#tt as of/)
    assert.match(banner[1]!, /<time datetime="[^"]+"/)
    assert.match(banner[1]!, /<a href="\/chats\/tt">back to live<\/a>/)
    assert.ok(!html.includes('id="composer"'), 'no composer')
    assert.ok(!html.includes('id="content"'), 'no text box to write in')
    assert.ok(!html.includes('hx-sse:connect'), 'no live stream')
    assert.ok(!html.includes('/events'), 'nothing connects to the event stream')
    // The banner's time is the time of version 5 (a reaction), by the clock of the command that made it.
    const reactedAt = new Date(String(rows[4]!.data.reactedAt)).toISOString()
    assert.ok(banner[1]!.includes(`datetime="${reactedAt}"`), `banner time ${banner[1]} is version 5's ${reactedAt}`)
    // The live page, for contrast, has both.
    const live = await request(node.url).get(`/chats/${chatId}`).set('cookie', alice.cookie).expect(200)
    assert.ok(live.text.includes('id="composer"') && live.text.includes('hx-sse:connect'))
  })

  test('the past has nothing to press: no forms, no Edit or Retract; the reactions of then are shown, as they stood', async () => {
    // Version 4: message 1 has the 👍 of version 4 (alice may edit her message 1 now; not from the past).
    for (const html of [await pageAt(chatId, 4), (await request(node.url).get(`/chats/${chatId}/messages?at=4&before=3`).set('cookie', alice.cookie).set('hx-request', 'true').expect(200)).text]) {
      const articles = html.match(/<article[\s\S]*?<\/article>/g) ?? []
      assert.ok(articles.length > 0)
      for (const article of articles) {
        assert.ok(!/<form|<button|\/edit"|\/retraction|\/reactions/.test(article), `a past message with something to press: ${article}`)
      }
      const first = articles.find((article) => article.includes(`id="message-${chatId}-1"`))!
      assert.match(first, /<span class="reaction chosen"[^>]* aria-label="👍 1">👍<span class="count">1<\/span><\/span>/)
    }
  })

  test("an edited message's history links each version to the chat as of it, where that version is what it says", async () => {
    const reply = 3
    const html = (await request(node.url).get(`/chats/${chatId}/messages/${reply}/history`).expect(200)).text
    const links = [...html.matchAll(/<a class="when" href="([^"]+)"/g)].map((match) => unescapeHtml(match[1]!))
    assert.deepEqual(links, [`/chats/${chatId}?at=3#message-${chatId}-3`, `/chats/${chatId}?at=11#message-${chatId}-3`])
    const contents = []
    for (const link of links) {
      const page = await request(node.url).get(link.split('#')[0]!).expect(200)
      contents.push(messagesOnPage(page.text, chatId).find((m) => m.messageId === reply)?.content)
    }
    assert.deepEqual(contents, ['hi alice, <b>bold</b> & "quoted"', 'hi alice!'])
  })

  test('a version beyond the head is 404; version 0, negative, fractional or non-numeric versions are refused with a 4xx', async () => {
    for (const path of [`/chats/${chatId}?at=15`, `/chats/${chatId}/messages?at=15`, `/chats/${chatId}?at=999999999`, '/chats/never-used?at=1', '/chats/never-used/messages?at=1']) {
      const res = await request(node.url).get(path).set('accept', path.includes('/messages') ? 'application/json' : 'text/html')
      assert.equal(res.status, 404, `${path}: ${res.status}`)
    }
    for (const at of ['0', '-1', '1.5', 'abc', '1e3', '%20', '99999999999999999999']) {
      for (const path of [`/chats/${chatId}?at=${at}`, `/chats/${chatId}/messages?at=${at}`]) {
        const res = await request(node.url).get(path).set('accept', 'application/json')
        assert.ok(res.status >= 400 && res.status < 500, `${path}: ${res.status} ${res.text}`)
        assert.equal(typeof res.body.error, 'string', `${path} says why: ${res.text}`)
      }
    }
    const repeated = await request(node.url).get(`/chats/${chatId}?at=1&at=2`)
    assert.equal(repeated.status, 400, 'a repeated at= is refused')
  })

  test('time travel reads the log, not the read model: tampering with the read model changes no view of the past', async () => {
    const expected = await jsonAt(chatId, 11)
    const saved = await node.db.selectFrom('messages').select(['message_id', 'content']).where('chat_id', '=', chatId).execute()
    await sql`update messages set content = 'tampered' where chat_id = ${chatId} and content is not null`.execute(node.db)
    try {
      assert.deepEqual(await jsonAt(chatId, 11), expected)
      assert.ok(!(await pageAt(chatId, 11)).includes('tampered'))
    } finally {
      for (const row of saved) await node.db.updateTable('messages').set({ content: row.content }).where('chat_id', '=', chatId).where('message_id', '=', row.message_id).execute()
    }
  })
})

describe('older pages within time travel', () => {
  const chatId = 'long-past'
  let rows: EventRow[]

  before(async () => {
    // 70 messages from 4 people (the rate limit is per person), an edit, a retraction and reactions among them.
    const people = Array.from({ length: 4 }, (_, i) => ({ personId: `person-${i}-${randomUUID()}`, name: `p${i}` }))
    const handle = (command: ChatCommand) => node.chats.handle(command)
    const meta = () => ({ now: new Date() })
    for (let i = 1; i <= 70; i++) {
      const who = people[i % 4]!
      await handle({ type: 'SendMessage', data: { chatId, personId: who.personId, sender: who.name, content: `message number ${i}`, commandId: randomUUID() }, metadata: meta() })
      if (i === 20) await handle({ type: 'EditMessage', data: { chatId, personId: people[3 % 4]!.personId, messageId: 3, content: 'message three, edited', commandId: randomUUID() }, metadata: meta() })
      if (i === 30) await handle({ type: 'ToggleReaction', data: { chatId, personId: people[0]!.personId, name: 'p0', messageId: 5, emoji: '🙏', commandId: randomUUID() }, metadata: meta() })
      if (i === 60) await handle({ type: 'RetractMessage', data: { chatId, personId: people[2 % 4]!.personId, messageId: 2, commandId: randomUUID() }, metadata: meta() })
    }
    rows = await eventRows(chatId)
    assert.equal(rows.length, 73)
    await waitForProjection(node, chatId, rows.length)
  })

  test('?at=V&before=M pages back through the past, 50 at a time, and together the pages equal the fold at V', async () => {
    for (const at of [rows.length, 65, 30]) {
      const expected = foldAt(chatId, rows, at)
      const pages: MessageView[][] = []
      let query = ''
      for (;;) {
        const body = await jsonAt(chatId, at, query)
        assert.equal(body.at, at)
        pages.unshift(body.messages)
        assert.ok(body.messages.length <= 50, 'a page holds at most 50 messages')
        if (body.messages.length < 50) break
        query = `&before=${body.messages[0]!.messageId}`
        if (pages.length > 3) assert.fail('paging does not end')
      }
      const all = pages.flat()
      // The last page may be empty (exactly 50 before it): drop nothing, compare everything.
      assert.deepEqual(all, expected, `the pages of #${chatId} as of ${at}`)
    }
  })

  test('the page of the past links to its older messages, which open as a page without JavaScript and as a fragment with htmx', async () => {
    const at = 65
    const expected = foldAt(chatId, rows, at)
    const newest = expected.slice(-50)
    const html = await pageAt(chatId, at)
    assert.deepEqual(messagesOnPage(html, chatId).map((m) => m.messageId), newest.map((m) => m.messageId))
    const link = /<a class="older" href="([^"]+)"/.exec(html)
    assert.ok(link, 'a link to older messages')
    const href = unescapeHtml(link[1]!)
    assert.equal(href, `/chats/${chatId}/messages?at=${at}&before=${newest[0]!.messageId}`)
    assert.match(html, new RegExp(`hx-get="${link[1]!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"`), 'htmx fetches the same link')

    const older = expected.slice(0, -50)
    const page = await request(node.url).get(href).set('cookie', alice.cookie).expect(200)
    assert.match(page.text, /<p class="banner"/, 'without JavaScript the older messages open as a page of the past, with its banner')
    assert.ok(!page.text.includes('id="composer"') && !page.text.includes('hx-sse:connect'))
    assert.deepEqual(messagesOnPage(page.text, chatId), older.map(asOnPage))

    const fragment = await request(node.url).get(href).set('cookie', alice.cookie).set('hx-request', 'true').expect(200)
    assert.ok(!fragment.text.includes('<main'), 'htmx gets a fragment to swap in place')
    assert.deepEqual(messagesOnPage(fragment.text, chatId), older.map(asOnPage))
    assert.ok(!/<a class="older"/.test(fragment.text), 'the first page of the past has no older link')
  })

  test('a view of the past before the retraction still shows the retracted message as retracted, on every page', async () => {
    const body = await jsonAt(chatId, 25, '&before=10')
    const two = body.messages.find((m) => m.messageId === 2)
    assert.ok(two)
    assert.equal(two.retracted, true)
    assert.equal(two.content, null)
    assert.equal(body.messages.find((m) => m.messageId === 3)?.content, 'message three, edited')
    assert.equal((await jsonAt(chatId, 20)).messages.find((m) => m.messageId === 3)?.content, 'message number 3')
    assert.equal((await jsonAt(chatId, 21)).messages.find((m) => m.messageId === 3)?.content, 'message three, edited')
  })
})

const join = (name: string) => joinAs(node.url, name)
const as = (person: Person, chatId: string) => asPerson(node.url, person, chatId)

/**
 * Two nodes on one database, twenty people writing into one chat at once:
 * sends, edits of their own messages, retractions and reactions, spread over
 * both nodes. Subscribers on both nodes, some dropping mid-way and resuming
 * with Last-Event-ID (on the other node, as behind a load balancer), some
 * joining late. What must hold (DESIGN, "Every change is an event"):
 * - every subscriber receives ids 1..N exactly once, in order (N = the chat's
 *   version);
 * - once quiet, the last frame each subscriber got for a message equals that
 *   message's fragment on a fresh page load, on either node;
 * - a rebuild of the projection from the log equals the live read model.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, test } from 'node:test'
import request from 'supertest'
import { messagesProjection } from '../../src/chat/messages-projection.js'
import { REACTIONS } from '../../src/chat/chat.js'
import { SESSION_COOKIE } from '../../src/http/session.js'
import { Projector } from '../../src/projector/projector.js'
import { SseClient, type SseMessage } from '../support/sse.js'
import { startTestNode, waitForProjection, type TestNode } from '../support/node.js'

const CHAT = 'mixed'
const WRITERS = 20
const COMMANDS_PER_WRITER = 14

let one: TestNode
let two: TestNode
before(async () => {
  one = await startTestNode()
  two = await startTestNode({ databaseUrl: one.databaseUrl })
})
after(async () => {
  await two.close()
  await one.close()
})

/** A reader's tab: it keeps every frame it got, across connections, and resumes with Last-Event-ID like a browser. */
class Tab {
  readonly frames: SseMessage[] = []
  readonly connections: string[] = []
  private client: SseClient | undefined
  private taken = 0

  constructor(readonly name: string) {}

  async connect(base: string): Promise<void> {
    const lastId = this.frames.at(-1)?.id
    const url = `${base}/chats/${CHAT}/events${lastId ? '' : '?after=0'}`
    const client = await SseClient.open(url, lastId ? { 'Last-Event-ID': lastId } : {})
    assert.equal(client.status, 200)
    this.connections.push(`${base} after ${lastId ?? 0}`)
    this.client = client
    this.taken = 0
  }

  /** Drops the connection mid-stream and comes back on `base` with the last id it got. */
  async reconnect(base: string): Promise<void> {
    this.client?.close()
    this.collect()
    this.client = undefined
    await this.connect(base)
  }

  /** Every frame so far: those of earlier connections and the current one's. */
  collect(): SseMessage[] {
    if (this.client) for (; this.taken < this.client.messages.length; this.taken++) this.frames.push(this.client.messages[this.taken]!)
    return this.frames
  }

  async waitFor(count: number, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (this.collect().length < count) {
      if (Date.now() > deadline) throw new Error(`${this.name} got ${this.frames.length} of ${count} frames (connections: ${this.connections.join('; ')})`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  close(): void {
    this.collect()
    this.client?.close()
  }
}

/** A small seeded PRNG, so a failing mix can be run again. */
function random(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

async function chatVersion(): Promise<number> {
  const row = await one.db.selectFrom('streams').select('version').where('stream_id', '=', `chat-${CHAT}`).executeTakeFirst()
  return Number(row?.version ?? 0)
}

const ARTICLE = new RegExp(`<article\\b[^>]*\\bid="(message-${CHAT}-\\d+)"[^>]*>[\\s\\S]*?</article>`, 'g')

/** Every message's fragment as a fresh page load shows it: the chat page, then older pages back to the first message. */
async function freshFragments(node: TestNode): Promise<Map<string, string>> {
  const fragments = new Map<string, string>()
  const take = (html: string) => {
    const ids: number[] = []
    for (const match of html.matchAll(ARTICLE)) {
      assert.ok(!fragments.has(match[1]!), `${match[1]} shown once`)
      fragments.set(match[1]!, match[0])
      ids.push(Number(match[1]!.slice(`message-${CHAT}-`.length)))
    }
    return ids
  }
  let ids = take((await request(node.url).get(`/chats/${CHAT}`).expect(200)).text)
  while (ids.length > 0 && Math.min(...ids) > 1) {
    // The "older" fragment, as "Load older" fetches it (by the first id shown: the link's own before= is not relied on).
    ids = take((await request(node.url).get(`/chats/${CHAT}/messages?before=${Math.min(...ids)}`).set('hx-request', 'true').expect(200)).text)
  }
  return fragments
}

async function readModel(node: TestNode) {
  const messages = await node.db.selectFrom('messages').selectAll().orderBy('chat_id').orderBy('message_id').execute()
  const changes = await node.db.selectFrom('chat_changes').selectAll().orderBy('chat_id').orderBy('version').execute()
  const chats = await node.db.selectFrom('chats').selectAll().orderBy('chat_id').execute()
  return { messages, changes, chats }
}

test(`2 nodes × ${WRITERS} writers mixing sends, edits, retractions and reactions: every subscriber gets 1..N once, in order, and ends where a fresh page is`, async () => {
  const nodes = [one, two]
  const seed = Number(process.env.MIXED_SEED ?? Date.now() % 1_000_000)
  const stats = { sent: 0, edited: 0, retracted: 0, reacted: 0, refusedRetracted: 0 }

  // Six tabs from the start, three per node; two more join mid-way.
  const tabs = Array.from({ length: 6 }, (_, i) => new Tab(`tab ${i}`))
  await Promise.all(tabs.map((tab, i) => tab.connect(nodes[i % 2]!.url)))

  // Twenty people. Names repeat (two people per name): names are labels, the session's person is who acts.
  const cookies = await Promise.all(
    Array.from({ length: WRITERS }, async (_, i) => {
      const res = await request(nodes[i % 2]!.url).post('/session').type('form').send({ name: `writer ${i % 10}` }).expect(303)
      const cookie = ([res.headers['set-cookie'] ?? []].flat() as string[]).find((line) => line.startsWith(`${SESSION_COOKIE}=`))
      assert.ok(cookie)
      return cookie.split(';')[0]!
    }),
  )
  const messageIds: number[] = []

  const writer = async (i: number) => {
    const next = random(seed * 31 + i)
    const own: number[] = []
    for (let k = 0; k < COMMANDS_PER_WRITER; k++) {
      const node = nodes[(i + k) % 2]!
      const post = (path: string) => request(node.url).post(`/chats/${CHAT}/messages${path}`).set('cookie', cookies[i]!)
      const roll = next()
      if (own.length === 0 || roll < 0.35) {
        const res = await post('').send({ content: `w${i} says ${k}`, commandId: randomUUID() })
        assert.equal(res.status, 201, res.text)
        own.push(res.body.version)
        messageIds.push(res.body.version)
        stats.sent++
      } else if (roll < 0.6) {
        const id = own[Math.floor(next() * own.length)]!
        // Several lines and markup: frames carry one data: line per line, and everything escaped.
        const res = await post(`/${id}/edits`).send({ content: `w${i} edits ${k}\nsecond line <b>&</b>`, commandId: randomUUID() })
        assert.equal(res.status, 200, res.text)
        stats.edited++
      } else if (roll < 0.9) {
        const id = messageIds[Math.floor(next() * messageIds.length)]!
        const res = await post(`/${id}/reactions`).send({ emoji: REACTIONS[Math.floor(next() * REACTIONS.length)], commandId: randomUUID() })
        if (res.status === 422 && /retracted/.test(res.body.error)) stats.refusedRetracted++
        else {
          assert.equal(res.status, 200, res.text)
          stats.reacted++
        }
      } else {
        const id = own.splice(Math.floor(next() * own.length), 1)[0]!
        const res = await post(`/${id}/retraction`).send({ commandId: randomUUID() })
        assert.equal(res.status, 200, res.text)
        stats.retracted++
      }
    }
  }

  // Meanwhile tabs drop and resume, on the other node, and latecomers join.
  const untilVersion = async (version: number) => {
    while ((await chatVersion()) < version) await new Promise((resolve) => setTimeout(resolve, 10))
  }
  const total = WRITERS * COMMANDS_PER_WRITER
  const churn = async () => {
    await untilVersion(Math.floor(total * 0.2))
    await Promise.all([tabs[2]!.reconnect(two.url), tabs[3]!.reconnect(one.url)])
    await untilVersion(Math.floor(total * 0.4))
    const late = [new Tab('late 0'), new Tab('late 1')]
    await Promise.all(late.map((tab, i) => tab.connect(nodes[i]!.url)))
    tabs.push(...late)
    await untilVersion(Math.floor(total * 0.6))
    await Promise.all([tabs[2]!.reconnect(one.url), tabs[4]!.reconnect(two.url), tabs[6]!.reconnect(two.url)])
    await untilVersion(Math.floor(total * 0.8))
    await Promise.all([tabs[5]!.reconnect(one.url), tabs[7]!.reconnect(one.url), tabs[3]!.reconnect(two.url)])
  }

  const started = Date.now()
  await Promise.all([...Array.from({ length: WRITERS }, (_, i) => writer(i)), churn()])
  const n = await chatVersion()
  const message = `seed ${seed} (MIXED_SEED=${seed} to repeat): ${JSON.stringify(stats)}, N=${n}, written in ${Date.now() - started} ms`
  assert.equal(n, stats.sent + stats.edited + stats.retracted + stats.reacted, `every accepted command is one version; ${message}`)
  assert.ok(stats.edited > 20 && stats.reacted > 20 && stats.retracted > 5, `premise: a real mix; ${message}`)

  // One more drop after the writing, resuming from wherever it was.
  await tabs[0]!.reconnect(two.url)

  const expected = Array.from({ length: n }, (_, i) => i + 1)
  for (const tab of tabs) {
    await tab.waitFor(n)
    await new Promise((resolve) => setTimeout(resolve, 50))
    assert.deepEqual(tab.collect().map((frame) => Number(frame.id)), expected, `${tab.name} (${tab.connections.join('; ')}): ids 1..${n} once, in order; ${message}`)
  }
  assert.ok(tabs.some((tab) => tab.connections.length >= 3), 'premise: tabs resumed mid-way')

  await waitForProjection(one, CHAT, n)
  await waitForProjection(two, CHAT, n)
  const pages = [await freshFragments(one), await freshFragments(two)]
  assert.equal(pages[0]!.size, stats.sent, 'every message is on the pages, retracted ones as placeholders')
  assert.deepEqual([...pages[1]!], [...pages[0]!], 'both nodes render the same page')
  assert.ok([...pages[0]!.values()].some((html) => html.includes('This message was retracted.')), 'premise: retracted messages are shown')

  for (const tab of tabs) {
    const last = new Map<string, string>()
    for (const frame of tab.frames) {
      const ids = [...frame.data.matchAll(ARTICLE)].map((match) => match[1]!)
      assert.equal(ids.length, 1, `${tab.name}: frame ${frame.id} carries one message: ${frame.data}`)
      last.set(ids[0]!, frame.data)
    }
    assert.deepEqual([...last.keys()].sort(), [...pages[0]!.keys()].sort(), `${tab.name} got a frame for every message`)
    for (const [elementId, fragment] of pages[0]!) assert.equal(last.get(elementId), fragment, `${tab.name}: the last frame of ${elementId} is the fresh page's fragment; ${message}`)
    tab.close()
  }

  // The projection rebuilt from the log is the live read model.
  const live = await readModel(one)
  assert.equal(live.changes.length, n)
  assert.equal(Number(live.chats[0]!.message_count), stats.sent - stats.retracted)
  await new Projector({ db: one.db, projection: messagesProjection }).rebuild()
  const rebuilt = await readModel(one)
  // Table by table, row by row, so a difference reads as one row rather than three tables.
  assert.equal(rebuilt.messages.length, live.messages.length)
  for (const [i, row] of live.messages.entries()) assert.deepEqual(rebuilt.messages[i], row, `rebuild equals the live row of message ${row.message_id}; ${message}`)
  assert.deepEqual(rebuilt.changes, live.changes, `rebuild equals the live chat_changes; ${message}`)
  assert.deepEqual(rebuilt.chats, live.chats, `rebuild equals the live chats row; ${message}`)
})

test('a rebuild equals the live chats row also when send times are not in version order (as under group commit)', async () => {
  // A command's time is taken when it arrives; one that waited longer for its
  // transaction commits after a later-arriving one. Here, deterministically:
  // version 1 is sent "later" than version 2, in separate projection batches.
  const chatId = 'clock-order'
  const send = (content: string, now: Date) =>
    one.chats.handle({ type: 'SendMessage', data: { chatId, personId: `person-${content}`, sender: content, content, commandId: randomUUID() }, metadata: { now } })
  const t = Date.now()
  await send('arrived second, committed first', new Date(t + 1_000))
  await waitForProjection(one, chatId, 1)
  await send('arrived first, committed second', new Date(t))
  await waitForProjection(one, chatId, 2)
  const live = await readModel(one)
  await new Projector({ db: one.db, projection: messagesProjection }).rebuild()
  const rebuilt = await readModel(one)
  const row = (model: typeof live) => model.chats.find((chat) => chat.chat_id === chatId)
  assert.deepEqual(row(rebuilt), row(live), 'the chats row (last_sender, last_sent_at) does not depend on how the log was cut into batches')
  assert.deepEqual(rebuilt, live)
})

test('across the two nodes: a command sent to both at once is one event with one answer, and one person\'s rate counts on both', async () => {
  const chatId = 'both-nodes'
  const res = await request(one.url).post('/session').type('form').send({ name: 'twice' }).expect(303)
  const cookie = ([res.headers['set-cookie'] ?? []].flat() as string[]).find((line) => line.startsWith(`${SESSION_COOKIE}=`))!.split(';')[0]!
  const post = (node: TestNode, path: string, body: object) => request(node.url).post(`/chats/${chatId}/messages${path}`).set('cookie', cookie).send(body)
  const twice = async (path: string, body: object) => {
    const answers = await Promise.all([post(one, path, body), post(two, path, body)])
    assert.deepEqual(answers[1]!.body, answers[0]!.body, `${path}: the same answer from both nodes`)
    assert.ok(answers[0]!.status < 300, answers[0]!.text)
    assert.equal(answers[1]!.status, answers[0]!.status)
    return answers[0]!.body
  }
  for (let round = 0; round < 5; round++) {
    const { version: id } = await twice('', { content: `round ${round}`, commandId: randomUUID() })
    await twice(`/${id}/edits`, { content: `round ${round}, edited`, commandId: randomUUID() })
    await twice(`/${id}/reactions`, { emoji: '🎉', commandId: randomUUID() })
  }
  assert.equal(await versionOf(chatId), 15, 'one event per command, not per node')

  // 15 commands so far; 15 more, alternating nodes, then the 31st is refused by either node.
  for (let i = 0; i < 15; i++) await post([one, two][i % 2]!, '/1/reactions', { emoji: '👍', commandId: randomUUID() }).expect(200)
  for (const node of [one, two]) {
    const refused = await post(node, '', { content: 'too many', commandId: randomUUID() })
    assert.equal(refused.status, 429, refused.text)
  }
  assert.equal(await versionOf(chatId), 30)
})

async function versionOf(chatId: string): Promise<number> {
  const row = await one.db.selectFrom('streams').select('version').where('stream_id', '=', `chat-${chatId}`).executeTakeFirst()
  return Number(row?.version ?? 0)
}

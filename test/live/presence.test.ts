import assert from 'node:assert/strict'
import http from 'node:http'
import { after, afterEach, before, describe, test } from 'node:test'
import request from 'supertest'
import { freshDatabase, type TestDatabase } from '../support/database.js'
import { scrape, valueOf } from '../support/metrics.js'
import { startTestNode, type TestNode } from '../support/node.js'
import { startProcessNode, type ProcessNode } from '../support/process-node.js'

/*
 * Who is here and who is typing, across two real app nodes on one real
 * PostgreSQL (and a real app process for SIGKILL), with the real defaults:
 * joins and leaves are flushed within 300 ms, a leave waits 2.5 s of grace,
 * typing lasts 5 s, a node silent 20 s is dead (heartbeats every 5 s), at
 * most one presence frame per chat per second. Latencies are printed with
 * `[presence]` so a run shows the figures.
 */

let database: TestDatabase
let a: TestNode
let b: TestNode
const streams: RawStream[] = []
before(async () => {
  database = await freshDatabase()
  a = await startTestNode({ databaseUrl: database.url })
  b = await startTestNode({ databaseUrl: database.url })
})
// Every stream a test opened is closed after it, passed or failed, so the next test's people are its own.
afterEach(() => {
  for (const stream of streams.splice(0)) stream.close()
})
after(async () => {
  await Promise.all([a?.stop(), b?.stop()])
  await database?.drop()
})

function report(what: string, ms: number): void {
  console.log(`[presence] ${what}: ${Math.round(ms)} ms`)
}

/** One SSE frame as it came over the wire: its own `id:` field (undefined when it has none) and its data. */
interface Frame {
  id: string | undefined
  data: string
  at: number
}

/** An SSE reader keeping the raw frames, so a test sees whether a frame itself carried an `id:` line. */
class RawStream {
  readonly frames: Frame[] = []
  status = 0
  done = false
  /** What a browser would send as Last-Event-ID: the last `id:` seen (a frame without one leaves it). */
  lastEventId = ''
  private request!: http.ClientRequest

  static open(url: string, headers: Record<string, string> = {}): Promise<RawStream> {
    const stream = new RawStream()
    streams.push(stream)
    return new Promise((resolve, reject) => {
      stream.request = http.get(url, { headers: { accept: 'text/event-stream', ...headers }, agent: false }, (res) => {
        stream.status = res.statusCode ?? 0
        res.setEncoding('utf8')
        let buffer = ''
        res.on('data', (chunk: string) => {
          buffer += chunk
          const blocks = buffer.split('\n\n')
          buffer = blocks.pop() ?? ''
          for (const block of blocks) {
            let id: string | undefined
            const data: string[] = []
            for (const line of block.split('\n')) {
              if (line.startsWith('id:')) id = line.slice(3).trim()
              else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''))
            }
            if (id !== undefined) stream.lastEventId = id
            if (data.length > 0) stream.frames.push({ id, data: data.join('\n'), at: performance.now() })
          }
        })
        res.on('close', () => (stream.done = true))
        resolve(stream)
      })
      stream.request.on('error', (error) => {
        stream.done = true
        if (stream.status === 0) reject(error)
      })
    })
  }

  /** Frames with who is here (the #people fragment). */
  get presence(): Frame[] {
    return this.frames.filter((frame) => frame.data.includes('id="people"'))
  }

  /** Frames of the chat's log: messages and their changes. */
  get messages(): Frame[] {
    return this.frames.filter((frame) => frame.data.includes('id="message-'))
  }

  /** The people the latest presence frame shows (undefined before the first). */
  get here(): Shown | undefined {
    const last = this.presence.at(-1)
    return last && shown(last.data)
  }

  async waitFor(predicate: (stream: RawStream) => boolean, timeoutMs: number, what: string): Promise<number> {
    const started = performance.now()
    while (!predicate(this)) {
      if (performance.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last presence frame: ${this.presence.at(-1)?.data ?? 'none'}`)
      if (this.done) throw new Error(`stream ended before ${what}`)
      await sleep(20)
    }
    return performance.now() - started
  }

  close(): void {
    this.request?.destroy()
  }
}

interface Shown {
  names: string[]
  others: number
  typing: string
}

/** What a #people fragment says: the names, the count of others, the typing line. */
function shown(html: string): Shown {
  const here = /<p class="here">(.*?)<\/p>/s.exec(html)?.[1] ?? ''
  const list = /aria-hidden="true">Here:<\/span> (.*)$/s.exec(here)?.[1] ?? ''
  const others = /(?:^| and )(\d+) (?:others?|readers?)$/.exec(list)
  const names = (others ? list.slice(0, others.index) : list).split(', ').filter(Boolean)
  const typing = /<p class="typing"[^>]*>(.*?)<\/p>/s.exec(html)?.[1] ?? ''
  return { names, others: others ? Number(others[1]) : 0, typing }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** A person with a name: the signed session cookie the app sets (any node: they share the secret). */
async function person(node: { url: string }, name: string): Promise<string> {
  const res = await request(node.url).post('/session').type('form').send({ name }).expect(303)
  const cookie = ([] as string[]).concat(res.headers['set-cookie'] ?? []).find((c) => c.startsWith('live_tea_session='))
  assert.ok(cookie, 'a session cookie')
  return cookie.split(';')[0]!
}

function open(node: { url: string }, chatId: string, cookie: string | undefined, query = 'presence=1', headers: Record<string, string> = {}): Promise<RawStream> {
  return RawStream.open(`${node.url}/chats/${chatId}/events${query ? `?${query}` : ''}`, { ...(cookie ? { cookie } : {}), ...headers })
}

interface PeopleJson {
  chatId: string
  people: { name: string; typing: boolean }[]
  others: number
}

async function people(node: { url: string }, chatId: string): Promise<PeopleJson> {
  const res = await request(node.url).get(`/chats/${chatId}/people`).set('Accept', 'application/json').expect(200)
  return res.body as PeopleJson
}

/** Polls GET /people until `predicate` holds; answers how long it took. */
async function peopleUntil(node: { url: string }, chatId: string, predicate: (body: PeopleJson) => boolean, timeoutMs: number, what: string): Promise<number> {
  const started = performance.now()
  for (;;) {
    const body = await people(node, chatId)
    if (predicate(body)) return performance.now() - started
    if (performance.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; GET /people said ${JSON.stringify(body)}`)
    await sleep(50)
  }
}

const names = (body: PeopleJson) => body.people.map((p) => p.name)
const sameNames = (list: string[], expected: string[]) => JSON.stringify(list) === JSON.stringify(expected)

async function countEvents(node: TestNode): Promise<number> {
  const row = await node.db.selectFrom('events').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()
  return Number(row.n)
}

async function typing(node: { url: string }, chatId: string, cookie: string): Promise<number> {
  const res = await request(node.url).post(`/chats/${chatId}/typing`).set('Cookie', cookie)
  return res.status
}

async function say(node: { url: string }, chatId: string, cookie: string, content: string): Promise<number> {
  const res = await request(node.url).post(`/chats/${chatId}/messages`).set('Cookie', cookie).send({ content }).expect(201)
  return (res.body as { version: number }).version
}

describe('who is here, across nodes', () => {
  test('two people on two nodes see each other in their frames and in GET /people within 2 s; each page shows its own reader too', async () => {
    const [ada, bob] = await Promise.all([person(a, 'Ada'), person(b, 'Bob')])
    const adaStream = await open(a, 'meet', ada)
    await adaStream.waitFor((s) => s.presence.length >= 1, 2_000, 'the list at connect time')
    const joined = performance.now()
    const bobStream = await open(b, 'meet', bob)
    const seen = await adaStream.waitFor((s) => sameNames(s.here!.names, ['Ada', 'Bob']), 2_000, "Ada's stream (node A) to show Ada and Bob")
    report('join on node B → frame on node A', performance.now() - joined)
    await bobStream.waitFor((s) => sameNames(s.here?.names ?? [], ['Ada', 'Bob']), 2_000 - seen, "Bob's stream (node B) to show Ada and Bob")
    const both = (body: PeopleJson) => sameNames(names(body), ['Ada', 'Bob'])
    await peopleUntil(a, 'meet', both, 500, 'node A to list both')
    await peopleUntil(b, 'meet', both, 500, 'node B to list both')
    assert.deepEqual(await people(a, 'meet'), { chatId: 'meet', people: [{ name: 'Ada', typing: false }, { name: 'Bob', typing: false }], others: 0 })
    // The fragment answers the same list.
    const fragment = await request(b.url).get('/chats/meet/people').expect(200)
    assert.match(String(fragment.headers['content-type']), /^text\/html/)
    assert.deepEqual(shown(fragment.text), { names: ['Ada', 'Bob'], others: 0, typing: '' })
    adaStream.close()
    bobStream.close()
  })

  test('the page and its stream\'s first frame both list the reader: no "nobody here", then a flicker to themselves', async () => {
    const cleo = await person(a, 'Cleo')
    const page = await request(a.url).get('/chats/first-look').set('cookie', cleo).expect(200)
    const list = /<div id="people"[\s\S]*?<\/div>/.exec(page.text)![0]
    assert.deepEqual(shown(list).names, ['Cleo'], 'the page lists its reader')
    const stream = await open(a, 'first-look', cleo)
    await stream.waitFor((s) => s.presence.length >= 1, 2_000, 'the list at connect time')
    assert.deepEqual(stream.presence[0]!.data.replace(/\s+/g, ' '), list.replace(/\s+/g, ' '), 'the first frame says what the page said')
    // Another person loading the page sees Cleo and themself, sorted by name.
    const ada = await person(a, 'Ada')
    const other = await request(a.url).get('/chats/first-look').set('cookie', ada).expect(200)
    assert.deepEqual(shown(/<div id="people"[\s\S]*?<\/div>/.exec(other.text)![0]).names, ['Ada', 'Cleo'])
    stream.close()
  })

  test('a second and third stream of the same person (on either node) add no name; closing all of them removes the name within 5 s', async () => {
    const [ada, bob] = await Promise.all([person(a, 'Ada'), person(a, 'Bob')])
    const adaStream = await open(a, 'tabs', ada)
    const bobTabs = [await open(b, 'tabs', bob), await open(a, 'tabs', bob), await open(b, 'tabs', bob)]
    await adaStream.waitFor((s) => sameNames(s.here?.names ?? [], ['Ada', 'Bob']), 2_000, 'Ada to see Bob')
    // Long enough for every flush and frame the extra tabs could cause.
    await sleep(1_500)
    for (const node of [a, b]) assert.deepEqual(await people(node, 'tabs'), { chatId: 'tabs', people: [{ name: 'Ada', typing: false }, { name: 'Bob', typing: false }], others: 0 })
    assert.ok(adaStream.presence.every((frame) => shown(frame.data).names.filter((name) => name === 'Bob').length <= 1), 'Bob is never listed twice')

    // Closing two of three tabs: still here.
    bobTabs[0]!.close()
    bobTabs[1]!.close()
    await sleep(3_500)
    assert.deepEqual(names(await people(a, 'tabs')), ['Ada', 'Bob'], 'Bob is here while one tab is open')
    const left = performance.now()
    bobTabs[2]!.close()
    const gone = await adaStream.waitFor((s) => sameNames(s.here!.names, ['Ada']), 5_000, "Bob's name to go from Ada's stream")
    report('last tab closed → name gone from the other node\'s frames', gone)
    assert.ok(gone >= 2_000, `a leave waits its grace period (gone after ${Math.round(gone)} ms)`)
    await peopleUntil(b, 'tabs', (body) => sameNames(names(body), ['Ada']), 5_000 - gone, 'node B to list Ada alone')
    report('last tab closed → GET /people on node B without Bob', performance.now() - left)
    adaStream.close()
  })

  test('someone who closes their last tab while typing is gone within 5 s, typing line and all', async () => {
    const [ada, bob] = await Promise.all([person(a, 'Ada'), person(b, 'Bob')])
    const adaStream = await open(a, 'typing-leave', ada)
    const bobStream = await open(b, 'typing-leave', bob)
    await adaStream.waitFor((s) => sameNames(s.here?.names ?? [], ['Ada', 'Bob']), 2_000, 'Ada to see Bob')
    assert.equal(await typing(b, 'typing-leave', bob), 204)
    await adaStream.waitFor((s) => s.here!.typing === 'Bob is typing…', 2_000, 'Bob typing')
    // One more keystroke (2 s later, as the composer's throttle allows), then the tab is closed.
    await sleep(2_000)
    assert.equal(await typing(b, 'typing-leave', bob), 204)
    const left = performance.now()
    bobStream.close()
    const gone = await adaStream.waitFor((s) => sameNames(s.here!.names, ['Ada']) && s.here!.typing === '', 5_000, 'Bob and his typing line to go')
    report('last tab closed while typing → name and typing line gone on the other node', gone)
    await peopleUntil(b, 'typing-leave', (body) => sameNames(names(body), ['Ada']), 5_000 - (performance.now() - left), 'node B to list Ada alone')
    adaStream.close()
  })

  test('a reload (close and reopen within the grace period) does not flicker', async () => {
    const [ada, bob] = await Promise.all([person(a, 'Ada'), person(b, 'Bob')])
    const adaStream = await open(a, 'reload', ada)
    let bobStream = await open(b, 'reload', bob)
    await adaStream.waitFor((s) => sameNames(s.here?.names ?? [], ['Ada', 'Bob']), 2_000, 'Ada to see Bob')
    const framesBefore = adaStream.presence.length
    bobStream.close()
    await sleep(500)
    bobStream = await open(b, 'reload', bob)
    await sleep(4_000)
    assert.ok(adaStream.presence.slice(framesBefore).every((frame) => shown(frame.data).names.includes('Bob')), 'Bob never disappeared')
    assert.deepEqual(names(await people(b, 'reload')), ['Ada', 'Bob'])
    adaStream.close()
    bobStream.close()
  })

  test('GET /people as JSON is sorted by name; readers without a session (or with a forged cookie) are counted in others, never named', async () => {
    const cookies = await Promise.all(['zoe', 'Mia', 'ada', 'Ben'].map((name) => person(a, name)))
    const opened = await Promise.all(cookies.map((cookie, i) => open(i % 2 ? a : b, 'sorted', cookie, '')))
    const anonymous = [await open(a, 'sorted', undefined, ''), await open(b, 'sorted', undefined, 'presence=1'), await open(b, 'sorted', 'live_tea_session=s%3Ap1.AAAAAAAAAAAAAAAAAAAAAA.Mallory.forged', '')]
    const expected = { chatId: 'sorted', people: ['ada', 'Ben', 'Mia', 'zoe'].map((name) => ({ name, typing: false })), others: 3 }
    await peopleUntil(a, 'sorted', (body) => JSON.stringify(body) === JSON.stringify(expected), 2_000, 'four names, sorted, and 3 others')
    // Node B learns node A's readers when A writes them (coalesced, a few times a second), not at once.
    await peopleUntil(b, 'sorted', (body) => JSON.stringify(body) === JSON.stringify(expected), 2_000, 'node B to list the same')
    const fragment = await request(a.url).get('/chats/sorted/people').expect(200)
    assert.deepEqual(shown(fragment.text), { names: ['ada', 'Ben', 'Mia', 'zoe'], others: 3, typing: '' })
    assert.doesNotMatch(fragment.text, /Mallory|anon/)
    // The anonymous reader who asked for presence frames sees the same.
    await anonymous[1]!.waitFor((s) => JSON.stringify(s.here) === JSON.stringify({ names: ['ada', 'Ben', 'Mia', 'zoe'], others: 3, typing: '' }), 2_000, 'the anonymous reader to see the list')
    for (const stream of [...opened, ...anonymous]) stream.close()
    await peopleUntil(a, 'sorted', (body) => body.people.length === 0 && body.others === 0, 5_000, 'everyone to leave')
  })
})

describe('typing', () => {
  test('a hint on one node shows on the other node\'s stream and list (never on the typer\'s own), clears at once when the message is sent, and never enters events', async () => {
    const [ada, bob, cy] = await Promise.all([person(a, 'Ada'), person(b, 'Bob'), person(a, 'Cy')])
    const adaStream = await open(a, 'typing', ada)
    const bobStream = await open(b, 'typing', bob)
    const cyStream = await open(a, 'typing', cy)
    await adaStream.waitFor((s) => sameNames(s.here?.names ?? [], ['Ada', 'Bob', 'Cy']), 2_000, 'Ada to see Bob and Cy')
    await bobStream.waitFor((s) => sameNames(s.here?.names ?? [], ['Ada', 'Bob', 'Cy']), 2_000, 'Bob to see Ada and Cy')
    await cyStream.waitFor((s) => sameNames(s.here?.names ?? [], ['Ada', 'Bob', 'Cy']), 2_000, 'Cy to see Ada and Bob')
    const events = await countEvents(a)
    const bobsFramesBefore = bobStream.presence.length

    const hinted = performance.now()
    assert.equal(await typing(b, 'typing', bob), 204)
    await adaStream.waitFor((s) => s.here!.typing === 'Bob is typing…', 2_000, '"Bob is typing…" on node A')
    report('typing hint on node B → frame on node A', performance.now() - hinted)
    assert.deepEqual((await people(a, 'typing')).people, [{ name: 'Ada', typing: false }, { name: 'Bob', typing: true }, { name: 'Cy', typing: false }])
    await cyStream.waitFor((s) => s.here!.typing === 'Bob is typing…', 2_000, '"Bob is typing…" on Cy\'s stream')
    // Bob's own stream got its frame of that change too, without telling him that he is typing.
    await bobStream.waitFor((s) => s.presence.length > bobsFramesBefore, 2_000, "the change to reach Bob's own stream")
    assert.equal(bobStream.here!.typing, '', 'nobody is told that they are typing')
    const fragment = await request(b.url).get('/chats/typing/people').set('Cookie', bob).expect(200)
    assert.equal(shown(fragment.text).typing, '', 'nor by the list their page fetches')
    assert.equal(await countEvents(a), events, 'a typing hint is not an event')

    // Both typing: each sees the other; whoever is not typing sees both.
    const adasFramesBefore = adaStream.presence.length
    assert.equal(await typing(a, 'typing', ada), 204)
    await cyStream.waitFor((s) => s.here!.typing === 'Ada and Bob are typing…', 2_000, 'both typing, on Cy\'s stream')
    await bobStream.waitFor((s) => s.here!.typing === 'Ada is typing…', 2_000, 'Ada typing, on Bob\'s stream')
    await adaStream.waitFor((s) => s.presence.length > adasFramesBefore, 2_000, "the change to reach Ada's own stream")
    assert.equal(adaStream.here!.typing, 'Bob is typing…', 'Ada typing too: her own stream still names Bob alone')

    const sent = performance.now()
    const version = await say(b, 'typing', bob, 'here it is')
    // Ada, still typing, is not told so: her line is empty now; Cy's names her alone.
    await adaStream.waitFor((s) => s.here!.typing === '', 2_000, "Bob's typing to clear on node A after he sent")
    await cyStream.waitFor((s) => s.here!.typing === 'Ada is typing…', 2_000, "Bob's typing to clear on Cy's stream")
    const cleared = performance.now() - sent
    report('message sent on node B → typing cleared on node A', cleared)
    assert.ok(cleared < 5_000, 'cleared by the send, not by expiry')
    await adaStream.waitFor((s) => s.messages.some((frame) => frame.id === String(version)), 2_000, 'the message itself')
    assert.equal(await countEvents(a), events + 1, 'only the message entered events')
    adaStream.close()
    bobStream.close()
    cyStream.close()
  })

  test('typing is gone 5 s after the last hint, on every node', async () => {
    const [ada, bob] = await Promise.all([person(a, 'Ada'), person(b, 'Bob')])
    const adaStream = await open(a, 'expiry', ada)
    const bobStream = await open(b, 'expiry', bob)
    await adaStream.waitFor((s) => sameNames(s.here?.names ?? [], ['Ada', 'Bob']), 2_000, 'Ada to see Bob')
    const events = await countEvents(a)
    assert.equal(await typing(b, 'expiry', bob), 204)
    await adaStream.waitFor((s) => s.here!.typing === 'Bob is typing…', 2_000, 'the typing line')
    // Keeps typing: a hint every 2 s, as the composer's throttle sends them.
    await sleep(2_000)
    assert.equal(await typing(b, 'expiry', bob), 204)
    const lastHint = performance.now()
    await adaStream.waitFor((s) => s.here!.typing === '', 8_000, 'the typing line to go')
    const gone = performance.now() - lastHint
    report('last typing hint → typing line gone on the other node', gone)
    assert.ok(gone >= 4_500, `typing lasts 5 s after the last hint, not less (gone after ${Math.round(gone)} ms)`)
    assert.ok(gone < 7_000, `and then goes (after ${Math.round(gone)} ms)`)
    assert.deepEqual((await people(b, 'expiry')).people, [{ name: 'Ada', typing: false }, { name: 'Bob', typing: false }])
    assert.equal(await countEvents(a), events, 'nothing entered events')
    adaStream.close()
    bobStream.close()
  })

  test('a hint from a composer whose message was already sent (the last throttled hint, overtaken by Enter) brings no typing line back; the next composer\'s hint does', async () => {
    const [ada, bob] = await Promise.all([person(a, 'Ada'), person(b, 'Bob')])
    const adaStream = await open(a, 'late-hint', ada)
    const bobStream = await open(b, 'late-hint', bob)
    await adaStream.waitFor((s) => sameNames(s.here?.names ?? [], ['Ada', 'Bob']), 2_000, 'Ada to see Bob')
    const hint = (commandId: string) => request(b.url).post('/chats/late-hint/typing').set('Cookie', bob).type('form').send({ commandId, content: 'I think' }).expect(204)

    await hint('composer-1')
    await adaStream.waitFor((s) => s.here!.typing === 'Bob is typing…', 2_000, 'Bob typing')
    const version = (await request(b.url).post('/chats/late-hint/messages').set('Cookie', bob).send({ content: 'I think so', commandId: 'composer-1' }).expect(201)).body.version as number
    await hint('composer-1')
    await adaStream.waitFor((s) => s.messages.some((frame) => frame.id === String(version)), 2_000, 'the message')
    await adaStream.waitFor((s) => s.here!.typing === '', 2_000, "Bob's typing line to go when he sent")
    await sleep(1_500)
    assert.equal(adaStream.here!.typing, '', 'the late hint of the sent composer did not bring it back')
    assert.deepEqual((await people(b, 'late-hint')).people, [{ name: 'Ada', typing: false }, { name: 'Bob', typing: false }])

    await hint('composer-2')
    await adaStream.waitFor((s) => s.here!.typing === 'Bob is typing…', 2_000, 'Bob typing in his fresh composer')
    adaStream.close()
    bobStream.close()
  })

  test('a hint that lands on another node than the person\'s stream (a load balancer) still shows and clears on send; a hint from someone with no stream open names no one', async () => {
    const [ada, bob, cy] = await Promise.all([person(a, 'Ada'), person(a, 'Bob'), person(b, 'Cy')])
    const adaStream = await open(a, 'elsewhere', ada)
    const bobStream = await open(a, 'elsewhere', bob)
    await adaStream.waitFor((s) => sameNames(s.here?.names ?? [], ['Ada', 'Bob']), 2_000, 'Ada and Bob')
    assert.equal(await typing(b, 'elsewhere', bob), 204)
    await adaStream.waitFor((s) => s.here!.typing === 'Bob is typing…', 2_000, 'Bob typing, hinted through node B')
    assert.deepEqual(adaStream.here!.names, ['Ada', 'Bob'], 'Bob once, though both nodes hold a row of his')
    await say(b, 'elsewhere', bob, 'sent through node B')
    await adaStream.waitFor((s) => s.here!.typing === '', 2_000, "Bob's typing to clear")

    assert.equal(await typing(b, 'elsewhere', cy), 204)
    await sleep(1_500)
    assert.ok(adaStream.presence.every((frame) => !frame.data.includes('Cy')), 'Cy, who has no stream open, is never shown')
    assert.deepEqual(await people(a, 'elsewhere'), { chatId: 'elsewhere', people: [{ name: 'Ada', typing: false }, { name: 'Bob', typing: false }], others: 0 })
    adaStream.close()
    bobStream.close()
  })
})

describe('frames without an id', () => {
  test('presence frames carry no id: and a stream resumed with Last-Event-ID after them gets exactly the message frames it missed', async () => {
    const [ada, bob] = await Promise.all([person(a, 'Ada'), person(b, 'Bob')])
    const events = await countEvents(a)
    const first = await open(a, 'resume', ada, 'after=0&presence=1')
    for (const content of ['one', 'two', 'three']) await say(a, 'resume', ada, content)
    await first.waitFor((s) => s.messages.length === 3, 5_000, 'three messages')
    // Presence frames arrive after the messages: someone joins and types.
    const bobStream = await open(b, 'resume', bob)
    await first.waitFor((s) => s.here?.names.includes('Bob') ?? false, 2_000, 'Bob joining')
    assert.equal(await typing(b, 'resume', bob), 204)
    await first.waitFor((s) => s.here!.typing === 'Bob is typing…', 2_000, 'Bob typing')
    const afterMessages = first.frames.slice(first.frames.indexOf(first.messages.at(-1)!) + 1)
    assert.ok(afterMessages.some((frame) => frame.data.includes('id="people"')), 'presence frames came after the last message')

    assert.deepEqual(first.messages.map((frame) => frame.id), ['1', '2', '3'])
    assert.ok(first.presence.length >= 3)
    assert.ok(first.presence.every((frame) => frame.id === undefined), 'no presence frame has an id: line')
    assert.equal(first.lastEventId, '3', 'the resume cursor is still the last message')
    first.close()

    // Missed while away: two messages, and more presence changes.
    await say(b, 'resume', bob, 'four')
    bobStream.close()
    await say(a, 'resume', ada, 'five')
    const resumed = await open(a, 'resume', ada, 'after=0&presence=1', { 'Last-Event-ID': first.lastEventId })
    await resumed.waitFor((s) => s.messages.length >= 2, 5_000, 'the two missed messages')
    await sleep(1_500)
    assert.deepEqual(resumed.messages.map((frame) => frame.id), ['4', '5'], 'exactly the messages missed, once each, in order')
    assert.deepEqual(resumed.frames.filter((frame) => frame.id !== undefined).map((frame) => frame.id), ['4', '5'], 'no other frame moved the cursor')
    assert.ok(resumed.presence.length >= 1 && resumed.presence.every((frame) => frame.id === undefined))
    assert.equal(await countEvents(a), events + 5, 'joins, leaves and typing added nothing to events')
    resumed.close()
  })

  test('a plain stream (no ?presence=1) gets no presence frames, only messages; its reader still counts as here', async () => {
    const [ada, bob] = await Promise.all([person(a, 'Ada'), person(b, 'Bob')])
    const plain = await open(a, 'plain', ada, '')
    const watcher = await open(a, 'plain', undefined)
    const bobStream = await open(b, 'plain', bob)
    await watcher.waitFor((s) => sameNames(s.here?.names ?? [], ['Ada', 'Bob']), 2_000, 'the list with the plain reader Ada in it')
    assert.equal(await typing(b, 'plain', bob), 204)
    await watcher.waitFor((s) => s.here!.typing === 'Bob is typing…', 2_000, 'Bob typing')
    const version = await say(b, 'plain', bob, 'hello plain')
    await plain.waitFor((s) => s.messages.length === 1, 2_000, 'the message')
    bobStream.close()
    await watcher.waitFor((s) => !s.here!.names.includes('Bob'), 5_000, 'Bob leaving')
    assert.deepEqual(plain.frames.map((frame) => frame.id), [String(version)], 'the plain stream got the message and nothing else')
    plain.close()
    watcher.close()
  })
})

describe('typing behind one address', () => {
  test('twenty people behind one address (an office, a proxy without TRUST_PROXY) typing at the composer\'s pace never get a 429', async () => {
    const cookies = await Promise.all(Array.from({ length: 20 }, (_, i) => person(b, `Typist ${i}`)))
    const statuses: number[] = []
    // Each sends what the composer sends while typing on: a hint every 2 s, for 6 s.
    await Promise.all(
      cookies.map(async (cookie, i) => {
        await sleep(i * 100)
        for (let round = 0; round < 3; round++) {
          statuses.push(await typing(b, 'office', cookie))
          await sleep(2_000)
        }
      }),
    )
    assert.equal(statuses.length, 60)
    assert.deepEqual(statuses.filter((status) => status !== 204), [], 'no hint refused')
  })
})

describe('a flood of typing hints', () => {
  // An app process of its own: its responsiveness is measured apart from the test's own event loop, and the
  // flood empties that node's per-address budget for typing hints, as it should.
  let c: ProcessNode
  before(async () => (c = await startProcessNode(database.url)))
  // A clean stop: its people leave at once (a SIGKILL would leave them counted until its heartbeat times out).
  after(async () => void (await c?.kill('SIGTERM')))

  test('is cut off with 429 before it costs anything, and the app stays responsive', async () => {
    const [mal, ada] = await Promise.all([person(c, 'Mal'), person(a, 'Ada')])
    const adaStream = await open(a, 'flood', ada)
    const malStream = await open(c, 'flood', mal)
    await adaStream.waitFor((s) => sameNames(s.here?.names ?? [], ['Ada', 'Mal']), 2_000, 'Ada to see Mal')
    const events = await countEvents(a)
    const framesBefore = adaStream.presence.length
    const quiet = performance.now()
    await say(c, 'flood', mal, 'before the flood')
    const quietMs = performance.now() - quiet

    const statuses = new Map<number, number>()
    const flooding = performance.now()
    let stop = false
    // One client: as many connections at once as a browser opens to a host.
    const flood = Array.from({ length: 6 }, async () => {
      while (!stop) {
        const res = await fetch(`${c.url}/chats/flood/typing`, { method: 'POST', headers: { cookie: mal } })
        await res.arrayBuffer()
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
        if (res.status === 429) assert.ok(Number(res.headers.get('retry-after')) >= 1, 'a 429 says when to come back')
      }
    })
    await sleep(500)
    // Meanwhile the same node answers a message post and a page quickly.
    const posting = performance.now()
    const version = await say(c, 'flood', mal, 'still answering')
    const postMs = performance.now() - posting
    const paging = performance.now()
    await request(c.url).get('/chats/flood').set('Cookie', mal).expect(200)
    const pageMs = performance.now() - paging
    await sleep(1_500)
    stop = true
    await Promise.all(flood)

    const total = [...statuses.values()].reduce((sum, n) => sum + n, 0)
    console.log(`[presence] flood: ${total} hints in 2 s → ${JSON.stringify(Object.fromEntries(statuses))}; POST message ${Math.round(postMs)} ms (${Math.round(quietMs)} ms before it), GET page ${Math.round(pageMs)} ms during it`)
    assert.deepEqual([...statuses.keys()].sort(), [204, 429])
    assert.ok(total >= 50, `a flood (${total} hints)`)
    assert.ok(statuses.get(204)! <= 10, `at most a burst and about one a second pass (${statuses.get(204)})`)
    // Generous bounds: the machine running the tests is shared; the figures are printed above.
    assert.ok(postMs < 2_000, `a message post still answers (${Math.round(postMs)} ms)`)
    assert.ok(pageMs < 2_000, `a page still answers (${Math.round(pageMs)} ms)`)
    await adaStream.waitFor((s) => s.messages.some((frame) => frame.id === String(version)), 2_000, 'the message on the other node')
    // What got through changes the list a few times at most: never a frame per hint, never more than one a second.
    const frames = adaStream.presence.length - framesBefore
    assert.ok(frames <= Math.ceil((performance.now() - flooding) / 1000) + 1, `presence frames during the flood: ${frames}`)
    assert.equal(await countEvents(a), events + 2, 'the two messages; no hint entered events')
    adaStream.close()
    malStream.close()
  })
})

describe('operations', () => {
  test('/metrics and the dashboard count people here (this node, all nodes) and presence frames', async () => {
    const [ada, bob, cy] = await Promise.all([person(a, 'Ada'), person(b, 'Bob'), person(b, 'Cy')])
    type Samples = Awaited<ReturnType<typeof scrape>>
    const scrapeUntil = async (node: TestNode, check: (samples: Samples) => boolean, what: string) => {
      const deadline = Date.now() + 8_000
      for (;;) {
        const samples = await scrape(node.url)
        if (check(samples)) return samples
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: this node ${here(samples)}, all nodes ${allNodes(samples)}`)
        await sleep(100)
      }
    }
    const here = (samples: Samples) => valueOf(samples, 'live_tea_presence_people_node')
    const allNodes = (samples: Samples) => valueOf(samples, 'live_tea_presence_people_all_nodes')
    // Whoever earlier tests left has gone (a leave takes its grace period).
    await scrapeUntil(a, (s) => here(s) === 0 && allNodes(s) === 0, 'node A to count nobody')
    await scrapeUntil(b, (s) => here(s) === 0 && allNodes(s) === 0, 'node B to count nobody')
    const framesBefore = valueOf(await scrape(a.url), 'live_tea_presence_frames_total')
    const opened = [await open(a, 'ops', ada), await open(a, 'ops', ada), await open(b, 'ops', bob), await open(b, 'ops', cy), await open(a, 'ops-other', cy, '')]
    await opened[0]!.waitFor((s) => sameNames(s.here?.names ?? [], ['Ada', 'Bob', 'Cy']), 2_000, 'everyone')
    // Node A: Ada (two tabs, once) in ops, Cy in ops-other. Node B: Bob and Cy in ops.
    const onA = await scrapeUntil(a, (s) => allNodes(s) === 4, 'all nodes: 4 people here (Ada, Bob, Cy in ops; Cy in ops-other)')
    assert.equal(here(onA), 2)
    const onB = await scrapeUntil(b, (s) => allNodes(s) === 4, 'node B to count 4 too')
    assert.equal(here(onB), 2)
    assert.ok(valueOf(onA, 'live_tea_presence_frames_total') > framesBefore, 'presence frames were counted')

    const dashboard = await request(a.url).get('/dashboard').expect(200)
    const figure = (id: string) => new RegExp(`data-figure="${id}">([^<]*)<`).exec(dashboard.text)?.[1]
    assert.equal(figure('people-here'), '4')
    assert.match(dashboard.text, /on this node/)
    assert.match(figure('presence-frames-per-second') ?? '', /^\d+(\.\d)?$|^–$/)
    for (const stream of opened) stream.close()
    await scrapeUntil(a, (s) => allNodes(s) === 0 && here(s) === 0, 'everyone to leave')
  })
})

describe('a node killed without a word', () => {
  let victim: ProcessNode | undefined
  after(async () => void (await victim?.kill('SIGKILL')))

  test('SIGKILL of an app process: its people leave the other node\'s list and frames within 30 s (real heartbeat and timeout)', async () => {
    victim = await startProcessNode(database.url)
    const [ada, dee] = await Promise.all([person(a, 'Ada'), person(victim, 'Dee')])
    const adaStream = await open(a, 'kill', ada)
    const deeStream = await open(victim, 'kill', dee)
    await adaStream.waitFor((s) => sameNames(s.here?.names ?? [], ['Ada', 'Dee']), 2_000, 'Ada to see Dee on the other node')
    await peopleUntil(a, 'kill', (body) => sameNames(names(body), ['Ada', 'Dee']), 1_000, 'node A to list Dee')

    const killed = performance.now()
    await victim.kill('SIGKILL')
    await deeStream.waitFor((s) => s.done, 2_000, 'the stream to the killed node to end').catch(() => {})
    const gone = await adaStream.waitFor((s) => sameNames(s.here!.names, ['Ada']), 30_000, "Dee's name to go from Ada's stream")
    report('SIGKILL → name gone from the other node\'s frames', gone)
    const listed = await peopleUntil(a, 'kill', (body) => sameNames(names(body), ['Ada']), 30_000 - gone, 'node A to list Ada alone')
    report('SIGKILL → GET /people on the other node without the name', performance.now() - killed)
    assert.ok(gone + listed < 30_000)
    // Not before the timeout: a node is only dead after 20 s of silence (heartbeats every 5 s).
    assert.ok(gone > 10_000, `a node is given its timeout (gone after ${Math.round(gone)} ms)`)
    adaStream.close()
  })
})

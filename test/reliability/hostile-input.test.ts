import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { fileURLToPath } from 'node:url'
import { after, before, describe, test } from 'node:test'
import express from 'express'
import { sql } from 'kysely'
import pg from 'pg'
import request from 'supertest'
import { BODY_LIMIT } from '../../src/app.js'
import { MAX_CONTENT_LENGTH } from '../../src/chat/chat.js'
import { errorHandler } from '../../src/http/errors.js'
import { renderView, VIEWS_DIR } from '../../src/http/views.js'
import { createLogger } from '../../src/ops/logger.js'
import { admin } from '../support/database.js'
import { startTestNode, type TestNode } from '../support/node.js'
import { until } from '../support/until.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

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

describe('form bodies decode as browsers encode them (the URL Standard, as URLSearchParams does)', () => {
  const cases: [string, string, string][] = [
    ['bytes that are not UTF-8 become U+FFFD, as in a JSON body', 'tea%FF%FEtime', 'tea\ufffd\ufffdtime'],
    ['a field with a stray percent sign still decodes the rest', '50%+off+%E2%9C%93', '50% off ✓'],
    ['a percent sign with no hex digits after it stays as typed', '100%25+and+100%', '100% and 100%'],
    ['raw UTF-8 bytes, unencoded (curl -d)', 'caf\u00e9+au+lait', 'café au lait'],
  ]
  cases.forEach(([what, field, stored], i) => {
    test(what, async () => {
      const chatId = `form-decoding-${i}`
      const res = await request(node.url).post(`/chats/${chatId}/messages`).set('accept', 'application/json').type('form').send(`content=${field}`)
      assert.equal(res.status, 201, res.text.slice(0, 200))
      assert.equal(await storedContent(chatId, res.body.version), stored)
    })
  })

  test('a form that says it is ISO-8859-1 decodes as ISO-8859-1', async () => {
    const res = await request(node.url).post('/chats/form-latin1/messages').set('accept', 'application/json').set('content-type', 'application/x-www-form-urlencoded; charset=iso-8859-1').send('content=caf%E9+cr%E8me')
    assert.equal(res.status, 201, res.text.slice(0, 200))
    assert.equal(await storedContent('form-latin1', res.body.version), 'café crème')
  })

  test('a field given twice is refused (400), and a field named __proto__ is only a field', async () => {
    const before = await eventCount()
    const twice = await request(node.url).post('/chats/form-fields/messages').set('accept', 'application/json').type('form').send('content=a&content=b')
    assert.equal(twice.status, 400)
    assert.match(twice.body.error, /content/)
    const proto = await request(node.url).post('/chats/form-fields/messages').set('accept', 'application/json').type('form').send('__proto__=x&content=hello')
    assert.equal(proto.status, 201)
    assert.equal(await eventCount(), before + 1)
  })
})

describe('display names that would break or hide things are refused with 422, never 500', () => {
  const refused: [string, string][] = [
    ['a lone high surrogate', 'tea\ud800time'],
    ['a lone low surrogate', '\udc00tea'],
    ['a surrogate pair in the wrong order', 'tea\udc00\ud800'],
    ['a zero-width space (U+200B)', 'ad\u200bmin'],
    ['a name of zero-width spaces alone', '\u200b\u200b'],
    ['a right-to-left override (U+202E)', 'mallory\u202egnp.exe'],
    ['a bidirectional isolate (U+2066)', '\u2066alice'],
    ['a next-line control (U+0085)', 'alice\u0085bob'],
    ['a line separator (U+2028)', 'alice\u2028bob'],
    ['a paragraph separator (U+2029)', 'alice\u2029bob'],
    ['a byte order mark inside the name (U+FEFF)', 'ali\ufeffce'],
    ['a soft hyphen (U+00AD)', 'al\u00adice'],
    ['a Hangul filler that draws nothing (U+3164)', '\u3164'],
    ['a joiner outside any emoji or word (U+200D)', 'alice \u200d'],
  ]
  for (const [what, name] of refused) {
    test(`${what}: 422 with the reason, as JSON and as a form, and the name stays as it was`, async () => {
      const agent = request.agent(node.url)
      await agent.post('/session').type('form').send({ name: 'Steady' }).expect(303)
      const json = await agent.post('/session').set('content-type', 'application/json').set('accept', 'application/json').send(JSON.stringify({ name }))
      assert.equal(json.status, 422, json.text.slice(0, 200))
      assert.match(json.body.error, /name cannot contain/)
      if (name.isWellFormed()) {
        // (A form cannot carry a lone surrogate: UTF-8 has no bytes for one.)
        const form = await agent.post('/session').type('form').send({ name })
        assert.equal(form.status, 422)
        assert.match(form.text, /role="alert"/)
        assert.match(form.text, /name cannot contain/)
      }
      const home = await agent.get('/').expect(200)
      assert.match(home.text, /You are <strong>Steady<\/strong>/)
    })
  }

  const accepted: [string, string, string][] = [
    ['accents', 'Zoë Ångström', 'Zoë Ångström'],
    ['an emoji with a variation selector', 'Tea ❤️', 'Tea ❤️'],
    ['an emoji ZWJ sequence with a skin tone', 'Ada 👩🏽‍💻', 'Ada 👩🏽‍💻'],
    ['a Persian word with a zero-width non-joiner', 'می‌خواهم', 'می‌خواهم'],
    ['a subdivision flag (tag characters)', '🏴󠁧󠁢󠁳󠁣󠁴󠁿 Ian', '🏴󠁧󠁢󠁳󠁣󠁴󠁿 Ian'],
    ['tabs, newlines and wide spaces, collapsed', ' Big\t\nBird\u3000 ', 'Big Bird'],
  ]
  for (const [what, name, shown] of accepted) {
    test(`a name with ${what} is kept and sends as typed`, async () => {
      const agent = request.agent(node.url)
      const res = await agent.post('/session').set('accept', 'application/json').send({ name })
      assert.equal(res.status, 200, res.text)
      assert.equal(res.body.name, shown)
      const sent = await agent.post('/chats/names/messages').send({ content: 'hello' }).expect(201)
      const event = await node.db.selectFrom('events').select('data').where('stream_id', '=', 'chat-names').where('stream_version', '=', sent.body.version).executeTakeFirstOrThrow()
      assert.equal(event.data.sender, shown)
    })
  }
})

describe('X-Request-Id is taken only from a proxy we trust', () => {
  test('from a client that is no trusted proxy, a chosen X-Request-Id is replaced: not in the answer, not on the event', async () => {
    const res = await request(node.url).post('/chats/request-ids/messages').set('X-Request-Id', 'chosen-by-client').send({ content: 'who am I?' }).expect(201)
    assert.match(String(res.headers['x-request-id']), /^[0-9a-f-]{36}$/)
    const event = await node.db.selectFrom('events').select('metadata').where('stream_id', '=', 'chat-request-ids').where('stream_version', '=', res.body.version).executeTakeFirstOrThrow()
    assert.equal(event.metadata.requestId, res.headers['x-request-id'])
  })

  test('through a trusted proxy (trust proxy: loopback), its X-Request-Id is kept', async () => {
    const behindProxy = await startTestNode({ databaseUrl: node.databaseUrl, trustProxy: ['loopback'] })
    try {
      const res = await request(behindProxy.url).post('/chats/request-ids/messages').set('X-Request-Id', 'edge-42').send({ content: 'via the proxy' }).expect(201)
      assert.equal(res.headers['x-request-id'], 'edge-42')
    } finally {
      await behindProxy.close()
    }
  })
})

describe('odd request targets and failing error pages answer plainly: a 4xx, no stack, no file path', () => {
  const logged: string[] = []
  const logLines: string[] = []
  let logging: TestNode
  before(async () => {
    // A real logger: the request log line is where a bad target used to trip.
    const logger = createLogger({ level: 'info', destination: { write: (line: string) => void logLines.push(line) } })
    logging = await startTestNode({ databaseUrl: node.databaseUrl, logger, log: (level, message) => void logged.push(`${level} ${message}`) })
  })
  after(() => logging.close())

  const cases: [string, string, number][] = [
    ['an absolute-form target with an impossible port', 'GET http://a:99999/x HTTP/1.1', 400],
    ['the same with a query string', 'GET http://a:99999/x?y=1 HTTP/1.1', 400],
    ['an absolute-form target of another scheme', 'GET ftp://a/x HTTP/1.1', 400],
    ['the asterisk form', 'OPTIONS * HTTP/1.1', 400],
    ['a path that reads as a host with a bad port', 'GET //a:99999/x?y=1 HTTP/1.1', 404],
    ['a secret in a path like that', 'GET //a:99999/dashboard?token=1 HTTP/1.1', 404],
    ['CONNECT, as to a proxy (Node drops it without a word unless told)', 'CONNECT a:443 HTTP/1.1', 405],
  ]
  for (const [what, requestLine, status] of cases) {
    test(`${what} answers ${status}`, async () => {
      const answer = await rawRequest(logging.url, `${requestLine}\r\nHost: a\r\nConnection: close\r\n\r\n`)
      assert.match(answer, new RegExp(`^HTTP/1\\.1 ${status} `), answer.slice(0, 300))
      assertNothingInternal(answer)
    })
  }

  test('a refused request target is logged, with its address', async () => {
    await rawRequest(logging.url, 'GET http://a:99999/logged HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
    assert.ok(logged.some((line) => /^warn GET http:\/\/a:99999\/logged from \S+: 400, The request target must be a path/.test(line)), logged.join('\n'))
  })

  test('a valid absolute-form target is served like its path (HTTP/1.1 servers must accept it)', async () => {
    const answer = await rawRequest(logging.url, `GET http://127.0.0.1:${new URL(logging.url).port}/healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
    assert.match(answer, /^HTTP\/1\.1 200 /)
    assert.match(answer, /\r\n\r\nok\n$/)
  })

  test('an error page that cannot be rendered answers in plain text, even with NODE_ENV=development', async () => {
    const app = express()
    app.set('env', 'development') // where Express's own fallback shows the stack
    app.set('views', VIEWS_DIR)
    app.set('view engine', 'ejs')
    app.engine('ejs', renderView)
    app.get('/boom', () => {
      throw new Error(`failed in ${VIEWS_DIR}`)
    })
    const failures: unknown[] = []
    // No nonce, no session name: the error page's layout cannot render.
    app.use(errorHandler({ onError: (error) => void failures.push(error) }))
    const res = await request(app).get('/boom').expect(500)
    assert.match(res.text, /^Something went wrong on our side/)
    assertNothingInternal(res.text)
    assert.ok(failures.length >= 2, 'the failure and the page that could not show it are both reported')
  })
})

/** No stack frame, no file path, no template source. */
function assertNothingInternal(text: string): void {
  assert.doesNotMatch(text, /\n\s+at |\.ejs|\.ts:|node_modules|<%/, text.slice(0, 500))
  assert.ok(!text.includes(ROOT), 'no file path of the app')
}

/** One request over a raw socket, as written (clients such as fetch cannot send every request target). */
function rawRequest(url: string, text: string): Promise<string> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(text))
    let answer = ''
    socket.setEncoding('utf8')
    socket.on('data', (chunk) => (answer += chunk))
    socket.on('end', () => resolve(answer))
    socket.on('error', reject)
  })
}

describe('going back after POST /session stays on this site', () => {
  const host = () => new URL(node.url).host
  const cases: [string, () => string, string][] = [
    ['a referer on this site', () => `http://${host()}/chats/tea?after=3`, '/chats/tea?after=3'],
    ['a referer whose path starts with //', () => `http://${host()}//evil.example/x`, '/'],
    ['a referer whose path starts with /\\', () => `http://${host()}/\\evil.example/x`, '/'],
    ['a referer of another host', () => 'http://evil.example/x', '/'],
  ]
  for (const [what, referer, location] of cases) {
    test(`${what} redirects to ${location}`, async () => {
      const res = await request(node.url).post('/session').type('form').set('referer', referer()).send({ name: 'Traveller' }).expect(303)
      assert.equal(res.headers.location, location)
    })
  }
})

describe('when the database is unavailable', () => {
  test('/readyz says why in general to anyone, and the database\'s own error only to operators', async () => {
    const failing = await startTestNode({ dashboardToken: 'ops-secret' })
    try {
      await admin((client) => client.query(`drop database ${failing.database!.name} with (force)`))
      const anyone = await readyzUntil(failing.url, 503)
      assert.match(anyone, /^not ready: database unreachable: details are in the log/)
      assert.ok(!anyone.includes(failing.database!.name), anyone)
      const operator = await request(failing.url).get('/readyz').set('Authorization', 'Bearer ops-secret').expect(503)
      assert.match(operator.text, /^not ready: database unreachable: /)
      assert.doesNotMatch(operator.text, /details are in the log/, 'an operator sees the database\'s own words')
      const guess = await request(failing.url).get('/readyz').set('Authorization', 'Bearer wrong').expect(503)
      assert.equal(guess.text, anyone)
    } finally {
      await failing.close()
    }
  })

  test('a database closed to new connections (55000) answers 503 with Retry-After, not 500', async () => {
    const closed = await startTestNode()
    const name = closed.database!.name
    try {
      await admin(async (client) => {
        await client.query(`alter database ${name} allow_connections false`)
        await client.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [name])
      })
      // The premise: a new connection is refused with 55000, and the pool holds no old one to use instead.
      const probe = new pg.Client({ connectionString: closed.databaseUrl })
      probe.on('error', () => {})
      await assert.rejects(probe.connect(), (error: { code?: string }) => error.code === '55000')
      // (Background work, projectors and presence, keeps trying to connect, so the pool is seldom empty: no idle one is what matters.)
      await until('the pool let its idle clients go', () => closed.pool.idleCount === 0, 5_000)

      const page = await request(closed.url).get('/chats/closed')
      assert.equal(page.status, 503, page.text.slice(0, 200))
      assert.ok(Number(page.headers['retry-after']) > 0)
      // A read saves nothing, so it does not say "nothing was saved".
      assert.match(page.text, /database is unreachable right now, so this cannot be shown/)
      const post = await request(closed.url).post('/chats/closed/messages').send({ content: 'anyone?' })
      assert.equal(post.status, 503)
      assert.match(post.body.error, /nothing was saved/)
    } finally {
      await admin((client) => client.query(`alter database ${name} allow_connections true`))
      await closed.close()
    }
  })
})

async function readyzUntil(url: string, status: number, timeoutMs = 10_000): Promise<string> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const res = await request(url).get('/readyz')
    if (res.status === status) return res.text
    if (Date.now() > deadline) throw new Error(`/readyz still answers ${res.status}, not ${status}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

describe('methods on the event stream', () => {
  test('HEAD answers the headers GET would, with no body and no subscription', async () => {
    const before = node.hub.subscriberCount
    const res = await fetch(`${node.url}/chats/tea/events?after=0`, { method: 'HEAD' })
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8')
    assert.equal(res.headers.get('cache-control'), 'no-cache, no-transform')
    assert.equal(await res.text(), '')
    assert.equal(node.hub.subscriberCount, before)
  })

  test('HEAD refuses what GET refuses, with the same status', async () => {
    assert.equal((await fetch(`${node.url}/chats/-Not-A-Chat/events`, { method: 'HEAD' })).status, 404)
    assert.equal((await fetch(`${node.url}/chats/tea/events?after=x`, { method: 'HEAD' })).status, 400)
  })

  test('OPTIONS says which methods it takes, as on every other address', async () => {
    const res = await fetch(`${node.url}/chats/tea/events`, { method: 'OPTIONS' })
    assert.ok(res.status === 200 || res.status === 204, `got ${res.status}`)
    assert.equal(res.headers.get('allow'), 'GET, HEAD')
  })

  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
    test(`${method} answers 405 with Allow: GET, HEAD and a readable reason`, async () => {
      const res = await fetch(`${node.url}/chats/tea/events`, { method, headers: { accept: 'application/json' } })
      assert.equal(res.status, 405)
      assert.equal(res.headers.get('allow'), 'GET, HEAD')
      assert.match(((await res.json()) as { error: string }).error, /read with GET/)
    })
  }
})

describe('methods on the other addresses', () => {
  const cases: [method: string, path: string, allow: string][] = [
    ['PUT', '/chats/tea/messages', 'GET, HEAD, POST'],
    ['DELETE', '/chats/tea/messages', 'GET, HEAD, POST'],
    ['PATCH', '/chats/tea', 'GET, HEAD'],
    ['DELETE', '/', 'GET, HEAD'],
    ['PUT', '/session', 'POST'],
    ['GET', '/chats/tea/messages/1/edits', 'POST'],
    ['DELETE', '/chats/tea/messages/1/reactions', 'POST'],
    ['PUT', '/search', 'GET, HEAD'],
    ['POST', '/healthz', 'GET, HEAD'],
  ]
  for (const [method, path, allow] of cases) {
    test(`${method} ${path} answers 405 with Allow: ${allow}, and appends nothing`, async () => {
      const before = await eventCount()
      const res = await fetch(`${node.url}${path}`, { method, headers: { accept: 'application/json', 'content-type': 'application/json' }, body: method === 'GET' ? undefined : JSON.stringify({ content: 'not this way', commandId: 'wrong-method' }) })
      assert.equal(res.status, 405)
      assert.equal(res.headers.get('allow'), allow)
      assert.match(((await res.json()) as { error: string }).error, new RegExp(`does not take ${method}; it takes ${allow}`))
      assert.equal(await eventCount(), before)
    })
  }

  test('an address the app does not serve stays 404, whatever the method', async () => {
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const res = await fetch(`${node.url}/chats/tea/messages/1/nothing`, { method, headers: { accept: 'application/json' } })
      assert.equal(res.status, 404, method)
      assert.equal(res.headers.get('allow'), null)
    }
  })

  const eventCount = async () => Number((await node.db.selectFrom('events').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n)
})

describe('chat addresses typed with capitals', () => {
  test('the chat page redirects to the lowercase name, keeping the query', async () => {
    await request(node.url).get('/chats/Tea').expect(301).expect('location', '/chats/tea')
    await request(node.url).get('/chats/TEA_Time?at=3').expect(301).expect('location', '/chats/tea_time?at=3')
  })

  test('so does its event stream, and the stream takes a trailing slash as the page does', async () => {
    await request(node.url).get('/chats/Tea/events?after=2').expect(301).expect('location', '/chats/tea/events?after=2')
    await request(node.url).get('/chats/Tea/events').expect(301).expect('location', '/chats/tea/events')
    const res = await request(node.url).head('/chats/tea/events/').expect(200)
    assert.match(String(res.headers['content-type']), /^text\/event-stream/)
    await request(node.url).get('/chats/Tea%20Time/events').expect(404)
  })

  test('a name that no case makes valid is still 404', async () => {
    await request(node.url).get('/chats/Tea%20Time').expect(404)
    await request(node.url).get('/chats/-Tea').expect(404)
  })
})

describe('every answer to a composer post keeps the composer', () => {
  const composerPost = () => request(node.url).post('/chats/composer-answers/messages').set('hx-request', 'true').type('form')
  const refusals: { name: string; send: () => request.Test; status: number; says: RegExp }[] = [
    { name: 'a body over the limit', send: () => composerPost().send({ content: 'x'.repeat(BODY_LIMIT + 10) }), status: 413, says: /too large/ },
    { name: 'a cross-site post', send: () => composerPost().set('sec-fetch-site', 'cross-site').send({ content: 'forged' }), status: 403, says: /another site/ },
    { name: 'a wrong content type', send: () => request(node.url).post('/chats/composer-answers/messages').set('hx-request', 'true').set('content-type', 'text/csv').send('a,b'), status: 415, says: /form|JSON/ },
  ]
  for (const { name, send, status, says } of refusals) {
    test(`${name} (${status}) replaces only the composer's note with the reason, so the typed text stays`, async () => {
      const res = await send().expect(status)
      assert.equal(res.headers['hx-retarget'], '#composer-note')
      assert.equal(res.headers['hx-reswap'], 'outerHTML')
      assert.match(res.text, /^<p class="error" id="composer-note" role="alert">/)
      assert.match(res.text, says)
      assert.doesNotMatch(res.text, /<form|<textarea/, 'not a composer of its own: the one on the page keeps its text')
    })
  }

  test('a rule the message breaks (422) still answers the whole composer with the text as typed', async () => {
    const res = await request(node.url).post('/chats/composer-answers/messages').set('hx-request', 'true').type('form').send({ content: '   ', commandId: 'keep' }).expect(422)
    assert.equal(res.headers['hx-retarget'], undefined)
    assert.match(res.text, /<form id="composer"/)
    assert.match(res.text, /id="composer-note" role="alert">Write something first/)
  })
})

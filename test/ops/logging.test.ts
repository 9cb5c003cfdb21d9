import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { pino } from 'pino'
import request from 'supertest'
import { Overloaded } from '../../src/event-store/command-handler.js'
import { createLogger, logWritten } from '../../src/ops/logger.js'
import { startTestNode, type TestNode } from '../support/node.js'

interface LogLine {
  level: number
  msg: string
  reqId?: string
  req?: { method: string; url: string }
  res?: { statusCode: number }
  err?: { message: string; stack: string }
  [key: string]: unknown
}

const lines: LogLine[] = []
let node: TestNode
before(async () => {
  const logger = createLogger({ level: 'info', destination: { write: (line: string) => void lines.push(JSON.parse(line)) } })
  // The test client stands in for a proxy on loopback: only a trusted proxy's X-Request-Id is kept.
  node = await startTestNode({ logger, dashboardToken: 'log-secret-token', trustProxy: ['loopback'] })
})
after(() => node.close())

/** The request's log line, found by its id (it is written when the response finishes). */
async function lineFor(requestId: string): Promise<LogLine> {
  const deadline = Date.now() + 5_000
  for (;;) {
    const line = lines.find((candidate) => candidate.reqId === requestId && candidate.req)
    if (line) return line
    if (Date.now() > deadline) throw new Error(`no log line with reqId ${requestId}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

describe('structured logs and request ids', () => {
  test('one request id: in the response header, on the JSON log line, and in the metadata of the event it appended', async () => {
    const res = await request(node.url).post('/chats/traced/messages').send({ content: 'follow me' }).expect(201)
    const requestId = String(res.headers['x-request-id'])
    assert.match(requestId, /^[0-9a-f-]{36}$/)
    const event = await node.db.selectFrom('events').select('metadata').where('stream_id', '=', 'chat-traced').executeTakeFirstOrThrow()
    assert.equal(event.metadata.requestId, requestId)
    const line = await lineFor(requestId)
    assert.equal(line.level, 30)
    assert.deepEqual([line.req!.method, line.req!.url, line.res!.statusCode], ['POST', '/chats/traced/messages', 201])
    assert.match(line.msg, /^POST \/chats\/traced\/messages 201 \d+ ms$/)
    assert.equal(typeof line.responseTime, 'number')
  })

  test('a well-formed X-Request-Id from a proxy is kept end to end; a malformed one is replaced', async () => {
    const kept = await request(node.url).post('/chats/proxied/messages').set('X-Request-Id', 'edge-7f.31_a').send({ content: 'via proxy' }).expect(201)
    assert.equal(kept.headers['x-request-id'], 'edge-7f.31_a')
    const event = await node.db.selectFrom('events').select('metadata').where('stream_id', '=', 'chat-proxied').executeTakeFirstOrThrow()
    assert.equal(event.metadata.requestId, 'edge-7f.31_a')
    await lineFor('edge-7f.31_a')

    const replaced = await request(node.url).get('/healthz').set('X-Request-Id', 'has spaces <and> more').expect(200)
    assert.match(String(replaced.headers['x-request-id']), /^[0-9a-f-]{36}$/)
  })

  test('cookies, Authorization and ?token= values never reach the log', async () => {
    const withSecrets = await request(node.url)
      .post('/chats/private/messages')
      .set('Authorization', 'Bearer log-secret-token')
      .set('Cookie', 'live_tea_session=s%3Asecret-session')
      .send({ content: 'psst' })
      .expect(201)
    const login = await request(node.url).get('/dashboard?token=log-secret-token').expect(303)
    const guess = await request(node.url).get('/dashboard?x=1&token=wrong-guess').expect(401)
    await lineFor(String(withSecrets.headers['x-request-id']))
    assert.equal((await lineFor(String(login.headers['x-request-id']))).req!.url, '/dashboard?token=REDACTED')
    assert.equal((await lineFor(String(guess.headers['x-request-id']))).req!.url, '/dashboard?x=1&token=REDACTED')
    const all = lines.map((line) => JSON.stringify(line)).join('\n')
    assert.doesNotMatch(all, /log-secret-token|secret-session|wrong-guess/)
  })

  test('probes and scrapes log at debug, so an info-level log is not flooded by them', async () => {
    const probe = await request(node.url).get('/readyz').expect(200)
    const scrape = await request(node.url).get('/metrics').set('Authorization', 'Bearer log-secret-token').expect(200)
    // Lines are written as responses finish: once this later request's line is there, the probes' would be too.
    const later = await request(node.url).get('/chats/later/messages').set('Accept', 'application/json').expect(200)
    await lineFor(String(later.headers['x-request-id']))
    for (const res of [probe, scrape]) assert.equal(lines.find((line) => line.reqId === res.headers['x-request-id']), undefined)
  })

  test('a post shed under load (503) logs one warning, without a stack: it is the node protecting itself, not a failure', async () => {
    const original = node.chats.handle.bind(node.chats)
    node.chats.handle = () => Promise.reject(new Overloaded(2))
    try {
      const res = await request(node.url).post('/chats/shed-log/messages').send({ content: 'too busy?' }).expect(503)
      const requestId = String(res.headers['x-request-id'])
      const line = await lineFor(requestId)
      assert.equal(line.level, 40)
      assert.equal(line.msg, 'POST /chats/shed-log/messages 503: shed, the node was too busy')
      assert.equal(line.err, undefined)
      assert.equal(lines.filter((candidate) => candidate.reqId === requestId).length, 1)
    } finally {
      node.chats.handle = original
    }
  })

  test('a request that fails on the server logs one error line, with the error and its stack, under its request id', async () => {
    const failing = await startTestNode({ logger: createLogger({ level: 'info', destination: { write: (line: string) => void lines.push(JSON.parse(line)) } }) })
    try {
      await failing.database!.drop()
      const res = await request(failing.url).get('/chats/gone')
      assert.ok(res.status >= 500, `a request that cannot reach its database fails on the server side, got ${res.status}`)
      const requestId = String(res.headers['x-request-id'])
      const line = await lineFor(requestId)
      assert.equal(line.level, 50)
      assert.match(line.msg, new RegExp(`^GET /chats/gone ${res.status} failed: `))
      assert.ok(line.err?.message, 'the database error itself, not just a status')
      assert.match(line.err!.stack, /\n\s+at /)
      assert.equal(lines.filter((candidate) => candidate.reqId === requestId).length, 1)
    } finally {
      await failing.close()
    }
  })
})

describe('the last line before an exit', () => {
  test('logWritten resolves once every line logged so far is written, in order, so "stopped" can be the last line', async () => {
    const folder = await mkdtemp(join(tmpdir(), 'live-tea-log-'))
    try {
      const file = join(folder, 'out.log')
      // Asynchronous, like the default stdout destination: a line is written after the call that logged it returns.
      const logger = createLogger({ level: 'info', destination: pino.destination({ dest: file, sync: false, mkdir: true }) })
      await new Promise((resolve) => setTimeout(resolve, 50)) // the file is open
      for (let i = 0; i < 2_000; i++) logger.info(`line ${i}`)
      logger.info('stopped')
      // Read without giving the event loop a turn: no write has been acknowledged yet, so at most the first line is there.
      const before = readFileSync(file, 'utf8').split('\n').filter(Boolean).length
      assert.ok(before <= 1, `not all written yet when the last call returns (${before} lines)`)
      await logWritten(logger)
      // Again without a turn: only waiting inside logWritten can have let the writes land.
      const written = readFileSync(file, 'utf8').split('\n').filter(Boolean).map((line) => (JSON.parse(line) as { msg: string }).msg)
      assert.equal(written.length, 2_001)
      assert.deepEqual(written.slice(0, 3), ['line 0', 'line 1', 'line 2'])
      assert.equal(written.at(-1), 'stopped')
    } finally {
      await rm(folder, { recursive: true, force: true })
    }
  })
})

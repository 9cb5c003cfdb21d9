import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { resolve } from 'node:path'
import { after, before, describe, test } from 'node:test'
import request from 'supertest'
import { freshDatabase, type TestDatabase } from '../support/database.js'
import { SseClient } from '../support/sse.js'

const ROOT = resolve(import.meta.dirname, '../..')
/** What an orchestrator typically allows between SIGTERM and SIGKILL. */
const EXIT_DEADLINE_MS = 10_000

interface AppProcess {
  child: ChildProcess
  url: string
  /** Every JSON line the process wrote to stdout. */
  lines: { msg: string; level: number; [key: string]: unknown }[]
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/** Starts `node --import tsx src/main.ts` on a database, on a free port, and waits for its "listening" line. */
async function startApp(databaseUrl: string): Promise<AppProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: ROOT,
    env: { ...withoutTestContext(process.env), DATABASE_URL: databaseUrl, PORT: '0', SESSION_SECRET: 'lifecycle-test-secret', LOG_LEVEL: 'info', NODE_ENV: 'production' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines: AppProcess['lines'] = []
  const stderr: string[] = []
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => child.once('exit', (code, signal) => done({ code, signal })))
  const url = await new Promise<string>((resolveUrl, reject) => {
    let buffer = ''
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk
      const complete = buffer.split('\n')
      buffer = complete.pop()!
      for (const text of complete) {
        const line = JSON.parse(text)
        lines.push(line)
        if (typeof line.url === 'string' && /listening/.test(line.msg)) resolveUrl(line.url.replace('localhost', '127.0.0.1'))
      }
    })
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => stderr.push(chunk))
    exited.then(({ code }) => reject(new Error(`the app exited with ${code} before listening: ${stderr.join('')}${lines.map((l) => l.msg).join('\n')}`)))
    setTimeout(() => reject(new Error('the app did not report listening within 30 s')), 30_000).unref()
  })
  return { child, url, lines, exited }
}

/** The app is not a test file: it must not talk to this runner as one. */
function withoutTestContext(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { NODE_TEST_CONTEXT: _, ...rest } = env
  return rest
}

let database: TestDatabase
before(async () => (database = await freshDatabase()))
after(() => database.drop())

describe('the app process', () => {
  test('SIGTERM with open chat and dashboard streams: every stream ends with a retry hint, the process exits 0 within 10 s', async () => {
    const app = await startApp(database.url)
    let exitedInTime = false
    try {
      const chatA = await SseClient.open(`${app.url}/chats/closing/events?after=0`)
      const chatB = await SseClient.open(`${app.url}/chats/closing/events?after=0`)
      const dashboard = await SseClient.open(`${app.url}/dashboard/stream`)
      await request(app.url).post('/chats/closing/messages').send({ content: 'last orders' }).expect(201)
      const streams = [chatA, chatB, dashboard]
      await Promise.all([chatA.waitForCount(1), chatB.waitForCount(1), dashboard.waitForCount(1)])
      const hintsBefore = streams.map((client) => client.retries.length)

      app.child.kill('SIGTERM')
      const deadline = new Promise<'too slow'>((done) => setTimeout(() => done('too slow'), EXIT_DEADLINE_MS).unref())
      const outcome = await Promise.race([app.exited, deadline])
      assert.notEqual(outcome, 'too slow', `the process was still running ${EXIT_DEADLINE_MS} ms after SIGTERM`)
      exitedInTime = true
      assert.deepEqual(outcome, { code: 0, signal: null })

      await Promise.all(streams.map((client) => client.ended))
      assert.deepEqual(
        streams.map((client) => client.retries.length),
        hintsBefore.map((count) => count + 1),
        'each stream ended with a retry: hint',
      )
      assert.deepEqual(chatA.ids, [1])
      const messages = app.lines.map((line) => line.msg)
      assert.ok(messages.includes('SIGTERM: closing streams, finishing in-flight work'), messages.join('\n'))
      assert.equal(messages.at(-1), 'stopped')
      assert.ok(app.lines.every((line) => line.level < 50), 'no error was logged on the way down')
    } finally {
      if (!exitedInTime) app.child.kill('SIGKILL')
    }
  })

  test('SIGINT (Ctrl-C) stops it the same way', async () => {
    const app = await startApp(database.url)
    let exitedInTime = false
    try {
      const chat = await SseClient.open(`${app.url}/chats/interrupted/events`)
      app.child.kill('SIGINT')
      const outcome = await Promise.race([app.exited, new Promise<'too slow'>((done) => setTimeout(() => done('too slow'), EXIT_DEADLINE_MS).unref())])
      assert.notEqual(outcome, 'too slow')
      exitedInTime = true
      assert.deepEqual(outcome, { code: 0, signal: null })
      await chat.ended
      assert.equal(chat.retries.length, 2, 'the opening hint and the closing one')
    } finally {
      if (!exitedInTime) app.child.kill('SIGKILL')
    }
  })
})

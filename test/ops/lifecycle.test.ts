import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import request from 'supertest'
import { freshDatabase, type TestDatabase } from '../support/database.js'
import { startProcessNode, type ProcessNode } from '../support/process-node.js'
import { SseClient } from '../support/sse.js'

/** What an orchestrator typically allows between SIGTERM and SIGKILL. */
const EXIT_DEADLINE_MS = 10_000

/** Sends the signal; resolves with the exit code, or 'too slow' past the deadline. */
async function stopWith(app: ProcessNode, signal: NodeJS.Signals): Promise<number | string> {
  const deadline = new Promise<'too slow'>((done) => setTimeout(() => done('too slow'), EXIT_DEADLINE_MS).unref())
  const outcome = await Promise.race([app.kill(signal), deadline])
  if (outcome === 'too slow') app.child.kill('SIGKILL')
  return outcome
}

/** The JSON lines the process logged (stdout is not a terminal, so no pretty printing). */
function logLines(app: ProcessNode): { msg: string; level: number }[] {
  return app
    .output()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line))
}

let database: TestDatabase
before(async () => (database = await freshDatabase()))
after(() => database.drop())

describe('the app process', () => {
  test('SIGTERM with open chat and dashboard streams: every stream ends with a retry hint, the process exits 0 within 10 s', async () => {
    const app = await startProcessNode(database.url)
    try {
      const chatA = await SseClient.open(`${app.url}/chats/closing/events?after=0`)
      const chatB = await SseClient.open(`${app.url}/chats/closing/events?after=0`)
      const dashboard = await SseClient.open(`${app.url}/dashboard/stream`)
      await request(app.url).post('/chats/closing/messages').send({ content: 'last orders' }).expect(201)
      const streams = [chatA, chatB, dashboard]
      await Promise.all([chatA.waitForCount(1), chatB.waitForCount(1), dashboard.waitForCount(1)])
      const hintsBefore = streams.map((client) => client.retries.length)

      assert.equal(await stopWith(app, 'SIGTERM'), 0, `exit code (or 'too slow': still running ${EXIT_DEADLINE_MS} ms after SIGTERM)`)

      await Promise.all(streams.map((client) => client.ended))
      assert.deepEqual(
        streams.map((client) => client.retries.length),
        hintsBefore.map((count) => count + 1),
        'each stream ended with a retry: hint',
      )
      assert.deepEqual(chatA.ids, [1])
      const lines = logLines(app)
      const messages = lines.map((line) => line.msg)
      assert.ok(messages.includes('SIGTERM: closing streams, finishing in-flight work'), app.output())
      assert.equal(messages.at(-1), 'stopped')
      assert.ok(lines.every((line) => line.level < 50), 'no error was logged on the way down')
    } finally {
      if (app.child.exitCode === null) app.child.kill('SIGKILL')
    }
  })

  test('SIGINT (Ctrl-C) stops it the same way', async () => {
    const app = await startProcessNode(database.url)
    try {
      const chat = await SseClient.open(`${app.url}/chats/interrupted/events`)
      assert.equal(await stopWith(app, 'SIGINT'), 0)
      await chat.ended
      assert.equal(chat.retries.length, 2, 'the opening hint and the closing one')
    } finally {
      if (app.child.exitCode === null) app.child.kill('SIGKILL')
    }
  })
})

/**
 * A stream that starts behind (?after=0, or a tab resuming with
 * Last-Event-ID after a while) catches up on a backlog of any size: the
 * backlog is paced to the socket, never written at once. Before, 500 frames
 * of about 3 KB (or fewer, longer messages) went out in one write, past the
 * hub's 1 MiB limit for a slow subscriber: the stream was cut, and cut again
 * on every reconnect from the same place, so it never caught up.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, test } from 'node:test'
import { startTestNode, waitForProjection, type TestNode } from '../support/node.js'
import { scrape, valueOf } from '../support/metrics.js'
import { SseClient } from '../support/sse.js'

let node: TestNode
before(async () => {
  node = await startTestNode()
})
after(() => node.close())

test('a stream from the start of a chat whose backlog is several MiB gets every version once, in order, on one connection', async () => {
  const chatId = 'backlog'
  const count = 1_200
  // Long messages from many people (the rate limit is per person): about 6 MiB of frames.
  const people = Array.from({ length: 50 }, (_, i) => ({ personId: `person-${i}-${randomUUID()}`, sender: `p${i}` }))
  for (let from = 0; from < count; from += 50) {
    await Promise.all(
      people.map((person, i) =>
        node.chats.handle({
          type: 'SendMessage',
          data: { chatId, ...person, content: `${from + i}: ${'a fairly long line of tea talk, '.repeat(100)}`, commandId: randomUUID() },
          metadata: { now: new Date() },
        }),
      ),
    )
  }
  await waitForProjection(node, chatId, count, 30_000)

  for (const cursor of [0, 100]) {
    const stream = await SseClient.open(`${node.url}/chats/${chatId}/events?after=${cursor}`)
    try {
      await stream.waitForCount(count - cursor, 30_000)
      assert.deepEqual(stream.ids, Array.from({ length: count - cursor }, (_, i) => cursor + i + 1))
      const bytes = stream.messages.reduce((sum, message) => sum + message.data.length, 0)
      assert.ok(bytes > 2 * (1 << 20), `premise: the backlog (${bytes} characters) is larger than the hub lets a live subscriber buffer`)
    } finally {
      stream.close()
    }
  }

  // And live after it: the next change arrives on the same connection.
  const stream = await SseClient.open(`${node.url}/chats/${chatId}/events?after=0`)
  try {
    await stream.waitForCount(count, 30_000)
    await node.chats.handle({ type: 'SendMessage', data: { chatId, personId: randomUUID(), sender: 'late', content: 'live after the backlog', commandId: randomUUID() }, metadata: { now: new Date() } })
    await stream.waitForCount(count + 1, 10_000)
    assert.equal(stream.ids.at(-1), count + 1)
    assert.match(stream.messages.at(-1)!.data, /live after the backlog/)
  } finally {
    stream.close()
  }
})

test('streams replaying the same history share its batches: each read from the database once, not once per stream; a message changed since is replayed as it is now', async () => {
  const chatId = 'shared-replay'
  const count = 300
  const author = { personId: `author-${randomUUID()}`, sender: 'author' }
  const people = Array.from({ length: 50 }, (_, i) => ({ personId: `reader-${i}-${randomUUID()}`, sender: `r${i}` }))
  for (let from = 0; from < count; from += 50) {
    await Promise.all(
      people.map((person, i) =>
        // Version 1 is the author's, sent alone first: the one retracted below.
        node.chats.handle({ type: 'SendMessage', data: { chatId, ...(from + i === 0 ? author : person), content: `line ${from + i}: the secret is oolong`, commandId: randomUUID() }, metadata: { now: new Date() } }),
      ),
    )
  }
  await waitForProjection(node, chatId, count, 30_000)
  const replayed = async () => ({
    database: valueOf(await scrape(node.url), 'live_tea_sse_replay_batches_total', { source: 'database' }),
    memory: valueOf(await scrape(node.url), 'live_tea_sse_replay_batches_total', { source: 'memory' }),
  })
  const before = await replayed()

  const streams = await Promise.all(Array.from({ length: 30 }, () => SseClient.open(`${node.url}/chats/${chatId}/events?after=0`)))
  try {
    await Promise.all(streams.map((stream) => stream.waitForCount(count, 30_000)))
    for (const stream of streams) assert.deepEqual(stream.ids, Array.from({ length: count }, (_, i) => i + 1))
    const after = await replayed()
    // Six full batches of 50 for each of 30 streams: 180 served, without sharing 180 reads.
    assert.equal(after.database - before.database + after.memory - before.memory, 180)
    assert.ok(after.database - before.database <= 12, `${after.database - before.database} reads from the database for 30 streams of the same 300 versions`)

    // Retracted while the chat's streams stay open: a stream replaying from the start now gets version 1 as it is now.
    const { version } = await node.chats.handle({ type: 'RetractMessage', data: { chatId, personId: author.personId, messageId: 1, commandId: randomUUID() }, metadata: { now: new Date() } })
    await Promise.all(streams.map((stream) => stream.waitForCount(version, 10_000)))
    const late = await SseClient.open(`${node.url}/chats/${chatId}/events?after=0`)
    try {
      await late.waitForCount(version, 10_000)
      assert.equal(late.messages[0]!.id, '1')
      assert.doesNotMatch(late.messages[0]!.data, /secret is oolong/, 'the retracted text replayed from memory')
      assert.match(streams[0]!.messages[0]!.data, /line 0: the secret is oolong/, 'premise: version 1 was replayed with its text before')
    } finally {
      late.close()
    }
  } finally {
    for (const stream of streams) stream.close()
  }
})

import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { connect, type Socket } from 'node:net'
import { after, before, test } from 'node:test'
import request from 'supertest'
import { startTestNode, waitForProjection, type TestNode } from '../support/node.js'

/*
 * Streams that ask for a chat's whole history and never read it. Before
 * catch-up respected backpressure, each one made the node hold the whole
 * history in memory, and their reads took the pool from everyone else.
 */

let node: TestNode
before(async () => {
  node = await startTestNode()
})
after(() => node.close())

const MESSAGES = 1_200
const STREAMS = 200
const TEXT = 'a long message of history that a stream replays, '.repeat(60) // ~3 KB: ~4 MB of frames in all

test('200 streams replaying a 4 MB history without ever reading hold a bounded amount of memory, and another person still posts', async () => {
  const chatId = 'long-history'
  for (let start = 0; start < MESSAGES; start += 200) {
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        node.chats.handle({ type: 'SendMessage', data: { chatId, personId: randomUUID(), sender: `writer ${start + i}`, content: `${start + i}: ${TEXT}`, commandId: randomUUID() }, metadata: { now: new Date() } }),
      ),
    )
  }
  await waitForProjection(node, chatId, MESSAGES, 30_000)
  global.gc?.()
  const heapBefore = process.memoryUsage().heapUsed

  // Never read: each socket sends its request and then stops reading, over six client addresses.
  const port = Number(new URL(node.url).port)
  const sockets: Socket[] = []
  for (let i = 0; i < STREAMS; i++) {
    const socket = connect({ host: '127.0.0.1', port, localAddress: `127.0.0.${1 + (i % 6)}` }, () => {
      socket.write(`GET /chats/${chatId}/events?after=0 HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n`)
      socket.pause()
    })
    socket.on('error', () => {})
    sockets.push(socket)
  }
  try {
    for (const deadline = Date.now() + 30_000; node.hub.subscriberCount < STREAMS && Date.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 50))
    assert.ok(node.hub.subscriberCount >= STREAMS * 0.9, `premise: the streams are open (${node.hub.subscriberCount})`)
    await new Promise((resolve) => setTimeout(resolve, 2_000))
    assert.ok(node.hub.subscriberCount >= STREAMS * 0.9, 'a reader that is slow (here: stopped) is held back, not dropped for being behind')

    // Someone else posts meanwhile: the pool is not taken by the replays.
    const posted = await request(node.url).post(`/chats/${chatId}-neighbour/messages`).send({ content: 'still here?' }).timeout(10_000)
    assert.equal(posted.status, 201)

    const grown = (process.memoryUsage().heapUsed - heapBefore) / 2 ** 20
    // Without backpressure this is the history times the streams (~800 MB); with it, a batch per stream at most.
    assert.ok(grown < 200, `heap grew by ${grown.toFixed(0)} MB for ${STREAMS} never-reading replays`)
  } finally {
    for (const socket of sockets) socket.destroy()
  }
})

/**
 * P7's and P2's baseline: a bare node:http server with the app's routes for a post
 * and a stream, and no database. GET /chats/:id/events subscribes to that
 * chat; POST /chats/:id/messages (JSON `{content, commandId}`, or a form) numbers the
 * message in its chat, writes one frame (the app's own, with this post's id
 * and text) to that chat's subscribers in a plain loop and answers
 * `201 {chatId, version}`, as the app does. What the app does beyond this
 * (sessions, rules, the commit, rendering, presence, heartbeats) is what the
 * ratio measures.
 */
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { frameMaker, sampleFromEnv } from './lib/frames.js'
import { cpuMs, serveParent } from './lib/processes.js'

const STREAM = /^\/chats\/([^/?]+)\/events(?:\?.*)?$/
const POST = /^\/chats\/([^/?]+)\/messages$/
/** Frames like the app's, sampled by the bench from the app's own. */
const frameOf = frameMaker(sampleFromEnv())

const chats = new Map<string, { version: number; subscribers: Set<ServerResponse> }>()
let subscriberCount = 0

function chat(chatId: string) {
  let found = chats.get(chatId)
  if (!found) chats.set(chatId, (found = { version: 0, subscribers: new Set() }))
  return found
}

const server = createServer((req, res) => {
  const url = req.url ?? ''
  const stream = req.method === 'GET' ? STREAM.exec(url) : null
  if (stream) {
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive' })
    res.write('retry: 1000\n\n')
    req.socket.setNoDelay(true)
    const subscribers = chat(stream[1]!).subscribers
    subscribers.add(res)
    subscriberCount++
    res.on('close', () => subscribers.delete(res) && subscriberCount--)
    return
  }
  const post = req.method === 'POST' ? POST.exec(url) : null
  if (post) {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (chunk) => (body += chunk))
    req.on('end', () => {
      const chatId = post[1]!
      // JSON as P7 posts, or a form as P2's composer posts do.
      const form = req.headers['content-type']?.startsWith('application/x-www-form-urlencoded')
      const content = form ? (new URLSearchParams(body).get('content') ?? '') : (JSON.parse(body) as { content: string }).content
      const target = chat(chatId)
      const version = ++target.version
      const frame = frameOf(version, content)
      for (const subscriber of target.subscribers) subscriber.write(frame)
      res.writeHead(201, { 'Content-Type': 'application/json' }).end(JSON.stringify({ chatId, version }))
    })
    return
  }
  res.writeHead(404).end()
})
server.keepAliveTimeout = 5_000
// The app's listen backlog, so that both open their streams on the same footing.
await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, resolve))

serveParent(
  { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` },
  { subscribers: () => ({ subscribers: subscriberCount }), cpu: () => cpuMs() },
  async () => {
    for (const { subscribers } of chats.values()) for (const subscriber of subscribers) subscriber.end()
    server.close()
    server.closeAllConnections()
  },
)

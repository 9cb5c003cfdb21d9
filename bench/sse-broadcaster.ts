/**
 * P3's baseline: a plain node:http Server-Sent Events broadcaster. GET
 * /events subscribes; POST /publish writes one frame of the shape and size
 * of the app's (the bench measures the app's frames first), encoded once,
 * to every subscriber, in a plain loop.
 */
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { frameMaker, sampleFromEnv } from './lib/frames.js'
import { serveParent, settledRss } from './lib/processes.js'

const subscribers = new Set<ServerResponse>()
let version = 0
const frameOf = frameMaker(sampleFromEnv())

const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url?.startsWith('/events')) {
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive' })
    res.write('retry: 1000\n\n')
    req.socket.setNoDelay(true)
    subscribers.add(res)
    res.on('close', () => subscribers.delete(res))
    return
  }
  if (req.method === 'POST' && req.url === '/publish') {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (chunk) => (body += chunk))
    req.on('end', () => {
      const content = new URLSearchParams(body).get('content') ?? ''
      const frame = frameOf(++version, content)
      for (const subscriber of subscribers) subscriber.write(frame)
      res.writeHead(204).end()
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
  { rss: () => ({ rss: settledRss(), subscribers: subscribers.size }) },
  async () => {
    for (const subscriber of subscribers) subscriber.end()
    server.close()
    server.closeAllConnections()
  },
)

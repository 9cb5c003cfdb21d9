/**
 * A Live Tea node in its own process, for the load generator to measure from
 * outside. Also serves a bare Express route on a second port in this same
 * process: P4's baseline, so the page and its baseline share one runtime.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import express from 'express'
import pg from 'pg'
import { startNode } from '../src/server.js'
import { BENCH_SESSION_SECRET } from './lib/mixed.js'
import { cpuMs, serveParent, settledRss } from './lib/processes.js'

const env = process.env
const node = await startNode({
  databaseUrl: env.BENCH_DATABASE_URL!,
  sessionSecret: BENCH_SESSION_SECRET,
  host: '127.0.0.1',
  port: 0,
  // The load comes from a few local addresses: budgets per client would measure themselves, not the app.
  maxStreamsPerAddress: 1_000_000,
  maxConnectionsPerAddress: 1_000_000,
  newChatsPerMinutePerAddress: 0,
  maxReadsPerAddress: 1_000_000,
  ...(env.BENCH_POOL_SIZE ? { poolSize: Number(env.BENCH_POOL_SIZE) } : {}),
  log: (level, message, error) => {
    if (level !== 'info') console.error(`[app ${level}] ${message}`, error ?? '')
  },
})

const bare = express()
bare.disable('x-powered-by')
bare.get('/bare', (_req, res) => void res.send('<!doctype html><p>hello</p>'))
// P4's floor: the same page's bytes, from memory (the parent posts them once).
let pageCopy = ''
bare.put('/bare-page', express.text({ type: '*/*', limit: '1mb' }), (req, res) => void ((pageCopy = String(req.body)), res.end()))
bare.get('/bare-page', (_req, res) => void res.type('html').send(pageCopy))
// P9b's baseline: the same match as GET /search, without ranking or snippets, on a pool of the app's size.
let searchPool: pg.Pool | undefined
bare.get('/bare-search', async (req, res) => {
  searchPool ??= new pg.Pool({ connectionString: env.BENCH_DATABASE_URL!, max: env.BENCH_POOL_SIZE ? Number(env.BENCH_POOL_SIZE) : 20 })
  const q = String(req.query.q ?? '')
  const chat = typeof req.query.chat === 'string' ? req.query.chat : undefined
  const { rows } = chat === undefined
    ? await searchPool.query(`select chat_id, message_id from search_index where document @@ websearch_to_tsquery('simple', $1) limit 50`, [q])
    : await searchPool.query(`select chat_id, message_id from search_index where document @@ websearch_to_tsquery('simple', $1) and chat_id = $2 limit 50`, [q, chat])
  res.json({ query: q, results: rows })
})
// P1's floor: the stack the user chose, doing nothing but reading the same form.
bare.post('/bare', express.urlencoded({ extended: false }), (_req, res) => void res.send('ok'))
const bareServer = createServer(bare)
await new Promise<void>((resolve) => bareServer.listen(0, '127.0.0.1', resolve))

serveParent(
  { url: node.url, bareUrl: `http://127.0.0.1:${(bareServer.address() as AddressInfo).port}` },
  {
    rss: () => ({ rss: settledRss(), subscribers: node.hub.subscriberCount }),
    rssNow: () => ({ rss: process.memoryUsage().rss }),
    cpu: () => cpuMs(),
  },
  async () => {
    bareServer.close()
    await searchPool?.end()
    await node.stop()
  },
)

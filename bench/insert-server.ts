/**
 * P1's baseline: the least a server can do per message. HTTP POST of a form,
 * one INSERT (autocommit) into a table with a primary key and a unique
 * command id, 303. Same Postgres, same pool size as the app, no framework.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import pg from 'pg'
import { cpuMs, serveParent } from './lib/processes.js'

const pool = new pg.Pool({ connectionString: process.env.BENCH_DATABASE_URL, max: Number(process.env.BENCH_POOL_SIZE ?? 20) })
pool.on('error', () => {})
await pool.query(`
  create table if not exists posts (
    id         bigint generated always as identity primary key,
    chat_id    text not null,
    command_id uuid not null unique,
    content    text not null,
    created_at timestamptz not null default now()
  )
`)

const server = createServer((req, res) => {
  const match = req.method === 'POST' ? /^\/chats\/([a-z0-9_-]+)\/messages$/.exec(req.url ?? '') : null
  if (!match) {
    res.writeHead(404).end()
    return
  }
  let body = ''
  req.setEncoding('utf8')
  req.on('data', (chunk) => (body += chunk))
  req.on('end', () => {
    const form = new URLSearchParams(body)
    pool
      .query('insert into posts (chat_id, command_id, content) values ($1, $2, $3)', [match[1], form.get('commandId'), form.get('content')])
      .then(() => res.writeHead(303, { location: `/chats/${match[1]}` }).end())
      .catch(() => res.writeHead(500).end())
  })
})
server.keepAliveTimeout = 5_000
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))

serveParent(
  { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` },
  { cpu: () => cpuMs(), count: async () => ({ count: Number((await pool.query('select count(*) as n from posts')).rows[0].n) }) },
  async () => {
    server.close()
    server.closeAllConnections()
    await pool.end()
  },
)

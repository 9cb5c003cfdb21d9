/**
 * The write engine alone, no HTTP: `tsx bench/write-path.ts [seconds] [writers] [chats]`
 * (DATABASE_URL: a server where a scratch database may be created).
 * Closed loops of SendMessage from a different person each time, into one
 * chat or many: how many commands the handler decides and appends a second,
 * and its CPU per command, for changes to the decider or the group commit.
 */
import { randomUUID } from 'node:crypto'
import pg from 'pg'
import { chatHandler } from '../src/chat/chat-commands.js'
import type { ChatCommand } from '../src/chat/chat.js'
import { createDb, createPool } from '../src/db/connect.js'
import { migrateToLatest } from '../src/db/migrate.js'

const [seconds = 5, writers = 50, chats = 1] = process.argv.slice(2).map(Number)
const server = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const name = `write_path_${process.pid}`
const admin = new pg.Client({ connectionString: server })
await admin.connect()
await admin.query(`create database ${name}`)
const url = new URL(server)
url.pathname = `/${name}`
const pool = createPool({ connectionString: url.toString(), max: 20 })
const db = createDb(pool)
try {
  await migrateToLatest(db)
  const handler = chatHandler({ db })
  let sent = 0
  const command = (i: number): ChatCommand => ({
    type: 'SendMessage',
    data: { chatId: `hot-${i % chats}`, personId: `person-${i % 5000}`, commandId: randomUUID(), sender: `person ${i % 5000}`, content: `hello from the write path ${i}` },
    metadata: { now: new Date() },
  })
  const run = async (ms: number) => {
    const end = performance.now() + ms
    let done = 0
    await Promise.all(Array.from({ length: writers }, async () => {
      while (performance.now() < end) {
        await handler.handle(command(sent++))
        done++
      }
    }))
    return done
  }
  await run(1000)
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  const done = await run(seconds * 1000)
  const elapsed = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  console.log(`${writers} writers, ${chats} chat(s): ${Math.round((done / elapsed) * 1000)} commands/s, node CPU ${Math.round((cpu.user + cpu.system) / done)} µs per command`)
} finally {
  await pool.end()
  await admin.query(`drop database ${name} with (force)`)
  await admin.end()
}

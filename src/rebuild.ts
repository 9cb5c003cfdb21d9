import { join, resolve } from 'node:path'
import { sql } from 'kysely'
import { messagesProjection } from './chat/messages-projection.js'
import { createDb, createPool } from './db/connect.js'
import { startEmbeddedPostgres } from './db/embedded.js'
import { migrateToLatest } from './db/migrate.js'
import { Projector } from './projector/projector.js'

/**
 * `npm run projections:rebuild`: replays the whole event log into the
 * messages read model. Safe while the app runs: one transaction holding the
 * checkpoint lock, so readers see the old rows until it commits.
 */
const embedded = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres({ dataDir: join(resolve(process.env.DATA_DIR ?? '.data'), 'postgres') })
const pool = createPool({ connectionString: process.env.DATABASE_URL ?? embedded!.url, max: 2 })
const db = createDb(pool)
try {
  await migrateToLatest(db)
  const { n: total } = await db.selectFrom('events').select(sql<number>`count(*)`.as('n')).executeTakeFirstOrThrow()
  console.log(`rebuilding "${messagesProjection.name}" from ${total} events`)
  const started = performance.now()
  let lastReport = 0
  const projected = await new Projector({ db, projection: messagesProjection }).rebuild({
    onProgress: (count) => {
      if (count - lastReport >= 20_000 || count === Number(total)) {
        lastReport = count
        console.log(`  ${count} / ${total}`)
      }
    },
  })
  const seconds = (performance.now() - started) / 1000
  const { n: rows } = await db.selectFrom('messages').select(sql<number>`count(*)`.as('n')).executeTakeFirstOrThrow()
  console.log(`done: ${projected} events replayed, ${rows} messages, in ${seconds.toFixed(2)} s (${Math.round(projected / Math.max(seconds, 0.001))} events/s)`)
} catch (error) {
  console.error('rebuild failed:', error instanceof Error ? error.message : error)
  process.exitCode = 1
} finally {
  await pool.end()
  await embedded?.stop()
}

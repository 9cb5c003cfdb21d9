import { join, resolve } from 'node:path'
import { sql } from 'kysely'
import { createDb, createPool } from './db/connect.js'
import { startEmbeddedPostgres } from './db/embedded.js'
import { migrateToLatest } from './db/migrate.js'
import { PROJECTIONS } from './projections.js'
import { Projector } from './projector/projector.js'

/**
 * `npm run projections:rebuild [-- name …]`: replays the whole event log into
 * the named projections (all by default). Safe while the app runs: each is
 * one transaction holding its checkpoint lock, so readers see the old rows
 * until it commits.
 */
const names = process.argv.slice(2).filter((arg) => arg !== '--')
const unknown = names.filter((name) => !PROJECTIONS.some((projection) => projection.name === name))
if (unknown.length > 0) {
  console.error(`no projection called ${unknown.map((name) => `"${name}"`).join(', ')}; there are: ${PROJECTIONS.map((projection) => projection.name).join(', ')}`)
  process.exit(2)
}
const chosen = names.length === 0 ? PROJECTIONS : PROJECTIONS.filter((projection) => names.includes(projection.name))
const embedded = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres({ dataDir: join(resolve(process.env.DATA_DIR ?? '.data'), 'postgres') })
const pool = createPool({ connectionString: process.env.DATABASE_URL ?? embedded!.url, max: 2 })
const db = createDb(pool)
try {
  await migrateToLatest(db)
  const { n: total } = await db.selectFrom('events').select(sql<number>`count(*)`.as('n')).executeTakeFirstOrThrow()
  for (const projection of chosen) {
    console.log(`rebuilding "${projection.name}" from ${total} events`)
    const started = performance.now()
    let lastReport = 0
    const projected = await new Projector({ db, projection }).rebuild({
      onProgress: (count) => {
        if (count - lastReport >= 20_000 || count === Number(total)) {
          lastReport = count
          console.log(`  ${count} / ${total}`)
        }
      },
    })
    const seconds = (performance.now() - started) / 1000
    console.log(`done: "${projection.name}", ${projected} events replayed in ${seconds.toFixed(2)} s (${Math.round(projected / Math.max(seconds, 0.001))} events/s)`)
  }
  const { n: rows } = await db.selectFrom('messages').select(sql<number>`count(*)`.as('n')).executeTakeFirstOrThrow()
  const { n: indexed } = await db.selectFrom('search_index').select(sql<number>`count(*)`.as('n')).executeTakeFirstOrThrow()
  console.log(`read models now: ${rows} messages, ${indexed} searchable`)
} catch (error) {
  console.error('rebuild failed:', error instanceof Error ? error.message : error)
  process.exitCode = 1
} finally {
  await pool.end()
  await embedded?.stop()
}

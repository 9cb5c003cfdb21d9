import { join, resolve } from 'node:path'
import { createDb, createPool } from './db/connect.js'
import { startEmbeddedPostgres } from './db/embedded.js'
import { migrateToLatest } from './db/migrate.js'

/** `npm run migrate`: bring the schema of DATABASE_URL (or the embedded database) up to date. */
const embedded = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres({ dataDir: join(resolve(process.env.DATA_DIR ?? '.data'), 'postgres') })
const pool = createPool({ connectionString: process.env.DATABASE_URL ?? embedded!.url, max: 2 })
try {
  const results = await migrateToLatest(createDb(pool))
  for (const result of results) console.log(`${result.status.toLowerCase()}: ${result.migrationName}`)
  console.log(results.length === 0 ? 'schema already up to date' : `applied ${results.length} migration(s)`)
} catch (error) {
  console.error(error instanceof Error ? error.message : error)
  process.exitCode = 1
} finally {
  await pool.end()
  await embedded?.stop()
}

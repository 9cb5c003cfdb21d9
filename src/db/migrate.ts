import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { Migrator, sql, type Migration, type MigrationProvider, type MigrationResultSet } from 'kysely'
import type { DB } from './database.js'

const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url))

/**
 * Migrations are plain SQL files, applied in file-name order. They are frozen
 * in time: nothing here imports application code.
 */
class SqlFileMigrationProvider implements MigrationProvider {
  constructor(private readonly dir: string) {}

  async getMigrations(): Promise<Record<string, Migration>> {
    const files = (await readdir(this.dir)).filter((file) => file.endsWith('.sql')).sort()
    const migrations: Record<string, Migration> = {}
    for (const file of files) {
      const text = await readFile(this.dir + file, 'utf8')
      migrations[file.replace(/\.sql$/, '')] = { up: async (db) => void (await sql.raw(text).execute(db)) }
    }
    return migrations
  }
}

/**
 * Brings the schema up to date. Kysely's migrator takes a lock, so several
 * nodes starting at once apply each migration exactly once. Throws the
 * migration's own error when one fails.
 */
export async function migrateToLatest(db: DB, dir = MIGRATIONS_DIR): Promise<NonNullable<MigrationResultSet['results']>> {
  const migrator = new Migrator({ db, provider: new SqlFileMigrationProvider(dir) })
  const { error, results = [] } = await migrator.migrateToLatest()
  if (error) {
    const failed = results.find((result) => result.status === 'Error')
    const cause = error instanceof Error ? error : new Error(String(error))
    throw new Error(`migration ${failed?.migrationName ?? '(unknown)'} failed: ${cause.message}`, { cause })
  }
  return results
}

import { randomBytes } from 'node:crypto'
import pg from 'pg'

/** The server tests create their databases on; npm test sets it (embedded or DATABASE_URL). */
export const ADMIN_URL = process.env.TEST_ADMIN_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'

export interface TestDatabase {
  url: string
  name: string
  drop(): Promise<void>
}

/** A new, empty database for one test file (or one test), dropped afterwards. */
export async function freshDatabase(): Promise<TestDatabase> {
  const name = `live_tea_test_${randomBytes(5).toString('hex')}`
  await admin((client) => client.query(`create database ${name}`))
  const url = new URL(ADMIN_URL)
  url.pathname = `/${name}`
  return {
    url: url.toString(),
    name,
    drop: () => admin((client) => client.query(`drop database if exists ${name} with (force)`)).then(() => {}),
  }
}

/** Runs one statement as the admin connection (terminating backends, creating databases). */
export async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_URL })
  client.on('error', () => {})
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import pg from 'pg'
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/db/embedded.js'

export interface BenchServer {
  /** Where the figures came from, for the report (password masked). */
  description: string
  /** The server's postmaster, when it runs on this machine: its CPU time is part of each figure. */
  postmasterPid: number | undefined
  fresh(label: string): Promise<BenchDatabase>
  stop(): Promise<void>
}

export interface BenchDatabase {
  url: string
  name: string
  drop(): Promise<void>
}

/**
 * The Postgres server of a bench run: DATABASE_URL's server when set (a
 * fresh database is created on it for each scenario, the one in the URL is
 * never touched), else an embedded server with its own data folder, so the
 * bench neither shares a cluster with the tests nor with `npm start`.
 */
export async function benchServer(root: string): Promise<BenchServer> {
  let embedded: EmbeddedPostgres | undefined
  let adminUrl: string
  if (process.env.DATABASE_URL) {
    const url = new URL(process.env.DATABASE_URL)
    url.pathname = '/postgres'
    adminUrl = url.toString()
  } else {
    embedded = await startEmbeddedPostgres({ dataDir: join(resolve(root), '.data', 'bench-postgres'), port: 54349, database: 'postgres' })
    adminUrl = embedded.url
  }
  const admin = async <T>(fn: (client: pg.Client) => Promise<T>) => {
    const client = new pg.Client({ connectionString: adminUrl })
    client.on('error', () => {})
    await client.connect()
    try {
      return await fn(client)
    } finally {
      await client.end()
    }
  }
  const version = await admin(async (client) => (await client.query('show server_version')).rows[0].server_version as string)
  // A backend's parent is the postmaster; read it while the backend lives.
  const postmasterPid = await admin(async (client) => {
    const backend = (await client.query('select pg_backend_pid() as pid')).rows[0].pid as number
    const text = await readFile(`/proc/${backend}/stat`, 'utf8').catch(() => undefined)
    return text ? Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[1]) : undefined
  })
  return {
    postmasterPid,
    description: `${embedded ? 'embedded' : 'DATABASE_URL'} PostgreSQL ${version} (${adminUrl.replace(/:[^:@/]*@/, ':***@')})`,
    async fresh(label) {
      const name = `live_tea_bench_${label}_${randomBytes(3).toString('hex')}`
      await admin((client) => client.query(`create database ${name}`))
      const url = new URL(adminUrl)
      url.pathname = `/${name}`
      return { url: url.toString(), name, drop: () => admin((client) => client.query(`drop database if exists ${name} with (force)`)).then(() => {}) }
    },
    async stop() {
      await embedded?.stop()
    },
  }
}

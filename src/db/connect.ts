import pg from 'pg'
import { Kysely, PostgresDialect } from 'kysely'
import type { Database, DB } from './database.js'

// int8 (bigint, count(*)) as a JS number: versions, positions and counts stay
// far below 2^53. Scoped to our own pools rather than pg's global parser table.
const TYPES = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === pg.types.builtins.INT8 && format !== 'binary') return (value: string) => Number(value)
    return pg.types.getTypeParser(oid, format)
  },
} as pg.CustomTypesConfig

export interface PoolProps {
  connectionString: string
  max?: number
  /** Called for errors on idle clients (a terminated backend, a restarted server). */
  onError?: (error: Error) => void
  applicationName?: string
}

export function createPool({ connectionString, max = 10, onError, applicationName = 'live-tea' }: PoolProps): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max,
    types: TYPES,
    application_name: applicationName,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
  })
  // Without a listener, an idle client whose backend dies emits an unhandled
  // 'error' and takes the whole process down; the pool already drops it.
  pool.on('error', (error) => onError?.(error))
  // pg-pool listens only while a client is idle. A connection that dies
  // mid-query (a restarted server, a cut network) also emits 'error' on the
  // checked-out client: the query itself already rejects with it, and the
  // pool discards the broken client on release, so swallowing it here is
  // what keeps the process alive.
  pool.on('connect', (client) => client.on('error', () => {}))
  return pool
}

/** A standalone client for LISTEN; the caller owns reconnection. */
export function createClient(connectionString: string, applicationName: string): pg.Client {
  return new pg.Client({ connectionString, types: TYPES, application_name: applicationName })
}

export function createDb(pool: pg.Pool): DB {
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
}

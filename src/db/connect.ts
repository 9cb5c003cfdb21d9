import pg from 'pg'
import { Kysely, PostgresDialect, sql } from 'kysely'
import type { Database, DB } from './database.js'

// int8 (bigint, count(*)) as a JS number: versions, positions and counts stay
// far below 2^53. Scoped to our own pools rather than pg's global parser table.
const TYPES = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === pg.types.builtins.INT8 && format !== 'binary') return (value: string) => Number(value)
    return pg.types.getTypeParser(oid, format)
  },
} as pg.CustomTypesConfig

const PREPARED_MARK = '/* prepared */'

/**
 * Put first in a hot statement of fixed text (no `select *`, no lists of
 * varying length: arrays instead): each connection then parses and plans it
 * once, not on every call. Planning the projector's batch write took longer
 * than running it.
 */
export const prepared = sql.raw(PREPARED_MARK)

const statementNames = new Map<string, string>()

/** pg's client, naming the statements marked `prepared`: pg then prepares each once per connection and reuses it. */
class Client extends pg.Client {}
const unnamed = pg.Client.prototype.query as (this: pg.Client, ...args: unknown[]) => unknown
Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
  const [text, values, callback] = args
  if (typeof text !== 'string' || !text.startsWith(PREPARED_MARK) || !Array.isArray(values) || callback !== undefined) return unnamed.apply(this, args)
  let name = statementNames.get(text)
  if (!name) statementNames.set(text, (name = `live-tea-${statementNames.size + 1}`))
  return unnamed.call(this, { name, text, values })
} as typeof pg.Client.prototype.query

export interface PoolProps {
  connectionString: string
  max?: number
  /** Called for errors on idle clients (a terminated backend, a restarted server). */
  onError?: (error: Error) => void
  applicationName?: string
}

export function createPool({ connectionString, max = 10, onError, applicationName = 'live-tea' }: PoolProps): pg.Pool {
  const pool = new pg.Pool({
    Client,
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

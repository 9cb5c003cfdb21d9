import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { readSettings, SettingsError, type Settings } from './config.js'
import { startEmbeddedPostgres } from './db/embedded.js'
import { createLogger, logWritten } from './ops/logger.js'

/**
 * The composition root, and the only code that reads the environment.
 *
 *   PORT            HTTP port (default 3000)
 *   DATABASE_URL    PostgreSQL to use; unset: an embedded server with its data in DATA_DIR
 *   SESSION_SECRET  signs session cookies; unset: generated once and kept in DATA_DIR
 *   DATA_DIR        where the embedded database and generated secret live (default .data)
 *   POSTS_PER_MINUTE_PER_ADDRESS  posts allowed per client address per minute (default 600; 0: off)
 *   MAX_SUBSCRIBERS live streams per process (default 19000; each holds a file descriptor: see README on ulimit -n)
 *   MAX_STREAMS_PER_ADDRESS       live streams one client address may hold (default 20)
 *   MAX_CONNECTIONS_PER_ADDRESS   open connections one client address may hold (default 256; not applied behind a trusted proxy)
 *   NEW_CHATS_PER_MINUTE_PER_ADDRESS  chats one client address may start per minute (default 20; 0: off)
 *   TRUST_PROXY     Express "trust proxy" (behind a TLS-terminating proxy): true/false, a hop count, or addresses, subnets, loopback
 *   DASHBOARD_TOKEN guards /dashboard and /metrics; unset: they are public
 *   LOG_LEVEL       pino level (default info); JSON lines, pretty in a terminal unless NODE_ENV=production
 *   READY_MAX_LAG_SECONDS, READY_MAX_LAG_EVENTS   projector lag past which /readyz answers 503 (default 30 s, 50000 events)
 */
const env = process.env
const settings = settingsOrExit()
const dataDir = resolve(env.DATA_DIR ?? '.data')
/** Past this, a stop that has not finished is cut (an orchestrator's SIGKILL typically follows at 10 s). */
const STOP_DEADLINE_MS = 9_000

const logger = createLogger({
  level: settings.logLevel,
  pretty: Boolean(process.stdout.isTTY) && env.NODE_ENV !== 'production',
})

function log(level: 'info' | 'warn' | 'error', message: string, error?: unknown): void {
  if (error === undefined) logger[level](message)
  else logger[level]({ err: error }, message)
}

/** Every setting checked before anything starts: a typo stops the app with a line naming the variable, not a NaN at run time. */
function settingsOrExit(): Settings {
  try {
    return readSettings(env)
  } catch (error) {
    if (!(error instanceof SettingsError)) throw error
    // Before the logger exists (LOG_LEVEL may be the wrong setting): plain lines on stderr.
    for (const problem of error.problems) console.error(`Live Tea cannot start: ${problem}`)
    process.exit(1)
  }
}

async function sessionSecret(): Promise<string> {
  if (env.SESSION_SECRET) return env.SESSION_SECRET
  const file = join(dataDir, 'session-secret')
  const existing = await readFile(file, 'utf8').catch(() => undefined)
  if (existing?.trim()) return existing.trim()
  await mkdir(dataDir, { recursive: true })
  const secret = randomBytes(32).toString('base64url')
  await writeFile(file, secret + '\n', { mode: 0o600 })
  return secret
}

async function main(): Promise<void> {
  // The app's modules load while the embedded server starts (or initdb runs):
  // a start is mostly those two, and they need not wait for each other.
  const server = import('./server.js')
  server.catch(() => {}) // awaited below; a failure is reported there, not as an unhandled rejection
  const embeddedLog = logger.child({ component: 'embedded-postgres' })
  const embedded = env.DATABASE_URL ? undefined : await startEmbeddedPostgres({ dataDir: join(dataDir, 'postgres'), log: (line) => embeddedLog.info(line) })
  // Empty counts as unset (a compose file's `DATABASE_URL=`), as in the line above.
  const databaseUrl = env.DATABASE_URL || embedded!.url
  const { startNode } = await server.catch(async (error) => {
    await embedded?.stop()
    throw error
  })
  const node = await startNode({
    databaseUrl,
    sessionSecret: await sessionSecret(),
    port: settings.port,
    trustProxy: settings.trustProxy,
    postsPerMinutePerAddress: settings.postsPerMinutePerAddress,
    maxSubscribers: settings.maxSubscribers,
    maxStreamsPerAddress: settings.maxStreamsPerAddress,
    maxConnectionsPerAddress: settings.maxConnectionsPerAddress,
    newChatsPerMinutePerAddress: settings.newChatsPerMinutePerAddress,
    maxReadsPerAddress: settings.maxReadsPerAddress,
    logger,
    dashboardToken: env.DASHBOARD_TOKEN || undefined,
    readiness: settings.readiness,
  })
  const listening = `http://localhost:${new URL(node.url).port}`
  logger.info(
    { url: listening, database: env.DATABASE_URL ? 'DATABASE_URL' : 'embedded', dashboard: env.DASHBOARD_TOKEN ? 'token' : 'public' },
    `Live Tea listening on ${listening}`,
  )

  let stopping = false
  const shutdown = async (signal: string) => {
    if (stopping) return
    stopping = true
    logger.info({ signal }, `${signal}: closing streams, finishing in-flight work`)
    // Never hang: a stop that is not done by the deadline is cut, and says so with its exit code.
    setTimeout(() => {
      log('error', `graceful stop did not finish within ${STOP_DEADLINE_MS} ms; exiting anyway`)
      process.exit(1)
    }, STOP_DEADLINE_MS).unref()
    try {
      await node.stop()
      await embedded?.stop()
    } catch (error) {
      log('error', 'graceful stop failed', error)
      process.exit(1)
    }
    log('info', 'stopped')
    await logWritten(logger)
    process.exit(0)
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  process.on('SIGINT', () => void shutdown('SIGINT'))
}

process.on('uncaughtException', (error) => {
  log('error', 'uncaught exception; exiting', error)
  process.exit(1)
})

main().catch((error) => {
  log('error', 'failed to start', error)
  process.exit(1)
})

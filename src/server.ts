import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import type pg from 'pg'
import { createApp } from './app.js'
import type { TrustProxy } from './config.js'
import { messagesProjection, MESSAGES_CHANNEL, parseNotification, sentMessage, type Change } from './chat/messages-projection.js'
import { ProjectionWatch } from './chat/projection-watch.js'
import { Visits } from './chat/visits.js'
import { chatHandler, type ChatHandler } from './chat/chat-commands.js'
import { createDb, createPool } from './db/connect.js'
import type { DB } from './db/database.js'
import { Listener } from './db/listener.js'
import { migrateToLatest } from './db/migrate.js'
import { CoalescedNotify } from './event-store/notify.js'
import { clientAddress, PerClient } from './http/client-address.js'
import { describeError, HttpError } from './http/errors.js'
import { expressMessages } from './http/express-messages.js'
import { toOriginForm } from './http/request-target.js'
import { messageRenderer, partialRenderer } from './http/views.js'
import { eventsRoute } from './live/events-route.js'
import { dataFrame, Hub } from './live/hub.js'
import { asSeenBy, parsePresenceNotification, Presence, PRESENCE_CHANNEL, type People } from './live/presence.js'
import { dashboardRenderer } from './ops/dashboard-renderer.js'
import { SILENT_LOGGER, withoutSecrets, type Logger } from './ops/logger.js'
import { NodeMetrics } from './ops/metrics.js'
import { checkReadiness, DEFAULT_READINESS, type ReadinessLimits } from './ops/readiness.js'
import { DashboardSampler } from './ops/sampler.js'
import { PROJECTIONS } from './projections.js'
import { Projector } from './projector/projector.js'

export const EVENTS_CHANNEL = 'events'

export interface NodeProps {
  databaseUrl: string
  sessionSecret: string
  port?: number
  host?: string
  poolSize?: number
  maxSubscribers?: number
  /** Live streams one client address may hold (default 20). */
  maxStreamsPerAddress?: number
  /** Open connections one client address may hold (default 256); not applied behind a trusted proxy, whose address all clients share. */
  maxConnectionsPerAddress?: number
  /** Chats one client address may start per minute (default 20; 0: off). */
  newChatsPerMinutePerAddress?: number
  /** Reads (GET, HEAD) one client address may have running at once (default 4; the rest wait in its line). */
  maxReadsPerAddress?: number
  trustProxy?: TrustProxy
  /** See AppDeps.postsPerMinutePerAddress (default 0: off). */
  postsPerMinutePerAddress?: number
  /** How long a client may take to send its request headers (slowloris guard). */
  headersTimeoutMs?: number
  /** Structured logs (requests, with their ids, and everything `log` says); unset: silent. */
  logger?: Logger
  /** Overrides where the node's own messages go; unset: to `logger`. */
  log?: (level: 'info' | 'warn' | 'error', message: string, error?: unknown) => void
  /** Set: /dashboard and /metrics need it. */
  dashboardToken?: string
  /** When /readyz says "not ready" (projector lag, database answer time). */
  readiness?: Partial<ReadinessLimits>
}

export interface AppNode {
  server: Server
  url: string
  pool: pg.Pool
  db: DB
  hub: Hub
  projector: Projector
  /** Every projection's projector, the messages one first. */
  projectors: Projector[]
  visits: Visits
  listener: Listener
  chats: ChatHandler
  presence: Presence
  metrics: NodeMetrics
  sampler: DashboardSampler
  /** Graceful stop: refuse new work, end streams with a retry hint, finish commands, close the pool. */
  stop(): Promise<void>
}

/**
 * Connections the kernel holds for the node until it accepts them. Node's
 * default, 511, drops the rest of a burst (thousands of pages reconnecting
 * after a restart), and a client whose SYN was dropped waits a second before
 * it tries again. The kernel caps this at `net.core.somaxconn`.
 */
const LISTEN_BACKLOG = 4096

/**
 * Builds and starts one app node on a database: migrations, pool, projector,
 * live hub, one LISTEN connection, HTTP server. Reads no environment (that is
 * main.ts's job), so tests start real nodes with it too.
 */
export async function startNode(props: NodeProps): Promise<AppNode> {
  const logger = props.logger ?? SILENT_LOGGER
  const log = props.log ?? ((level, message, error) => (error === undefined ? logger[level](message) : logger[level]({ err: error }, message)))
  const metrics = new NodeMetrics()
  const pool = createPool({ connectionString: props.databaseUrl, max: props.poolSize ?? 20, onError: (error) => log('warn', 'idle database client failed', error) })
  const db = createDb(pool)
  await migrateToLatest(db)

  const projectionWatch = new ProjectionWatch()
  const renderMessage = messageRenderer()
  const hub = new Hub({
    db,
    // Not kept: a frame's HTML is written at once and dropped, and the node's pages render their
    // own when they are asked for. Kept, every post's HTML (~6 KB as a string with emoji in it)
    // was promoted to the old generation: in P7, 87 MB more heap after the run and scavenges 35%
    // longer in all (2.3 against 1.7 s; p90 27 against 40 ms).
    render: (message) => renderMessage(message, 'live', false),
    maxSubscribers: props.maxSubscribers,
    onError: (error) => log('error', 'live hub', error),
    onPushed: metrics.pushed,
    onReplayBatch: metrics.replayed,
  })
  const projector = new Projector({
    db,
    projection: messagesProjection,
    // Under load, the appends of 10 ms share one batch; a lone append still projects at once.
    spacingMs: 10,
    onProjected: (batch, durationMs) => {
      metrics.batchProjected(messagesProjection.name, batch.count, durationMs)
      // This node's hub and waiting requests hear of it without the NOTIFY round trip.
      for (const [chatId, version] of batch.heads) {
        projectionWatch.projected(chatId, version)
        hub.notify(chatId, version)
      }
    },
    onError: (error) => log('error', 'projector', error),
  })
  // The other projections of the same log, each with its own checkpoint: one added to a running
  // system starts at the first event and backfills in batches while the app serves. Nothing live
  // waits on them, so under load they gather a tenth of a second of events per batch.
  const projectors = [
    projector,
    ...PROJECTIONS.filter((projection) => projection !== messagesProjection).map(
      (projection) =>
        new Projector({
          db,
          projection,
          settleMs: 100,
          onProjected: (batch, durationMs) => metrics.batchProjected(projection.name, batch.count, durationMs),
          onError: (error) => log('error', `projector ${projection.name}`, error),
        }),
    ),
  ]
  const wakeProjectors = () => projectors.forEach((each) => each.wake())
  const visits = new Visits({ db, onError: (error) => log('warn', 'visits', error) })
  const notifyEvents = new CoalescedNotify(pool, EVENTS_CHANNEL, (error) => log('warn', 'events notify', error), 10)
  const chats = chatHandler({
    db,
    onAppended: (events) => {
      metrics.eventsAppended(events)
      // Committed is final: this node's subscribers need not wait for the
      // projection. Only a message just sent is whole in its event; other
      // changes reach the hub through the projection. The hub still only
      // continues unbroken runs, and a subscriber catching up from the table
      // waits for the rows to show.
      const sent: Change[] = []
      for (const event of events) {
        const message = sentMessage(event)
        if (message) sent.push({ version: event.version, message })
      }
      hub.offer(sent)
      wakeProjectors()
      notifyEvents.hint()
    },
    onOutcome: metrics.commandOutcome,
  })

  const renderPeople = partialRenderer<People & { chatId: string }>('_people')
  const presence = new Presence({
    db,
    onChange: (chatId, people) => {
      const frame = (readerId?: string) => dataFrame(renderPeople({ chatId, ...asSeenBy(people, readerId) }))
      // One frame for every reader, and one for each person typing: their own streams leave them out of the typing line.
      const own = new Map(people.people.filter((person) => person.typing).map((person) => [person.personId, frame(person.personId)]))
      hub.sendEphemeral(chatId, frame(), own)
    },
    onError: (error) => log('warn', 'presence', error),
  })

  const listener = new Listener({
    connectionString: props.databaseUrl,
    channels: [EVENTS_CHANNEL, MESSAGES_CHANNEL, PRESENCE_CHANNEL],
    applicationName: 'live-tea listener',
    onError: (error) => log('warn', 'LISTEN connection lost; reconnecting', error),
  })
  listener.on('notification', (channel: string, payload: string) => {
    if (channel === EVENTS_CHANNEL) return wakeProjectors()
    if (channel === PRESENCE_CHANNEL) {
      const changed = parsePresenceNotification(payload)
      // This node's own changes were shown as soon as they were written.
      if (changed && changed.node !== presence.nodeId) presence.changed(changed.chats)
      return
    }
    for (const [chatId, version] of parseNotification(payload)) {
      projectionWatch.projected(chatId, version)
      hub.notify(chatId, version)
    }
  })
  // Notifications sent while disconnected are gone: catch up on every (re)connect.
  listener.on('connected', () => {
    wakeProjectors()
    hub.resync()
    presence.changed('all')
  })
  await listener.start()
  await presence.start()
  for (const each of projectors) await each.start()

  const sampler = new DashboardSampler({
    db,
    hub,
    presence,
    projections: projectors.map((each) => each.name),
    commandLatency: metrics.commandLatency,
    render: dashboardRenderer(),
    onError: (error) => log('warn', 'dashboard sampler could not read the database', error),
  })
  sampler.start()
  metrics.watch({ pool, hub, projector, listener, presence, sampler })
  const readinessLimits: ReadinessLimits = { ...DEFAULT_READINESS, ...props.readiness }

  const app = createApp({
    db,
    chats,
    visits,
    presence,
    projectionWatch,
    renderMessage,
    sessionSecret: props.sessionSecret,
    trustProxy: props.trustProxy,
    postsPerMinutePerAddress: props.postsPerMinutePerAddress,
    newChatsPerMinutePerAddress: props.newChatsPerMinutePerAddress ?? 20,
    maxReadsPerAddress: props.maxReadsPerAddress ?? 4,
    logger,
    ops: { metrics, sampler, readiness: () => checkReadiness(db, projectors.map((each) => each.name), readinessLimits) },
    dashboardToken: props.dashboardToken,
    // pino-http writes the failure, with the request id, on the request's own log line.
    onError: (error, req) => {
      if (req.res) req.res.err = error instanceof Error ? error : new Error(String(error))
      props.log?.('error', `${req.method} ${req.originalUrl} failed`, error)
    },
  })
  const streams = eventsRoute({
    hub,
    presence,
    visits,
    sessionSecret: props.sessionSecret,
    renderPeople: async (chatId, readerId) => renderPeople({ chatId, ...asSeenBy(await presence.people(chatId), readerId) }),
    clientOf: clientAddress(props.trustProxy),
    maxStreamsPerAddress: props.maxStreamsPerAddress ?? 20,
  })
  // Express's default final handler would answer with the error's stack
  // outside production; nothing reaches it now, but if something ever does,
  // this answers instead, as plainly as a page that cannot be rendered.
  const handle = app as unknown as (req: IncomingMessage, res: ServerResponse, done: (error?: unknown) => void) => void
  const lastResort = (req: IncomingMessage, res: ServerResponse, error: unknown) => {
    const described = error === undefined ? new HttpError(404, 'There is nothing at this address.') : describeError(error, req.method ?? 'GET')
    const target = withoutSecrets(String(req.url).slice(0, 300))
    log(described.status >= 500 ? 'error' : 'warn', `${req.method} ${target} from ${req.socket.remoteAddress}: ${described.status}, ${described.message}`, described.status >= 500 ? error : undefined)
    if (res.headersSent) return void res.destroy()
    res.writeHead(described.status, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff', ...described.headers })
    res.end(`${described.message}\n`)
  }
  // Timeouts below are enforced by a periodic sweep (30 s by default, which
  // would let a slow client hold a socket three times longer than intended).
  const server = createServer({ connectionsCheckingInterval: 1_000, ...expressMessages(app) }, (req, res) => {
    // A throw here would be an uncaught exception, which stops the process.
    try {
      if (!toOriginForm(req)) return lastResort(req, res, new HttpError(400, 'The request target must be a path such as /chats/tea, or a valid absolute http:// URL.'))
      if (!streams(req, res)) handle(req, res, (error) => lastResort(req, res, error))
    } catch (error) {
      lastResort(req, res, error)
    }
  })
  // One address cannot hold every socket (each costs a file descriptor, of
  // which a process has a fixed number). Behind a trusted proxy every client
  // shares the proxy's address, so the proxy has to enforce this instead.
  if (!props.trustProxy) {
    const connections = new PerClient(props.maxConnectionsPerAddress ?? 256)
    server.on('connection', (socket) => {
      const address = socket.remoteAddress ?? ''
      if (!connections.take(address)) {
        // Answered before reading a request, and closed: a clear refusal rather than a reset.
        return refuseOnSocket(socket, '429 Too Many Requests', { 'Retry-After': '10' }, 'Too many connections from your address; close some and try again.')
      }
      socket.once('close', () => connections.give(address))
    })
  }
  // Node hands CONNECT (a proxy tunnel) to 'connect' listeners and, with none, drops the socket
  // without a word: this is no proxy, and says so.
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    log('warn', `CONNECT ${withoutSecrets(String(req.url).slice(0, 300))} from ${req.socket.remoteAddress}: 405`)
    refuseOnSocket(socket, '405 Method Not Allowed', { Allow: 'GET, HEAD, POST' }, 'This server is not a proxy: it does not take CONNECT.')
  })
  // Slow clients cannot pin the server: bounded time to send headers and a request.
  server.headersTimeout = props.headersTimeoutMs ?? 10_000
  server.requestTimeout = Math.max(30_000, server.headersTimeout)
  server.keepAliveTimeout = 5_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ port: props.port ?? 0, host: props.host ?? '0.0.0.0', backlog: LISTEN_BACKLOG }, () => resolve())
  })
  const { port } = server.address() as AddressInfo
  const url = `http://127.0.0.1:${port}`

  let stopping: Promise<void> | undefined
  const stop = () =>
    (stopping ??= (async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      hub.close()
      sampler.close()
      server.closeIdleConnections()
      await chats.drained()
      for (const each of projectors) await each.stop()
      await visits.flush().catch((error) => log('warn', 'visits', error))
      await presence.stop()
      await sampler.stop()
      await listener.stop()
      // Streams were ended; anything still open after a grace period is cut.
      const grace = setTimeout(() => server.closeAllConnections(), 3_000)
      await closed
      clearTimeout(grace)
      await pool.end()
    })())

  return { server, url, pool, db, hub, projector, projectors, visits, listener, chats, presence, metrics, sampler, stop }
}

/** A plain-text refusal written on a socket that has no response object (no request read, or one Node does not serve), then closed. */
function refuseOnSocket(socket: Duplex, status: string, headers: Record<string, string>, message: string): void {
  const body = `${message}\n`
  const lines = Object.entries({ ...headers, 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': String(Buffer.byteLength(body)), Connection: 'close' }).map(([name, value]) => `${name}: ${value}\r\n`)
  socket.end(`HTTP/1.1 ${status}\r\n${lines.join('')}\r\n${body}`)
}

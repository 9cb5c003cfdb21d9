import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type pg from 'pg'
import { createApp } from './app.js'
import { messagesProjection, MESSAGES_CHANNEL, parseNotification, toMessage, type Message } from './chat/messages-projection.js'
import { SendMessageHandler } from './chat/send-message.js'
import { createDb, createPool } from './db/connect.js'
import type { DB } from './db/database.js'
import { Listener } from './db/listener.js'
import { migrateToLatest } from './db/migrate.js'
import { CoalescedNotify } from './event-store/notify.js'
import { messageRenderer } from './http/views.js'
import { Hub } from './live/hub.js'
import { Projector } from './projector/projector.js'

export const EVENTS_CHANNEL = 'events'

export interface NodeProps {
  databaseUrl: string
  sessionSecret: string
  port?: number
  host?: string
  poolSize?: number
  maxSubscribers?: number
  trustProxy?: boolean | string | number
  /** See AppDeps.postsPerMinutePerAddress (default 0: off). */
  postsPerMinutePerAddress?: number
  /** How long a client may take to send its request headers (slowloris guard). */
  headersTimeoutMs?: number
  log?: (level: 'info' | 'warn' | 'error', message: string, error?: unknown) => void
}

export interface AppNode {
  server: Server
  url: string
  pool: pg.Pool
  db: DB
  hub: Hub
  projector: Projector
  listener: Listener
  sendMessage: SendMessageHandler
  /** Graceful stop: refuse new work, end streams with a retry hint, finish commands, close the pool. */
  stop(): Promise<void>
}

/**
 * Builds and starts one app node on a database: migrations, pool, projector,
 * live hub, one LISTEN connection, HTTP server. Reads no environment (that is
 * main.ts's job), so tests start real nodes with it too.
 */
export async function startNode(props: NodeProps): Promise<AppNode> {
  const log = props.log ?? (() => {})
  const pool = createPool({ connectionString: props.databaseUrl, max: props.poolSize ?? 20, onError: (error) => log('warn', 'idle database client failed', error) })
  const db = createDb(pool)
  await migrateToLatest(db)

  const hub = new Hub({
    db,
    render: messageRenderer(),
    maxSubscribers: props.maxSubscribers,
    onError: (error) => log('error', 'live hub', error),
  })
  const projector = new Projector({
    db,
    projection: messagesProjection,
    // This node's own subscribers get new messages without waiting for the NOTIFY round trip.
    onProjected: (events) => hub.offer(events.map(toMessage).filter((message): message is Message => message !== undefined)),
    onError: (error) => log('error', 'projector', error),
  })
  const notifyEvents = new CoalescedNotify(pool, EVENTS_CHANNEL, (error) => log('warn', 'events notify', error))
  const sendMessage = new SendMessageHandler({
    db,
    onAppended: (events) => {
      // Committed is final: this node's subscribers need not wait for the
      // projection. The hub still only continues unbroken runs, and a
      // subscriber catching up from the table waits for the rows to show.
      hub.offer(events.map(toMessage).filter((message): message is Message => message !== undefined))
      projector.wake()
      notifyEvents.hint()
    },
  })

  const listener = new Listener({
    connectionString: props.databaseUrl,
    channels: [EVENTS_CHANNEL, MESSAGES_CHANNEL],
    applicationName: 'live-tea listener',
    onError: (error) => log('warn', 'LISTEN connection lost; reconnecting', error),
  })
  listener.on('notification', (channel: string, payload: string) => {
    if (channel === EVENTS_CHANNEL) return projector.wake()
    for (const [chatId, version] of parseNotification(payload)) hub.notify(chatId, version)
  })
  // Notifications sent while disconnected are gone: catch up on every (re)connect.
  listener.on('connected', () => {
    projector.wake()
    hub.resync()
  })
  await listener.start()
  await projector.start()

  const app = createApp({ db, sendMessage, hub, sessionSecret: props.sessionSecret, trustProxy: props.trustProxy, postsPerMinutePerAddress: props.postsPerMinutePerAddress, onError: (error) => log('error', 'request failed', error) })
  // Timeouts below are enforced by a periodic sweep (30 s by default, which
  // would let a slow client hold a socket three times longer than intended).
  const server = createServer({ connectionsCheckingInterval: 1_000 }, app)
  // Slow clients cannot pin the server: bounded time to send headers and a request.
  server.headersTimeout = props.headersTimeoutMs ?? 10_000
  server.requestTimeout = Math.max(30_000, server.headersTimeout)
  server.keepAliveTimeout = 5_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(props.port ?? 0, props.host ?? '0.0.0.0', () => resolve())
  })
  const { port } = server.address() as AddressInfo
  const url = `http://127.0.0.1:${port}`

  let stopping: Promise<void> | undefined
  const stop = () =>
    (stopping ??= (async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      hub.close()
      server.closeIdleConnections()
      await sendMessage.drained()
      await projector.stop()
      await listener.stop()
      // Streams were ended; anything still open after a grace period is cut.
      const grace = setTimeout(() => server.closeAllConnections(), 3_000)
      await closed
      clearTimeout(grace)
      await pool.end()
    })())

  return { server, url, pool, db, hub, projector, listener, sendMessage, stop }
}

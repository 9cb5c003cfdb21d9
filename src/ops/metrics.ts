import type { NextFunction, Request, Response } from 'express'
import type pg from 'pg'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { Outcome } from '../event-store/command-handler.js'
import type { Listener } from '../db/listener.js'
import type { StoredEvent } from '../event-store/event-store.js'
import type { Hub } from '../live/hub.js'
import type { Presence } from '../live/presence.js'
import type { Projector } from '../projector/projector.js'
import { LAG_COUNT_LIMIT } from './figures.js'
import { LatencyWindow } from './latency-window.js'
import type { DashboardSampler } from './sampler.js'


/** What /metrics reads from the node's live parts at scrape time. */
export interface MetricsSources {
  pool: pg.Pool
  hub: Hub
  projector: Projector
  listener: Listener
  /** Who is here: this node's people and frames are read from memory at scrape time. */
  presence: Pick<Presence, 'localCount' | 'framesSent'>
  /** The node's sampler: projector lag, the log's size and the people on all nodes come from its latest sample, not from a query per scrape. */
  sampler: Pick<DashboardSampler, 'current' | 'subscriberCount' | 'projectionNames'>
}

/** The route whose request durations are the command latency on the dashboard. */
export const COMMAND_ROUTE = 'POST /chats/:chatId/messages'

const OUTCOMES: Outcome[] = ['accepted', 'duplicate', 'rejected', 'conflict', 'failed', 'shed']
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])

/**
 * Node process metrics (CPU, memory, event loop, GC) describe the process,
 * not an app node, and their collectors (an event-loop monitor, a GC
 * observer) cannot be removed again: one set per process, shared by every
 * node's registry. Tests run several nodes in one process.
 */
let processRegistry: Registry | undefined
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry()
    collectDefaultMetrics({ register: processRegistry })
  }
  return processRegistry
}

/**
 * One app node's Prometheus metrics, in a registry of its own: the hooks the
 * command handler, projector and hub call, and gauges read at scrape time.
 *
 * @example
 * const metrics = new NodeMetrics()
 * new Hub({ ..., onPushed: metrics.pushed })
 * metrics.watch({ pool, hub, projector, listener, presence, sampler })
 * res.type(metrics.contentType).send(await metrics.text())
 */
export class NodeMetrics {
  private readonly own = new Registry()
  private readonly registry: Registry
  private sources: MetricsSources | undefined
  private reconnectsCounted = 0
  private presenceFramesCounted = 0
  /** Command request durations of the last 10 s, for the dashboard's p50/p99. */
  readonly commandLatency = new LatencyWindow({ windowMs: 10_000 })

  private readonly requestDuration = new Histogram({
    name: 'live_tea_http_request_duration_seconds',
    help: 'HTTP request duration by route pattern and status (event streams are counted by live_tea_sse_subscribers instead).',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.own],
  })
  private readonly commands = new Counter({
    name: 'live_tea_commands_total',
    help: 'Chat command outcomes: accepted, duplicate (a repeated commandId), rejected (by a domain rule), conflict (retried after a concurrent write), failed, shed (refused with 503 under overload, nothing appended).',
    labelNames: ['outcome'] as const,
    registers: [this.own],
  })
  private readonly appended = new Counter({
    name: 'live_tea_events_appended_total',
    help: 'Events this node appended to the log, by type.',
    labelNames: ['type'] as const,
    registers: [this.own],
  })
  private readonly projected = new Counter({
    name: 'live_tea_projector_events_total',
    help: 'Events this node projected, per projection.',
    labelNames: ['projection'] as const,
    registers: [this.own],
  })
  private readonly batchDuration = new Histogram({
    name: 'live_tea_projector_batch_duration_seconds',
    help: 'Duration of one projector batch transaction on this node, per projection.',
    labelNames: ['projection'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.own],
  })
  private readonly framesPushed = new Counter({
    name: 'live_tea_sse_messages_pushed_total',
    help: 'Chat messages written to SSE subscribers on this node (one per message per subscriber).',
    registers: [this.own],
  })
  private readonly replayBatches = new Counter({
    name: 'live_tea_sse_replay_batches_total',
    help: 'Batches of history replayed to streams catching up on this node, by where they came from: read from the database, or kept from a read for another stream.',
    labelNames: ['source'] as const,
    registers: [this.own],
  })

  constructor() {
    const sources = () => this.sources
    const own = [this.own]
    new Gauge({
      name: 'live_tea_sse_subscribers',
      help: 'Open chat event streams on this node.',
      registers: own,
      collect() {
        const hub = sources()?.hub
        if (hub) this.set(hub.subscriberCount)
      },
    })
    new Gauge({
      name: 'live_tea_sse_chats',
      help: 'Chats with at least one open stream on this node.',
      registers: own,
      collect() {
        const hub = sources()?.hub
        if (hub) this.set(hub.chatCount)
      },
    })
    new Gauge({
      name: 'live_tea_dashboard_subscribers',
      help: 'Open dashboard streams on this node.',
      registers: own,
      collect() {
        this.set(sources()?.sampler.subscriberCount ?? 0)
      },
    })
    // Per projection; NaN for all while the database cannot be read.
    const lagGauge = (name: string, help: string, pick: (lag: { events: number; seconds: number }) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['projection'] as const,
        registers: own,
        collect() {
          const sampler = sources()?.sampler
          const current = sampler?.current
          for (const projection of sampler?.projectionNames ?? []) {
            const lag = current?.lags.find((each) => each.projection === projection)
            this.set({ projection }, lag ? pick(lag) : Number.NaN)
          }
        },
      })
    lagGauge('live_tea_projector_lag_events', `Committed events a projection has not read yet (counted exactly up to ${LAG_COUNT_LIMIT}, estimated from positions above).`, (lag) => lag.events)
    lagGauge('live_tea_projector_lag_seconds', 'Age of the oldest event a projection has not read yet; 0 when caught up.', (lag) => lag.seconds)
    new Gauge({
      name: 'live_tea_projector_checkpoint_position',
      help: 'Global position of the messages checkpoint as this node last saw it (after its own last batch, or as another node moved it).',
      registers: own,
      collect() {
        const position = sources()?.projector.position
        if (position) this.set(position.gp)
      },
    })
    new Gauge({
      name: 'live_tea_events_in_log',
      help: 'Events in the log (all nodes), as last counted by this node.',
      registers: own,
      collect() {
        const events = sources()?.sampler.current?.events
        if (events !== undefined) this.set(events)
      },
    })
    new Gauge({
      name: 'live_tea_presence_people_node',
      help: 'People present in a chat on this node (an open stream; each once per chat however many tabs; anonymous readers count too).',
      registers: own,
      collect() {
        const presence = sources()?.presence
        if (presence) this.set(presence.localCount)
      },
    })
    new Gauge({
      name: 'live_tea_presence_people_all_nodes',
      help: 'People present in a chat on every live node, each once per chat, as last counted by this node (one query per sample, none per scrape). NaN when the database could not be read.',
      registers: own,
      collect() {
        this.set(sources()?.sampler.current?.peopleAllNodes ?? Number.NaN)
      },
    })
    const self = this
    new Counter({
      name: 'live_tea_presence_frames_total',
      help: 'Presence frames this node sent: a chat\'s changed "who is here / who is typing" list, rendered once and written to its readers (at most one per chat per second).',
      registers: own,
      collect() {
        const frames = sources()?.presence.framesSent ?? 0
        if (frames > self.presenceFramesCounted) this.inc(frames - self.presenceFramesCounted)
        self.presenceFramesCounted = frames
      },
    })
    new Counter({
      name: 'live_tea_listen_reconnects_total',
      help: 'Times the LISTEN connection came back after being lost.',
      registers: own,
      collect() {
        const reconnects = sources()?.listener.reconnects ?? 0
        if (reconnects > self.reconnectsCounted) this.inc(reconnects - self.reconnectsCounted)
        self.reconnectsCounted = reconnects
      },
    })
    new Gauge({
      name: 'live_tea_listen_connected',
      help: '1 while the LISTEN connection is up.',
      registers: own,
      collect() {
        this.set(sources()?.listener.connected ? 1 : 0)
      },
    })
    const poolGauge = (name: string, help: string, read: (pool: pg.Pool) => number) =>
      new Gauge({
        name,
        help,
        registers: own,
        collect() {
          const pool = sources()?.pool
          if (pool) this.set(read(pool))
        },
      })
    poolGauge('live_tea_pg_pool_total', 'Connections the pool holds.', (pool) => pool.totalCount)
    poolGauge('live_tea_pg_pool_idle', 'Pool connections idle.', (pool) => pool.idleCount)
    poolGauge('live_tea_pg_pool_in_use', 'Pool connections checked out.', (pool) => pool.totalCount - pool.idleCount)
    poolGauge('live_tea_pg_pool_waiting', 'Queries waiting for a pool connection.', (pool) => pool.waitingCount)

    // Every outcome shows from the first scrape, so rate() works before the first failure.
    for (const outcome of OUTCOMES) this.commands.inc({ outcome }, 0)
    this.registry = Registry.merge([processMetrics(), this.own])
  }

  /** Connects the gauges to the node's parts, once they exist. */
  watch(sources: MetricsSources): void {
    this.sources = sources
  }

  get contentType(): string {
    return this.registry.contentType
  }

  /** The Prometheus text exposition of this node (and of its process). */
  text(): Promise<string> {
    return this.registry.metrics()
  }

  readonly commandOutcome = (outcome: Outcome): void => {
    this.commands.inc({ outcome })
  }

  readonly eventsAppended = (events: StoredEvent[]): void => {
    const byType = new Map<string, number>()
    for (const event of events) byType.set(event.type, (byType.get(event.type) ?? 0) + 1)
    for (const [type, count] of byType) this.appended.inc({ type }, count)
  }

  readonly batchProjected = (projection: string, events: number, durationMs: number): void => {
    this.projected.inc({ projection }, events)
    this.batchDuration.observe({ projection }, durationMs / 1000)
  }

  readonly pushed = (frames: number): void => {
    if (frames > 0) this.framesPushed.inc(frames)
  }

  readonly replayed = (source: 'database' | 'memory'): void => {
    this.replayBatches.inc({ source })
  }

  /**
   * Express middleware timing every request by its route pattern (never the
   * raw URL: label values must stay few). Event streams are left out: their
   * "duration" is how long someone kept a tab open.
   */
  requestTimer() {
    return (req: Request, res: Response, next: NextFunction) => {
      const started = performance.now()
      res.once('finish', () => {
        if (String(res.getHeader('content-type') ?? '').startsWith('text/event-stream')) return
        const ms = performance.now() - started
        const method = METHODS.has(req.method) ? req.method : 'OTHER'
        const route = routeOf(req)
        this.requestDuration.observe({ method, route, status: String(res.statusCode) }, ms / 1000)
        if (`${method} ${route}` === COMMAND_ROUTE) this.commandLatency.observe(ms)
      })
      next()
    }
  }
}

/** The Express route pattern that answered, the mount path of a static folder, or "unmatched". */
function routeOf(req: Request): string {
  if (req.route) return req.baseUrl + String(req.route.path)
  return req.baseUrl || 'unmatched'
}

import type { ServerResponse } from 'node:http'
import type { DB } from '../db/database.js'
import type { Hub } from '../live/hub.js'
import type { Presence } from '../live/presence.js'
import { countActiveChats, countEventsAfter, readProjectorLag, type LogCursor } from './figures.js'
import type { LatencyWindow } from './latency-window.js'
import { sparkline } from './sparkline.js'

/** The node's figures at one moment. Cluster-wide ones come from the database, the rest from this process. */
export interface Sample {
  at: Date
  /** MessageSent events committed per second since the previous sample (all nodes); undefined on the first. */
  messagesPerSecond: number | undefined
  /** Chats with a message in the last ACTIVE_MINUTES (all nodes). */
  activeChats: number
  /** Chats with an open stream on this node. */
  watchedChats: number
  /** Open chat streams on this node. */
  subscribers: number
  /** The first projection's lag (the one pages and streams are served from). */
  lagEvents: number
  lagSeconds: number
  /** Every projection's lag, in the order given. */
  lags: { projection: string; events: number; seconds: number }[]
  /** Command (POST message) latency on this node over the last 10 s. */
  p50Ms: number | undefined
  p99Ms: number | undefined
  /** Events in the log (all nodes). */
  events: number
  /** People present in a chat on this node (a person in two chats counts twice, in two tabs of one chat once). */
  peopleHere: number
  /** People present in a chat across all live nodes (each person once per chat, however many nodes and tabs). */
  peopleAllNodes: number
  /** Presence frames (a chat's changed list, rendered once for its readers) this node sent per second since the previous sample; undefined on the first. */
  presenceFramesPerSecond: number | undefined
}

export interface Figure {
  id: string
  label: string
  value: string
  note: string
  sparkline: string
}

/** What the dashboard fragment shows. */
export interface DashboardView {
  figures: Figure[]
  at: Date | undefined
  /** Set while the database cannot be read: the figures shown are the last ones read. */
  problem: string | undefined
  dashboardSubscribers: number
}

export interface DashboardSamplerProps {
  db: DB
  hub: Hub
  /** Who is here: this node's count and frames from memory, all nodes' count from one query per sample. */
  presence: Pick<Presence, 'localCount' | 'totalCount' | 'framesSent'>
  /** The projections whose lag is shown, the one pages are served from first. */
  projections: string[]
  commandLatency: LatencyWindow
  /** Renders the figures fragment; called once per sample, whatever the number of dashboards open. */
  render: (view: DashboardView) => string
  intervalMs?: number
  /** Samples kept for the sparklines. */
  historySize?: number
  maxSubscribers?: number
  onError?: (error: unknown) => void
}

export const ACTIVE_MINUTES = 5
/** A dashboard whose unsent output grows past this is dropped; it reconnects. */
const MAX_BUFFERED_BYTES = 256 * 1024

/**
 * One per node: reads the figures once per interval, keeps a short history,
 * renders the dashboard fragment once, and writes it to every open
 * dashboard stream. However many dashboards are open, the database sees the
 * same four small queries per interval. /metrics reads the latest sample
 * too, so a scrape costs no query either.
 *
 * @example
 * const sampler = new DashboardSampler({ db, hub, presence, projection: 'messages', commandLatency, render })
 * sampler.start()
 * sampler.subscribe(res)   // after writing the SSE headers
 */
export class DashboardSampler {
  private readonly db: DB
  private readonly hub: Hub
  private readonly presence: DashboardSamplerProps['presence']
  private readonly projections: string[]
  private readonly commandLatency: LatencyWindow
  private readonly render: DashboardSamplerProps['render']
  private readonly intervalMs: number
  private readonly historySize: number
  private readonly maxSubscribers: number
  private readonly onError: NonNullable<DashboardSamplerProps['onError']>
  private readonly subscribers = new Set<ServerResponse>()
  private readonly history: Sample[] = []
  private cursor: LogCursor = { txid: '0', gp: 0 }
  private events = 0
  private messages = 0
  private countedAt: number | undefined
  private presenceFramesCounted = 0
  private timer: NodeJS.Timeout | undefined
  private ticking: Promise<void> | undefined
  private stopped = true
  private closing = false
  private problem: string | undefined
  /** The latest rendered fragment, sent to a dashboard as soon as it connects. */
  html: string

  constructor({ db, hub, presence, projections, commandLatency, render, intervalMs = 1000, historySize = 60, maxSubscribers = 100, onError = () => {} }: DashboardSamplerProps) {
    this.db = db
    this.hub = hub
    this.presence = presence
    this.projections = projections
    this.commandLatency = commandLatency
    this.render = render
    this.intervalMs = intervalMs
    this.historySize = historySize
    this.maxSubscribers = maxSubscribers
    this.onError = onError
    this.html = render(this.view())
  }

  get latest(): Sample | undefined {
    return this.history.at(-1)
  }

  /** The latest sample, or undefined while the database cannot be read (so nothing stale passes for current). */
  get current(): Sample | undefined {
    return this.problem ? undefined : this.latest
  }

  /** The projections this sampler reads the lag of. */
  get projectionNames(): string[] {
    return this.projections
  }

  get subscriberCount(): number {
    return this.subscribers.size
  }

  get full(): boolean {
    return this.closing || this.subscribers.size >= this.maxSubscribers
  }

  /** Takes the first sample now, then one per interval. */
  start(): void {
    if (!this.stopped) return
    this.stopped = false
    this.schedule(0)
  }

  /** Stops sampling; resolves when a sample in progress has finished (so the pool can close after it). */
  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    await this.ticking
  }

  /** Ends every dashboard stream with a reconnect hint (shutdown). */
  close(retryMs = 2000): void {
    this.closing = true
    for (const res of this.subscribers) res.end(`retry: ${retryMs}\n\n`)
    this.subscribers.clear()
  }

  /** Adds an SSE response (headers written) to the fan-out and sends it the latest figures right away. */
  subscribe(res: ServerResponse): void {
    this.subscribers.add(res)
    res.once('close', () => this.subscribers.delete(res))
    this.write(res, dataFrame(this.html))
  }

  /** Everything the fragment shows, from the history. */
  view(): DashboardView {
    const latest = this.latest
    const series = <T>(pick: (sample: Sample) => T) => this.history.map(pick)
    const last = `last ${Math.round((this.historySize * this.intervalMs) / 1000)} s`
    const figure = (id: string, label: string, value: string, note: string, values: (number | undefined)[]): Figure => ({
      id,
      label,
      value,
      note,
      sparkline: sparkline(values, { label: `${label}, ${last}`, slots: this.historySize }),
    })
    return {
      at: latest?.at,
      problem: this.problem,
      dashboardSubscribers: this.subscribers.size,
      figures: latest
        ? [
            figure('messages-per-second', 'Messages per second', rate(latest.messagesPerSecond), 'committed, all nodes', series((s) => s.messagesPerSecond)),
            figure('active-chats', 'Active chats', whole(latest.activeChats), `a message in the last ${ACTIVE_MINUTES} min · ${whole(latest.watchedChats)} watched here`, series((s) => s.activeChats)),
            figure('sse-subscribers', 'SSE subscribers', whole(latest.subscribers), 'open chat streams on this node', series((s) => s.subscribers)),
            ...latest.lags.map((lag, index) =>
              figure(
                index === 0 ? 'projector-lag' : `projector-lag-${lag.projection}`,
                `Projector lag: ${lag.projection}`,
                `${whole(lag.events)} events`,
                `oldest waiting ${seconds(lag.seconds)}`,
                series((s) => s.lags[index]?.events),
              ),
            ),
            figure('latency-p50', 'Command latency p50', millis(latest.p50Ms), 'POST message, last 10 s, this node', series((s) => s.p50Ms)),
            figure('latency-p99', 'Command latency p99', millis(latest.p99Ms), 'POST message, last 10 s, this node', series((s) => s.p99Ms)),
            figure('events', 'Events in the log', whole(latest.events), 'all streams, all nodes', series((s) => s.events)),
            figure('people-here', 'People here', whole(latest.peopleAllNodes), `in a chat, all nodes · ${whole(latest.peopleHere)} on this node`, series((s) => s.peopleAllNodes)),
            figure('presence-frames-per-second', 'Presence frames per second', rate(latest.presenceFramesPerSecond), 'who is here / typing changes sent, this node', series((s) => s.presenceFramesPerSecond)),
          ]
        : [],
    }
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return
    this.timer = setTimeout(() => {
      this.ticking = this.tick().finally(() => {
        this.ticking = undefined
        this.schedule(this.intervalMs)
      })
    }, delayMs)
    this.timer.unref()
  }

  private async tick(): Promise<void> {
    try {
      const [lags, count, activeChats, peopleAllNodes] = await Promise.all([
        Promise.all(this.projections.map(async (projection) => ({ projection, ...(await readProjectorLag(this.db, projection)) }))),
        countEventsAfter(this.db, this.cursor),
        countActiveChats(this.db, ACTIVE_MINUTES),
        this.presence.totalCount(),
      ])
      const now = performance.now()
      const first = this.countedAt === undefined
      const elapsedSeconds = first ? 0 : (now - this.countedAt!) / 1000
      this.cursor = count.cursor
      this.events += count.events
      this.messages += count.messages
      this.countedAt = now
      const framesSent = this.presence.framesSent
      const presenceFrames = framesSent - this.presenceFramesCounted
      this.presenceFramesCounted = framesSent
      const [p50Ms, p99Ms] = this.commandLatency.percentiles([50, 99])
      this.record({
        at: new Date(),
        messagesPerSecond: first || elapsedSeconds <= 0 ? undefined : count.messages / elapsedSeconds,
        activeChats,
        watchedChats: this.hub.chatCount,
        subscribers: this.hub.subscriberCount,
        lagEvents: lags[0]!.events,
        lagSeconds: lags[0]!.seconds,
        lags,
        p50Ms,
        p99Ms,
        events: this.events,
        peopleHere: this.presence.localCount,
        peopleAllNodes,
        presenceFramesPerSecond: first || elapsedSeconds <= 0 ? undefined : presenceFrames / elapsedSeconds,
      })
      this.problem = undefined
    } catch (error) {
      if (!this.problem) this.onError(error)
      this.problem = `The database could not be read (${error instanceof Error ? error.message : String(error)}); these are the last figures read.`
    }
    this.html = this.render(this.view())
    const frame = dataFrame(this.html)
    for (const res of this.subscribers) this.write(res, frame)
  }

  private record(sample: Sample): void {
    this.history.push(sample)
    if (this.history.length > this.historySize) this.history.shift()
  }

  private write(res: ServerResponse, frame: string): void {
    res.write(frame)
    if (res.writableLength > MAX_BUFFERED_BYTES) {
      this.subscribers.delete(res)
      res.destroy()
    }
  }
}

/** One unnamed SSE message (htmx swaps only unnamed ones): a `data:` line per line of HTML. */
function dataFrame(html: string): string {
  return `${html.split(/\r\n|\r|\n/).map((line) => `data: ${line}\n`).join('')}\n`
}

const WHOLE = new Intl.NumberFormat('en-GB', { maximumFractionDigits: 0 })
const ONE_DECIMAL = new Intl.NumberFormat('en-GB', { maximumFractionDigits: 1 })

function whole(n: number): string {
  return WHOLE.format(n)
}
function rate(n: number | undefined): string {
  return n === undefined ? '–' : n < 10 ? ONE_DECIMAL.format(n) : WHOLE.format(n)
}
function millis(ms: number | undefined): string {
  if (ms === undefined) return '–'
  return ms < 10 ? `${ONE_DECIMAL.format(ms)} ms` : `${WHOLE.format(ms)} ms`
}
function seconds(s: number): string {
  return s < 10 ? `${ONE_DECIMAL.format(s)} s` : `${WHOLE.format(s)} s`
}

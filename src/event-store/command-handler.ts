import { LRUCache } from 'lru-cache'
import type { DB } from '../db/database.js'
import type { Answer, Decider, RejectionLike } from './decider.js'
import { append, ConcurrencyConflict, lockStreams, readVersions, type NewEvent, type StoredEvent, type StreamAppend, type Tx } from './event-store.js'

export interface CommandResult {
  version: number
  /** The type of the event the command appended (or appended the first time); undefined when it changed nothing. */
  type: string | undefined
  /** The person gave this command before; nothing was appended. */
  duplicate: boolean
}

/** What one stream's state needs to be brought to, with the commands about to be decided on it. */
export interface LoadRequest<Command, State> {
  streamId: string
  /** The stream's version now, read under its lock. */
  version: number
  /** The state this node holds, possibly behind `version`. */
  cached: State | undefined
  commands: Command[]
}

/**
 * The "load what the rules need" step, specific to a decider: how to bring a
 * state up to a stream's current version from the log without folding the
 * whole stream, and when a cached state already has everything.
 */
export interface StateLoader<Command, State> {
  /** The state at hand has all that these commands' rules need: decide on it without reading the log. */
  covers(state: State, commands: Command[]): boolean
  /** Each stream's state at its current version, read under the streams' locks. */
  load(tx: Tx, requests: LoadRequest<Command, State>[], now: Date): Promise<Map<string, State>>
}

export type Outcome = 'accepted' | 'duplicate' | 'rejected' | 'conflict' | 'failed' | 'shed'

/**
 * More work than the node can do in time: the command was not started and
 * nothing was appended. Answered 503 with Retry-After, so clients back off
 * instead of every command waiting seconds in a queue without end.
 */
export class Overloaded extends Error {
  readonly status = 503
  constructor(readonly retryAfterSeconds: number) {
    super(`The server is too busy to take this right now, so nothing was saved. Try again in ${retryAfterSeconds} s.`)
    this.name = 'Overloaded'
  }
}

export interface CommandHandlerProps<Command, Event extends NewEvent, State extends { version: number }> {
  db: DB
  decider: Decider<Command, Event, State>
  loader: StateLoader<Command, State>
  streamType: string
  streamIdOf: (command: Command) => string
  /** The command's own validity, before any state: refused without touching the database or sharing a transaction. */
  validate: (command: Command) => RejectionLike | undefined
  /** When a unique index caught a repeat older than the cached window: the first answer, from the log. */
  findEarlier: (db: DB, command: Command) => Promise<Answer | undefined>
  /** The unique index that catches repeated commands. */
  duplicateConstraint: string
  clock: (command: Command) => Date
  /** Called after each commit with the events it made durable. */
  onAppended?: (events: StoredEvent[]) => void
  /** Observes each command's outcome (for metrics). */
  onOutcome?: (outcome: Outcome) => void
  cacheSize?: number
  maxBatch?: number
  maxConcurrentBatches?: number
  /** Commands waiting beyond this many are shed at once (503). */
  maxQueued?: number
  /** A command that waited this long without starting is shed (503): by then its client is better off retrying. */
  maxWaitMs?: number
}

interface Job<Command> {
  command: Command
  /** When it was queued (performance.now()), for shedding what waited too long. */
  queuedAt: number
  attempts: number
  /** Set after a shared transaction failed: run alone so one bad command cannot sink others. */
  solo: boolean
  resolve(result: CommandResult): void
  reject(error: unknown): void
}

type JobOutcome = { ok: CommandResult } | { rejected: RejectionLike }

const MAX_ATTEMPTS = 4

/**
 * The write engine for any decider, and the only code that appends events.
 * Commands that arrive together share one transaction (group commit: one
 * fsync for many commands); each still gets its own answer.
 *
 * Per transaction: lock the streams, read their versions, bring the cached
 * states up to date with what the rules need (the loader), decide, append.
 * When every stream's cached state covers its commands, the whole group
 * commits in one round trip instead, checked by the database against the
 * log. A failed shared transaction is split and each command retried alone;
 * a conflict reloads and decides again, a bounded number of times.
 *
 * @example
 * const handler = new CommandHandler({ db, decider: chatDecider, loader: chatStateLoader, ... })
 * const { version } = await handler.handle(command)
 */
export class CommandHandler<Command, Event extends NewEvent, State extends { version: number }> {
  private readonly props: CommandHandlerProps<Command, Event, State>
  private readonly cache: LRUCache<string, State>
  private readonly onAppended: (events: StoredEvent[]) => void
  private readonly onOutcome: (outcome: Outcome) => void
  private readonly maxBatch: number
  private readonly maxConcurrentBatches: number
  private readonly maxQueued: number
  private readonly maxWaitMs: number
  private queue: Job<Command>[] = []
  private running = 0
  private idleWaiters: (() => void)[] = []

  constructor(props: CommandHandlerProps<Command, Event, State>) {
    this.props = props
    this.cache = new LRUCache({ max: props.cacheSize ?? 10_000 })
    this.onAppended = props.onAppended ?? (() => {})
    this.onOutcome = props.onOutcome ?? (() => {})
    this.maxBatch = props.maxBatch ?? 200
    this.maxConcurrentBatches = props.maxConcurrentBatches ?? 4
    this.maxQueued = props.maxQueued ?? 2_000
    this.maxWaitMs = props.maxWaitMs ?? 2_000
  }

  /** Resolves once the command's events are durable (or were already); rejects with the rejection when the rules refuse it. */
  handle(command: Command): Promise<CommandResult> {
    // Invalid in itself (bad chat id, empty content): refused before it can
    // reach the database or share a transaction. Rules that depend on the
    // stream (who wrote message 42) are decided under its lock.
    const invalid = this.props.validate(command)
    if (invalid) {
      this.onOutcome('rejected')
      return Promise.reject(invalid)
    }
    if (this.queue.length >= this.maxQueued) {
      this.onOutcome('shed')
      return Promise.reject(new Overloaded(1))
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ command, queuedAt: performance.now(), attempts: 0, solo: false, resolve, reject })
      this.pump()
    })
  }

  /** Commands queued or in flight. */
  get pending(): number {
    return this.queue.length + this.running
  }

  /** Resolves when no command is queued or in flight (graceful shutdown). */
  drained(): Promise<void> {
    if (this.running === 0 && this.queue.length === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  private pump(): void {
    while (this.running < this.maxConcurrentBatches && this.queue.length > 0) {
      const batch = this.takeBatch()
      if (batch.length === 0) break
      this.running++
      this.run(batch).finally(() => {
        this.running--
        this.pump()
        if (this.running === 0 && this.queue.length === 0) this.idleWaiters.splice(0).forEach((wake) => wake())
      })
    }
  }

  private takeBatch(): Job<Command>[] {
    this.shedStale()
    if (this.queue.length === 0) return []
    const first = this.queue[0]!
    if (first.solo) return this.queue.splice(0, 1)
    const batch: Job<Command>[] = []
    const rest: Job<Command>[] = []
    for (const job of this.queue) (batch.length < this.maxBatch && !job.solo ? batch : rest).push(job)
    this.queue = rest
    return batch
  }

  /**
   * Sheds what waited too long to start: under a load above what the node
   * sustains, answering those at once keeps the latency of what is accepted
   * near normal instead of making everyone wait. Retries (attempts > 0) are
   * under way and are never shed.
   */
  private shedStale(): void {
    const horizon = performance.now() - this.maxWaitMs
    if (this.queue.length === 0 || this.queue[0]!.queuedAt > horizon) return
    const kept: Job<Command>[] = []
    for (const job of this.queue) {
      if (job.queuedAt <= horizon && job.attempts === 0 && !job.solo) {
        this.onOutcome('shed')
        job.reject(new Overloaded(Math.max(1, Math.ceil(this.maxWaitMs / 1000))))
      } else kept.push(job)
    }
    this.queue = kept
  }

  private async run(jobs: Job<Command>[]): Promise<void> {
    const streamIds = [...new Set(jobs.map((job) => this.props.streamIdOf(job.command)))]
    try {
      const { outcomes, states, appended } =
        (await this.appendOnCachedStates(jobs, streamIds)) ?? (await this.props.db.transaction().execute((tx) => this.decideAndAppend(tx, jobs, streamIds)))
      const { compact } = this.props.decider
      for (const [streamId, state] of states) this.cache.set(streamId, compact ? compact(state) : state)
      if (appended.length > 0) this.onAppended(appended)
      jobs.forEach((job, index) => {
        const outcome = outcomes[index]!
        if ('ok' in outcome) {
          this.onOutcome(outcome.ok.duplicate ? 'duplicate' : 'accepted')
          job.resolve(outcome.ok)
        } else {
          this.onOutcome('rejected')
          job.reject(outcome.rejected)
        }
      })
    } catch (error) {
      for (const streamId of streamIds) this.cache.delete(streamId)
      if (jobs.length > 1) {
        // One command's failure must not decide the others' fate: retry each alone.
        for (const job of jobs) job.solo = true
        this.queue.unshift(...jobs)
        return
      }
      await this.recover(jobs[0]!, error)
    }
  }

  private async recover(job: Job<Command>, error: unknown): Promise<void> {
    if (isUniqueViolation(error, this.props.duplicateConstraint)) {
      // A repeat of a command older than the cached window: the index caught it.
      try {
        const earlier = await this.props.findEarlier(this.props.db, job.command)
        if (earlier) {
          this.onOutcome('duplicate')
          return job.resolve({ version: earlier.version, type: earlier.type, duplicate: true })
        }
      } catch (lookupError) {
        error = lookupError
      }
    }
    const retryable = error instanceof ConcurrencyConflict || isUniqueViolation(error, 'events_pkey') || isDeadlock(error)
    if (retryable && ++job.attempts < MAX_ATTEMPTS) {
      this.onOutcome('conflict')
      job.solo = true
      this.queue.unshift(job)
      return
    }
    this.onOutcome('failed')
    job.reject(error)
  }

  /**
   * The common case, in one round trip: every stream of the batch has a
   * cached state that covers its commands, so decide on those and let the
   * database check, under the stream locks, that they are current
   * (`append`). Undefined, with nothing written, when a stream is not cached,
   * its state lacks what a rule needs, or it moved meanwhile (another node
   * wrote): then the transactional path reads the log and decides again.
   */
  private async appendOnCachedStates(jobs: Job<Command>[], streamIds: string[]) {
    const states = new Map<string, State>()
    const byStream = this.commandsByStream(jobs)
    for (const streamId of streamIds) {
      const cached = this.cache.get(streamId)
      if (!cached || !this.props.loader.covers(cached, byStream.get(streamId)!)) return undefined
      states.set(streamId, cached)
    }
    const versions = new Map([...states].map(([streamId, state]) => [streamId, state.version]))
    const { outcomes, appends } = this.decideAll(jobs, states)
    const all = streamIds.map((streamId) => appends.get(streamId) ?? { streamId, streamType: this.props.streamType, expectedVersion: versions.get(streamId)!, events: [] })
    const result = await append(this.props.db, all)
    if ('moved' in result) return undefined
    return { outcomes, states, appended: result.stored }
  }

  private async decideAndAppend(tx: Tx, jobs: Job<Command>[], streamIds: string[]) {
    await lockStreams(tx, streamIds)
    const versions = await readVersions(tx, streamIds)
    const byStream = this.commandsByStream(jobs)
    const requests = streamIds.map((streamId) => ({ streamId, version: versions.get(streamId) ?? 0, cached: this.cache.get(streamId), commands: byStream.get(streamId)! }))
    const states = await this.props.loader.load(tx, requests, this.props.clock(jobs[0]!.command))
    const { outcomes, appends } = this.decideAll(jobs, states)
    const result = await append(tx, [...appends.values()])
    // Cannot move while we hold the locks, unless something wrote without them: retry from the log.
    if ('moved' in result) throw new ConcurrencyConflict([...result.moved.keys()])
    return { outcomes, states, appended: result.stored }
  }

  private commandsByStream(jobs: Job<Command>[]): Map<string, Command[]> {
    const byStream = new Map<string, Command[]>()
    for (const { command } of jobs) {
      const streamId = this.props.streamIdOf(command)
      const list = byStream.get(streamId) ?? []
      list.push(command)
      byStream.set(streamId, list)
    }
    return byStream
  }

  /** Decides each command in arrival order, folding accepted events into `states` as it goes. */
  private decideAll(jobs: Job<Command>[], states: Map<string, State>): { outcomes: JobOutcome[]; appends: Map<string, StreamAppend> } {
    const { decider, streamType, streamIdOf } = this.props
    const appends = new Map<string, StreamAppend>()
    const outcomes: JobOutcome[] = jobs.map(({ command }) => {
      const streamId = streamIdOf(command)
      const state = states.get(streamId)!
      const decision = decider.decide(command, state)
      switch (decision.kind) {
        case 'rejected':
          return { rejected: decision.rejection }
        case 'duplicate':
          return { ok: { version: decision.answer.version, type: decision.answer.type, duplicate: true } }
        case 'accepted': {
          if (decision.events.length === 0) return { ok: { version: state.version, type: undefined, duplicate: false } }
          const pending = appends.get(streamId) ?? { streamId, streamType, expectedVersion: state.version, events: [] }
          pending.events.push(...decision.events)
          appends.set(streamId, pending)
          const next = decision.events.reduce(decider.evolve, state)
          states.set(streamId, next)
          return { ok: { version: next.version, type: decision.events.at(-1)!.type, duplicate: false } }
        }
      }
    })
    return { outcomes, appends }
  }
}

function isUniqueViolation(error: unknown, constraint: string): boolean {
  const e = error as { code?: string; constraint?: string }
  return e?.code === '23505' && e.constraint === constraint
}

function isDeadlock(error: unknown): boolean {
  return (error as { code?: string })?.code === '40P01'
}

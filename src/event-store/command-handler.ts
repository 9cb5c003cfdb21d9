import { LRUCache } from 'lru-cache'
import type { DB } from '../db/database.js'
import type { Decider, Decision, RejectionLike } from './decider.js'
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
  /**
   * When a unique index caught a repeat older than the cached window: from
   * the log, the first answer (a retry), or the refusal of another request
   * under the same command id (as the decider would refuse it).
   */
  findEarlier: (db: DB, command: Command) => Promise<Decision<Event> | undefined>
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
  /**
   * While a batch is in flight, the next one starts beside it only once the
   * one in flight has taken this long (a lock held elsewhere, a stalled
   * database); until then, what arrives waits and shares the next batch.
   */
  overlapAfterMs?: number
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

/** A batch decided on states at hand, to be appended. */
interface Decided<State> {
  outcomes: JobOutcome[]
  states: Map<string, State>
  appends: StreamAppend[]
}

/** Where a stream stands while batches on it are in flight. */
interface Line<State> {
  /** The state the latest batch leads to; undefined until it is done when that is not known (it reads the log, or it failed). */
  state: State | undefined
  /** Settles when the latest batch is done: true when it landed exactly as it was decided. */
  last: Promise<boolean>
  batches: number
}

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
 * log; a busy stream's next batch is decided meanwhile, on the state the
 * batch in flight leads to (`run`). A failed shared transaction is split
 * and each command retried alone; a conflict reloads and decides again, a
 * bounded number of times.
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
  private readonly overlapAfterMs: number
  /** When each batch in flight started (performance.now()): as many as are running. */
  private readonly inFlight: number[] = []
  private overlapTimer: NodeJS.Timeout | undefined
  private readonly maxQueued: number
  private readonly maxWaitMs: number
  /** Per stream with batches in flight: where the next batch stands (see `run`). */
  private readonly lines = new Map<string, Line<State>>()
  private queue: Job<Command>[] = []
  private idleWaiters: (() => void)[] = []
  /** Due when the oldest command that may be shed has waited maxWaitMs. */
  private shedTimer: NodeJS.Timeout | undefined

  constructor(props: CommandHandlerProps<Command, Event, State>) {
    this.props = props
    this.cache = new LRUCache({ max: props.cacheSize ?? 10_000 })
    this.onAppended = props.onAppended ?? (() => {})
    this.onOutcome = props.onOutcome ?? (() => {})
    this.maxBatch = props.maxBatch ?? 200
    this.maxConcurrentBatches = props.maxConcurrentBatches ?? 4
    this.overlapAfterMs = props.overlapAfterMs ?? 20
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
      this.shedOnTime()
    })
  }

  /** Commands queued or in flight. */
  get pending(): number {
    return this.queue.length + this.inFlight.length
  }

  /** Resolves when no command is queued or in flight (graceful shutdown). */
  drained(): Promise<void> {
    if (this.inFlight.length === 0 && this.queue.length === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  /**
   * Starts batches. Group commit works only if commands wait for each
   * other: with a batch started for each command the moment it came (up to
   * four at once), a node at 500-650 posts/s appended 1.0-1.07 commands a
   * round trip, each its own transaction and commit. Waiting while a fast
   * batch is in flight (a round trip, well under overlapAfterMs) gathers
   * what arrives meanwhile into the next one: fewer round trips, commits and
   * wake-ups of both processes for the same posts. A batch in flight past
   * overlapAfterMs (a lock held by another node, a stalled database) lets
   * the next start beside it, so one chat cannot hold up the rest for long.
   * The wait is not shorter because a fast batch is not fast on a busy
   * node: its answer waits behind the requests in the event loop, and with
   * 2 ms the closed-loop benches overlapped batches again: P1 lost about a
   * tenth of its throughput against 20 ms, P8 (one hot chat) a quarter.
   */
  private pump(): void {
    while (this.inFlight.length < this.maxConcurrentBatches && this.queue.length > 0) {
      const wait = this.inFlight.length === 0 ? 0 : Math.max(...this.inFlight) + this.overlapAfterMs - performance.now()
      if (wait > 0) {
        this.pumpIn(wait)
        break
      }
      const batch = this.takeBatch()
      if (batch.length === 0) break
      const started = performance.now()
      this.inFlight.push(started)
      this.run(batch).finally(() => {
        this.inFlight.splice(this.inFlight.indexOf(started), 1)
        this.pump()
        if (this.inFlight.length === 0 && this.queue.length === 0) this.idleWaiters.splice(0).forEach((wake) => wake())
      })
    }
  }

  /** Pumps again when the newest batch in flight has taken overlapAfterMs (sooner if a batch ends: `run` pumps then). */
  private pumpIn(ms: number): void {
    if (this.overlapTimer) return
    this.overlapTimer = setTimeout(() => {
      this.overlapTimer = undefined
      this.pump()
    }, Math.ceil(ms))
    // A batch is in flight while this waits, and it pumps when it ends: the timer need not keep a process alive.
    this.overlapTimer.unref()
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

  /**
   * Sheds what waited too long even while no batch can start: when every
   * batch is stuck (a stalled database, a lock held elsewhere), `takeBatch`
   * does not run, and without this a command would wait for the stall to
   * end before hearing "503, try again" — 9.5 s instead of 2 in a 10 s
   * stall.
   */
  private shedOnTime(): void {
    if (this.shedTimer) return
    const oldest = this.queue.find((job) => job.attempts === 0 && !job.solo)
    if (!oldest) return
    // A millisecond past the deadline: timers count whole milliseconds on libuv's clock, and shedStale sheds only what is at or past it.
    this.shedTimer = setTimeout(() => {
      this.shedTimer = undefined
      this.shedStale()
      this.shedOnTime()
    }, Math.max(0, oldest.queuedAt + this.maxWaitMs - performance.now()) + 1)
    this.shedTimer.unref()
  }

  /**
   * Runs one batch. A busy stream does not wait for its batch in flight: the
   * next batch decides on the state that batch leads to and takes its place
   * in the stream's line, then appends at the version after it as soon as
   * the one before it has landed. If that one did not land exactly as
   * decided, nor does anything decided on it: it goes the transactional
   * way, reading the log. Only `append` decides what is durable; the line
   * only saves the wait and the conflicts.
   */
  private async run(jobs: Job<Command>[]): Promise<void> {
    const streamIds = [...new Set(jobs.map((job) => this.props.streamIdOf(job.command)))]
    await this.whenKnown(streamIds)
    const decided = this.decideAhead(jobs, streamIds)
    let settle!: (asDecided: boolean) => void
    const settled = new Promise<boolean>((resolve) => (settle = resolve))
    const before: Promise<boolean>[] = []
    for (const streamId of streamIds) {
      const line = this.lines.get(streamId)
      if (line) before.push(line.last)
      const state = decided?.states.get(streamId)
      this.lines.set(streamId, { state: state && this.compact(state), last: settled, batches: (line?.batches ?? 0) + 1 })
    }
    let asDecided = false
    try {
      const landedBefore = (await Promise.all(before)).every(Boolean)
      let done = decided && landedBefore ? await this.appendDecided(decided) : undefined
      asDecided = done !== undefined
      if (!done) {
        // What this batch was decided on did not happen: nothing may be decided on it any more.
        for (const streamId of streamIds) this.lines.get(streamId)!.state = undefined
        done = await this.props.db.transaction().execute((tx) => this.decideAndAppend(tx, jobs, streamIds))
      }
      const { outcomes, states, appended } = done
      for (const [streamId, state] of states) this.remember(streamId, state)
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
      asDecided = false
      for (const streamId of streamIds) this.cache.delete(streamId)
      if (jobs.length > 1) {
        // One command's failure must not decide the others' fate: retry each alone.
        for (const job of jobs) job.solo = true
        this.queue.unshift(...jobs)
        return
      }
      await this.recover(jobs[0]!, error)
    } finally {
      settle(asDecided)
      for (const streamId of streamIds) {
        const line = this.lines.get(streamId)!
        if (--line.batches === 0) this.lines.delete(streamId)
      }
    }
  }

  /** Waits while a stream's next state is unknown until a batch in flight is done (it is reading the log, or failed). */
  private async whenKnown(streamIds: string[]): Promise<void> {
    for (;;) {
      const unknown = streamIds.map((streamId) => this.lines.get(streamId)).find((line) => line !== undefined && line.state === undefined)
      if (!unknown) return
      await unknown.last
    }
  }

  /**
   * Keeps a durable state for the next commands. Batches of one stream can
   * finish in any order (their answers come on different connections), and
   * every one of them is durable by then: the newest version wins.
   */
  private remember(streamId: string, state: State): void {
    const cached = this.cache.get(streamId)
    if (cached && cached.version > state.version) return
    this.cache.set(streamId, this.compact(state))
  }

  /** A state back within its bounds, to decide the next batch on. */
  private compact(state: State): State {
    return this.props.decider.compact?.(state) ?? state
  }

  private async recover(job: Job<Command>, error: unknown): Promise<void> {
    if (isUniqueViolation(error, this.props.duplicateConstraint)) {
      // A repeat of a command older than the cached window: the index caught it.
      try {
        const earlier = await this.props.findEarlier(this.props.db, job.command)
        if (earlier?.kind === 'duplicate') {
          this.onOutcome('duplicate')
          return job.resolve({ version: earlier.answer.version, type: earlier.answer.type, duplicate: true })
        }
        if (earlier?.kind === 'rejected') {
          this.onOutcome('rejected')
          return job.reject(earlier.rejection)
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
   * The common case, decided without the database: every stream of the batch
   * has a state at hand (the one its batches in flight lead to, or else the
   * cached one) that covers its commands. Undefined when a stream has none,
   * or its state lacks what a rule needs: then the transactional path reads
   * the log and decides.
   */
  private decideAhead(jobs: Job<Command>[], streamIds: string[]): Decided<State> | undefined {
    const states = new Map<string, State>()
    const byStream = this.commandsByStream(jobs)
    for (const streamId of streamIds) {
      const base = this.lines.get(streamId)?.state ?? this.cache.get(streamId)
      if (!base || !this.props.loader.covers(base, byStream.get(streamId)!)) return undefined
      states.set(streamId, base)
    }
    const versions = new Map([...states].map(([streamId, state]) => [streamId, state.version]))
    const { outcomes, appends } = this.decideAll(jobs, states)
    // Every stream the decisions read is checked, also those that get no event (a duplicate, a refusal).
    const all = streamIds.map((streamId) => appends.get(streamId) ?? { streamId, streamType: this.props.streamType, expectedVersion: versions.get(streamId)!, events: [] })
    return { outcomes, states, appends: all }
  }

  /**
   * Appends what was decided ahead in one round trip: the database checks,
   * under the stream locks, that every stream is at the version it was
   * decided on. Undefined, with nothing written, when one moved (another
   * node wrote).
   */
  private async appendDecided({ outcomes, states, appends }: Decided<State>) {
    const result = await append(this.props.db, appends)
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

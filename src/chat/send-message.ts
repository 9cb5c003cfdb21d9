import { LRUCache } from 'lru-cache'
import type { DB } from '../db/database.js'
import {
  append,
  ConcurrencyConflict,
  findCommand,
  lockStreams,
  readEventsAfter,
  readStreamBackwards,
  readVersions,
  type StoredEvent,
  type StreamAppend,
  type Tx,
} from '../event-store/event-store.js'
import { decide, evolve, initialState, RATE_WINDOW_MS, RECENT_COMMANDS, Rejection, type Chat, type ChatEvent, type SendMessage } from './chat.js'

export const STREAM_TYPE = 'chat'
export const streamIdOf = (chatId: string) => `chat-${chatId}`

export interface SendMessageResult {
  chatId: string
  version: number
  /** The command id was seen before; nothing was appended. */
  duplicate: boolean
}

export interface SendMessageHandlerProps {
  db: DB
  /** Called after each commit with the events it made durable. */
  onAppended?: (events: StoredEvent[]) => void
  /** Observes each command's outcome (for metrics). */
  onOutcome?: (outcome: 'accepted' | 'duplicate' | 'rejected' | 'conflict' | 'failed') => void
  cacheSize?: number
  maxBatch?: number
  maxConcurrentBatches?: number
}

interface Job {
  command: SendMessage
  attempts: number
  /** Set after a shared transaction failed: run alone so one bad command cannot sink others. */
  solo: boolean
  resolve(result: SendMessageResult): void
  reject(error: unknown): void
}

type Outcome = { ok: SendMessageResult } | { rejected: Rejection }

const MAX_ATTEMPTS = 4

/**
 * The command handler for SendMessage, and the only code that appends chat
 * events. Commands that arrive together share one transaction (group
 * commit: one fsync for many messages); each still gets its own answer.
 *
 * Per transaction: lock the chats' streams, read their versions, bring the
 * cached Chat states up to date with only the newer events, decide, append.
 * A failed shared transaction is split and each command retried alone; a
 * conflict reloads and decides again, a bounded number of times.
 */
export class SendMessageHandler {
  private readonly db: DB
  private readonly cache: LRUCache<string, Chat>
  private readonly onAppended: (events: StoredEvent[]) => void
  private readonly onOutcome: NonNullable<SendMessageHandlerProps['onOutcome']>
  private readonly maxBatch: number
  private readonly maxConcurrentBatches: number
  private queue: Job[] = []
  private running = 0
  private idleWaiters: (() => void)[] = []

  constructor({ db, onAppended = () => {}, onOutcome = () => {}, cacheSize = 10_000, maxBatch = 200, maxConcurrentBatches = 4 }: SendMessageHandlerProps) {
    this.db = db
    this.cache = new LRUCache({ max: cacheSize })
    this.onAppended = onAppended
    this.onOutcome = onOutcome
    this.maxBatch = maxBatch
    this.maxConcurrentBatches = maxConcurrentBatches
  }

  /** Resolves once the message is durable (or was already); rejects with a Rejection when the rules refuse it. */
  send(command: SendMessage): Promise<SendMessageResult> {
    // A command that is invalid in itself (bad chat id, empty content) is
    // refused before it can reach the database or share a transaction:
    // rules that depend on the chat's history cannot refuse an empty chat.
    const alone = decide(command, initialState())
    if (alone.kind === 'rejected') {
      this.onOutcome('rejected')
      return Promise.reject(alone.rejection)
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ command, attempts: 0, solo: false, resolve, reject })
      this.pump()
    })
  }

  /** Resolves when no command is queued or in flight (graceful shutdown). */
  drained(): Promise<void> {
    if (this.running === 0 && this.queue.length === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  private pump(): void {
    while (this.running < this.maxConcurrentBatches && this.queue.length > 0) {
      const batch = this.takeBatch()
      this.running++
      this.run(batch).finally(() => {
        this.running--
        this.pump()
        if (this.running === 0 && this.queue.length === 0) this.idleWaiters.splice(0).forEach((wake) => wake())
      })
    }
  }

  private takeBatch(): Job[] {
    const first = this.queue[0]!
    if (first.solo) return this.queue.splice(0, 1)
    const batch: Job[] = []
    const rest: Job[] = []
    for (const job of this.queue) (batch.length < this.maxBatch && !job.solo ? batch : rest).push(job)
    this.queue = rest
    return batch
  }

  private async run(jobs: Job[]): Promise<void> {
    const streamIds = [...new Set(jobs.map((job) => streamIdOf(job.command.data.chatId)))]
    try {
      const { outcomes, states, appended } =
        (await this.appendOnCachedStates(jobs, streamIds)) ?? (await this.db.transaction().execute((tx) => this.decideAndAppend(tx, jobs, streamIds)))
      for (const [streamId, state] of states) this.cache.set(streamId, state)
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

  private async recover(job: Job, error: unknown): Promise<void> {
    const { chatId, commandId } = job.command.data
    if (isUniqueViolation(error, 'events_command_id')) {
      // A repeat of a command older than the cached window: the index caught it.
      try {
        const version = await findCommand(this.db, streamIdOf(chatId), commandId)
        if (version !== undefined) {
          this.onOutcome('duplicate')
          return job.resolve({ chatId, version, duplicate: true })
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
   * The common case, in one round trip: every chat of the batch has a cached
   * state, so decide on those and let the database check, under the stream
   * locks, that they are current (`append`). Undefined, with nothing
   * written, when a chat is not cached or moved meanwhile (another node
   * wrote): then the transactional path reads what is new and decides again.
   */
  private async appendOnCachedStates(jobs: Job[], streamIds: string[]) {
    const states = new Map<string, Chat>()
    for (const streamId of streamIds) {
      const cached = this.cache.get(streamId)
      if (!cached) return undefined
      states.set(streamId, cached)
    }
    const versions = new Map([...states].map(([streamId, state]) => [streamId, state.version]))
    const { outcomes, appends } = this.decideAll(jobs, states)
    const all = streamIds.map((streamId) => appends.get(streamId) ?? { streamId, streamType: STREAM_TYPE, expectedVersion: versions.get(streamId)!, events: [] })
    const result = await append(this.db, all)
    if ('moved' in result) return undefined
    return { outcomes, states, appended: result.stored }
  }

  private async decideAndAppend(tx: Tx, jobs: Job[], streamIds: string[]) {
    await lockStreams(tx, streamIds)
    const versions = await readVersions(tx, streamIds)
    const states = await this.currentStates(tx, streamIds, versions, jobs[0]!.command.metadata.now)
    const { outcomes, appends } = this.decideAll(jobs, states)
    const result = await append(tx, [...appends.values()])
    // Cannot move while we hold the locks, unless something wrote without them: retry from the log.
    if ('moved' in result) throw new ConcurrencyConflict([...result.moved.keys()])
    return { outcomes, states, appended: result.stored }
  }

  /** Decides each command in arrival order, folding accepted events into `states` as it goes. */
  private decideAll(jobs: Job[], states: Map<string, Chat>): { outcomes: Outcome[]; appends: Map<string, StreamAppend> } {
    const appends = new Map<string, StreamAppend>()
    const outcomes: Outcome[] = jobs.map(({ command }) => {
      const streamId = streamIdOf(command.data.chatId)
      const state = states.get(streamId)!
      const decision = decide(command, state)
      switch (decision.kind) {
        case 'rejected':
          return { rejected: decision.rejection }
        case 'duplicate':
          return { ok: { chatId: command.data.chatId, version: decision.version, duplicate: true } }
        case 'accepted': {
          const pending = appends.get(streamId) ?? { streamId, streamType: STREAM_TYPE, expectedVersion: state.version, events: [] }
          pending.events.push(...decision.events)
          appends.set(streamId, pending)
          const next = decision.events.reduce(evolve, state)
          states.set(streamId, next)
          return { ok: { chatId: command.data.chatId, version: next.version, duplicate: false } }
        }
      }
    })
    return { outcomes, appends }
  }

  /**
   * Each stream's Chat state at its current version. A cached state needs only
   * the events after its version; a cold one is folded from the stream's tail:
   * the latest RECENT_COMMANDS events, extended back while they still fall in
   * the rate window. Never the whole stream.
   */
  private async currentStates(tx: Tx, streamIds: string[], versions: Map<string, number>, now: Date): Promise<Map<string, Chat>> {
    const states = new Map<string, Chat>()
    const ranges: { streamId: string; after: number }[] = []
    for (const streamId of streamIds) {
      const version = versions.get(streamId) ?? 0
      const cached = this.cache.get(streamId)
      const after = cached && cached.version <= version && version - cached.version <= RECENT_COMMANDS ? cached.version : Math.max(0, version - RECENT_COMMANDS)
      states.set(streamId, cached && after === cached.version ? cached : initialState(after))
      if (after < version) ranges.push({ streamId, after })
    }
    const horizon = now.getTime() - RATE_WINDOW_MS
    const newer = await readEventsAfter(tx, ranges)
    for (const { streamId, after } of ranges) {
      let state = states.get(streamId)!
      let events = newer.filter((event) => event.streamId === streamId)
      const cold = state.recentCommands.size === 0
      if (cold && after > 0 && (events.length === 0 || sentAt(events[0]!) > horizon)) {
        // The tail starts inside the rate window: older sends may still count.
        const older = await this.olderInWindow(tx, streamId, after, horizon)
        if (older.length > 0) {
          events = older.concat(events)
          state = initialState(older[0]!.version - 1)
        }
      }
      states.set(streamId, events.map(toChatEvent).reduce(evolve, state))
    }
    return states
  }

  /** Events up to version `upTo` whose send time is still inside the rate window. */
  private async olderInWindow(tx: Tx, streamId: string, upTo: number, horizon: number): Promise<StoredEvent[]> {
    let older: StoredEvent[] = []
    for (let before = upTo + 1; before > 1; ) {
      const chunk = await readStreamBackwards(tx, streamId, { before, limit: 500 })
      const inWindow = chunk.filter((event) => sentAt(event) > horizon)
      older = inWindow.concat(older)
      if (inWindow.length < chunk.length || chunk.length === 0) break
      before = chunk[0]!.version
    }
    return older
  }
}

function sentAt(event: StoredEvent): number {
  return Date.parse(String(event.data.sentAt))
}
function toChatEvent(event: StoredEvent): ChatEvent {
  return { type: event.type, data: event.data, metadata: event.metadata } as ChatEvent
}

function isUniqueViolation(error: unknown, constraint: string): boolean {
  const e = error as { code?: string; constraint?: string }
  return e?.code === '23505' && e.constraint === constraint
}

function isDeadlock(error: unknown): boolean {
  return (error as { code?: string })?.code === '40P01'
}

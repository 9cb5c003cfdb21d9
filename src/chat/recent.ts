/**
 * What a Chat remembers of its recent past (who acted when, which command ids
 * it answered), as persistent values: adding to one returns a new value that
 * shares almost all of the old one, which stays as it was. That keeps evolve
 * pure and makes folding an event cost O(1) (O(log32 n) in Immutable.js's
 * tries) however many people spoke in the last minute. Copying a Map per
 * event, as before, made each event cost in proportion to them: a busy room
 * spent more time copying its memory than deciding.
 */
import { List, Map as PMap } from 'immutable'

/** The answers to the latest `limit` command ids; older ones are forgotten first. */
export class RecentCommands<Answer> implements Iterable<[string, Answer]> {
  private constructor(
    private readonly limit: number,
    private readonly answers: PMap<string, Answer>,
    /** Keys in the order they came, to forget the oldest. */
    private readonly order: List<string>,
  ) {}

  static empty<Answer>(limit: number): RecentCommands<Answer> {
    return new RecentCommands(limit, PMap(), List())
  }

  get size(): number {
    return this.answers.size
  }

  get(key: string): Answer | undefined {
    return this.answers.get(key)
  }

  has(key: string): boolean {
    return this.answers.has(key)
  }

  [Symbol.iterator](): IterableIterator<[string, Answer]> {
    return this.answers.entries()
  }

  with(key: string, answer: Answer): RecentCommands<Answer> {
    let order = this.answers.has(key) ? this.order : this.order.push(key)
    let answers = this.answers.set(key, answer)
    if (order.size > this.limit) {
      answers = answers.delete(order.first()!)
      order = order.shift()
    }
    return new RecentCommands(this.limit, answers, order)
  }
}

/**
 * Each person's act times within a rolling window, at most `perPerson` of
 * them (the rate limit needs no more), oldest first. People who went quiet
 * are swept out when the number of people doubled since the last sweep, so
 * sweeping costs O(1) per act on average and the memory stays within twice
 * the people active in the window.
 */
export class RecentActs implements Iterable<[string, readonly number[]]> {
  private constructor(
    private readonly windowMs: number,
    private readonly perPerson: number,
    private readonly times: PMap<string, readonly number[]>,
    private readonly sweepAt: number,
  ) {}

  static empty(windowMs: number, perPerson: number): RecentActs {
    return new RecentActs(windowMs, perPerson, PMap(), MIN_SWEEP)
  }

  /** How many people have acts remembered (some may have gone quiet since). */
  get size(): number {
    return this.times.size
  }

  /** The person's remembered act times, oldest first (some may be older than the window by now). */
  of(person: string): readonly number[] {
    return this.times.get(person) ?? NONE
  }

  [Symbol.iterator](): IterableIterator<[string, readonly number[]]> {
    return this.times.entries()
  }

  values(): IterableIterator<readonly number[]> {
    return this.times.values()
  }

  with(person: string, at: number): RecentActs {
    const horizon = at - this.windowMs
    const own = this.of(person).filter((time) => time > horizon)
    own.push(at)
    let times = this.times.set(person, own.length > this.perPerson ? own.slice(-this.perPerson) : own)
    let sweepAt = this.sweepAt
    if (times.size >= sweepAt) {
      times = times.filter((list) => list.at(-1)! > horizon)
      sweepAt = Math.max(MIN_SWEEP, times.size * 2)
    }
    return new RecentActs(this.windowMs, this.perPerson, times, sweepAt)
  }
}

const NONE: readonly number[] = []
const MIN_SWEEP = 64

/**
 * A map that forgets the keys it learnt first: `set` keeps a known key in
 * its place, `learn` moves it to the end (most recently learnt), `within`
 * forgets the first learnt until at most `limit` remain. Every operation is
 * O(1) (amortised for `within`) on persistent tries. Immutable.js's
 * OrderedMap would do, but rebuilds itself as keys leave from the front,
 * which is all this map does.
 */
export class LearntInOrder<K, V> implements Iterable<[K, V]> {
  private constructor(
    private readonly entries: PMap<K, { value: V; stamp: number }>,
    /** Keys with the stamp they were learnt at; a key learnt again leaves a stale pair behind, skipped when it comes up. */
    private readonly order: List<readonly [K, number]>,
    private readonly stamps: number,
  ) {}

  static empty<K, V>(): LearntInOrder<K, V> {
    return new LearntInOrder(PMap(), List(), 0)
  }

  get size(): number {
    return this.entries.size
  }

  get(key: K): V | undefined {
    return this.entries.get(key)?.value
  }

  has(key: K): boolean {
    return this.entries.has(key)
  }

  *[Symbol.iterator](): IterableIterator<[K, V]> {
    for (const [key, { value }] of this.entries) yield [key, value]
  }

  /** A known key keeps its place; a new one goes last. */
  set(key: K, value: V): LearntInOrder<K, V> {
    const known = this.entries.get(key)
    if (known) return new LearntInOrder(this.entries.set(key, { value, stamp: known.stamp }), this.order, this.stamps)
    return this.learn(key, value)
  }

  /** The key goes last, known or not. */
  learn(key: K, value: V): LearntInOrder<K, V> {
    const stamp = this.stamps + 1
    return new LearntInOrder(this.entries.set(key, { value, stamp }), this.order.push([key, stamp]), stamp)
  }

  within(limit: number): LearntInOrder<K, V> {
    if (this.entries.size <= limit) return this
    let entries = this.entries
    let order = this.order
    while (entries.size > limit) {
      const [key, stamp] = order.first()!
      order = order.shift()
      if (entries.get(key)?.stamp === stamp) entries = entries.delete(key)
    }
    return new LearntInOrder(entries, order, this.stamps)
  }
}

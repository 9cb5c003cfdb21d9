import { randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import type { DB } from '../db/database.js'

/** One person in a chat, as everyone sees them. */
export interface Person {
  /** For a page's per-reader rules (as a one-way tag), never shown or sent as JSON. */
  personId: string
  name: string
  typing: boolean
}

/** Who is in a chat now, across every node. */
export interface People {
  /** Named people, sorted by name, each once however many tabs. */
  people: Person[]
  /** Readers without a session: counted, never named. */
  others: number
}

/**
 * The list as one reader's page shows it: everyone here, but nobody is told
 * that they themselves are typing ("Ada and Bob are typing…" reads as
 * "Ada is typing…" on Bob's page).
 */
export function asSeenBy(people: People, readerId: string | undefined): People {
  if (readerId === undefined || !people.people.some((person) => person.personId === readerId && person.typing)) return people
  return { ...people, people: people.people.map((person) => (person.personId === readerId ? { ...person, typing: false } : person)) }
}

export interface PresenceProps {
  db: DB
  /** A node's people are written at most this often, all dirty chats in one statement. */
  flushMs?: number
  /** How often a node says its rows are still true. */
  heartbeatMs?: number
  /** A node silent this long is dead: its rows no longer count (a SIGKILLed node's people go). */
  nodeTimeoutMs?: number
  /** A closed stream keeps its person here this long, so a reload or reconnect does not flicker. */
  leaveGraceMs?: number
  /** "is typing…" lasts this long after the last hint. */
  typingMs?: number
  /** At most one presence frame per chat per this interval. */
  frameIntervalMs?: number
  /** Called with a chat's people when they changed, at most once per frameIntervalMs per chat. */
  onChange: (chatId: string, people: People) => void
  onError?: (error: unknown) => void
}

interface LocalPerson {
  name: string | undefined
  streams: number
  typingUntil: number
  leaving: NodeJS.Timeout | undefined
}

interface Watched {
  /** Subscribers on this node that want presence frames. */
  watchers: number
  last: string | undefined
  timer: NodeJS.Timeout | undefined
  due: boolean
  nextAllowed: number
}

export const PRESENCE_CHANNEL = 'presence'

const SENT_COMPOSERS_KEPT = 10_000

function composerKey(chatId: string, personId: string): string {
  return `${chatId}\n${personId}`
}

/**
 * Presence and typing across nodes, through PostgreSQL, never the event log.
 *
 * Each node keeps its own streams' people in memory and writes a chat's rows
 * (UNLOGGED `presence`) only when they changed, coalesced: all chats changed
 * within `flushMs` go in one statement, followed by one NOTIFY naming them.
 * A node heartbeat (`presence_nodes`) every `heartbeatMs` keeps its rows
 * valid; readers ignore the rows of a node silent for `nodeTimeoutMs`, so a
 * killed node's people disappear without anyone deleting them. Every node
 * that serves a chat's page recomputes that chat's list from the table when
 * told (NOTIFY, a node timing out, typing expiring), and sends a frame only
 * when the list changed, at most one per chat per `frameIntervalMs`.
 *
 * Cost at N streams: writes are bounded by chats changed per flush (one
 * statement per flush, whatever N), plus one heartbeat per node; reads by
 * chats whose list may have changed, each at most once per frame interval.
 */
export class Presence {
  readonly nodeId = randomBytes(8).toString('hex')
  private readonly db: DB
  private readonly props: Required<Omit<PresenceProps, 'db' | 'onChange' | 'onError'>>
  private readonly onChange: PresenceProps['onChange']
  private readonly onError: NonNullable<PresenceProps['onError']>
  private readonly local = new Map<string, Map<string, LocalPerson>>()
  private readonly watched = new Map<string, Watched>()
  /** Changed (chat, person) pairs not yet written: only those rows are written, however many people a chat has. */
  private dirty = new Map<string, Set<string>>()
  private flushTimer: NodeJS.Timeout | undefined
  private heartbeatTimer: NodeJS.Timeout | undefined
  private liveNodes = ''
  private stopped = false
  private anonymous = 0
  /**
   * The composer each person last sent from, per chat: a hint from that
   * composer that arrives after its message (the browser's last throttled
   * hint, still in flight at Enter) is stale and must not bring the line back.
   */
  private readonly sentComposers = new Map<string, string>()
  /** Presence frames sent, for metrics. */
  framesSent = 0

  constructor({ db, onChange, onError = () => {}, ...props }: PresenceProps) {
    this.db = db
    this.onChange = onChange
    this.onError = onError
    this.props = {
      flushMs: props.flushMs ?? 300,
      heartbeatMs: props.heartbeatMs ?? 5_000,
      nodeTimeoutMs: props.nodeTimeoutMs ?? 20_000,
      leaveGraceMs: props.leaveGraceMs ?? 2_500,
      typingMs: props.typingMs ?? 5_000,
      frameIntervalMs: props.frameIntervalMs ?? 1_000,
    }
  }

  async start(): Promise<void> {
    await this.heartbeat()
    // Spread over time: the heartbeat also notices nodes that stopped beating.
    this.heartbeatTimer = setInterval(() => void this.heartbeat().catch(this.onError), this.props.heartbeatMs)
    this.heartbeatTimer.unref()
  }

  /** Leaves at once (a clean stop): this node's rows go, and the others are told. */
  async stop(): Promise<void> {
    this.stopped = true
    clearInterval(this.heartbeatTimer)
    clearTimeout(this.flushTimer)
    for (const watched of this.watched.values()) clearTimeout(watched.timer)
    const chats = [...this.local.keys()]
    await sql`delete from presence where node_id = ${this.nodeId}`.execute(this.db).catch(this.onError)
    await sql`delete from presence_nodes where node_id = ${this.nodeId}`.execute(this.db).catch(this.onError)
    if (chats.length > 0) await this.notify(chats).catch(this.onError)
  }

  /** A stream opened: `personId` undefined for a reader without a session. Returns the key to leave with. */
  join(chatId: string, personId: string | undefined, name: string | undefined): string {
    const key = personId ?? `anon:${this.nodeId}:${++this.anonymous}`
    const people = this.local.get(chatId) ?? new Map<string, LocalPerson>()
    this.local.set(chatId, people)
    const person = people.get(key) ?? { name, streams: 0, typingUntil: 0, leaving: undefined }
    clearTimeout(person.leaving)
    person.leaving = undefined
    person.streams++
    if (name) person.name = name
    people.set(key, person)
    // A second tab of someone already here changes nothing anyone sees.
    if (person.streams === 1) this.markDirty(chatId, key)
    return key
  }

  /** A stream closed: the person stays for a grace period, so a reload does not flicker. */
  leave(chatId: string, key: string): void {
    const person = this.local.get(chatId)?.get(key)
    if (!person) return
    person.streams--
    if (person.streams > 0) return
    person.leaving = setTimeout(() => {
      person.leaving = undefined
      if (person.streams > 0) return
      this.forget(chatId, key, person)
    }, this.props.leaveGraceMs)
    person.leaving.unref()
  }

  /**
   * A person is typing in a chat (already rate-limited by the caller), in
   * the composer `composerId` (its commandId) when the hint says which.
   */
  typing(chatId: string, personId: string, name: string, composerId?: string): void {
    if (composerId !== undefined && this.sentComposers.get(composerKey(chatId, personId)) === composerId) return
    const people = this.local.get(chatId) ?? new Map<string, LocalPerson>()
    this.local.set(chatId, people)
    const person = people.get(personId) ?? { name, streams: 0, typingUntil: 0, leaving: undefined }
    person.name = name
    const wasTyping = person.typingUntil > Date.now()
    person.typingUntil = Date.now() + this.props.typingMs
    people.set(personId, person)
    // Extending a spell moves its end in the table (so a dead node's typing ends too) without telling the others.
    this.markDirty(chatId, personId, !wasTyping)
  }

  /** The person sent their message from composer `composerId`: they stopped typing, at once. */
  stoppedTyping(chatId: string, personId: string, composerId: string): void {
    const key = composerKey(chatId, personId)
    this.sentComposers.delete(key)
    this.sentComposers.set(key, composerId)
    // Bounded: a stale hint comes within seconds, and the oldest entries are the first to go.
    if (this.sentComposers.size > SENT_COMPOSERS_KEPT) this.sentComposers.delete(this.sentComposers.keys().next().value!)
    const person = this.local.get(chatId)?.get(personId)
    if (!person || person.typingUntil <= Date.now()) return
    person.typingUntil = 0
    if (person.streams === 0) this.forget(chatId, personId, person)
    else this.markDirty(chatId, personId)
  }

  /** A page on this node shows this chat's people: keep its list current. */
  watch(chatId: string): void {
    const watched = this.watched.get(chatId) ?? { watchers: 0, last: undefined, timer: undefined, due: false, nextAllowed: 0 }
    watched.watchers++
    this.watched.set(chatId, watched)
  }

  unwatch(chatId: string): void {
    const watched = this.watched.get(chatId)
    if (!watched || --watched.watchers > 0) return
    clearTimeout(watched.timer)
    this.watched.delete(chatId)
  }

  /** Another node changed these chats (NOTIFY), or notifications may have been lost (everything). */
  changed(chatIds: Iterable<string> | 'all'): void {
    for (const chatId of chatIds === 'all' ? this.watched.keys() : chatIds) this.refresh(chatId)
  }

  /**
   * Who is in a chat now, from every live node. `reader`: someone about to
   * open a stream here (the chat page being rendered for them), counted as
   * here already: the list their page starts with is the one their stream's
   * first frame brings.
   */
  async people(chatId: string, reader?: { personId: string; name: string }): Promise<People> {
    const { rows } = await sql<{ person_id: string; name: string | null; streams: number; typing: boolean }>`
      select p.person_id, max(p.name) as name, sum(p.streams)::int as streams, bool_or(p.typing_until > now()) as typing
      from presence p join presence_nodes n on n.node_id = p.node_id
      where p.chat_id = ${chatId} and p.node_id <> ${this.nodeId} and n.heartbeat_at > now() - ${`${this.props.nodeTimeoutMs} milliseconds`}::interval
      group by p.person_id
    `.execute(this.db)
    const everyone = new Map(rows.map((row) => [row.person_id, row]))
    // This node's own people come from memory, not its rows: the rows lag by
    // a flush, and a stream that just opened would be told its own reader is
    // not here (and a moment later that they are).
    const now = Date.now()
    for (const [personId, person] of this.local.get(chatId) ?? []) {
      const streams = person.streams > 0 || person.leaving !== undefined ? 1 : 0
      const row = everyone.get(personId)
      everyone.set(personId, { person_id: personId, name: person.name ?? row?.name ?? null, streams: (row?.streams ?? 0) + streams, typing: Boolean(row?.typing) || person.typingUntil > now })
    }
    if (reader && !(everyone.get(reader.personId)?.streams ?? 0)) everyone.set(reader.personId, { person_id: reader.personId, name: reader.name, streams: 1, typing: false })
    const people: Person[] = []
    let others = 0
    for (const row of everyone.values()) {
      // Here means an open stream on some node: a typing hint alone (a closed tab's last keystroke) names no one.
      if (row.streams <= 0) continue
      if (row.person_id.startsWith('anon:')) others++
      else people.push({ personId: row.person_id, name: row.name ?? 'someone', typing: Boolean(row.typing) })
    }
    people.sort((a, b) => a.name.localeCompare(b.name) || Number(a.typing) - Number(b.typing))
    return { people, others }
  }

  /** People present on this node (distinct per chat). */
  get localCount(): number {
    let count = 0
    for (const people of this.local.values()) for (const person of people.values()) if (person.streams > 0) count++
    return count
  }

  /** People present across all live nodes. */
  async totalCount(): Promise<number> {
    const { rows } = await sql<{ n: number }>`
      select count(*)::int as n from (
        select distinct p.chat_id, p.person_id from presence p join presence_nodes n on n.node_id = p.node_id
        where p.streams > 0 and n.heartbeat_at > now() - ${`${this.props.nodeTimeoutMs} milliseconds`}::interval
      ) as present
    `.execute(this.db)
    return rows[0]?.n ?? 0
  }

  private forget(chatId: string, key: string, person: LocalPerson): void {
    const people = this.local.get(chatId)
    if (!people || people.get(key) !== person) return
    // Still typing (a hint this node took for a stream on another node): keep the spell, but write that no stream is open here.
    if (person.typingUntil > Date.now()) return this.markDirty(chatId, key)
    people.delete(key)
    if (people.size === 0) this.local.delete(chatId)
    this.markDirty(chatId, key)
  }

  private markDirty(chatId: string, key: string, visible = true): void {
    const keys = this.dirty.get(chatId) ?? new Set<string>()
    keys.add(key)
    this.dirty.set(chatId, keys)
    if (visible) this.visibleChanges.add(chatId)
    this.scheduleFlush()
  }

  /** Chats whose list others can see changed since the last flush: named in its NOTIFY, and refreshed here at once. */
  private visibleChanges = new Set<string>()

  private scheduleFlush(): void {
    if (this.flushTimer || this.stopped) return
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined
      this.flush().catch((error) => {
        this.onError(error)
        this.scheduleFlush()
      })
    }, this.props.flushMs)
    this.flushTimer.unref()
  }

  /** Writes this node's changed rows in one statement (upsert who is here, delete who left), then one NOTIFY names the chats. */
  private async flush(): Promise<void> {
    if (this.dirty.size === 0) return
    const dirty = this.dirty
    const visible = this.visibleChanges
    this.dirty = new Map()
    this.visibleChanges = new Set()
    const present: { chatId: string; personId: string; name: string | null; streams: number; typingUntil: string | null }[] = []
    const gone: { chatId: string; personId: string }[] = []
    const now = Date.now()
    for (const [chatId, keys] of dirty) {
      for (const personId of keys) {
        const person = this.local.get(chatId)?.get(personId)
        const typing = person !== undefined && person.typingUntil > now
        if (!person || (person.streams === 0 && !typing)) {
          gone.push({ chatId, personId })
          continue
        }
        present.push({ chatId, personId, name: person.name ?? null, streams: person.streams, typingUntil: typing ? new Date(person.typingUntil).toISOString() : null })
        if (typing) this.expireTypingAt(chatId, person.typingUntil)
      }
    }
    try {
      await sql`
        with gone as (
          delete from presence p
          using unnest(${gone.map((g) => g.chatId)}::text[], ${gone.map((g) => g.personId)}::text[]) as g(chat_id, person_id)
          where p.node_id = ${this.nodeId} and p.chat_id = g.chat_id and p.person_id = g.person_id
        )
        insert into presence (node_id, chat_id, person_id, name, streams, typing_until)
        select ${this.nodeId}, * from unnest(${present.map((r) => r.chatId)}::text[], ${present.map((r) => r.personId)}::text[], ${present.map((r) => r.name)}::text[],
                                            ${present.map((r) => r.streams)}::int[], ${present.map((r) => r.typingUntil)}::timestamptz[])
        on conflict (node_id, chat_id, person_id) do update
          set name = excluded.name, streams = excluded.streams, typing_until = excluded.typing_until
      `.execute(this.db)
    } catch (error) {
      for (const [chatId, keys] of dirty) for (const key of keys) this.markDirty(chatId, key, visible.has(chatId))
      throw error
    }
    const changed = [...visible]
    if (changed.length > 0) await this.notify(changed)
    // This node's own pages need not wait for the round trip through NOTIFY.
    for (const chatId of changed) this.refresh(chatId)
  }

  private readonly typingExpiries = new Map<string, { at: number; timer: NodeJS.Timeout }>()

  /**
   * When a typing spell ends, the chat's list changes without anyone saying
   * so: look again at the earliest end due in the chat, then at the next.
   */
  private expireTypingAt(chatId: string, at: number): void {
    const pending = this.typingExpiries.get(chatId)
    if (pending && pending.at <= at) return
    clearTimeout(pending?.timer)
    const timer = setTimeout(() => {
      this.typingExpiries.delete(chatId)
      let next = Infinity
      for (const [key, person] of this.local.get(chatId) ?? []) {
        if (person.typingUntil === 0) continue
        if (person.typingUntil > Date.now()) {
          next = Math.min(next, person.typingUntil)
          continue
        }
        person.typingUntil = 0
        if (person.streams === 0) this.forget(chatId, key, person)
        else this.markDirty(chatId, key)
      }
      if (next < Infinity) this.expireTypingAt(chatId, next)
    }, Math.max(0, at - Date.now()) + 50)
    timer.unref()
    this.typingExpiries.set(chatId, { at, timer })
  }

  private async notify(chats: string[]): Promise<void> {
    // Chat ids are at most 64 characters: 100 of them stay well under the 8,000-byte NOTIFY limit.
    for (let i = 0; i < chats.length; i += 100) {
      await sql`select pg_notify(${PRESENCE_CHANNEL}, ${JSON.stringify({ node: this.nodeId, chats: chats.slice(i, i + 100) })})`.execute(this.db)
    }
  }

  /** Recomputes a watched chat's list, at most once per frame interval, and reports it when it changed. */
  private refresh(chatId: string): void {
    const watched = this.watched.get(chatId)
    if (!watched || this.stopped) return
    if (watched.timer) {
      watched.due = true
      return
    }
    const wait = Math.max(0, watched.nextAllowed - Date.now())
    watched.timer = setTimeout(async () => {
      watched.due = false
      watched.nextAllowed = Date.now() + this.props.frameIntervalMs
      try {
        const people = await this.people(chatId)
        const key = JSON.stringify(people)
        if (key !== watched.last && this.watched.get(chatId) === watched) {
          watched.last = key
          this.framesSent++
          this.onChange(chatId, people)
        }
      } catch (error) {
        this.onError(error)
        watched.due = true
      } finally {
        watched.timer = undefined
        if (watched.due) this.refresh(chatId)
      }
    }, wait)
    watched.timer.unref()
  }

  /** Keeps this node's rows valid, and notices other nodes that went silent (their people leave). */
  private async heartbeat(): Promise<void> {
    const { rows } = await sql<{ nodes: string | null }>`
      with beat as (
        insert into presence_nodes (node_id, heartbeat_at) values (${this.nodeId}, now())
        on conflict (node_id) do update set heartbeat_at = now()
      ),
      swept as (
        -- Long-dead nodes' rows are ignored already; sweep them now and then so the table stays small.
        delete from presence_nodes where heartbeat_at < now() - interval '10 minutes'
      )
      select string_agg(node_id, ',' order by node_id) as nodes from presence_nodes
      where heartbeat_at > now() - ${`${this.props.nodeTimeoutMs} milliseconds`}::interval or node_id = ${this.nodeId}
    `.execute(this.db)
    const nodes = rows[0]?.nodes ?? ''
    if (nodes !== this.liveNodes) {
      const first = this.liveNodes === ''
      this.liveNodes = nodes
      if (!first) this.changed('all')
    }
    await sql`delete from presence p where not exists (select 1 from presence_nodes n where n.node_id = p.node_id)`.execute(this.db)
  }
}

export function parsePresenceNotification(payload: string): { node: string; chats: string[] } | undefined {
  try {
    const parsed = JSON.parse(payload) as { node?: unknown; chats?: unknown }
    if (typeof parsed.node !== 'string' || !Array.isArray(parsed.chats)) return undefined
    return { node: parsed.node, chats: parsed.chats.filter((chat): chat is string => typeof chat === 'string') }
  } catch {
    return undefined
  }
}

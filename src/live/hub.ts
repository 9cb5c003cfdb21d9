import type { ServerResponse } from 'node:http'
import { LRUCache } from 'lru-cache'
import type { DB } from '../db/database.js'
import { HttpError } from '../http/errors.js'
import { changesAfter, headVersion, unbrokenRun, type Change, type Message } from '../chat/messages-projection.js'
import { streamIdOf } from '../chat/chat-commands.js'
import { readVersions } from '../event-store/event-store.js'

export interface HubProps {
  db: DB
  /** Renders a message as HTML; called once per change per node, whatever the number of subscribers. */
  render: (message: Message) => string
  heartbeatMs?: number
  /** Subscribers per process; over it, `subscribe` refuses. */
  maxSubscribers?: number
  /** A subscriber whose unsent output grows past this is dropped; it reconnects and resumes. */
  maxBufferedBytes?: number
  onError?: (error: unknown) => void
  onPushed?: (frames: number) => void
  /** A replay batch went to a catching-up stream: read from the database for it, or kept (or being read) for another. */
  onReplayBatch?: (source: 'database' | 'memory') => void
  /** Catch-up steps running at once (a read holds a pool connection while it runs; a batch from memory, a turn of the event loop). */
  maxConcurrentCatchUps?: number
}

/** Extra frames for one subscriber, e.g. a page that shows whether its stream is alive. */
export interface StreamFrames {
  /** Written at every heartbeat instead of the `: heartbeat` comment. */
  heartbeat?: string
  /** Written just before the hub ends the stream with its reconnect hint. */
  farewell?: string
  /** Wants ephemeral frames (who is here, who is typing): pages do, a plain curl only when it asks. */
  ephemeral?: boolean
  /** Whose stream it is (a session's person): an ephemeral frame may have a variant for them. */
  personId?: string
  /** Told the highest version written to this subscriber after each write ("new since your last visit"). */
  delivered?: (version: number) => void
}

interface Subscriber {
  res: ServerResponse
  heartbeat: WireFrame
  farewell: string
  /** The highest version written to this subscriber; it always got an unbroken run up to here. */
  sent: number
  /** Reading its own backlog from the database; broadcasts skip it meanwhile. */
  catchingUp: boolean
  ephemeral: boolean
  personId: string | undefined
  /** Which slice of the heartbeat period this subscriber's heartbeat falls in. */
  beatSlot: number
  /** The heartbeat tick of the last frame written to it: a frame keeps a connection open as well as a comment does. */
  wroteAt: number
  delivered: ((version: number) => void) | undefined
}

interface ChatChannel {
  chatId: string
  subscribers: Set<Subscriber>
  /** The highest version broadcast on this node (an unbroken run from the start). */
  head: number
  isReady: boolean
  ready: Promise<void>
  fetching: boolean
  fetchAgain: boolean
  /**
   * Names this chat's replay batches in the hub's cache: a new one whenever
   * a message already sent changes (an edit, a reaction, a retraction), so
   * that no stream replays a state the hub has since broadcast a change to,
   * and a new one for every new channel (this node may have missed changes
   * while it had no subscribers to the chat).
   */
  replays: number
}

/** Up to CATCH_UP_BATCH frames after a cursor, each encoded once for every stream that replays them. */
interface ReplayBatch {
  frames: { version: number; wire: WireFrame }[]
}

export class HubFullError extends HttpError {
  constructor(retryAfterSeconds: number) {
    super(503, 'Too many live connections on this server; try again shortly.', { 'Retry-After': String(retryAfterSeconds) })
  }
}

/** Small: a catching-up subscriber holds its batch while its socket drains, so this times the streams is the memory replays take. */
const CATCH_UP_BATCH = 50
/** Replay batches kept for other streams at the same cursor, by the bytes of their frames (each counted twice: bytes and chunk). */
const REPLAY_CACHE_BYTES = 32 << 20
/** A catching-up subscriber gets its next batch only once its socket took the last one down to this. */
const CATCH_UP_HIGH_WATER = 64 * 1024
/** A subscriber that reads nothing for this long while catching up is dropped (it reconnects and resumes). */
const CATCH_UP_STALL_MS = 30_000
const FETCH_RETRY_MS = 250
const HEARTBEAT = ': heartbeat\n\n'
/** The heartbeat period is cut into this many ticks; each subscriber beats on one of them, once per period. */
const HEARTBEAT_SLICES = 15

/**
 * Per-chat fan-out of versioned frames to Server-Sent Events streams: one
 * frame per chat version (a message sent, edited, retracted or reacted to),
 * carrying the message it changed as it is now.
 *
 * Guarantee: every subscriber receives an unbroken, duplicate-free run of
 * versions, starting after its cursor. The hub renders each change once and
 * writes it to every live subscriber of that chat. A subscriber that is
 * behind (new, resuming, or after a gap) reads its own backlog from the read
 * model, then joins the live run; a version missing from what arrives is
 * waited for, never skipped.
 *
 * @example
 * const hub = new Hub({ db, render })
 * await hub.subscribe('tea', res, 41)  // replays 42.., then live
 * hub.notify('tea', 57)                // a NOTIFY said the chat reached 57
 */
export class Hub {
  private readonly db: DB
  private readonly render: HubProps['render']
  private readonly maxSubscribers: number
  private readonly maxBufferedBytes: number
  private readonly onError: NonNullable<HubProps['onError']>
  private readonly onPushed: NonNullable<HubProps['onPushed']>
  private readonly onReplayBatch: NonNullable<HubProps['onReplayBatch']>
  private readonly chats = new Map<string, ChatChannel>()
  private readonly headReads = new Map<string, Promise<number>>()
  private readonly heartbeats = new Map<string, WireFrame>()
  private readonly beatSlots = Array.from({ length: HEARTBEAT_SLICES }, () => new Set<Subscriber>())
  private readonly heartbeat: NodeJS.Timeout
  private closing = false
  private nextSlot = 0
  private beatTick = 0
  private readonly catchUpSteps: Limit
  /**
   * Full replay batches by `<chat's replays> <cursor>`: streams that replay
   * the same history (a thousand clients asking for ?after=0, or many tabs
   * resuming from one old cursor) read and encode each batch once, not once
   * each. Only full batches are kept: their versions are settled, where a
   * short one near the head grows.
   */
  private readonly replays = new LRUCache<string, ReplayBatch>({
    maxSize: REPLAY_CACHE_BYTES,
    sizeCalculation: (batch) => Math.max(1, batch.frames.reduce((bytes, frame) => bytes + 2 * frame.wire.bytes.length, 0)),
  })
  /** Replay reads under way, shared by the streams that ask for the same batch meanwhile. */
  private readonly replayReads = new Map<string, Promise<ReplayBatch>>()
  private replayGeneration = 0
  subscriberCount = 0

  constructor({ db, render, heartbeatMs = 15_000, maxSubscribers = 19_000, maxBufferedBytes = 1 << 20, onError = () => {}, onPushed = () => {}, onReplayBatch = () => {}, maxConcurrentCatchUps = 4 }: HubProps) {
    this.db = db
    this.render = render
    this.maxSubscribers = maxSubscribers
    this.maxBufferedBytes = maxBufferedBytes
    this.onError = onError
    this.onPushed = onPushed
    this.onReplayBatch = onReplayBatch
    this.catchUpSteps = new Limit(maxConcurrentCatchUps)
    // Spread over the period: each tick beats one slice of the subscribers, not
    // all of them in one synchronous loop (at 19,000 streams that loop held up
    // every frame behind it).
    this.heartbeat = setInterval(() => this.beat(this.beatTick++ % HEARTBEAT_SLICES), heartbeatMs / HEARTBEAT_SLICES)
    this.heartbeat.unref()
  }

  /** No room for another subscriber (or shutting down). */
  get full(): boolean {
    return this.closing || this.subscriberCount >= this.maxSubscribers
  }

  get chatCount(): number {
    return this.chats.size
  }

  /**
   * The chat's head as this node knows it now: at once for a chat it
   * streams, else read from the read model. A stream with no cursor starts
   * here, and its caller fixes it before telling the client it is live.
   */
  headOf(chatId: string): number | Promise<number> {
    const known = this.chats.get(chatId)
    return known?.isReady ? known.head : this.readHead(chatId)
  }

  /**
   * One read of a chat's projected head at a time, shared by whoever asks
   * meanwhile: the streams of a chat open together (a page's tabs, 19 per
   * chat in P7) and would each read it. A read begun earlier can only give
   * an earlier head, so a stream may start earlier (and catch up), never later.
   */
  private readHead(chatId: string): Promise<number> {
    let read = this.headReads.get(chatId)
    if (!read) {
      read = headVersion(this.db, chatId).finally(() => this.headReads.delete(chatId))
      this.headReads.set(chatId, read)
    }
    return read
  }

  /**
   * Streams a chat to `res`, from after version `after`: a client's cursor,
   * or (`afterIsHead`) the head its caller read with headOf() before
   * answering, for a client with none. The caller has written the SSE headers.
   */
  async subscribe(chatId: string, res: ServerResponse, after: number, frames: StreamFrames = {}, afterIsHead = false): Promise<void> {
    if (this.full) throw new HubFullError(this.closing ? 1 : 5)
    // A client's cursor beyond what this node has broadcast is checked
    // against the committed version, read as of now, the moment it connected.
    const known = this.chats.get(chatId)
    const committedNow = !afterIsHead && !(known?.isReady && after <= known.head) ? this.committedVersion(chatId) : undefined
    committedNow?.catch(() => {})
    const chat = this.channel(chatId)
    const subscriber: Subscriber = { res, heartbeat: this.heartbeatFrame(frames.heartbeat ?? HEARTBEAT), farewell: frames.farewell ?? '', sent: 0, catchingUp: true, ephemeral: frames.ephemeral ?? false, personId: frames.personId, beatSlot: this.nextSlot++ % HEARTBEAT_SLICES, wroteAt: -Infinity, delivered: frames.delivered }
    chat.subscribers.add(subscriber)
    this.beatSlots[subscriber.beatSlot]!.add(subscriber)
    this.subscriberCount++
    res.once('close', () => this.unsubscribe(chat, subscriber))
    try {
      await chat.ready
      subscriber.sent = after
      if (!afterIsHead && after > chat.head) {
        // Ahead of what this node has broadcast: fine when the version is
        // committed (another node's hub, a 201 answer) — it is simply not
        // projected here yet. Beyond the committed version the cursor is from
        // another life of the database and would skip what comes next.
        subscriber.sent = Math.min(after, await committedNow!)
      }
      // Nothing to read back: a reader with no cursor (or one at the head)
      // joins the live run here, in this synchronous step, without a query.
      // At thousands of streams opening at once, a catch-up read each would
      // queue them all behind the pool for nothing.
      if (subscriber.sent >= chat.head) subscriber.catchingUp = false
      else await this.catchUp(chat, subscriber)
    } catch (error) {
      this.drop(chat, subscriber, error)
    }
  }

  private async committedVersion(chatId: string): Promise<number> {
    return (await readVersions(this.db, [streamIdOf(chatId)])).get(streamIdOf(chatId)) ?? 0
  }

  /** A chat reached `version` (from a NOTIFY): fetch and broadcast what this node has not. */
  notify(chatId: string, version: number): void {
    const chat = this.chats.get(chatId)
    if (chat && version > chat.head) this.fetchNew(chat)
  }

  /**
   * Changes this process knows are committed (its own appends, at commit),
   * complete in themselves (a message just sent): broadcast without a query
   * when they continue the run. Committed is final, so subscribers need not
   * wait for the projection; a subscriber catching up from the table waits
   * for the rows to show instead.
   */
  offer(changes: Change[]): void {
    const byChat = new Map<string, Change[]>()
    for (const change of changes) {
      const chatId = change.message.chatId
      if (!this.chats.has(chatId)) continue
      const list = byChat.get(chatId) ?? []
      list.push(change)
      byChat.set(chatId, list)
    }
    for (const [chatId, list] of byChat) {
      const chat = this.chats.get(chatId)!
      list.sort((a, b) => a.version - b.version)
      const fresh = list.filter((change) => change.version > chat.head)
      const run = unbrokenRun(fresh, chat.head)
      this.broadcast(chat, run)
      if (run.length < fresh.length) this.fetchNew(chat)
    }
  }

  /**
   * An ephemeral frame (no id: it never moves a cursor and is never
   * replayed) to the chat's subscribers on this node that want them;
   * `own` holds variants by person, for their own streams.
   */
  sendEphemeral(chatId: string, frame: string, own: ReadonlyMap<string, string> = new Map()): void {
    const chat = this.chats.get(chatId)
    if (!chat) return
    const bytes = new WireFrame(frame)
    const variants = new Map([...own].map(([personId, variant]) => [personId, new WireFrame(variant)]))
    for (const subscriber of chat.subscribers) {
      if (subscriber.ephemeral) this.write(chat, subscriber, (subscriber.personId !== undefined && variants.get(subscriber.personId)) || bytes)
    }
  }

  /** After the LISTEN connection came back: notifications may have been lost, so every chat catches up. */
  resync(): void {
    for (const chat of this.chats.values()) this.fetchNew(chat)
  }

  /** Shutdown: ends every stream with a reconnect hint and refuses new subscribers. */
  close(retryMs = 1000): void {
    this.closing = true
    clearInterval(this.heartbeat)
    this.endStreams(retryMs)
  }

  /**
   * Ends every stream with a reconnect hint but keeps accepting subscribers:
   * clients come back with Last-Event-ID and resume (to shed or rebalance
   * connections, and for tests of exactly that).
   */
  endStreams(retryMs = 1000): void {
    for (const chat of this.chats.values()) {
      for (const subscriber of chat.subscribers) subscriber.res.end(`${subscriber.farewell}retry: ${retryMs}\n\n`)
    }
  }

  private channel(chatId: string): ChatChannel {
    let chat = this.chats.get(chatId)
    if (chat) return chat
    const created: ChatChannel = { chatId, subscribers: new Set(), head: 0, isReady: false, ready: Promise.resolve(), fetching: false, fetchAgain: false, replays: ++this.replayGeneration }
    // Until the head is known, a notification only marks that a fetch is due.
    created.fetching = true
    created.ready = this.readHead(chatId).then(
      (head) => {
        created.head = Math.max(created.head, head)
        created.isReady = true
        created.fetching = false
        if (created.fetchAgain) this.fetchNew(created)
      },
      (error) => {
        this.chats.delete(chatId)
        throw error
      },
    )
    this.chats.set(chatId, created)
    return created
  }

  private unsubscribe(chat: ChatChannel, subscriber: Subscriber): void {
    if (!chat.subscribers.delete(subscriber)) return
    this.beatSlots[subscriber.beatSlot]!.delete(subscriber)
    this.subscriberCount--
    if (chat.subscribers.size === 0 && this.chats.get(chat.chatId) === chat) this.chats.delete(chat.chatId)
  }

  /** Reads what is new for this chat and broadcasts it; concurrent calls fold into one more pass. */
  private fetchNew(chat: ChatChannel): void {
    if (chat.fetching) {
      chat.fetchAgain = true
      return
    }
    chat.fetching = true
    const pass = async () => {
      do {
        chat.fetchAgain = false
        let batch: Change[]
        do {
          batch = await changesAfter(this.db, chat.chatId, chat.head, CATCH_UP_BATCH)
          this.broadcast(chat, batch)
        } while (batch.length === CATCH_UP_BATCH)
      } while (chat.fetchAgain && this.chats.get(chat.chatId) === chat)
    }
    pass()
      .then(
        () => (chat.fetching = false),
        (error) => {
          // The database may be briefly unreachable: retry, or a message
          // projected meanwhile would wait for the next one to be delivered.
          this.onError(error)
          chat.fetching = false
          if (this.chats.get(chat.chatId) === chat) setTimeout(() => this.fetchNew(chat), FETCH_RETRY_MS).unref()
        },
      )
  }

  /**
   * Ends a subscriber whose backlog could not be read (the database is down):
   * the client reconnects with Last-Event-ID and resumes where it was, rather
   * than sitting on a stream that skips it.
   */
  private drop(chat: ChatChannel, subscriber: Subscriber, error: unknown): void {
    this.onError(error)
    this.unsubscribe(chat, subscriber)
    subscriber.res.end()
  }

  /** Writes an unbroken run starting at chat.head + 1, rendering each change once. */
  private broadcast(chat: ChatChannel, run: Change[]): void {
    for (const change of run) {
      if (change.version !== chat.head + 1) continue
      chat.head = change.version
      // A message sent before changed: replays read from here on show it as it is now.
      if (change.version !== change.message.messageId) chat.replays = ++this.replayGeneration
      if (chat.subscribers.size === 0) continue
      // Encoded once, with its HTTP chunk framing: written as a string, each
      // of thousands of writes would encode it again and frame it again.
      const frame = this.wireOf(change)
      let pushed = 0
      for (const subscriber of chat.subscribers) {
        if (subscriber.catchingUp || change.version <= subscriber.sent) continue
        if (change.version !== subscriber.sent + 1) {
          // Behind the broadcast (cannot happen while the invariants hold): read the backlog instead of skipping.
          this.catchUp(chat, subscriber).catch((error) => this.drop(chat, subscriber, error))
          continue
        }
        this.write(chat, subscriber, frame)
        subscriber.wroteAt = this.beatTick
        subscriber.sent = change.version
        subscriber.delivered?.(change.version)
        pushed++
      }
      this.onPushed(pushed)
    }
  }

  /**
   * Brings one subscriber from its cursor to the broadcast head, from the
   * database, then hands it to the live run. Broadcasts skip it meanwhile;
   * the final check and the hand-over happen in one synchronous step, so no
   * broadcast can fall between them.
   */
  private async catchUp(chat: ChatChannel, subscriber: Subscriber): Promise<void> {
    subscriber.catchingUp = true
    const { res } = subscriber
    for (;;) {
      // A bounded number of catch-up steps at once, a read or a batch from
      // memory each: however many streams replay history, commands keep the
      // rest of the pool and of the event loop.
      const { frames } = await this.catchUpSteps.run(() => this.replayBatch(chat, subscriber.sent))
      if (res.writableEnded || res.destroyed) return
      for (const frame of frames) {
        frame.wire.writeTo(res)
        subscriber.wroteAt = this.beatTick
        subscriber.sent = frame.version
        subscriber.delivered?.(frame.version)
        this.onPushed(1)
        // Backpressure: the next frame goes out only once the socket took the
        // last ones, so a client that never reads holds a few frames, not the
        // chat's history, and a slow one is never dropped for being behind.
        if (res.writableLength > CATCH_UP_HIGH_WATER && !(await drained(res, CATCH_UP_STALL_MS))) {
          // It stopped reading: let it go; a client that comes back resumes from Last-Event-ID.
          this.unsubscribe(chat, subscriber)
          res.destroy()
          return
        }
      }
      if (res.writableEnded || res.destroyed) return
      if (subscriber.sent >= chat.head) break
      if (frames.length === CATCH_UP_BATCH) continue
      // The broadcast is ahead of what the table shows us; it will show soon.
      if (frames.length === 0) await new Promise((resolve) => setTimeout(resolve, 20))
    }
    subscriber.catchingUp = false
  }

  /**
   * The batch after `after`: kept from an earlier read (on the next turn of
   * the event loop, so that streams served from memory take turns), or read
   * from the database, once for all the streams that ask meanwhile, and kept
   * for those that come later when it is full.
   */
  private replayBatch(chat: ChatChannel, after: number): Promise<ReplayBatch> {
    const key = `${chat.replays} ${after}`
    const kept = this.replays.get(key)
    if (kept) {
      this.onReplayBatch('memory')
      return new Promise((resolve) => setImmediate(resolve, kept))
    }
    let read = this.replayReads.get(key)
    if (read) this.onReplayBatch('memory')
    else {
      this.onReplayBatch('database')
      read = changesAfter(this.db, chat.chatId, after, CATCH_UP_BATCH)
        .then((changes) => {
          const batch = { frames: changes.map((change) => ({ version: change.version, wire: this.wireOf(change) })) }
          if (changes.length === CATCH_UP_BATCH) this.replays.set(key, batch)
          return batch
        })
        .finally(() => this.replayReads.delete(key))
      this.replayReads.set(key, read)
    }
    return read
  }

  /** A change's frame, for the live run and for replays alike. */
  private wireOf(change: Change): WireFrame {
    return new WireFrame(toFrame(change.version, this.render(change.message)))
  }

  private write(chat: ChatChannel, subscriber: Subscriber, frame: WireFrame): void {
    frame.writeTo(subscriber.res)
    if (subscriber.res.writableLength > this.maxBufferedBytes) {
      // Too slow to keep up: drop it rather than buffer without bound. The
      // client reconnects with Last-Event-ID and resumes where it was.
      this.unsubscribe(chat, subscriber)
      subscriber.res.destroy()
    }
  }

  /**
   * One slice of the subscribers, kept apart so that a tick touches only its
   * own (a fifteenth of the streams), not all of them. A plain stream that
   * got a frame in the last half period needs no comment to stay open (at
   * 19,000 busy streams these were a thousand write calls a second for
   * nothing); it stays silent at most one and a half periods. A page's
   * heartbeat is its "live" sign, which a message does not renew: always sent.
   */
  private beat(slot: number): void {
    const comment = this.heartbeats.get(HEARTBEAT)
    for (const subscriber of this.beatSlots[slot]!) {
      if (subscriber.heartbeat === comment && this.beatTick - subscriber.wroteAt <= HEARTBEAT_SLICES / 2) continue
      subscriber.heartbeat.writeTo(subscriber.res)
    }
  }

  /** Heartbeats are few distinct texts (a comment, a page's "live"): each encoded once for every stream that beats with it. */
  private heartbeatFrame(text: string): WireFrame {
    let frame = this.heartbeats.get(text)
    if (!frame) this.heartbeats.set(text, (frame = new WireFrame(text)))
    return frame
  }
}

/**
 * A frame as the wire carries it, encoded once for all its subscribers: the
 * bytes, and the same bytes as one HTTP/1.1 chunk. Written to a stream's
 * socket directly, a frame costs one write call; through `res.write` it is
 * framed again for every subscriber and written in three pieces on the
 * next tick. At 19,000 streams that per-write work was a large part of the
 * node's CPU.
 */
export class WireFrame {
  readonly bytes: Buffer
  private chunk: Buffer | undefined

  constructor(text: string) {
    this.bytes = Buffer.from(text)
  }

  writeTo(res: ServerResponse): void {
    const socket = res.socket
    // Straight to the socket only when nothing of this response waits in
    // its own buffer (its headers went out, it is the socket's current
    // answer): then the bytes land in order after what it wrote before.
    if (socket && res.headersSent && !res.writableEnded && res.writableLength === socket.writableLength) {
      socket.write(res.chunkedEncoding ? (this.chunk ??= chunkOf(this.bytes)) : this.bytes)
    } else {
      res.write(this.bytes)
    }
  }
}

function chunkOf(bytes: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${bytes.length.toString(16)}\r\n`), bytes, Buffer.from('\r\n')])
}


/** One SSE message: `id:`, one `data:` line per line of HTML, a blank line. No `event:` name. */
export function toFrame(id: number, html: string): string {
  return `id: ${id}\n${dataFrame(html)}`
}

/** An SSE message without an id: it does not move the client's resume cursor. */
export function dataFrame(html: string): string {
  // One pass over the fragment, not an array of its lines and their prefixed copies.
  return `data: ${html.replace(LINE_BREAK, '\ndata: ')}\n\n`
}

const LINE_BREAK = /\r\n|\r|\n/g

/** Resolves true once `res` drained its buffer, false if it closed or stayed full for `timeoutMs`. */
function drained(res: ServerResponse, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (value: boolean) => {
      clearTimeout(timer)
      res.off('drain', onDrain)
      res.off('close', onClose)
      resolve(value)
    }
    const onDrain = () => done(true)
    const onClose = () => done(false)
    const timer = setTimeout(() => done(false), timeoutMs)
    timer.unref()
    res.on('drain', onDrain)
    res.on('close', onClose)
  })
}

/** At most `max` of these run at once; the rest wait their turn, in order. */
class Limit {
  private running = 0
  private readonly waiting: (() => void)[] = []

  constructor(private readonly max: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.max) await new Promise<void>((resolve) => this.waiting.push(resolve))
    else this.running++
    try {
      return await task()
    } finally {
      const next = this.waiting.shift()
      if (next) next()
      else this.running--
    }
  }
}

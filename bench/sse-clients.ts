/**
 * Many Server-Sent Events subscribers in one process, apart from the server
 * and the poster. Sockets are spread over 127.0.0.x source addresses (one
 * address has about 28k ephemeral ports, and this keeps well clear of that).
 *
 * Every event's arrival is compared with the send time the poster wrote into
 * the message (`t=<ms>`), on the clock that all processes share. Frames
 * that carry no such stamp (an edit or a reaction shows the message's text,
 * not the time of the command) are matched by their chat and `id:` instead,
 * once `track` is on: the poster learns each command's version from its
 * answer and sends the stamps of those versions (`latenciesFor`).
 */
import http from 'node:http'
import { connect } from 'node:net'
import type { FrameSample } from './lib/frames.js'
import { serveParent } from './lib/processes.js'
import { nowMs, percentile, Samples } from './lib/stats.js'

interface Delivery {
  count: number
  stamp: number
  last: number
}

const clients = new Set<http.ClientRequest>()
let latencies = new Samples()
const deliveries = new Map<string, Delivery>()
let connected = 0
let waiters: { id: string; expected: number; resolve: (d: Delivery) => void }[] = []
// Frames are looked at as bytes, never decoded: the fields read here are
// ASCII, and decoding every frame's UTF-8 (emoji in each) was a third of
// this process's CPU in P2, taken from the two cores the app shares with it.
const FRAME_END = Buffer.from('\n\n')
// In the message's text, not anywhere in the frame: its time links carry `?at=<version>`.
const STAMP_AT = Buffer.from('class="content">t=')
const ID_FIELD = Buffer.from('id: ')
const NEWLINE = 0x0a
const CHAT_OF_URL = /\/chats\/([^/?]+)\/events/
/** Arrival times of every frame by `<chatId> <id>`, while tracking. */
let tracking = false
let arrivals = new Map<string, number[]>()
/**
 * Each stream's frames by id, while counting: exactly once per subscriber is
 * the claim, so lost and duplicated are told per stream, not from totals.
 */
interface Stream {
  chatId: string
  seen: Map<number, number> | undefined
}
const streams = new Set<Stream>()
let counting = false
/** The slowest delivery of the posts sent in each MOMENT_MS, by send time: when the slow ones were sent, not only how slow. */
const MOMENT_MS = 250
let slowest = new Map<number, number>()

/** The ASCII run of digits (and dots) at `start`. */
function numberAt(frame: Buffer, start: number): string {
  let end = start
  while (end < frame.length && ((frame[end]! >= 0x30 && frame[end]! <= 0x39) || frame[end] === 0x2e)) end++
  return frame.toString('latin1', start, end)
}

/** The frame's `id:` field, on a line of its own. */
function idOf(frame: Buffer): string | undefined {
  let at = frame.indexOf(ID_FIELD)
  while (at > 0 && frame[at - 1] !== NEWLINE) at = frame.indexOf(ID_FIELD, at + 1)
  return at < 0 ? undefined : numberAt(frame, at + ID_FIELD.length) || undefined
}

/** The last stamped frame, decoded only when asked for. */
let lastStamped: { frame: Buffer; stamp: string } | undefined

function onEvent(frame: Buffer, at: number, chatId: string, stream: Stream): void {
  if (counting) {
    const id = idOf(frame)
    if (id) {
      stream.seen ??= new Map()
      stream.seen.set(Number(id), (stream.seen.get(Number(id)) ?? 0) + 1)
    }
  }
  if (tracking) {
    const id = idOf(frame)
    if (id) {
      const key = `${chatId} ${id}`
      const list = arrivals.get(key)
      if (list) list.push(at)
      else arrivals.set(key, [at])
    }
  }
  const stampAt = frame.indexOf(STAMP_AT)
  if (stampAt < 0) return
  const stampText = numberAt(frame, stampAt + STAMP_AT.length)
  const stamp = Number(stampText)
  latencies.push(at - stamp)
  const moment = Math.floor(stamp / MOMENT_MS)
  slowest.set(moment, Math.max(slowest.get(moment) ?? 0, at - stamp))
  lastStamped = { frame, stamp: `t=${stampText}` }
  const key = `${stamp}`
  let delivery = deliveries.get(key)
  if (!delivery) deliveries.set(key, (delivery = { count: 0, stamp, last: 0 }))
  delivery.count++
  delivery.last = at
  if (waiters.length > 0) {
    waiters = waiters.filter((waiter) => {
      if (waiter.id !== key || delivery.count < waiter.expected) return true
      waiter.resolve(delivery)
      return false
    })
  }
}

function open(url: string, localAddress: string): Promise<boolean> {
  const chatId = CHAT_OF_URL.exec(url)?.[1] ?? ''
  const stream: Stream = { chatId, seen: undefined }
  return new Promise((resolve) => {
    const request = http.get(url, { agent: false, localAddress, headers: { accept: 'text/event-stream' } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume()
        return resolve(false)
      }
      // The start of a frame that has not all come yet.
      let rest: Buffer | undefined
      let first = true
      res.on('data', (chunk: Buffer) => {
        const at = nowMs()
        const buffer = rest ? Buffer.concat([rest, chunk]) : chunk
        let start = 0
        let end: number
        while ((end = buffer.indexOf(FRAME_END, start)) >= 0) {
          onEvent(buffer.subarray(start, end), at, chatId, stream)
          start = end + FRAME_END.length
        }
        rest = start < buffer.length ? buffer.subarray(start) : undefined
        if (first) {
          first = false
          connected++
          streams.add(stream)
          resolve(true)
        }
      })
      res.on('close', () => {
        streams.delete(stream)
        if (clients.delete(request) && !first) connected--
      })
    })
    request.on('error', () => {
      clients.delete(request)
      resolve(false)
    })
    clients.add(request)
  })
}

serveParent(
  {},
  {
    /**
     * Opens `count` raw sockets over `addresses` client addresses, each asking
     * for `path` and never reading after the answer's first bytes, 100 every
     * 20 ms; resolves when all of them were answered (or after 30 s).
     */
    async neverReading(message) {
      const { host, port, path, count, addresses } = message as { host: string; port: number; path: string; count: number; addresses: number }
      let answered = 0
      const started = performance.now()
      for (let i = 0; i < count; i++) {
        const socket = connect({ host, port, localAddress: `127.0.0.${2 + (i % addresses)}` }, () => {
          socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nAccept: text/event-stream\r\n\r\n`)
        })
        socket.once('data', (chunk) => {
          if (chunk.toString('latin1').startsWith('HTTP/1.1 200')) answered++
          socket.pause()
        })
        socket.on('error', () => {})
        if (i % 100 === 99) await new Promise((resolve) => setTimeout(resolve, 20))
      }
      for (const deadline = Date.now() + 30_000; answered < count && Date.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 50))
      return { answered, ms: performance.now() - started }
    },
    /** Opens `count` streams (round-robin over `urls`), `concurrency` connects at a time. */
    async open(message) {
      const urls = message.urls as string[]
      const count = message.count as number
      const addresses = (message.addresses as number) ?? 1
      const concurrency = (message.concurrency as number) ?? 100
      let next = 0
      let failed = 0
      const worker = async () => {
        while (next < count) {
          const i = next++
          if (!(await open(urls[i % urls.length]!, `127.0.0.${2 + (i % addresses)}`))) failed++
        }
      }
      await Promise.all(Array.from({ length: concurrency }, worker))
      return { connected, failed }
    },
    /** Resolves when `expected` streams have the message stamped `stamp`: when the last one got it. */
    async waitFor(message) {
      const key = `${Number(message.stamp)}`
      const expected = message.expected as number
      const timeoutMs = (message.timeoutMs as number) ?? 30_000
      const existing = deliveries.get(key)
      if (existing && existing.count >= expected) return { ...existing }
      return await new Promise((resolve) => {
        const timer = setTimeout(() => {
          waiters = waiters.filter((waiter) => waiter.id !== key)
          resolve({ ...(deliveries.get(key) ?? { count: 0, stamp: Number(key), last: NaN }), timedOut: true })
        }, timeoutMs)
        waiters.push({ id: key, expected, resolve: (delivery) => (clearTimeout(timer), resolve({ ...delivery })) })
      })
    },
    /** Latency percentiles since the last reset, then reset. */
    latencies() {
      const sorted = latencies.sorted()
      latencies = new Samples()
      deliveries.clear()
      slowest = new Map()
      return { count: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] ?? NaN }
    },
    /** Starts (or stops) recording every frame's arrival by chat and id, from empty. */
    track(message) {
      tracking = Boolean(message.on)
      arrivals = new Map()
      return {}
    },
    /**
     * Latencies of the frames of the versions in `stamps` (`"<chatId> <version>": send time`),
     * one per subscriber that got the frame (what was recorded stays until `track` again).
     */
    latenciesFor(message) {
      const stamps = message.stamps as Record<string, number>
      const samples = new Samples()
      let versions = 0
      let missing = 0
      for (const [key, stamp] of Object.entries(stamps)) {
        versions++
        const list = arrivals.get(key)
        if (!list) {
          missing++
          continue
        }
        for (const at of list) samples.push(at - stamp)
      }
      const sorted = samples.sorted()
      return { count: sorted.length, versions, missing, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] ?? NaN }
    },
    /** Every latency since the last reset (to merge with other processes' before taking percentiles), then reset. */
    latencySamples() {
      const sorted = latencies.sorted()
      latencies = new Samples()
      deliveries.clear()
      const moments = [...slowest].map(([moment, ms]) => [moment * MOMENT_MS, ms])
      slowest = new Map()
      // A baseline writes frames like the last stamped one.
      const frameSample: FrameSample | undefined = lastStamped && { text: `${lastStamped.frame.toString('utf8')}\n\n`, stamp: lastStamped.stamp }
      return { samples: Array.from(sorted), frameSample, frameBytes: lastStamped ? lastStamped.frame.length + FRAME_END.length : 0, moments }
    },
    /** Starts (or stops) counting every stream's frames by id, from empty. */
    count(message) {
      counting = Boolean(message.on)
      for (const stream of streams) stream.seen = undefined
      return {}
    },
    /**
     * For every version in `expected` (chat id: versions), how many open
     * streams of that chat never got its frame, and how many extra copies
     * came (frames of other versions are not looked at).
     */
    exactness(message) {
      const expected = message.expected as Record<string, number[]>
      let lost = 0
      let duplicated = 0
      let deliveries = 0
      for (const stream of streams) {
        for (const version of expected[stream.chatId] ?? []) {
          const copies = stream.seen?.get(version) ?? 0
          if (copies === 0) lost++
          else deliveries++
          if (copies > 1) duplicated += copies - 1
        }
      }
      return { lost, duplicated, deliveries, streams: streams.size }
    },
    status: () => ({ connected }),
    closeAll() {
      for (const request of clients) request.destroy()
      clients.clear()
      connected = 0
      return {}
    },
  },
  async () => {
    for (const request of clients) request.destroy()
  },
)

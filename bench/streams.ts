/**
 * P7, "one node, nineteen thousand people" (issue 13, item 10): 19,000
 * streams over 1,000 chats on one node while posts arrive at random over
 * those chats, beside a bare node:http server (`fanout-server.ts`) that takes
 * the same posts and writes the app's own frames (each with its post's id
 * and text) to the same streams, without a database.
 *
 * The streams are held by several `sse-clients.ts` processes (a process here
 * may hold at most 20,000 open files, and the clients must not share a CPU
 * queue with what they measure); the posts are JSON, from people with
 * session cookies, sent from the bench process.
 */
import { randomUUID } from 'node:crypto'
import type { BenchDatabase, BenchServer } from './lib/database.js'
import { cpuShares, describeShares, ownCpuMs, treeCpuMs, type CpuShares } from './lib/cpu.js'
import { FRAME_ENV, type FrameSample } from './lib/frames.js'
import { openLoop } from './lib/load.js'
import { startChild, type Child } from './lib/processes.js'
import { nowMs, percentile, sleep } from './lib/stats.js'

export interface P7Sizes {
  streams: number
  chats: number
  rate: number
  seconds: number
  /** Rates tried in order, `sweepSeconds` each, until p99 passes P99_TARGET_MS. */
  sweepRates: number[]
  sweepSeconds: number
  clientProcesses: number
  people: number
  warmupSeconds: number
}

export interface P7Context {
  sizes: P7Sizes
  startApp(database: BenchDatabase): Promise<Child<{ url: string }>>
  sessions(url: string, count: number): Promise<string[]>
  report(row: { id: string; figure: string; app: string; baseline: string; ratio: string; target: string; met?: boolean }): void
  notes: string[]
  fmt(value: number, digits?: number): string
  ms(value: number): string
}

const P99_TARGET_MS = 250
const OPEN_TARGET_S = 10
/** Enough posts in flight for the highest sweep rate at a few tens of ms each. */
const POST_CONNECTIONS = 64

interface Latency {
  count: number
  p50: number
  p99: number
  max: number
}

interface Side {
  openSeconds: number
  connected: number
  latency: Latency
  accepted: number
  /** The server process's CPU time per accepted post during the measured run (its fan-out included). */
  cpuPerPostMs: number
  /** Who used the machine during the measured run. */
  inUse: CpuShares
  deliveries: number
  lost: number
  duplicated: number
  sweep: { rate: number; p99: number }[]
  highest: number
  frameBytes: number
  frameSample: FrameSample | undefined
}

export async function p7(server: BenchServer, ctx: P7Context): Promise<void> {
  const { sizes, report, fmt, ms } = ctx
  console.log(`P7 one node: ${fmt(sizes.streams)} streams over ${fmt(sizes.chats)} chats (${sizes.clientProcesses} client processes), ${sizes.rate} msg/s for ${sizes.seconds} s, then a sweep of ${sizes.sweepRates.join(', ')} msg/s for ${sizes.sweepSeconds} s each`)
  const db = await server.fresh('p7')
  let app: Side
  try {
    const node = await ctx.startApp(db)
    try {
      const cookies = await ctx.sessions(node.ready.url, sizes.people)
      app = await side('app', node, cookies, ctx, server.postmasterPid)
    } finally {
      await node.stop()
    }
  } finally {
    await db.drop()
  }
  const fanout = await startChild<{ url: string }>('fanout-server.ts', { [FRAME_ENV]: JSON.stringify(app.frameSample) })
  let base: Side
  try {
    base = await side('baseline', fanout, [''], ctx)
  } finally {
    await fanout.stop()
  }
  const figures = (latency: Latency) => `${ms(latency.p50)} / ${ms(latency.p99)} / ${ms(latency.max)}`
  report({ id: 'P7', figure: `open ${fmt(sizes.streams)} streams over ${fmt(sizes.chats)} chats (s)`, app: `${fmt(app.openSeconds, 1)} s`, baseline: `${fmt(base.openSeconds, 1)} s (bare node:http)`, ratio: `${fmt(app.openSeconds / base.openSeconds, 2)}×`, target: `≤ ${OPEN_TARGET_S} s`, met: app.openSeconds <= OPEN_TARGET_S && app.connected === sizes.streams })
  report({ id: 'P7', figure: `POST → frame at ${sizes.rate} msg/s for ${sizes.seconds} s: p50 / p99 / max`, app: figures(app.latency), baseline: figures(base.latency), ratio: `p99 ${fmt(app.latency.p99 / base.latency.p99, 2)}×`, target: `p99 ≤ ${P99_TARGET_MS} ms`, met: app.latency.p99 <= P99_TARGET_MS })
  report({ id: 'P7', figure: `server CPU per post at ${sizes.rate} msg/s (${fmt(sizes.streams / sizes.chats)} streams a chat)`, app: `${fmt(app.cpuPerPostMs, 2)} ms`, baseline: `${fmt(base.cpuPerPostMs, 2)} ms`, ratio: `${fmt(app.cpuPerPostMs / base.cpuPerPostMs, 2)}×`, target: '' })
  report({ id: 'P7', figure: `cores in use during the ${sizes.seconds} s at ${sizes.rate} msg/s, by process`, app: describeShares(app.inUse), baseline: describeShares(base.inUse), ratio: '', target: '' })
  const exact = (s: Side) => `${fmt(s.lost)} / ${fmt(s.duplicated)} of ${fmt(s.deliveries + s.lost)}`
  report({ id: 'P7', figure: 'deliveries lost / duplicated (per subscriber, per chat version)', app: exact(app), baseline: exact(base), ratio: '', target: '0 / 0', met: app.lost === 0 && app.duplicated === 0 && app.accepted > 0 })
  const highest = (s: Side) => (s.highest > 0 ? `${fmt(s.highest)} msg/s` : `< ${fmt(sizes.sweepRates[0]!)} msg/s`)
  report({ id: 'P7', figure: `highest rate with p99 ≤ ${P99_TARGET_MS} ms (sweep, ${sizes.sweepSeconds} s per rate)`, app: highest(app), baseline: highest(base), ratio: app.highest > 0 && base.highest > 0 ? `${fmt(app.highest / base.highest, 2)}×` : '', target: `≥ ${fmt(sizes.rate)} msg/s`, met: app.highest >= sizes.rate })
}

/** One server's run: open the streams, the measured load, then the sweep. */
async function side(label: string, server: Child<{ url: string }>, cookies: string[], ctx: P7Context, postgresPid?: number): Promise<Side> {
  const { sizes, notes, fmt, ms } = ctx
  const origin = server.ready.url
  const cpuMs = async () => (await server.ask<{ ms: number }>({ type: 'cpu' })).ms
  const chatIds = Array.from({ length: sizes.chats }, (_, i) => `p7-${i}`)
  const urls = chatIds.map((chatId) => `${origin}/chats/${chatId}/events`)
  const clients: Child<unknown>[] = []
  try {
    for (let k = 0; k < sizes.clientProcesses; k++) clients.push(await startChild('sse-clients.ts'))
    const perProcess = Math.ceil(sizes.streams / clients.length)
    const t0 = performance.now()
    // Process k holds streams k·perProcess.. of the whole round-robin over the chats.
    const opened = await Promise.all(
      clients.map((client, k) => {
        const from = (k * perProcess) % urls.length
        const count = Math.min(perProcess, sizes.streams - k * perProcess)
        return client.ask<{ connected: number; failed: number }>({ type: 'open', urls: [...urls.slice(from), ...urls.slice(0, from)], count, addresses: 50, concurrency: 200 })
      }),
    )
    const openSeconds = (performance.now() - t0) / 1000
    const connected = opened.reduce((sum, each) => sum + each.connected, 0)
    const failed = opened.reduce((sum, each) => sum + each.failed, 0)
    if (failed > 0 || connected !== sizes.streams) notes.push(`P7 ${label}: ${fmt(connected)} of ${fmt(sizes.streams)} streams open, ${fmt(failed)} failed to connect`)
    console.log(`    ${label}: ${fmt(connected)} streams open in ${fmt(openSeconds, 1)} s`)

    const post = posts(chatIds, cookies)
    // How long the measured run's posts took to be answered: a slow commit, told apart from a slow fan-out.
    const answerTimes: number[] = []
    const loop = (rate: number, seconds: number, answered?: (chatId: string, version: number) => void) =>
      openLoop(origin, {
        rate,
        durationMs: seconds * 1000,
        connections: POST_CONNECTIONS,
        next: post,
        readBody: Boolean(answered),
        answered: (spec, status, answerMs, body) => {
          if (answered && status === 201) {
            answered(spec.chatId, (JSON.parse(body!) as { version: number }).version)
            answerTimes.push(answerMs)
          }
        },
      })
    const samples = async () => {
      const answers = await Promise.all(clients.map((client) => client.ask<{ samples: number[]; frameBytes: number; frameSample?: FrameSample; moments: [number, number][] }>({ type: 'latencySamples' })))
      const all = Float64Array.from(answers.flatMap((answer) => answer.samples)).sort()
      const moments = new Map<number, number>()
      for (const [at, slowest] of answers.flatMap((answer) => answer.moments)) moments.set(at, Math.max(moments.get(at) ?? 0, slowest))
      return { count: all.length, p50: percentile(all, 50), p99: percentile(all, 99), max: all[all.length - 1] ?? NaN, frameBytes: Math.max(...answers.map((answer) => answer.frameBytes)), frameSample: answers.find((answer) => answer.frameSample)?.frameSample, moments }
    }

    await loop(sizes.rate, sizes.warmupSeconds)
    await sleep(1000)
    await samples()
    await Promise.all(clients.map((client) => client.ask({ type: 'count', on: true })))
    const expected: Record<string, number[]> = {}
    const cpu0 = await cpuMs()
    const startedAt = nowMs()
    const started = performance.now()
    const shares = cpuShares({
      server: () => treeCpuMs(server.process.pid!),
      ...(postgresPid ? { postgres: () => treeCpuMs(postgresPid) } : {}),
      clients: () => clients.reduce((sum, client) => sum + treeCpuMs(client.process.pid!), 0),
      poster: ownCpuMs,
    })
    const sent = await loop(sizes.rate, sizes.seconds, (chatId, version) => (expected[chatId] ??= []).push(version))
    const inUse = shares()
    const drainedMs = performance.now() - started - sizes.seconds * 1000
    // The last frames go out within moments of the last answer.
    await sleep(500)
    const cpuPerPost = (await cpuMs()) - cpu0
    const accepted = sent.statuses[201] ?? 0
    const cpuPerPostMs = cpuPerPost / Math.max(1, accepted)
    if (accepted !== sent.sent || sent.errors > 0) notes.push(`P7 ${label}: ${fmt(sent.sent)} posts, answers ${JSON.stringify(sent.statuses)}, errors ${sent.errors}`)
    if (drainedMs > 1000) notes.push(`P7 ${label}: the last answers came ${fmt(drainedMs / 1000, 1)} s after the last post: it did not keep up with ${sizes.rate} msg/s`)
    // Every accepted post once on every stream of its chat: wait (a while) for the last frames, then count.
    let exactness = { lost: 0, duplicated: 0, deliveries: 0 }
    for (let waited = 0; waited <= 10_000; waited += 500) {
      await sleep(500)
      exactness = { lost: 0, duplicated: 0, deliveries: 0 }
      for (const client of clients) {
        const each = await client.ask<typeof exactness>({ type: 'exactness', expected })
        exactness.lost += each.lost
        exactness.duplicated += each.duplicated
        exactness.deliveries += each.deliveries
      }
      if (exactness.lost === 0) break
    }
    await Promise.all(clients.map((client) => client.ask({ type: 'count', on: false })))
    const latency = await samples()
    const answers = Float64Array.from(answerTimes).sort()
    if (latency.p99 > P99_TARGET_MS) {
      // When the slow ones were sent tells a pause (a few moments) from a node that cannot keep up (all of them).
      const worst = [...latency.moments].sort((a, b) => b[1] - a[1]).slice(0, 6)
      notes.push(`P7 ${label}: the slowest moments of the run (posts sent in a quarter second, seconds after its start: slowest delivery): ${worst.map(([at, slowest]) => `+${fmt((at - startedAt) / 1000, 2)} s: ${ms(slowest)}`).join(', ')}`)
    }
    console.log(`    ${label}: ${fmt(sent.sent)} posts at ${sizes.rate}/s (${fmt(accepted)} accepted), ${fmt(exactness.deliveries)} deliveries, lost ${fmt(exactness.lost)}, duplicated ${fmt(exactness.duplicated)}; POST answered p50 ${ms(percentile(answers, 50))}, p99 ${ms(percentile(answers, 99))}; POST → frame p50 ${ms(latency.p50)}, p99 ${ms(latency.p99)}, max ${ms(latency.max)}; frames of ${fmt(latency.frameBytes)} bytes; CPU per post ${fmt(cpuPerPostMs, 2)} ms`)

    const sweep: { rate: number; p99: number }[] = []
    let highest = 0
    for (const rate of sizes.sweepRates) {
      await loop(rate, sizes.sweepSeconds)
      await sleep(1000)
      const result = await samples()
      sweep.push({ rate, p99: result.p99 })
      console.log(`    ${label} sweep: ${rate} msg/s: p50 ${ms(result.p50)}, p99 ${ms(result.p99)}, max ${ms(result.max)} (${fmt(result.count)} deliveries)`)
      if (!(result.p99 <= P99_TARGET_MS)) break
      highest = rate
      // Let the queues empty before the next, higher rate.
      await sleep(1000)
    }
    return { openSeconds, connected, latency, accepted, cpuPerPostMs, inUse, deliveries: exactness.deliveries, lost: exactness.lost, duplicated: exactness.duplicated, sweep, highest, frameBytes: latency.frameBytes, frameSample: latency.frameSample }
  } finally {
    await Promise.all(clients.map((client) => client.stop()))
  }
}

/**
 * Post i: a JSON message stamped with its send time, into a chat picked at
 * random, from one of `cookies` at random (with hundreds of people over a
 * thousand chats, nobody comes near the 30 posts a minute one person may
 * make in one chat).
 */
function posts(chatIds: string[], cookies: string[]) {
  return (_i: number) => {
    const chatId = chatIds[Math.floor(Math.random() * chatIds.length)]!
    const cookie = cookies[Math.floor(Math.random() * cookies.length)]!
    return {
      chatId,
      method: 'POST' as const,
      path: `/chats/${chatId}/messages`,
      headers: { 'content-type': 'application/json', accept: 'application/json', ...(cookie ? { cookie } : {}) },
      body: JSON.stringify({ content: `t=${nowMs().toFixed(3)}`, commandId: randomUUID() }),
    }
  }
}

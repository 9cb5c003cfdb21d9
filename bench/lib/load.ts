import { randomUUID } from 'node:crypto'
import { Pool } from 'undici'
import { nowMs, percentile, Samples, sleep } from './stats.js'

/**
 * HTTP load from undici's Pool: a well-kept client with its own HTTP/1.1
 * parser, keep-alive and one request per connection at a time (no
 * pipelining, like browsers). It costs the loader less CPU per request than
 * node:http, which matters when loader, app and Postgres share two cores.
 */
export interface LoadResult {
  requests: number
  statuses: Record<number, number>
  errors: number
  durationMs: number
  rps: number
  p50: number
  p99: number
}

export interface RequestSpec {
  method: 'GET' | 'POST'
  path: string
  headers?: Record<string, string>
  body?: string
}

/**
 * What a caller may observe of each answer: its status, how long it took, and
 * (when `readBody` is set) its text, e.g. the version a JSON answer carries.
 */
export interface AnswerHooks<Spec extends RequestSpec> {
  readBody?: boolean
  answered?: (spec: Spec, status: number, ms: number, body: string | undefined) => void
}

/**
 * Keep-alive connections to `origin`, one request on each at a time. Pass the
 * same pool to several loops to keep their connections open between them, as
 * a person's browser does while the page is open.
 */
export function loadPool(origin: string, connections: number): Pool {
  return new Pool(origin, { connections, pipelining: 1, keepAliveTimeout: 30_000 })
}

/** `connections` workers, each sending its next request as soon as the previous answer is read, for `durationMs`. */
export async function closedLoop<Spec extends RequestSpec>(
  origin: string,
  { connections, durationMs, next, readBody, answered }: { connections: number; durationMs: number; next: (i: number) => Spec } & AnswerHooks<Spec>,
): Promise<LoadResult> {
  const pool = loadPool(origin, connections)
  const latencies = new Samples()
  const statuses: Record<number, number> = {}
  let errors = 0
  let count = 0
  const started = performance.now()
  const end = started + durationMs
  const worker = async () => {
    while (performance.now() < end) {
      const spec = next(count++)
      const t0 = performance.now()
      try {
        const { statusCode, body } = await pool.request({ ...spec, headers: spec.headers ?? {} })
        const text = readBody ? await body.text() : (await body.dump(), undefined)
        const ms = performance.now() - t0
        latencies.push(ms)
        statuses[statusCode] = (statuses[statusCode] ?? 0) + 1
        answered?.(spec, statusCode, ms, text)
      } catch {
        errors++
      }
    }
  }
  await Promise.all(Array.from({ length: connections }, worker))
  const durationMs_ = performance.now() - started
  await pool.close()
  const sorted = latencies.sorted()
  return { requests: sorted.length, statuses, errors, durationMs: durationMs_, rps: (sorted.length / durationMs_) * 1000, p50: percentile(sorted, 50), p99: percentile(sorted, 99) }
}

/** Open loop: `rate` requests per second whatever the answers take, for `durationMs`. */
export async function openLoop<Spec extends RequestSpec>(
  origin: string,
  { rate, durationMs, connections, next, readBody, answered, pool: given }: { rate: number; durationMs: number; connections: number; next: (i: number) => Spec; pool?: Pool } & AnswerHooks<Spec>,
): Promise<{ sent: number; statuses: Record<number, number>; errors: number }> {
  const pool = given ?? loadPool(origin, connections)
  const statuses: Record<number, number> = {}
  let errors = 0
  let sent = 0
  const inFlight = new Set<Promise<void>>()
  const started = performance.now()
  for (;;) {
    const elapsed = performance.now() - started
    if (elapsed >= durationMs) break
    const due = Math.floor((elapsed * rate) / 1000)
    while (sent < due) {
      const spec = next(sent++)
      const t0 = performance.now()
      const request: Promise<void> = pool
        .request({ ...spec, headers: spec.headers ?? {} })
        .then(async ({ statusCode, body }) => {
          const text = readBody ? await body.text() : (await body.dump(), undefined)
          statuses[statusCode] = (statuses[statusCode] ?? 0) + 1
          answered?.(spec, statusCode, performance.now() - t0, text)
        })
        .catch(() => void errors++)
        .finally(() => inFlight.delete(request))
      inFlight.add(request)
    }
    await sleep(1)
  }
  await Promise.all(inFlight)
  if (!given) await pool.close()
  return { sent, statuses, errors }
}

export const FORM = { 'content-type': 'application/x-www-form-urlencoded' }
/** What the chat page's composer sends (htmx): a form post answered with a fresh composer, as browsers with JavaScript do. */
export const COMPOSER = { ...FORM, 'hx-request': 'true' }

/** A message form post stamped with its send time, so a subscriber can tell how long it took. */
export function stampedPost(chatId: string, extra = '', cookie?: string): RequestSpec & { stamp: number } {
  const stamp = nowMs()
  return { method: 'POST', path: `/chats/${chatId}/messages`, headers: cookie ? { ...COMPOSER, cookie } : COMPOSER, body: `content=t%3D${stamp.toFixed(3)}${extra}&commandId=${randomUUID()}`, stamp }
}

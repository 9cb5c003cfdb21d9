import type { RequestHandler } from 'express'
import { HttpError } from './errors.js'

/** How long a read whose client left may go on holding its place without answering. */
const ABANDONED_READ_MS = 10_000
/** Reads one address may have waiting; more are refused (429). Its open connections bound it first, unless behind a trusted proxy. */
const MAX_WAITING = 1_024

/**
 * At most `cap` reads (GET and HEAD: pages, searches, a message's history,
 * older messages, the chat as it was) of one client address run at once; the
 * address's next ones wait in its own line, and past MAX_WAITING in line
 * are refused with 429. Each read may hold one of the pool's database
 * connections while it runs, and the pool is everyone's: without this, one
 * address that opened 200 connections and searched on all of them held every
 * connection, and another person's post waited 1.8 s (3 s at worst) in the
 * pool's queue instead of 10 ms. Refusing at once was worse: the flood turned
 * into 1,200–1,800 cheap refusals a second, which took the node's whole core, and a
 * post waited 12 s. Waiting in line costs the node only the waiting request
 * (at most MAX_WAITING of them per address), and holds the
 * flood to what `cap` reads at a time can do. A browser tab has one or two
 * reads in flight, and people behind one NAT rarely more than a handful at
 * the same moment; they wait a moment rather than see an error. Live streams
 * are counted apart (held for hours, they hold no connection while they wait).
 */
export function readsPerAddress(cap: number): RequestHandler {
  const clients = new Map<string, { running: number; waiting: (() => void)[] }>()
  return (req, res, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next()
    const key = req.ip ?? ''
    let client = clients.get(key)
    if (!client) clients.set(key, (client = { running: 0, waiting: [] }))
    const line = client
    const start = () => {
      let done = false
      let timer: NodeJS.Timeout | undefined
      const release = () => {
        if (done) return
        done = true
        clearTimeout(timer)
        const waiting = line.waiting.shift()
        // Its turn starts on the next turn of the event loop, not inside this answer's end().
        if (waiting) setImmediate(waiting)
        else if (--line.running === 0) clients.delete(key)
      }
      // A read is over when it answers, which a handler does even for a
      // client that has gone: freeing the place when the connection closes
      // would let a client that hangs up at once start queries without end.
      const end = res.end
      res.end = ((...args: Parameters<typeof res.end>) => {
        release()
        return end.apply(res, args)
      }) as typeof res.end
      // One that never answers (a bug) gives its place back a while after its client left.
      res.once('close', () => {
        if (!done) timer = setTimeout(release, ABANDONED_READ_MS).unref()
      })
      next()
    }
    if (line.running < cap) {
      line.running++
      return start()
    }
    if (line.waiting.length >= MAX_WAITING) return next(new HttpError(429, 'Too many requests at once from your address; try again in a moment.', { 'Retry-After': '1' }))
    line.waiting.push(start)
    // Gone before its turn: out of the line, so that no read runs for nobody.
    res.once('close', () => {
      const at = line.waiting.indexOf(start)
      if (at >= 0) line.waiting.splice(at, 1)
    })
  }
}

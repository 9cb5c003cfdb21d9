import type { NextFunction, Request, Response } from 'express'
import { Rejection } from '../chat/chat.js'
import { ConcurrencyConflict } from '../event-store/event-store.js'
import { Overloaded } from '../event-store/command-handler.js'

/** An error that knows its HTTP answer. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message)
    this.name = 'HttpError'
  }
}

// 55000 (object_not_in_prerequisite_state) is what a database closed to new connections answers (ALTER DATABASE … ALLOW_CONNECTIONS false, as during maintenance).
const UNAVAILABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', '57P01', '57P02', '57P03', '53300', '3D000', '55000', '08000', '08001', '08003', '08006'])

/** The database cannot be reached right now (as opposed to refusing a statement). */
export function isDatabaseUnavailable(error: unknown): boolean {
  const e = error as { code?: string; message?: string; syscall?: string }
  if (e?.code && UNAVAILABLE_CODES.has(e.code)) return true
  // A Unix socket whose server is gone (the embedded server, a local one) has no file to connect to.
  if (e?.code === 'ENOENT' && e.syscall === 'connect') return true
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|connect ECONNREFUSED/i.test(e?.message ?? '')
}

/** Status, message and headers for any error, without leaking internals; `method` words it for a read or a write. */
export function describeError(error: unknown, method: string): HttpError {
  if (error instanceof HttpError) return error
  if (error instanceof Rejection) {
    return new HttpError(error.status, error.message, error.retryAfterSeconds ? { 'Retry-After': String(error.retryAfterSeconds) } : {})
  }
  if (error instanceof Overloaded) return new HttpError(503, error.message, { 'Retry-After': String(error.retryAfterSeconds) })
  if (error instanceof ConcurrencyConflict) return new HttpError(409, 'The chat changed while your message was being saved. Please send it again.')
  const e = error as { type?: string; status?: number; limit?: number }
  if (e?.type === 'entity.too.large') return new HttpError(413, `That request is too large (the limit is ${Math.round((e.limit ?? 16384) / 1024)} KB).`)
  if (e?.type === 'entity.parse.failed') return new HttpError(400, 'The request body is not valid JSON.')
  if (e?.type === 'encoding.unsupported' || e?.type === 'charset.unsupported') return new HttpError(415, 'Unsupported request encoding.')
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) return new HttpError(e.status, 'Bad request.')
  if (isDatabaseUnavailable(error)) {
    const what = method === 'GET' || method === 'HEAD' ? 'this cannot be shown' : 'nothing was saved'
    return new HttpError(503, `The database is unreachable right now, so ${what}. Try again in a moment.`, { 'Retry-After': '2' })
  }
  return new HttpError(500, 'Something went wrong on our side. Nothing you did; try again.')
}

/** JSON when the client sent JSON or asked for it; htmx and browsers get HTML. */
export function wantsJson(req: Request): boolean {
  if (req.get('hx-request')) return false
  return Boolean(req.is('application/json')) || req.accepts(['html', 'json']) === 'json'
}

/** One place turns every error into a page, an htmx fragment, or JSON. */
export function errorHandler({ onError }: { onError: (error: unknown, req: Request) => void }) {
  return (error: unknown, req: Request, res: Response, _next: NextFunction) => {
    const described = describeError(error, req.method)
    // Load shed on purpose is not a failure: the request log line says 503 (at warn), no stack.
    if (described.status >= 500 && !(error instanceof Overloaded)) onError(error, req)
    if (res.headersSent) return res.end()
    res.status(described.status).set(described.headers)
    if (wantsJson(req)) return res.json({ error: described.message })
    const locals = { title: titleFor(described.status), status: described.status, message: described.message }
    if (req.get('hx-request') && isComposerPost(req)) {
      // Whatever refused the post (a body too large, another site, the
      // database away, too many posts from this address), the composer stays
      // with its text: only its note below the textarea becomes the reason.
      res.set({ 'HX-Retarget': '#composer-note', 'HX-Reswap': 'outerHTML' })
      return res.render('partials/_composer-note', locals)
    }
    // A page that cannot be rendered (an error before the page's locals were
    // set) answers in plain text: Express's fallback would show the stack.
    res.render(req.get('hx-request') ? 'partials/_error' : 'error', locals, (renderError: Error | null, html?: string) => {
      if (!renderError) return void res.send(html)
      onError(renderError, req)
      res.type('text').send(`${described.message}\n`)
    })
  }
}

/** POST /chats/:chatId/messages, as the composer sends it. */
function isComposerPost(req: Request): boolean {
  return req.method === 'POST' && /^\/chats\/[^/]+\/messages\/?$/.test(req.path)
}

function titleFor(status: number): string {
  if (status === 404) return 'Not found'
  if (status === 403) return 'Refused'
  if (status === 429) return 'Too fast'
  if (status === 503) return 'Unavailable'
  if (status >= 500) return 'Server error'
  return 'Cannot do that'
}

import { randomUUID } from 'node:crypto'
import { createRequire } from 'node:module'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { pino, type Logger, type LoggerOptions } from 'pino'
import { pinoHttp } from 'pino-http'
import type { RequestHandler } from 'express'

export type { Logger } from 'pino'

export interface LoggerProps {
  level?: string
  /** Human-readable lines (pino-pretty) instead of JSON: for a developer's terminal, never for production. */
  pretty?: boolean
  /** Where JSON lines go (default stdout); tests pass a stream to read them. */
  destination?: pino.DestinationStream
}

/** Query parameters whose values never reach a log line. */
const SECRET_PARAMS = ['token']
const REQUEST_ID = /^[\w.-]{1,64}$/
const QUIET_PATHS = new Set(['/healthz', '/readyz', '/metrics'])

/** A logger that writes nothing: what a node uses when it is given none (tests stay quiet). */
export const SILENT_LOGGER: Logger = pino({ level: 'silent' })

export function createLogger({ level = 'info', pretty = false, destination }: LoggerProps = {}): Logger {
  const options: LoggerOptions = { level }
  if (pretty && !destination && canPrettyPrint()) {
    // A request's message already says method, URL, status and time; the JSON keeps them as fields.
    const ignore = 'pid,hostname,req,res,responseTime'
    return pino({ ...options, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore } } })
  }
  return destination ? pino(options, destination) : pino(options)
}

/**
 * Resolves once every line logged so far has been written, then the logger
 * writes no more. For a process about to exit: pino writes to stdout
 * asynchronously, and on exit it writes what is still buffered at once,
 * ahead of a line whose write is under way, so a request's line could come
 * out after "stopped". Ending the destination waits for that write first.
 */
export function logWritten(logger: Logger, timeoutMs = 1_000): Promise<void> {
  const destination = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as
    | (NodeJS.EventEmitter & { end?: () => void; destroyed?: boolean })
    | undefined
  if (!destination?.end || destination.destroyed) return Promise.resolve()
  return new Promise((resolve) => {
    // Never hold up an exit for long: a reader that stopped reading must not keep the process.
    const timer = setTimeout(resolve, timeoutMs)
    destination.once('close', () => (clearTimeout(timer), resolve()))
    destination.end!()
  })
}

/** pino-pretty is a development dependency: an image installed with --omit=dev logs JSON even in a terminal. */
function canPrettyPrint(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty')
    return true
  } catch {
    return false
  }
}

/** A 503 with no error behind it is load shed on purpose (a full queue, a wait that ran out): worth a warning, not an error with a stack. */
function wasShed(res: ServerResponse): boolean {
  return res.statusCode === 503 && !res.err
}

/**
 * Express middleware: one log line per finished request, and the request
 * id. The id is the only one the app has: pino-http binds it to every line
 * logged through req.log, the response carries it as X-Request-Id, and the
 * routes put it in command metadata, so it ends up on the events too. A
 * well-formed incoming X-Request-Id is kept only when the request came
 * through a proxy we trust (`fromTrustedProxy`, from "trust proxy"): from
 * anyone else it would let a client choose what our logs and its events
 * say, or make its requests look like someone else's.
 *
 * Lines carry method, URL (secrets removed), status and time, never
 * headers: cookies and Authorization stay out of the logs.
 */
export function requestLogger(logger: Logger, { fromTrustedProxy = () => false }: RequestLoggerProps = {}): RequestHandler {
  const requestId = (req: IncomingMessage, res: ServerResponse) => requestIdOf(req, res, fromTrustedProxy(req))
  if (logger.level === 'silent') {
    // Nothing would be written: keep the request id, skip pino-http's per-request child logger.
    const withId: RequestHandler = (req, res, next) => {
      req.id = requestId(req, res)
      next()
    }
    return withId
  }
  const logging: RequestHandler = pinoHttp({
    logger,
    quietReqLogger: true,
    genReqId: requestId,
    serializers: {
      // The id is on every line already, as reqId.
      req: (req: { method: string; url: string; remoteAddress?: string }) => ({
        method: req.method,
        url: withoutSecrets(req.url),
        remoteAddress: req.remoteAddress,
      }),
      res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
    },
    // Probes and scrapes arrive every few seconds: visible at debug level, and whenever they fail.
    customLogLevel: (req, res, error) => {
      if (!error && wasShed(res)) return 'warn'
      if (error || res.statusCode >= 500) return 'error'
      if (QUIET_PATHS.has(urlOf(req).split('?')[0]!) && res.statusCode < 400) return 'debug'
      return 'info'
    },
    customSuccessMessage: (req, res, ms) => `${req.method} ${withoutSecrets(urlOf(req))} ${res.statusCode} ${ms} ms`,
    // pino-http makes up an Error (its own stack, nothing of ours) for a 5xx that carries none.
    customErrorObject: (_req, res, _error, value) => (res.err ? value : { ...value, err: undefined }),
    customErrorMessage: (req, res, error) =>
      wasShed(res)
        ? `${req.method} ${withoutSecrets(urlOf(req))} 503: shed, the node was too busy`
        : `${req.method} ${withoutSecrets(urlOf(req))} ${res.statusCode} failed: ${error.message}`,
  })
  return logging
}

export interface RequestLoggerProps {
  /** True when the request's peer is a proxy we trust; unset: nobody is. */
  fromTrustedProxy?: (req: IncomingMessage) => boolean
}

/** A well-formed incoming X-Request-Id from a trusted proxy, or a new one; the response carries it. */
function requestIdOf(req: IncomingMessage, res: ServerResponse, trusted: boolean): string {
  const incoming = trusted ? req.headers['x-request-id'] : undefined
  const id = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID()
  res.setHeader('X-Request-Id', id)
  return id
}

/** Express rewrites req.url inside mounted routers; the original is what was asked for. */
function urlOf(req: IncomingMessage): string {
  return (req as IncomingMessage & { originalUrl?: string }).originalUrl ?? req.url ?? ''
}

/**
 * The URL with the values of secret query parameters replaced. Works on the
 * query alone and never throws: it runs on whatever a client sent, such as
 * `//a:99999/x?y`, which `new URL` would read as a host with a bad port.
 */
export function withoutSecrets(url: string): string {
  const start = url.indexOf('?')
  if (start < 0) return url
  const query = new URLSearchParams(url.slice(start + 1))
  let changed = false
  for (const name of SECRET_PARAMS) {
    if (query.has(name)) {
      query.set(name, 'REDACTED')
      changed = true
    }
  }
  return changed ? `${url.slice(0, start)}?${query}` : url
}

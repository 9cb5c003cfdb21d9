import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import express, { type Request } from 'express'
import helmet from 'helmet'
import { rateLimit } from 'express-rate-limit'
import { MAX_CONTENT_LENGTH } from './chat/chat.js'
import type { DB } from './db/database.js'
import type { ChatHandler } from './chat/chat-commands.js'
import type { Visits } from './chat/visits.js'
import type { Presence } from './live/presence.js'
import type { ProjectionWatch } from './chat/projection-watch.js'
import { chatRoutes } from './chat/routes.js'
import type { TrustProxy } from './config.js'
import { crossOriginProtection } from './http/cross-origin.js'
import { errorHandler, HttpError } from './http/errors.js'
import { cookies } from './http/cookies.js'
import { formBody } from './http/form-body.js'
import { methodNotAllowed } from './http/methods.js'
import { readsPerAddress } from './http/reads-per-address.js'
import { session } from './http/session.js'
import { renderView, VIEWS_DIR, type MessageRenderer } from './http/views.js'
import { requestLogger, SILENT_LOGGER, type Logger } from './ops/logger.js'
import { dashboardRoutes, probeRoutes, type OpsRoutesDeps } from './ops/routes.js'

export interface AppDeps {
  db: DB
  chats: ChatHandler
  /** What each person has seen of each chat ("new since your last visit", their rooms). */
  visits: Visits
  /** Who is here and who is typing, across nodes. */
  presence: Presence
  /** Lets a plain form post wait for its message to be projected before redirecting. */
  projectionWatch: ProjectionWatch
  /** The node's message HTML, shared with its live stream (templates call it as messageHtml). */
  renderMessage: MessageRenderer
  /** Signs session cookies; every node behind one load balancer needs the same one. */
  sessionSecret: string
  /** `auto`: Secure cookies when the request came over TLS (see trustProxy). */
  secureCookies?: 'auto' | boolean
  /** Express "trust proxy": set it behind a TLS-terminating proxy so req.secure is right. */
  trustProxy?: TrustProxy
  clock?: () => Date
  /**
   * Unsafe requests (posts) allowed per client address per minute, across
   * senders: a fresh session is free, so the per-sender rule alone would not
   * stop one script. 0 turns it off (benchmarks, tests that flood).
   */
  postsPerMinutePerAddress?: number
  /** Chats one client address may start per minute (0 or unset: no limit). */
  newChatsPerMinutePerAddress?: number
  /** Reads (GET, HEAD) one client address may have running at once, the rest waiting in its line (0 or unset: no limit); see http/reads-per-address.ts. */
  maxReadsPerAddress?: number
  onError?: (error: unknown, req: Request) => void
  /** One line per request, with its request id; unset: nothing is logged. */
  logger?: Logger
  /** Metrics, readiness and the dashboard; unset: /metrics, /readyz and /dashboard are absent. */
  ops?: Pick<OpsRoutesDeps, 'metrics' | 'sampler' | 'readiness'>
  /** Set: /dashboard and /metrics need it (see ops/routes.ts). Unset: they are public. */
  dashboardToken?: string
}

/**
 * Request bodies above this many bytes are refused with 413. It is derived
 * from the longest message the rules allow, in its most expensive encoding:
 * a code point is at most 4 bytes of UTF-8, which a form percent-encodes as
 * 12 (`%F0%9F%8D%B5`), and a JSON client that escapes everything outside
 * ASCII also writes an astral character as 12 (`\ud83c\udf75`). Any script,
 * emoji included, fits as a form and as JSON; the envelope covers the field
 * names, the commandId and some whitespace that the rules trim off.
 */
export const BODY_LIMIT = MAX_CONTENT_LENGTH * 12 + 1024
const TYPING_PATH = /^\/chats\/[^/]+\/typing$/

const PUBLIC_DIR = fileURLToPath(new URL('../public/', import.meta.url))
const HTMX_DIR = fileURLToPath(new URL('../node_modules/htmx.org/dist/', import.meta.url))

declare module 'express-serve-static-core' {
  interface Locals {
    /** Per-response CSP nonce: script tags carry it, and hx-csp requires it on every htmx element. */
    nonce: string
    /** Correlates a request with its log lines and the events it appended. */
    requestId: string
  }
}

const NONCE_BYTES = 16
let randomPool = Buffer.alloc(0)
let poolOffset = 0

/** A fresh CSP nonce, cut from a pool of random bytes refilled 256 nonces at a time (one syscall instead of one per request). */
function nonce(): string {
  if (poolOffset + NONCE_BYTES > randomPool.length) {
    randomPool = randomBytes(NONCE_BYTES * 256)
    poolOffset = 0
  }
  poolOffset += NONCE_BYTES
  return randomPool.toString('base64url', poolOffset - NONCE_BYTES, poolOffset)
}

export function createApp(deps: AppDeps): express.Express {
  const app = express()
  app.disable('x-powered-by')
  // Every page and fragment is rendered for its request: an ETag (a hash of each body) would never match.
  app.set('etag', false)
  app.set('trust proxy', deps.trustProxy ?? false)
  app.set('views', VIEWS_DIR)
  app.set('view engine', 'ejs')
  app.engine('ejs', renderView)
  app.locals.messageHtml = deps.renderMessage
  // Templates do not change while the app runs: resolve each view file once, not with a stat per render.
  app.enable('view cache')

  if (deps.ops) app.use(deps.ops.metrics.requestTimer())
  // Express's own reading of "trust proxy" (what req.ip uses), asked about the peer itself (hop 0).
  const trustsAddress = (address: string) => (app.get('trust proxy fn') as (address: string, hop: number) => boolean)(address, 0)
  app.use(requestLogger(deps.logger ?? SILENT_LOGGER, { fromTrustedProxy: (req) => trustsAddress(req.socket.remoteAddress ?? '') }))
  app.use((req, res, next) => {
    res.locals.nonce = nonce()
    res.locals.requestId = String(req.id)
    next()
  })
  app.use(
    helmet({
      contentSecurityPolicy: {
        useDefaults: false,
        directives: {
          defaultSrc: ["'self'"],
          scriptSrc: [(_req, res) => `'nonce-${(res as express.Response).locals.nonce}'`],
          styleSrc: ["'self'", (_req, res) => `'nonce-${(res as express.Response).locals.nonce}'`],
          imgSrc: ["'self'", 'data:'],
          connectSrc: ["'self'"],
          fontSrc: ["'self'"],
          formAction: ["'self'"],
          frameAncestors: ["'none'"],
          baseUri: ["'none'"],
          objectSrc: ["'none'"],
        },
      },
      crossOriginEmbedderPolicy: false,
      // same-origin: our own forms can go "back" to the page they came from.
      referrerPolicy: { policy: 'same-origin' },
    }),
  )

  app.use('/static', express.static(PUBLIC_DIR, { maxAge: '1h' }))
  // htmx is pinned exactly in package.json, so its files never change under a URL.
  app.use('/htmx', express.static(HTMX_DIR, { maxAge: '1y', immutable: true }))
  app.get('/healthz', (_req, res) => void res.type('text').send('ok\n'))

  const ops: OpsRoutesDeps | undefined = deps.ops && { ...deps.ops, dashboardToken: deps.dashboardToken, secureCookies: deps.secureCookies ?? 'auto' }

  app.use(cookies(deps.sessionSecret))
  // Before sessions: probes and scrapers get no session cookie.
  if (ops) app.use(probeRoutes(ops))
  app.use(session({ secure: deps.secureCookies ?? 'auto' }))
  app.use(crossOriginProtection())
  if (deps.postsPerMinutePerAddress) {
    app.use(
      rateLimit({
        windowMs: 60_000,
        limit: deps.postsPerMinutePerAddress,
        // Typing hints have limits of their own: counted here, twenty people typing behind one NAT would use up their messages.
        skip: (req) => req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS' || TYPING_PATH.test(req.path),
        standardHeaders: 'draft-7',
        legacyHeaders: false,
        // Whom to trust for X-Forwarded-For is TRUST_PROXY's decision, made on purpose: the library's
        // second-guessing of it printed a raw stack to the log for any client that sent the header.
        validate: { xForwardedForHeader: false, trustProxy: false },
        handler: (_req, _res, next, options) =>
          next(new HttpError(429, 'Too many messages from your address. Wait a minute and try again.', { 'Retry-After': String(Math.ceil(options.windowMs / 1000)) })),
      }),
    )
  }
  app.use(express.json({ limit: BODY_LIMIT }))
  app.use(formBody(BODY_LIMIT))

  if (ops) app.use(dashboardRoutes(ops))
  // Probes, metrics, files and the dashboard (which has its own budget) are answered above: what follows may query.
  if (deps.maxReadsPerAddress) app.use(readsPerAddress(deps.maxReadsPerAddress))
  app.use(chatRoutes({ db: deps.db, chats: deps.chats, visits: deps.visits, presence: deps.presence, newChatsPerMinutePerAddress: deps.newChatsPerMinutePerAddress ?? 0, projectionWatch: deps.projectionWatch, renderMessage: deps.renderMessage, secureCookies: deps.secureCookies ?? 'auto', clock: deps.clock ?? (() => new Date()) }))

  app.use(methodNotAllowed(app))
  app.use((_req, _res, next) => next(new HttpError(404, 'There is nothing at this address.')))
  app.use(errorHandler({ onError: deps.onError ?? ((error) => console.error(error)) }))
  return app
}

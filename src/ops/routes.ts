import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { Router, type NextFunction, type Request, type Response } from 'express'
import { PerClient } from '../http/client-address.js'
import { describeError, HttpError } from '../http/errors.js'
import { SSE_HEADERS } from '../live/events-route.js'
import type { NodeMetrics } from './metrics.js'
import type { Readiness } from './readiness.js'
import type { DashboardSampler } from './sampler.js'

export interface OpsRoutesDeps {
  metrics: NodeMetrics
  sampler: DashboardSampler
  readiness: () => Promise<Readiness>
  /** Unset: /dashboard and /metrics are public (local use). Set: they need it once, then a cookie. */
  dashboardToken: string | undefined
  secureCookies: 'auto' | boolean
  /** Dashboard streams one client address may hold (default 5): the node's 100 are everyone's. */
  maxDashboardsPerAddress?: number
}

export const OPS_COOKIE = 'live_tea_ops'
const COOKIE_MAX_AGE_MS = 12 * 3600 * 1000
/** The reconnect delay offered to dashboards, with the first figures (htmx reads `retry:` only on a message with data). */
const DASHBOARD_RETRY_MS = 2000

/** /readyz and /metrics: for probes and scrapers, mounted before sessions so they never get a session cookie. */
export function probeRoutes({ metrics, readiness, dashboardToken, secureCookies }: OpsRoutesDeps): Router {
  const router = Router()

  const isOperator = operatorCheck(dashboardToken)
  router.get('/readyz', async (req, res) => {
    const { ready, reasons, lag, lags, cause } = await readiness()
    res.set('Cache-Control', 'no-store').type('text')
    if (cause) {
      // The database's words can name hosts, users and databases: they go to
      // the log, and to operators who present the token, not to anyone.
      res.err = cause
      const detail = isOperator(req)
        ? cause.message
        : `details are in the log${dashboardToken === undefined ? '' : ' (or here, for operators with the DASHBOARD_TOKEN)'}`
      return void res.status(503).send(`not ready: ${reasons.join('; ')}: ${detail}\n`)
    }
    // Every projection's lag, the gating one first; the others (a search index backfilling) are information.
    const others = lags.slice(1).map(({ projection, lag }) => `; ${projection} ${lag.events} events, ${lag.seconds.toFixed(1)} s behind (does not gate)`).join('')
    if (!ready) return void res.status(503).send(`not ready: ${reasons.join('; ')}${others}\n`)
    res.send(`ready: database answers; projector ${lag!.events} events, ${lag!.seconds.toFixed(1)} s behind${others}\n`)
  })

  router.get('/metrics', operatorOnly(dashboardToken, secureCookies), async (_req, res) => {
    res.set('Cache-Control', 'no-store').set('Content-Type', metrics.contentType).send(await metrics.text())
  })

  // Probes read text, and the HTML error page needs the session these routes run without.
  router.use((error: unknown, req: Request, res: Response, _next: NextFunction) => {
    const described = describeError(error, req.method)
    if (described.status >= 500) res.err = error instanceof Error ? error : new Error(String(error))
    res.status(described.status).set(described.headers).type('text').send(`${described.message}\n`)
  })

  return router
}

/** The live operations page and its stream. */
export function dashboardRoutes({ sampler, dashboardToken, secureCookies, maxDashboardsPerAddress = 5 }: OpsRoutesDeps): Router {
  const router = Router()
  const dashboardsHeld = new PerClient(maxDashboardsPerAddress)
  const guard = operatorOnly(dashboardToken, secureCookies)

  router.get('/dashboard', guard, (_req, res) => {
    res.set('Cache-Control', 'no-store').render('dashboard', { title: 'Operations', figures: sampler.html })
  })

  router.get('/dashboard/stream', guard, (req, res) => {
    if (sampler.full) throw new HttpError(503, 'Too many dashboards open on this server; try again shortly.', { 'Retry-After': '5' })
    const client = req.ip ?? ''
    if (!dashboardsHeld.take(client)) {
      throw new HttpError(429, `Too many dashboards open from your address (at most ${maxDashboardsPerAddress}); close one and try again.`, { 'Retry-After': '10' })
    }
    res.once('close', () => dashboardsHeld.give(client))
    res.writeHead(200, SSE_HEADERS)
    res.write(`retry: ${DASHBOARD_RETRY_MS}\n`)
    req.socket.setNoDelay(true)
    sampler.subscribe(res)
  })

  return router
}

/**
 * With no token configured, everyone passes. With one, a request passes
 * with `Authorization: Bearer <token>` (Prometheus, curl), with
 * `?token=<token>` once (a browser), or with the cookie either of those set.
 * A `?token=` page visit is redirected to the same address without it, so
 * the token does not stay in the address bar or the browser history.
 *
 * The cookie holds the time it was issued and an HMAC of that time keyed by
 * the token, not the token: it reveals nothing, it is good for 12 hours on
 * the server too (a copied cookie does not outlive its browser's), and
 * changing DASHBOARD_TOKEN invalidates every cookie.
 */
export function operatorOnly(token: string | undefined, secureCookies: 'auto' | boolean) {
  return (req: Request, res: Response, next: NextFunction) => {
    if (token === undefined) return next()
    if (hasOperatorCookie(req, token)) return next()
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.get('authorization') ?? '')?.[1]
    const query = typeof req.query.token === 'string' ? req.query.token : undefined
    const presented = bearer ?? query
    if (presented === undefined || !sameSecret(presented, token)) {
      res.set('WWW-Authenticate', 'Bearer realm="live-tea operations"')
      return next(new HttpError(401, 'This page is for operators: open it once with ?token=<DASHBOARD_TOKEN>, or send Authorization: Bearer <DASHBOARD_TOKEN>.'))
    }
    res.cookie(OPS_COOKIE, cookieValueFor(token, Date.now()), {
      httpOnly: true,
      sameSite: 'lax',
      secure: secureCookies === 'auto' ? req.secure : secureCookies,
      maxAge: COOKIE_MAX_AGE_MS,
      path: '/',
    })
    if (bearer === undefined && req.method === 'GET') {
      const url = new URL(req.originalUrl, 'http://local')
      url.searchParams.delete('token')
      return res.redirect(303, url.pathname + url.search)
    }
    next()
  }
}

/** Whether a request shows the token (cookie or Bearer), without asking for it: for answers that say more to operators. */
function operatorCheck(token: string | undefined): (req: Request) => boolean {
  if (token === undefined) return () => false
  return (req) => {
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.get('authorization') ?? '')?.[1]
    return hasOperatorCookie(req, token) || (bearer !== undefined && sameSecret(bearer, token))
  }
}

/** A cookie this token signed, issued less than COOKIE_MAX_AGE_MS ago. */
function hasOperatorCookie(req: Request, token: string): boolean {
  const cookie = req.cookies?.[OPS_COOKIE]
  if (typeof cookie !== 'string') return false
  const issuedAt = Number(/^(\d{1,15})\./.exec(cookie)?.[1])
  const age = Date.now() - issuedAt
  return Number.isSafeInteger(issuedAt) && age >= -60_000 && age < COOKIE_MAX_AGE_MS && sameSecret(cookie, cookieValueFor(token, issuedAt))
}

function cookieValueFor(token: string, issuedAt: number): string {
  return `${issuedAt}.${createHmac('sha256', token).update(`live-tea operations cookie v2 ${issuedAt}`).digest('base64url')}`
}

/** Constant-time comparison whatever the lengths: compares digests. */
function sameSecret(presented: string, expected: string): boolean {
  const digest = (text: string) => createHash('sha256').update(text).digest()
  return timingSafeEqual(digest(presented), digest(expected))
}

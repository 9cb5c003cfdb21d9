import type { NextFunction, Request, Response } from 'express'
import { HttpError } from './errors.js'

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

/**
 * Refuses cross-site unsafe requests, the way Go's CrossOriginProtection
 * does: browsers always send Sec-Fetch-Site (or at least Origin) on a POST,
 * so a request from another site is recognised without a token. Clients that
 * send neither (curl, scripts) are not browsers and carry no ambient
 * credentials worth forging, so they pass.
 */
export function crossOriginProtection() {
  return (req: Request, _res: Response, next: NextFunction) => {
    if (SAFE_METHODS.has(req.method)) return next()
    const site = req.get('sec-fetch-site')
    if (site !== undefined) {
      if (site === 'same-origin' || site === 'none') return next()
      return next(new HttpError(403, 'This request came from another site, so it was refused. Post from the Live Tea page itself.'))
    }
    const origin = req.get('origin')
    if (origin === undefined) return next()
    let host: string | undefined
    try {
      host = new URL(origin).host
    } catch {
      host = undefined
    }
    if (host !== undefined && host === req.get('host')) return next()
    return next(new HttpError(403, 'This request came from another origin, so it was refused. Post from the Live Tea page itself.'))
  }
}

import type { NextFunction, Request, Response } from 'express'
import { HttpError } from './errors.js'

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

/**
 * Refuses cross-site unsafe requests without a token: browsers always send
 * Sec-Fetch-Site (or at least Origin) on a POST. Refused when either header
 * says another site (DESIGN's rule): Sec-Fetch-Site anything but
 * `same-origin` or `none`, or an Origin whose host is not this one (behind
 * a trusted proxy, the host it forwards). Go's CrossOriginProtection looks
 * no further than Sec-Fetch-Site when it is there; a browser never pairs
 * `same-origin` with a foreign Origin, so asking both costs real clients
 * nothing. Clients that send neither (curl, scripts) are not browsers and
 * carry no ambient credentials worth forging, so they pass.
 */
export function crossOriginProtection() {
  return (req: Request, _res: Response, next: NextFunction) => {
    if (SAFE_METHODS.has(req.method)) return next()
    const site = req.get('sec-fetch-site')
    if (site !== undefined && site !== 'same-origin' && site !== 'none') {
      return next(new HttpError(403, 'This request came from another site, so it was refused. Post from the Live Tea page itself.'))
    }
    const origin = req.get('origin')
    if (origin === undefined || (site !== undefined && origin === 'null')) return next()
    if (hostOf(origin) === req.host) return next()
    return next(new HttpError(403, 'This request came from another origin, so it was refused. Post from the Live Tea page itself.'))
  }
}

function hostOf(origin: string): string | undefined {
  try {
    return new URL(origin).host
  } catch {
    return undefined
  }
}

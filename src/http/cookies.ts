import cookieParser from 'cookie-parser'
import type { NextFunction, Request, RequestHandler, Response } from 'express'
import { LRUCache } from 'lru-cache'

interface Parsed {
  cookies: Record<string, unknown>
  signedCookies: Record<string, unknown>
}

/** Longer Cookie headers are parsed every time, never remembered. */
const LONGEST_REMEMBERED = 4096

/**
 * cookie-parser, remembering what it made of each Cookie header: a person's
 * browser sends the same header with every request, and checking its
 * signature again (an HMAC and two SHA-1 digests in cookie-signature) was
 * about 3% of the node's CPU per post under P2's load. The answer for one
 * header and one secret never changes, so only an exact repeat is taken from
 * memory; a header changed in any way is checked in full. Each request gets
 * its own copies.
 */
export function cookies(secret: string): RequestHandler {
  const parse = cookieParser(secret)
  const seen = new LRUCache<string, Parsed>({ maxSize: 4 << 20, sizeCalculation: (_parsed, header) => header.length + 200 })
  return (req: Request, res: Response, next: NextFunction) => {
    const header = req.headers.cookie
    const remembered = header !== undefined && header.length <= LONGEST_REMEMBERED
    const known = remembered ? seen.get(header) : undefined
    if (known) {
      req.secret = secret
      req.cookies = Object.assign(Object.create(null), known.cookies)
      req.signedCookies = Object.assign(Object.create(null), known.signedCookies)
      return next()
    }
    parse(req, res, (error?: unknown) => {
      if (!error && remembered) seen.set(header, { cookies: { ...req.cookies }, signedCookies: { ...req.signedCookies } })
      next(error)
    })
  }
}

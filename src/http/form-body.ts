import type { IncomingMessage } from 'node:http'
import express, { type RequestHandler } from 'express'

/**
 * Form bodies read by the URL Standard's application/x-www-form-urlencoded
 * parser, the platform's URLSearchParams (what browsers encode for): a
 * percent-encoded byte sequence that is not UTF-8 becomes U+FFFD, as invalid
 * bytes in a JSON body do, and each `%XX` is decoded on its own. Under
 * express.urlencoded alone, qs keeps a whole field undecoded when any part
 * of it does not decode: `%FF%FE` was stored as typed, and `50%+off+%E2%9C%93`
 * kept its `%E2%9C%93`. express.urlencoded still does the rest: the size
 * limit (413), the charset (415), the number of fields (413).
 */
export function formBody(limit: number): RequestHandler[] {
  const raw = new WeakMap<IncomingMessage, Buffer>()
  // A body that says it is ISO-8859-1 (the only other charset body-parser takes) is qs's to decode, byte for byte.
  const read = express.urlencoded({
    limit,
    extended: false,
    verify: (req, _res, bytes, encoding) => {
      if (encoding === 'utf-8') raw.set(req, bytes)
    },
  })
  const decode: RequestHandler = (req, _res, next) => {
    const bytes = raw.get(req)
    if (bytes) req.body = fieldsOf(bytes)
    next()
  }
  return [read, decode]
}

/** Fields by name; a name given twice holds its values in order (the routes refuse that: one value each). */
function fieldsOf(bytes: Buffer): Record<string, string | string[]> {
  // No prototype: a field named __proto__ or constructor is a field like any other.
  const fields: Record<string, string | string[]> = Object.create(null)
  for (const [name, parsed] of new URLSearchParams(bytes.toString('utf8'))) {
    const value = ownCopy(parsed)
    const earlier = fields[name]
    fields[name] = earlier === undefined ? value : [...(Array.isArray(earlier) ? earlier : [earlier]), value]
  }
  return fields
}

/**
 * A field that needed no decoding comes out of URLSearchParams as a slice
 * of the whole body, which keeps the body alive as long as the field is:
 * each commandId kept for repeats and for the typing line held its post's
 * entire body (a heap snapshot under P2's load held 3,008 bodies; those
 * followed were held through the composer ids `Presence` keeps). With
 * 4,000-character messages that is up to 36 KB a kept id.
 */
function ownCopy(value: string): string {
  return Buffer.from(value, 'utf8').toString('utf8')
}

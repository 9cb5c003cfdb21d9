import type { IncomingMessage } from 'node:http'

const ABSOLUTE_FORM = /^https?:\/\/[^/?#]*/i

/**
 * Brings a request target into origin form (`/path?query`) before any
 * routing sees it, or answers false when it cannot. Browsers send origin
 * form to an origin server; absolute form (`http://host/path`) is what
 * clients send to proxies, and HTTP/1.1 servers must accept it too, so a
 * valid one is rewritten, its authority replacing Host (RFC 9112, 3.2.2).
 * Anything else (a URL that does not parse, such as a port of 99999;
 * another scheme; `*`; a path without its leading slash) never reaches
 * the code below, which assumes a path.
 */
export function toOriginForm(req: IncomingMessage): boolean {
  const target = req.url ?? ''
  if (target.startsWith('/')) return true
  const authority = ABSOLUTE_FORM.exec(target)
  if (!authority) return false
  let url: URL
  try {
    url = new URL(target)
  } catch {
    return false
  }
  // The rest as sent, not as URL re-encoded it: the same path an origin-form request would carry.
  const rest = target.slice(authority[0].length)
  req.url = rest.startsWith('/') ? rest : `/${rest}`
  req.headers.host = url.host
  return true
}

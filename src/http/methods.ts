import type { Express, NextFunction, Request, Response } from 'express'
import { HttpError } from './errors.js'

/** What this file needs of the router package's layers (its stack is how Express lists routes). */
interface Layer {
  route?: { methods: Record<string, boolean | undefined> }
  handle?: { stack?: Layer[] }
  match(path: string): false | { path: string }
}

/**
 * An address the app serves, asked with a method it does not take: 405 with
 * `Allow`, as HTTP asks, instead of a 404 that says the address does not
 * exist. The methods are read from the app's own routes (Express leaves such
 * a request unmatched), so the answer cannot drift from them. Mounted after
 * every route, before the 404.
 */
export function methodNotAllowed(app: Express) {
  return (req: Request, _res: Response, next: NextFunction) => {
    const allowed = methodsServing((app.router as unknown as { stack: Layer[] }).stack, req.path)
    if (allowed.size === 0) return next()
    if (allowed.has('GET')) allowed.add('HEAD')
    const allow = [...allowed].sort(byUsualOrder).join(', ')
    next(new HttpError(405, `This address does not take ${req.method}; it takes ${allow}.`, { Allow: allow }))
  }
}

const USUAL_ORDER = ['GET', 'HEAD', 'POST']
const byUsualOrder = (a: string, b: string) => (USUAL_ORDER.indexOf(a) + 1 || 99) - (USUAL_ORDER.indexOf(b) + 1 || 99) || a.localeCompare(b)

function methodsServing(stack: Layer[], path: string, into = new Set<string>()): Set<string> {
  for (const layer of stack) {
    let match: ReturnType<Layer['match']>
    try {
      match = layer.match(path)
    } catch {
      continue // a parameter that does not decode: that route would not have served it either
    }
    if (!match) continue
    if (layer.route) {
      for (const [method, serves] of Object.entries(layer.route.methods)) if (serves && method !== '_all') into.add(method.toUpperCase())
    } else if (layer.handle?.stack) {
      // A router mounted under a prefix sees the rest of the path.
      methodsServing(layer.handle.stack, path.slice(match.path.length) || '/', into)
    }
  }
  return into
}

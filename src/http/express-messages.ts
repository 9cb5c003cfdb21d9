import { IncomingMessage, ServerResponse, type ServerOptions } from 'node:http'
import type { Express } from 'express'

/**
 * Request and response classes for `http.createServer` whose instances are
 * born with the app's prototypes (`app.request`, `app.response`), so that
 * Express's `Object.setPrototypeOf` on every request and response finds the
 * prototype already in place and changes nothing.
 *
 * Why: under V8 (Node 20) that change of prototype on a live request made
 * some 9 KB of each request outlive a young-generation collection and be
 * promoted, only to die in the old generation. Measured with a bare Express
 * app answering 500 posts/s (`--trace-gc-nvp`): 8.9 KB survived per request
 * and scavenges took 7.3 ms, against 0.0 KB and 0.6 ms with these classes,
 * as with plain `node:http`. In the app at P2's load, ~26 KB of each post
 * survived, and the scavenges those promotions slow down and the full
 * collections they bring were the largest pauses in a post's way.
 *
 * `Reflect.construct` runs Node's own constructors with our prototype, so
 * the objects are exactly what Node makes, whatever Node's constructors are.
 */
export function expressMessages(app: Express): Pick<ServerOptions, 'IncomingMessage' | 'ServerResponse'> {
  function Request(this: unknown, ...args: unknown[]): IncomingMessage {
    return Reflect.construct(IncomingMessage, args, Request) as IncomingMessage
  }
  Request.prototype = app.request
  function Response(this: unknown, ...args: unknown[]): ServerResponse {
    return Reflect.construct(ServerResponse, args, Response) as ServerResponse
  }
  Response.prototype = app.response
  return { IncomingMessage: Request as unknown as typeof IncomingMessage, ServerResponse: Response as unknown as typeof ServerResponse }
}

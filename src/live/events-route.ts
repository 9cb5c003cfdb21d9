import type { IncomingMessage, ServerResponse } from 'node:http'
import { HttpError } from '../http/errors.js'
import { chatIdParam, lowercaseRoom, versionParam } from '../http/params.js'
import { PerClient } from '../http/client-address.js'
import { sessionFromCookieHeader } from '../http/session.js'
import { partialRenderer } from '../http/views.js'
import { dataFrame, HubFullError, type Hub, type StreamFrames } from './hub.js'
import type { Visits } from '../chat/visits.js'
import type { Presence } from './presence.js'

const EVENTS_PATH = /^\/chats\/([^/?]+)\/events\/?(?:\?(.*))?$/

/**
 * `GET /chats/:chatId/events` (and HEAD; OPTIONS says which; other methods 405), served on plain node:http ahead of Express.
 * A stream stays open as long as someone reads the chat, so whatever a
 * request carries lives as long: Express's per-request state (parsed
 * cookies, a session, locals, document security headers, a logger) would
 * double the memory each of thousands of readers costs, and a stream needs
 * none of it: no body, no session, no view. Answers false for any other
 * request, which then goes to Express.
 *
 * The cursor is `Last-Event-ID` if present (htmx reconnects with it and
 * keeps the original URL), else `?after=`; none: live messages only.
 *
 * Every stream makes its reader present in the chat: the person of a valid
 * session cookie (verified here, as Express would), else an anonymous reader
 * who is counted but not named. `?presence=1` also streams who is here and
 * who is typing, as frames without an id.
 */
export interface EventsRouteProps {
  hub: Hub
  presence: Presence
  visits: Visits
  sessionSecret: string
  /** The list as `readerId`'s page shows it (see asSeenBy). */
  renderPeople: (chatId: string, readerId: string | undefined) => Promise<string>
  /** The client's address, as Express reads it with the same trust-proxy setting. */
  clientOf: (req: IncomingMessage) => string
  /** Open streams one client address may hold (a browser holds one per open chat tab). */
  maxStreamsPerAddress: number
}

export function eventsRoute({ hub, presence, visits, sessionSecret, renderPeople, clientOf, maxStreamsPerAddress }: EventsRouteProps): (req: IncomingMessage, res: ServerResponse) => boolean {
  const pageFrames = connectionFrames()
  // No single address can take the streams everyone shares (MAX_SUBSCRIBERS).
  const streamsHeld = new PerClient(maxStreamsPerAddress)
  return (req, res) => {
    const match = EVENTS_PATH.exec(req.url ?? '')
    if (!match) return false
    let chatId: string
    let cursor: number | undefined
    let withPresence: boolean
    const client = clientOf(req)
    try {
      if (req.method === 'OPTIONS') {
        // As Express answers OPTIONS on every other address: what it takes.
        res.writeHead(204, { Allow: 'GET, HEAD' })
        res.end()
        return true
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, 'A chat\'s event stream is read with GET (or HEAD for its headers).', { Allow: 'GET, HEAD' })
      const typed = decode(match[1]!)
      // As for the chat page: a name typed with capitals means the same room (EventSource follows the redirect).
      const room = lowercaseRoom(typed)
      if (room !== undefined) {
        res.writeHead(301, { Location: `/chats/${room}/events${match[2] === undefined ? '' : `?${match[2]}`}` })
        res.end()
        return true
      }
      chatId = chatIdParam(typed)
      const query = new URLSearchParams(match[2] ?? '')
      cursor = cursorOf(req, query)
      withPresence = ['1', 'true', 'yes'].includes(query.get('presence') ?? '')
      if (hub.full) throw new HubFullError(5)
      if (req.method === 'GET' && !streamsHeld.take(client)) {
        throw new HttpError(429, `Too many live streams from your address (at most ${maxStreamsPerAddress}); close some tabs and try again.`, { 'Retry-After': '10' })
      }
    } catch (error) {
      if (!(error instanceof HttpError)) throw error
      refuse(req, res, error)
      return true
    }
    // HEAD: the answer GET would start with, and no subscription behind it (nor a stream counted).
    if (req.method === 'HEAD') {
      res.writeHead(200, SSE_HEADERS)
      res.end()
      return true
    }
    res.once('close', () => streamsHeld.give(client))
    // A stream with no cursor starts at the chat's head, and that head is
    // fixed before the answer's headers go out: a client that saw them and
    // then posted gets its message. Read after the headers (as the first
    // stream of a chat on a node once did), the head could already include
    // a message posted in between, and the stream would start past it.
    const after = cursor ?? hub.headOf(chatId)
    if (after instanceof Promise) {
      after.then(
        (head) => !res.destroyed && open(head),
        () => !res.destroyed && refuse(req, res, new HttpError(503, 'The chat\'s stream cannot start while the database is not answering; try again in a moment.', { 'Retry-After': '5' })),
      )
    } else open(after)
    return true

    function open(after: number): void {
      // Checked again: streams of chats new to this node waited for their
      // head together, and the cap may have filled meanwhile. A 200 that the
      // hub then ends would send the client back in a second, not in five.
      if (hub.full) return refuse(req, res, new HubFullError(5))
      res.writeHead(200, SSE_HEADERS)
      // A chat page (htmx) also gets the frames that keep its connection state
      // current; plain SSE clients see only messages and comment heartbeats.
      const session = sessionFromCookieHeader(req.headers.cookie, sessionSecret)
      const frames: StreamFrames = {
        ...(req.headers['hx-request'] ? pageFrames : {}),
        ephemeral: withPresence,
        personId: session?.personId,
        // What a person's stream delivered counts as seen, like the page they loaded.
        delivered: session && ((version) => visits.seen(session.personId, chatId, version)),
      }
      res.write(`retry: 1000\n: live tea, chat ${chatId}, after ${cursor ?? 'now'}\n\n${frames.heartbeat ?? ''}`)
      req.socket.setNoDelay(true)
      const here = presence.join(chatId, session?.personId, session?.name)
      if (withPresence) {
        presence.watch(chatId)
        // Who is here now, before any change: the frames after it are changes.
        renderPeople(chatId, session?.personId).then((html) => !res.writableEnded && res.write(dataFrame(html)), () => {})
      }
      res.once('close', () => {
        presence.leave(chatId, here)
        if (withPresence) presence.unwatch(chatId)
      })
      hub.subscribe(chatId, res, after, frames, cursor === undefined).catch(() => res.end())
    }
  }
}

/** The headers of every Server-Sent Events answer (chat streams and the dashboard's). */
export const SSE_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache, no-transform',
  Connection: 'keep-alive',
  'X-Content-Type-Options': 'nosniff',
  // Proxies such as nginx would otherwise buffer the stream.
  'X-Accel-Buffering': 'no',
}

/**
 * The chat page's connection state as stream frames, rendered once: "live" on
 * connect and at every heartbeat, "reconnecting" when the server ends the
 * stream. Out-of-band swaps replace #connection; they carry no id, so they do
 * not move the resume cursor.
 */
function connectionFrames(): StreamFrames {
  const render = partialRenderer<{ state: 'live' | 'reconnecting'; oob: boolean }>('_connection')
  return {
    heartbeat: dataFrame(render({ state: 'live', oob: true })),
    farewell: dataFrame(render({ state: 'reconnecting', oob: true })),
  }
}

function cursorOf(req: IncomingMessage, query: URLSearchParams): number | undefined {
  const header = req.headers['last-event-id']
  if (typeof header === 'string' && header.trim() !== '') return versionParam(header.trim(), 'Last-Event-ID')
  const after = query.getAll('after')
  return versionParam(after.length > 1 ? after : after[0], 'after')
}

function decode(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment)
  } catch {
    return undefined
  }
}

/** A readable refusal: JSON for clients that ask for it, plain text for a terminal or a browser. */
function refuse(req: IncomingMessage, res: ServerResponse, { status, message, headers }: HttpError): void {
  const json = /application\/json/.test(req.headers.accept ?? '')
  res.writeHead(status, { 'Content-Type': json ? 'application/json; charset=utf-8' : 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff', ...headers })
  res.end(json ? JSON.stringify({ error: message }) : `${message}\n`)
}

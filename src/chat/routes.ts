import { randomUUID } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { Router, type Request, type Response } from 'express'
import type { DB } from '../db/database.js'
import { HttpError, wantsJson } from '../http/errors.js'
import { chatIdParam, versionParam } from '../http/params.js'
import { parseName, setSession } from '../http/session.js'
import { partialRenderer, today, type MessageRenderer } from '../http/views.js'
import { CHAT_ID_PATTERN, Rejection, type SendMessage } from './chat.js'
import { headVersion, messagesBefore, recentChats, unbrokenRun, type Message } from './messages-projection.js'
import type { ProjectionWatch } from './projection-watch.js'
import type { SendMessageHandler } from './send-message.js'

export interface ChatRoutesDeps {
  db: DB
  sendMessage: SendMessageHandler
  projectionWatch: ProjectionWatch
  renderMessage: MessageRenderer
  secureCookies: 'auto' | boolean
  clock: () => Date
}

export const PAGE_SIZE = 50

/** Pages, commands and live streams of chats. Handlers parse, call, render; helpers below carry the rest. */
export function chatRoutes({ db, sendMessage, projectionWatch, renderMessage, secureCookies, clock }: ChatRoutesDeps): Router {
  const router = Router()
  const latestPages = new LRUCache<string, LatestMessages>({ max: 1_000 })
  const secure = (req: Request) => (secureCookies === 'auto' ? req.secure : secureCookies)
  // The composer answers every htmx post: compiled once, not looked up and rendered through the view engine each time.
  const renderComposer = partialRenderer<{ chatId: string; composer: Composer; nonce: string }>('_composer')
  const sendComposer = (res: Response, chatId: string, composer: Composer) => void res.type('html').send(renderComposer({ chatId, composer, nonce: res.locals.nonce }))

  router.get('/', async (req, res) => {
    // "Change" on a chat page comes here with its room filled in, so a new name lands back in that room.
    const room = typeof req.query.chatId === 'string' ? normalizeChatId(req.query.chatId) : ''
    const form = { name: res.locals.name, chatId: CHAT_ID_PATTERN.test(room) ? room : '' }
    res.render('home', { title: 'Live Tea', chats: await recentChats(db), form, errors: {} })
  })

  router.post('/session', async (req, res) => {
    const body = formBody(req)
    const name = parseName(body.name)
    const chatId = body.chatId === undefined || body.chatId === '' ? undefined : normalizeChatId(String(body.chatId))
    const errors: Record<string, string> = {}
    if ('error' in name) errors.name = name.error
    if (chatId !== undefined && !CHAT_ID_PATTERN.test(chatId)) errors.chatId = 'A room name is 1 to 64 letters, digits, "-" or "_" (spaces become "-").'
    if (Object.keys(errors).length > 0) {
      res.status(422)
      if (wantsJson(req)) return void res.json({ error: Object.values(errors).join(' ') })
      const form = { name: String(body.name ?? ''), chatId: String(body.chatId ?? '') }
      return res.render('home', { title: 'Live Tea', chats: await recentChats(db), form, errors })
    }
    setSession(res, (name as { name: string }).name, secure(req))
    const location = chatId ? `/chats/${chatId}` : safeBack(req)
    if (wantsJson(req)) return void res.status(200).json({ name: res.locals.name, location })
    res.redirect(303, location)
  })

  router.get('/chats/:chatId', async (req, res) => {
    const chatId = chatIdFrom(req)
    res.render('chat', await chatPage(chatId, res, {}))
  })

  router.post('/chats/:chatId/messages', async (req, res, next) => {
    const chatId = String(req.params.chatId)
    const { content, commandId } = messageBody(req)
    const command: SendMessage = {
      type: 'SendMessage',
      data: { chatId, sender: res.locals.name, content, commandId },
      metadata: { now: clock(), requestId: res.locals.requestId },
    }
    try {
      const { version } = await sendMessage.send(command)
      if (wantsJson(req)) return void res.status(201).json({ chatId, version })
      if (req.get('hx-request')) return sendComposer(res, chatId, freshComposer())
      await projectionWatch.until(db, chatId, version, PROJECTION_WAIT_MS)
      res.redirect(303, `/chats/${chatId}`)
    } catch (error) {
      if (!(error instanceof Rejection) || wantsJson(req) || !CHAT_ID_PATTERN.test(chatId)) return next(error)
      // The composer comes back with its error and the text as typed, so nothing is lost.
      res.status(error.status)
      if (error.retryAfterSeconds) res.set('Retry-After', String(error.retryAfterSeconds))
      const composer = { content, commandId, error: error.message }
      if (req.get('hx-request')) return sendComposer(res, chatId, composer)
      res.render('chat', await chatPage(chatId, res, composer))
    }
  })

  router.get('/chats/:chatId/messages', async (req, res) => {
    const chatId = chatIdFrom(req)
    const before = versionParam(req.query.before, 'before')
    const messages = await messagesBefore(db, chatId, before, PAGE_SIZE)
    if (wantsJson(req)) return void res.json({ chatId, messages: messages.map(toJson) })
    // htmx swaps the fragment in place; without JavaScript the same link opens a page.
    res.render(req.get('hx-request') ? 'partials/_older' : 'older', { title: `Earlier in #${chatId}`, chatId, messages, hasOlder: (messages[0]?.version ?? 1) > 1 })
  })

  /** Everything the chat page shows: the latest unbroken run of messages, the composer, where the stream resumes. */
  async function chatPage(chatId: string, res: Response, composer: Partial<Composer>) {
    return {
      title: `#${chatId}`,
      chatId,
      ...(await latestMessages(chatId)),
      composer: { ...freshComposer(), ...composer },
      me: res.locals.name,
    }
  }

  /**
   * The chat page's message list: the latest unbroken run of messages,
   * rendered once per chat version and day for everyone who opens the chat
   * (own messages are told apart by a per-reader style rule, not in here).
   * The chat's head comes from what this node has seen projected, else from
   * one index-only query.
   */
  async function latestMessages(chatId: string): Promise<LatestMessages> {
    const head = projectionWatch.head(chatId) ?? (await headVersion(db, chatId))
    const key = `${today()} ${chatId} ${head}`
    const cached = latestPages.get(key)
    if (cached) return cached
    const latest = await messagesBefore(db, chatId, head + 1, PAGE_SIZE)
    const messages = latest.length > 0 ? unbrokenRun(latest, latest[0]!.version - 1) : []
    const page = {
      messagesHtml: messages.map(renderMessage).join(''),
      first: messages[0]?.version ?? 0,
      after: messages.at(-1)?.version ?? 0,
      hasOlder: (messages[0]?.version ?? 1) > 1,
    }
    latestPages.set(key, page)
    return page
  }

  return router
}

/**
 * Read-your-writes for a plain form post. Its 303 leads to a page rendered
 * from the read model, which the projector fills milliseconds after the
 * append; a page without JavaScript has no stream to bring the message later.
 * So the redirect waits, bounded, until the message is projected. Past the
 * bound the message is still safe in the log and shows on the next load.
 */
const PROJECTION_WAIT_MS = 3_000

interface LatestMessages {
  messagesHtml: string
  /** The first and last version shown; 0 when the chat is empty. */
  first: number
  after: number
  hasOlder: boolean
}

interface Composer {
  content: string
  commandId: string
  error?: string
}

function freshComposer(): Composer {
  return { content: '', commandId: randomUUID() }
}

function toJson(message: Message) {
  return { chatId: message.chatId, version: message.version, sender: message.sender, content: message.content, sentAt: message.sentAt.toISOString() }
}

function chatIdFrom(req: Request): string {
  return chatIdParam(String(req.params.chatId))
}

/** "Tea Time!" → "tea-time": what people type in the room field becomes a chat id. */
export function normalizeChatId(value: string): string {
  return value
    .trim()
    .toLowerCase()
    .replace(/\s+/g, '-')
    .replace(/[^a-z0-9_-]/g, '')
}

function formBody(req: Request): Record<string, unknown> {
  assertParsedBody(req)
  return (req.body ?? {}) as Record<string, unknown>
}

function messageBody(req: Request): { content: string; commandId: string } {
  const body = formBody(req)
  if (body.content !== undefined && typeof body.content !== 'string') throw new HttpError(400, '"content" must be a string.')
  if (body.commandId !== undefined && typeof body.commandId !== 'string') throw new HttpError(400, '"commandId" must be a string.')
  // Without a commandId (a quick curl) the message is still accepted, just not deduplicated on retry.
  return { content: body.content ?? '', commandId: body.commandId || randomUUID() }
}

/** A body we could not parse must not pass as an empty one. */
function assertParsedBody(req: Request): void {
  const hasBody = Number(req.get('content-length') ?? 0) > 0 || req.get('transfer-encoding') !== undefined
  if (hasBody && !req.is(['application/json', 'application/x-www-form-urlencoded'])) {
    throw new HttpError(415, 'Send the message as a form (application/x-www-form-urlencoded) or as JSON (application/json).')
  }
  if (req.body !== undefined && (typeof req.body !== 'object' || Array.isArray(req.body) || req.body === null)) {
    throw new HttpError(400, 'The request body must be a JSON object such as {"content": "hello"}.')
  }
}

/** Back to where the form was, but only within this site. */
function safeBack(req: Request): string {
  const referer = req.get('referer')
  if (!referer) return '/'
  try {
    const url = new URL(referer)
    // A path starting with // (or /\) would be read by the browser as another host.
    return url.host === req.get('host') && !/^\/[/\\]/.test(url.pathname) ? url.pathname + url.search : '/'
  } catch {
    return '/'
  }
}


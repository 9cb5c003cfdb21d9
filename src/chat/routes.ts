import { randomUUID } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { Router, type NextFunction, type Request, type Response } from 'express'
import type { DB } from '../db/database.js'
import { readMessageEvents, readVersions } from '../event-store/event-store.js'
import { RateBuckets } from '../http/rate-buckets.js'
import { HttpError, wantsJson } from '../http/errors.js'
import { chatIdParam, lowercaseRoom, messageIdParam, versionParam } from '../http/params.js'
import { parseName, setSession } from '../http/session.js'
import { escapeHtml, partialRenderer, type MessageRenderer } from '../http/views.js'
import { CHAT_ID_PATTERN, CommandIdReused, normalizeContent, reactionOf, Rejection, type ChatCommand } from './chat.js'
import { streamIdOf, toChatEvent, type ChatHandler } from './chat-commands.js'
import { headVersion, messageById, messageJson, messagesBefore, type Message } from './messages-projection.js'
import { asSeenBy, type People, type Presence } from '../live/presence.js'
import { MAX_QUERY_LENGTH, search } from '../search/search-projection.js'
import type { ProjectionWatch } from './projection-watch.js'
import { chatAsOf } from './time-travel.js'
import type { Visits } from './visits.js'

export interface ChatRoutesDeps {
  db: DB
  chats: ChatHandler
  visits: Visits
  presence: Presence
  /** Chats one client address may start per minute (0: no limit). */
  newChatsPerMinutePerAddress: number
  projectionWatch: ProjectionWatch
  renderMessage: MessageRenderer
  secureCookies: 'auto' | boolean
  clock: () => Date
}

export const PAGE_SIZE = 50

/** Pages, commands and live streams of chats. Handlers parse, call, render; helpers below carry the rest. */
export function chatRoutes({ db, chats, visits, presence, newChatsPerMinutePerAddress, projectionWatch, renderMessage, secureCookies, clock }: ChatRoutesDeps): Router {
  const router = Router()
  const latestPages = new LRUCache<string, LatestMessages>({ max: 1_000 })
  const secure = (req: Request) => (secureCookies === 'auto' ? req.secure : secureCookies)
  // The composer answers every htmx post: compiled once, not looked up and rendered through the view engine each time.
  const renderComposer = partialRenderer<{ chatId: string; composer: Composer; nonce: string }>('_composer')
  const sendComposer = (res: Response, chatId: string, composer: Composer) => void res.type('html').send(renderComposer({ chatId, composer, nonce: res.locals.nonce }))
  const renderPeople = partialRenderer<People & { chatId: string }>('_people')
  const typingHints = typingLimiter()
  // Starting a room costs a stream and a row forever: one address may start only so many a minute.
  const newChats = newChatsPerMinutePerAddress > 0 ? new RateBuckets(newChatsPerMinutePerAddress, newChatsPerMinutePerAddress / 60) : undefined
  const renderEditForm = partialRenderer<{ message: Message; form: Composer; nonce: string }>('_edit-form')
  const metadata = (res: Response) => ({ now: clock(), requestId: res.locals.requestId })
  const person = (res: Response) => ({ personId: res.locals.personId })

  router.get('/', async (req, res) => {
    // "Change" on a chat page comes here with its room filled in, so a new name lands back in that room.
    const room = typeof req.query.chatId === 'string' ? normalizeChatId(req.query.chatId) : ''
    const form = { name: res.locals.name, chatId: CHAT_ID_PATTERN.test(room) ? room : '' }
    res.render('home', { title: 'Live Tea', rooms: await visits.rooms(res.locals.personId), form, errors: {} })
  })

  /** Full-text search over what people can see now, across chats or within one (`chat=`). */
  router.get('/search', async (req, res) => {
    // Given twice (?q=a&q=b) is a mistake to name, not a search for nothing.
    if (Array.isArray(req.query.q) || Array.isArray(req.query.chat)) throw new HttpError(400, 'Give q and chat once each.')
    // Control characters go as they do from messages (PostgreSQL refuses a NUL in text outright).
    const query = typeof req.query.q === 'string' ? normalizeContent(req.query.q) : ''
    const chat = typeof req.query.chat === 'string' && req.query.chat !== '' ? chatIdParam(req.query.chat) : undefined
    if (query.length > MAX_QUERY_LENGTH) {
      const error = `A search is at most ${MAX_QUERY_LENGTH} characters; this one has ${query.length}.`
      if (wantsJson(req)) throw new HttpError(422, error)
      // The form comes back with the words as typed and the reason, like the composer.
      return res.status(422).render('search', { title: 'Search', query, chat, results: [], error })
    }
    const results = query === '' ? [] : await search(db, query, { chatId: chat })
    if (wantsJson(req)) {
      return void res.json({ query, results: results.map((r) => ({ chatId: r.chatId, messageId: r.messageId, sender: r.sender, snippet: r.snippet, sentAt: r.sentAt.toISOString() })) })
    }
    res.render('search', { title: query ? `“${query}” · search` : 'Search', query, chat, results, error: undefined })
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
      return res.render('home', { title: 'Live Tea', rooms: await visits.rooms(res.locals.personId), form, errors })
    }
    setSession(res, (name as { name: string }).name, secure(req))
    const location = chatId ? `/chats/${chatId}` : safeBack(req)
    if (wantsJson(req)) return void res.status(200).json({ name: res.locals.name, location })
    res.redirect(303, location)
  })

  router.get('/chats/:chatId', async (req, res) => {
    // Chat names are lowercase; an address typed with capitals means the same room.
    const room = lowercaseRoom(String(req.params.chatId))
    if (room !== undefined) {
      const query = req.originalUrl.indexOf('?')
      return res.redirect(301, `/chats/${room}${query < 0 ? '' : req.originalUrl.slice(query)}`)
    }
    const chatId = chatIdFrom(req)
    const at = versionParam(req.query.at, 'at')
    if (at !== undefined) return res.render('chat-at', { title: `#${chatId} as of version ${at}`, ...(await timeTravel(chatId, at, undefined)) })
    res.render('chat', await chatPage(chatId, res, {}))
  })

  router.post('/chats/:chatId/messages', async (req, res, next) => {
    const chatId = String(req.params.chatId)
    const { content, commandId } = textBody(req)
    const command: ChatCommand = { type: 'SendMessage', data: { chatId, ...person(res), sender: res.locals.name, content, commandId }, metadata: metadata(res) }
    try {
      if (newChats && CHAT_ID_PATTERN.test(chatId) && (await isNewChat(chatId))) {
        const wait = newChats.take(req.ip ?? '')
        if (wait > 0) throw new HttpError(429, `Too many new rooms from your address; wait ${wait} s, or post in a room that exists.`, { 'Retry-After': String(wait) })
      }
      const { version } = await chats.handle(command)
      presence.stoppedTyping(chatId, res.locals.personId, commandId)
      // Writing in a room makes it one of yours (what you have read there is up to your pages and stream).
      // Without a session the person was made up for this request (curl, a script): no row for someone who never comes back.
      if (res.locals.hasSession) visits.seen(res.locals.personId, chatId, 0)
      if (wantsJson(req)) return void res.status(201).json({ chatId, version })
      if (req.get('hx-request')) return sendComposer(res, chatId, freshComposer())
      await projectionWatch.until(db, chatId, version, PROJECTION_WAIT_MS)
      res.redirect(303, `/chats/${chatId}`)
    } catch (error) {
      if (!(error instanceof Rejection) || wantsJson(req) || !CHAT_ID_PATTERN.test(chatId)) return next(error)
      // The composer comes back with its error and the text as typed, so nothing is lost.
      refuse(res, error)
      const composer = { content, commandId: error instanceof CommandIdReused ? randomUUID() : commandId, error: error.message }
      if (req.get('hx-request')) return sendComposer(res, chatId, composer)
      res.render('chat', await chatPage(chatId, res, composer))
    }
  })

  router.get('/chats/:chatId/messages', async (req, res) => {
    const chatId = chatIdFrom(req)
    const before = versionParam(req.query.before, 'before')
    const at = versionParam(req.query.at, 'at')
    if (at !== undefined) {
      const past = await timeTravel(chatId, at, before)
      if (wantsJson(req)) return void res.json({ chatId, at, messages: past.messages.map(messageJson) })
      return res.render(req.get('hx-request') ? 'partials/_older' : 'chat-at', { title: `#${chatId} as of version ${at}`, ...past })
    }
    const messages = await messagesBefore(db, chatId, before, PAGE_SIZE)
    if (wantsJson(req)) return void res.json({ chatId, messages: messages.map(messageJson) })
    // htmx swaps the fragment in place; without JavaScript the same link opens a page.
    res.render(req.get('hx-request') ? 'partials/_older' : 'older', { title: `Earlier in #${chatId}`, chatId, messages, hasOlder: (messages[0]?.messageId ?? 1) > 1 })
  })

  /** One message as it is now: its fragment (Cancel of an edit comes back here), or JSON. */
  router.get('/chats/:chatId/messages/:messageId', async (req, res) => {
    const message = await existingMessage(req)
    if (wantsJson(req)) return void res.json(messageJson(message))
    if (req.get('hx-request')) return void res.type('html').send(renderMessage(message))
    res.redirect(303, messageUrl(message.chatId, message.messageId))
  })

  /** The edit form, in place of the message (htmx) or as a page of its own (no JavaScript). Only the author's. */
  router.get('/chats/:chatId/messages/:messageId/edit', async (req, res) => {
    const message = await existingMessage(req)
    if (message.authorId === undefined || message.authorId !== res.locals.personId) throw new HttpError(403, 'Only the person who wrote a message can edit it.')
    if (message.retractedAt) throw new HttpError(410, 'That message was retracted: there is nothing left to edit.')
    const form = { content: message.content ?? '', commandId: randomUUID() }
    if (req.get('hx-request')) {
      // Beside the message, not in its place: live frames replace the message, never the form being typed in.
      res.set({ 'HX-Retarget': `#message-${message.chatId}-${message.messageId}`, 'HX-Reswap': 'afterend show:none' })
      return void res.type('html').send(renderEditForm({ message, form, nonce: res.locals.nonce }))
    }
    res.render('edit', { title: `Edit a message in #${message.chatId}`, chatId: message.chatId, message, form })
  })

  router.post('/chats/:chatId/messages/:messageId/edits', async (req, res, next) => {
    const { chatId, messageId } = messageParams(req)
    const { content, commandId } = textBody(req)
    const command: ChatCommand = { type: 'EditMessage', data: { chatId, ...person(res), messageId, content, commandId }, metadata: metadata(res) }
    await act(req, res, next, command, async (rejection) => {
      // The edit form comes back with its error and the text as typed, like the composer.
      await projectionWatch.until(db, chatId, messageId, PROJECTION_WAIT_MS)
      const message = await messageById(db, chatId, messageId)
      if (!message || rejection.status === 404 || rejection.status === 403) return undefined
      const form = { content, commandId: rejection instanceof CommandIdReused ? randomUUID() : commandId, error: rejection.message }
      if (req.get('hx-request')) return renderEditForm({ message, form, nonce: res.locals.nonce })
      return { view: 'edit', locals: { title: `Edit a message in #${chatId}`, chatId, message, form } }
    })
  })

  router.post('/chats/:chatId/messages/:messageId/retraction', async (req, res, next) => {
    const { chatId, messageId } = messageParams(req)
    const command: ChatCommand = { type: 'RetractMessage', data: { chatId, ...person(res), messageId, commandId: commandIdBody(req) }, metadata: metadata(res) }
    await act(req, res, next, command)
  })

  router.post('/chats/:chatId/messages/:messageId/reactions', async (req, res, next) => {
    const { chatId, messageId } = messageParams(req)
    const body = formBody(req)
    if (typeof body.emoji !== 'string') throw new HttpError(body.emoji === undefined ? 422 : 400, 'Say which reaction: "emoji" is one of 👍 ❤️ 😂 🎉 😮 🙏.')
    const command: ChatCommand = {
      type: 'ToggleReaction',
      data: { chatId, ...person(res), name: res.locals.name, messageId, emoji: reactionOf(body.emoji), commandId: commandIdBody(req) },
      metadata: metadata(res),
    }
    await act(req, res, next, command)
  })

  /** Who is here now, on every node: the same list the page's stream keeps current. */
  router.get('/chats/:chatId/people', async (req, res) => {
    const chatId = chatIdFrom(req)
    const people = await presence.people(chatId)
    if (wantsJson(req)) return void res.json({ chatId, people: people.people.map(({ name, typing }) => ({ name, typing })), others: people.others })
    res.type('html').send(renderPeople({ chatId, ...asSeenBy(people, res.locals.personId) }))
  })

  /**
   * "I am typing": the composer sends it, throttled, while someone types.
   * Never in the log; a flood from one person or address is cut off (429)
   * before it costs anything, and what passes is coalesced into presence.
   */
  router.post('/chats/:chatId/typing', (req, res) => {
    const chatId = chatIdFrom(req)
    const wait = typingHints(res.locals.personId, req.ip ?? '')
    if (wait > 0) throw new HttpError(429, 'Too many typing hints; slow down.', { 'Retry-After': String(wait) })
    // Without a session the person was made up for this request: no page of theirs has a stream to be here with.
    // htmx sends the composer's fields with the hint: its commandId says which composer is typing.
    const { commandId } = formBody(req)
    if (res.locals.hasSession) presence.typing(chatId, res.locals.personId, res.locals.name, typeof commandId === 'string' ? commandId : undefined)
    res.status(204).end()
  })

  /** A message's versions, oldest first, read from the log: what it said, and when. */
  router.get('/chats/:chatId/messages/:messageId/history', async (req, res) => {
    const { chatId, messageId } = messageParams(req)
    const events = (await readMessageEvents(db, streamIdOf(chatId), [messageId], Number.MAX_SAFE_INTEGER)).map((stored) => ({ stored, event: toChatEvent(stored) }))
    const sent = events.find(({ stored, event }) => stored.version === messageId && event.type === 'MessageSent')
    if (!sent || sent.event.type !== 'MessageSent') throw new HttpError(404, `There is no message ${messageId} in #${chatId}.`)
    if (events.some(({ event }) => event.type === 'MessageRetracted')) throw new HttpError(410, 'That message was retracted: its history is gone with it.')
    const versions = [{ version: messageId, content: sent.event.data.content, at: sent.event.data.sentAt }]
    for (const { stored, event } of events) {
      if (event.type === 'MessageEdited' && event.data.messageId === messageId) versions.push({ version: stored.version, content: event.data.content, at: event.data.editedAt })
    }
    if (wantsJson(req)) return void res.json({ chatId, messageId, versions })
    res.render('history', { title: `History of a message in #${chatId}`, chatId, messageId, sender: sent.event.data.sender, versions: versions.map((v) => ({ ...v, at: new Date(v.at) })) })
  })

  /**
   * Runs a command about a message and answers: JSON `{chatId, messageId,
   * version}` (reactions add `reacted`); htmx, the message's fragment as it
   * is now (not swapped in: the stream applies changes in order); a plain
   * form, 303 back to the message. A refusal answers its
   * status with `failed`'s view when it has one (the edit form, text kept),
   * else through the error middleware.
   */
  async function act(req: Request, res: Response, next: NextFunction, command: Exclude<ChatCommand, { type: 'SendMessage' }>, failed?: (rejection: Rejection) => Promise<string | { view: string; locals: object } | undefined>) {
    const { chatId, messageId } = command.data
    try {
      const result = await chats.handle(command)
      const answer = { chatId, messageId, version: result.version, ...(command.type === 'ToggleReaction' ? { reacted: result.type === 'ReactionAdded' } : {}) }
      if (wantsJson(req)) return void res.status(200).json(answer)
      await projectionWatch.until(db, chatId, result.version, PROJECTION_WAIT_MS)
      if (!req.get('hx-request')) return res.redirect(303, messageUrl(chatId, messageId))
      const message = await messageById(db, chatId, messageId)
      // The page is not told to swap this in: the live stream brings every
      // change of the message in version order, while this answer may arrive
      // after a later frame (someone reacted meanwhile) and would put an older
      // state back. (The edit form removes itself instead, see _edit-form.)
      if (command.type !== 'EditMessage') res.set('HX-Reswap', 'none')
      res.type('html').send(message ? renderMessage(message) : '')
    } catch (error) {
      if (!(error instanceof Rejection) || wantsJson(req)) return next(error)
      const view = (await failed?.(error)) ?? (req.get('hx-request') ? await messageWithError(chatId, messageId, error) : undefined)
      if (view === undefined) return next(error)
      refuse(res, error)
      if (typeof view === 'string') return void res.type('html').send(view)
      res.render(view.view, view.locals)
    }
  }

  /** The message's fragment with the reason a command about it was refused, so the answer lands in place. */
  async function messageWithError(chatId: string, messageId: number, rejection: Rejection): Promise<string | undefined> {
    const message = await messageById(db, chatId, messageId)
    if (!message) return undefined
    return renderMessage(message).replace(/<\/article>$/, `<p class="error" role="alert">${escapeHtml(rejection.message)}</p></article>`)
  }

  /** No event in the chat yet: a post would start it. Known chats answer from memory. */
  async function isNewChat(chatId: string): Promise<boolean> {
    if ((projectionWatch.head(chatId) ?? 0) > 0) return false
    const streamId = streamIdOf(chatId)
    return ((await readVersions(db, [streamId])).get(streamId) ?? 0) === 0
  }

  async function existingMessage(req: Request): Promise<Message> {
    const { chatId, messageId } = messageParams(req)
    // The live stream shows a message at commit, a moment before the read model has it: someone may click it first.
    await projectionWatch.until(db, chatId, messageId, PROJECTION_WAIT_MS)
    const message = await messageById(db, chatId, messageId)
    if (!message) throw new HttpError(404, `There is no message ${messageId} in #${chatId}.`)
    return message
  }

  /** The chat as of a version, from the log (read-only: no composer, no stream). */
  async function timeTravel(chatId: string, at: number, before: number | undefined) {
    const past = await chatAsOf(db, chatId, at, { before, limit: PAGE_SIZE })
    if (!past) throw new HttpError(404, `#${chatId} has no version ${at}.`)
    return { ...past, at, olderQuery: `at=${at}&`, readOnly: true, messagesHtml: past.messages.map((message) => renderMessage(message, 'past')).join(''), first: past.messages[0]?.messageId ?? 0 }
  }

  /** Everything the chat page shows: the latest messages, the composer, where the stream resumes, and what is new to this reader. */
  async function chatPage(chatId: string, res: Response, composer: Partial<Composer>) {
    const personId = res.locals.personId
    const [latest, lastSeen] = await Promise.all([latestMessages(chatId), visits.lastSeen(personId, chatId)])
    const firstNew = lastSeen === undefined || lastSeen >= latest.after ? undefined : await visits.firstUnseen(personId, chatId, lastSeen)
    // A visit counts from the first look, even at an empty room: it becomes one of the person's rooms.
    // A request without a session is a new made-up person each time (curl, a crawler): nobody's visit,
    // unless a browser is opening the page, whose new session cookie this answer sets.
    if (res.locals.hasSession || isBrowserNavigation(res.req)) visits.seen(personId, chatId, latest.after)
    return {
      title: `#${chatId}`,
      chatId,
      ...latest,
      messagesHtml: firstNew === undefined ? latest.messagesHtml : withNewDivider(latest.messagesHtml, chatId, firstNew),
      firstNew,
      composer: { ...freshComposer(), ...composer },
      personId,
      people: asSeenBy(await presence.people(chatId, { personId, name: res.locals.name }), personId),
    }
  }

  /**
   * The chat page's message list: the latest messages as of the chat's head
   * version, rendered once per chat version for everyone who opens
   * the chat ("mine" is a per-reader style rule, not in here). The head is
   * read first: the rows read after it are at that version or later, and the
   * stream resumes after the head, so a later change still arrives as a frame.
   */
  async function latestMessages(chatId: string): Promise<LatestMessages> {
    const head = projectionWatch.head(chatId) ?? (await headVersion(db, chatId))
    const key = `${chatId} ${head}`
    const cached = latestPages.get(key)
    if (cached) return cached
    const messages = await messagesBefore(db, chatId, undefined, PAGE_SIZE)
    const page = {
      messagesHtml: messages.map((message) => renderMessage(message)).join(''),
      first: messages[0]?.messageId ?? 0,
      after: head,
      hasOlder: (messages[0]?.messageId ?? 1) > 1,
    }
    latestPages.set(key, page)
    return page
  }

  return router
}

/**
 * Read-your-writes for a plain form post. Its 303 leads to a page rendered
 * from the read model, which the projector fills milliseconds after the
 * append; a page without JavaScript has no stream to bring the change later.
 * So the redirect waits, bounded, until the change is projected. Past the
 * bound the change is still safe in the log and shows on the next load.
 */
const PROJECTION_WAIT_MS = 3_000

interface LatestMessages {
  messagesHtml: string
  /** The first message id shown; 0 when the chat is empty. */
  first: number
  /** The chat version the list shows: where its live stream resumes. */
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

/**
 * Token buckets for typing hints: a person may send a burst of 5, then one
 * per second (a composer sends at most one per 2 s, so two tabs fit); an
 * address, whatever the sessions behind it, 60 then 10 per second: twenty
 * people typing behind one office NAT, or every reader behind a proxy when
 * TRUST_PROXY is unset, fit, while a script minting sessions is still capped.
 * The person's bucket is asked first, so one person's flood does not spend
 * the budget of the others behind their address. Answers how many seconds
 * to wait, 0 to go ahead. Bounded memory: least recently seen buckets go first.
 */
function typingLimiter(): (personId: string, address: string) => number {
  const people = new RateBuckets(5, 1)
  const addresses = new RateBuckets(60, 10)
  return (personId, address) => people.take(personId) || addresses.take(address)
}

/**
 * The shared message list with this reader's "New" divider before the first
 * message they have not seen. It has no id, so live frames upserted by id
 * pass it by; it stays where the reader's visit began.
 */
function withNewDivider(html: string, chatId: string, messageId: number): string {
  const at = html.indexOf(`<article class="message`, Math.max(0, html.indexOf(`id="message-${chatId}-${messageId}"`) - 80))
  if (at < 0 || !html.slice(at, at + 200).includes(`id="message-${chatId}-${messageId}"`)) return html
  return `${html.slice(0, at)}<p class="new-divider" role="separator" aria-label="New since your last visit"><span>New</span></p>${html.slice(at)}`
}

/** A browser opening a page (it says so in Sec-Fetch-Dest; scripts and crawlers do not send it). */
function isBrowserNavigation(req: Request): boolean {
  return req.get('sec-fetch-dest') === 'document'
}

function messageUrl(chatId: string, messageId: number): string {
  return `/chats/${chatId}#message-${chatId}-${messageId}`
}

function refuse(res: Response, rejection: Rejection): void {
  res.status(rejection.status)
  if (rejection.retryAfterSeconds) res.set('Retry-After', String(rejection.retryAfterSeconds))
}

function chatIdFrom(req: Request): string {
  return chatIdParam(String(req.params.chatId))
}

function messageParams(req: Request): { chatId: string; messageId: number } {
  return { chatId: chatIdFrom(req), messageId: messageIdParam(String(req.params.messageId)) }
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

function textBody(req: Request): { content: string; commandId: string } {
  const body = formBody(req)
  if (body.content !== undefined && typeof body.content !== 'string') throw new HttpError(400, '"content" must be a string.')
  return { content: body.content ?? '', commandId: commandIdBody(req) }
}

/** Without a commandId (a quick curl) the command is still accepted, just not deduplicated on retry. */
function commandIdBody(req: Request): string {
  const { commandId } = formBody(req)
  if (commandId !== undefined && typeof commandId !== 'string') throw new HttpError(400, '"commandId" must be a string.')
  return commandId || randomUUID()
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


/**
 * The Chat decider: what may be said and changed in a chat, as pure functions.
 * No I/O and no clock: time and ids arrive on the command.
 *
 * A chat's version is its change number: every event (a message, an edit, a
 * retraction, a reaction) takes the next one. A message's id is the version
 * its MessageSent was appended at.
 */

import { createHash } from 'node:crypto'
import type { Answer as AnswerOf, Decider, Decision as DecisionOf } from '../event-store/decider.js'
import { LearntInOrder, RecentActs, RecentCommands } from './recent.js'

export const CHAT_ID_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/
export const COMMAND_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/
export const MAX_CONTENT_LENGTH = 4000
export const MAX_SENDER_LENGTH = 40
/** Commands (of every kind) one person may give in one chat per rolling minute. */
export const RATE_LIMIT = 30
export const RATE_WINDOW_MS = 60_000
/** How many recent command ids a Chat remembers; older repeats are caught by a unique index. */
export const RECENT_COMMANDS = 200
/** How many messages' facts a Chat keeps at hand; others are read from the log when a command needs them. */
export const KNOWN_MESSAGES = 256
/** The reactions on offer, in the order they are shown. */
export const REACTIONS = ['👍', '❤️', '😂', '🎉', '😮', '🙏'] as const
export type Emoji = (typeof REACTIONS)[number]

const PRESENTATION_SELECTORS = /[\uFE0E\uFE0F]/g

/**
 * The reaction a client meant: one of the set whatever its presentation
 * selector (a keyboard or a terminal often sends ❤ without the U+FE0F that
 * makes it ❤️) and spaces around it. Anything else is returned as it came,
 * for the rules to refuse.
 */
export function reactionOf(text: string): string {
  const bare = text.trim().replace(PRESENTATION_SELECTORS, '')
  return REACTIONS.find((emoji) => emoji.replace(PRESENTATION_SELECTORS, '') === bare) ?? text
}

interface CommandMetadata {
  now: Date
  requestId?: string
}

/** Every command names the person giving it (`personId`, from the session) and carries a client-chosen `commandId`. */
interface CommandData {
  chatId: string
  personId: string
  commandId: string
}

export type SendMessage = {
  type: 'SendMessage'
  data: CommandData & { sender: string; content: string }
  metadata: CommandMetadata
}

export type EditMessage = {
  type: 'EditMessage'
  data: CommandData & { messageId: number; content: string }
  metadata: CommandMetadata
}

export type RetractMessage = {
  type: 'RetractMessage'
  data: CommandData & { messageId: number }
  metadata: CommandMetadata
}

export type ToggleReaction = {
  type: 'ToggleReaction'
  data: CommandData & { messageId: number; name: string; emoji: string }
  metadata: CommandMetadata
}

export type ChatCommand = SendMessage | EditMessage | RetractMessage | ToggleReaction

/** Who gave the command: the person, and the command id they chose (idempotency is per person). */
export interface EventMetadata {
  commandId: string
  personId?: string
  requestId?: string
}

/** `authorId` is absent on messages sent before people had ids: they belong to no one. */
export type MessageSent = {
  type: 'MessageSent'
  data: { chatId: string; authorId?: string; sender: string; content: string; sentAt: string }
  metadata: EventMetadata
}

export type MessageEdited = {
  type: 'MessageEdited'
  data: { messageId: number; authorId: string; content: string; editedAt: string }
  metadata: EventMetadata
}

export type MessageRetracted = {
  type: 'MessageRetracted'
  data: { messageId: number; authorId: string; retractedAt: string }
  metadata: EventMetadata
}

export type ReactionAdded = {
  type: 'ReactionAdded'
  data: { messageId: number; by: string; name: string; emoji: Emoji; reactedAt: string }
  metadata: EventMetadata
}

export type ReactionRemoved = {
  type: 'ReactionRemoved'
  data: { messageId: number; by: string; name: string; emoji: Emoji; reactedAt: string }
  metadata: EventMetadata
}

export type ChatEvent = MessageSent | MessageEdited | MessageRetracted | ReactionAdded | ReactionRemoved

/** What the rules need to know about one message. */
export interface MessageFacts {
  authorId: string | undefined
  /**
   * A digest of the text, not the text: an edit to the same text changes
   * nothing, and that is all the rules ask of it. The state keeps 256
   * messages for each of up to 10,000 chats, and a message may be 4,000
   * characters: as text that could be gigabytes of a node's memory.
   */
  contentDigest: string
  retracted: boolean
  /** `${personId} ${emoji}` for every reaction standing now. */
  reactions: ReadonlySet<string>
}

export type Answer = AnswerOf<ChatEvent['type']>

/**
 * Only what decide needs, so it stays small however long the chat is: the
 * version, each person's command times within the rate window, the answers to
 * the latest command ids, and the facts of the messages at hand. `messages`
 * maps an id to null when that version is known not to be a message, in the
 * order they became known (the first known go first when compacted). All
 * three are persistent values: evolve shares them, never copies them.
 */
export interface Chat {
  version: number
  recentActs: RecentActs
  recentCommands: RecentCommands<Answer>
  messages: LearntInOrder<number, MessageFacts | null>
}

export type RejectionStatus = 403 | 404 | 422 | 429

/** A command the rules refuse. It carries its HTTP meaning: 403 not yours, 404 no such message, 422 invalid, 429 too fast. */
export class Rejection extends Error {
  constructor(
    readonly status: RejectionStatus,
    message: string,
    readonly retryAfterSeconds?: number,
  ) {
    super(message)
    this.name = 'Rejection'
  }
}

/** A command id the person used before for another request: refused, and a form that sent it needs a new id to send this one. */
export class CommandIdReused extends Rejection {
  constructor() {
    super(422, 'That command id was used before for a different change, which went through; this one was not made. Send it again with a new command id (the form has a new one now).')
  }
}

export type Decision = DecisionOf<ChatEvent, Rejection>

export function initialState(version = 0): Chat {
  return { version, recentActs: RecentActs.empty(RATE_WINDOW_MS, RATE_LIMIT), recentCommands: RecentCommands.empty(RECENT_COMMANDS), messages: LearntInOrder.empty() }
}

/** The message a command is about, if any: the command handler reads its facts from the log before deciding. */
export function targetOf(command: ChatCommand): number | undefined {
  switch (command.type) {
    case 'SendMessage':
      return undefined
    case 'EditMessage':
    case 'RetractMessage':
    case 'ToggleReaction':
      return command.data.messageId
    default:
      return exhaustive(command)
  }
}

/** The key of a command for idempotency: the same id from two people is two commands. */
export const commandKey = (personId: string | undefined, commandId: string) => `${personId ?? ''} ${commandId}`

export function decide(command: ChatCommand, state: Chat): Decision {
  const invalid = validate(command)
  if (invalid) return reject(422, invalid)
  const earlier = state.recentCommands.get(commandKey(command.data.personId, command.data.commandId))
  if (earlier) return repeatOf(command, earlier)
  const tooFast = rateLimit(command, state)
  if (tooFast) return { kind: 'rejected', rejection: tooFast }
  switch (command.type) {
    case 'SendMessage':
      return sendMessage(command)
    case 'EditMessage':
      return editMessage(command, state)
    case 'RetractMessage':
      return retractMessage(command, state)
    case 'ToggleReaction':
      return toggleReaction(command, state)
    default:
      return exhaustive(command)
  }
}

export function evolve(state: Chat, event: ChatEvent): Chat {
  const version = state.version + 1
  const actor = actorOf(event)
  const at = Date.parse(timeOf(event))
  const recentActs = actor === undefined || Number.isNaN(at) ? state.recentActs : state.recentActs.with(actor, at)
  // A text's digest is taken once per event: the message's facts and the command's answer share it.
  const digest = 'content' in event.data ? digestOf(event.data.content) : undefined
  const recentCommands = state.recentCommands.with(commandKey(event.metadata.personId, event.metadata.commandId), answerOf(event, version, digest))
  return { version, recentActs, recentCommands, messages: withMessageFacts(state.messages, version, event, digest) }
}

/** How the command behind an event was answered: a repeat of it answers the same. */
export function answerOf(event: ChatEvent, version: number, digest = 'content' in event.data ? digestOf(event.data.content) : undefined): Answer {
  // A message sent is keyed by its text alone (its id is the version it got); a change by its message and its text or emoji.
  const request = event.type === 'MessageSent' ? digest! : requestKey(event.data.messageId, digest ?? emojiOf(event))
  return { version, type: event.type, request }
}

/**
 * A command id used before by the same person: the same request is a retry
 * and gets the first answer; another request under that id (a new message,
 * another emoji, another message) is refused, since answering it with the
 * first command's answer would claim a change that was never made.
 */
export function repeatOf(command: ChatCommand, earlier: Answer): Decision {
  if (EVENTS_OF[command.type].includes(earlier.type) && earlier.request === requestOf(command)) return { kind: 'duplicate', answer: earlier }
  return { kind: 'rejected', rejection: new CommandIdReused() }
}

/** The events each command may cause, for telling a retry from another command under the same id. */
const EVENTS_OF: Record<ChatCommand['type'], readonly ChatEvent['type'][]> = {
  SendMessage: ['MessageSent'],
  EditMessage: ['MessageEdited'],
  RetractMessage: ['MessageRetracted'],
  ToggleReaction: ['ReactionAdded', 'ReactionRemoved'],
}

/** The request key of a command, as answerOf keys the event it caused. */
function requestOf(command: ChatCommand): string {
  switch (command.type) {
    case 'SendMessage':
      return digestOf(normalizeContent(command.data.content))
    case 'EditMessage':
      return requestKey(command.data.messageId, digestOf(normalizeContent(command.data.content)))
    case 'RetractMessage':
      return requestKey(command.data.messageId, undefined)
    case 'ToggleReaction':
      return requestKey(command.data.messageId, command.data.emoji)
    default:
      return exhaustive(command)
  }
}

function requestKey(messageId: number, detail: string | undefined): string {
  return detail === undefined ? String(messageId) : `${messageId} ${detail}`
}

function emojiOf(event: ChatEvent): string | undefined {
  return event.type === 'ReactionAdded' || event.type === 'ReactionRemoved' ? event.data.emoji : undefined
}

/**
 * Adds facts read from the log (a message's own events, up to the state's
 * version) to a state, for a command about a message that is not at hand.
 */
export function withKnownMessages(state: Chat, known: ReadonlyMap<number, MessageFacts | null>): Chat {
  if (known.size === 0) return state
  // Learnt facts go in last, so they are the ones kept when the state is compacted.
  let messages = state.messages
  for (const [id, facts] of known) messages = messages.learn(id, facts)
  return { ...state, messages }
}

/** Folds one message's own events (its MessageSent first) into its facts. */
export function messageFacts(events: ChatEvent[]): MessageFacts | null {
  const [sent, ...changes] = events
  if (sent?.type !== 'MessageSent') return null
  return changes.reduce<MessageFacts>((facts, event) => applyToFacts(facts, event), { authorId: sent.data.authorId, contentDigest: digestOf(sent.data.content), retracted: false, reactions: new Set<string>() })
}

/**
 * Whether a command may go ahead, as far as it can tell alone (before any
 * state): the rules that depend on the chat's history come after.
 */
export function validate(command: ChatCommand): string | undefined {
  const { chatId, personId, commandId } = command.data
  if (!CHAT_ID_PATTERN.test(chatId)) return 'A chat name is 1 to 64 lowercase letters, digits, "-" or "_", starting with a letter or digit.'
  if (!COMMAND_ID_PATTERN.test(commandId)) return 'The command id is 1 to 64 letters, digits, "-" or "_".'
  if (typeof personId !== 'string' || personId.length === 0) return 'Every command needs a person: open the chat page once to get a session.'
  switch (command.type) {
    case 'SendMessage':
      return validName(command.data.sender) ?? validContent(command.data.content)
    case 'EditMessage':
      return validMessageId(command.data.messageId) ?? validContent(command.data.content)
    case 'RetractMessage':
      return validMessageId(command.data.messageId)
    case 'ToggleReaction':
      if (!(REACTIONS as readonly string[]).includes(command.data.emoji)) return `A reaction is one of ${REACTIONS.join(' ')}.`
      return validMessageId(command.data.messageId) ?? validName(command.data.name)
    default:
      return exhaustive(command)
  }
}

function sendMessage({ data, metadata }: SendMessage): Decision {
  return accept({
    type: 'MessageSent',
    data: { chatId: data.chatId, authorId: data.personId, sender: data.sender.trim(), content: normalizeContent(data.content), sentAt: metadata.now.toISOString() },
    metadata: metadataOf(data, metadata),
  })
}

function editMessage({ data, metadata }: EditMessage, state: Chat): Decision {
  const message = ownMessage(state, data.messageId, data.personId, 'edit')
  if ('rejection' in message) return message
  const content = normalizeContent(data.content)
  if (digestOf(content) === message.contentDigest) return { kind: 'accepted', events: [] }
  return accept({
    type: 'MessageEdited',
    data: { messageId: data.messageId, authorId: data.personId, content, editedAt: metadata.now.toISOString() },
    metadata: metadataOf(data, metadata),
  })
}

function retractMessage({ data, metadata }: RetractMessage, state: Chat): Decision {
  const message = ownMessage(state, data.messageId, data.personId, 'retract')
  if ('rejection' in message) return message
  return accept({
    type: 'MessageRetracted',
    data: { messageId: data.messageId, authorId: data.personId, retractedAt: metadata.now.toISOString() },
    metadata: metadataOf(data, metadata),
  })
}

function toggleReaction({ data, metadata }: ToggleReaction, state: Chat): Decision {
  const message = state.messages.get(data.messageId)
  if (!message) return noSuchMessage(data.messageId)
  if (message.retracted) return reject(422, 'That message was retracted: there is nothing left to react to.')
  const emoji = data.emoji as Emoji
  const standing = message.reactions.has(`${data.personId} ${emoji}`)
  return accept({
    type: standing ? 'ReactionRemoved' : 'ReactionAdded',
    data: { messageId: data.messageId, by: data.personId, name: data.name.trim(), emoji, reactedAt: metadata.now.toISOString() },
    metadata: metadataOf(data, metadata),
  })
}

/** The message, when it exists, is the person's own, and is not retracted. */
function ownMessage(state: Chat, messageId: number, personId: string, verb: string): MessageFacts | Extract<Decision, { kind: 'rejected' }> {
  const message = state.messages.get(messageId)
  if (!message) return noSuchMessage(messageId)
  if (message.authorId === undefined || message.authorId !== personId) return reject(403, `Only the person who wrote a message can ${verb} it.`)
  if (message.retracted) return reject(422, 'That message was retracted already.')
  return message
}

function rateLimit(command: ChatCommand, state: Chat): Rejection | undefined {
  const now = command.metadata.now.getTime()
  const acts = state.recentActs.of(command.data.personId).filter((at) => at > now - RATE_WINDOW_MS)
  if (acts.length < RATE_LIMIT) return undefined
  const retryAfterSeconds = Math.max(1, Math.ceil((acts[0]! + RATE_WINDOW_MS - now) / 1000))
  return new Rejection(429, `Slow down: at most ${RATE_LIMIT} messages and changes a minute. Try again in ${retryAfterSeconds} s.`, retryAfterSeconds)
}

function validName(name: string): string | undefined {
  const nameLength = length(name.trim())
  if (nameLength < 1 || nameLength > MAX_SENDER_LENGTH) return `A name is 1 to ${MAX_SENDER_LENGTH} characters.`
  if (!name.isWellFormed()) return 'A name cannot contain broken characters (a lone surrogate).'
  return undefined
}

function validContent(content: string): string | undefined {
  if (!content.isWellFormed()) return 'The message contains broken characters (a lone surrogate); please type it again.'
  const normalized = normalizeContent(content)
  const contentLength = length(normalized)
  // Only invisible characters (zero-width spaces, fillers) would show as an empty bubble.
  if (contentLength < 1 || !VISIBLE.test(normalized)) return 'Write something first: a message cannot be empty.'
  if (contentLength > MAX_CONTENT_LENGTH) return `A message is at most ${MAX_CONTENT_LENGTH} characters; this one has ${contentLength}.`
  return undefined
}

function validMessageId(messageId: number): string | undefined {
  return Number.isSafeInteger(messageId) && messageId >= 1 ? undefined : 'A message id is a whole number from 1.'
}

function noSuchMessage(messageId: number): Extract<Decision, { kind: 'rejected' }> {
  return reject(404, `There is no message ${messageId} in this chat.`)
}

function reject(status: RejectionStatus, message: string): Extract<Decision, { kind: 'rejected' }> {
  return { kind: 'rejected', rejection: new Rejection(status, message) }
}

function accept(event: ChatEvent): Decision {
  return { kind: 'accepted', events: [event] }
}

function metadataOf(data: CommandData, metadata: CommandMetadata): EventMetadata {
  return { commandId: data.commandId, personId: data.personId, ...(metadata.requestId ? { requestId: metadata.requestId } : {}) }
}

/** The person an event counts against in the rate window (none for messages from before people had ids). */
function actorOf(event: ChatEvent): string | undefined {
  switch (event.type) {
    case 'MessageSent':
    case 'MessageEdited':
    case 'MessageRetracted':
      return event.data.authorId
    case 'ReactionAdded':
    case 'ReactionRemoved':
      return event.data.by
    default:
      return exhaustive(event)
  }
}

/** When an event happened, by the clock of the command that caused it. */
export function timeOf(event: ChatEvent): string {
  switch (event.type) {
    case 'MessageSent':
      return event.data.sentAt
    case 'MessageEdited':
      return event.data.editedAt
    case 'MessageRetracted':
      return event.data.retractedAt
    case 'ReactionAdded':
    case 'ReactionRemoved':
      return event.data.reactedAt
    default:
      return exhaustive(event)
  }
}

/** The message an event concerns: its own version for a MessageSent. */
export function messageIdOf(event: ChatEvent, version: number): number {
  return event.type === 'MessageSent' ? version : event.data.messageId
}

function withMessageFacts(messages: Chat['messages'], version: number, event: ChatEvent, digest: string | undefined): Chat['messages'] {
  const id = messageIdOf(event, version)
  if (event.type === 'MessageSent') return messages.set(id, { authorId: event.data.authorId, contentDigest: digest ?? digestOf(event.data.content), retracted: false, reactions: new Set() })
  const known = messages.get(id)
  return known ? messages.set(id, applyToFacts(known, event, digest)) : messages
}

/**
 * The state back within its bound: the messages at hand longest known go
 * first (ids learnt for a 404 included), until KNOWN_MESSAGES remain. Not
 * done by evolve: while a batch of commands is decided, a message a later
 * command is about must not fall out of the state because earlier ones in
 * the same batch sent messages. The command handler compacts what it keeps.
 */
export function compact(state: Chat): Chat {
  if (state.messages.size <= KNOWN_MESSAGES) return state
  return { ...state, messages: state.messages.within(KNOWN_MESSAGES) }
}

function digestOf(content: string): string {
  return createHash('sha256').update(content).digest('base64url')
}

function applyToFacts(facts: MessageFacts, event: ChatEvent, digest?: string): MessageFacts {
  switch (event.type) {
    case 'MessageSent':
      return facts
    case 'MessageEdited':
      return { ...facts, contentDigest: digest ?? digestOf(event.data.content) }
    case 'MessageRetracted':
      return { ...facts, retracted: true, contentDigest: digestOf('') }
    case 'ReactionAdded':
      return { ...facts, reactions: new Set(facts.reactions).add(`${event.data.by} ${event.data.emoji}`) }
    case 'ReactionRemoved': {
      const reactions = new Set(facts.reactions)
      reactions.delete(`${event.data.by} ${event.data.emoji}`)
      return { ...facts, reactions }
    }
    default:
      return exhaustive(event)
  }
}

/** A character that shows: not space, not a control, not one of Unicode's default-ignorable (invisible) characters. */
const VISIBLE = /[^\p{White_Space}\p{Cc}\p{Default_Ignorable_Code_Point}]/u

/** Line endings become \n (a bare \r would also end a line in an SSE frame); control characters go. */
export function normalizeContent(content: string): string {
  return content
    .replace(/\r\n?/g, '\n')
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/g, '')
    .trim()
}

/** Length in characters as a person counts them (code points), not UTF-16 units. */
function length(text: string): number {
  let count = 0
  for (const _ of text) count++
  return count
}

export const chatDecider: Decider<ChatCommand, ChatEvent, Chat> = { decide, evolve, initialState, compact }

export function exhaustive(value: never): never {
  throw new Error(`unhandled: ${JSON.stringify(value)}`)
}

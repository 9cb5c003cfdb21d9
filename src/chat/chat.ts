/**
 * The Chat decider: what may be said in a chat, as pure functions.
 * No I/O and no clock: time and ids arrive on the command.
 */

export const CHAT_ID_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/
export const COMMAND_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/
export const MAX_CONTENT_LENGTH = 4000
export const MAX_SENDER_LENGTH = 40
export const RATE_LIMIT = 30
export const RATE_WINDOW_MS = 60_000
/** How many recent command ids a Chat remembers; older repeats are caught by a unique index. */
export const RECENT_COMMANDS = 200

export type SendMessage = {
  type: 'SendMessage'
  data: { chatId: string; sender: string; content: string; commandId: string }
  metadata: { now: Date; requestId?: string }
}

export type ChatCommand = SendMessage

export type MessageSent = {
  type: 'MessageSent'
  data: { chatId: string; sender: string; content: string; sentAt: string }
  metadata: { commandId: string; requestId?: string }
}

export type ChatEvent = MessageSent

/**
 * Only what decide needs, so it stays small however long the chat is:
 * the version, each sender's send times within the rate window, and the
 * command ids of the latest messages (with the version each produced).
 */
export interface Chat {
  version: number
  recentSends: ReadonlyMap<string, readonly number[]>
  recentCommands: ReadonlyMap<string, number>
}

/** A command the rules refuse. It carries its HTTP meaning: 422 invalid, 429 too fast. */
export class Rejection extends Error {
  constructor(
    readonly status: 422 | 429,
    message: string,
    readonly retryAfterSeconds?: number,
  ) {
    super(message)
    this.name = 'Rejection'
  }
}

export type Decision =
  | { kind: 'accepted'; events: ChatEvent[] }
  /** The command was handled before: answer as the first time, append nothing. */
  | { kind: 'duplicate'; version: number }
  | { kind: 'rejected'; rejection: Rejection }

export function initialState(version = 0): Chat {
  return { version, recentSends: new Map(), recentCommands: new Map() }
}

export function decide(command: ChatCommand, state: Chat): Decision {
  switch (command.type) {
    case 'SendMessage':
      return sendMessage(command, state)
    default:
      return exhaustive(command.type)
  }
}

export function evolve(state: Chat, event: ChatEvent): Chat {
  switch (event.type) {
    case 'MessageSent':
      return messageSent(state, event)
    default:
      return exhaustive(event.type)
  }
}

function sendMessage({ data, metadata }: SendMessage, state: Chat): Decision {
  const invalid = validate(data)
  if (invalid) return { kind: 'rejected', rejection: new Rejection(422, invalid) }

  const earlier = state.recentCommands.get(data.commandId)
  if (earlier !== undefined) return { kind: 'duplicate', version: earlier }

  const now = metadata.now.getTime()
  const sends = (state.recentSends.get(data.sender) ?? []).filter((at) => at > now - RATE_WINDOW_MS)
  if (sends.length >= RATE_LIMIT) {
    const retryAfterSeconds = Math.max(1, Math.ceil((sends[0]! + RATE_WINDOW_MS - now) / 1000))
    const rejection = new Rejection(429, `Slow down: at most ${RATE_LIMIT} messages a minute. Try again in ${retryAfterSeconds} s.`, retryAfterSeconds)
    return { kind: 'rejected', rejection }
  }

  const event: MessageSent = {
    type: 'MessageSent',
    data: { chatId: data.chatId, sender: data.sender.trim(), content: normalizeContent(data.content), sentAt: metadata.now.toISOString() },
    metadata: { commandId: data.commandId, ...(metadata.requestId ? { requestId: metadata.requestId } : {}) },
  }
  return { kind: 'accepted', events: [event] }
}

function validate({ chatId, sender, content, commandId }: SendMessage['data']): string | undefined {
  if (!CHAT_ID_PATTERN.test(chatId)) return 'A chat name is 1 to 64 lowercase letters, digits, "-" or "_", starting with a letter or digit.'
  const senderLength = length(sender.trim())
  if (senderLength < 1 || senderLength > MAX_SENDER_LENGTH) return `A name is 1 to ${MAX_SENDER_LENGTH} characters.`
  if (!COMMAND_ID_PATTERN.test(commandId)) return 'The command id is 1 to 64 letters, digits, "-" or "_".'
  const contentLength = length(normalizeContent(content))
  if (contentLength < 1) return 'Write something first: a message cannot be empty.'
  if (contentLength > MAX_CONTENT_LENGTH) return `A message is at most ${MAX_CONTENT_LENGTH} characters; this one has ${contentLength}.`
  return undefined
}

function messageSent(state: Chat, { data, metadata }: MessageSent): Chat {
  const at = Date.parse(data.sentAt)
  const version = state.version + 1

  // Forget what can no longer matter, so the state stays bounded.
  const recentSends = new Map<string, readonly number[]>()
  for (const [sender, times] of state.recentSends) {
    const kept = times.filter((time) => time > at - RATE_WINDOW_MS)
    if (kept.length > 0) recentSends.set(sender, kept)
  }
  recentSends.set(data.sender, [...(recentSends.get(data.sender) ?? []), at])

  const recentCommands = new Map(state.recentCommands)
  recentCommands.set(metadata.commandId, version)
  if (recentCommands.size > RECENT_COMMANDS) recentCommands.delete(recentCommands.keys().next().value!)

  return { version, recentSends, recentCommands }
}

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

function exhaustive(value: never): never {
  throw new Error(`unhandled: ${String(value)}`)
}

import { CHAT_ID_PATTERN } from '../chat/chat.js'
import { HttpError } from './errors.js'

const VERSION_PATTERN = /^\d{1,15}$/

/** The chat id in a URL; a URL that cannot name a chat is a 404, not a rule broken. */
export function chatIdParam(value: string | undefined): string {
  if (value === undefined || !CHAT_ID_PATTERN.test(value)) throw new HttpError(404, 'No chat can have that name: chat names are lowercase letters, digits, "-" and "_".')
  return value
}

/**
 * The room a chat name typed with capitals means (a link someone wrote out):
 * its lowercase form, when only that is valid; undefined otherwise.
 */
export function lowercaseRoom(typed: string | undefined): string | undefined {
  if (typed === undefined || CHAT_ID_PATTERN.test(typed)) return undefined
  const lower = typed.toLowerCase()
  return CHAT_ID_PATTERN.test(lower) ? lower : undefined
}

/** A message version from a query parameter or header: undefined when absent, 400 when malformed (or repeated). */
export function versionParam(value: unknown, name: string): number | undefined {
  if (value === undefined || value === '') return undefined
  if (typeof value !== 'string' || !VERSION_PATTERN.test(value)) throw new HttpError(400, `${name} must be a message version (a whole number).`)
  return Number(value)
}

/** A message id in a URL: the chat version it was sent at. Anything else names no message: 404. */
export function messageIdParam(value: string | undefined): number {
  if (value === undefined || !VERSION_PATTERN.test(value) || Number(value) < 1) throw new HttpError(404, 'No message has that id: message ids are whole numbers from 1.')
  return Number(value)
}

import { createHash, randomBytes, randomInt } from 'node:crypto'
import cookieParser from 'cookie-parser'
import type { NextFunction, Request, Response } from 'express'
import { MAX_SENDER_LENGTH } from '../chat/chat.js'

export const SESSION_COOKIE = 'live_tea_session'
const ONE_YEAR_MS = 365 * 24 * 3600 * 1000

const ADJECTIVES = [
  'amber', 'bold', 'brave', 'bright', 'calm', 'clever', 'cosy', 'crisp', 'curious', 'dapper', 'eager', 'fancy', 'gentle', 'golden',
  'happy', 'jolly', 'keen', 'kind', 'lively', 'lucky', 'mellow', 'merry', 'misty', 'nimble', 'noble', 'plucky', 'proud', 'quick',
  'quiet', 'rosy', 'shy', 'silver', 'sleepy', 'snug', 'spicy', 'steady', 'sunny', 'swift', 'tidy', 'witty', 'zesty', 'breezy',
]
const NOUNS = [
  'badger', 'bee', 'biscuit', 'crumpet', 'darjeeling', 'earlgrey', 'falcon', 'fox', 'hedgehog', 'heron', 'kettle', 'lark', 'lemon',
  'matcha', 'meerkat', 'mint', 'oolong', 'otter', 'owl', 'panda', 'pekoe', 'puffin', 'rooibos', 'scone', 'sencha', 'sparrow',
  'squirrel', 'teacup', 'teapot', 'tiger', 'toucan', 'walrus', 'wren', 'yak', 'chai', 'ginger', 'hibiscus', 'jasmine',
]

/** "sunny-otter-42": readable, and rarely shared by two people at once. */
export function randomName(): string {
  return `${ADJECTIVES[randomInt(ADJECTIVES.length)]}-${NOUNS[randomInt(NOUNS.length)]}-${randomInt(10, 100)}`
}

/** A display name as typed, or an error message. */
export function parseName(value: unknown): { name: string } | { error: string } {
  const name = typeof value === 'string' ? value.replace(/\s+/g, ' ').trim() : ''
  const length = [...name].length
  if (length < 1) return { error: 'Pick a name: it is what others see next to your messages.' }
  if (length > MAX_SENDER_LENGTH) return { error: `A name is at most ${MAX_SENDER_LENGTH} characters.` }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001F\u007F]/.test(name)) return { error: 'A name cannot contain control characters.' }
  return { name }
}

declare module 'express-serve-static-core' {
  interface Locals {
    /** The person's stable id: from the signed session cookie, or a fresh one. What every rule about a person keys on. */
    personId: string
    /** The person's display name: a label, not an identity. */
    name: string
    /** True when the session came from a valid cookie rather than being made up for this request. */
    hasSession: boolean
  }
}

/** 128 random bits, base64url: 22 characters. */
const PERSON_ID_PATTERN = /^[A-Za-z0-9_-]{22}$/
/** Cookie value "p1.<personId>.<name>"; a cookie from before people had ids holds only the name. */
const SESSION_VALUE = /^p1\.([A-Za-z0-9_-]{22})\.(.*)$/s

export function newPersonId(): string {
  return randomBytes(16).toString('base64url')
}

/**
 * A person's public tag: shown in pages and fragments (who wrote a message,
 * who reacted) so a page can tell "mine" with a CSS rule, without giving away
 * the id itself. One-way, and the same on every node.
 */
export function personTag(personId: string): string {
  return createHash('sha256').update(`live-tea person ${personId}`).digest('base64url').slice(0, 16)
}

/** The session a signed cookie value holds: person and name, or the name alone from an older cookie (to be upgraded). */
export function parseSession(raw: unknown): { personId?: string; name: string } | undefined {
  if (typeof raw !== 'string') return undefined
  const match = SESSION_VALUE.exec(raw)
  const parsed = parseName(match ? match[2] : raw)
  if ('error' in parsed) return undefined
  return match && PERSON_ID_PATTERN.test(match[1]!) ? { personId: match[1]!, name: parsed.name } : { name: parsed.name }
}

/**
 * The person behind every command comes from here, never from a request
 * field. The cookie is signed (cookie-parser + SESSION_SECRET); a forged or
 * tampered one reads as no session. A person without a session gets a new id
 * and a random name, kept in a new cookie so they stay theirs; a cookie from
 * before people had ids keeps its name and gets an id.
 */
export function session({ secure }: { secure: 'auto' | boolean }) {
  return (req: Request, res: Response, next: NextFunction) => {
    const parsed = parseSession(req.signedCookies?.[SESSION_COOKIE])
    res.locals.hasSession = parsed?.personId !== undefined
    if (parsed?.personId) {
      res.locals.personId = parsed.personId
      res.locals.name = parsed.name
    } else {
      res.locals.personId = newPersonId()
      setSession(res, parsed?.name ?? randomName(), secure === 'auto' ? req.secure : secure)
    }
    next()
  }
}

/** Sets the session cookie for `res.locals.personId` with a (new) display name. */
export function setSession(res: Response, name: string, secure: boolean): void {
  res.locals.name = name
  // Replace the cookie this response may already carry: two Set-Cookie
  // headers for one cookie leave clients guessing which wins.
  const previous = res.getHeader('Set-Cookie')
  if (previous !== undefined) {
    const others = [previous].flat().map(String).filter((cookie) => !cookie.startsWith(`${SESSION_COOKIE}=`))
    if (others.length > 0) res.setHeader('Set-Cookie', others)
    else res.removeHeader('Set-Cookie')
  }
  res.cookie(SESSION_COOKIE, `p1.${res.locals.personId}.${name}`, { signed: true, httpOnly: true, sameSite: 'lax', secure, maxAge: ONE_YEAR_MS, path: '/' })
}

/**
 * The session from a raw Cookie header, for requests served outside Express
 * (the event stream): the same signed cookie, verified the same way. Only a
 * current session counts (person and name); anything else is no one.
 */
export function sessionFromCookieHeader(header: string | undefined, secret: string): { personId: string; name: string } | undefined {
  if (!header) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq < 0 || part.slice(0, eq).trim() !== SESSION_COOKIE) continue
    let value: string
    try {
      value = decodeURIComponent(part.slice(eq + 1).trim())
    } catch {
      return undefined
    }
    const unsigned = value.startsWith('s:') ? cookieParser.signedCookie(value, secret) : false
    const session = unsigned === false ? undefined : parseSession(unsigned)
    return session?.personId ? { personId: session.personId, name: session.name } : undefined
  }
  return undefined
}

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
  if (typeof value === 'string' && !value.isWellFormed()) {
    // A lone UTF-16 surrogate (only JSON can carry one) is no character at all: cookies and Postgres refuse it.
    return { error: 'A name cannot contain a broken character (a lone UTF-16 surrogate); type it again.' }
  }
  const name = typeof value === 'string' ? value.replace(/[\t\n\r\p{Zs}]+/gu, ' ').trim() : ''
  const length = [...name].length
  if (length < 1) return { error: 'Pick a name: it is what others see next to your messages.' }
  if (length > MAX_SENDER_LENGTH) return { error: `A name is at most ${MAX_SENDER_LENGTH} characters.` }
  const hidden = hiddenCharacter(name)
  if (hidden !== undefined) {
    const code = `U+${hidden.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`
    return { error: `A name cannot contain invisible, control or text-direction characters (this one has ${code}).` }
  }
  return { name }
}

/*
 * Characters that draw nothing or act on the text around them: controls
 * (U+0085 included), format characters (zero-width spaces, bidirectional
 * overrides and isolates that reorder what follows, soft hyphens, tags),
 * line and paragraph separators, and the other default-ignorable code
 * points (U+3164 Hangul filler). In a name they make it look blank, or like
 * someone else's, or turn the text after it around. Ordinary whitespace is
 * collapsed before this check instead.
 */
const HIDDEN = /^[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}]$/u
const VARIATION_SELECTOR = /^[\uFE00-\uFE0F\u{E0100}-\u{E01EF}]$/u
const TAG = /^[\u{E0020}-\u{E007F}]$/u
const PICTOGRAPH = /^[\p{Extended_Pictographic}\p{Emoji_Modifier}\uFE0F]$/u
const LETTER = /^[\p{L}\p{M}]$/u
const ZWNJ = '\u200C'
const ZWJ = '\u200D'
const BLACK_FLAG = '\u{1F3F4}'

/**
 * The first hidden character of a name, except where writing needs one:
 * a variation selector after a visible character (❤️), a zero-width joiner
 * inside an emoji sequence (👩‍💻), a joiner or non-joiner between letters
 * (Persian, Indic scripts), and the tags of a subdivision flag (🏴 + tags).
 */
function hiddenCharacter(name: string): string | undefined {
  const chars = [...name]
  for (let i = 0; i < chars.length; i++) {
    const char = chars[i]!
    if (!HIDDEN.test(char)) continue
    const before = chars[i - 1] ?? ''
    const after = chars[i + 1] ?? ''
    if (VARIATION_SELECTOR.test(char) && before !== '' && before !== ' ' && !HIDDEN.test(before)) continue
    if (char === ZWJ && PICTOGRAPH.test(before) && PICTOGRAPH.test(after)) continue
    if ((char === ZWJ || char === ZWNJ) && LETTER.test(before) && LETTER.test(after)) continue
    if (TAG.test(char) && chars.slice(0, i).findLast((c) => !TAG.test(c)) === BLACK_FLAG) continue
    return char
  }
  return undefined
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

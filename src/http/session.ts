import { randomInt } from 'node:crypto'
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
    /** The person's display name: from the signed session cookie, or a fresh random one. */
    name: string
    /** True when the name came from a valid cookie rather than being made up for this request. */
    hasSession: boolean
  }
}

/**
 * The sender of every command comes from here, never from a request field.
 * The cookie is signed (cookie-parser + SESSION_SECRET); a forged or tampered
 * one reads as no session. A person without a session gets a random name,
 * kept in a new cookie so it stays theirs.
 */
export function session({ secure }: { secure: 'auto' | boolean }) {
  return (req: Request, res: Response, next: NextFunction) => {
    const raw = req.signedCookies?.[SESSION_COOKIE]
    const parsed = typeof raw === 'string' ? parseName(raw) : undefined
    if (parsed && 'name' in parsed) {
      res.locals.name = parsed.name
      res.locals.hasSession = true
    } else {
      res.locals.name = randomName()
      res.locals.hasSession = false
      setSession(res, res.locals.name, secure === 'auto' ? req.secure : secure)
    }
    next()
  }
}

export function setSession(res: Response, name: string, secure: boolean): void {
  res.locals.name = name
  // Replace the random-name cookie this response may already carry: two
  // Set-Cookie headers for one cookie leave clients guessing which wins.
  const previous = res.getHeader('Set-Cookie')
  if (previous !== undefined) {
    const others = [previous].flat().map(String).filter((cookie) => !cookie.startsWith(`${SESSION_COOKIE}=`))
    if (others.length > 0) res.setHeader('Set-Cookie', others)
    else res.removeHeader('Set-Cookie')
  }
  res.cookie(SESSION_COOKIE, name, { signed: true, httpOnly: true, sameSite: 'lax', secure, maxAge: ONE_YEAR_MS, path: '/' })
}

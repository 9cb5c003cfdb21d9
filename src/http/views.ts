import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import ejs from 'ejs'
import { LRUCache } from 'lru-cache'
import { REACTIONS } from '../chat/chat.js'
import type { Message } from '../chat/messages-projection.js'
import { personTag } from './session.js'

export const VIEWS_DIR = fileURLToPath(new URL('../../views/', import.meta.url))

const WEEKDAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday']
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December']

/*
 * Times are UTC (a fragment is rendered once for every reader), so they are
 * cut from the ISO string instead of going through Intl: three Intl formats
 * per message were a quarter of a chat page's CPU time.
 */
const shortTime = (date: Date) => date.toISOString().slice(11, 16)
const day = (date: Date) => `${date.getUTCDate()} ${MONTHS[date.getUTCMonth()]!.slice(0, 3)}`
/** Today's date in UTC. */
const today = () => new Date().toISOString().slice(0, 10)

/** Shared by every template, so a message looks the same in the page, a POST reply and the live stream. */
export const helpers = {
  /** "Friday, 27 November 2026 at 10:30:09 UTC", for the hover title. */
  fullTime: (date: Date) =>
    `${WEEKDAYS[date.getUTCDay()]}, ${date.getUTCDate()} ${MONTHS[date.getUTCMonth()]} ${date.getUTCFullYear()} at ${date.toISOString().slice(11, 19)} UTC`,
  isoTime: (date: Date) => date.toISOString(),
  personTag,
  REACTIONS,
  /** A CSS string literal that cannot end its rule or its <style> element, for names in attribute selectors. */
  cssString: (text: string) => `"${[...text].map((c) => (/[A-Za-z0-9_ -]/.test(c) ? c : `\\${c.codePointAt(0)!.toString(16)} `)).join('')}"`,
  /** "14:05" today, "3 Mar 14:05" before: for pages, rendered for one reader at one moment. */
  when: (date: Date) => (date.toISOString().slice(0, 10) === today() ? shortTime(date) : `${day(date)} ${shortTime(date)}`),
  /**
   * "3 Mar 14:05", whatever the day: a message's fragment must not depend on
   * when it is rendered. A frame sent at 23:59 as "23:59" would stay so on
   * every open page, while a page loaded after midnight says "3 Mar 23:59".
   */
  stamp: (date: Date) => `${day(date)} ${shortTime(date)}`,
}

const MESSAGE_FILE = VIEWS_DIR + 'partials/_message.ejs'

/**
 * Express view engine: pages are wrapped in layout.ejs; anything under
 * partials/ renders alone (htmx replies, SSE fragments).
 */
export function renderView(path: string, options: object, callback: (error: Error | null, html?: string) => void): void {
  const locals = { ...helpers, ...options }
  // Includes are written from the views root ('/partials/…'): EJS resolves
  // a relative include with a filesystem check on every render.
  const fileOptions = { cache: true, filename: path, root: VIEWS_DIR }
  ejs.renderFile(path, locals, fileOptions, (error, body) => {
    if (error) return callback(error)
    if (path.includes('/partials/')) return callback(null, body)
    ejs.renderFile(VIEWS_DIR + 'layout.ejs', { ...locals, body }, { cache: true, root: VIEWS_DIR }, callback)
  })
}

/** A partial compiled once, for HTML that is rendered outside a request (live stream frames). */
export function partialRenderer<Locals extends object>(name: string): (locals: Locals) => string {
  const filename = `${VIEWS_DIR}partials/${name}.ejs`
  const template = ejs.compile(readFileSync(filename, 'utf8'), { filename, root: VIEWS_DIR })
  return (locals) => template({ ...helpers, ...locals }).trim()
}

/** Text made safe for HTML, for the few strings built outside a template. */
export function escapeHtml(text: string): string {
  return ejs.escapeXML(text)
}

/** `past`: the message as time travel shows it, read-only (its reactions shown, no forms). `keep: false`: render (or reuse) without keeping it. */
export type MessageRenderer = (message: Message, mode?: 'live' | 'past', keep?: boolean) => string

/**
 * One node's message HTML: the partial compiled once, and each message
 * rendered once per state for pages, "load older" and command replies,
 * which reuse it (the live stream renders each change once, and keeps
 * nothing). A message changes (edits, reactions, a retraction), so the
 * key is the chat version of its latest change. Nothing else may change it
 * (not the day: see `stamp`). Templates reach it as `messageHtml`.
 */
export function messageRenderer(max = 20_000): MessageRenderer {
  // rmWhitespace: a message goes out in every frame and page; the template's indentation need not.
  // Its locals are known, so they are declared at the top instead of reached through `with`, which
  // V8 cannot optimise: 32–40 µs a render instead of 79–103 µs, once per post on the live path.
  const template = ejs.compile(readFileSync(MESSAGE_FILE, 'utf8'), {
    filename: MESSAGE_FILE,
    root: VIEWS_DIR,
    rmWhitespace: true,
    _with: false,
    destructuredLocals: ['message', 'readOnly', ...Object.keys(helpers)],
  })
  const rendered = new LRUCache<string, string>({ max })
  return (message, mode = 'live', keep = true) => {
    const key = `${mode} ${message.chatId} ${message.messageId} ${message.changedVersion}`
    let html = rendered.get(key)
    if (html === undefined) {
      html = template({ ...helpers, message, readOnly: mode === 'past' }).trim()
      if (keep) rendered.set(key, html)
    }
    return html
  }
}

import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import ejs from 'ejs'
import type { Message } from '../chat/messages-projection.js'

export const VIEWS_DIR = fileURLToPath(new URL('../../views/', import.meta.url))

const TIME = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', timeZone: 'UTC' })
const FULL = new Intl.DateTimeFormat('en-GB', { dateStyle: 'full', timeStyle: 'long', timeZone: 'UTC' })
const DAY = new Intl.DateTimeFormat('en-GB', { day: 'numeric', month: 'short', timeZone: 'UTC' })

/** Shared by every template, so a message looks the same in the page, a POST reply and the live stream. */
export const helpers = {
  /**
   * The message partial, compiled once. Pages loop over this rather than
   * `include`: each EJS include resolves its path with a filesystem check, and
   * 50 of them were 20% of a chat page's CPU time.
   */
  messageHtml: (message: Message): string => (messageTemplate ??= compileMessage())({ ...helpers, message }),
  shortTime: (date: Date) => TIME.format(date),
  fullTime: (date: Date) => FULL.format(date),
  isoTime: (date: Date) => date.toISOString(),
  /** A CSS string literal that cannot end its rule or its <style> element, for names in attribute selectors. */
  cssString: (text: string) => `"${[...text].map((c) => (/[A-Za-z0-9_ -]/.test(c) ? c : `\\${c.codePointAt(0)!.toString(16)} `)).join('')}"`,
  /** "14:05" today, "3 Mar 14:05" before. */
  when: (date: Date, now = new Date()) =>
    date.toISOString().slice(0, 10) === now.toISOString().slice(0, 10) ? TIME.format(date) : `${DAY.format(date)} ${TIME.format(date)}`,
}

const MESSAGE_FILE = VIEWS_DIR + 'partials/_message.ejs'
let messageTemplate: ejs.TemplateFunction | undefined
const compileMessage = () => ejs.compile(readFileSync(MESSAGE_FILE, 'utf8'), { filename: MESSAGE_FILE })

/**
 * Express view engine: pages are wrapped in layout.ejs; anything under
 * partials/ renders alone (htmx replies, SSE fragments).
 */
export function renderView(path: string, options: object, callback: (error: Error | null, html?: string) => void): void {
  const locals = { ...helpers, ...options }
  const fileOptions = { cache: true, filename: path }
  ejs.renderFile(path, locals, fileOptions, (error, body) => {
    if (error) return callback(error)
    if (path.includes('/partials/')) return callback(null, body)
    ejs.renderFile(VIEWS_DIR + 'layout.ejs', { ...locals, body }, { cache: true }, callback)
  })
}

/** A partial compiled once, for HTML that is rendered outside a request (live stream frames). */
export function partialRenderer<Locals extends object>(name: string): (locals: Locals) => string {
  const filename = `${VIEWS_DIR}partials/${name}.ejs`
  const template = ejs.compile(readFileSync(filename, 'utf8'), { filename })
  return (locals) => template({ ...helpers, ...locals }).trim()
}

/** The message partial compiled once; the hub renders each message with it exactly once per node. */
export function messageRenderer(): (message: Message) => string {
  return (message) => helpers.messageHtml(message).trim()
}

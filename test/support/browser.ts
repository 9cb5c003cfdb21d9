import { mkdir } from 'node:fs/promises'
import { afterEach } from 'node:test'
import { join, resolve } from 'node:path'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import { CHROMIUM_PATH } from './chromium-path.js'

export { CHROMIUM_PATH }

/** Where tests leave screenshots (git-ignored). */
export const RESULTS_DIR = resolve(import.meta.dirname, '..', '..', 'test-results')

/** Debian's Chromium, headless, with everything that phones home switched off. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
}

/** What went wrong on a page: console errors, uncaught exceptions and CSP violations, as readable lines. */
export interface PageProblems {
  readonly list: string[]
}

/**
 * Opens a page that records its console errors, page errors and CSP
 * violations. CSP violations are seen through the `securitypolicyviolation`
 * DOM event, exposed to the test by an init script (test code, not the app's).
 */
export async function openPage(context: BrowserContext): Promise<{ page: Page; problems: string[] }> {
  const page = await context.newPage()
  const problems: string[] = []
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') problems.push(`console ${message.type()}: ${message.text()}`)
  })
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`))
  await page.exposeFunction('__reportCspViolation', (text: string) => problems.push(`CSP violation: ${text}`))
  // A string, not a function: it runs in the page, and tsconfig has no DOM types.
  await page.addInitScript(`document.addEventListener('securitypolicyviolation', (event) => {
    window.__reportCspViolation(event.violatedDirective + ' blocked ' + (event.blockedURI || 'inline') + ' (' + event.sourceFile + ':' + event.lineNumber + ')')
  })`)
  return { page, problems }
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await mkdir(RESULTS_DIR, { recursive: true })
  await page.screenshot({ path: join(RESULTS_DIR, `${name}.png`) })
}

export interface ChatPage {
  page: Page
  /** Console errors and warnings, page errors and CSP violations seen so far. */
  problems: string[]
}

/**
 * A person arriving the way people do: the home page, their name and the
 * room in the form, "Join the room". Resolves once the page's stream is live.
 */
export async function joinChat(context: BrowserContext, baseUrl: string, name: string, chatId: string): Promise<ChatPage> {
  const { page, problems } = await openPage(context)
  await page.goto(`${baseUrl}/`)
  await page.fill('#name', name)
  await page.fill('#chatId', chatId)
  await page.click('form.join button[type=submit]')
  await page.waitForURL(`${baseUrl}/chats/${chatId}`)
  await waitUntilLive(page)
  return { page, problems }
}

/** The page's stream has said it is live (its first frame arrived). */
export async function waitUntilLive(page: Page): Promise<void> {
  await page.locator('#connection[data-state="live"]').waitFor({ state: 'attached' })
}

/**
 * Types into the composer the way a person does and presses Enter; resolves
 * once the POST's answer replaced the composer (fresh, or with an error), so
 * the next keystrokes land in the new one. The answer and the message's
 * arrival over SSE race: wait for messages separately.
 */
export async function send(page: Page, text: string): Promise<void> {
  const composer = await page.locator('#content').elementHandle()
  const lines = text.split('\n')
  for (const [index, line] of lines.entries()) {
    if (index > 0) await page.keyboard.press('Shift+Enter')
    await page.keyboard.type(line)
  }
  await page.keyboard.press('Enter')
  await composer!.waitForElementState('hidden')
}

/** The DOM ids of every message element on the page, in document order. */
export function messageIds(page: Page): Promise<string[]> {
  return page.locator('.message').evaluateAll((elements) => elements.map((element) => element.id))
}

export async function waitForMessage(page: Page, chatId: string, version: number): Promise<void> {
  await page.locator(`#message-${chatId}-${version}`).waitFor({ state: 'attached' })
}

/**
 * A `newContext()` for one test file: every context opened during a test is
 * closed after it, so each test's pages (and the node's subscribers) are its own.
 */
export function contextsPerTest(browser: () => Browser): (options?: Parameters<Browser['newContext']>[0]) => Promise<BrowserContext> {
  let contexts: BrowserContext[] = []
  afterEach(async () => {
    await Promise.all(contexts.map((context) => context.close()))
    contexts = []
  })
  return async (options = {}) => {
    const context = await browser().newContext({ viewport: { width: 1000, height: 760 }, ...options })
    context.setDefaultTimeout(10_000)
    contexts.push(context)
    return context
  }
}

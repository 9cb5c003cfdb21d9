import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { Browser, Page } from 'playwright-core'
import { contextsPerTest, joinChat, launchChromium, screenshot, waitForMessage, waitUntilLive, type ChatPage } from '../support/browser.js'
import { freshDatabase, type TestDatabase } from '../support/database.js'
import { startTestNode, type TestNode } from '../support/node.js'

/*
 * Who is here and who is typing, in real Chromium, two people in their own
 * browser profiles on two app nodes sharing one PostgreSQL. The pages run no
 * script of their own: the list arrives as frames of the stream the page
 * already holds and replaces #people by id; the typing hint is an hx-post.
 */

let database: TestDatabase
let a: TestNode
let b: TestNode
let browser: Browser

before(async () => {
  database = await freshDatabase()
  ;[a, b, browser] = await Promise.all([startTestNode({ databaseUrl: database.url }), startTestNode({ databaseUrl: database.url }), launchChromium()])
})
after(async () => {
  await browser?.close()
  await Promise.all([a?.stop(), b?.stop()])
  await database?.drop()
})
const newContext = contextsPerTest(() => browser)

interface Person extends ChatPage {
  /** Every answer to a typing hint, by status: a 429 would also be a console error. */
  hints: number[]
  /** The composer (commandId) each hint named: a hint from a composer already sent is ignored. */
  hintComposers: (string | null)[]
}

/** A person in their own browser profile on a chat page of `node`. */
async function person(node: TestNode, name: string, chatId: string): Promise<Person> {
  const joined = await joinChat(await newContext(), node.url, name, chatId)
  return watchHints(joined)
}

function watchHints(chat: ChatPage): Person {
  const hints: number[] = []
  const hintComposers: (string | null)[] = []
  chat.page.on('response', (response) => {
    if (!response.url().endsWith('/typing')) return
    hints.push(response.status())
    hintComposers.push(new URLSearchParams(response.request().postData() ?? '').get('commandId'))
  })
  return { ...chat, hints, hintComposers }
}

function report(what: string, ms: number): void {
  console.log(`[presence] ${what}: ${Math.round(ms)} ms`)
}

/** The names the page's "Here:" line shows, in order. */
async function hereNames(page: Page): Promise<string[]> {
  const text = (await page.locator('#people .here').innerText()).replace(/\s+/g, ' ').trim()
  const list = text.replace(/^Here now: /, '').replace(/^Here: /, '').replace(/(^| and )\d+ (others?|readers?)$/, '')
  if (/Nobody is here/.test(list)) return []
  return list.split(', ').filter(Boolean)
}

async function typingLine(page: Page): Promise<string> {
  return (await page.locator('#people .typing').innerText()).trim()
}

/** Polls the page until `check` holds; answers how long it took. */
async function until(page: Page, check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const started = performance.now()
  while (!(await check())) {
    if (performance.now() - started > timeoutMs) {
      await screenshot(page, `presence-${what.replace(/\W+/g, '-')}`)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: here ${JSON.stringify(await hereNames(page))}, typing "${await typingLine(page)}"`)
    }
    await page.waitForTimeout(50)
  }
  return performance.now() - started
}

const showsNames = (page: Page, names: string[]) => async () => JSON.stringify(await hereNames(page)) === JSON.stringify(names)
const showsTyping = (page: Page, line: string) => async () => (await typingLine(page)) === line

function assertNoProblems(...people: Person[]): void {
  assert.deepEqual(people.flatMap((p) => p.problems), [], 'no console errors, page errors or CSP violations')
  for (const p of people) assert.ok(p.hints.every((status) => status === 204), `every typing hint answered 204: ${JSON.stringify(p.hints)}`)
}

describe('who is here and who is typing, in the browser', () => {
  test('two people on two nodes see each other within 2 s; a second tab adds no name; closing both tabs removes the name within 5 s', async () => {
    const ada = await person(a, 'Ada', 'tea-room')
    await until(ada.page, showsNames(ada.page, ['Ada']), 2_000, 'Ada to see herself')
    const bob = await person(b, 'Bob', 'tea-room')
    const bobLive = performance.now()
    await until(ada.page, showsNames(ada.page, ['Ada', 'Bob']), 2_000, "Bob's name on Ada's page (node A)")
    report("browser: Bob's page live on node B → his name on Ada's page on node A", performance.now() - bobLive)
    await until(bob.page, showsNames(bob.page, ['Ada', 'Bob']), 2_000, "both names on Bob's page (node B)")

    // Bob opens the chat in a second tab of the same browser (same cookie), on the other node.
    const second = watchHints(await joinChat(bob.page.context(), a.url, 'Bob', 'tea-room'))
    await waitUntilLive(second.page)
    await until(second.page, showsNames(second.page, ['Ada', 'Bob']), 2_000, "both names on Bob's second tab")
    await ada.page.waitForTimeout(1_500)
    assert.deepEqual(await hereNames(ada.page), ['Ada', 'Bob'], 'a second tab of the same person adds no name')

    await second.page.close()
    await ada.page.waitForTimeout(3_500)
    assert.deepEqual(await hereNames(ada.page), ['Ada', 'Bob'], 'one tab still open: still here')
    const closed = performance.now()
    await bob.page.close()
    const gone = await until(ada.page, showsNames(ada.page, ['Ada']), 5_000, "Bob's name to go from Ada's page")
    report("browser: Bob's last tab closed → his name gone from Ada's page", gone)
    assert.ok(performance.now() - closed < 5_000)
    assertNoProblems(ada, bob, second)
  })

  test('"Bob is typing…" shows on the other node\'s page while he types, goes when he sends, and 5 s after he stops', async () => {
    const ada = await person(a, 'Ada', 'typing-room')
    const bob = await person(b, 'Bob', 'typing-room')
    await until(ada.page, showsNames(ada.page, ['Ada', 'Bob']), 2_000, 'Ada to see Bob')
    await until(bob.page, showsNames(bob.page, ['Ada', 'Bob']), 2_000, 'Bob to see Ada')

    // Bob types the way people do: a keystroke every 150 ms for about 3 s, so the composer sends a couple of hints.
    await bob.page.locator('#content').click()
    const started = performance.now()
    const typed = bob.page.keyboard.type('I think the kettle is on', { delay: 130 })
    const shown = await until(ada.page, showsTyping(ada.page, 'Bob is typing…'), 2_000, '"Bob is typing…" on Ada\'s page')
    report('browser: Bob starts typing on node B → "Bob is typing…" on Ada\'s page on node A', shown)
    await typed
    assert.ok(performance.now() - started > 2_500, 'premise: Bob typed for longer than the 2 s throttle')
    // Bob's page is not told that he is typing: not even as hidden text.
    assert.equal(await bob.page.locator('#people .typing').textContent(), '', 'his own page\'s list leaves him out of the typing line')
    assert.ok(bob.hints.length >= 2 && bob.hints.length <= 3, `the throttle sent a hint at most every 2 s (${bob.hints.length} hints)`)
    const composerId = await bob.page.inputValue('#composer [name=commandId]')
    assert.ok(bob.hintComposers.every((id) => id === composerId), `every hint names the composer it came from (${composerId}): ${JSON.stringify(bob.hintComposers)}`)

    const sending = performance.now()
    await bob.page.keyboard.press('Enter')
    await waitForMessage(ada.page, 'typing-room', 1)
    const cleared = await until(ada.page, showsTyping(ada.page, ''), 2_000, 'the typing line to go when Bob sent')
    report('browser: Bob sends → message on Ada\'s page, then the typing line gone', performance.now() - sending)
    assert.ok(cleared + (performance.now() - sending) < 5_000)
    // It stays gone: no late hint from the old composer brings it back.
    await ada.page.waitForTimeout(2_500)
    assert.equal(await typingLine(ada.page), '')

    // Ada types without sending: Bob sees it, and it goes about 5 s after her last keystroke.
    await ada.page.locator('#content').click()
    await ada.page.keyboard.type('hmm, let me', { delay: 60 })
    const lastKey = performance.now()
    await until(bob.page, showsTyping(bob.page, 'Ada is typing…'), 2_000, '"Ada is typing…" on Bob\'s page')
    const expired = await until(bob.page, showsTyping(bob.page, ''), 8_000, 'the typing line to expire')
    const sinceLastKey = performance.now() - lastKey
    report('browser: Ada\'s last keystroke → her typing line gone on Bob\'s page', sinceLastKey)
    assert.ok(sinceLastKey >= 4_000, `it lasted about 5 s (${Math.round(sinceLastKey)} ms, ${Math.round(expired)} ms after it showed)`)
    assert.deepEqual(await hereNames(bob.page), ['Ada', 'Bob'], 'Ada is still here')
    assert.equal(await ada.page.inputValue('#content'), 'hmm, let me', 'her unsent text is untouched')
    await screenshot(bob.page, 'presence-typing')
    assertNoProblems(ada, bob)
  })
})

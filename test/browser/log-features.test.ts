import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import request from 'supertest'
import { SESSION_COOKIE } from '../../src/http/session.js'
import { contextsPerTest, joinChat, launchChromium, openPage, screenshot, send, waitForMessage, waitUntilLive, type ChatPage } from '../support/browser.js'
import { startTestNode, waitForProjection, type TestNode } from '../support/node.js'

/*
 * What only a log can do, in real Chromium on a real node (issue 12): the
 * search box on the home page and on a chat page, its results, a result's
 * link into the chat as it was when the message was sent (time travel, with
 * its banner), "back to live", and the "New" divider after a break. No
 * custom JavaScript: htmx only, under the strict CSP, and the same flows
 * with JavaScript switched off.
 */

let node: TestNode
let browser: Browser

before(async () => {
  ;[node, browser] = await Promise.all([startTestNode(), launchChromium()])
})
after(async () => {
  await browser?.close()
  await node?.close()
})
const newContext = contextsPerTest(() => browser)

function assertNoProblems(...pages: { problems: string[] }[]): void {
  assert.deepEqual(pages.flatMap((p) => p.problems), [], 'no console errors, page errors or CSP violations')
}

async function cookieOf(context: BrowserContext): Promise<string> {
  const cookie = (await context.cookies()).find((c) => c.name === SESSION_COOKIE)
  assert.ok(cookie, 'the browser holds a session')
  return `${cookie.name}=${cookie.value}`
}

/** Someone else, over HTTP: a session of their own. */
async function someone(name: string) {
  const res = await request(node.url).post('/session').type('form').send({ name }).expect(303)
  const cookie = ([res.headers['set-cookie'] ?? []].flat() as string[]).find((line) => line.startsWith(`${SESSION_COOKIE}=`))!.split(';')[0]!
  return asCookie(cookie)
}

function asCookie(cookie: string) {
  const post = async (path: string, body: object) => {
    const res = await request(node.url).post(path).set('cookie', cookie).send({ commandId: randomUUID(), ...body })
    assert.ok(res.status === 200 || res.status === 201, `${path}: ${res.status} ${res.text}`)
    return res.body.version as number
  }
  return {
    send: (chatId: string, content: string) => post(`/chats/${chatId}/messages`, { content }),
    edit: (chatId: string, messageId: number, content: string) => post(`/chats/${chatId}/messages/${messageId}/edits`, { content }),
  }
}

/** Polls the search JSON until the projection has the word (the search projection runs a moment after the commit). */
async function untilSearchable(q: string, count = 1): Promise<void> {
  for (const deadline = Date.now() + 5_000; ; ) {
    const res = await request(node.url).get('/search').query({ q }).set('accept', 'application/json').expect(200)
    if (res.body.results.length >= count) return
    if (Date.now() > deadline) assert.fail(`"${q}" was not searchable within 5 s`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

/** Types into a page's search box and submits it (Enter), as a person does; resolves on the results page. */
async function searchFrom(page: Page, box: string, q: string): Promise<void> {
  await page.locator(`${box} input[name=q]`).fill(q)
  await Promise.all([page.waitForURL((url) => url.pathname === '/search' && url.searchParams.get('q') === q), page.locator(`${box} input[name=q]`).press('Enter')])
  await page.locator('main.home h1').waitFor()
}

async function results(page: Page): Promise<{ href: string; chat: string; sender: string; snippet: string; marked: string[] }[]> {
  return page.locator('.result').evaluateAll((items) =>
    items.map((item) => ({
      href: item.querySelector('a')!.getAttribute('href')!,
      chat: item.querySelector('a')!.textContent!.trim(),
      sender: item.querySelector('.sender')!.textContent!.trim(),
      snippet: item.querySelector('.snippet')!.textContent!,
      marked: [...item.querySelectorAll('.snippet mark')].map((mark) => mark.textContent!),
    })),
  )
}

/** What a time-travel page shows: banner, messages, and that it cannot be written in. */
async function assertTimeTravel(page: Page, chatId: string, at: number, contents: Record<number, string>): Promise<void> {
  const banner = page.locator('p.banner')
  await banner.waitFor({ state: 'visible' })
  assert.match(await banner.innerText(), new RegExp(`#${chatId} as of .*version ${at} of \\d+.*back to live`))
  assert.equal(await page.locator('#composer').count(), 0, 'no composer')
  assert.equal(await page.locator('[hx-sse\\:connect]').count(), 0, 'no live stream')
  const shown = await page.locator('.message').evaluateAll((elements) => elements.map((element) => [element.id, element.querySelector('.content')?.textContent ?? '']))
  assert.deepEqual(
    shown,
    Object.entries(contents).map(([id, content]) => [`message-${chatId}-${id}`, content]),
  )
  assert.equal(await page.locator('.message form, .message button, .message .own-actions').count(), 0, 'nothing to react, edit or retract with in the past')
}

describe('search, time travel and back to live, with JavaScript', () => {
  test('search from the home page and from the chat page; a result opens the chat as of that message; "back to live" returns', async () => {
    const chatId = 'garden'
    const ada = await joinChat(await newContext({ colorScheme: 'light' }), node.url, 'Ada', chatId)
    const adaApi = asCookie(await cookieOf(ada.page.context()))
    await ada.page.locator('#content').click()
    await send(ada.page, 'the roses need water')
    await waitForMessage(ada.page, chatId, 1)
    await send(ada.page, 'tomatoes are ripe <b>today</b>')
    await waitForMessage(ada.page, chatId, 2)
    const bob = await someone('Bob')
    await bob.send(chatId, 'marigolds everywhere')
    await adaApi.edit(chatId, 1, 'the roses need rain')
    await bob.send('other-garden', 'tomatoes elsewhere too')
    await waitForMessage(ada.page, chatId, 3)
    await ada.page.locator(`#message-${chatId}-1 .content`).filter({ hasText: /^the roses need rain$/ }).waitFor()
    await untilSearchable('tomatoes', 2)
    await untilSearchable('rain')

    // The chat page's box searches this chat only.
    await searchFrom(ada.page, '.chat-header .search-box', 'tomatoes')
    assert.equal(new URL(ada.page.url()).searchParams.get('chat'), chatId)
    const here = await results(ada.page)
    assert.deepEqual(here.map((r) => [r.chat, r.sender, r.marked]), [[`#${chatId}`, 'Ada', ['tomatoes']]])
    assert.equal(here[0]!.snippet, 'tomatoes are ripe <b>today</b>', 'what was typed, as text')
    assert.equal(await ada.page.locator('.snippet b').count(), 0, 'never as markup')
    await screenshot(ada.page, 'search-results')

    // The home page's box searches every room (the person's or not: search is over what people can see).
    await ada.page.goto(`${node.url}/`)
    await searchFrom(ada.page, 'main.home > .search-box', 'tomatoes')
    assert.deepEqual((await results(ada.page)).map((r) => r.chat).sort(), ['#garden', '#other-garden'])
    await searchFrom(ada.page, 'main.home .search-box', 'water')
    assert.deepEqual(await results(ada.page), [], 'an edit took the old word out')
    assert.match(await ada.page.locator('main.home h2').first().innerText(), /^Nothing found/)
    await searchFrom(ada.page, 'main.home .search-box', 'roses')
    const [roses] = await results(ada.page)
    assert.deepEqual(roses?.marked, ['roses'])
    assert.equal(roses?.href, `/chats/${chatId}?at=1#message-${chatId}-1`)

    // The result opens the chat as it was when the message was sent: its first words, before the edit, and nothing later.
    await Promise.all([ada.page.waitForURL(`${node.url}/chats/${chatId}?at=1#message-${chatId}-1`), ada.page.locator('.result a').first().click()])
    await assertTimeTravel(ada.page, chatId, 1, { 1: 'the roses need water' })
    await screenshot(ada.page, 'time-travel')
    // A message's time links to the chat as of that message: from here, to version 1 again.
    assert.equal(await ada.page.locator(`#message-${chatId}-1 a.when`).getAttribute('href'), `/chats/${chatId}?at=1#message-${chatId}-1`)

    await Promise.all([ada.page.waitForURL(`${node.url}/chats/${chatId}`), ada.page.getByRole('link', { name: 'back to live' }).click()])
    await waitUntilLive(ada.page)
    assert.equal(await ada.page.locator('#composer').count(), 1)
    assert.equal(await ada.page.locator(`#message-${chatId}-1 .content`).innerText(), 'the roses need rain')
    assert.equal(await ada.page.locator('p.banner').count(), 0)
    // Live again: a new message arrives over the stream.
    const live = await bob.send(chatId, 'welcome back')
    await waitForMessage(ada.page, chatId, live)
    assertNoProblems(ada)
  })

  test('older messages of the past load in place (htmx, under the CSP), still as they were', async () => {
    const chatId = 'long-garden'
    // 60 messages from three people (the rate limit is per person), then an edit of the first.
    const people = await Promise.all(['P0', 'P1', 'P2'].map(someone))
    for (let i = 1; i <= 60; i++) await people[i % 3]!.send(chatId, `line ${i}`)
    await people[1]!.edit(chatId, 1, 'line 1, edited')
    await waitForProjection(node, chatId, 61)
    const { page, problems } = await openPage(await newContext())
    await page.goto(`${node.url}/chats/${chatId}?at=60`)
    await page.locator('p.banner').waitFor()
    assert.equal(await page.locator('.message').count(), 50)
    await page.getByRole('link', { name: 'Load older messages' }).click()
    await page.locator(`#message-${chatId}-1`).waitFor({ state: 'attached' })
    assert.equal(await page.locator('.message').count(), 60)
    assert.equal(await page.locator(`#message-${chatId}-1 .content`).innerText(), 'line 1', 'as of version 60, before the edit')
    assert.equal(new URL(page.url()).pathname, `/chats/${chatId}`, 'swapped in place: the page did not change')
    assert.deepEqual(problems, [])
  })

  test('after a break, the home page counts what is new and the chat page marks where it begins', async () => {
    const chatId = 'after-a-break'
    const ada = await joinChat(await newContext(), node.url, 'Ada', chatId)
    await ada.page.locator('#content').click()
    await send(ada.page, 'back in a minute')
    await waitForMessage(ada.page, chatId, 1)
    // Ada leaves the room: her stream closes with the page.
    await ada.page.goto(`${node.url}/`)
    const bob = await someone('Bob')
    const first = await bob.send(chatId, 'you missed this')
    await bob.send(chatId, 'and this')
    await waitForProjection(node, chatId, first + 1)
    await ada.page.reload()
    const room = ada.page.locator('.rooms li').filter({ has: ada.page.locator(`a[href="/chats/${chatId}"]`) })
    assert.equal(await room.locator('.unread').innerText(), '2')
    assert.ok(await room.locator('.unread').isVisible())
    await Promise.all([ada.page.waitForURL(`${node.url}/chats/${chatId}`), room.locator('a').click()])
    await waitUntilLive(ada.page)
    const order = await ada.page.locator('.new-divider, .message').evaluateAll((elements) => elements.map((element) => (element.classList.contains('new-divider') ? 'new' : element.id)))
    assert.deepEqual(order, [`message-${chatId}-1`, 'new', `message-${chatId}-${first}`, `message-${chatId}-${first + 1}`])
    assert.ok(await ada.page.locator('.new-divider').isVisible())
    await ada.page.goto(`${node.url}/`)
    assert.equal(await ada.page.locator('.rooms li').filter({ has: ada.page.locator(`a[href="/chats/${chatId}"]`) }).locator('.unread').count(), 0, 'seen now')
    assertNoProblems(ada)
  })
})

describe('with JavaScript switched off', () => {
  test('the same flow: search box, results, the chat as of a message, and back to live', async () => {
    const chatId = 'no-script-garden'
    const bob = await someone('Bob')
    await bob.send(chatId, 'sunflowers grow tall')
    await bob.edit(chatId, 1, 'sunflowers grow very tall')
    await bob.send(chatId, 'and then some')
    await waitForProjection(node, chatId, 3)
    await untilSearchable('sunflowers')

    const context = await newContext({ javaScriptEnabled: false })
    const page: ChatPage = await openPage(context)
    await page.page.goto(`${node.url}/`)
    await searchFrom(page.page, 'main.home > .search-box', 'sunflowers')
    const [hit] = await results(page.page)
    assert.deepEqual(hit?.marked, ['sunflowers'])
    assert.equal(hit?.snippet, 'sunflowers grow very tall')
    await Promise.all([page.page.waitForURL(`${node.url}/chats/${chatId}?at=1#message-${chatId}-1`), page.page.locator('.result a').first().click()])
    await assertTimeTravel(page.page, chatId, 1, { 1: 'sunflowers grow tall' })
    await Promise.all([page.page.waitForURL(`${node.url}/chats/${chatId}`), page.page.getByRole('link', { name: 'back to live' }).click()])
    assert.equal(await page.page.locator('#composer').count(), 1)
    assert.deepEqual(await page.page.locator('.message .content').allInnerTexts(), ['sunflowers grow very tall', 'and then some'])

    // The chat page's box, within the room.
    await searchFrom(page.page, '.chat-header .search-box', 'then')
    assert.deepEqual((await results(page.page)).map((r) => r.href), [`/chats/${chatId}?at=3#message-${chatId}-3`])
    await Promise.all([page.page.waitForURL(`${node.url}/chats/${chatId}?at=3#message-${chatId}-3`), page.page.locator('.result a').first().click()])
    await assertTimeTravel(page.page, chatId, 3, { 1: 'sunflowers grow very tall', 3: 'and then some' })
    assertNoProblems(page)
  })
})

describe('on a phone', () => {
  for (const javaScriptEnabled of [true, false]) {
    test(`the chat page with its search box, the results, the chat as of a message and the home page fit 390 px without sideways scrolling (JavaScript ${javaScriptEnabled ? 'on' : 'off'})`, async () => {
      const chatId = `a-rather-long-room-name-${javaScriptEnabled ? 'js' : 'nojs'}`
      const bob = await someone('Bob')
      await bob.send(chatId, `a message with a long word: ${'tea'.repeat(30)} and pancakes`)
      await waitForProjection(node, chatId, 1)
      await untilSearchable(`pancakes`, javaScriptEnabled ? 1 : 2)
      const context = await newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 1, isMobile: true, hasTouch: true, javaScriptEnabled })
      const { page, problems } = await openPage(context)
      const overflow = async (what: string) => {
        const pixels = await page.evaluate('document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth')
        assert.equal(pixels, 0, `${what}: no sideways scrolling`)
      }
      await page.goto(`${node.url}/`)
      await page.goto(`${node.url}/chats/${chatId}`)
      if (javaScriptEnabled) await waitUntilLive(page)
      await overflow('chat')
      const box = await page.locator('.chat-header .search-box input[name=q]').boundingBox()
      assert.ok(box && box.width >= 100 && box.x + box.width <= 390, `the search box is on screen and usable: ${JSON.stringify(box)}`)
      await screenshot(page, `chat-phone-search-box-${javaScriptEnabled ? 'js' : 'nojs'}`)
      await searchFrom(page, '.chat-header .search-box', 'pancakes')
      await overflow('search results')
      await Promise.all([page.waitForURL(new RegExp(`/chats/${chatId}\\?at=1`)), page.locator('.result a').first().click()])
      await overflow('the chat as of a message')
      await page.goto(`${node.url}/`)
      await overflow('home')
      assert.deepEqual(problems, [])
    })
  }
})

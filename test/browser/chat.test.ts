import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { Browser } from 'playwright-core'
import request from 'supertest'
import { RATE_LIMIT } from '../../src/chat/chat.js'
import { HttpError } from '../../src/http/errors.js'
import { contextsPerTest, joinChat, launchChromium, messageIds, openPage, screenshot, send, waitForMessage, waitUntilLive, type ChatPage } from '../support/browser.js'
import { freshDatabase, type TestDatabase } from '../support/database.js'
import { startTestNode, waitForProjection, type TestNode } from '../support/node.js'

/*
 * The chat in real Chromium against a real app node and PostgreSQL. No custom
 * JavaScript runs in these pages: only htmx 4 and its shipped extensions.
 */

let database: TestDatabase
let node: TestNode
let browser: Browser

before(async () => {
  database = await freshDatabase()
  ;[node, browser] = await Promise.all([startTestNode({ databaseUrl: database.url }), launchChromium()])
})
after(async () => {
  await browser?.close()
  await node?.close()
  await database?.drop()
})
// Each test's pages go away with it, so the node's subscriber count is this test's alone.
const newContext = contextsPerTest(() => browser)

/** A person in their own browser profile (own cookie, so own name), on a chat page. */
async function person(name: string, chatId: string): Promise<ChatPage> {
  return joinChat(await newContext(), node.url, name, chatId)
}

const apiPost = (chatId: string, content: string, cookie?: string) => {
  const req = request(node.url).post(`/chats/${chatId}/messages`)
  if (cookie) req.set('Cookie', cookie)
  return req.send({ content }).expect(201).then((res) => res.body as { version: number })
}

function assertNoProblems(...pages: ChatPage[]): void {
  assert.deepEqual(pages.flatMap((p) => p.problems), [], 'no console errors, page errors or CSP violations')
}

describe('chatting in the browser', () => {
  test('two people in one chat: Enter from one appears on the other page, Shift+Enter keeps the line break, another chat gets nothing', async () => {
    const ada = await person('Ada', 'two-people')
    const bob = await person('Bob', 'two-people')
    const cy = await person('Cy', 'elsewhere')

    await ada.page.locator('#content').click()
    await send(ada.page, 'first line\nsecond line')
    await waitForMessage(bob.page, 'two-people', 1)

    const message = bob.page.locator('#message-two-people-1')
    assert.equal(await message.locator('.sender').innerText(), 'Ada')
    assert.equal(await message.locator('.content').innerText(), 'first line\nsecond line')
    // The sender sees it too, over the same stream, and the composer is ready for the next one.
    await waitForMessage(ada.page, 'two-people', 1)
    assert.equal(await ada.page.inputValue('#content'), '')
    assert.equal(await ada.page.evaluate('document.activeElement && document.activeElement.id'), 'content')

    // The other chat's page is live too, and gets only its own messages.
    await cy.page.locator('#content').click()
    await send(cy.page, 'anyone here?')
    await waitForMessage(cy.page, 'elsewhere', 1)
    await send(ada.page, 'still here')
    await waitForMessage(bob.page, 'two-people', 2)
    assert.deepEqual(await messageIds(cy.page), ['message-elsewhere-1'])
    assert.deepEqual(await messageIds(bob.page), ['message-two-people-1', 'message-two-people-2'])
    assertNoProblems(ada, bob, cy)
  })

  test('markup typed by a user shows as text and is not rendered', async () => {
    const ada = await person('Ada', 'markup')
    const bob = await person('Bob', 'markup')
    const typed = '<b>bold?</b> <img src=x alt=img> <script>document.title="owned"</script> & &amp;'
    await ada.page.locator('#content').click()
    await send(ada.page, typed)
    await waitForMessage(bob.page, 'markup', 1)
    const content = bob.page.locator('#message-markup-1 .content')
    assert.equal(await content.innerText(), typed)
    assert.equal(await content.locator('b, img, script').count(), 0)
    assert.notEqual(await bob.page.title(), 'owned')
    assertNoProblems(ada, bob)
  })

  test('a chosen name appears as the sender, and the sender sees their own messages told apart', async () => {
    // A name that would end the per-page <style> if it were not escaped for CSS.
    const adaName = 'Ada "</style><i>Lovelace'
    const ada = await person(adaName, 'names')
    const bob = await person('Bob', 'names')
    await ada.page.locator('#content').click()
    await send(ada.page, 'hello from Ada')
    await bob.page.locator('#content').click()
    await send(bob.page, 'hello from Bob')
    for (const page of [ada.page, bob.page]) {
      await waitForMessage(page, 'names', 2)
      assert.equal(await page.locator('#message-names-1 .sender').innerText(), adaName)
      assert.equal(await page.locator('i').count(), 0)
      assert.equal(await page.locator('#message-names-2 .sender').innerText(), 'Bob')
    }
    // Both arrived over SSE; the per-page rule keyed on data-sender still applies to them.
    const background = (page: ChatPage['page'], version: number) => page.locator(`#message-names-${version}`).evaluate((element) => element.ownerDocument.defaultView!.getComputedStyle(element).backgroundColor)
    assert.notEqual(await background(ada.page, 1), await background(ada.page, 2), 'on Ada page, her message looks different from Bob')
    assert.equal(await background(ada.page, 1), await background(bob.page, 2), 'each sees their own message the same way')
    assert.equal(await background(ada.page, 2), await background(bob.page, 1))
    assertNoProblems(ada, bob)
  })

  test('Enter during an IME composition does not send; the trigger filter runs under the strict CSP', async () => {
    const ada = await person('Ada', 'ime')
    const posts: string[] = []
    ada.page.on('request', (req) => {
      // Message posts only: filling the composer also sends a typing hint (POST …/typing), which sends nothing.
      if (req.method() === 'POST' && !req.url().endsWith('/typing')) posts.push(req.url())
    })
    await ada.page.fill('#content', 'にほんご')
    // What a browser sends while an IME is composing, and then the Enter that sends.
    const enter = (composing: boolean) =>
      ada.page.locator('#content').dispatchEvent('keydown', { key: 'Enter', code: 'Enter', isComposing: composing, keyCode: composing ? 229 : 13, bubbles: true, cancelable: true })
    await enter(true)
    await enter(true)
    assert.equal(await ada.page.inputValue('#content'), 'にほんご')
    await enter(false)
    await waitForMessage(ada.page, 'ime', 1)
    // Counted at the browser: the repeats would share a commandId, so the log alone could not tell.
    assert.deepEqual(posts, [`${node.url}/chats/ime/messages`], 'exactly one POST, from the Enter that was not composing')
    // The stream delivers at commit; the read model follows a moment later.
    await waitForProjection(node, 'ime', 1)
    const rows = await node.db.selectFrom('messages').select(['message_id', 'content']).where('chat_id', '=', 'ime').execute()
    assert.deepEqual(rows.map((row) => row.content), ['にほんご'], 'one message, sent by the Enter that was not composing')
    assertNoProblems(ada)
  })

  test('a rejected message (429) shows its error in the composer and keeps the typed text', async () => {
    const ada = await person('Ada', 'too-fast')
    const cookie = (await ada.page.context().cookies()).map((c) => `${c.name}=${c.value}`).join('; ')
    for (let i = 0; i < RATE_LIMIT; i++) await apiPost('too-fast', `burst ${i}`, cookie)
    await ada.page.locator('#content').click()
    await send(ada.page, 'one more\nwith two lines')
    const error = ada.page.locator('#composer-note.error')
    await error.waitFor()
    assert.match(await error.innerText(), /too fast|slow down|wait/i)
    assert.equal(await ada.page.inputValue('#content'), 'one more\nwith two lines')
    assert.equal(await ada.page.evaluate('document.activeElement && document.activeElement.id'), 'content')
    await screenshot(ada.page, 'composer-error')
    // A console error for the 429 response is Chromium's own network log line, not a page problem.
    assert.deepEqual(ada.problems.filter((line) => !/status of 429/.test(line)), [])
  })

  test('a 4,000-character Cyrillic message goes through; answers 413, 403 and 503 keep the composer and its text, with the reason', async () => {
    const ada = await person('Ada', 'any-answer')
    const handle = node.chats.handle.bind(node.chats)
    const cyrillic = 'Ж'.repeat(4000)
    await ada.page.locator('#content').fill(cyrillic)
    await ada.page.locator('#content').press('Enter')
    await waitForMessage(ada.page, 'any-answer', 1)
    assert.equal(await ada.page.locator('#message-any-answer-1 .content').innerText(), cyrillic, 'every message the rules allow fits, in any script')

    const refusals: { name: string; status: number; says: RegExp; provoke: () => Promise<void>; undo?: () => Promise<void> }[] = [
      // Far beyond any message the rules allow: the body limit answers before anything reads it.
      { name: 'a body too large', status: 413, says: /too large/, provoke: async () => {} },
      {
        // Chromium sets Sec-Fetch-Site itself, so a page cannot forge a cross-site post; the refusal is injected
        // where the server would raise it, and answered by the same error path (the HTTP tests post cross-site for real).
        name: 'a refusal (403)',
        status: 403,
        says: /another site/,
        provoke: async () => {
          node.chats.handle = () => Promise.reject(new HttpError(403, 'This request came from another site, so it was refused. Post from the Live Tea page itself.'))
        },
        undo: async () => {
          node.chats.handle = handle
        },
      },
      {
        name: 'the database being away',
        status: 503,
        says: /unreachable|nothing was saved/,
        // Fault injection at the write side: the server answers what it answers when its database cannot be reached.
        provoke: async () => {
          node.chats.handle = () => Promise.reject(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }))
        },
        undo: async () => {
          node.chats.handle = handle
        },
      },
    ]
    for (const { name, status, says, provoke, undo } of refusals) {
      const typed = status === 413 ? 'Щ'.repeat(60_000) : `kept through a ${status}\nsecond line`
      await provoke()
      await ada.page.locator('#content').fill(typed)
      const [answer] = await Promise.all([ada.page.waitForResponse((res) => res.request().method() === 'POST' && res.url().endsWith('/messages')), ada.page.locator('#content').press('Enter')])
      assert.equal(answer.status(), status, name)
      const note = ada.page.locator('#composer-note.error')
      await note.waitFor()
      assert.match(await note.innerText(), says, name)
      assert.equal(await ada.page.inputValue('#content'), typed, `${name}: the text is kept`)
      assert.equal(await ada.page.locator('#composer').count(), 1, `${name}: the composer is still there`)
      await undo?.()
    }
    // And the same composer sends once the cause is gone.
    await ada.page.locator('#content').fill('after all that')
    await ada.page.locator('#content').press('Enter')
    await waitForMessage(ada.page, 'any-answer', 2)
    assert.deepEqual(ada.problems.filter((line) => !/status of (413|403|503)/.test(line)), [])
  })

  test('"Load older" fetches the previous 50 in place, in order', async () => {
    for (let i = 1; i <= 60; i++) await apiPost('history', `message ${i}`)
    await waitForProjection(node, 'history', 60)
    const ada = await person('Ada', 'history')
    const ids = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `message-history-${from + i}`)
    assert.deepEqual(await messageIds(ada.page), ids(11, 60))
    await ada.page.getByRole('link', { name: 'Load older messages' }).click()
    await waitForMessage(ada.page, 'history', 1)
    assert.deepEqual(await messageIds(ada.page), ids(1, 60))
    assert.equal(await ada.page.getByRole('link', { name: 'Load older messages' }).count(), 0, 'nothing older than 1')
    assert.equal(new URL(ada.page.url()).pathname, '/chats/history')
    assertNoProblems(ada)
  })

  test('new messages stay in view at the bottom; a reader who scrolled up is not moved', async () => {
    for (let i = 1; i <= 40; i++) await apiPost('scrolling', `message ${i}\nwith a second line`)
    await waitForProjection(node, 'scrolling', 40)
    const ada = await person('Ada', 'scrolling')
    const inView = (version: number) =>
      ada.page.locator(`#message-scrolling-${version}`).evaluate((element) => {
        const box = element.getBoundingClientRect()
        const scroller = element.closest('.scroller')!.getBoundingClientRect()
        return box.top >= scroller.top && box.bottom <= scroller.bottom
      })
    assert.ok(await inView(40), 'the page opens at the newest message')
    await apiPost('scrolling', 'arrives at the bottom')
    await waitForMessage(ada.page, 'scrolling', 41)
    assert.ok(await inView(41), 'a new message is in view for a reader at the bottom')

    // column-reverse: scrollTop is 0 at the newest message and negative above it.
    const scrollTop = () => ada.page.locator('.scroller').evaluate((element) => element.scrollTop)
    await ada.page.locator('.scroller').hover()
    await ada.page.mouse.wheel(0, -600)
    for (let tries = 0; (await scrollTop()) > -300; tries++) {
      assert.ok(tries < 100, 'the wheel scrolled the messages up')
      await ada.page.waitForTimeout(20)
    }
    const reading = ada.page.locator('#message-scrolling-30')
    const before = await reading.evaluate((element) => element.getBoundingClientRect().top)
    await apiPost('scrolling', 'arrives while reading older ones')
    await waitForMessage(ada.page, 'scrolling', 42)
    const after = await reading.evaluate((element) => element.getBoundingClientRect().top)
    // Scroll anchoring may round to a fraction of a pixel; a yank would be a whole message height.
    assert.ok(Math.abs(after - before) < 1, `what the reader was looking at stayed put (moved ${after - before}px)`)
    assert.ok(!(await inView(42)))
    assertNoProblems(ada)
  })

  test('after the server ends the stream, the page reconnects and shows every message exactly once', async () => {
    const ada = await person('Ada', 'reconnect')
    const bob = await person('Bob', 'reconnect')
    await ada.page.locator('#content').click()
    await send(ada.page, 'before the drop')
    await waitForMessage(bob.page, 'reconnect', 1)

    // Streams end; messages keep coming while the pages reconnect.
    node.hub.endStreams()
    const posted = [1]
    for (let i = 0; i < 5; i++) posted.push((await apiPost('reconnect', `during the drop ${i}`)).version)
    await waitUntilLive(bob.page)
    await send(ada.page, 'after the drop')
    const last = 7
    await waitForMessage(bob.page, 'reconnect', last)
    await waitForMessage(ada.page, 'reconnect', last)
    const expected = Array.from({ length: last }, (_, i) => `message-reconnect-${i + 1}`)
    assert.deepEqual(await messageIds(bob.page), expected)
    assert.deepEqual(await messageIds(ada.page), expected)
    assertNoProblems(ada, bob)
  })

  test('a restarted server: the page shows "Reconnecting…" while it is down, then resumes without gaps or repeats', async () => {
    const port = Number(new URL(node.url).port)
    const ada = await person('Ada', 'restart')
    await ada.page.locator('#content').click()
    await send(ada.page, 'before the restart')
    await waitForMessage(ada.page, 'restart', 1)

    // Another node on the same database takes messages while this one is down.
    const other = await startTestNode({ databaseUrl: database.url })
    try {
      await node.stop()
      await ada.page.locator('#connection[data-state="reconnecting"]').waitFor()
      // The composer says why a post now gets no answer, and that the text stays.
      assert.ok(await ada.page.locator('#composer .offline-note').isVisible(), 'the composer says it is not connected')
      await screenshot(ada.page, 'chat-reconnecting')
      for (let i = 0; i < 3; i++) await request(other.url).post('/chats/restart/messages').send({ content: `while down ${i}` }).expect(201)
      // Down long enough for htmx's own backoff (1 s, 2 s, 4 s, 8 s, 16 s…) to reach gaps of 16 s.
      await new Promise((resolve) => setTimeout(resolve, 17_000))
      node = await startTestNode({ databaseUrl: database.url, port })
    } finally {
      await other.close()
    }
    // The page retries at most 4 s apart (with 30% jitter): back within seconds of the server, not at its next 16 s attempt.
    await ada.page.locator('#message-restart-4').waitFor({ state: 'attached', timeout: 8_000 })
    await waitUntilLive(ada.page)
    assert.equal(await ada.page.locator('#composer .offline-note').isVisible(), false, 'and stops saying so once live')
    assert.deepEqual(await messageIds(ada.page), [1, 2, 3, 4].map((v) => `message-restart-${v}`))
    // While the server is down the browser reports each failed attempt; those are the point of this test.
    assert.deepEqual(ada.problems.filter((line) => !/Failed to load resource|ERR_CONNECTION_REFUSED|status of 503|Failed to fetch/.test(line)), [])
  })
})

describe('in a hidden tab', () => {
  test('the stream pauses (no connection held) and catches up without gaps or repeats when the tab is shown', async () => {
    const ada = await person('Ada', 'hidden-tab')
    await apiPost('hidden-tab', 'while visible')
    await waitForMessage(ada.page, 'hidden-tab', 1)
    assert.equal(node.hub.subscriberCount, 1, 'premise: this page is the only subscriber')

    // What the browser does when the tab goes to the background (test code; the page runs none of its own).
    const setHidden = (hidden: boolean) =>
      ada.page.evaluate(`Object.defineProperty(document, 'hidden', { configurable: true, get: () => ${hidden} }); document.dispatchEvent(new Event('visibilitychange'))`)
    await setHidden(true)
    for (let tries = 0; node.hub.subscriberCount > 0; tries++) {
      assert.ok(tries < 200, 'the hidden tab let go of its stream')
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
    for (let i = 0; i < 3; i++) await apiPost('hidden-tab', `while hidden ${i}`)
    await setHidden(false)
    await waitForMessage(ada.page, 'hidden-tab', 4)
    await apiPost('hidden-tab', 'after coming back')
    await waitForMessage(ada.page, 'hidden-tab', 5)
    assert.deepEqual(await messageIds(ada.page), [1, 2, 3, 4, 5].map((v) => `message-hidden-tab-${v}`))
    assertNoProblems(ada)
  })
})

describe('with JavaScript switched off', () => {
  test('the same form posts, the server answers 303, the page shows the message, and others see it live', async () => {
    const bob = await person('Bob', 'no-script')
    const context = await newContext({ javaScriptEnabled: false })
    const { page, problems } = await openPage(context)
    await page.goto(`${node.url}/chats/no-script`)
    await page.fill('#content', 'sent without JavaScript')
    const [post] = await Promise.all([
      page.waitForResponse((response) => response.request().method() === 'POST'),
      page.click('#composer button[type=submit]'),
    ])
    assert.equal(post.status(), 303)
    assert.equal(post.headers().location, '/chats/no-script')
    await page.waitForURL(`${node.url}/chats/no-script`)
    assert.equal(await page.locator('#message-no-script-1 .content').innerText(), 'sent without JavaScript')
    await screenshot(page, 'chat-no-javascript')
    await waitForMessage(bob.page, 'no-script', 1)
    assert.equal(await bob.page.locator('#message-no-script-1 .content').innerText(), 'sent without JavaScript')
    assert.deepEqual(problems, [])
    assertNoProblems(bob)
  })
})

describe('the connection state', () => {
  test('a page that cannot connect at first (a full node) says "Connecting…", keeps trying, and goes live when there is room', async () => {
    const small = await startTestNode({ databaseUrl: database.url, maxSubscribers: 1 })
    try {
      const first = await joinChat(await newContext(), small.url, 'Ada', 'full-node')
      const { page, problems } = await openPage(await newContext())
      await page.goto(`${small.url}/chats/full-node`)
      await page.getByText('Connecting…').waitFor({ state: 'visible' })
      assert.ok(problems.some((line) => /status of 503/.test(line)), 'premise: the node refused the first attempt')
      assert.equal(await page.locator('#messages .error').count(), 0, 'the 503 is not swapped into the log')
      await first.page.close()
      await waitUntilLive(page)
      await request(small.url).post('/chats/full-node/messages').send({ content: 'you are in' }).expect(201)
      await waitForMessage(page, 'full-node', 1)
      assert.deepEqual(problems.filter((line) => !/status of 503/.test(line)), [])
    } finally {
      await small.close()
    }
  })

  test('a stream that goes quiet for longer than two heartbeats shows "Reconnecting…", and the next frame clears it', async () => {
    const ada = await person('Ada', 'quiet')
    assert.ok(await ada.page.getByText('Live', { exact: true }).isVisible())
    // The real threshold is 35 s (two 15 s heartbeats and some slack); shorten it for this page only. On the
    // root, not on the element: a heartbeat that replaces the element meanwhile must not bring back the 35 s.
    await ada.page.locator('html').evaluate((root) => root.style.setProperty('--stale-after', '100ms'))
    await ada.page.getByText('Reconnecting…').waitFor({ state: 'visible' })
    assert.ok(!(await ada.page.getByText('Live', { exact: true }).isVisible()))
    await ada.page.locator('html').evaluate((root) => root.style.removeProperty('--stale-after'))
    // The next heartbeat replaces the element, and with it the verdict (the hub's own beats, every slice of the period, run now instead of in 15 s).
    for (let slot = 0; slot < 15; slot++) node.hub['beat'](slot)
    await ada.page.getByText('Live', { exact: true }).waitFor({ state: 'visible' })
    assert.ok(!(await ada.page.getByText('Reconnecting…').isVisible()))
    assertNoProblems(ada)
  })
})

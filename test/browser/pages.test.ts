import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { Browser, Page } from 'playwright-core'
import request from 'supertest'
import { SESSION_COOKIE } from '../../src/http/session.js'
import { contextsPerTest, joinChat, launchChromium, messageIds, openPage, screenshot, send, waitForMessage } from '../support/browser.js'
import { startTestNode, waitForProjection, type TestNode } from '../support/node.js'

/* The home page, security headers, and how the pages look, in real Chromium on a real node. */

let node: TestNode
let browser: Browser

before(async () => {
  ;[node, browser] = await Promise.all([startTestNode(), launchChromium()])
})
after(async () => {
  await browser?.close()
  await node?.close()
})
// Each test's pages go away with it, so the node's subscriber count is this test's alone.
const newContext = contextsPerTest(() => browser)

const apiPost = (chatId: string, content: string) => request(node.url).post(`/chats/${chatId}/messages`).send({ content }).expect(201)

describe('the home page', () => {
  test('the form sets the name and lands in the room (303); the name is shown, and "Change" comes back with the room filled in', async () => {
    const { page, problems } = await openPage(await newContext())
    await page.goto(`${node.url}/`)
    assert.match(await page.inputValue('#name'), /^[a-z]+-[a-z]+-\d+$/, 'a stranger starts with a random name')
    await page.fill('#name', 'Grace')
    await page.fill('#chatId', 'Tea Time')
    const [posted] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'POST'), page.click('form.join button[type=submit]')])
    assert.equal(posted.status(), 303)
    assert.equal(posted.headers().location, '/chats/tea-time')
    await page.waitForURL(`${node.url}/chats/tea-time`)
    assert.equal(await page.locator('.whoami strong').innerText(), 'Grace')

    await page.getByRole('link', { name: 'Change' }).click()
    await page.waitForURL(`${node.url}/?chatId=tea-time#name`)
    assert.equal(await page.inputValue('#name'), 'Grace')
    assert.equal(await page.inputValue('#chatId'), 'tea-time')
    await page.fill('#name', 'Grace Hopper')
    await page.click('form.join button[type=submit]')
    await page.waitForURL(`${node.url}/chats/tea-time`)
    assert.equal(await page.locator('.whoami strong').innerText(), 'Grace Hopper')
    assert.deepEqual(problems, [])
  })

  test('an invalid room name is explained next to the field, with what was typed kept', async () => {
    const { page, problems } = await openPage(await newContext())
    await page.goto(`${node.url}/`)
    await page.fill('#name', 'Grace')
    await page.fill('#chatId', '!!!')
    await page.click('form.join button[type=submit]')
    await page.locator('#chat-error').waitFor()
    assert.equal(await page.inputValue('#chatId'), '!!!')
    assert.equal(await page.inputValue('#name'), 'Grace')
    // The 422 itself is logged by Chromium as a failed resource; nothing else may be.
    assert.deepEqual(problems.filter((line) => !/status of 422/.test(line)), [])
  })

  test('lists the rooms this person visited, the latest first, each a link into the room; not other people\'s', async () => {
    await apiPost('quiet-room', 'a while ago')
    await apiPost('busy-room', 'just now')
    await apiPost('someone-elses-room', 'not for you')
    await waitForProjection(node, 'busy-room', 1)
    const { page } = await openPage(await newContext())
    await page.goto(`${node.url}/chats/quiet-room`)
    await page.goto(`${node.url}/chats/busy-room`)
    await page.goto(`${node.url}/`)
    const rooms = await page.locator('.rooms a').allInnerTexts()
    assert.ok(rooms.indexOf('#busy-room') >= 0 && rooms.indexOf('#busy-room') < rooms.indexOf('#quiet-room'), rooms.join(', '))
    assert.ok(!rooms.includes('#someone-elses-room'), 'a room this person never visited is not listed')
    await page.getByRole('link', { name: '#busy-room' }).click()
    await page.waitForURL(`${node.url}/chats/busy-room`)
    assert.deepEqual(await messageIds(page), ['message-busy-room-1'])
  })
})

describe('security', () => {
  test('strict CSP with a fresh nonce per response, the usual headers, and an HttpOnly SameSite=Lax session cookie', async () => {
    const context = await newContext()
    const { page, problems } = await openPage(context)
    const nonces: string[] = []
    for (let i = 0; i < 2; i++) {
      const response = (await page.goto(`${node.url}/chats/headers`))!
      const headers = response.headers()
      const csp = headers['content-security-policy']!
      const scriptSrc = csp.split(';').find((directive) => directive.trim().startsWith('script-src'))!
      assert.match(scriptSrc, /^script-src 'nonce-[\w-]+'$/, scriptSrc)
      assert.doesNotMatch(csp, /unsafe-eval|unsafe-inline/)
      assert.match(csp, /object-src 'none'/)
      assert.match(csp, /frame-ancestors 'none'/)
      nonces.push(scriptSrc.match(/'nonce-([\w-]+)'/)![1]!)
      assert.equal(headers['x-content-type-options'], 'nosniff')
      assert.equal(headers['referrer-policy'], 'same-origin')
      assert.ok(headers['x-frame-options'])
      assert.equal(headers['x-powered-by'], undefined)
      // Every script and every htmx element carries this response's nonce.
      assert.equal(await page.locator(`script:not([nonce])`).count(), 0)
      // The message list hands its nonce down (hx-nonce:inherited) to the plain forms inside the fragments.
      const htmxNonces = await page
        .locator('[hx-nonce], [hx-nonce\\:inherited]')
        .evaluateAll((elements) => elements.map((element) => element.getAttribute('hx-nonce') ?? element.getAttribute('hx-nonce:inherited')))
      assert.ok(htmxNonces.length >= 2 && htmxNonces.every((nonce) => nonce === nonces.at(-1)), htmxNonces.join(', '))
    }
    assert.notEqual(nonces[0], nonces[1])
    // And it all works under that policy: a message goes out and comes back with no violation.
    await page.locator('#content').click()
    await send(page, 'under a strict policy')
    await waitForMessage(page, 'headers', 1)

    const cookie = (await context.cookies()).find((c) => c.name === SESSION_COOKIE)!
    assert.equal(cookie.httpOnly, true)
    assert.equal(cookie.sameSite, 'Lax')
    assert.equal(cookie.secure, false, 'plain http here; Secure behind TLS (TRUST_PROXY)')
    assert.deepEqual(problems, [])
  })

  test('the watcher behind "no problems" sees a CSP violation and an htmx element without the nonce', async () => {
    // Every browser test asserts an empty problem list; this shows that the list is not deaf.
    const { page, problems } = await openPage(await newContext())
    await page.goto(`${node.url}/chats/watcher`)
    await page.evaluate(`(() => {
      const script = document.createElement('script')
      script.textContent = 'document.title = "injected"'
      document.head.appendChild(script)
      const holder = document.createElement('div')
      holder.innerHTML = '<button hx-post="/chats/watcher/messages">injected</button>'
      document.body.appendChild(holder)
      htmx.process(holder)
    })()`)
    await page.getByRole('button', { name: 'injected' }).waitFor()
    for (let tries = 0; problems.length < 2; tries++) {
      assert.ok(tries < 100, `expected two problems, saw ${JSON.stringify(problems)}`)
      await page.waitForTimeout(20)
    }
    assert.ok(problems.some((line) => /^CSP violation: script-src/.test(line)), problems.join('\n'))
    assert.ok(problems.some((line) => /hx-csp\] blocked <button>/.test(line)), problems.join('\n'))
    assert.notEqual(await page.title(), 'injected')
    assert.equal(await page.getByRole('button', { name: 'injected' }).getAttribute('hx-post'), null, 'htmx stripped it')
  })

  test('a form on another site cannot post into a chat: 403, and nothing is appended', async () => {
    // localhost and 127.0.0.1 are different sites to the browser: the page below is "another site".
    const port = new URL(node.url).port
    const context = await newContext()
    await context.route(`http://localhost:${port}/elsewhere`, (route) =>
      route.fulfill({
        contentType: 'text/html',
        body: `<form method="post" action="${node.url}/chats/target/messages"><input name="content" value="forged"><button>Win a prize</button></form>`,
      }),
    )
    const page = await context.newPage()
    await page.goto(`http://localhost:${port}/elsewhere`)
    const [posted] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'POST'), page.click('button')])
    assert.equal(posted.status(), 403)
    assert.equal((await posted.request().allHeaders()).origin, `http://localhost:${port}`, 'premise: the post comes from another origin')
    const rows = await node.db.selectFrom('messages').select('message_id').where('chat_id', '=', 'target').execute()
    assert.equal(rows.length, 0)
    const events = await node.db.selectFrom('events').select('stream_id').where('stream_id', '=', 'chat-target').execute()
    assert.equal(events.length, 0)
  })
})

describe('how it looks', () => {
  const VIEWPORTS = {
    phone: { width: 390, height: 844 },
    wide: { width: 1440, height: 900 },
  }

  async function assertFits(page: Page, what: string): Promise<void> {
    const overflow = await page.evaluate('document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth')
    assert.equal(overflow, 0, `${what}: no sideways scrolling`)
  }

  for (const [name, viewport] of Object.entries(VIEWPORTS)) {
    test(`home and chat fit a ${name} screen (${viewport.width}×${viewport.height}), composer and newest message in view`, async () => {
      const chatId = `looks-${name}`
      await apiPost(chatId, 'Morning! Who is bringing the biscuits today?')
      await apiPost(chatId, 'Not me, I brought them yesterday.\nAnd the day before.\nAnd the day before that.')
      await apiPost(chatId, `Here is the link: https://example.com/${'a-very-long-path-segment-'.repeat(6)}end`)
      await waitForProjection(node, chatId, 3)

      const context = await newContext({ viewport, deviceScaleFactor: 1, isMobile: name === 'phone', hasTouch: name === 'phone' })
      const you = await joinChat(context, node.url, 'Ada', chatId)
      await you.page.locator('#content').click()
      await send(you.page, 'I will bring scones.')
      await waitForMessage(you.page, chatId, 4)
      await assertFits(you.page, 'chat')
      const visible = (selector: string) =>
        you.page.locator(selector).evaluate((element, height) => {
          const box = element.getBoundingClientRect()
          return box.top >= 0 && box.bottom <= height && box.width > 0
        }, viewport.height)
      assert.ok(await visible('#composer textarea'), 'the composer is on screen')
      assert.ok(await visible(`#message-${chatId}-4`), 'the newest message is on screen')
      await you.page.waitForTimeout(250) // let the arrival animation finish for the picture
      await screenshot(you.page, `chat-${name}`)

      await you.page.goto(`${node.url}/`)
      await assertFits(you.page, 'home')
      await screenshot(you.page, `home-${name}`)
      assert.deepEqual(you.problems, [])
    })
  }

  test('dark mode follows the system', async () => {
    await apiPost('looks-dark', 'Is it late already?')
    await waitForProjection(node, 'looks-dark', 1)
    const context = await newContext({ colorScheme: 'dark', viewport: VIEWPORTS.phone })
    const you = await joinChat(context, node.url, 'Ada', 'looks-dark')
    await you.page.locator('#content').click()
    await send(you.page, 'Time for one more cup.')
    await waitForMessage(you.page, 'looks-dark', 2)
    await you.page.waitForTimeout(250) // let the arrival animation finish for the picture
    const background = await you.page.evaluate('getComputedStyle(document.body).backgroundColor')
    assert.notEqual(background, 'rgb(246, 243, 238)')
    await screenshot(you.page, 'chat-phone-dark')
    assert.deepEqual(you.problems, [])
  })
})

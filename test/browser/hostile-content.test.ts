import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { Browser, Page } from 'playwright-core'
import request from 'supertest'
import { MAX_CONTENT_LENGTH } from '../../src/chat/chat.js'
import { contextsPerTest, launchChromium, openPage, screenshot } from '../support/browser.js'
import { startTestNode, waitForProjection, type TestNode } from '../support/node.js'

/* Messages built to draw where they should not, in real Chromium on a real node. */

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

type Box = { x: number; y: number; width: number; height: number }

/** The pixels of a region of the page, as a PNG (equal pixels give equal bytes). */
function pixels(page: Page, clip: Box): Promise<Buffer> {
  return page.screenshot({ clip, animations: 'disabled' })
}

describe('a message of stacked combining marks', () => {
  test(`${MAX_CONTENT_LENGTH} combining marks draw inside their own bubble, not over the messages around it`, async () => {
    const chatId = 'zalgo'
    const post = (content: string) => request(node.url).post(`/chats/${chatId}/messages`).send({ content }).expect(201)
    await post('an ordinary message before')
    // Half the marks stack upwards on one letter, half downwards on another: 4,000 characters in all.
    const half = MAX_CONTENT_LENGTH / 2 - 1
    const { body } = await post(`a${'\u0301'.repeat(half)}b${'\u0316'.repeat(half)}`)
    await post('an ordinary message after')
    await waitForProjection(node, chatId, body.version + 1)

    const { page, problems } = await openPage(await newContext())
    await page.goto(`${node.url}/chats/${chatId}`)
    // Let the page settle first: the reader's own arrival in "who is here" changes the header's height.
    await page.locator('#people .here').filter({ hasNotText: 'Nobody' }).waitFor()
    await page.locator('#connection[data-state="live"]').waitFor()
    const bubble = (await page.locator(`#message-${chatId}-${body.version}`).boundingBox())!
    const scroller = (await page.locator('.scroller').boundingBox())!
    assert.ok(bubble.y - scroller.y > 100, 'room above the bubble for marks to (not) show in')
    const above: Box = { x: scroller.x, y: scroller.y, width: scroller.width, height: bubble.y - scroller.y }
    const below: Box = { x: scroller.x, y: bubble.y + bubble.height, width: scroller.width, height: scroller.y + scroller.height - (bubble.y + bubble.height) }

    await screenshot(page, 'zalgo-message')
    // The same page with the message's text hidden: whatever differs outside the bubble was drawn by that text.
    const content = page.locator(`#message-${chatId}-${body.version} .content`)
    const visibility = (value: string) => content.evaluate((element, value) => ((element as unknown as { style: { visibility: string } }).style.visibility = value), value)
    // Something else may still move the page between two pictures (a late "who is here" frame on a
    // busy machine): a difference counts only if it is there every time; marks drawn outside always are.
    let differs = { above: false, below: false }
    for (let attempt = 0; attempt < 3; attempt++) {
      await visibility('visible')
      const withMarks = [await pixels(page, above), await pixels(page, below)]
      await visibility('hidden')
      const withoutMarks = [await pixels(page, above), await pixels(page, below)]
      differs = { above: !withMarks[0]!.equals(withoutMarks[0]!), below: !withMarks[1]!.equals(withoutMarks[1]!) }
      if (!differs.above && !differs.below) break
    }
    assert.ok(!differs.above, 'the marks draw above their bubble, over other messages')
    assert.ok(!differs.below, 'the marks draw below their bubble, over other messages')
    assert.deepEqual(problems, [])
  })
})

describe('right-to-left text', () => {
  test('a Hebrew or Arabic line reads right to left, its "!" on the left; an English line beside it reads left to right', async () => {
    const chatId = 'bidi'
    const { body } = await request(node.url).post(`/chats/${chatId}/messages`).send({ content: 'שלום עולם!\nhello world!' }).expect(201)
    await waitForProjection(node, chatId, body.version)
    const { page, problems } = await openPage(await newContext())
    await page.goto(`${node.url}/chats/${chatId}`)
    const content = page.locator(`#message-${chatId}-${body.version} .content`)
    await content.waitFor()
    // Where each line's first and last characters are drawn.
    const [hebrewFirst, hebrewBang, englishFirst, englishBang] = (await page.evaluate(`(() => {
      const text = document.querySelector('#message-${chatId}-${body.version} .content').firstChild
      const source = text.textContent
      const second = source.indexOf('\\n') + 1
      return [0, second - 2, second, source.length - 1].map((offset) => {
        const range = document.createRange()
        range.setStart(text, offset)
        range.setEnd(text, offset + 1)
        return range.getBoundingClientRect().x
      })
    })()`)) as number[]
    const edges = { hebrewFirst: hebrewFirst!, hebrewBang: hebrewBang!, englishFirst: englishFirst!, englishBang: englishBang! }
    assert.ok(edges.hebrewBang < edges.hebrewFirst, `the Hebrew line's "!" is left of its first letter: ${JSON.stringify(edges)}`)
    assert.ok(edges.englishBang > edges.englishFirst, `the English line's "!" is right of its first letter: ${JSON.stringify(edges)}`)
    await screenshot(page, 'bidi-message')
    assert.deepEqual(problems, [])
  })
})

import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { Browser, Page, Request } from 'playwright-core'
import { streamIdOf } from '../../src/chat/chat-commands.js'
import { contextsPerTest, joinChat, launchChromium, openPage, send, waitForMessage, type ChatPage } from '../support/browser.js'
import { freshDatabase, type TestDatabase } from '../support/database.js'
import { startTestNode, waitForProjection, type TestNode } from '../support/node.js'

/*
 * Edits, retractions and reactions in real Chromium against a real app node
 * and PostgreSQL: two people, each in their own browser profile, watching
 * the same chat. No custom JavaScript runs in these pages: only htmx 4 and
 * its shipped extensions; the message fragments are plain forms and links
 * that htmx takes over through the page's own container.
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

/** A person in their own browser profile (own cookie, so own person id and name), on a chat page, in light mode. */
async function person(name: string, chatId: string): Promise<ChatPage> {
  return joinChat(await newContext({ colorScheme: 'light' }), node.url, name, chatId)
}

function assertNoProblems(...pages: ChatPage[]): void {
  assert.deepEqual(pages.flatMap((p) => p.problems), [], 'no console errors, page errors or CSP violations')
}

const messageSelector = (chatId: string, messageId: number) => `#message-${chatId}-${messageId}`

/**
 * Sends through the composer as a person does (Enter) and waits for the message to come back over the
 * stream, and to be in the read model: the stream delivers at commit, a moment before the projector
 * has the row, and GET …/edit read in that moment answers 404 (a person is not that quick; a test is).
 */
async function say(who: ChatPage, chatId: string, text: string, messageId: number): Promise<void> {
  await who.page.locator('#content').click()
  await send(who.page, text)
  await waitForMessage(who.page, chatId, messageId)
  await waitForProjection(node, chatId, messageId)
}

/** Waits until the message shows exactly this text (it may arrive as a frame or as the answer to a command). */
async function waitForContent(page: Page, chatId: string, messageId: number, text: string): Promise<void> {
  await page.locator(`${messageSelector(chatId, messageId)} .content`).filter({ hasText: new RegExp(`^${escapeRegExp(text)}$`) }).waitFor({ state: 'attached' })
}

const editFormSelector = (chatId: string, messageId: number) => `form.editing#edit-${chatId}-${messageId}`

/** Clicks Edit on a message and waits for the edit form that takes its place (the message hides while the form follows it). */
async function startEditing(who: ChatPage, chatId: string, messageId: number) {
  await who.page.locator(`${messageSelector(chatId, messageId)} a.edit`).click()
  const form = who.page.locator(editFormSelector(chatId, messageId))
  await form.waitFor()
  return { form, textarea: form.locator('textarea') }
}

/** The id of the element that has focus, read by the test (the page runs no script of its own). */
const focusedId = (page: Page) => page.evaluate('document.activeElement && document.activeElement.id')

/** Every request a page makes from now on (method and path), for the test to look at. */
function recordRequests(page: Page): Array<{ method: string; path: string; query: string }> {
  const seen: Array<{ method: string; path: string; query: string }> = []
  page.on('request', (req: Request) => seen.push({ method: req.method(), path: new URL(req.url()).pathname, query: new URL(req.url()).search }))
  return seen
}

/** A reaction button of a message, found by its emoji. */
const reactionButton = (page: Page, chatId: string, messageId: number, emoji: string) =>
  page.locator(`${messageSelector(chatId, messageId)} .reaction`).filter({ has: page.locator(`input[name=emoji][value="${emoji}"]`) }).locator('button')

/** Waits until the message's reaction shows `count` (0: no count at all); the button's label says "<emoji> <count>". */
async function waitForReactionCount(page: Page, chatId: string, messageId: number, emoji: string, count: number): Promise<void> {
  await page.locator(`${messageSelector(chatId, messageId)} .reaction button[aria-label="${emoji} ${count}"]`).waitFor({ state: 'attached' })
}

const computedStyle = (page: Page, selector: string, property: string): Promise<string> =>
  page.locator(selector).evaluate((element, name) => element.ownerDocument.defaultView!.getComputedStyle(element).getPropertyValue(name), property)

/** Every message element in #messages, in document order, as [id, HTML]: as the server sent it, whitespace between tags normalised. */
async function messagesHtml(page: Page): Promise<Array<[string, string]>> {
  const pairs = await page.locator('#messages > *').evaluateAll((elements) => elements.map((element) => [element.id, element.outerHTML] as [string, string]))
  return pairs.map(([id, html]) => [id, normalizeHtml(html)])
}

/** The HTML of one message, as messagesHtml has it. */
async function messageHtml(page: Page, chatId: string, messageId: number): Promise<string | undefined> {
  return (await messagesHtml(page)).find(([id]) => id === `message-${chatId}-${messageId}`)?.[1]
}

/** Whitespace between tags normalised, and htmx's own marker on elements it took over (data-htmx-powered) left out. */
function normalizeHtml(html: string): string {
  return html
    .replace(/ data-htmx-powered="true"/g, '')
    .replace(/>\s+</g, '><')
    .replace(/\s+/g, ' ')
    .trim()
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

describe('editing a message', () => {
  test('the author edits in place (Edit, type, Enter); both windows show the new text and "edited", and the history lists both versions oldest first', async () => {
    const ada = await person('Ada', 'edit-live')
    const bob = await person('Bob', 'edit-live')
    await say(ada, 'edit-live', 'teh kettle is on', 1)
    await waitForMessage(bob.page, 'edit-live', 1)

    const { form, textarea } = await startEditing(ada, 'edit-live', 1)
    assert.equal(await textarea.inputValue(), 'teh kettle is on', 'the form starts from the text as it is')
    assert.equal(await focusedId(ada.page), 'edit-content-edit-live-1', 'the textarea has the focus: typing goes straight into it')
    assert.equal(await ada.page.locator('#messages > *:visible').count(), 1, 'the form took the message’s place: no second copy shows')
    // Typed as a person types: the focus is already there.
    await ada.page.keyboard.press('ControlOrMeta+A')
    await ada.page.keyboard.type('the kettle is on')
    await lookAt(ada.page, 'changes-edit-in-progress')
    await ada.page.keyboard.press('Enter')
    await form.waitFor({ state: 'detached' })

    for (const { page } of [ada, bob]) {
      await waitForContent(page, 'edit-live', 1, 'the kettle is on')
      const edited = page.locator(`${messageSelector('edit-live', 1)} a.edited`)
      await edited.waitFor()
      assert.equal(await edited.innerText(), 'edited')
    }
    assert.equal(await ada.page.locator('#messages > *').count(), 1, 'still one message, edited in place')
    assert.equal(await ada.page.locator('form.editing').count(), 0)

    // "edited" is a plain link to the history page, opened as a page (not swapped into the log).
    await bob.page.locator(`${messageSelector('edit-live', 1)} a.edited`).click()
    await bob.page.waitForURL(`${node.url}/chats/edit-live/messages/1/history`)
    const versions = bob.page.locator('.history > li')
    assert.deepEqual(await versions.locator('.content').allInnerTexts(), ['teh kettle is on', 'the kettle is on'], 'oldest first')
    assert.deepEqual(await versions.locator('.sender').allInnerTexts(), ['Sent', 'Edit 1'])
    assert.equal(await versions.locator('time').count(), 2, 'each version with its time')
    await lookAt(bob.page, 'changes-history')
    assertNoProblems(ada, bob)
  })

  test('in the edit form, Escape and Cancel put the message back unchanged without posting, and Shift+Enter adds a line', async () => {
    const ada = await person('Ada', 'edit-keys')
    const bob = await person('Bob', 'edit-keys')
    await say(ada, 'edit-keys', 'as it was', 1)
    const original = await messageHtml(ada.page, 'edit-keys', 1)
    const requests = recordRequests(ada.page)

    // Escape: the message as it is now comes back (a GET), nothing is posted.
    const escaping = await startEditing(ada, 'edit-keys', 1)
    await escaping.textarea.fill('something else')
    await ada.page.keyboard.press('Escape')
    await escaping.form.waitFor({ state: 'detached' })
    await waitForContent(ada.page, 'edit-keys', 1, 'as it was')
    assert.equal(await messageHtml(ada.page, 'edit-keys', 1), original, 'Escape restored the message exactly')

    // Cancel: the same.
    const cancelling = await startEditing(ada, 'edit-keys', 1)
    await cancelling.textarea.fill('not this either')
    await cancelling.form.getByRole('link', { name: 'Cancel' }).click()
    await cancelling.form.waitFor({ state: 'detached' })
    await waitForContent(ada.page, 'edit-keys', 1, 'as it was')
    assert.equal(await messageHtml(ada.page, 'edit-keys', 1), original, 'Cancel restored the message exactly')
    assert.equal(new URL(ada.page.url()).pathname, '/chats/edit-keys', 'Cancel stayed on the page')
    assert.deepEqual(requests.filter((r) => r.method !== 'GET'), [], 'neither Escape nor Cancel posted anything')
    assert.deepEqual(
      requests.filter((r) => r.path.startsWith('/chats/edit-keys/messages/')).map((r) => r.path),
      ['/chats/edit-keys/messages/1/edit', '/chats/edit-keys/messages/1', '/chats/edit-keys/messages/1/edit', '/chats/edit-keys/messages/1'],
      'the form, then the message as it is now, each time',
    )
    // A draft thrown away stays in the browser: not in an address, where server and proxy logs would keep it.
    assert.deepEqual(requests.filter((r) => r.path.startsWith('/chats/edit-keys/messages/') && r.query !== ''), [], 'no request carried the draft')
    assert.equal(await node.db.selectFrom('events').select('stream_version').where('stream_id', '=', streamIdOf('edit-keys')).execute().then((rows) => rows.length), 1, 'the log holds the message alone')

    // Shift+Enter: a new line in the text, not a save; Enter then saves both lines.
    const { form, textarea } = await startEditing(ada, 'edit-keys', 1)
    await textarea.fill('')
    await ada.page.keyboard.type('first line')
    await ada.page.keyboard.press('Shift+Enter')
    await ada.page.keyboard.type('second line')
    assert.equal(await textarea.inputValue(), 'first line\nsecond line')
    assert.equal(requests.filter((r) => r.method === 'POST').length, 0, 'Shift+Enter did not save')
    await ada.page.keyboard.press('Enter')
    await form.waitFor({ state: 'detached' })
    for (const { page } of [ada, bob]) {
      await waitForContent(page, 'edit-keys', 1, 'first line\nsecond line')
      assert.equal(await page.locator(`${messageSelector('edit-keys', 1)} .content`).innerText(), 'first line\nsecond line')
    }
    assertNoProblems(ada, bob)
  })

  test('an empty edit is refused in place: the form stays with the text as typed and says why', async () => {
    const ada = await person('Ada', 'edit-empty')
    const bob = await person('Bob', 'edit-empty')
    await say(ada, 'edit-empty', 'keep me', 1)
    await waitForMessage(bob.page, 'edit-empty', 1)
    const requests = recordRequests(ada.page)

    // Nothing at all: the browser's own check (the textarea is required) stops it before any request.
    const { form, textarea } = await startEditing(ada, 'edit-empty', 1)
    await textarea.fill('')
    await ada.page.keyboard.press('Enter')
    await ada.page.waitForTimeout(300)
    assert.ok(await form.isVisible(), 'the form is still there')
    assert.equal(requests.filter((r) => r.method === 'POST').length, 0, 'an empty textarea is not posted')

    // Only spaces: the server's rule (trimmed, 1..4000) answers 422 with the form, its error and the text kept.
    await textarea.fill('   ')
    await ada.page.keyboard.press('Enter')
    const error = ada.page.locator(`${editFormSelector('edit-empty', 1)} .error`)
    await error.waitFor()
    assert.match(await error.innerText(), /empty|1|character|say something/i)
    const refused = ada.page.locator(`${editFormSelector('edit-empty', 1)} textarea`)
    assert.equal(await refused.inputValue(), '   ', 'the text as typed is kept')
    assert.equal(await refused.getAttribute('aria-invalid'), 'true')
    await lookAt(ada.page, 'changes-edit-error')
    assert.equal(await ada.page.locator('#messages > *:visible').count(), 1)

    // The other window never saw a change, and Escape from the refused form still restores the message.
    assert.equal(await bob.page.locator(`${messageSelector('edit-empty', 1)} .content`).innerText(), 'keep me')
    await refused.click()
    await ada.page.keyboard.press('Escape')
    // The message was there all along, hidden behind the form: what Escape changes is that the form goes.
    await ada.page.locator('form.editing').waitFor({ state: 'detached' })
    await waitForContent(ada.page, 'edit-empty', 1, 'keep me')
    assert.ok(await ada.page.locator(`${messageSelector('edit-empty', 1)}`).isVisible(), 'the message shows again')
    // The 422 itself is logged by Chromium as a failed resource; nothing else may be.
    assert.deepEqual(ada.problems.filter((line) => !/status of 422/.test(line)), [])
    assertNoProblems(bob)
  })
})

describe('an edit in progress', () => {
  test(
    'is not lost when someone else reacts to the message meanwhile',
    async () => {
      const ada = await person('Ada', 'edit-meanwhile')
      const bob = await person('Bob', 'edit-meanwhile')
      await say(ada, 'edit-meanwhile', 'first draft', 1)
      await waitForMessage(bob.page, 'edit-meanwhile', 1)
      const { textarea } = await startEditing(ada, 'edit-meanwhile', 1)
      await textarea.fill('half-typed second dra')

      await reactionButton(bob.page, 'edit-meanwhile', 1, '👍').click()
      await waitForReactionCount(bob.page, 'edit-meanwhile', 1, '👍', 1)
      await waitForProjection(node, 'edit-meanwhile', 2)
      await ada.page.waitForTimeout(500)
      assert.equal(await ada.page.locator('form.editing textarea').count(), 1, 'Ada is still editing')
      assert.equal(await ada.page.locator('form.editing textarea').inputValue(), 'half-typed second dra', 'with what she typed')
      assertNoProblems(ada, bob)
    },
  )
})

describe('reacting to a message', () => {
  test('a reaction shows its count in both windows, is marked as the reactor’s own only on their page, and a second click takes it back', async () => {
    const ada = await person('Ada', 'reactions')
    const bob = await person('Bob', 'reactions')
    await say(ada, 'reactions', 'tea or coffee?', 1)
    await waitForMessage(bob.page, 'reactions', 1)

    await reactionButton(bob.page, 'reactions', 1, '👍').click()
    for (const { page } of [ada, bob]) {
      await waitForReactionCount(page, 'reactions', 1, '👍', 1)
      assert.equal(await reactionButton(page, 'reactions', 1, '👍').locator('.count').innerText(), '1')
    }
    const thumbs = `${messageSelector('reactions', 1)} .reaction.chosen button`
    assert.equal(await computedStyle(bob.page, thumbs, 'font-weight'), '700', 'Bob sees his own reaction marked')
    assert.equal(await computedStyle(ada.page, thumbs, 'font-weight'), '400', 'on Ada’s page it is not hers')
    assert.notEqual(await computedStyle(bob.page, thumbs, 'background-color'), await computedStyle(ada.page, thumbs, 'background-color'))
    assert.equal(await reactionButton(ada.page, 'reactions', 1, '👍').getAttribute('title'), 'Bob', 'who reacted is named')

    // Ada adds her own, another emoji: both counts show everywhere, each marked only for its reactor.
    await reactionButton(ada.page, 'reactions', 1, '🎉').click()
    for (const { page } of [ada, bob]) await waitForReactionCount(page, 'reactions', 1, '🎉', 1)
    const party = (page: Page) => reactionButton(page, 'reactions', 1, '🎉').evaluate((element) => element.ownerDocument.defaultView!.getComputedStyle(element).fontWeight)
    assert.equal(await party(ada.page), '700')
    assert.equal(await party(bob.page), '400')
    await lookAt(ada.page, 'changes-reactions')

    // Bob clicks 👍 again: his reaction is gone, in both windows.
    await reactionButton(bob.page, 'reactions', 1, '👍').click()
    for (const { page } of [ada, bob]) {
      await waitForReactionCount(page, 'reactions', 1, '👍', 0)
      assert.equal(await reactionButton(page, 'reactions', 1, '👍').locator('.count').count(), 0, 'no count is shown')
      await waitForReactionCount(page, 'reactions', 1, '🎉', 1)
    }
    assert.equal(new URL(bob.page.url()).pathname, '/chats/reactions', 'reacting stays on the page')
    assertNoProblems(ada, bob)
  })
})

describe('retracting a message', () => {
  test('the author confirms Retract; both windows show the "retracted" placeholder and the content is gone from both DOMs', async () => {
    const ada = await person('Ada', 'retract')
    const bob = await person('Bob', 'retract')
    await say(ada, 'retract', 'a secret I should not have shared', 1)
    await say(ada, 'retract', 'this one stays', 2)
    await reactionButton(bob.page, 'retract', 1, '😮').click()
    for (const { page } of [ada, bob]) await waitForReactionCount(page, 'retract', 1, '😮', 1)

    const message = ada.page.locator(messageSelector('retract', 1))
    await message.locator('details.retract summary').click()
    const confirm = message.locator('details.retract form button[type=submit]')
    await confirm.waitFor({ state: 'visible' })
    assert.match(await message.locator('details.retract form').innerText(), /Take this message back for everyone\?/)
    await lookAt(ada.page, 'changes-retract-confirm')
    await confirm.click()

    for (const { page } of [ada, bob]) {
      await page.locator(`${messageSelector('retract', 1)}.retracted`).waitFor()
      assert.match(await page.locator(`${messageSelector('retract', 1)} .content`).innerText(), /retracted/)
      assert.ok(!(await page.content()).includes('a secret I should not have shared'), 'the content is nowhere in the DOM')
      assert.equal(await page.locator(`${messageSelector('retract', 1)} .reaction, ${messageSelector('retract', 1)} .own-actions, ${messageSelector('retract', 1)} a.edited`).count(), 0, 'nothing to react to, edit or retract')
      assert.equal(await page.locator(`${messageSelector('retract', 2)} .content`).innerText(), 'this one stays')
    }
    await lookAt(bob.page, 'changes-retracted')
    assertNoProblems(ada, bob)
  })
})

describe('own actions', () => {
  test('only the author sees Edit and Retract on a message; everyone sees the reactions', async () => {
    const ada = await person('Ada', 'own-actions')
    const bob = await person('Bob', 'own-actions')
    await say(ada, 'own-actions', 'written by Ada', 1)
    await say(bob, 'own-actions', 'written by Bob', 2)
    await waitForMessage(ada.page, 'own-actions', 2)

    const visible = (page: Page, messageId: number, selector: string) => page.locator(`${messageSelector('own-actions', messageId)} ${selector}`).isVisible()
    for (const [viewer, mine, theirs] of [
      [ada, 1, 2],
      [bob, 2, 1],
    ] as const) {
      assert.ok(await visible(viewer.page, mine, 'a.edit'), 'Edit on my own message')
      assert.ok(await visible(viewer.page, mine, 'details.retract summary'), 'Retract on my own message')
      assert.ok(!(await visible(viewer.page, theirs, 'a.edit')), 'no Edit on someone else’s message')
      assert.ok(!(await visible(viewer.page, theirs, 'details.retract summary')), 'no Retract on someone else’s message')
      assert.equal(await viewer.page.locator(`${messageSelector('own-actions', theirs)} .reaction button`).count(), 6, 'six reactions on every message')
      assert.ok(await visible(viewer.page, theirs, '.reaction button >> nth=0'))
    }

    // Even a hand-typed URL will not give Bob the form for Ada's message.
    const response = await bob.page.request.get(`${node.url}/chats/own-actions/messages/1/edit`)
    assert.equal(response.status(), 403)
    assertNoProblems(ada, bob)
  })
})

describe('with JavaScript switched off', () => {
  test('react, edit (through the Edit page) and retract are plain forms: each answers 303 back to the chat, which shows the change', async () => {
    const bob = await person('Bob', 'no-script-changes')
    const context = await newContext({ javaScriptEnabled: false, colorScheme: 'light' })
    const { page, problems } = await openPage(context)
    // Joining without script: the home page's form, 303 to the chat.
    await page.goto(`${node.url}/`)
    await page.fill('#name', 'Ada')
    await page.fill('#chatId', 'no-script-changes')
    await page.click('form.join button[type=submit]')
    await page.waitForURL(`${node.url}/chats/no-script-changes`)
    await page.fill('#content', 'sent without script')
    await page.click('#composer button[type=submit]')
    await page.waitForURL(`${node.url}/chats/no-script-changes`)
    await waitForMessage(page, 'no-script-changes', 1)
    const back = `/chats/no-script-changes#message-no-script-changes-1`
    const postAnswer = () => page.waitForResponse((response) => response.request().method() === 'POST')

    // React.
    const [reacted] = await Promise.all([postAnswer(), reactionButton(page, 'no-script-changes', 1, '❤️').click()])
    assert.equal(reacted.status(), 303)
    assert.equal(reacted.headers().location, back)
    await page.waitForURL(`${node.url}${back}`)
    await waitForReactionCount(page, 'no-script-changes', 1, '❤️', 1)
    assert.equal(await computedStyle(page, `${messageSelector('no-script-changes', 1)} .reaction.chosen button`, 'font-weight'), '700', 'marked as mine without script too')
    await waitForReactionCount(bob.page, 'no-script-changes', 1, '❤️', 1)

    // Edit: the link opens the edit page; its form posts normally.
    await page.locator(`${messageSelector('no-script-changes', 1)} a.edit`).click()
    await page.waitForURL(`${node.url}/chats/no-script-changes/messages/1/edit`)
    assert.equal(await page.inputValue('textarea[name=content]'), 'sent without script')
    await lookAt(page, 'changes-edit-page-no-script')
    await page.fill('textarea[name=content]', 'edited without script')
    const [edited] = await Promise.all([postAnswer(), page.click('form.editing button[type=submit]')])
    assert.equal(edited.status(), 303)
    assert.equal(edited.headers().location, back)
    await page.waitForURL(`${node.url}${back}`)
    assert.equal(await page.locator(`${messageSelector('no-script-changes', 1)} .content`).innerText(), 'edited without script')
    assert.ok(await page.locator(`${messageSelector('no-script-changes', 1)} a.edited`).isVisible())
    await waitForContent(bob.page, 'no-script-changes', 1, 'edited without script')

    // Cancel on the edit page goes back to the chat, unchanged.
    await page.locator(`${messageSelector('no-script-changes', 1)} a.edit`).click()
    await page.waitForURL(`${node.url}/chats/no-script-changes/messages/1/edit`)
    await page.getByRole('link', { name: 'Cancel' }).click()
    await page.waitForURL(`${node.url}${back}`)
    assert.equal(await page.locator(`${messageSelector('no-script-changes', 1)} .content`).innerText(), 'edited without script')

    // Retract: the details open without script, and the confirm form posts.
    await page.locator(`${messageSelector('no-script-changes', 1)} details.retract summary`).click()
    const [retracted] = await Promise.all([postAnswer(), page.locator(`${messageSelector('no-script-changes', 1)} details.retract button[type=submit]`).click()])
    assert.equal(retracted.status(), 303)
    assert.equal(retracted.headers().location, back)
    await page.waitForURL(`${node.url}${back}`)
    assert.equal(await page.locator(`${messageSelector('no-script-changes', 1)}.retracted`).count(), 1)
    const html = await page.content()
    assert.ok(!html.includes('edited without script') && !html.includes('sent without script'), 'the content is gone')
    await bob.page.locator(`${messageSelector('no-script-changes', 1)}.retracted`).waitFor()
    assert.deepEqual(problems, [])
    assertNoProblems(bob)
  })
})

describe('convergence', () => {
  test('after a burst of sends, edits, reactions and retractions from both windows, each window shows every message exactly as a fresh page load does', async () => {
    const chatId = 'burst'
    const ada = await person('Ada', chatId)
    const bob = await person('Bob', chatId)
    await say(ada, chatId, 'ada one', 1)
    await say(bob, chatId, 'bob one', 2)
    await say(ada, chatId, 'ada two', 3)
    await say(bob, chatId, 'bob two', 4)
    for (const { page } of [ada, bob]) await waitForMessage(page, chatId, 4)

    const edit = async (who: ChatPage, messageId: number, text: string) => {
      const { form, textarea } = await startEditing(who, chatId, messageId)
      await textarea.fill(text)
      await textarea.press('Enter')
      await form.waitFor({ state: 'detached' })
    }
    /** One click, then wait for its answer to land: the next click is on the message's next state (a new commandId). */
    const react = async (who: ChatPage, messageId: number, emoji: string) => {
      const button = reactionButton(who.page, chatId, messageId, emoji)
      const commandId = await button.locator('xpath=..').locator('input[name=commandId]').inputValue()
      await button.click()
      await who.page.locator(`${messageSelector(chatId, messageId)} input[name=commandId][value="${commandId}"]`).waitFor({ state: 'detached' })
    }
    const retract = async (who: ChatPage, messageId: number) => {
      const message = who.page.locator(messageSelector(chatId, messageId))
      await message.locator('details.retract summary').click()
      await message.locator('details.retract button[type=submit]').click()
      await who.page.locator(`${messageSelector(chatId, messageId)}.retracted`).waitFor()
    }
    // Both people at once, each clicking in their own order. Nobody touches a message while its author
    // has it open in the edit form (a live frame for it would replace the form: see "an edit in progress").
    let changes = 4
    await Promise.all([
      (async () => {
        await edit(ada, 1, 'ada one, edited')
        await edit(ada, 3, 'ada two, edited')
        await edit(ada, 1, 'ada one, edited twice')
      })(),
      (async () => {
        await react(bob, 2, '👍')
        await edit(bob, 2, 'bob one, edited')
        await react(bob, 2, '🎉')
        await retract(bob, 4)
        await bob.page.locator('#content').click()
        await send(bob.page, 'bob three')
      })(),
    ])
    changes += 3 + 5
    await Promise.all([
      (async () => {
        await react(ada, 2, '😂')
        await react(ada, 2, '❤️')
        await react(ada, 2, '😂')
        await react(ada, 3, '🙏')
      })(),
      (async () => {
        await react(bob, 1, '👍')
        await react(bob, 3, '🎉')
        await react(bob, 1, '😮')
        await react(bob, 3, '🎉')
        await react(bob, 1, '🙏')
      })(),
    ])
    changes += 4 + 5
    await retract(ada, 1)
    changes += 1

    // Quiet: wait until the read model has every change, then compare with a fresh page load.
    const head = await node.db
      .selectFrom('events')
      .select((eb) => eb.fn.max('stream_version').as('head'))
      .where('stream_id', '=', streamIdOf(chatId))
      .executeTakeFirstOrThrow()
      .then((row) => Number(row.head))
    assert.equal(head, changes, 'every action is one change')
    await waitForProjection(node, chatId, head)
    const fresh = await openPage(await newContext({ javaScriptEnabled: false }))
    await fresh.page.goto(`${node.url}/chats/${chatId}`)
    const expected = await messagesHtml(fresh.page)
    assert.deepEqual(
      expected.slice(0, 4).map(([id]) => id),
      [1, 2, 3, 4].map((id) => `message-${chatId}-${id}`),
    )
    assert.equal(expected.length, 5, 'and "bob three"')

    for (const who of [ada, bob]) {
      // The last frames may still be on their way: give them a moment, then compare.
      const deadline = Date.now() + 5_000
      let actual = await messagesHtml(who.page)
      while (JSON.stringify(actual) !== JSON.stringify(expected) && Date.now() < deadline) {
        await who.page.waitForTimeout(50)
        actual = await messagesHtml(who.page)
      }
      assert.deepEqual(actual, expected, 'each message as the fresh page shows it')
    }
    await lookAt(ada.page, 'changes-burst')
    assertNoProblems(ada, bob, { page: fresh.page, problems: fresh.problems })
  })
})

/** A screenshot for a person to look at (light mode), in /tmp, not checked in. */
async function lookAt(page: Page, name: string): Promise<void> {
  // A message that was just replaced plays its short arrival animation: let it end first.
  await page.waitForTimeout(300)
  await page.screenshot({ path: `/tmp/${name}.png` })
}

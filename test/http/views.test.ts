/**
 * A message's fragment is rendered once and sent to every reader, now and
 * later: nothing in it may depend on the moment it is rendered.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import type { Message } from '../../src/chat/messages-projection.js'
import { messageRenderer } from '../../src/http/views.js'

function message(sentAt: Date): Message {
  return { chatId: 'tea', messageId: 7, eventId: randomUUID(), authorId: 'someone', sender: 'ada', content: 'hello', sentAt, editedAt: undefined, retractedAt: undefined, reactions: {}, changedVersion: 7 }
}

test('a message says its day and time whenever it was sent: a frame of 23:59 still matches a page loaded after midnight', () => {
  const now = new Date()
  const day = `${now.getUTCDate()} ${now.toLocaleString('en', { month: 'short', timeZone: 'UTC' })}`
  const html = messageRenderer()(message(now))
  // Rendered "today", it says the day all the same: the same bytes a page renders tomorrow.
  assert.match(html, new RegExp(`<time datetime="${now.toISOString()}"[^>]*>${day} ${now.toISOString().slice(11, 16)}</time>`))
  const yesterday = new Date(now.getTime() - 86_400_000)
  assert.match(messageRenderer()(message(yesterday)), new RegExp(`>${yesterday.getUTCDate()} \\w{3} ${yesterday.toISOString().slice(11, 16)}</time>`))
})

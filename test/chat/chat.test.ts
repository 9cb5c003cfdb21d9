import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { decide, evolve, initialState, RATE_LIMIT, RECENT_COMMANDS, type MessageSent, type SendMessage } from '../../src/chat/chat.js'
import { given } from '../support/given.js'

const T0 = new Date('2026-11-27T10:00:00.000Z')
const at = (seconds: number) => new Date(T0.getTime() + seconds * 1000)

function sendMessage(overrides: Partial<SendMessage['data']> = {}, now = T0): SendMessage {
  return { type: 'SendMessage', data: { chatId: 'tea', sender: 'alice', content: 'hello', commandId: 'cmd-1', ...overrides }, metadata: { now } }
}

function messageSent(overrides: Partial<MessageSent['data']> & { commandId?: string } = {}, now = T0): MessageSent {
  const { commandId = 'cmd-1', ...data } = overrides
  return { type: 'MessageSent', data: { chatId: 'tea', sender: 'alice', content: 'hello', sentAt: now.toISOString(), ...data }, metadata: { commandId } }
}

describe('SendMessage', () => {
  test('a message in a new chat is sent, stamped with the time on the command', () => {
    given([]).when(sendMessage()).then([messageSent()])
  })

  test('content is trimmed and its line endings become \\n', () => {
    given([]).when(sendMessage({ content: '  one\r\ntwo\rthree \n' })).then([messageSent({ content: 'one\ntwo\nthree' })])
  })

  test('control characters are dropped, newlines and tabs kept', () => {
    given([]).when(sendMessage({ content: 'a\u0000b\u0007c\td\ne' })).then([messageSent({ content: 'abc\td\ne' })])
  })

  test('empty or blank content is refused', () => {
    given([]).when(sendMessage({ content: '' })).thenRejects(422, /empty/)
    given([]).when(sendMessage({ content: ' \n\t ' })).thenRejects(422, /empty/)
  })

  test('content of 4000 characters is accepted, 4001 refused', () => {
    given([]).when(sendMessage({ content: 'x'.repeat(4000) })).then([messageSent({ content: 'x'.repeat(4000) })])
    given([]).when(sendMessage({ content: 'x'.repeat(4001) })).thenRejects(422, /at most 4000/)
  })

  test('length counts characters, not UTF-16 units: 4000 emoji are fine', () => {
    const emoji = '🍵'.repeat(4000)
    assert.equal(emoji.length, 8000)
    given([]).when(sendMessage({ content: emoji })).then([messageSent({ content: emoji })])
  })

  test('a sender of 1..40 characters is accepted; empty or 41 refused', () => {
    given([]).when(sendMessage({ sender: 'x'.repeat(40) })).then([messageSent({ sender: 'x'.repeat(40) })])
    given([]).when(sendMessage({ sender: '' })).thenRejects(422, /name/)
    given([]).when(sendMessage({ sender: '   ' })).thenRejects(422, /name/)
    given([]).when(sendMessage({ sender: 'x'.repeat(41) })).thenRejects(422, /name/)
  })

  test('chat ids follow ^[a-z0-9][a-z0-9_-]{0,63}$', () => {
    for (const chatId of ['a', 'tea', 'tea-time_2', '0', 'x'.repeat(64)]) {
      given([]).when(sendMessage({ chatId })).then([messageSent({ chatId })])
    }
    for (const chatId of ['', 'Tea', '-tea', '_tea', 'tea time', 'tea/../x', 'ü', 'x'.repeat(65)]) {
      given([]).when(sendMessage({ chatId })).thenRejects(422, /chat name/)
    }
  })

  test('a malformed command id is refused', () => {
    given([]).when(sendMessage({ commandId: '' })).thenRejects(422, /command id/)
    given([]).when(sendMessage({ commandId: 'has space' })).thenRejects(422, /command id/)
    given([]).when(sendMessage({ commandId: 'x'.repeat(65) })).thenRejects(422, /command id/)
  })

  test('the same command id again is no second message: it answers with the first version', () => {
    given([messageSent({ commandId: 'c1' }), messageSent({ commandId: 'c2' })]).when(sendMessage({ commandId: 'c1' })).thenIsDuplicateOf(1)
  })

  test(`a sender may post ${RATE_LIMIT} messages in a rolling minute; the next is refused with 429 and a wait`, () => {
    const history = Array.from({ length: RATE_LIMIT }, (_, i) => messageSent({ commandId: `c${i}` }, at(i)))
    const rejection = given(history).when(sendMessage({ commandId: 'next' }, at(40))).thenRejects(429, /Slow down/)
    // The oldest send (at 0 s) leaves the window at 60 s: 20 s from now.
    assert.equal(rejection.retryAfterSeconds, 20)
  })

  test('the rate limit is per sender: someone else may still post', () => {
    const history = Array.from({ length: RATE_LIMIT }, (_, i) => messageSent({ commandId: `c${i}` }, at(i)))
    given(history).when(sendMessage({ sender: 'bob', commandId: 'bob-1' }, at(40))).then([messageSent({ sender: 'bob', commandId: 'bob-1' }, at(40))])
  })

  test('the window rolls: a minute after the oldest send, the sender may post again', () => {
    const history = Array.from({ length: RATE_LIMIT }, (_, i) => messageSent({ commandId: `c${i}` }, at(i)))
    given(history).when(sendMessage({ commandId: 'later' }, at(60.001))).then([messageSent({ commandId: 'later' }, at(60.001))])
  })
})

describe('Chat state', () => {
  test('evolve counts versions and stays small however long the chat is', () => {
    let state = initialState()
    for (let i = 0; i < 5000; i++) state = evolve(state, messageSent({ commandId: `c${i}`, sender: `s${i % 7}` }, at(i)))
    assert.equal(state.version, 5000)
    assert.equal(state.recentCommands.size, RECENT_COMMANDS)
    // Only sends within the last minute are kept.
    const kept = [...state.recentSends.values()].reduce((sum, times) => sum + times.length, 0)
    assert.ok(kept <= 60, `kept ${kept} send times`)
  })

  test('decide is pure: the same command on the same state decides the same', () => {
    const state = [messageSent()].reduce(evolve, initialState())
    assert.deepEqual(decide(sendMessage({ commandId: 'x' }), state), decide(sendMessage({ commandId: 'x' }), state))
  })
})

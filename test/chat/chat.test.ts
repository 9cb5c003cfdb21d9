import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { describe, test } from 'node:test'
import {
  chatDecider,
  commandKey,
  decide,
  evolve,
  initialState,
  compact,
  KNOWN_MESSAGES,
  messageFacts,
  RATE_LIMIT,
  RATE_WINDOW_MS,
  REACTIONS,
  RECENT_COMMANDS,
  withKnownMessages,
  type Chat,
  type ChatEvent,
  type EditMessage,
  type Emoji,
  type MessageEdited,
  type MessageRetracted,
  type MessageSent,
  type ReactionAdded,
  type ReactionRemoved,
  type RetractMessage,
  type SendMessage,
  type ToggleReaction,
} from '../../src/chat/chat.js'
import { specFor } from '../support/given.js'

const given = specFor(chatDecider)

const T0 = new Date('2026-11-27T10:00:00.000Z')
const at = (seconds: number) => new Date(T0.getTime() + seconds * 1000)

/** Two people; Mallory also calls herself "alice": names are labels, ids are people. */
const ALICE = 'alice-id-0123456789abcd'
const BOB = 'bob-id-0123456789abcdef'
const MALLORY = 'mallory-id-0123456789ab'

// Commands: every one names its person and carries a command id.

function sendMessage(overrides: Partial<SendMessage['data']> = {}, now = T0): SendMessage {
  return { type: 'SendMessage', data: { chatId: 'tea', personId: ALICE, sender: 'alice', content: 'hello', commandId: 'cmd-1', ...overrides }, metadata: { now } }
}

function editMessage(overrides: Partial<EditMessage['data']> = {}, now = T0): EditMessage {
  return { type: 'EditMessage', data: { chatId: 'tea', personId: ALICE, commandId: 'edit-1', messageId: 1, content: 'hello again', ...overrides }, metadata: { now } }
}

function retractMessage(overrides: Partial<RetractMessage['data']> = {}, now = T0): RetractMessage {
  return { type: 'RetractMessage', data: { chatId: 'tea', personId: ALICE, commandId: 'retract-1', messageId: 1, ...overrides }, metadata: { now } }
}

function toggleReaction(overrides: Partial<ToggleReaction['data']> = {}, now = T0): ToggleReaction {
  return { type: 'ToggleReaction', data: { chatId: 'tea', personId: BOB, commandId: 'react-1', messageId: 1, name: 'bob', emoji: '👍', ...overrides }, metadata: { now } }
}

// Events: metadata is { commandId, personId } of the command that caused them.

function messageSent(overrides: Partial<MessageSent['data']> & { commandId?: string } = {}, now = T0): MessageSent {
  const { commandId = 'cmd-1', ...rest } = overrides
  const data = { chatId: 'tea', authorId: ALICE, sender: 'alice', content: 'hello', sentAt: now.toISOString(), ...rest }
  return { type: 'MessageSent', data, metadata: { commandId, personId: data.authorId } }
}

/** A message appended before people had ids: no authorId, no personId. */
function legacyMessageSent(overrides: { sender?: string; content?: string; commandId?: string } = {}, now = T0): MessageSent {
  const { commandId = 'old-1', sender = 'alice', content = 'hello' } = overrides
  return { type: 'MessageSent', data: { chatId: 'tea', sender, content, sentAt: now.toISOString() }, metadata: { commandId } }
}

function messageEdited(overrides: Partial<MessageEdited['data']> & { commandId?: string } = {}, now = T0): MessageEdited {
  const { commandId = 'edit-1', ...rest } = overrides
  const data = { messageId: 1, authorId: ALICE, content: 'hello again', editedAt: now.toISOString(), ...rest }
  return { type: 'MessageEdited', data, metadata: { commandId, personId: data.authorId } }
}

function messageRetracted(overrides: Partial<MessageRetracted['data']> & { commandId?: string } = {}, now = T0): MessageRetracted {
  const { commandId = 'retract-1', ...rest } = overrides
  const data = { messageId: 1, authorId: ALICE, retractedAt: now.toISOString(), ...rest }
  return { type: 'MessageRetracted', data, metadata: { commandId, personId: data.authorId } }
}

function reactionAdded(overrides: Partial<ReactionAdded['data']> & { commandId?: string } = {}, now = T0): ReactionAdded {
  const { commandId = 'react-1', ...rest } = overrides
  const data = { messageId: 1, by: BOB, name: 'bob', emoji: '👍' as Emoji, reactedAt: now.toISOString(), ...rest }
  return { type: 'ReactionAdded', data, metadata: { commandId, personId: data.by } }
}

function reactionRemoved(overrides: Partial<ReactionRemoved['data']> & { commandId?: string } = {}, now = T0): ReactionRemoved {
  const { commandId = 'react-1', ...rest } = overrides
  const data = { messageId: 1, by: BOB, name: 'bob', emoji: '👍' as Emoji, reactedAt: now.toISOString(), ...rest }
  return { type: 'ReactionRemoved', data, metadata: { commandId, personId: data.by } }
}

/** `count` messages by one person, one a second from `from` seconds, command ids `${prefix}${i}`. */
function sends(count: number, { authorId = ALICE, prefix = 'c', from = 0 } = {}): MessageSent[] {
  return Array.from({ length: count }, (_, i) => messageSent({ authorId, commandId: `${prefix}${i}` }, at(from + i)))
}

const fold = (events: ChatEvent[], state: Chat = initialState()) => events.reduce(evolve, state)

describe('SendMessage', () => {
  test('a message in a new chat is sent by its person, stamped with the time on the command', () => {
    given([]).when(sendMessage()).then([messageSent()])
  })

  test('the author of a message is the person who sent it, whatever name they go by', () => {
    given([]).when(sendMessage({ personId: BOB, sender: 'alice' })).then([messageSent({ authorId: BOB, sender: 'alice' })])
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
    given([]).when(sendMessage({ content: '\u0000\u0007' })).thenRejects(422, /empty/)
    // Invisible characters alone would be an empty bubble: zero-width space, word joiner, BOM, Hangul filler, with spaces.
    given([]).when(sendMessage({ content: '\u200B\u2060 \uFEFF\u3164\u200B' })).thenRejects(422, /empty/)
    given([messageSent()]).when(editMessage({ content: '\u200B\u200C\u200D' })).thenRejects(422, /empty/)
    // Among visible text they stay (a ZWJ holds an emoji sequence together).
    given([]).when(sendMessage({ content: '👩\u200D💻 \u200Bok' })).then([messageSent({ content: '👩\u200D💻 \u200Bok' })])
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

  test('content with a lone UTF-16 surrogate is refused', () => {
    given([]).when(sendMessage({ content: 'a\uD800b' })).thenRejects(422, /broken characters/)
    given([]).when(sendMessage({ content: 'a\uDC00' })).thenRejects(422, /broken characters/)
  })

  test('a sender of 1..40 characters is accepted, trimmed; empty or 41 refused', () => {
    given([]).when(sendMessage({ sender: 'x'.repeat(40) })).then([messageSent({ sender: 'x'.repeat(40) })])
    given([]).when(sendMessage({ sender: '  alice ' })).then([messageSent({ sender: 'alice' })])
    given([]).when(sendMessage({ sender: '' })).thenRejects(422, /name/)
    given([]).when(sendMessage({ sender: '   ' })).thenRejects(422, /name/)
    given([]).when(sendMessage({ sender: 'x'.repeat(41) })).thenRejects(422, /name/)
  })

  test('a sender name with a lone UTF-16 surrogate is refused', () => {
    given([]).when(sendMessage({ sender: 'a\uD800b' })).thenRejects(422, /name.*broken characters/)
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
    given([]).when(sendMessage({ commandId: 'x'.repeat(64) })).then([messageSent({ commandId: 'x'.repeat(64) })])
  })

  test('a command without a person is refused, whatever its kind', () => {
    given([]).when(sendMessage({ personId: '' })).thenRejects(422, /person/)
    given([messageSent()]).when(editMessage({ personId: '' })).thenRejects(422, /person/)
    given([messageSent()]).when(retractMessage({ personId: '' })).thenRejects(422, /person/)
    given([messageSent()]).when(toggleReaction({ personId: '' })).thenRejects(422, /person/)
  })

  test('the chat id and command id rules hold for every kind of command', () => {
    given([messageSent()]).when(editMessage({ chatId: 'Tea' })).thenRejects(422, /chat name/)
    given([messageSent()]).when(retractMessage({ commandId: 'has space' })).thenRejects(422, /command id/)
    given([messageSent()]).when(toggleReaction({ commandId: '' })).thenRejects(422, /command id/)
  })

  test('the message id of a message is the chat version its MessageSent was appended at', () => {
    const chat = [messageSent({ commandId: 'c1' }), reactionAdded({ commandId: 'r1' }), messageSent({ commandId: 'c3', content: 'third' })]
    given(chat).when(editMessage({ messageId: 3, content: 'third, edited' })).then([messageEdited({ messageId: 3, content: 'third, edited' })])
  })
})

describe('Idempotency: one answer per (person, commandId)', () => {
  test('the same command id from the same person is no second message: it answers with the first version and its type', () => {
    given([messageSent({ commandId: 'c1' }), messageSent({ commandId: 'c2' })]).when(sendMessage({ commandId: 'c1' })).thenIsDuplicateOf(1, 'MessageSent')
  })

  test('a retry is the same request: the same text, also as typed with other line endings or spaces around it', () => {
    given([messageSent({ commandId: 'c1', content: 'two\nlines' })]).when(sendMessage({ commandId: 'c1', content: '  two\r\nlines ' })).thenIsDuplicateOf(1, 'MessageSent')
  })

  test('the same command id for another request is refused (422), never answered as if it had been done', () => {
    const reused = /command id was used before for a different change/
    // Another text under a message's id is another message, not a retry.
    given([messageSent({ commandId: 'c1' })]).when(sendMessage({ commandId: 'c1', content: 'something else' })).thenRejects(422, reused)
    // A reaction's id again for another emoji, another message, or another kind of command.
    given([messageSent(), messageSent({ commandId: 'c2' }), reactionAdded()]).when(toggleReaction({ emoji: '🙏' })).thenRejects(422, reused)
    given([messageSent(), messageSent({ commandId: 'c2' }), reactionAdded()]).when(toggleReaction({ messageId: 2 })).thenRejects(422, reused)
    given([messageSent(), messageSent({ commandId: 'c2' }), reactionAdded()]).when(toggleReaction({ messageId: 999 })).thenRejects(422, reused)
    given([messageSent(), messageEdited()]).when(retractMessage({ commandId: 'edit-1' })).thenRejects(422, reused)
    given([messageSent(), messageEdited()]).when(editMessage({ content: 'yet another text' })).thenRejects(422, reused)
    given([messageSent({ commandId: 'c1' })]).when(toggleReaction({ personId: ALICE, commandId: 'c1' })).thenRejects(422, reused)
  })

  test('the same command id from another person is a new command: a second message', () => {
    given([messageSent({ commandId: 'c1' })])
      .when(sendMessage({ commandId: 'c1', personId: BOB, sender: 'bob' }))
      .then([messageSent({ commandId: 'c1', authorId: BOB, sender: 'bob' })])
  })

  test('a command id used before people had ids does not make a person’s command a repeat', () => {
    given([legacyMessageSent({ commandId: 'c1' })]).when(sendMessage({ commandId: 'c1' })).then([messageSent({ commandId: 'c1' })])
  })

  test('a retried edit, retraction or reaction answers with the version and type of its event', () => {
    given([messageSent(), messageEdited()]).when(editMessage()).thenIsDuplicateOf(2, 'MessageEdited')
    given([messageSent(), messageRetracted()]).when(retractMessage()).thenIsDuplicateOf(2, 'MessageRetracted')
    given([messageSent(), reactionAdded()]).when(toggleReaction()).thenIsDuplicateOf(2, 'ReactionAdded')
    given([messageSent(), reactionAdded(), reactionRemoved({ commandId: 'react-2' })]).when(toggleReaction({ commandId: 'react-2' })).thenIsDuplicateOf(3, 'ReactionRemoved')
  })

  test('a retry is answered even when the person has since hit the rate limit', () => {
    given(sends(RATE_LIMIT)).when(sendMessage({ commandId: 'c0' }, at(40))).thenIsDuplicateOf(1, 'MessageSent')
  })

  test('a command id is kept per person, not per kind: a reaction reusing a message’s command id is refused, not made', () => {
    given([messageSent({ commandId: 'c1', authorId: BOB, sender: 'bob' })])
      .when(toggleReaction({ commandId: 'c1' }))
      .thenRejects(422, /used before/)
  })
})

describe('Rate limit: every command of a person in a chat', () => {
  test(`a person may give ${RATE_LIMIT} commands in a rolling minute; the next is refused with 429 and a wait`, () => {
    const rejection = given(sends(RATE_LIMIT)).when(sendMessage({ commandId: 'next' }, at(40))).thenRejects(429, /Slow down/)
    // The oldest send (at 0 s) leaves the window at 60 s: 20 s from now.
    assert.equal(rejection.retryAfterSeconds, 20)
  })

  test('the wait is at least one second', () => {
    const rejection = given(sends(RATE_LIMIT)).when(sendMessage({ commandId: 'next' }, at(59.9))).thenRejects(429)
    assert.equal(rejection.retryAfterSeconds, 1)
  })

  test('the limit is per person: someone else may still post', () => {
    given(sends(RATE_LIMIT))
      .when(sendMessage({ personId: BOB, sender: 'bob', commandId: 'bob-1' }, at(40)))
      .then([messageSent({ authorId: BOB, sender: 'bob', commandId: 'bob-1' }, at(40))])
  })

  test('the limit keys on the person, never on the display name: two people both called "alice" have separate limits', () => {
    given(sends(RATE_LIMIT))
      .when(sendMessage({ personId: MALLORY, sender: 'alice', commandId: 'm-1' }, at(40)))
      .then([messageSent({ authorId: MALLORY, sender: 'alice', commandId: 'm-1' }, at(40))])
  })

  test('changing one’s display name does not escape the limit', () => {
    given(sends(RATE_LIMIT)).when(sendMessage({ sender: 'not alice', commandId: 'next' }, at(40))).thenRejects(429)
  })

  test('the window rolls: a minute after the oldest command, the person may act again', () => {
    given(sends(RATE_LIMIT)).when(sendMessage({ commandId: 'later' }, at(60.001))).then([messageSent({ commandId: 'later' }, at(60.001))])
  })

  test('sends, edits and reactions all count, and the limit holds for every kind of command', () => {
    // Alice: 10 messages (versions 1..10), 10 edits of them, 10 reactions on Bob's message (version 21).
    const history: ChatEvent[] = [
      ...sends(10),
      ...Array.from({ length: 10 }, (_, i) => messageEdited({ messageId: i + 1, content: `edit ${i}`, commandId: `e${i}` }, at(10 + i))),
      messageSent({ authorId: BOB, sender: 'bob', commandId: 'b1' }, at(20)),
      ...Array.from({ length: 10 }, (_, i) =>
        reactionAdded({ messageId: 21, by: ALICE, name: 'alice', emoji: REACTIONS[i % REACTIONS.length]!, commandId: `r${i}` }, at(21 + i)),
      ),
    ]
    assert.equal(fold(history).version, 31)
    given(history).when(sendMessage({ commandId: 'next' }, at(40))).thenRejects(429)
    given(history).when(editMessage({ messageId: 1, content: 'again', commandId: 'next' }, at(40))).thenRejects(429)
    given(history).when(retractMessage({ messageId: 2, commandId: 'next' }, at(40))).thenRejects(429)
    given(history).when(toggleReaction({ personId: ALICE, name: 'alice', messageId: 21, emoji: '👍', commandId: 'next' }, at(40))).thenRejects(429)
    // Bob gave one command: he is free to go on.
    given(history).when(toggleReaction({ messageId: 1, commandId: 'b2' }, at(40))).then([reactionAdded({ messageId: 1, commandId: 'b2' }, at(40))])
  })

  test('messages from before people had ids count against no one', () => {
    const old = Array.from({ length: RATE_LIMIT }, (_, i) => legacyMessageSent({ commandId: `old${i}` }, at(i)))
    given(old).when(sendMessage({ commandId: 'now' }, at(40))).then([messageSent({ commandId: 'now' }, at(40))])
  })
})

describe('EditMessage', () => {
  test('the author edits a message: MessageEdited with the normalised content, stamped with the time on the command', () => {
    given([messageSent()])
      .when(editMessage({ content: '  better\r\nnow \u0007' }, at(5)))
      .then([messageEdited({ content: 'better\nnow' }, at(5))])
  })

  test('another person cannot edit it, even under the same display name', () => {
    given([messageSent()]).when(editMessage({ personId: MALLORY })).thenRejects(403, /Only the person who wrote/)
    given([messageSent()]).when(editMessage({ personId: BOB })).thenRejects(403)
  })

  test('an unknown message is 404: never sent, beyond the chat, or a version that is not a message', () => {
    given([]).when(editMessage()).thenRejects(404, /no message 1/)
    given([messageSent()]).when(editMessage({ messageId: 2 })).thenRejects(404)
    given([messageSent(), reactionAdded()]).when(editMessage({ messageId: 2 })).thenRejects(404, /no message 2/)
    given([messageSent(), messageEdited()]).when(editMessage({ messageId: 2, content: 'x', commandId: 'edit-2' })).thenRejects(404)
  })

  test('a message id that is not a whole number from 1 is refused', () => {
    for (const messageId of [0, -1, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 1]) {
      given([messageSent()]).when(editMessage({ messageId })).thenRejects(422, /message id/)
    }
  })

  test('a retracted message cannot be edited', () => {
    given([messageSent(), messageRetracted()]).when(editMessage({ commandId: 'edit-2' })).thenRejects(422, /retracted/)
  })

  test('the content rules are those of sending', () => {
    given([messageSent()]).when(editMessage({ content: '' })).thenRejects(422, /empty/)
    given([messageSent()]).when(editMessage({ content: ' \n ' })).thenRejects(422, /empty/)
    given([messageSent()]).when(editMessage({ content: 'x'.repeat(4001) })).thenRejects(422, /at most 4000/)
    given([messageSent()]).when(editMessage({ content: 'a\uD800b' })).thenRejects(422, /broken characters/)
    given([messageSent()]).when(editMessage({ content: '🍵'.repeat(4000) })).then([messageEdited({ content: '🍵'.repeat(4000) })])
  })

  test('an edit to the same text, after normalisation, is accepted and changes nothing', () => {
    given([messageSent()]).when(editMessage({ content: 'hello' })).thenNothingHappens()
    given([messageSent()]).when(editMessage({ content: '  hello  \r\n' })).thenNothingHappens()
  })

  test('the same text means the current text: after an edit, the edited text is a no-op and the original a real edit', () => {
    given([messageSent(), messageEdited()]).when(editMessage({ content: 'hello again ', commandId: 'edit-2' })).thenNothingHappens()
    given([messageSent(), messageEdited()])
      .when(editMessage({ content: 'hello', commandId: 'edit-2' }))
      .then([messageEdited({ content: 'hello', commandId: 'edit-2' })])
  })

  test('a message from before people had ids can be edited by no one', () => {
    given([legacyMessageSent()]).when(editMessage()).thenRejects(403)
    given([legacyMessageSent()]).when(editMessage({ personId: BOB })).thenRejects(403)
  })
})

describe('RetractMessage', () => {
  test('the author retracts a message: MessageRetracted stamped with the time on the command', () => {
    given([messageSent()]).when(retractMessage({}, at(7))).then([messageRetracted({}, at(7))])
  })

  test('another person cannot retract it, even under the same display name', () => {
    given([messageSent()]).when(retractMessage({ personId: MALLORY })).thenRejects(403, /Only the person who wrote/)
  })

  test('a message is retracted once: a second retraction is refused', () => {
    given([messageSent(), messageRetracted()]).when(retractMessage({ commandId: 'retract-2' })).thenRejects(422, /retracted already/)
  })

  test('an unknown message is 404', () => {
    given([]).when(retractMessage()).thenRejects(404)
    given([messageSent(), reactionAdded()]).when(retractMessage({ messageId: 2 })).thenRejects(404)
    given([messageSent()]).when(retractMessage({ messageId: 0 })).thenRejects(422, /message id/)
  })

  test('an edited message can still be retracted by its author', () => {
    given([messageSent(), messageEdited()]).when(retractMessage()).then([messageRetracted()])
  })

  test('a message from before people had ids can be retracted by no one', () => {
    given([legacyMessageSent()]).when(retractMessage()).thenRejects(403)
  })
})

describe('ToggleReaction', () => {
  test(`each of ${REACTIONS.join(' ')} can be added, by its person, with their display name at the time`, () => {
    for (const emoji of REACTIONS) {
      given([messageSent()]).when(toggleReaction({ emoji, name: ' bob ' }, at(3))).then([reactionAdded({ emoji }, at(3))])
    }
  })

  test('any other reaction is refused', () => {
    for (const emoji of ['💩', '', '👍👍', '👍🏽', '❤', 'like']) {
      given([messageSent()]).when(toggleReaction({ emoji })).thenRejects(422, /reaction is one of/)
    }
  })

  test('a reaction toggles per person and emoji: added, then removed, then added again', () => {
    const added = reactionAdded({ commandId: 'r1' })
    given([messageSent()]).when(toggleReaction({ commandId: 'r1' })).then([added])
    const removed = reactionRemoved({ commandId: 'r2' }, at(1))
    given([messageSent(), added]).when(toggleReaction({ commandId: 'r2' }, at(1))).then([removed])
    given([messageSent(), added, removed]).when(toggleReaction({ commandId: 'r3' }, at(2))).then([reactionAdded({ commandId: 'r3' }, at(2))])
  })

  test('two people’s reactions with the same emoji are independent', () => {
    const bobs = reactionAdded({ commandId: 'b1' })
    given([messageSent(), bobs])
      .when(toggleReaction({ personId: MALLORY, name: 'mallory', commandId: 'm1' }))
      .then([reactionAdded({ by: MALLORY, name: 'mallory', commandId: 'm1' })])
    const mallorys = reactionAdded({ by: MALLORY, name: 'mallory', commandId: 'm1' })
    given([messageSent(), bobs, mallorys]).when(toggleReaction({ commandId: 'b2' })).then([reactionRemoved({ commandId: 'b2' })])
    given([messageSent(), bobs, mallorys])
      .when(toggleReaction({ personId: MALLORY, name: 'mallory', commandId: 'm2' }))
      .then([reactionRemoved({ by: MALLORY, name: 'mallory', commandId: 'm2' })])
  })

  test('a reaction keys on the person, not the name: someone else called "bob" adds their own', () => {
    given([messageSent(), reactionAdded({ commandId: 'b1' })])
      .when(toggleReaction({ personId: MALLORY, name: 'bob', commandId: 'm1' }))
      .then([reactionAdded({ by: MALLORY, name: 'bob', commandId: 'm1' })])
  })

  test('one person’s emoji are independent of each other', () => {
    given([messageSent(), reactionAdded({ commandId: 'b1' })])
      .when(toggleReaction({ emoji: '🎉', commandId: 'b2' }))
      .then([reactionAdded({ emoji: '🎉', commandId: 'b2' })])
  })

  test('reactions are per message', () => {
    given([messageSent(), messageSent({ commandId: 'c2' }), reactionAdded({ commandId: 'b1' })])
      .when(toggleReaction({ messageId: 2, commandId: 'b2' }))
      .then([reactionAdded({ messageId: 2, commandId: 'b2' })])
  })

  test('anyone may react, the author included, and an edited message keeps its reactions', () => {
    given([messageSent()]).when(toggleReaction({ personId: ALICE, name: 'alice' })).then([reactionAdded({ by: ALICE, name: 'alice' })])
    given([messageSent(), reactionAdded({ commandId: 'b1' }), messageEdited()])
      .when(toggleReaction({ commandId: 'b2' }))
      .then([reactionRemoved({ commandId: 'b2' })])
  })

  test('a retracted message cannot be reacted to, nor a reaction on it taken back', () => {
    given([messageSent(), messageRetracted()]).when(toggleReaction()).thenRejects(422, /retracted/)
    given([messageSent(), reactionAdded({ commandId: 'b1' }), messageRetracted()]).when(toggleReaction({ commandId: 'b2' })).thenRejects(422, /retracted/)
  })

  test('an unknown message is 404, a version that is not a message too', () => {
    given([]).when(toggleReaction()).thenRejects(404)
    given([messageSent(), reactionAdded({ commandId: 'b1' })]).when(toggleReaction({ messageId: 2, commandId: 'b2' })).thenRejects(404)
    given([messageSent()]).when(toggleReaction({ messageId: -3 })).thenRejects(422, /message id/)
  })

  test('a message from before people had ids can be reacted to', () => {
    given([legacyMessageSent()]).when(toggleReaction()).then([reactionAdded()])
    given([legacyMessageSent(), reactionAdded()]).when(toggleReaction({ commandId: 'react-2' })).then([reactionRemoved({ commandId: 'react-2' })])
  })
})

describe('Messages not at hand: messageFacts and withKnownMessages', () => {
  // Message 1 by Alice, with changes interleaved with other messages.
  const own: ChatEvent[] = [
    messageSent({ commandId: 'c1' }),
    reactionAdded({ commandId: 'b1' }),
    reactionAdded({ by: MALLORY, name: 'mallory', emoji: '🎉', commandId: 'm1' }),
    messageEdited({ content: 'hello, edited' }),
    reactionRemoved({ by: MALLORY, name: 'mallory', emoji: '🎉', commandId: 'm2' }),
  ]
  const others = [messageSent({ authorId: BOB, sender: 'bob', commandId: 'b-x' }), reactionAdded({ messageId: 2, by: ALICE, name: 'alice', commandId: 'a-x' })]
  const interleaved: ChatEvent[] = [own[0]!, others[0]!, own[1]!, own[2]!, others[1]!, own[3]!, own[4]!]
  /** 300 more messages by Bob: message 1 falls out of the messages at hand. */
  const filler = Array.from({ length: 300 }, (_, i) => messageSent({ authorId: BOB, sender: 'bob', commandId: `f${i}` }, at(3600 + i)))
  const long = compact(fold([...interleaved, ...filler]))
  const later = at(7200)

  test('messageFacts folds a message’s own events into the facts evolve keeps for it', () => {
    const facts = messageFacts(own)
    assert.deepEqual(facts, { authorId: ALICE, contentDigest: sha256('hello, edited'), retracted: false, reactions: new Set([`${BOB} 👍`]) })
    assert.deepEqual(facts, fold(interleaved).messages.get(1))
  })

  test('messageFacts of a retracted message and of a message from before people had ids', () => {
    const retracted = [...own, messageRetracted()]
    assert.deepEqual(messageFacts(retracted), fold(retracted).messages.get(1))
    assert.equal(messageFacts(retracted)!.retracted, true)
    assert.deepEqual(messageFacts([legacyMessageSent()]), { authorId: undefined, contentDigest: sha256('hello'), retracted: false, reactions: new Set() })
  })

  test('the facts keep a digest of the text, never the text: a 4,000-character message costs the state the same as a short one', () => {
    const text = Array.from({ length: 1_000 }, () => 'чай').join(' ')
    const state = fold([messageSent({ content: text })])
    const facts = state.messages.get(1)!
    assert.equal(facts.contentDigest.length, 43)
    assert.ok(!Object.values(facts).some((value) => typeof value === 'string' && value.length > 64), 'a fact longer than a digest')
    // Still enough for the rule it serves: the same text again is no edit.
    assert.deepEqual(decide(editMessage({ content: text }), state), { kind: 'accepted', events: [] })
  })

  test('messageFacts of events that do not start with a MessageSent is null: that version is not a message', () => {
    assert.equal(messageFacts([reactionAdded()]), null)
    assert.equal(messageFacts([]), null)
  })

  test(`after ${KNOWN_MESSAGES} newer messages, message 1 is no longer at hand, and a command about it cannot be decided alone`, () => {
    assert.equal(long.messages.has(1), false)
    assert.ok(long.messages.size <= KNOWN_MESSAGES)
    const decision = decide(editMessage({ content: 'too late?' }, later), long)
    assert.equal(decision.kind, 'rejected')
    assert.equal((decision as Extract<typeof decision, { kind: 'rejected' }>).rejection.status, 404)
  })

  test('with the facts read from its own events, a state decides as if it had folded the message itself', () => {
    const learnt = withKnownMessages(long, new Map([[1, messageFacts(own)]]))
    const atHand = fold(interleaved)
    const commands = [
      editMessage({ content: 'edited, later', commandId: 'later-1' }, later),
      editMessage({ content: ' hello, edited ', commandId: 'later-2' }, later),
      editMessage({ personId: MALLORY, content: 'mine now', commandId: 'later-3' }, later),
      retractMessage({ commandId: 'later-4' }, later),
      retractMessage({ personId: BOB, commandId: 'later-5' }, later),
      toggleReaction({ commandId: 'later-6' }, later),
      toggleReaction({ emoji: '😮', commandId: 'later-7' }, later),
      toggleReaction({ personId: MALLORY, name: 'mallory', emoji: '🎉', commandId: 'later-8' }, later),
    ]
    for (const command of commands) assert.deepEqual(decide(command, learnt), decide(command, atHand), JSON.stringify(command.data))
    // And what that is, spelled out.
    assert.deepEqual(decide(commands[0]!, learnt), { kind: 'accepted', events: [messageEdited({ content: 'edited, later', commandId: 'later-1' }, later)] })
    assert.deepEqual(decide(commands[1]!, learnt), { kind: 'accepted', events: [] })
    assert.equal((decide(commands[2]!, learnt) as { rejection: { status: number } }).rejection.status, 403)
    assert.deepEqual(decide(commands[5]!, learnt), { kind: 'accepted', events: [reactionRemoved({ commandId: 'later-6' }, later)] })
  })

  test('facts of a retracted message read from the log refuse edits, retractions and reactions as a folded state does', () => {
    const retracted = [...own, messageRetracted()]
    const learnt = withKnownMessages(long, new Map([[1, messageFacts(retracted)]]))
    for (const command of [editMessage({ commandId: 'later-1' }, later), retractMessage({ commandId: 'later-2' }, later), toggleReaction({ commandId: 'later-3' }, later)]) {
      assert.deepEqual(decide(command, learnt), decide(command, fold(retracted)))
      assert.equal((decide(command, learnt) as { rejection: { status: number } }).rejection.status, 422)
    }
  })

  test('a version known not to be a message is 404', () => {
    const learnt = withKnownMessages(long, new Map([[3, messageFacts([own[1]!])]]))
    assert.equal(learnt.messages.get(3), null)
    for (const command of [editMessage({ messageId: 3 }, later), retractMessage({ messageId: 3 }, later), toggleReaction({ messageId: 3 }, later)]) {
      assert.equal((decide(command, learnt) as { rejection: { status: number } }).rejection.status, 404)
    }
  })

  test('withKnownMessages keeps the rest of the state and leaves the original untouched', () => {
    const learnt = withKnownMessages(long, new Map([[1, messageFacts(own)]]))
    assert.equal(learnt.version, long.version)
    assert.equal(learnt.recentActs, long.recentActs)
    assert.equal(learnt.recentCommands, long.recentCommands)
    assert.equal(long.messages.has(1), false)
    assert.equal(withKnownMessages(long, new Map()), long)
  })

  test('a message whose facts were learnt is kept up to date by the events that follow', () => {
    const learnt = withKnownMessages(long, new Map([[1, messageFacts(own)]]))
    const next = fold([messageEdited({ content: 'once more', commandId: 'edit-9' }, later)], learnt)
    assert.equal(next.messages.get(1)?.contentDigest, sha256('once more'))
  })

  // The command handler caches the state after learning facts, so learnt facts (404s included)
  // must not let a cached chat grow past its bound.
  test('a message a later command in the same batch is about stays at hand while earlier commands send messages', () => {
    // As the command handler decides a batch: the facts it read for the edit, then many sends before it.
    let state = withKnownMessages(long, new Map([[1, messageFacts(own)]]))
    state = fold(sends(KNOWN_MESSAGES + 10, { authorId: BOB, prefix: 'in the batch', from: 7200 }), state)
    assert.equal(decide(editMessage({ content: 'still mine to edit' }, later), state).kind, 'accepted')
  })

  test(
    'the messages at hand come back within KNOWN_MESSAGES after facts read from the log were added',
    () => {
      let state = long
      for (let id = 2; id <= 41; id++) state = withKnownMessages(state, new Map([[id, messageFacts([messageSent({ commandId: `x${id}` })])]]))
      state = compact(fold(sends(10, { authorId: BOB, prefix: 'later', from: 7200 }), state))
      assert.ok(state.messages.size <= KNOWN_MESSAGES, `${state.messages.size} messages at hand`)
    },
  )

  test(
    'ids learnt to name no message (a 404) do not pile up in the state',
    () => {
      let state = fold([messageSent()])
      for (let id = 1000; id < 1000 + KNOWN_MESSAGES + 100; id++) {
        state = withKnownMessages(state, new Map([[id, messageFacts([])]]))
        assert.equal((decide(toggleReaction({ messageId: id, commandId: `probe${id}` }, at(1)), state) as { rejection: { status: number } }).rejection.status, 404)
        state = compact(state)
      }
      assert.ok(state.messages.size <= KNOWN_MESSAGES, `${state.messages.size} entries at hand`)
    },
  )
})

describe('Chat state', () => {
  test('evolve counts versions and stays small however long the chat is', () => {
    const people = Array.from({ length: 7 }, (_, i) => `person-${i}`)
    const lastMessageOf = new Map<string, number>()
    let state = initialState()
    // 5000 events, one every 100 ms (so everyone acts more than RATE_LIMIT times a minute): sends, edits, reactions.
    for (let i = 0; i < 5000; i++) {
      const person = people[i % people.length]!
      const now = new Date(T0.getTime() + i * 100)
      const version = i + 1
      const own = lastMessageOf.get(person)
      let event: ChatEvent
      if (own === undefined || i % 3 === 0) {
        event = messageSent({ authorId: person, sender: `name ${i % 3}`, commandId: `c${i}` }, now)
        lastMessageOf.set(person, version)
      } else if (i % 3 === 1) {
        event = messageEdited({ messageId: own, authorId: person, content: `edit ${i}`, commandId: `c${i}` }, now)
      } else {
        event = reactionAdded({ messageId: Math.max(1, version - 5), by: person, name: person, emoji: REACTIONS[i % REACTIONS.length]!, commandId: `c${i}` }, now)
      }
      state = evolve(state, event)
    }
    assert.equal(state.version, 5000)
    assert.equal(state.recentCommands.size, RECENT_COMMANDS)
    assert.ok(compact(state).messages.size <= KNOWN_MESSAGES, `${compact(state).messages.size} messages at hand`)
    assert.ok(state.recentActs.size <= people.length)
    for (const [person, times] of state.recentActs) {
      assert.ok(times.length <= RATE_LIMIT, `${person} keeps ${times.length} act times`)
      assert.ok(times.every((time) => time > times.at(-1)! - RATE_WINDOW_MS), `${person} keeps times older than the window`)
    }
    const kept = [...state.recentActs.values()].reduce((sum, times) => sum + times.length, 0)
    assert.ok(kept <= people.length * RATE_LIMIT, `kept ${kept} act times`)
  })

  test('the recent command ids are the latest ones', () => {
    const state = fold(Array.from({ length: RECENT_COMMANDS + 50 }, (_, i) => messageSent({ commandId: `c${i}` }, at(i * 10))))
    assert.equal(state.recentCommands.has(commandKey(ALICE, `c${RECENT_COMMANDS + 49}`)), true)
    assert.equal(state.recentCommands.has(commandKey(ALICE, 'c0')), false)
  })

  test('an initial state may start at a version: the next event takes the one after it', () => {
    const state = fold([messageSent()], initialState(41))
    assert.equal(state.version, 42)
    assert.equal(state.messages.has(42), true)
  })

  test('decide is pure: the same command on the same state decides the same, and the state is not changed', () => {
    const state = fold([messageSent(), reactionAdded()])
    const snapshot = describeState(state)
    for (const command of [sendMessage({ commandId: 'x' }), editMessage({ commandId: 'x' }), retractMessage({ commandId: 'x' }), toggleReaction({ commandId: 'x' })]) {
      assert.deepEqual(decide(command, state), decide(command, state))
    }
    assert.deepEqual(describeState(state), snapshot)
  })

  test('evolve is pure: folding more events into a state, twice over, leaves it as it was', () => {
    const state = fold([messageSent(), reactionAdded()])
    const snapshot = describeState(state)
    const a = fold([messageSent({ authorId: BOB, sender: 'bob', commandId: 'a' }), messageEdited({ content: 'changed' }), reactionRemoved()], state)
    const b = fold([messageRetracted({ commandId: 'b' })], state)
    assert.deepEqual(describeState(state), snapshot)
    assert.equal(a.messages.get(1)?.contentDigest, sha256('changed'))
    assert.equal(b.messages.get(1)?.retracted, true)
    assert.equal(a.recentCommands.has(commandKey(ALICE, 'b')), false)
    assert.equal(b.recentCommands.has(commandKey(BOB, 'a')), false)
  })

  test('folding costs the same with thousands of people active in the window: the memory is shared, not copied', () => {
    // 20,000 sends from 5,000 people within a minute; each keeps its own few act times.
    let state = initialState()
    for (let i = 0; i < 20_000; i++) state = evolve(state, messageSent({ authorId: `p${i % 5000}`, sender: 'someone', commandId: `c${i}` }, new Date(T0.getTime() + i)))
    assert.equal(state.recentActs.size, 5000)
    assert.equal(state.recentActs.of('p42').length, 4)
    assert.equal(state.recentCommands.size, RECENT_COMMANDS)
    const before = state
    const after = evolve(before, messageSent({ authorId: 'p42', sender: 'someone', commandId: 'one more' }, new Date(T0.getTime() + 20_000)))
    assert.equal(before.recentActs.of('p42').length, 4)
    assert.equal(after.recentActs.of('p42').length, 5)
    // A minute later, the people who went quiet are swept out as new people come.
    let later = after
    for (let i = 0; i < 10_000; i++) later = evolve(later, messageSent({ authorId: `q${i}`, sender: 'someone', commandId: `d${i}` }, new Date(T0.getTime() + 120_000 + i)))
    assert.ok(later.recentActs.size <= 2 * 10_000, `${later.recentActs.size} people remembered`)
    assert.equal(later.recentActs.of('p42').length, 0)
  })
})

/** A state as plain data, to compare one with itself before and after. */
function describeState(state: Chat) {
  return { version: state.version, acts: [...state.recentActs], commands: [...state.recentCommands], messages: [...state.messages] }
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('base64url')
}

import assert from 'node:assert/strict'
import { decide, evolve, initialState, type ChatCommand, type ChatEvent, type Decision } from '../../src/chat/chat.js'

/**
 * Domain specs that read as sentences:
 *   given([messageSent(...)]).when(sendMessage(...)).then([messageSent(...)])
 * No database: decide and evolve are pure.
 */
export function given(events: ChatEvent[]) {
  const state = events.reduce(evolve, initialState())
  return {
    when(command: ChatCommand) {
      const decision: Decision = decide(command, state)
      return {
        then(expected: ChatEvent[]) {
          assert.equal(decision.kind, 'accepted', describe(decision))
          assert.deepEqual((decision as { events: ChatEvent[] }).events, expected)
        },
        thenRejects(status: 422 | 429, message?: RegExp) {
          assert.equal(decision.kind, 'rejected', `expected a rejection, got ${describe(decision)}`)
          const { rejection } = decision as Extract<Decision, { kind: 'rejected' }>
          assert.equal(rejection.status, status, rejection.message)
          if (message) assert.match(rejection.message, message)
          return rejection
        },
        thenIsDuplicateOf(version: number) {
          assert.deepEqual(decision, { kind: 'duplicate', version })
        },
      }
    },
  }
}

function describe(decision: Decision): string {
  return decision.kind === 'rejected' ? `rejected: ${decision.rejection.message}` : JSON.stringify(decision)
}

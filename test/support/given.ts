import assert from 'node:assert/strict'
import type { Decider, Decision } from '../../src/event-store/decider.js'

/**
 * Domain specs that read as sentences, for any decider:
 *   const given = specFor(chatDecider)
 *   given([messageSent(...)]).when(editMessage(...)).then([messageEdited(...)])
 * No database: decide and evolve are pure.
 */
export function specFor<Command, Event extends { type: string }, State extends { version: number }>(decider: Decider<Command, Event, State>) {
  return (events: Event[]) => {
    const state = events.reduce(decider.evolve, decider.initialState())
    return {
      state,
      when(command: Command) {
        const decision: Decision<Event> = decider.decide(command, state)
        return {
          decision,
          then(expected: Event[]) {
            assert.equal(decision.kind, 'accepted', describe(decision))
            assert.deepEqual((decision as { events: Event[] }).events, expected)
          },
          /** Accepted, and nothing to append: the command changes nothing. */
          thenNothingHappens() {
            assert.deepEqual(decision, { kind: 'accepted', events: [] })
          },
          thenRejects(status: number, message?: RegExp) {
            assert.equal(decision.kind, 'rejected', `expected a rejection, got ${describe(decision)}`)
            const { rejection } = decision as Extract<Decision<Event>, { kind: 'rejected' }>
            assert.equal(rejection.status, status, rejection.message)
            if (message) assert.match(rejection.message, message)
            return rejection
          },
          thenIsDuplicateOf(version: number, type?: Event['type']) {
            assert.equal(decision.kind, 'duplicate', describe(decision))
            const { answer } = decision as Extract<Decision<Event>, { kind: 'duplicate' }>
            assert.equal(answer.version, version)
            if (type) assert.equal(answer.type, type)
          },
        }
      },
    }
  }
}

function describe<Event extends { type: string }>(decision: Decision<Event>): string {
  return decision.kind === 'rejected' ? `rejected: ${decision.rejection.message}` : JSON.stringify(decision)
}

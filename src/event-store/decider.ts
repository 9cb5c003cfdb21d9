/**
 * The shape every decider of this app has (Emmett's Decider): pure functions,
 * no I/O. The command handler is written against this, not against a chat.
 */

/** How a command was answered the first time, so that a retry answers the same. */
export interface Answer<Type extends string = string> {
  version: number
  type: Type
  /**
   * What the command asked, as a key (for a chat: the message and the text
   * or emoji): a command id used again for a different request is not a
   * retry, and must not be answered as if it had been done.
   */
  request: string
}

/** A command the rules refuse, with its HTTP meaning. */
export interface RejectionLike extends Error {
  readonly status: number
  readonly retryAfterSeconds?: number
}

export type Decision<Event extends { type: string }, Refusal extends RejectionLike = RejectionLike> =
  /** `events` may be empty: the command changes nothing (an edit to the same text). */
  | { kind: 'accepted'; events: Event[] }
  /** The same person gave this command before: answer as the first time, append nothing. */
  | { kind: 'duplicate'; answer: Answer<Event['type']> }
  | { kind: 'rejected'; rejection: Refusal }

export interface Decider<Command, Event extends { type: string }, State extends { version: number }> {
  decide(command: Command, state: State): Decision<Event>
  evolve(state: State, event: Event): State
  initialState(version?: number): State
  /** The state to keep between commands, back within its bounds (optional: a state bounded by evolve needs none). */
  compact?(state: State): State
}

import { CommandHandler, type CommandHandlerProps, type LoadRequest, type StateLoader } from '../event-store/command-handler.js'
import { findCommand, readEventsAfter, readMessageEvents, readStreamBackwards, type StoredEvent, type Tx } from '../event-store/event-store.js'
import {
  answerOf,
  chatDecider,
  evolve,
  initialState,
  messageFacts,
  RATE_WINDOW_MS,
  RECENT_COMMANDS,
  Rejection,
  repeatOf,
  targetOf,
  timeOf,
  validate,
  withKnownMessages,
  type Chat,
  type ChatCommand,
  type ChatEvent,
  type MessageFacts,
} from './chat.js'

export const STREAM_TYPE = 'chat'
export const streamIdOf = (chatId: string) => `chat-${chatId}`

/** The write side of every chat: one group-commit handler for all chat commands. */
export type ChatHandler = CommandHandler<ChatCommand, ChatEvent, Chat>

export type ChatHandlerProps = Pick<CommandHandlerProps<ChatCommand, ChatEvent, Chat>, 'db' | 'onAppended' | 'onOutcome' | 'cacheSize' | 'maxBatch' | 'maxConcurrentBatches' | 'overlapAfterMs' | 'maxQueued' | 'maxWaitMs'>

export function chatHandler(props: ChatHandlerProps): ChatHandler {
  return new CommandHandler({
    ...props,
    decider: chatDecider,
    loader: chatStateLoader,
    streamType: STREAM_TYPE,
    streamIdOf: (command) => streamIdOf(command.data.chatId),
    validate: (command) => {
      const invalid = validate(command)
      return invalid === undefined ? undefined : new Rejection(422, invalid)
    },
    findEarlier: async (db, command) => {
      const { data } = command
      const found = await findCommand(db, streamIdOf(data.chatId), data.personId, data.commandId)
      return found && repeatOf(command, answerOf(toChatEvent(found), found.version))
    },
    duplicateConstraint: 'events_command_id_by_person',
    clock: (command) => command.metadata.now,
  })
}

/**
 * What the chat rules need, read from the log under the stream locks, never
 * by folding a whole stream:
 * - a cached state needs only the events after its version; a cold one is
 *   folded from the stream's tail (the latest RECENT_COMMANDS events, extended
 *   back while they still fall in the rate window);
 * - a command about a message that is not at hand (who wrote message 42, is
 *   it retracted) reads that message's own events, by index.
 */
export const chatStateLoader: StateLoader<ChatCommand, Chat> = {
  covers(state, commands) {
    return commands.every((command) => {
      const target = targetOf(command)
      return target === undefined || state.messages.has(target)
    })
  },

  async load(tx, requests, now) {
    const states = new Map<string, Chat>()
    const ranges: { streamId: string; after: number }[] = []
    for (const { streamId, version, cached } of requests) {
      const usable = cached && cached.version <= version && version - cached.version <= RECENT_COMMANDS
      const after = usable ? cached.version : Math.max(0, version - RECENT_COMMANDS)
      states.set(streamId, usable ? cached : initialState(after))
      if (after < version) ranges.push({ streamId, after })
    }
    const horizon = now.getTime() - RATE_WINDOW_MS
    const newer = await readEventsAfter(tx, ranges)
    for (const { streamId, after } of ranges) {
      let state = states.get(streamId)!
      let events = newer.filter((event) => event.streamId === streamId)
      const cold = state.version === after && state.recentCommands.size === 0
      if (cold && after > 0 && (events.length === 0 || timeOfStored(events[0]!) > horizon)) {
        // The tail starts inside the rate window: older commands may still count.
        const older = await olderInWindow(tx, streamId, after, horizon)
        if (older.length > 0) {
          events = older.concat(events)
          state = initialState(older[0]!.version - 1)
        }
      }
      states.set(streamId, events.map(toChatEvent).reduce(evolve, state))
    }
    for (const request of requests) states.set(request.streamId, await withTargets(tx, request, states.get(request.streamId)!))
    return states
  },
}

/** The state with the facts of every message the commands are about, read from the log where not at hand. */
async function withTargets(tx: Tx, { streamId, commands }: LoadRequest<ChatCommand, Chat>, state: Chat): Promise<Chat> {
  const missing = [...new Set(commands.map(targetOf).filter((id): id is number => id !== undefined && !state.messages.has(id)))]
  if (missing.length === 0) return state
  const events = await readMessageEvents(tx, streamId, missing, state.version)
  const known = new Map<number, MessageFacts | null>()
  for (const id of missing) {
    const own = events.filter((event) => (event.version === id && event.type === 'MessageSent') || (event.type !== 'MessageSent' && Number(event.data.messageId) === id))
    known.set(id, messageFacts(own.map(toChatEvent)))
  }
  return withKnownMessages(state, known)
}

/** Events up to version `upTo` whose time is still inside the rate window. */
async function olderInWindow(tx: Tx, streamId: string, upTo: number, horizon: number): Promise<StoredEvent[]> {
  let older: StoredEvent[] = []
  for (let before = upTo + 1; before > 1; ) {
    const chunk = await readStreamBackwards(tx, streamId, { before, limit: 500 })
    const inWindow = chunk.filter((event) => timeOfStored(event) > horizon)
    older = inWindow.concat(older)
    if (inWindow.length < chunk.length || chunk.length === 0) break
    before = chunk[0]!.version
  }
  return older
}

function timeOfStored(event: StoredEvent): number {
  return Date.parse(timeOf(toChatEvent(event)))
}

/** A stored event as the decider knows it. Old shapes read as they are: a MessageSent without authorId is nobody's. */
export function toChatEvent(event: StoredEvent): ChatEvent {
  return { type: event.type, data: event.data, metadata: event.metadata } as unknown as ChatEvent
}

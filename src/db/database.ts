import type { ColumnType, Generated, Insertable, Kysely, Selectable } from 'kysely'

/** jsonb columns come back parsed and go in as JSON text. */
type Json<T> = ColumnType<T, string, string>

/** bigint columns: our pools parse int8 to number (versions and positions stay far below 2^53). */
type BigIntColumn = ColumnType<number, number | string, number | string>

export interface StreamsTable {
  stream_id: string
  stream_type: string
  version: BigIntColumn
}

export interface EventsTable {
  global_position: Generated<number>
  transaction_id: Generated<string>
  stream_id: string
  stream_version: BigIntColumn
  event_id: string
  event_type: string
  data: Json<Record<string, unknown>>
  metadata: Json<Record<string, unknown>>
  recorded_at: Generated<Date>
}

type Timestamp = ColumnType<Date, Date | string, Date | string>

export interface MessagesTable {
  chat_id: string
  /** The chat version the message was sent at. */
  message_id: BigIntColumn
  event_id: string
  author_id: string | null
  sender: string
  /** Null once retracted. */
  content: string | null
  sent_at: Timestamp
  edited_at: Timestamp | null
  retracted_at: Timestamp | null
  reactions: Json<Record<string, Record<string, string>>>
  changed_version: BigIntColumn
}

/** One row per chat version: the message it changed. */
export interface ChatChangesTable {
  chat_id: string
  version: BigIntColumn
  message_id: BigIntColumn
}

export interface ChatsTable {
  chat_id: string
  version: BigIntColumn
  message_count: BigIntColumn
  last_sender: string
  last_sent_at: ColumnType<Date, Date | string, Date | string>
}

export interface SearchIndexTable {
  chat_id: string
  message_id: BigIntColumn
  sender: string
  content: string
  sent_at: Timestamp
  document: Generated<string>
}

export interface VisitsTable {
  person_id: string
  chat_id: string
  seen_version: BigIntColumn
  visited_at: Generated<Date>
}

export interface ProjectorCheckpointsTable {
  name: string
  last_txid: Generated<string>
  last_gp: Generated<number>
  updated_at: Generated<Date>
}

export interface Database {
  streams: StreamsTable
  events: EventsTable
  messages: MessagesTable
  chat_changes: ChatChangesTable
  search_index: SearchIndexTable
  visits: VisitsTable
  chats: ChatsTable
  projector_checkpoints: ProjectorCheckpointsTable
}

export type DB = Kysely<Database>

export type EventRow = Selectable<EventsTable>
export type NewEventRow = Insertable<EventsTable>
export type MessageRow = Selectable<MessagesTable>
export type ChatRow = Selectable<ChatsTable>

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

export interface MessagesTable {
  chat_id: string
  version: BigIntColumn
  event_id: string
  sender: string
  content: string
  sent_at: ColumnType<Date, Date | string, Date | string>
}

export interface ChatsTable {
  chat_id: string
  version: BigIntColumn
  last_sender: string
  last_sent_at: ColumnType<Date, Date | string, Date | string>
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
  chats: ChatsTable
  projector_checkpoints: ProjectorCheckpointsTable
}

export type DB = Kysely<Database>

export type EventRow = Selectable<EventsTable>
export type NewEventRow = Insertable<EventsTable>
export type MessageRow = Selectable<MessagesTable>
export type ChatRow = Selectable<ChatsTable>

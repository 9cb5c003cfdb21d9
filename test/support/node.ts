import { sql } from 'kysely'
import type { DB } from '../../src/db/database.js'
import { startNode, type AppNode, type NodeProps } from '../../src/server.js'
import { freshDatabase, type TestDatabase } from './database.js'

export const SESSION_SECRET = 'test-session-secret'

export interface TestNode extends AppNode {
  database: TestDatabase | undefined
  databaseUrl: string
  /** Stops the node, and drops its database if the node created it. */
  close(): Promise<void>
}

/** A real app node (HTTP, projector, hub, LISTEN) on its own fresh database unless one is given. */
export async function startTestNode(props: Partial<NodeProps> = {}): Promise<TestNode> {
  const database = props.databaseUrl ? undefined : await freshDatabase()
  const databaseUrl = props.databaseUrl ?? database!.url
  const node = await startNode({
    sessionSecret: SESSION_SECRET,
    host: '127.0.0.1',
    port: 0,
    poolSize: 10,
    // Tests open many streams and chats from one address; the per-address budgets have tests of their own.
    maxStreamsPerAddress: 10_000,
    maxConnectionsPerAddress: 10_000,
    newChatsPerMinutePerAddress: 0,
    maxReadsPerAddress: 10_000,
    log: (level, message, error) => {
      if (process.env.TEST_LOG) console.error(`[node ${level}] ${message}`, error ?? '')
    },
    ...props,
    databaseUrl,
  })
  return {
    ...node,
    database,
    databaseUrl,
    close: async () => {
      await node.stop()
      await database?.drop()
    },
  }
}

/** Waits until the read model shows chat version `version` (a message or any other change) (projection is asynchronous, and the xmin horizon is cluster-wide). */
export async function waitForProjection(node: AppNode, chatId: string, version: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const row = await node.db.selectFrom('chats').select('version').where('chat_id', '=', chatId).executeTakeFirst()
    if (row && Number(row.version) >= version) return
    if (Date.now() > deadline) throw new Error(`chat ${chatId} was not projected up to version ${version} within ${timeoutMs} ms`)
    node.projector.wake()
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** Whether the projection's checkpoint covers the last event committed. */
export async function projectionCaughtUp(db: DB, name: string): Promise<boolean> {
  const { rows } = await sql<{ done: boolean }>`
    select coalesce((select (c.last_txid, c.last_gp) >= (e.transaction_id, e.global_position)
                     from projector_checkpoints c,
                          (select transaction_id, global_position from events order by transaction_id desc, global_position desc limit 1) e
                     where c.name = ${name}), false) as done
  `.execute(db)
  return rows[0]!.done
}

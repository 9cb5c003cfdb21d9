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

import { fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'

export interface Child<Ready> {
  process: ChildProcess
  ready: Ready
  /** Sends a request and resolves with the child's answer to it. */
  ask<T = unknown>(message: Record<string, unknown>): Promise<T>
  stop(): Promise<void>
}

let nextRequest = 1

/**
 * Starts a bench script in its own Node process (TypeScript through tsx) and
 * waits for its `{ type: 'ready' }` message. Requests and answers travel over
 * the IPC channel, matched by id, so the load generator never shares an event
 * loop with the server it measures.
 */
export async function startChild<Ready = Record<string, unknown>>(script: string, env: Record<string, string> = {}, nodeArgs: string[] = []): Promise<Child<Ready>> {
  const path = fileURLToPath(new URL(`../${script}`, import.meta.url))
  const child = fork(path, [], {
    execArgv: ['--import', 'tsx', '--expose-gc', ...nodeArgs, ...(process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [])],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>()
  let readyResolve!: (value: Ready) => void
  let readyReject!: (error: Error) => void
  const ready = new Promise<Ready>((resolve, reject) => {
    readyResolve = resolve
    readyReject = reject
  })
  child.on('message', (message: { type?: string; id?: number; error?: string }) => {
    if (message.type === 'ready') return readyResolve(message as Ready)
    if (message.id !== undefined && pending.has(message.id)) {
      const waiter = pending.get(message.id)!
      pending.delete(message.id)
      if (message.error) waiter.reject(new Error(message.error))
      else waiter.resolve(message)
    }
  })
  child.on('exit', (code, signal) => {
    const error = new Error(`${script} exited (${signal ?? code})`)
    readyReject(error)
    for (const waiter of pending.values()) waiter.reject(error)
    pending.clear()
  })
  const readyMessage = await ready
  return {
    process: child,
    ready: readyMessage,
    ask<T>(message: Record<string, unknown>) {
      const id = nextRequest++
      return new Promise<T>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (value: unknown) => void, reject })
        child.send({ ...message, id })
      })
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = once(child, 'exit')
      child.send({ type: 'stop' })
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
      await exited
      clearTimeout(timer)
    },
  }
}

type Handler = (message: Record<string, unknown>) => unknown | Promise<unknown>

/** The child side: announce readiness, answer requests, stop on `{ type: 'stop' }`. */
export function serveParent(ready: Record<string, unknown>, handlers: Record<string, Handler>, stop: () => Promise<void>): void {
  process.on('message', async (message: Record<string, unknown> & { type: string; id?: number }) => {
    if (message.type === 'stop') {
      await stop().catch((error) => console.error(error))
      process.disconnect?.()
      process.exit(0)
    }
    const handler = handlers[message.type]
    try {
      if (!handler) throw new Error(`no handler for ${message.type}`)
      const answer = (await handler(message)) ?? {}
      process.send!({ ...(answer as object), id: message.id })
    } catch (error) {
      process.send!({ id: message.id, error: error instanceof Error ? error.message : String(error) })
    }
  })
  // The parent died: nothing to report to any more.
  process.on('disconnect', () => process.exit(0))
  process.send!({ type: 'ready', ...ready })
}

/** Resident set size after a full collection, so garbage does not count as per-connection memory. */
export function settledRss(): number {
  for (let i = 0; i < 3; i++) globalThis.gc?.()
  return process.memoryUsage().rss
}

/** This process's CPU time so far (user + system), in ms. */
export function cpuMs(): { ms: number } {
  const { user, system } = process.cpuUsage()
  return { ms: (user + system) / 1000 }
}

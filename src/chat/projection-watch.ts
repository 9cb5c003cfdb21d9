import { LRUCache } from 'lru-cache'
import type { DB } from '../db/database.js'
import { headVersion } from './messages-projection.js'

interface Waiter {
  version: number
  wake: () => void
}

/**
 * Lets a request wait until the read model shows a chat's version. Woken by
 * this node's projector and by the `messages` notifications of every other
 * node's: one query to check, never a polling loop.
 */
export class ProjectionWatch {
  private readonly waiters = new Map<string, Set<Waiter>>()
  /** The highest version seen projected, per recently active chat: most waits then need no query at all. */
  private readonly seen = new LRUCache<string, number>({ max: 10_000 })

  /** The read model now shows `chatId` up to `version`. */
  projected(chatId: string, version: number): void {
    if ((this.seen.get(chatId) ?? 0) < version) this.seen.set(chatId, version)
    const waiting = this.waiters.get(chatId)
    if (!waiting) return
    for (const waiter of waiting) if (waiter.version <= version) waiter.wake()
  }

  /**
   * The highest version this node has seen projected, if it has seen the
   * chat at all: never ahead of the read model, at most a notification
   * behind it (a page drawn from it is then a moment old, and its stream
   * catches up from there).
   */
  head(chatId: string): number | undefined {
    return this.seen.get(chatId)
  }

  /** Resolves when `version` of the chat is projected, or after `timeoutMs` (the message is safe in the log either way). */
  async until(db: DB, chatId: string, version: number, timeoutMs: number): Promise<void> {
    if ((this.seen.get(chatId) ?? 0) >= version) return
    let timer: NodeJS.Timeout | undefined
    let waiter: Waiter | undefined
    const woken = new Promise<void>((resolve) => {
      waiter = { version, wake: resolve }
      timer = setTimeout(resolve, timeoutMs)
    })
    const waiting = this.waiters.get(chatId) ?? new Set()
    waiting.add(waiter!)
    this.waiters.set(chatId, waiting)
    try {
      // Registered first, then checked: a projection landing in between still wakes us.
      if ((await headVersion(db, chatId)) >= version) return
      await woken
    } finally {
      clearTimeout(timer)
      waiting.delete(waiter!)
      if (waiting.size === 0 && this.waiters.get(chatId) === waiting) this.waiters.delete(chatId)
    }
  }
}

import { EventEmitter } from 'node:events'
import type pg from 'pg'
import { createClient } from './connect.js'

export interface ListenerProps {
  connectionString: string
  channels: string[]
  applicationName?: string
  onError?: (error: unknown) => void
  /** Backoff between reconnect attempts: starts here, doubles, capped at maxBackoffMs. */
  minBackoffMs?: number
  maxBackoffMs?: number
}

/**
 * One LISTEN connection per process, shared by everything that wants
 * wake-ups. Reconnects by itself with backoff. Notifications sent while it
 * was disconnected are lost, so every (re)connect emits `connected`, and
 * listeners must catch up from the database on it.
 *
 * Events: `notification` (channel, payload), `connected` (after LISTEN is in
 * place, including the first time), `disconnected` (error).
 */
export class Listener extends EventEmitter {
  private client: pg.Client | undefined
  private stopped = false
  private backoff: number
  private retryTimer: NodeJS.Timeout | undefined
  /** Successful reconnects after the first connect. */
  reconnects = 0
  connected = false
  private everConnected = false

  constructor(private readonly props: ListenerProps) {
    super()
    this.backoff = props.minBackoffMs ?? 100
  }

  /** Resolves after the first attempt; a failed one keeps retrying in the background. */
  async start(): Promise<void> {
    await this.connect().catch(() => {})
  }

  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.retryTimer)
    const client = this.client
    this.client = undefined
    this.connected = false
    await client?.end().catch(() => {})
  }

  private async connect(): Promise<void> {
    const client = createClient(this.props.connectionString, this.props.applicationName ?? 'live-tea listener')
    let failed = false
    const fail = (error: unknown) => {
      if (failed) return
      failed = true
      if (this.client === client) this.client = undefined
      const wasConnected = this.connected
      this.connected = false
      client.end().catch(() => {})
      if (this.stopped) return
      this.props.onError?.(error)
      if (wasConnected) this.emit('disconnected', error)
      this.scheduleReconnect()
    }
    // A terminated backend surfaces here; without a listener it would crash the process.
    client.on('error', fail)
    client.on('end', () => fail(new Error('LISTEN connection ended')))
    client.on('notification', (message) => this.emit('notification', message.channel, message.payload ?? ''))
    try {
      await client.connect()
      for (const channel of this.props.channels) await client.query(`listen ${client.escapeIdentifier(channel)}`)
    } catch (error) {
      fail(error)
      throw error
    }
    if (this.stopped) {
      await client.end().catch(() => {})
      return
    }
    this.client = client
    this.connected = true
    if (this.everConnected) this.reconnects++
    this.everConnected = true
    this.backoff = this.props.minBackoffMs ?? 100
    this.emit('connected')
  }

  private scheduleReconnect(): void {
    clearTimeout(this.retryTimer)
    const delay = this.backoff
    this.backoff = Math.min(this.backoff * 2, this.props.maxBackoffMs ?? 5_000)
    this.retryTimer = setTimeout(() => this.connect().catch(() => {}), delay)
  }
}

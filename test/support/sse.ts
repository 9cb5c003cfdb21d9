import http from 'node:http'

export interface SseMessage {
  id: string
  data: string
}

/**
 * A minimal Server-Sent Events client over node:http, parsing the stream the
 * way browsers do, so tests see exactly what a browser would.
 */
export class SseClient {
  readonly messages: SseMessage[] = []
  readonly comments: string[] = []
  status = 0
  /** Every `retry:` reconnect hint the server sent, in milliseconds. */
  readonly retries: number[] = []
  headers: http.IncomingHttpHeaders = {}
  ended: Promise<void>
  private request!: http.ClientRequest
  private waiters: (() => void)[] = []
  private endResolve!: () => void
  private done = false

  private constructor() {
    this.ended = new Promise((resolve) => (this.endResolve = resolve))
  }

  static open(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
    const client = new SseClient()
    return new Promise((resolve, reject) => {
      client.request = http.get(url, { headers: { accept: 'text/event-stream', ...headers }, agent: false }, (res) => {
        client.status = res.statusCode ?? 0
        client.headers = res.headers
        res.setEncoding('utf8')
        let buffer = ''
        let data: string[] = []
        let id = ''
        let hasData = false
        res.on('data', (chunk: string) => {
          buffer += chunk
          const lines = buffer.split(/\r\n|\r|\n/)
          buffer = lines.pop() ?? ''
          for (const line of lines) {
            if (line === '') {
              if (hasData) client.messages.push({ id, data: data.join('\n') })
              data = []
              hasData = false
              continue
            }
            if (line.startsWith(':')) {
              client.comments.push(line.slice(1).trim())
              continue
            }
            const colon = line.indexOf(':')
            const field = colon < 0 ? line : line.slice(0, colon)
            let value = colon < 0 ? '' : line.slice(colon + 1)
            if (value.startsWith(' ')) value = value.slice(1)
            if (field === 'data') {
              data.push(value)
              hasData = true
            } else if (field === 'id') id = value
            else if (field === 'retry' && /^\d+$/.test(value)) client.retries.push(Number(value))
          }
          client.wake()
        })
        const finish = () => {
          client.done = true
          client.endResolve()
          client.wake()
        }
        res.on('end', finish)
        res.on('close', finish)
        resolve(client)
      })
      client.request.on('error', (error) => {
        if (client.status === 0) reject(error)
        client.done = true
        client.endResolve()
        client.wake()
      })
    })
  }

  get ids(): number[] {
    return this.messages.map((message) => Number(message.id))
  }

  /** Resolves when `predicate` holds, or rejects after `timeoutMs` saying what was seen. */
  async waitFor(predicate: (client: SseClient) => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!predicate(this)) {
      if (this.done) throw new Error(`stream ended before ${what}; got ids ${summarize(this.ids)}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for ${what}; got ids ${summarize(this.ids)}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 250))
        this.waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
  }

  waitForCount(count: number, timeoutMs = 10_000): Promise<void> {
    return this.waitFor((client) => client.messages.length >= count, timeoutMs, `${count} messages`)
  }

  close(): void {
    this.request.destroy()
  }

  private wake(): void {
    this.waiters.splice(0).forEach((wake) => wake())
  }
}

function summarize(ids: number[]): string {
  if (ids.length <= 12) return `[${ids.join(', ')}]`
  return `[${ids.slice(0, 5).join(', ')} … ${ids.slice(-5).join(', ')}] (${ids.length})`
}

/**
 * A subscriber that behaves like a browser tab: when its stream ends or
 * fails, it reconnects (to the next of `urls`, as a load balancer would) with
 * Last-Event-ID, and keeps every message it got, in order of arrival.
 */
export class ReconnectingSubscriber {
  readonly messages: SseMessage[] = []
  reconnects = 0
  private current: SseClient | undefined
  private stopped = false
  private turn = 0
  private readonly running: Promise<void>

  constructor(
    private readonly urls: () => string[],
    private readonly path: string,
  ) {
    this.running = this.loop()
  }

  get ids(): number[] {
    return this.messages.map((message) => Number(message.id))
  }

  async waitForCount(count: number, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (this.messages.length < count) {
      if (Date.now() > deadline) throw new Error(`timed out at ${this.messages.length} of ${count} messages (reconnects: ${this.reconnects})`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.current?.close()
    await this.running
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const urls = this.urls()
      const base = urls[this.turn++ % urls.length]!
      const lastId = this.messages.at(-1)?.id
      try {
        const client = await SseClient.open(`${base}${this.path}`, lastId ? { 'Last-Event-ID': lastId } : {})
        this.current = client
        if (client.status === 200) {
          let seen = 0
          const drain = () => {
            for (; seen < client.messages.length; seen++) this.messages.push(client.messages[seen]!)
          }
          const pump = setInterval(drain, 5)
          await client.ended
          clearInterval(pump)
          drain()
        } else {
          client.close()
        }
      } catch {
        // Node down: try the next one.
      }
      if (this.stopped) break
      this.reconnects++
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
}

import net from 'node:net'

/**
 * A TCP proxy between an app node and PostgreSQL that a test can cut and
 * restore, to play "the database went away" without disturbing the server
 * other test files share.
 */
export class TcpProxy {
  private readonly server: net.Server
  private readonly sockets = new Set<net.Socket>()
  private open = true
  port = 0

  private constructor(private readonly target: net.NetConnectOpts) {
    this.server = net.createServer((client) => this.accept(client))
  }

  /** `target` may name a Unix socket's folder in `?host=` (the embedded server's URL does), as libpq reads it. */
  static async start(target: URL): Promise<TcpProxy> {
    const port = Number(target.port || 5432)
    const socketDir = target.searchParams.get('host')
    const proxy = new TcpProxy(socketDir?.startsWith('/') ? { path: `${socketDir}/.s.PGSQL.${port}` } : { host: target.hostname, port })
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', () => resolve()))
    proxy.port = (proxy.server.address() as net.AddressInfo).port
    return proxy
  }

  /** The same URL, through the proxy. */
  via(url: string): string {
    const proxied = new URL(url)
    proxied.hostname = '127.0.0.1'
    proxied.port = String(this.port)
    proxied.searchParams.delete('host')
    return proxied.toString()
  }

  /** Drops every connection and refuses new ones until restore(). */
  cut(): void {
    this.open = false
    for (const socket of this.sockets) socket.destroy()
    this.sockets.clear()
  }

  restore(): void {
    this.open = true
  }

  async close(): Promise<void> {
    this.cut()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private accept(client: net.Socket): void {
    if (!this.open) return void client.destroy()
    const upstream = net.connect(this.target)
    for (const socket of [client, upstream]) {
      this.sockets.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => {
        this.sockets.delete(socket)
        client.destroy()
        upstream.destroy()
      })
    }
    client.pipe(upstream)
    upstream.pipe(client)
  }
}

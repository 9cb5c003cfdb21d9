import type { IncomingMessage } from 'node:http'
import proxyaddr from 'proxy-addr'
import type { TrustProxy } from '../config.js'

/**
 * The client's address for requests served outside Express (the event
 * stream), read exactly as Express reads `req.ip` with the same "trust
 * proxy" setting: behind a trusted proxy, from X-Forwarded-For; otherwise the
 * socket's peer. Budgets per client (streams, connections, new chats) key on
 * it, so a proxy that is not trusted counts as one client.
 */
export function clientAddress(trust: TrustProxy | undefined): (req: IncomingMessage) => string {
  const trusted = compileTrust(trust)
  return (req) => proxyaddr(req, trusted)
}

/** Express's own reading of the setting: true, a hop count, or addresses, subnets and names. */
function compileTrust(trust: TrustProxy | undefined): (address: string, hop: number) => boolean {
  if (trust === true) return () => true
  if (typeof trust === 'number') return (_address, hop) => hop < trust
  if (Array.isArray(trust) && trust.length > 0) return proxyaddr.compile(trust)
  return () => false
}

/**
 * Counts what each client holds (open streams, say) against a cap, so that
 * no single address can take what everyone shares. Memory is bounded by the
 * number of clients holding something at all.
 */
export class PerClient {
  private readonly held = new Map<string, number>()

  constructor(readonly cap: number) {}

  /** Takes one for `client`; false (nothing taken) when it holds `cap` already. */
  take(client: string): boolean {
    const count = this.held.get(client) ?? 0
    if (count >= this.cap) return false
    this.held.set(client, count + 1)
    return true
  }

  give(client: string): void {
    const count = (this.held.get(client) ?? 0) - 1
    if (count > 0) this.held.set(client, count)
    else this.held.delete(client)
  }

  count(client: string): number {
    return this.held.get(client) ?? 0
  }
}

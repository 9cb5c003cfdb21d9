import { isIP } from 'node:net'

/**
 * The settings main.ts reads from the environment, parsed and checked in
 * one place before anything starts. Pure: no I/O, so every rule is tested
 * without a process. A wrong value stops the app with a line naming the
 * variable, instead of running on NaN or on a misread proxy setting.
 */
export interface Settings {
  port: number
  postsPerMinutePerAddress: number
  maxSubscribers: number
  /** Budgets per client address: no one address takes what everyone shares. */
  maxStreamsPerAddress: number
  maxConnectionsPerAddress: number
  newChatsPerMinutePerAddress: number
  maxReadsPerAddress: number
  trustProxy: TrustProxy
  logLevel: string
  /** Only the limits that are set: an absent one keeps its default (a key holding undefined would override it). */
  readiness: { maxLagSeconds?: number; maxLagEvents?: number }
}

/** What Express's "trust proxy" takes: trust all or none, a hop count, or addresses, subnets and names. */
export type TrustProxy = boolean | number | string[]

/** Every problem found in the environment, one readable line each. */
export class SettingsError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'))
    this.name = 'SettingsError'
  }
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

type Env = Record<string, string | undefined>

export function readSettings(env: Env): Settings {
  const problems: string[] = []
  const read = <T>(name: string, parse: (value: string) => T, fallback: T): T => {
    const value = env[name]?.trim()
    if (value === undefined || value === '') return fallback
    try {
      return parse(value)
    } catch (error) {
      problems.push(`${name}=${JSON.stringify(env[name])}: ${(error as Error).message}`)
      return fallback
    }
  }
  const settings: Settings = {
    port: read('PORT', integer(0, 65_535), 3000),
    postsPerMinutePerAddress: read('POSTS_PER_MINUTE_PER_ADDRESS', integer(0), 600),
    maxSubscribers: read('MAX_SUBSCRIBERS', integer(1), 19_000),
    maxStreamsPerAddress: read('MAX_STREAMS_PER_ADDRESS', integer(1), 20),
    maxConnectionsPerAddress: read('MAX_CONNECTIONS_PER_ADDRESS', integer(1), 256),
    newChatsPerMinutePerAddress: read('NEW_CHATS_PER_MINUTE_PER_ADDRESS', integer(0), 20),
    maxReadsPerAddress: read('MAX_READS_PER_ADDRESS', integer(1), 4),
    trustProxy: read('TRUST_PROXY', parseTrustProxy, false),
    logLevel: read('LOG_LEVEL', oneOf(LOG_LEVELS), 'info'),
    readiness: {},
  }
  const maxLagSeconds = read('READY_MAX_LAG_SECONDS', decimal, undefined)
  const maxLagEvents = read('READY_MAX_LAG_EVENTS', integer(0), undefined)
  if (maxLagSeconds !== undefined) settings.readiness.maxLagSeconds = maxLagSeconds
  if (maxLagEvents !== undefined) settings.readiness.maxLagEvents = maxLagEvents
  if (problems.length > 0) throw new SettingsError(problems)
  return settings
}

/** A whole number within bounds; "1e3", "0x10", "3_000" and "12abc" are typos, not numbers. */
export function integer(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    const parsed = /^\d+$/.test(value) ? Number(value) : NaN
    if (!Number.isSafeInteger(parsed) || parsed < min || parsed > max) {
      throw new Error(max === Number.MAX_SAFE_INTEGER ? `must be a whole number of at least ${min}` : `must be a whole number from ${min} to ${max}`)
    }
    return parsed
  }
}

/** A non-negative number such as 30 or 0.5. */
export function decimal(value: string): number {
  if (!/^\d+(\.\d+)?$/.test(value)) throw new Error('must be a non-negative number such as 30 or 0.5')
  return Number(value)
}

function oneOf(choices: string[]): (value: string) => string {
  return (value) => {
    if (!choices.includes(value)) throw new Error(`must be one of ${choices.join(', ')}`)
    return value
  }
}

const PROXY_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal'])

/**
 * TRUST_PROXY read the way Express documents "trust proxy": `true`/`false`,
 * a hop count (`1`: the first proxy in front of the app), or a comma-separated
 * list of addresses, subnets (`10.0.0.0/8`, `fd00::/8`, `10.0.0.0/255.0.0.0`)
 * and the names `loopback`, `linklocal`, `uniquelocal`. Express itself would
 * take the string "1" as the address 0.0.0.1 and throw on "true" at the
 * first request, so the value is parsed here and handed over typed.
 *
 * @example parseTrustProxy('1') // 1
 * @example parseTrustProxy('loopback, 10.0.0.0/8') // ['loopback', '10.0.0.0/8']
 */
export function parseTrustProxy(value: string): TrustProxy {
  const text = value.trim()
  if (/^true$/i.test(text)) return true
  if (/^false$/i.test(text) || text === '') return false
  if (/^\d+$/.test(text)) return integer(0)(text)
  const entries = text.split(',').map((entry) => entry.trim())
  for (const entry of entries) {
    if (entry === '') throw new Error('has an empty entry in its comma-separated list')
    if (/^\d+$/.test(entry)) throw new Error(`"${entry}": a hop count stands alone, it cannot be part of a list`)
    if (!PROXY_NAMES.has(entry.toLowerCase()) && !isAddressOrSubnet(entry)) {
      throw new Error(`"${entry}" is not true/false, a hop count, an IP address, a subnet (address/prefix) or one of loopback, linklocal, uniquelocal`)
    }
  }
  return entries.map((entry) => (PROXY_NAMES.has(entry.toLowerCase()) ? entry.toLowerCase() : entry))
}

function isAddressOrSubnet(entry: string): boolean {
  const slash = entry.indexOf('/')
  const address = slash < 0 ? entry : entry.slice(0, slash)
  const family = isIP(address)
  if (family === 0) return false
  if (slash < 0) return true
  const range = entry.slice(slash + 1)
  if (/^\d+$/.test(range)) return Number(range) <= (family === 4 ? 32 : 128)
  return family === 4 && isIP(range) === 4 && isNetmask(range)
}

/** 255.255.240.0 is a netmask; 255.0.255.0 is not (its one-bits must be leading). */
function isNetmask(mask: string): boolean {
  const bits = mask.split('.').reduce((value, octet) => value * 256 + Number(octet), 0)
  const inverted = 0xffffffff - bits
  return (inverted & (inverted + 1)) === 0
}

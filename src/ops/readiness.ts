import type { DB } from '../db/database.js'
import { readProjectorLag, type ProjectorLag } from './figures.js'

export interface ReadinessLimits {
  /** Not ready when the oldest unprojected event is older than this. */
  maxLagSeconds: number
  /** Not ready when more events than this wait for the projector. */
  maxLagEvents: number
  /** Not ready when the database takes longer than this to answer. */
  timeoutMs: number
}

export const DEFAULT_READINESS: ReadinessLimits = { maxLagSeconds: 30, maxLagEvents: 50_000, timeoutMs: 2_000 }

export interface Readiness {
  ready: boolean
  /** Why not, in words an operator can act on; empty when ready. */
  reasons: string[]
  /** The lag of the projection that gates readiness (the one pages and streams are served from). */
  lag: ProjectorLag | undefined
  /** Every projection's lag, the gating one first. */
  lags: { projection: string; lag: ProjectorLag }[]
  /** The database's own error when it did not answer: for the log and for operators, not for anyone who asks. */
  cause?: Error
}

/**
 * Ready means: the database answers, and the read model pages and streams are
 * served from (the first projection) is fresh enough. Other projections are
 * reported but do not gate: a search index added to a running system
 * backfills from the first event for as long as that takes, and taking every
 * node out of the load balancer meanwhile would serve nobody; search answers
 * what is indexed so far. Lag is read live from the database (one
 * checkpoint-relative query per projection), so it holds whichever node's
 * projector is doing the work.
 */
export async function checkReadiness(db: DB, projections: string[], limits: ReadinessLimits): Promise<Readiness> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${limits.timeoutMs} ms`)), limits.timeoutMs)
  })
  let lags: { projection: string; lag: ProjectorLag }[]
  try {
    lags = await Promise.race([Promise.all(projections.map(async (projection) => ({ projection, lag: await readProjectorLag(db, projection) }))), timeout])
  } catch (error) {
    return { ready: false, reasons: ['database unreachable'], lag: undefined, lags: [], cause: error instanceof Error ? error : new Error(String(error)) }
  } finally {
    clearTimeout(timer)
  }
  const { projection, lag } = lags[0]!
  const reasons: string[] = []
  if (lag.events > limits.maxLagEvents) reasons.push(`projector "${projection}" is ${lag.events} events behind (limit ${limits.maxLagEvents})`)
  if (lag.seconds > limits.maxLagSeconds) {
    reasons.push(`projector "${projection}" is ${lag.seconds.toFixed(1)} s behind: its oldest unprojected event is that old (limit ${limits.maxLagSeconds} s)`)
  }
  return { ready: reasons.length === 0, reasons, lag, lags }
}

import { messagesProjection } from './chat/messages-projection.js'
import type { Projection } from './projector/projector.js'
import { searchProjection } from './search/search-projection.js'

/**
 * Every projection of the event log, each with its own checkpoint row. The
 * first is the one pages and live streams are served from (it gates
 * readiness). To add one: write a Projection (a name, `project` for a batch
 * of committed events, `reset` for a rebuild) and list it here; a running
 * system backfills it from the first event, in batches, on the next start.
 */
export const PROJECTIONS: readonly Projection[] = [messagesProjection, searchProjection]

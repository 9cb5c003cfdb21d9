import { readFileSync } from 'node:fs'
import ejs from 'ejs'
import { helpers, VIEWS_DIR } from '../http/views.js'
import type { DashboardView } from './sampler.js'

const CLOCK = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit', timeZone: 'UTC' })

/** The dashboard figures partial compiled once; the sampler renders it once per sample for every open dashboard. */
export function dashboardRenderer(): (view: DashboardView) => string {
  const filename = VIEWS_DIR + 'partials/_dashboard.ejs'
  const template = ejs.compile(readFileSync(filename, 'utf8'), { filename })
  // Blank lines would only lengthen every SSE frame.
  return (view) => template({ ...helpers, clockTime: (date: Date) => CLOCK.format(date), ...view }).trim().replace(/\n\s*\n/g, '\n')
}

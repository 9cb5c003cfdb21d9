export interface SparklineProps {
  width?: number
  height?: number
  /** Read by screen readers in place of the picture. */
  label: string
  /** Points the full width holds; fewer values sit at the right end, so a young history grows leftwards instead of stretching. */
  slots?: number
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

/**
 * A small inline SVG line of the values, oldest on the left, scaled from 0
 * to the largest value. Missing values (undefined) break the line instead
 * of pretending to be zero. Inline SVG needs no image source, so the strict
 * CSP is untouched; colour comes from CSS (currentColor).
 */
export function sparkline(values: (number | undefined)[], { width = 120, height = 28, label, slots = values.length }: SparklineProps): string {
  const max = Math.max(1e-9, ...values.filter((value): value is number => value !== undefined && Number.isFinite(value)))
  const span = Math.max(slots, values.length)
  const step = span > 1 ? width / (span - 1) : 0
  const offset = span - values.length
  const pad = 1.5
  const runs: [string, string][][] = []
  let run: [string, string][] = []
  values.forEach((value, index) => {
    if (value === undefined || !Number.isFinite(value)) {
      if (run.length > 0) runs.push(run)
      run = []
      return
    }
    const x = span > 1 ? (offset + index) * step : width
    const y = height - pad - (Math.max(0, value) / max) * (height - 2 * pad)
    run.push([round(x), round(y)])
  })
  if (run.length > 0) runs.push(run)
  // A lone value has no neighbour to draw a line to: a dot keeps it visible.
  const lines = runs
    .map((points) => (points.length === 1 ? `<circle cx="${points[0]![0]}" cy="${points[0]![1]}" r="1.5"/>` : `<polyline points="${points.map((p) => p.join(',')).join(' ')}"/>`))
    .join('')
  const safeLabel = label.replace(/[&<>"']/g, (c) => ESCAPES[c]!)
  return `<svg class="sparkline" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="${safeLabel}" preserveAspectRatio="none">${lines}</svg>`
}

function round(n: number): string {
  return String(Math.round(n * 10) / 10)
}

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { LatencyWindow } from '../../src/ops/latency-window.js'
import { withoutSecrets } from '../../src/ops/logger.js'
import { sparkline } from '../../src/ops/sparkline.js'

describe('sparkline', () => {
  test('scales from 0 to the largest value, oldest on the left, in the viewBox', () => {
    const svg = sparkline([0, 5, 10], { label: 'x', width: 100, height: 20 })
    assert.match(svg, /viewBox="0 0 100 20"/)
    assert.match(svg, /<polyline points="0,18.5 50,10 100,1.5"\/>/)
  })

  test('a missing value breaks the line instead of drawing a zero', () => {
    const svg = sparkline([1, 2, undefined, 3, 4], { label: 'x', width: 40, height: 10 })
    assert.equal((svg.match(/<polyline /g) ?? []).length, 2)
    assert.doesNotMatch(svg, /,8.5 20,/)
  })

  test('a young history sits at the right end of its slots', () => {
    const svg = sparkline([2, 2], { label: 'x', width: 100, height: 10, slots: 11 })
    assert.match(svg, /points="90,1.5 100,1.5"/)
  })

  test('the label is escaped', () => {
    assert.match(sparkline([], { label: '<b>"lag"</b>' }), /aria-label="&lt;b&gt;&quot;lag&quot;&lt;\/b&gt;"/)
  })
})

describe('LatencyWindow', () => {
  test('nearest-rank percentiles of what was observed inside the window only', () => {
    const window = new LatencyWindow({ windowMs: 1000 })
    window.observe(500, 0)
    for (let ms = 1; ms <= 100; ms++) window.observe(ms, 2000)
    assert.deepEqual(window.percentiles([50, 99, 100], 2500), [50, 99, 100])
    assert.deepEqual(window.percentiles([50], 3500), [undefined])
  })

  test('keeps at most maxSamples, the newest', () => {
    const window = new LatencyWindow({ windowMs: 10_000, maxSamples: 10 })
    for (let i = 1; i <= 100; i++) window.observe(i, i)
    assert.deepEqual(window.percentiles([0, 100], 100), [91, 100])
  })
})

describe('withoutSecrets', () => {
  test('replaces token values and keeps the rest of the URL', () => {
    assert.equal(withoutSecrets('/dashboard?token=abc&x=1'), '/dashboard?token=REDACTED&x=1')
    assert.equal(withoutSecrets('/chats/tea?after=3'), '/chats/tea?after=3')
  })
})

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { dataFrame, toFrame } from '../../src/live/hub.js'

test('a fragment becomes one data: line per line, whatever its line breaks, and a blank line', () => {
  assert.equal(dataFrame('<p>one</p>'), 'data: <p>one</p>\n\n')
  assert.equal(dataFrame('a\nb\r\nc\rd'), 'data: a\ndata: b\ndata: c\ndata: d\n\n')
  assert.equal(dataFrame('a\n\nb\n'), 'data: a\ndata: \ndata: b\ndata: \n\n')
  assert.equal(dataFrame(''), 'data: \n\n')
  assert.equal(toFrame(7, 'x\ny'), 'id: 7\ndata: x\ndata: y\n\n')
})

/**
 * A form field kept after its request (a commandId remembered for repeats
 * and for the typing line) must not keep the whole body alive with it.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import express from 'express'
import request from 'supertest'
import { formBody } from '../../src/http/form-body.js'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

test('a kept field does not hold on to the body it came in', async () => {
  const kept: string[] = []
  const app = express()
  app.post('/x', formBody(64 * 1024), (req: express.Request, res: express.Response) => {
    kept.push(req.body.commandId)
    res.sendStatus(204)
  })
  const agent = request(app)
  // 4,000 Cyrillic characters, as a browser encodes them: 24 KB of body around a 36-character id.
  const content = encodeURIComponent('Ж'.repeat(4000))
  const bodies = 200
  gc()
  const before = process.memoryUsage().heapUsed
  for (let i = 0; i < bodies; i++) {
    await agent.post('/x').type('form').send(`content=${content}&commandId=${crypto.randomUUID()}`).expect(204)
  }
  gc()
  const grown = process.memoryUsage().heapUsed - before
  assert.equal(kept.length, bodies)
  assert.equal(kept[0]!.length, 36)
  // Holding the bodies is 200 × 24 KB = 4.8 MB; the ids alone are a few KB.
  assert.ok(grown < 2 * 2 ** 20, `the heap grew by ${(grown / 2 ** 20).toFixed(1)} MB for ${bodies} kept ids`)
})

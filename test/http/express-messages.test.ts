/**
 * The node's server makes requests and responses that already have the
 * app's prototypes, so Express's per-request change of prototype (which
 * made V8 promote much of each request) changes nothing: see
 * src/http/express-messages.ts.
 */
import assert from 'node:assert/strict'
import { createServer, IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import express from 'express'
import { expressMessages } from '../../src/http/express-messages.js'
import { startTestNode } from '../support/node.js'

test("requests and responses are born with the app's prototypes, and are still Node's own", async () => {
  const app = express()
  const seen: { request: boolean; response: boolean; nodeRequest: boolean; nodeResponse: boolean }[] = []
  let bornWith: { request: boolean; response: boolean } | undefined
  app.post('/x', express.json(), (req, res) => {
    seen.push({ request: Object.getPrototypeOf(req) === app.request, response: Object.getPrototypeOf(res) === app.response, nodeRequest: req instanceof IncomingMessage, nodeResponse: res instanceof ServerResponse })
    res.status(201).json({ got: req.body })
  })
  const server = createServer(expressMessages(app), (req, res) => {
    // Before Express sees them: what Node made.
    bornWith = { request: Object.getPrototypeOf(req) === app.request, response: Object.getPrototypeOf(res) === app.response }
    app(req, res)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  try {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/x`
    for (let i = 0; i < 2; i++) {
      const answer = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n: i }) })
      assert.equal(answer.status, 201)
      assert.deepEqual(await answer.json(), { got: { n: i } })
    }
    assert.deepEqual(bornWith, { request: true, response: true })
    assert.deepEqual(seen, Array(2).fill({ request: true, response: true, nodeRequest: true, nodeResponse: true }))
  } finally {
    await new Promise((resolve) => server.close(resolve))
  }
})

test("the node's own server makes them so: before Express sees a request, its prototype already carries the app", async () => {
  const node = await startTestNode()
  const bornWithApp: boolean[] = []
  // Ahead of the node's handler: what Node made, before Express's setPrototypeOf could run.
  node.server.prependListener('request', (req: IncomingMessage) => void bornWithApp.push(Object.prototype.hasOwnProperty.call(Object.getPrototypeOf(req), 'app')))
  try {
    assert.equal((await fetch(`${node.url}/healthz`)).status, 200)
    assert.equal((await fetch(`${node.url}/chats/tea`)).status, 200)
    assert.deepEqual(bornWithApp, [true, true])
  } finally {
    await node.close()
  }
})

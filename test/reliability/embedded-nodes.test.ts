import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, test } from 'node:test'
import request from 'supertest'
import { startProcessNode } from '../support/process-node.js'
import { until } from '../support/until.js'

/*
 * Two app nodes on the embedded default (no DATABASE_URL, one data folder),
 * as the README's "more than one node" invites: the first starts the server,
 * the second reuses it. Stopping the first must not take the server from
 * the second; the last one to stop turns it off.
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const dataDir = join(ROOT, '.data', `test-nodes-${randomBytes(4).toString('hex')}`)
const pidFile = join(dataDir, 'postgres', 'pgdata', 'postmaster.pid')
const EMBEDDED = { DATABASE_URL: '', DATA_DIR: dataDir }
const togetherDir = `${dataDir}-together`

after(() => Promise.all([rm(dataDir, { recursive: true, force: true }), rm(togetherDir, { recursive: true, force: true })]))

const post = (url: string, content: string) => request(url).post('/chats/shared/messages').set('accept', 'application/json').send({ content })
const serverPid = async () => Number((await readFile(pidFile, 'utf8')).split('\n')[0])

test('the node that started the embedded server stops without taking it from another node; the last one to stop turns it off', async () => {
  const first = await startProcessNode('', undefined, EMBEDDED)
  const second = await startProcessNode('', undefined, EMBEDDED)
  try {
    assert.match(second.output(), /already running on port \d+ \(pid \d+\), reusing it/)
    await post(second.url, 'before').expect(201)
    assert.equal(await first.kill('SIGTERM'), 0, first.output())
    assert.match(first.output(), /left running on port \d+: \d+ other session\(s\) still use it/)
    await post(second.url, 'after the first node stopped').expect(201)
    let contents: string[] = []
    await until('both messages projected', async () => {
      contents = (await request(second.url).get('/chats/shared/messages').set('accept', 'application/json').expect(200)).body.messages.map((message: { content: string }) => message.content)
      return contents.length === 2
    })
    assert.deepEqual(contents, ['before', 'after the first node stopped'])
    assert.ok(existsSync(pidFile))
  } finally {
    first.child.kill('SIGKILL')
    assert.equal(await second.kill('SIGTERM'), 0, second.output())
  }
  await until('the server stopped with the last node', () => !existsSync(pidFile))
})

test('a node whose embedded server went away answers 503 with Retry-After, not 500', async () => {
  const node = await startProcessNode('', undefined, EMBEDDED)
  try {
    await post(node.url, 'while it runs').expect(201)
    // What the other node's stop did before it counted sessions: a fast shutdown, which removes the Unix socket.
    process.kill(await serverPid(), 'SIGINT')
    await until('the server stopped', () => !existsSync(pidFile))
    const res = await post(node.url, 'with no server').expect(503)
    assert.ok(Number(res.headers['retry-after']) > 0)
    assert.match(res.body.error, /database is unreachable/)
  } finally {
    assert.equal(await node.kill('SIGTERM'), 0, node.output())
  }
})

test('two nodes started at once on an empty data folder both come up on one server', async () => {
  const env = { DATABASE_URL: '', DATA_DIR: togetherDir }
  const nodes = await Promise.all([startProcessNode('', undefined, env), startProcessNode('', undefined, env)])
  try {
    const outputs = nodes.map((node) => node.output()).join('\n')
    assert.equal(outputs.match(/initialising embedded postgres/g)?.length, 1, outputs)
    assert.equal(outputs.match(/reusing it/g)?.length, 1, outputs)
    for (const [i, node] of nodes.entries()) await post(node.url, `from node ${i}`).expect(201)
  } finally {
    for (const node of nodes) assert.equal(await node.kill('SIGTERM'), 0, node.output())
  }
  await until('the server stopped with the last node', () => !existsSync(join(togetherDir, 'postgres', 'pgdata', 'postmaster.pid')))
})

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { after, before, describe, test } from 'node:test'
import request from 'supertest'
import { parseTrustProxy, readSettings, SettingsError, type TrustProxy } from '../src/config.js'
import { freshDatabase, type TestDatabase } from './support/database.js'
import { startProcessNode } from './support/process-node.js'

const ROOT = fileURLToPath(new URL('../', import.meta.url))

describe('TRUST_PROXY is read the way Express documents "trust proxy"', () => {
  const readings: [string, TrustProxy][] = [
    ['1', 1],
    ['2', 2],
    ['0', 0],
    ['true', true],
    ['TRUE', true],
    ['false', false],
    ['loopback', ['loopback']],
    ['Loopback, linklocal,uniquelocal', ['loopback', 'linklocal', 'uniquelocal']],
    ['10.0.0.1', ['10.0.0.1']],
    ['10.0.0.0/8, 192.168.1.0/24', ['10.0.0.0/8', '192.168.1.0/24']],
    ['10.0.0.0/255.0.0.0', ['10.0.0.0/255.0.0.0']],
    ['::1, fd00::/8', ['::1', 'fd00::/8']],
    ['loopback, 203.0.113.7', ['loopback', '203.0.113.7']],
  ]
  for (const [value, expected] of readings) {
    test(`"${value}" reads as ${JSON.stringify(expected)}`, () => {
      assert.deepEqual(parseTrustProxy(value), expected)
    })
  }

  const refusals: [string, RegExp][] = [
    ['yes', /"yes" is not true\/false, a hop count, an IP address/],
    ['10.0.0.0/33', /"10\.0\.0\.0\/33"/],
    ['fd00::/129', /"fd00::\/129"/],
    ['10.0.0.0/255.0.255.0', /"10\.0\.0\.0\/255\.0\.255\.0"/],
    ['300.1.1.1', /"300\.1\.1\.1"/],
    ['loopback,,10.0.0.1', /empty entry/],
    ['1, loopback', /hop count stands alone/],
    ['-1', /"-1"/],
    ['1.5', /"1\.5"/],
  ]
  for (const [value, message] of refusals) {
    test(`"${value}" is refused with a reason`, () => {
      assert.throws(() => parseTrustProxy(value), message)
    })
  }
})

describe('settings are checked before anything starts', () => {
  test('defaults when nothing is set', () => {
    assert.deepEqual(readSettings({}), {
      port: 3000,
      postsPerMinutePerAddress: 600,
      maxSubscribers: 19_000,
      maxStreamsPerAddress: 20,
      maxConnectionsPerAddress: 256,
      newChatsPerMinutePerAddress: 20,
      maxReadsPerAddress: 4,
      trustProxy: false,
      logLevel: 'info',
      readiness: {},
    })
  })

  test('values as written, blank meaning unset', () => {
    const settings = readSettings({
      PORT: '8080',
      POSTS_PER_MINUTE_PER_ADDRESS: '0',
      MAX_SUBSCRIBERS: ' 500 ',
      MAX_STREAMS_PER_ADDRESS: '4',
      MAX_CONNECTIONS_PER_ADDRESS: '64',
      NEW_CHATS_PER_MINUTE_PER_ADDRESS: '0',
      MAX_READS_PER_ADDRESS: '2',
      TRUST_PROXY: '1',
      LOG_LEVEL: 'debug',
      READY_MAX_LAG_SECONDS: '2.5',
      READY_MAX_LAG_EVENTS: '',
    })
    assert.deepEqual(settings, {
      port: 8080,
      postsPerMinutePerAddress: 0,
      maxSubscribers: 500,
      maxStreamsPerAddress: 4,
      maxConnectionsPerAddress: 64,
      newChatsPerMinutePerAddress: 0,
      maxReadsPerAddress: 2,
      trustProxy: 1,
      logLevel: 'debug',
      readiness: { maxLagSeconds: 2.5 },
    })
  })

  test('every wrong value is reported at once, each naming its variable', () => {
    const env = {
      PORT: '80a',
      POSTS_PER_MINUTE_PER_ADDRESS: '1e3',
      MAX_SUBSCRIBERS: '0',
      TRUST_PROXY: 'yes please',
      LOG_LEVEL: 'loud',
      READY_MAX_LAG_SECONDS: 'NaN',
      READY_MAX_LAG_EVENTS: '-5',
    }
    const error = (() => {
      try {
        readSettings(env)
      } catch (caught) {
        return caught
      }
      assert.fail('wrong settings were accepted')
    })()
    assert.ok(error instanceof SettingsError)
    assert.equal(error.problems.length, Object.keys(env).length)
    for (const [name, value] of Object.entries(env)) {
      assert.ok(error.problems.some((problem) => problem.startsWith(`${name}=${JSON.stringify(value)}: `)), `${name} is named: ${error.problems.join(' | ')}`)
    }
    assert.match(error.problems.find((problem) => problem.startsWith('PORT='))!, /whole number from 0 to 65535/)
  })

  test('PORT out of range is refused', () => {
    assert.throws(() => readSettings({ PORT: '70000' }), /PORT="70000": must be a whole number from 0 to 65535/)
  })
})

describe('the app process and its settings', () => {
  let database: TestDatabase
  before(async () => (database = await freshDatabase()))
  after(() => database.drop())

  test('a wrong numeric setting stops the app at once: exit code 1 and one line naming the variable, no stack', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: ROOT,
      // An unreachable database: if the settings were not checked first, the app would get as far as connecting.
      env: { ...process.env, DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none', PORT: '80a', MAX_SUBSCRIBERS: 'ten', READY_MAX_LAG_SECONDS: 'soon', NODE_ENV: 'test' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let output = ''
    child.stdout.on('data', (chunk) => (output += chunk))
    child.stderr.on('data', (chunk) => (output += chunk))
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
    assert.equal(code, 1, output)
    assert.match(output, /^Live Tea cannot start: PORT="80a": must be a whole number from 0 to 65535$/m)
    assert.match(output, /^Live Tea cannot start: MAX_SUBSCRIBERS="ten": /m)
    assert.match(output, /^Live Tea cannot start: READY_MAX_LAG_SECONDS="soon": /m)
    assert.doesNotMatch(output, /\n\s+at /, 'a wrong setting is not a crash')
  })

  test('TRUST_PROXY=1 trusts the one proxy in front: its X-Forwarded-Proto makes cookies Secure, its X-Forwarded-For makes per-address limits per client', async () => {
    const app = await startProcessNode(database.url, undefined, { TRUST_PROXY: '1', POSTS_PER_MINUTE_PER_ADDRESS: '2' })
    try {
      const page = await request(app.url).get('/').set('X-Forwarded-Proto', 'https').expect(200)
      assert.match(String(page.headers['set-cookie']), /; Secure/)
      const post = (client: string) => request(app.url).post('/chats/behind-proxy/messages').set('X-Forwarded-For', client).send({ content: `from ${client}` })
      await post('203.0.113.1').expect(201)
      await post('203.0.113.1').expect(201)
      await post('203.0.113.1').expect(429)
      await post('203.0.113.2').expect(201)
    } finally {
      assert.equal(await app.kill(), 0)
    }
  })

  test('TRUST_PROXY=true starts, and trusts every proxy', async () => {
    const app = await startProcessNode(database.url, undefined, { TRUST_PROXY: 'true' })
    try {
      const page = await request(app.url).get('/').set('X-Forwarded-Proto', 'https').expect(200)
      assert.match(String(page.headers['set-cookie']), /; Secure/)
    } finally {
      assert.equal(await app.kill(), 0)
    }
  })
})

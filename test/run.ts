/**
 * `npm test`: runs every test/**\/*.test.ts with node:test against a real
 * PostgreSQL. With DATABASE_URL set, each test file gets its own fresh
 * database on that server; without it, on an embedded server started here.
 * Extra arguments are passed to node --test (e.g. a file, --test-name-pattern).
 */
import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { startEmbeddedPostgres } from '../src/db/embedded.js'
import { missingChromium } from './support/chromium-path.js'

const root = resolve(import.meta.dirname, '..')
const args = process.argv.slice(2)
const files = args.some((arg) => arg.endsWith('.ts'))
  ? []
  : readdirSync(join(root, 'test'), { recursive: true, encoding: 'utf8' })
      .filter((file) => file.endsWith('.test.ts'))
      .sort()
      .map((file) => join('test', file))

// A missing browser stops the run before it starts, with one line saying what
// to install; it is never a skip, so CI without Chromium fails.
const runsBrowserTests = [...args, ...files].some((arg) => /(^|[\\/])test[\\/]browser[\\/]/.test(arg))
const noChromium = runsBrowserTests ? missingChromium() : undefined
if (noChromium) {
  console.error(noChromium)
  process.exit(1)
}

const embedded = process.env.DATABASE_URL
  ? undefined
  : await startEmbeddedPostgres({ dataDir: join(root, '.data', 'test-postgres'), port: 54339, database: 'postgres' })
const adminUrl = process.env.DATABASE_URL ?? embedded!.url
console.log(`tests use ${process.env.DATABASE_URL ? 'DATABASE_URL' : 'an embedded PostgreSQL'} (${adminUrl.replace(/:[^:@/]*@/, ':***@')})`)

const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=2', ...args, ...files], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, TEST_ADMIN_URL: adminUrl },
})
const code: number = await new Promise((done) => child.on('exit', (exitCode, signal) => done(exitCode ?? (signal ? 1 : 0))))
await embedded?.stop()
process.exit(code)

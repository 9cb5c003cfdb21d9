import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, test } from 'node:test'
import { ADMIN_URL } from './support/database.js'

const ROOT = fileURLToPath(new URL('../', import.meta.url))

/**
 * `npm test -- <args>` as its own process group, on this run's database
 * server, with CHROMIUM_PATH as given. Past the deadline the whole group is
 * killed (a browser test whose launch failed can leave its node running).
 */
async function npmTest(args: string[], chromiumPath: string, deadlineMs = 60_000): Promise<{ code: number | string | null; output: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: ADMIN_URL, CHROMIUM_PATH: chromiumPath }
  // Set by this test runner for its own children: the inner run must report as a run of its own.
  delete env.NODE_TEST_CONTEXT
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/run.ts', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  let output = ''
  child.stdout.on('data', (chunk) => (output += chunk))
  child.stderr.on('data', (chunk) => (output += chunk))
  const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), deadlineMs)
  const code = await new Promise<number | string | null>((resolve) => child.on('exit', (exitCode, signal) => resolve(exitCode ?? signal)))
  clearTimeout(timer)
  return { code, output }
}

describe('npm test on a machine without Chromium', () => {
  test('stops before any test runs, with one line saying what to install or set, and fails', async () => {
    const { code, output } = await npmTest(['test/browser/pages.test.ts'], '/nonexistent/chromium', 30_000)
    assert.notEqual(code, 0, 'a missing browser is a failure, never a skip')
    const lines = output.trim().split('\n')
    assert.equal(lines.length, 1, output)
    assert.match(lines[0]!, /CHROMIUM_PATH=\/nonexistent\/chromium is not an executable/)
    assert.match(lines[0]!, /apt-get install -y chromium/)
  })

  test('runs tests that need no browser as before', async () => {
    const { code, output } = await npmTest(['test/chat/chat.test.ts'], '/nonexistent/chromium')
    assert.equal(code, 0, output)
    assert.match(output, /# fail 0/)
  })
})

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { withStartLock } from '../../src/db/embedded.js'

/*
 * The embedded server's start lock, without a server: nodes started
 * together on one data folder take turns to initialise and start it, also
 * when the last one to hold the lock died holding it.
 */
const dir = join(tmpdir(), `live-tea-start-lock-${randomBytes(4).toString('hex')}`)
after(() => rm(dir, { recursive: true, force: true }))

/** Above Linux's highest pid (2^22): a holder that cannot be alive. */
const DEAD_PID = 4_194_305

async function contenders(count: number): Promise<number> {
  let inside = 0
  let most = 0
  await Promise.all(
    Array.from({ length: count }, async (_, i) => {
      // Not all at the same instant: some look at the lock while another is taking it over.
      await new Promise((resolve) => setTimeout(resolve, i % 4))
      await withStartLock(dir, async () => {
        most = Math.max(most, ++inside)
        await new Promise((resolve) => setTimeout(resolve, 5))
        inside--
      })
    }),
  )
  return most
}

test('starts that come together take turns', async () => {
  await mkdir(dir, { recursive: true })
  assert.equal(await contenders(20), 1)
})

test('a lock left by a process that died is taken over by one start at a time, never by two', async () => {
  await mkdir(dir, { recursive: true })
  for (let round = 0; round < 10; round++) {
    await writeFile(join(dir, 'start.lock'), String(DEAD_PID))
    assert.equal(await contenders(8), 1, `round ${round}: only one start inside the lock at a time`)
  }
})

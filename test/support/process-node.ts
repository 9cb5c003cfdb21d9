import { spawn, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { SESSION_SECRET } from './node.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** The real app as its own OS process (`src/main.ts`), for kill -9 and SIGTERM tests. */
export interface ProcessNode {
  url: string
  port: number
  child: ChildProcess
  /** Resolves with the exit code (or the signal name) once the process ended. */
  exited: Promise<number | string>
  output(): string
  kill(signal?: NodeJS.Signals): Promise<number | string>
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/** `env` adds to (or overrides) the environment the process gets. */
export async function startProcessNode(databaseUrl: string, port?: number, env: Record<string, string> = {}): Promise<ProcessNode> {
  port ??= await freePort()
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: ROOT,
    env: { ...process.env, DATABASE_URL: databaseUrl, PORT: String(port), SESSION_SECRET, NODE_ENV: 'test', POSTS_PER_MINUTE_PER_ADDRESS: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout!.on('data', (chunk) => (output += chunk))
  child.stderr!.on('data', (chunk) => (output += chunk))
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')))
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 20_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`app process exited early:\n${output}`)
    const ready = await fetch(`${url}/healthz`).then((res) => res.ok, () => false)
    if (ready) break
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`app process did not become ready:\n${output}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return {
    url,
    port,
    child,
    exited,
    output: () => output,
    kill: (signal = 'SIGTERM') => {
      child.kill(signal)
      return exited
    },
  }
}

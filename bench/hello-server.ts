/** P6's floor: the runtime alone (Node, tsx) serving a page, nothing else. */
import { createServer } from 'node:http'

const server = createServer((_req, res) => void res.end('<!doctype html><p>hello</p>'))
server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1')
process.on('SIGTERM', () => server.close(() => process.exit(0)))

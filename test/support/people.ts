import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import request from 'supertest'
import { SESSION_COOKIE } from '../../src/http/session.js'

/** Someone with a session, as a browser would hold it. */
export interface Person {
  name: string
  /** `live_tea_session=…`, ready for a Cookie header. */
  cookie: string
}

/** Picks a name on the home page's form and keeps the session cookie it sets. */
export async function join(url: string, name: string): Promise<Person> {
  const res = await request(url).post('/session').type('form').send({ name }).expect(303)
  const cookie = ([res.headers['set-cookie'] ?? []].flat() as string[]).find((line) => line.startsWith(`${SESSION_COOKIE}=`))?.split(';')[0]
  assert.ok(cookie, 'POST /session sets the session cookie')
  return { name, cookie }
}

/** Commands as JSON with the person's cookie; each answers the chat version it appended (or the current one). */
export function as(url: string, person: Person, chatId: string) {
  const post = async (path: string, body: object) => {
    const res = await request(url).post(`/chats/${chatId}${path}`).set('cookie', person.cookie).send({ commandId: randomUUID(), ...body })
    assert.ok(res.status === 200 || res.status === 201, `${path}: ${res.status} ${res.text}`)
    return res.body.version as number
  }
  return {
    send: (content: string) => post('/messages', { content }),
    edit: (messageId: number, content: string) => post(`/messages/${messageId}/edits`, { content }),
    retract: (messageId: number) => post(`/messages/${messageId}/retraction`, {}),
    react: (messageId: number, emoji: string) => post(`/messages/${messageId}/reactions`, { emoji }),
  }
}

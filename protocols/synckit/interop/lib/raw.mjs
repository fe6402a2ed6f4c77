// A raw SyncKit client written from the wire format (protocols/synckit/WIRE.md), not from
// the SDK: the tests use it to read what the server holds, independently of the SDK under test.
import WebSocket from 'ws'

export const TYPE = {
  auth: 0x01, auth_success: 0x02, auth_error: 0x03,
  subscribe: 0x10, unsubscribe: 0x11, sync_request: 0x12, sync_response: 0x13,
  delta: 0x20, ack: 0x21, ping: 0x30, pong: 0x31,
  awareness_update: 0x40, awareness_subscribe: 0x41, awareness_state: 0x42,
  delta_batch: 0x50, error: 0xff,
}
const NAME = Object.fromEntries(Object.entries(TYPE).map(([k, v]) => [v, k]))

export function encodeFrame(type, payload) {
  const body = Buffer.from(JSON.stringify(payload), 'utf8')
  const frame = Buffer.alloc(13 + body.length)
  frame.writeUInt8(TYPE[type], 0)
  frame.writeBigInt64BE(BigInt(Date.now()), 1)
  frame.writeUInt32BE(body.length, 9)
  body.copy(frame, 13)
  return frame
}

export function decodeFrame(data) {
  const buf = Buffer.from(data)
  if (buf.length < 13) throw new Error(`frame of ${buf.length} bytes`)
  const code = buf.readUInt8(0)
  const length = buf.readUInt32BE(9)
  if (13 + length > buf.length) throw new Error(`frame declares ${length} payload bytes, has ${buf.length - 13}`)
  return { type: NAME[code] ?? `0x${code.toString(16)}`, payload: JSON.parse(buf.subarray(13, 13 + length).toString('utf8')) }
}

export class RawClient {
  static async connect(url) {
    const socket = new WebSocket(url)
    socket.binaryType = 'nodebuffer'
    const client = new RawClient(socket)
    await new Promise((resolve, reject) => {
      socket.once('open', resolve)
      socket.once('error', reject)
    })
    return client
  }

  constructor(socket) {
    this.socket = socket
    this.inbox = []
    this.waiters = []
    this.closed = null
    socket.on('message', (data, isBinary) => {
      this.inbox.push(isBinary ? decodeFrame(data) : { type: 'text', payload: data.toString() })
      this.waiters.splice(0).forEach((wake) => wake())
    })
    socket.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() }
      this.waiters.splice(0).forEach((wake) => wake())
    })
  }

  send(type, payload) {
    this.socket.send(encodeFrame(type, payload))
  }

  /** The first received message matching `pred` (removed from the inbox), or a rejection after `ms`. */
  async next(pred, ms = 5000, what = 'a matching frame') {
    const deadline = Date.now() + ms
    for (;;) {
      const index = this.inbox.findIndex(pred)
      if (index >= 0) return this.inbox.splice(index, 1)[0]
      if (this.closed) throw new Error(`socket closed (${this.closed.code} ${this.closed.reason}) while waiting for ${what}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no ${what} within ${ms} ms; got ${JSON.stringify(this.inbox).slice(0, 2000)}`)
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  /** subscribe and return the sync_response payload for `documentId`. */
  async subscribe(documentId) {
    this.send('subscribe', { documentId })
    const reply = await this.next(
      (m) => (m.type === 'sync_response' && m.payload.documentId === documentId) || m.type === 'error',
      10000, `sync_response for ${documentId}`)
    if (reply.type === 'error') throw new Error(`subscribe ${documentId}: ${JSON.stringify(reply.payload)}`)
    return reply.payload
  }

  close() {
    this.socket.close()
  }
}

/** What the server holds for a document, as a fresh connection's sync_response shows it. */
export async function serverDocument(url, documentId) {
  const client = await RawClient.connect(url)
  try {
    return await client.subscribe(documentId)
  } finally {
    client.close()
  }
}

// Persistence across a restart, driven by the Rust test (tests/it/synckit_interop.rs):
//
//   SYNCKIT_PHASE=write SYNCKIT_URL=… SYNCKIT_DOC=<id> node restart.mjs
//     two real clients write values of every kind and converge; prints one JSON line
//     {"state":…,"maxClock":N} (N = the highest clock counter the clients saw).
//   (the harness restarts Junction on the same database)
//   SYNCKIT_PHASE=read SYNCKIT_URL=… SYNCKIT_DOC=<id> SYNCKIT_EXPECT='<that line>' node restart.mjs
//     a new client's sync_response holds the same state and a clock at least N; clients that
//     write again (one of them with an old clientId) converge, and their echoes beat N.
// Exit status 0 on success; on failure the reason is on stderr.
import assert from 'node:assert/strict'
import { converge, newClient, openDoc, recordIncoming, serverUrl } from './lib/harness.mjs'
import { serverDocument } from './lib/raw.mjs'

const phase = process.env.SYNCKIT_PHASE
const id = process.env.SYNCKIT_DOC
const maxOf = (clock) => Math.max(...Object.values(clock ?? {}))

async function write() {
  const a = await newClient('client-A')
  const b = await newClient('user-B')
  const deltas = recordIncoming(b, 'delta')
  const da = await openDoc(a, id)
  const db = await openDoc(b, id)
  await da.update({ title: 'persisted', n: 3.25, ok: true, none: null, nested: { a: [1, { b: 'c' }] }, text: 'ünïcødé 🎉' })
  for (let i = 0; i < 12; i++) await db.set('counter', i) // B's own counter climbs to 12
  await da.set('shared', 'A wrote last')
  const expected = { title: 'persisted', n: 3.25, ok: true, none: null, nested: { a: [1, { b: 'c' }] }, text: 'ünïcødé 🎉', counter: 11, shared: 'A wrote last' }
  await converge([da, db], expected)
  const maxClock = Math.max(...deltas.map((d) => maxOf(d.clock)))
  process.stdout.write(`${JSON.stringify({ state: expected, maxClock })}\n`)
}

async function read() {
  const before = JSON.parse(process.env.SYNCKIT_EXPECT)
  const c = await newClient('client-C')
  const responses = recordIncoming(c, 'sync_response')
  const dc = await openDoc(c, id)
  const response = responses.find((r) => r.documentId === id)
  assert.ok(response, 'sync_response after the restart')
  assert.deepStrictEqual(response.state, before.state, 'the document survived the restart')
  assert.ok(maxOf(response.clock) >= before.maxClock,
    `the clock survived the restart: ${JSON.stringify(response.clock)} vs ${before.maxClock} before`)

  // Same clientIds as before the restart, fresh processes (memory storage): their counters start
  // again from the clock the server sends them.
  const a = await newClient('client-A')
  const b = await newClient('user-B')
  const deltasB = recordIncoming(b, 'delta')
  const da = await openDoc(a, id)
  const db = await openDoc(b, id)
  await db.set('shared', 'B after restart')
  await converge([da, db, dc], { shared: 'B after restart' })
  await da.set('counter', 'A after restart')
  await converge([da, db, dc], { counter: 'A after restart' })
  const echo = deltasB.filter((d) => d.field === 'counter').at(-1)
  assert.ok(maxOf(echo.clock) > before.maxClock, `post-restart echo clock ${JSON.stringify(echo.clock)} beats ${before.maxClock}`)
  const server = await serverDocument(serverUrl(), id)
  assert.deepStrictEqual(server.state, { ...before.state, shared: 'B after restart', counter: 'A after restart' })
  process.stdout.write('read ok\n')
}

try {
  if (!id) throw new Error('SYNCKIT_DOC is not set')
  if (phase === 'write') await write()
  else if (phase === 'read') await read()
  else throw new Error(`SYNCKIT_PHASE must be write or read, not ${phase}`)
  process.exit(0)
} catch (error) {
  console.error(error)
  process.exit(1)
}

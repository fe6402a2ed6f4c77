// Concurrent writes to one field from several real clients: whatever the interleaving, every client
// ends with the same value, and it is the value the server holds.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { converge, disposeAll, newClient, openDoc, recordIncoming, serverUrl, uniqueDoc } from '../lib/harness.mjs'
import { serverDocument } from '../lib/raw.mjs'

after(disposeAll)

// Client ids on both sides of "server", the writer id the SDK uses for the server's deltas: on a
// counter tie "user-…" would keep its own value and "client-…" would take the server's.
const CLIENT_IDS = ['client-A', 'user-B', 'zed-C']

async function clients(id) {
  const kits = await Promise.all(CLIENT_IDS.map((c) => newClient(c)))
  const docs = await Promise.all(kits.map((k) => openDoc(k, id)))
  return { kits, docs }
}

/** Once every write is acked (so committed), the server's value is final: every client must reach it and keep it. */
async function settled(docs, id, field) {
  const held = (await serverDocument(serverUrl(), id)).state[field]
  assert.notEqual(held, undefined, `the server holds ${field}`)
  await converge(docs, { [field]: held })
  // Stay agreed: a late delta must not split them again.
  await new Promise((resolve) => setTimeout(resolve, 300))
  for (const doc of docs) assert.deepStrictEqual(doc.get()[field], held)
  return held
}

test('three clients write one field at the same time, 15 rounds', { timeout: 120000 }, async () => {
  const id = uniqueDoc('race')
  const { docs } = await clients(id)
  for (let round = 0; round < 15; round++) {
    await Promise.all(docs.map((doc, i) => doc.set('winner', `${CLIENT_IDS[i]}#${round}`)))
    const value = await settled(docs, id, 'winner')
    assert.match(value, new RegExp(`#${round}$`), `round ${round} converged on a value from this round`)
  }
})

test('bursts of un-awaited writes from every client to one field', { timeout: 120000 }, async () => {
  const id = uniqueDoc('burst')
  const { docs } = await clients(id)
  const writes = []
  for (let n = 0; n < 10; n++) {
    for (const [i, doc] of docs.entries()) writes.push(doc.set('hot', { by: CLIENT_IDS[i], n }))
  }
  await Promise.all(writes)
  const value = await settled(docs, id, 'hot')
  assert.equal(value.n, 9, `the last write of some client wins: ${JSON.stringify(value)}`)
})

test('a client whose counter is far ahead does not make the others ignore later writes', { timeout: 120000 }, async () => {
  // A's own counter climbs to 30; B and C then write with small counters of their own. The server's
  // clock must stay above every counter so that each later write still wins on every client.
  const id = uniqueDoc('counters')
  const { docs } = await clients(id)
  const [a, b, c] = docs
  for (let i = 0; i < 30; i++) await a.set('spam', i)
  await b.set('shared', 'from B')
  assert.equal(await settled(docs, id, 'shared'), 'from B')
  await c.set('shared', 'from C')
  assert.equal(await settled(docs, id, 'shared'), 'from C')
  await a.set('shared', 'from A')
  assert.equal(await settled(docs, id, 'shared'), 'from A')
  await b.set('shared', 'B again')
  assert.equal(await settled(docs, id, 'shared'), 'B again')
})

test('the server echoes each write to its sender with a clock above the sender counter', { timeout: 60000 }, async () => {
  const id = uniqueDoc('echo')
  const a = await newClient('user-A') // sorts above "server": a tie would keep A's own value
  const deltas = recordIncoming(a, 'delta')
  const da = await openDoc(a, id)
  for (let i = 1; i <= 5; i++) await da.set('f', i)
  await converge([da], { f: 5 })
  const echoes = deltas.filter((d) => d.documentId === id && d.field === 'f')
  assert.ok(echoes.length >= 1, 'the sender gets its own write back')
  const last = echoes.at(-1)
  assert.equal(last.value, 5)
  assert.equal(last.clientId, 'server')
  const max = Math.max(...Object.values(last.clock))
  assert.ok(max > 5, `echo clock ${JSON.stringify(last.clock)} exceeds the sender's counter 5`)
})

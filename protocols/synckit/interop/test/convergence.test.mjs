// Two and three real SDK clients converge on every JSON value type; the server holds the same.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { BASE_URL, converge, disposeAll, newClient, openDoc, serverUrl, uniqueDoc } from '../lib/harness.mjs'
import { serverDocument } from '../lib/raw.mjs'

after(disposeAll)

const VALUES = {
  string: 'hello',
  empty: '',
  int: 42,
  negativeFloat: -1.5,
  zero: 0,
  bigSafeInt: Number.MAX_SAFE_INTEGER,
  yes: true,
  no: false,
  nothing: null,
  nested: { title: 'x', tags: ['a', 'b'], meta: { depth: { deeper: [1, { k: null }] } } },
  emptyObject: {},
  array: [1, 'two', false, null, { three: 3 }, [4]],
  emptyArray: [],
  unicode: 'héllo wörld — 日本語 — 🎉👩‍👩‍👧 — עברית — \u0301e — "quotes" \\ back\\slash\n\ttab',
}

test('two clients: every value type written by one reaches the other, and the server holds it', { timeout: 60000 }, async () => {
  const id = uniqueDoc('types')
  const a = await newClient('client-A')
  const b = await newClient('client-B')
  const da = await openDoc(a, id)
  const db = await openDoc(b, id)

  for (const [field, value] of Object.entries(VALUES)) await da.set(field, value)
  await converge([da, db], VALUES)

  const server = await serverDocument(serverUrl(), id)
  assert.deepStrictEqual(server.state, VALUES)
})

test('two clients: writes in both directions, to different fields and to the same field', { timeout: 60000 }, async () => {
  const id = uniqueDoc('both-ways')
  const a = await newClient('client-A')
  const b = await newClient('client-B')
  const da = await openDoc(a, id)
  const db = await openDoc(b, id)

  await da.set('fromA', 'a1')
  await db.set('fromB', { n: 1 })
  await converge([da, db], { fromA: 'a1', fromB: { n: 1 } })

  // B overwrites A's field after seeing it; A overwrites it back: each later write must win everywhere.
  await db.set('fromA', 'b-over-a')
  await converge([da, db], { fromA: 'b-over-a' })
  await da.set('fromA', 'a-again')
  await converge([da, db], { fromA: 'a-again' })
  await da.update({ x: 1, y: [2], z: 'three' })
  await converge([da, db], { x: 1, y: [2], z: 'three' })

  const server = await serverDocument(serverUrl(), id)
  assert.deepStrictEqual(server.state, { fromA: 'a-again', fromB: { n: 1 }, x: 1, y: [2], z: 'three' })
})

test('three clients converge on fields each of them wrote', { timeout: 60000 }, async () => {
  const id = uniqueDoc('three')
  const kits = await Promise.all(['client-A', 'client-B', 'client-C'].map((c) => newClient(c)))
  const docs = await Promise.all(kits.map((k) => openDoc(k, id)))

  await Promise.all([
    docs[0].set('title', 'from A'),
    docs[1].set('count', 7),
    docs[2].set('done', true),
  ])
  await docs[1].set('list', ['x', { y: null }])
  await docs[2].set('title', 'from C')
  const expected = { title: 'from C', count: 7, done: true, list: ['x', { y: null }] }
  await converge(docs, expected)
  assert.deepStrictEqual((await serverDocument(serverUrl(), id)).state, expected)
})

test('a 100 KB string reaches two other clients intact', { timeout: 60000 }, async () => {
  const id = uniqueDoc('big')
  const kits = await Promise.all(['client-A', 'client-B', 'client-C'].map((c) => newClient(c)))
  const docs = await Promise.all(kits.map((k) => openDoc(k, id)))
  // 100 KB of varied text (multi-byte characters included), so truncation or re-encoding shows.
  let big = ''
  for (let i = 0; big.length < 100 * 1024; i++) big += `${i}:ä€😀;`
  big = big.slice(0, 100 * 1024)
  await docs[0].set('body', big)
  await converge(docs, { body: big })
  assert.equal(docs[2].get().body.length, 100 * 1024)
  assert.equal((await serverDocument(serverUrl(), id)).state.body, big)
})

test('plain document ids like doc-1 work (no demo whitelist)', { timeout: 60000 }, async () => {
  // Ids from the SDK's own docs and tests; the reference refuses them with its playground whitelist.
  for (const id of ['doc-1', 'test-doc-1', 'stress-test-todos', 'user_42:notes']) {
    const a = await newClient(`client-A-${id}`)
    const b = await newClient(`client-B-${id}`)
    const da = await openDoc(a, id)
    const db = await openDoc(b, id)
    const marker = `${id}@${Date.now()}`
    await da.set('marker', marker)
    await converge([da, db], { marker })
  }
  assert.ok(BASE_URL)
})

// A client that joins after writes were made. SDK 0.1.1 ignores sync_response.state (its handler
// only merges the clock: see protocols/synckit/SDK-NOTES.md), so it does not show existing fields
// until they are written again; the server must still send them, and everything written later must
// converge on the joiner too.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { converge, disposeAll, newClient, openDoc, recordIncoming, serverUrl, uniqueDoc } from '../lib/harness.mjs'
import { serverDocument } from '../lib/raw.mjs'

after(disposeAll)

test('a late joiner receives the state in sync_response, then converges on new writes', { timeout: 60000 }, async () => {
  const id = uniqueDoc('late')
  const a = await newClient('client-A')
  const da = await openDoc(a, id)
  await da.update({ title: 'before', n: 1, obj: { k: [1] } })
  await da.set('n', 2)

  const b = await newClient('client-B')
  const responses = recordIncoming(b, 'sync_response')
  const db = await openDoc(b, id)

  // What the server sent the SDK: the whole state and a non-empty numeric clock.
  const response = responses.find((r) => r.documentId === id)
  assert.ok(response, 'B got a sync_response for the document')
  assert.deepStrictEqual(response.state, { title: 'before', n: 2, obj: { k: [1] } })
  assert.equal(typeof response.clock, 'object')
  assert.ok(Object.keys(response.clock).length > 0, `non-empty clock: ${JSON.stringify(response.clock)}`)
  for (const v of Object.values(response.clock)) assert.equal(typeof v, 'number')

  // The real 0.1.1 behaviour: the state is not applied, but the clock is merged.
  assert.deepStrictEqual(db.get(), {}, 'SDK 0.1.1 does not apply sync_response.state')
  for (const [key, value] of Object.entries(response.clock)) assert.ok(db.getVectorClock()[key] >= value)

  // New writes from either side converge on both, including a field B only knew from the server.
  await da.set('after', 'A wrote this after B joined')
  await converge([da, db], { after: 'A wrote this after B joined' })
  await db.set('title', 'B renamed it')
  await converge([da, db], { title: 'B renamed it' })
  await db.set('n', 3)
  await converge([da, db], { n: 3 })
  assert.deepStrictEqual((await serverDocument(serverUrl(), id)).state,
    { title: 'B renamed it', n: 3, obj: { k: [1] }, after: 'A wrote this after B joined' })
})

test('syncDocument() (sync_request) is answered for a joined document', { timeout: 60000 }, async () => {
  const id = uniqueDoc('sync-request')
  const a = await newClient('client-A')
  const da = await openDoc(a, id)
  await da.set('x', 1)
  const responses = recordIncoming(a, 'sync_response')
  await a.syncDocument(id)
  const response = responses.find((r) => r.documentId === id)
  assert.ok(response)
  assert.deepStrictEqual(response.state, { x: 1 })
  assert.equal(a.getSyncState(id).state, 'synced')
})

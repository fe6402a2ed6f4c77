// Junction with protocols.synckit.allow_anonymous = false. The SDK's SyncKit class cannot send an
// `auth` message, so it authenticates with `?token=<jwt>` in serverUrl. Needs SYNCKIT_EXPECT_AUTH=1,
// SYNCKIT_TOKEN (may read and write every document) and SYNCKIT_READONLY_TOKEN (may read, not write);
// skipped otherwise (the anonymous run of the suite has no tokens to offer).
import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'
import { BASE_URL, converge, disposeAll, newClient, openDoc, recordIncoming, serverUrl, uniqueDoc, waitFor } from '../lib/harness.mjs'
import { RawClient, serverDocument } from '../lib/raw.mjs'

after(disposeAll)

const enabled = process.env.SYNCKIT_EXPECT_AUTH === '1'
const skip = enabled ? false : 'set SYNCKIT_EXPECT_AUTH=1 with SYNCKIT_TOKEN and SYNCKIT_READONLY_TOKEN against a server with allow_anonymous=false'

describe('token auth through ?token=', { skip, concurrency: true }, () => {
  test('clients with ?token= sync as usual', { timeout: 60000 }, async () => {
    const id = uniqueDoc('token')
    const a = await newClient('client-A', { url: serverUrl(process.env.SYNCKIT_TOKEN) })
    const b = await newClient('client-B', { url: serverUrl(process.env.SYNCKIT_TOKEN) })
    const errors = recordIncoming(a, 'error')
    const da = await openDoc(a, id)
    const db = await openDoc(b, id)
    await da.set('title', 'authenticated')
    await db.set('n', 1)
    await converge([da, db], { title: 'authenticated', n: 1 })
    assert.deepStrictEqual(errors, [])
  })

  test('without a token the SDK cannot subscribe or write; nothing is stored or broadcast', { timeout: 60000 }, async () => {
    const id = uniqueDoc('no-token')
    const watcher = await newClient('client-W', { url: serverUrl(process.env.SYNCKIT_TOKEN) })
    const watched = recordIncoming(watcher, 'delta')
    await openDoc(watcher, id)

    const anon = await newClient('client-anon', { url: BASE_URL })
    const errors = recordIncoming(anon, 'error')
    const doc = anon.document(id) // starts init(): subscribe, refused
    const init = doc.init()
    await waitFor(() => errors.length > 0, { what: 'an ERROR for the unauthenticated subscribe' })
    assert.equal(errors[0].error, 'Not authenticated')
    // The SDK's set() waits for an ACK that never comes: "ACK timeout" after 5 s.
    await Promise.all([
      assert.rejects(init, /Sync response timeout/),
      assert.rejects(doc.set('stolen', 'value'), /ACK timeout/),
    ])
    assert.ok(errors.length >= 2 && errors.every((e) => e.error === 'Not authenticated'), JSON.stringify(errors))
    const server = await serverDocument(serverUrl(process.env.SYNCKIT_TOKEN), id)
    assert.deepStrictEqual(server.state, {}, 'nothing stored')
    assert.deepStrictEqual(watched.filter((d) => d.documentId === id), [], 'nothing broadcast')
  })

  test('a read-only token subscribes but its writes are refused with Permission denied', { timeout: 60000 }, async () => {
    const id = uniqueDoc('read-only')
    const writer = await newClient('client-W', { url: serverUrl(process.env.SYNCKIT_TOKEN) })
    const dw = await openDoc(writer, id)
    await dw.set('title', 'by the writer')

    const reader = await newClient('client-R', { url: serverUrl(process.env.SYNCKIT_READONLY_TOKEN) })
    const errors = recordIncoming(reader, 'error')
    const writerDeltas = recordIncoming(writer, 'delta')
    const dr = await openDoc(reader, id) // read is allowed: sync_response arrives
    await assert.rejects(dr.set('title', 'by the reader'), /ACK timeout/)
    assert.equal(errors[0]?.error, 'Permission denied', JSON.stringify(errors))
    assert.equal(errors[0]?.details?.documentId, id)
    assert.deepStrictEqual((await serverDocument(serverUrl(process.env.SYNCKIT_TOKEN), id)).state, { title: 'by the writer' })
    assert.deepStrictEqual(writerDeltas.filter((d) => d.value === 'by the reader'), [], 'nothing broadcast')

    // The reader still receives what others write.
    await dw.set('title', 'second')
    await converge([dr], { title: 'second' })
  })

  test('a bad token gets auth_error and close 1008', { timeout: 30000 }, async () => {
    const client = await RawClient.connect(serverUrl('not.a.jwt'))
    const reply = await client.next((m) => m.type === 'auth_error', 5000, 'auth_error')
    assert.equal(reply.payload.error, 'Authentication failed')
    await waitFor(() => client.closed, { ms: 5000, what: 'the server to close the socket' })
    assert.equal(client.closed.code, 1008)
    assert.equal(client.closed.reason, 'Authentication failed')
  })
})

// SDK 0.1.1's set() waits for the server's ACK (5 s timeout, then it throws and queues the write):
// every set() must resolve, well before that timeout. The durations are printed, not asserted
// beyond the SDK's own limit.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { converge, disposeAll, newClient, openDoc, percentile, recordIncoming, serverUrl, timed, uniqueDoc } from '../lib/harness.mjs'
import { serverDocument } from '../lib/raw.mjs'

after(disposeAll)

const SDK_ACK_TIMEOUT_MS = 5000

test('set() resolves on the ACK for every write; ACKs echo the SDK messageId', { timeout: 120000 }, async () => {
  const id = uniqueDoc('ack')
  const a = await newClient('client-A')
  const b = await newClient('client-B')
  const acks = recordIncoming(a, 'ack')
  const errors = recordIncoming(a, 'error')
  const da = await openDoc(a, id)
  const db = await openDoc(b, id)

  const durations = []
  const writes = 40
  for (let i = 0; i < writes; i++) {
    const { ms } = await timed(() => da.set(`f${i % 5}`, { i }))
    durations.push(ms)
  }
  console.error(`# set() round trip over ${writes} writes: p50 ${percentile(durations, 50).toFixed(1)} ms, ` +
    `p99 ${percentile(durations, 99).toFixed(1)} ms, max ${Math.max(...durations).toFixed(1)} ms ` +
    '(the SDK polls for its ACK every 100 ms)')
  for (const ms of durations) assert.ok(ms < SDK_ACK_TIMEOUT_MS, `a set() took ${ms} ms`)

  assert.deepStrictEqual(errors, [], 'the server sent no error')
  assert.equal(acks.length, writes, 'one ACK per write')
  for (const ack of acks) assert.match(String(ack.messageId), /^msg-/, `ACK carries the SDK's messageId: ${JSON.stringify(ack)}`)
  assert.equal(new Set(acks.map((ack) => ack.messageId)).size, writes, 'each write acked once')
  assert.equal(a.getSyncState(id).pendingOperations, 0)
  assert.equal(a.getNetworkStatus().queueSize, 0, 'nothing fell into the offline queue (ACK timeout)')

  const expected = { f0: { i: 35 }, f1: { i: 36 }, f2: { i: 37 }, f3: { i: 38 }, f4: { i: 39 } }
  await converge([da, db], expected)
  assert.deepStrictEqual((await serverDocument(serverUrl(), id)).state, expected)
})

test('update() of several fields resolves after one ACK per field', { timeout: 60000 }, async () => {
  const id = uniqueDoc('update')
  const a = await newClient('client-A')
  const acks = recordIncoming(a, 'ack')
  const da = await openDoc(a, id)
  const { ms } = await timed(() => da.update({ a: 1, b: 'two', c: [3], d: null }))
  assert.ok(ms < SDK_ACK_TIMEOUT_MS, `update() took ${ms} ms`)
  assert.equal(acks.length, 4)
  assert.deepStrictEqual((await serverDocument(serverUrl(), id)).state, { a: 1, b: 'two', c: [3], d: null })
})

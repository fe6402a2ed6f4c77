// 0.3.1 client: push rejections.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  Effect,
  ev,
  errorText,
  makeBackend,
  pullAll,
  pushExpectingError,
  randomStoreId,
  runTest,
  waitConnected,
  within,
} from './helpers.mjs'

test('5. stale parent rejected: after 1,2 pushing seq 2 parent 1 fails with InvalidPushError', async () => {
  const storeId = randomStoreId('stale')
  await runTest(
    Effect.gen(function* () {
      const backend = yield* makeBackend(storeId)
      yield* backend.push([ev(1), ev(2)]).pipe(within(5_000, 'push [1,2]'))

      const err = yield* pushExpectingError(backend, [ev(2, { args: { id: 'other' } })])
      assert.equal(err._tag, 'InvalidPushError', errorText(err))
      assert.equal(err.reason._tag, 'Unexpected', errorText(err))
      assert.ok(
        err.reason.message.includes('Invalid parent event number. Received e1 but expected e2'),
        `unexpected message: ${err.reason.message}`,
      )

      // The store is unchanged, and the right parent is still accepted on the same connection.
      assert.deepEqual(
        (yield* pullAll(storeId)).events.map((e) => [e.seqNum, e.args.id]),
        [
          [1, 't1'],
          [2, 't2'],
        ],
      )
      yield* backend.push([ev(3)]).pipe(within(5_000, 'push [3] after the rejection'))
      assert.deepEqual(
        (yield* pullAll(storeId)).events.map((e) => e.seqNum),
        [1, 2, 3],
      )
    }),
  )
})

test('8. 8 concurrent pushes with the same parent: exactly 1 accepted, 7 rejected', async () => {
  const storeId = randomStoreId('race')
  await runTest(
    Effect.gen(function* () {
      const clients = []
      for (let i = 0; i < 8; i++) clients.push(yield* makeBackend(storeId, { clientId: `racer-${i}` }))
      yield* Effect.forEach(clients, (c) => waitConnected(c), { concurrency: 'unbounded' })

      const batchOf = (i) => [ev(1, { clientId: `racer-${i}`, args: { by: i } }), ev(2, { clientId: `racer-${i}`, args: { by: i } })]
      const results = yield* Effect.forEach(
        clients,
        (c, i) => c.push(batchOf(i)).pipe(Effect.either, within(10_000, `racer ${i} push`)),
        { concurrency: 'unbounded' },
      )
      const winners = results.flatMap((r, i) => (r._tag === 'Right' ? [i] : []))
      const losers = results.flatMap((r) => (r._tag === 'Left' ? [r.left] : []))
      assert.equal(winners.length, 1, `exactly one push accepted, got ${winners.length}`)
      assert.equal(losers.length, 7)
      for (const err of losers) {
        assert.equal(err._tag, 'InvalidPushError', errorText(err))
        assert.ok(
          err.reason.message.includes('Invalid parent event number. Received e0 but expected e2'),
          `unexpected message: ${err.reason.message}`,
        )
      }

      const stored = (yield* pullAll(storeId)).events
      assert.deepEqual(stored, batchOf(winners[0]), "the store holds exactly the winner's batch")
    }),
  )
})

// 0.4.0 WebSocket client: push rejections and backendId mismatches.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  Effect,
  Option,
  Stream,
  cursorAt,
  ev,
  errorText,
  makeBackend,
  makeClient,
  pullAll,
  pushExpectingError,
  randomStoreId,
  runTest,
  within,
} from './helpers.mjs'

test('5. stale parent rejected: after 1,2 pushing seq 2 parent 1 fails with ServerAheadError{2,1}', async () => {
  const storeId = randomStoreId('stale')
  await runTest(
    Effect.gen(function* () {
      const backend = yield* makeBackend(storeId)
      yield* backend.push([ev(1), ev(2)]).pipe(within(5_000, 'push [1,2]'))

      const err = yield* pushExpectingError(backend, [ev(2, { args: { id: 'other' } })])
      assert.equal(err._tag, 'ServerAheadError', errorText(err))
      assert.equal(err.minimumExpectedNum, 2)
      assert.equal(err.providedNum, 1)

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

test('5b. a client holding a foreign backendId gets BackendIdMismatchError on push and on cursor pull', async () => {
  const storeId = randomStoreId('backendid')
  await runTest(
    Effect.gen(function* () {
      const good = yield* makeBackend(storeId)
      yield* good.push([ev(1)]).pipe(within(5_000, 'push [1]'))
      const { events } = yield* pullAll(storeId)
      assert.equal(events.length, 1)
      const { backend: probe, backendId } = yield* makeClient(storeId, { clientId: 'probe' })
      yield* Stream.runDrain(probe.pull(Option.none())).pipe(within(5_000, 'learn the backendId'))
      const real = Option.getOrThrow(yield* backendId())

      const { backend: stale } = yield* makeClient(storeId, { clientId: 'stale', presetBackendId: 'not-the-real-backend-id' })
      const pushErr = yield* pushExpectingError(stale, [ev(2)])
      assert.equal(pushErr._tag, 'BackendIdMismatchError', errorText(pushErr))
      assert.equal(pushErr.expected, real)
      assert.equal(pushErr.received, 'not-the-real-backend-id')

      const pullErr = yield* stale.pull(cursorAt(1)).pipe(
        Stream.runDrain,
        Effect.either,
        within(5_000, 'cursor pull with a foreign backendId'),
      )
      assert.equal(pullErr._tag, 'Left', 'the cursor pull must fail')
      assert.equal(pullErr.left._tag, 'BackendIdMismatchError', errorText(pullErr.left))
      assert.equal(pullErr.left.expected, real)
      assert.equal(pullErr.left.received, 'not-the-real-backend-id')

      assert.deepEqual(
        (yield* pullAll(storeId)).events.map((e) => e.seqNum),
        [1],
        'the rejected push stored nothing',
      )
    }),
  )
})

test('8. 8 concurrent pushes with the same parent: exactly 1 accepted, 7 ServerAheadError', async () => {
  const storeId = randomStoreId('race')
  await runTest(
    Effect.gen(function* () {
      const clients = yield* Effect.forEach(
        Array.from({ length: 8 }, (_, i) => i),
        (i) => makeBackend(storeId, { clientId: `racer-${i}` }),
        { concurrency: 'unbounded' },
      )
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
        assert.equal(err._tag, 'ServerAheadError', errorText(err))
        assert.equal(err.minimumExpectedNum, 2)
        assert.equal(err.providedNum, 0)
      }
      assert.deepEqual((yield* pullAll(storeId)).events, batchOf(winners[0]), "the store holds exactly the winner's batch")
    }),
  )
})

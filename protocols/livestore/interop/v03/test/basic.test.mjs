// 0.3.1 client: empty pull, push/pull round trip, large first seqNum, store isolation.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { Effect, Option, ev, makeBackend, pullAll, randomStoreId, runTest, startPull, takeInitialPull, within } from './helpers.mjs'

test('1. empty pull on a new store: one PullRes page, no events, remaining 0', async () => {
  await runTest(
    Effect.gen(function* () {
      const backend = yield* makeBackend(randomStoreId('empty'))
      const pages = yield* startPull(backend)
      const initial = yield* takeInitialPull(pages)
      assert.equal(initial.length, 1, 'exactly one page for an empty store')
      assert.deepEqual(initial[0].batch, [])
      assert.equal(initial[0].remaining, 0)
    }),
  )
})

test('2. push 1,2 then pull: seqNums [1,2], every field round-trips exactly', async () => {
  const storeId = randomStoreId('roundtrip')
  const e1 = ev(1, {
    name: 'todoCreated-v1',
    args: { id: 'a/1', text: 'héllo wörld ✓ "quoted" \\ \n tab\t 𝄞', n: 42, f: -1.5, ok: true, none: null, list: [1, 'two', { three: [3] }] },
    clientId: 'client-1',
    sessionId: 'session-1',
  })
  const e2 = ev(2, { name: 'todoCompleted', args: null, clientId: 'client-2', sessionId: 'session-2' })
  await runTest(
    Effect.gen(function* () {
      const pusher = yield* makeBackend(storeId, { clientId: 'client-1' })
      yield* pusher.push([e1, e2]).pipe(within(5_000, 'push [1,2]'))

      const { pages, events } = yield* pullAll(storeId)
      assert.deepEqual(
        events.map((e) => e.seqNum),
        [1, 2],
      )
      assert.deepEqual(events[0], e1)
      assert.deepEqual(events[1], e2)
      assert.equal(pages.at(-1).remaining, 0)
      for (const item of pages.flatMap((p) => p.batch)) {
        assert.ok(Option.isSome(item.metadata), 'metadata is Some({createdAt})')
        assert.equal(typeof item.metadata.value.createdAt, 'string')
        assert.ok(!Number.isNaN(Date.parse(item.metadata.value.createdAt)), 'createdAt is an ISO date')
      }
    }),
  )
})

test('6. seq 20000 with parent 0 into an empty store is accepted, then 20001 on top of it', async () => {
  const storeId = randomStoreId('seq20000')
  await runTest(
    Effect.gen(function* () {
      const backend = yield* makeBackend(storeId)
      yield* backend.push([ev(20000, { parentSeqNum: 0 })]).pipe(within(5_000, 'push seq 20000 parent 0'))
      const first = yield* pullAll(storeId)
      assert.deepEqual(
        first.events.map((e) => [e.seqNum, e.parentSeqNum]),
        [[20000, 0]],
      )
      yield* backend.push([ev(20001)]).pipe(within(5_000, 'push seq 20001 parent 20000'))
      const second = yield* pullAll(storeId)
      assert.deepEqual(
        second.events.map((e) => e.seqNum),
        [20000, 20001],
      )
    }),
  )
})

test('9. stores are isolated: events of store X never appear in store Y', async () => {
  const x = randomStoreId('iso-x')
  const y = randomStoreId('iso-y')
  await runTest(
    Effect.gen(function* () {
      const bx = yield* makeBackend(x)
      yield* bx.push([ev(1, { args: { store: 'x' } }), ev(2, { args: { store: 'x' } }), ev(3, { args: { store: 'x' } })]).pipe(
        within(5_000, 'push into X'),
      )
      assert.deepEqual((yield* pullAll(y)).events, [], 'Y is still empty')

      // Y has its own head (0), so seq 1 parent 0 is accepted there.
      const by = yield* makeBackend(y)
      yield* by.push([ev(1, { args: { store: 'y' } })]).pipe(within(5_000, 'push into Y'))

      const xs = (yield* pullAll(x)).events
      const ys = (yield* pullAll(y)).events
      assert.deepEqual(
        xs.map((e) => [e.seqNum, e.args.store]),
        [
          [1, 'x'],
          [2, 'x'],
          [3, 'x'],
        ],
      )
      assert.deepEqual(
        ys.map((e) => [e.seqNum, e.args.store]),
        [[1, 'y']],
      )
    }),
  )
})

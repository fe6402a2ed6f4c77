// 0.4.0 WebSocket client: connect/ping, empty pull, push/pull round trip, large first seqNum,
// store isolation.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  Effect,
  Option,
  SubscriptionRef,
  ev,
  eventsOf,
  makeBackend,
  makeClient,
  pullAll,
  pullPages,
  randomStoreId,
  runTest,
  within,
} from './helpers.mjs'

test('0. connect moves isConnected from false to true; ping succeeds', async () => {
  await runTest(
    Effect.gen(function* () {
      // The WS client's `ping`/`connect` send nothing themselves: they wait for the Pong answering the
      // client's *scheduled* Ping (one at connect, then every requestInterval, default 10 s). A 1 s
      // interval keeps this test short.
      const { backend } = yield* makeClient(randomStoreId('connect'), { ping: { requestInterval: 1_000 } })
      yield* backend.connect.pipe(within(5_000, 'connect'))
      assert.equal(yield* SubscriptionRef.get(backend.isConnected), true, 'connected after connect')
      for (let i = 0; i < 3; i++) {
        yield* backend.ping.pipe(within(3_000, `ping ${i + 1} (keepalive Ping/Pong)`))
        assert.equal(yield* SubscriptionRef.get(backend.isConnected), true, `still connected after ping ${i + 1}`)
      }
    }),
  )
})

test('1. empty pull on a new store: exactly one page, empty batch, pageInfo NoMore, then the stream ends', async () => {
  await runTest(
    Effect.gen(function* () {
      const { backend, backendId } = yield* makeClient(randomStoreId('empty'))
      const pages = yield* pullPages(backend)
      assert.deepEqual(pages, [{ batch: [], pageInfo: { _tag: 'NoMore' } }])
      const id = yield* backendId()
      assert.ok(Option.isSome(id) && typeof id.value === 'string' && id.value.length > 0, 'the page carried a backendId')
    }),
  )
})

test('2. push 1,2 then pull: seqNums [1,2], every field round-trips exactly; pushes after learning the backendId work', async () => {
  const storeId = randomStoreId('roundtrip')
  const e1 = ev(1, {
    args: { id: 'a/1', text: 'héllo wörld ✓ "quoted" \\ \n tab\t 𝄞', n: 42, f: -1.5, ok: true, none: null, list: [1, 'two', { three: [3] }] },
    clientId: 'client-1',
    sessionId: 'session-1',
  })
  const e2 = ev(2, { name: 'todoCompleted-v1', args: null, clientId: 'client-2', sessionId: 'session-2' })
  await runTest(
    Effect.gen(function* () {
      const { backend, backendId } = yield* makeClient(storeId, { clientId: 'client-1' })
      yield* backend.push([e1, e2]).pipe(within(5_000, 'push [1,2]'))

      const pages = yield* pullPages(backend)
      const events = eventsOf(pages)
      assert.deepEqual(
        events.map((e) => e.seqNum),
        [1, 2],
      )
      assert.deepEqual(events[0], e1)
      assert.deepEqual(events[1], e2)
      assert.deepEqual(pages.at(-1).pageInfo, { _tag: 'NoMore' })
      for (const item of pages.flatMap((p) => p.batch)) {
        assert.ok(Option.isSome(item.metadata), 'metadata is Some(SyncMetadata)')
        assert.equal(item.metadata.value._tag, 'SyncMessage.SyncMetadata')
        assert.ok(!Number.isNaN(Date.parse(item.metadata.value.createdAt)), 'createdAt is an ISO date')
      }

      // The client now sends backendId Some(<learned id>) with its pushes; the server must accept it.
      assert.ok(Option.isSome(yield* backendId()))
      yield* backend.push([ev(3)]).pipe(within(5_000, 'push [3] with backendId Some'))
      assert.deepEqual(
        (yield* pullAll(storeId)).events.map((e) => e.seqNum),
        [1, 2, 3],
      )
    }),
  )
})

test('6. seq 20000 with parent 0 into an empty store is accepted, then 20001 on top of it', async () => {
  const storeId = randomStoreId('seq20000')
  await runTest(
    Effect.gen(function* () {
      const backend = yield* makeBackend(storeId)
      yield* backend.push([ev(20000, { parentSeqNum: 0 })]).pipe(within(5_000, 'push seq 20000 parent 0'))
      assert.deepEqual(
        (yield* pullAll(storeId)).events.map((e) => [e.seqNum, e.parentSeqNum]),
        [[20000, 0]],
      )
      yield* backend.push([ev(20001)]).pipe(within(5_000, 'push seq 20001 parent 20000'))
      assert.deepEqual(
        (yield* pullAll(storeId)).events.map((e) => e.seqNum),
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
      yield* bx.push([1, 2, 3].map((n) => ev(n, { args: { store: 'x' } }))).pipe(within(5_000, 'push into X'))
      const yFirst = yield* pullAll(y)
      assert.deepEqual(yFirst.pages, [{ batch: [], pageInfo: { _tag: 'NoMore' } }], 'Y is still empty')

      // Y has its own head (0), so seq 1 parent 0 is accepted there.
      const by = yield* makeBackend(y)
      yield* by.push([ev(1, { args: { store: 'y' } })]).pipe(within(5_000, 'push into Y'))

      assert.deepEqual(
        (yield* pullAll(x)).events.map((e) => [e.seqNum, e.args.store]),
        [
          [1, 'x'],
          [2, 'x'],
          [3, 'x'],
        ],
      )
      assert.deepEqual(
        (yield* pullAll(y)).events.map((e) => [e.seqNum, e.args.store]),
        [[1, 'y']],
      )
    }),
  )
})

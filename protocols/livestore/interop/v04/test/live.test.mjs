// 0.4.0 WebSocket client: live pulls (`pull(cursor, { live: true })`).
import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  Effect,
  drainFor,
  ev,
  cursorAt,
  evRange,
  eventsOf,
  makeBackend,
  pullPages,
  randomStoreId,
  range,
  runTest,
  startLivePull,
  takeEvents,
  takeInitialPull,
  within,
} from './helpers.mjs'

test("3. client B's live pull receives client A's pushes", async () => {
  const storeId = randomStoreId('live')
  await runTest(
    Effect.gen(function* () {
      const b = yield* makeBackend(storeId, { clientId: 'client-b' })
      const bPages = yield* startLivePull(b)
      const initial = yield* takeInitialPull(bPages)
      assert.deepEqual(initial, [{ batch: [], pageInfo: { _tag: 'NoMore' } }], 'the first live page is an empty NoMore page')

      const a = yield* makeBackend(storeId, { clientId: 'client-a' })
      const batch1 = [ev(1), ev(2)]
      yield* a.push(batch1).pipe(within(5_000, 'A pushes [1,2]'))
      assert.deepEqual(yield* takeEvents(bPages, 2), batch1)

      yield* a.push([ev(3)]).pipe(within(5_000, 'A pushes [3]'))
      assert.deepEqual(yield* takeEvents(bPages, 1), [ev(3)])
      assert.deepEqual(yield* drainFor(bPages, 300), [], 'nothing else arrives')
    }),
  )
})

test("4. the pusher's own live pull sees its own events exactly once (echo)", async () => {
  const storeId = randomStoreId('echo')
  await runTest(
    Effect.gen(function* () {
      const a = yield* makeBackend(storeId)
      const pages = yield* startLivePull(a)
      yield* takeInitialPull(pages)

      yield* a.push([ev(1), ev(2)]).pipe(within(5_000, 'push [1,2]'))
      yield* a.push([ev(3)]).pipe(within(5_000, 'push [3]'))
      const seen = yield* takeEvents(pages, 3)
      const late = yield* drainFor(pages, 500)
      assert.deepEqual(
        [...seen, ...late].map((e) => e.seqNum),
        [1, 2, 3],
        'each own event echoed exactly once, in order',
      )
      assert.deepEqual(seen, [ev(1), ev(2), ev(3)])
    }),
  )
})

test('12. live delivery is ordered and gap-free: 300 events pushed in batches of 3', async () => {
  const storeId = randomStoreId('ordered')
  await runTest(
    Effect.gen(function* () {
      const sub = yield* makeBackend(storeId, { clientId: 'subscriber' })
      const pages = yield* startLivePull(sub)
      yield* takeInitialPull(pages)

      const pusher = yield* makeBackend(storeId, { clientId: 'pusher' })
      const all = evRange(1, 300, { clientId: 'pusher' })
      for (let i = 0; i < all.length; i += 3) {
        yield* pusher.push(all.slice(i, i + 3)).pipe(within(5_000, `push ${i + 1}..${i + 3}`))
      }
      const seen = yield* takeEvents(pages, 300, 15_000)
      const late = yield* drainFor(pages, 300)
      assert.deepEqual(
        [...seen, ...late].map((e) => e.seqNum),
        range(1, 300),
      )
      assert.deepEqual(seen, all)
    }),
    45_000,
  )
})

test('12b. a live pull with a cursor catches up first, then continues live without gaps or duplicates', async () => {
  const storeId = randomStoreId('catchup')
  await runTest(
    Effect.gen(function* () {
      const pusher = yield* makeBackend(storeId, { clientId: 'pusher' })
      yield* pusher.push(evRange(1, 150)).pipe(within(5_000, 'push 1..150'))

      const sub = yield* makeBackend(storeId, { clientId: 'subscriber' })
      // The client only sends a cursor once it knows the backendId: learn it with a plain pull first.
      yield* pullPages(sub)
      const pages = yield* startLivePull(sub, cursorAt(100))
      const initial = yield* takeInitialPull(pages)
      assert.deepEqual(
        eventsOf(initial).map((e) => e.seqNum),
        range(101, 150),
        'catch-up from cursor 100',
      )

      for (let n = 151; n <= 200; n += 5) {
        yield* pusher.push(evRange(n, n + 4)).pipe(within(5_000, `push ${n}..${n + 4}`))
      }
      const seen = yield* takeEvents(pages, 50)
      const late = yield* drainFor(pages, 300)
      assert.deepEqual(
        [...seen, ...late].map((e) => e.seqNum),
        range(151, 200),
      )
    }),
  )
})

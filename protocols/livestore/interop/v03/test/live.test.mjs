// 0.3.1 client: live delivery. The 0.3 pull stream is live by itself: after the initial pages it
// carries the server's broadcasts of accepted pushes (PullRes with context "push").
import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  Effect,
  drainFor,
  ev,
  evRange,
  makeBackend,
  randomStoreId,
  range,
  runTest,
  startPull,
  takeEvents,
  takeInitialPull,
  within,
} from './helpers.mjs'

test("3. client B's live pull receives client A's pushes", async () => {
  const storeId = randomStoreId('live')
  await runTest(
    Effect.gen(function* () {
      const b = yield* makeBackend(storeId, { clientId: 'client-b' })
      const bPages = yield* startPull(b)
      const initial = yield* takeInitialPull(bPages)
      assert.deepEqual(
        initial.flatMap((p) => p.batch),
        [],
      )

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
      const pages = yield* startPull(a)
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
      const pages = yield* startPull(sub)
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

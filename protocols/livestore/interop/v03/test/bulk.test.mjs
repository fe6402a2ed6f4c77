// 0.3.1 client: many events, cursor pulls over several pages, and a >= 1 MB push.
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { test } from 'node:test'

import { Effect, cursorAt, ev, evRange, makeBackend, pullAll, randomStoreId, range, runTest, within } from './helpers.mjs'

test('7. 1000 events in batches of 50; a pull from cursor 500 returns exactly 501..1000 over several pages', async () => {
  const storeId = randomStoreId('cursor')
  const all = evRange(1, 1000)
  await runTest(
    Effect.gen(function* () {
      const backend = yield* makeBackend(storeId)
      for (let i = 0; i < all.length; i += 50) {
        yield* backend.push(all.slice(i, i + 50)).pipe(within(5_000, `push ${i + 1}..${i + 50}`))
      }

      const fromMiddle = yield* pullAll(storeId, cursorAt(500))
      assert.deepEqual(
        fromMiddle.events.map((e) => e.seqNum),
        range(501, 1000),
        'exactly 501..1000, in order, no duplicates',
      )
      assert.deepEqual(fromMiddle.events, all.slice(500))
      assert.ok(fromMiddle.pages.length > 1, `several pages expected, got ${fromMiddle.pages.length}`)
      // `remaining` counts the events still to come after each page.
      let seen = 0
      for (const page of fromMiddle.pages) {
        seen += page.batch.length
        assert.equal(page.remaining, 500 - seen, 'remaining = events left after this page')
      }

      const everything = yield* pullAll(storeId)
      assert.deepEqual(
        everything.events.map((e) => e.seqNum),
        range(1, 1000),
      )
      const atEnd = yield* pullAll(storeId, cursorAt(1000))
      assert.deepEqual(atEnd.events, [], 'cursor at the head: nothing')
      assert.equal(atEnd.pages.length, 1)
    }),
    60_000,
  )
})

test('10. a >= 1 MB batch (20 events x ~60 KB args) pushes and pulls back intact', async () => {
  const storeId = randomStoreId('big')
  const big = Array.from({ length: 20 }, (_, i) =>
    ev(i + 1, { args: { id: `big-${i + 1}`, blob: crypto.randomBytes(45_000).toString('base64') + 'é✓' } }),
  )
  const bytes = Buffer.byteLength(JSON.stringify(big))
  assert.ok(bytes >= 1_000_000, `batch is ${bytes} bytes`)
  await runTest(
    Effect.gen(function* () {
      const backend = yield* makeBackend(storeId)
      yield* backend.push(big).pipe(within(10_000, 'push the 1 MB batch'))
      const { events } = yield* pullAll(storeId)
      assert.equal(events.length, 20)
      assert.deepEqual(events, big)
    }),
  )
})

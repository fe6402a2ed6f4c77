// 0.4.0 WebSocket client: many events, cursor pulls over several pages, and a >= 1 MB push.
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { test } from 'node:test'

import {
  Effect,
  cursorAt,
  ev,
  evRange,
  eventsOf,
  makeBackend,
  pullAll,
  pullPages,
  randomStoreId,
  range,
  runTest,
  within,
} from './helpers.mjs'

test('7. 1000 events in batches of 50; a pull from cursor 500 returns exactly 501..1000 over several pages', async () => {
  const storeId = randomStoreId('cursor')
  const all = evRange(1, 1000)
  await runTest(
    Effect.gen(function* () {
      const backend = yield* makeBackend(storeId)
      for (let i = 0; i < all.length; i += 50) {
        yield* backend.push(all.slice(i, i + 50)).pipe(within(5_000, `push ${i + 1}..${i + 50}`))
      }

      // Full pull first: it also teaches the client the backendId, which a cursor pull requires.
      const everything = yield* pullPages(backend)
      assert.deepEqual(
        eventsOf(everything).map((e) => e.seqNum),
        range(1, 1000),
      )

      const pages = yield* pullPages(backend, cursorAt(500))
      const events = eventsOf(pages)
      assert.deepEqual(
        events.map((e) => e.seqNum),
        range(501, 1000),
        'exactly 501..1000, in order, no duplicates',
      )
      assert.deepEqual(events, all.slice(500))
      assert.ok(pages.length > 1, `several pages expected, got ${pages.length}`)
      // pageInfo: MoreKnown(events left after this page) on every page but the last, NoMore on the last.
      let seen = 0
      for (const [i, page] of pages.entries()) {
        seen += page.batch.length
        const expected = i === pages.length - 1 ? { _tag: 'NoMore' } : { _tag: 'MoreKnown', remaining: 500 - seen }
        assert.deepEqual(page.pageInfo, expected, `pageInfo of page ${i}`)
      }
      assert.equal(seen, 500)

      const atEnd = yield* pullPages(backend, cursorAt(1000))
      assert.deepEqual(atEnd, [{ batch: [], pageInfo: { _tag: 'NoMore' } }], 'cursor at the head: one empty NoMore page')
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
      // The client itself splits this into <= 900,000-byte Push requests.
      yield* backend.push(big).pipe(within(10_000, 'push the 1 MB batch'))
      const { pages, events } = yield* pullAll(storeId)
      assert.equal(events.length, 20)
      assert.deepEqual(events, big)
      assert.deepEqual(pages.at(-1).pageInfo, { _tag: 'NoMore' })
    }),
  )
})

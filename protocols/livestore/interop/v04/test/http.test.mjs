// 0.4.0 HTTP client (`makeHttpSync`): POST ?storeId=…&transport=http, one RPC request per POST,
// a JSON array of Chunk/Exit messages back. Live pull is emulated by the client with polling.
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { test } from 'node:test'

import {
  Effect,
  Option,
  SubscriptionRef,
  drainFor,
  errorText,
  ev,
  evRange,
  eventsOf,
  makeBackend,
  makeClient,
  pullAll,
  pullPages,
  pushExpectingError,
  randomStoreId,
  range,
  runTest,
  startLivePull,
  takeEvents,
  takeInitialPull,
  within,
} from './helpers.mjs'

const httpClient = (storeId, opts = {}) => makeClient(storeId, { ...opts, transport: 'http' })

test('11. HTTP: ping/connect, push then pull, stale parent', async () => {
  const storeId = randomStoreId('http')
  await runTest(
    Effect.gen(function* () {
      const { backend, backendId } = yield* httpClient(storeId)
      yield* backend.ping.pipe(within(5_000, 'HTTP ping'))
      assert.equal(yield* SubscriptionRef.get(backend.isConnected), true, 'a successful Ping sets isConnected')
      yield* backend.connect.pipe(within(5_000, 'HTTP connect'))

      const empty = yield* pullPages(backend)
      assert.deepEqual(empty, [{ batch: [], pageInfo: { _tag: 'NoMore' } }])
      assert.ok(Option.isSome(yield* backendId()), 'the HTTP pull carried a backendId')

      const batch = [ev(1, { args: { via: 'http', text: 'é✓ "q"' } }), ev(2, { args: null })]
      yield* backend.push(batch).pipe(within(5_000, 'HTTP push [1,2]'))
      const pages = yield* pullPages(backend)
      assert.deepEqual(eventsOf(pages), batch)
      assert.deepEqual(pages.at(-1).pageInfo, { _tag: 'NoMore' })

      const err = yield* pushExpectingError(backend, [ev(2, { args: { id: 'other' } })])
      assert.equal(err._tag, 'ServerAheadError', errorText(err))
      assert.equal(err.minimumExpectedNum, 2)
      assert.equal(err.providedNum, 1)

      // The same store seen over WebSocket.
      assert.deepEqual((yield* pullAll(storeId)).events, batch)
    }),
  )
})

test('11b. HTTP and WebSocket clients of one store see each other live', async () => {
  const storeId = randomStoreId('http-live')
  await runTest(
    Effect.gen(function* () {
      const { backend: h } = yield* httpClient(storeId, { clientId: 'http-client' })
      const hPages = yield* startLivePull(h)
      yield* takeInitialPull(hPages)

      const w = yield* makeBackend(storeId, { clientId: 'ws-client' })
      const wPages = yield* startLivePull(w)
      yield* takeInitialPull(wPages)

      // WS push → the HTTP client's polling live pull (poll interval 300 ms).
      yield* w.push([ev(1, { clientId: 'ws-client' })]).pipe(within(5_000, 'WS push [1]'))
      assert.deepEqual(
        (yield* takeEvents(hPages, 1)).map((e) => [e.seqNum, e.clientId]),
        [[1, 'ws-client']],
      )
      // HTTP push → the WS client's live pull.
      yield* h.push([ev(2, { clientId: 'http-client' })]).pipe(within(5_000, 'HTTP push [2]'))
      assert.deepEqual(
        (yield* takeEvents(wPages, 2)).map((e) => [e.seqNum, e.clientId]),
        [
          [1, 'ws-client'],
          [2, 'http-client'],
        ],
      )
      // ...and the HTTP poller picks up its own event once, with nothing duplicated over several polls.
      const own = yield* takeEvents(hPages, 1)
      const later = yield* drainFor(hPages, 1_000)
      assert.deepEqual(
        [...own, ...later].map((e) => e.seqNum),
        [2],
      )
    }),
  )
})

test('11c. HTTP: 1000 events and a >= 1 MB batch round-trip', async () => {
  const storeId = randomStoreId('http-bulk')
  await runTest(
    Effect.gen(function* () {
      const { backend } = yield* httpClient(storeId)
      const all = evRange(1, 1000)
      for (let i = 0; i < all.length; i += 50) {
        yield* backend.push(all.slice(i, i + 50)).pipe(within(5_000, `HTTP push ${i + 1}..${i + 50}`))
      }
      const big = Array.from({ length: 20 }, (_, i) =>
        ev(1001 + i, { args: { id: `big-${i}`, blob: crypto.randomBytes(45_000).toString('base64') } }),
      )
      assert.ok(Buffer.byteLength(JSON.stringify(big)) >= 1_000_000)
      yield* backend.push(big).pipe(within(10_000, 'HTTP push of the 1 MB batch'))

      const pages = yield* pullPages(backend, Option.none(), 20_000)
      assert.ok(pages.length > 1, 'several pages')
      const events = eventsOf(pages)
      assert.deepEqual(
        events.map((e) => e.seqNum),
        range(1, 1020),
      )
      assert.deepEqual(events.slice(1000), big)
    }),
    60_000,
  )
})

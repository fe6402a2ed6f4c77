// Shared helpers for the @livestore/sync-cf 0.4.0 interop tests.
//
// The tests use the real client's `SyncBackend` (`makeWsSync` / `makeHttpSync`) directly, the same
// way the upstream `tests/sync-provider` suite does: no LiveStore store, adapter or SQLite.
import crypto from 'node:crypto'

import { makeHttpSync, makeWsSync } from '@livestore/sync-cf/client'
import {
  Chunk,
  Duration,
  Effect,
  FetchHttpClient,
  KeyValueStore,
  Option,
  Queue,
  Stream,
  SubscriptionRef,
} from '@livestore/utils/effect'

// Node 20 has no global WebSocket; without it the 0.4 client silently never connects.
globalThis.WebSocket = (await import('ws')).WebSocket

export { Chunk, Effect, Option, Queue, Stream, SubscriptionRef }

/** `JUNCTION_URL`, e.g. `http://127.0.0.1:8080`, without a trailing slash. */
export const httpUrl = () => {
  const url = process.env.JUNCTION_URL
  if (!url) throw new Error('JUNCTION_URL is not set (e.g. JUNCTION_URL=http://127.0.0.1:8080)')
  return url.replace(/\/+$/, '')
}

/** The WebSocket form of `JUNCTION_URL` (`http` → `ws`, `https` → `wss`). */
export const wsUrl = () => httpUrl().replace(/^http(s?):\/\//, 'ws$1://')

/** A fresh, random store id so that every test runs against an empty store. */
export const randomStoreId = (label = 'x') => `interop-v04-${label}-${crypto.randomUUID()}`

/** The payload used by every "normal" client: the auth token when the server needs one. */
export const defaultPayload = () =>
  process.env.JUNCTION_AUTH_TOKEN ? { authToken: process.env.JUNCTION_AUTH_TOKEN } : undefined

/** A global event `n` chained onto `n - 1`. */
export const ev = (n, overrides = {}) => ({
  name: 'todoCreated-v1',
  args: { id: `t${n}`, text: `todo ${n}` },
  seqNum: n,
  parentSeqNum: n - 1,
  clientId: 'client-a',
  sessionId: 'session-a',
  ...overrides,
})

/** Events `from..to` (inclusive), chained. */
export const evRange = (from, to, overrides = {}) => {
  const out = []
  for (let n = from; n <= to; n++) out.push(ev(n, overrides))
  return out
}

export const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** Fails with a readable error when `effect` does not finish within `ms`. */
export const within = (ms, label) => (effect) =>
  Effect.timeoutFail(effect, {
    duration: Duration.millis(ms),
    onTimeout: () => new Error(`timed out after ${ms} ms: ${label}`),
  })

/**
 * Runs a test body (an Effect) inside its own scope with the HttpClient the client needs, bounded
 * by `ms`. Closing the scope closes every socket and background fiber the test started.
 */
export const runTest = (body, ms = 30_000) =>
  Effect.runPromise(
    body.pipe(
      within(ms, 'whole test'),
      Effect.scoped,
      Effect.provide(FetchHttpClient.layer),
      Effect.mapError(describeFailure),
    ),
  )

/** Typed client errors (ServerAheadError, …) become Errors whose message names the tag. */
const describeFailure = (err) =>
  err instanceof Error && err._tag === undefined ? err : new Error(`${err?._tag ?? 'failure'}: ${errorText(err)}`)

/**
 * Creates a 0.4 sync backend. Every backend gets its **own** in-memory KeyValueStore (that is where
 * the client keeps the backendId it learned), like separate app instances. Returns the backend and
 * `backendId()`, an Effect reading the backendId the client has stored (Option<string>).
 *
 * opts: `transport` ('ws' | 'http'), `clientId`, `payload` (pass `payload: undefined` explicitly for a
 * client without a payload), `ping` (client ping options), `pollInterval` (HTTP live pull, ms),
 * `presetBackendId` (a backendId the client believes in before it ever pulled).
 */
export const makeClient = (storeId, opts = {}) =>
  Effect.gen(function* () {
    const kv = yield* KeyValueStore.KeyValueStore.pipe(Effect.provide(KeyValueStore.layerMemory))
    // Simulates a client that learned a backendId earlier (e.g. before a server reset).
    if (opts.presetBackendId !== undefined) yield* kv.set('backendId', opts.presetBackendId)
    const payload = 'payload' in opts ? opts.payload : defaultPayload()
    const ctor =
      (opts.transport ?? 'ws') === 'http'
        ? makeHttpSync({ url: httpUrl(), livePull: { pollInterval: opts.pollInterval ?? 300 }, ping: opts.ping })
        : makeWsSync({ url: wsUrl(), ping: opts.ping })
    const backend = yield* ctor({ storeId, clientId: opts.clientId ?? 'client-a', payload }).pipe(
      Effect.provideService(KeyValueStore.KeyValueStore, kv),
    )
    return { backend, backendId: () => kv.get('backendId') }
  })

/** Shortcut: a connected WebSocket backend (connect = first Ping/Pong). */
export const makeBackend = (storeId, opts = {}) =>
  Effect.gen(function* () {
    const { backend } = yield* makeClient(storeId, opts)
    yield* connected(backend)
    return backend
  })

/** `connect`, then insists on `isConnected === true`. */
export const connected = (backend, ms = 5_000) =>
  Effect.gen(function* () {
    yield* backend.connect.pipe(within(ms, 'connect'))
    if (!(yield* SubscriptionRef.get(backend.isConnected))) {
      return yield* Effect.fail(new Error('connect finished but isConnected is false (no Pong?)'))
    }
  })

const eventsOf = (pages) => pages.flatMap((page) => page.batch.map((item) => item.eventEncoded))

/** A non-live pull collected until the stream ends (the server's Exit). */
export const pullPages = (backend, cursor = Option.none(), ms = 10_000) =>
  backend.pull(cursor).pipe(
    Stream.runCollect,
    Effect.map(Chunk.toArray),
    within(ms, 'non-live pull (needs an Exit after the last page)'),
  )

/** A fresh WS backend reading the whole store (non-live). */
export const pullAll = (storeId, ms = 10_000) =>
  Effect.gen(function* () {
    const { backend } = yield* makeClient(storeId, { clientId: 'reader' })
    const pages = yield* pullPages(backend, Option.none(), ms)
    return { pages, events: eventsOf(pages) }
  }).pipe(Effect.scoped)

/** Starts a live pull in the background; returns a queue receiving every page the client emits. */
export const startLivePull = (backend, cursor = Option.none()) =>
  Effect.gen(function* () {
    const pages = yield* Queue.unbounded()
    yield* backend.pull(cursor, { live: true }).pipe(
      Stream.runForEach((page) => Queue.offer(pages, page)),
      Effect.catchAllCause((cause) => Queue.offer(pages, { _failed: cause })),
      // A live pull must never end by itself.
      Effect.zipRight(Queue.offer(pages, { _failed: 'the live pull stream ended' })),
      Effect.forkScoped,
    )
    return pages
  })

const takePage = (pages, ms, label) =>
  Effect.gen(function* () {
    const page = yield* Queue.take(pages).pipe(within(ms, label))
    if (page._failed) return yield* Effect.fail(new Error(`live pull failed: ${String(page._failed)}`))
    return page
  })

/** Takes pages until one with `pageInfo NoMore` arrived (the end of the initial catch-up). */
export const takeInitialPull = (pages, ms = 5_000) =>
  Effect.gen(function* () {
    const out = []
    const deadline = Date.now() + ms
    for (;;) {
      const page = yield* takePage(pages, Math.max(1, deadline - Date.now()), 'initial live-pull pages up to NoMore')
      out.push(page)
      if (page.pageInfo._tag === 'NoMore') return out
    }
  })

/** Takes pages until at least `count` events have arrived; returns the events (eventEncoded). */
export const takeEvents = (pages, count, ms = 5_000) =>
  Effect.gen(function* () {
    const events = []
    const deadline = Date.now() + ms
    while (events.length < count) {
      const page = yield* takePage(
        pages,
        Math.max(1, deadline - Date.now()),
        `waiting for ${count} live events (got ${events.length})`,
      )
      events.push(...page.batch.map((item) => item.eventEncoded))
    }
    return events
  })

/** Waits `ms` and returns every event that arrived meanwhile (should normally be none). */
export const drainFor = (pages, ms) =>
  Effect.gen(function* () {
    yield* Effect.sleep(Duration.millis(ms))
    const rest = yield* Queue.takeAll(pages)
    return [...rest].flatMap((page) => (page._failed ? [{ _failed: String(page._failed) }] : page.batch.map((i) => i.eventEncoded)))
  })

/** Pushes and returns the error (fails the test when the push succeeds or hangs). */
export const pushExpectingError = (backend, batch, ms = 5_000) =>
  backend.push(batch).pipe(
    Effect.either,
    within(ms, `push of seq ${batch[0].seqNum} (expected a rejection)`),
    Effect.flatMap((result) =>
      result._tag === 'Left' ? Effect.succeed(result.left) : Effect.fail(new Error('push unexpectedly succeeded')),
    ),
  )

/** The 0.4 cursor argument of `pull` (the client adds the backendId it learned). */
export const cursorAt = (n) => Option.some({ eventSequenceNumber: n, metadata: Option.none() })

export const errorText = (err) => {
  try {
    return JSON.stringify(err)
  } catch {
    return String(err)
  }
}

export { eventsOf }

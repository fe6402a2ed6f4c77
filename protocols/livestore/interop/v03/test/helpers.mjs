// Shared helpers for the @livestore/sync-cf 0.3.1 interop tests.
//
// The tests use the real client's `SyncBackend` (`makeCfSync`) directly, the same way the
// upstream test suites do: no LiveStore store, adapter or SQLite is involved.
import crypto from 'node:crypto'

import { makeCfSync } from '@livestore/sync-cf'
import { Duration, Effect, FetchHttpClient, Option, Queue, Stream, SubscriptionRef } from '@livestore/utils/effect'

// Node 20 has no global WebSocket; the client calls `new globalThis.WebSocket(url)`.
globalThis.WebSocket = (await import('ws')).WebSocket

export { Effect, Option, Queue, Stream, SubscriptionRef }

/** `JUNCTION_URL`, e.g. `http://127.0.0.1:8080`, without a trailing slash. */
export const httpUrl = () => {
  const url = process.env.JUNCTION_URL
  if (!url) throw new Error('JUNCTION_URL is not set (e.g. JUNCTION_URL=http://127.0.0.1:8080)')
  return url.replace(/\/+$/, '')
}

/** The WebSocket form of `JUNCTION_URL` (`http` → `ws`, `https` → `wss`). */
export const wsUrl = () => httpUrl().replace(/^http(s?):\/\//, 'ws$1://')

/** A fresh, random store id so that every test runs against an empty store. */
export const randomStoreId = (label = 'x') => `interop-v03-${label}-${crypto.randomUUID()}`

/** The payload used by every "normal" client: the auth token when the server needs one. */
export const defaultPayload = () =>
  process.env.JUNCTION_AUTH_TOKEN ? { authToken: process.env.JUNCTION_AUTH_TOKEN } : undefined

/** A global event `n` chained onto `n - 1`. */
export const ev = (n, overrides = {}) => ({
  name: 'todoCreated',
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
 * Runs a test body (an Effect) inside its own scope with the layers the client needs, bounded by
 * `ms`. Closing the scope closes every socket the test opened. Rejects (with the original error
 * where possible) when the body fails, so `node --test` reports the failure.
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

/** Typed client errors (InvalidPushError, …) become Errors whose message names the tag. */
const describeFailure = (err) =>
  err instanceof Error && err._tag === undefined ? err : new Error(`${err?._tag ?? 'failure'}: ${errorText(err)}`)

/**
 * Creates a 0.3 sync backend (it connects eagerly) for `storeId`. `opts.payload` overrides the
 * default payload; pass `payload: undefined` explicitly for a client without any payload.
 */
export const makeBackend = (storeId, opts = {}) =>
  makeCfSync({ url: wsUrl() })({
    storeId,
    clientId: opts.clientId ?? 'client-a',
    payload: 'payload' in opts ? opts.payload : defaultPayload(),
  })

/** Waits until the backend's socket is open. */
export const waitConnected = (backend, ms = 5_000) =>
  backend.isConnected.changes.pipe(
    Stream.filter(Boolean),
    Stream.take(1),
    Stream.runDrain,
    within(ms, 'waiting for the WebSocket to open'),
  )

/**
 * Starts the (only) pull of `backend` in the background and returns a queue receiving every
 * `PullRes` page the client emits. The 0.3 pull stream is live by itself: it never ends.
 */
export const startPull = (backend, cursor = Option.none()) =>
  Effect.gen(function* () {
    const pages = yield* Queue.unbounded()
    yield* backend.pull(cursor).pipe(
      Stream.runForEach((page) => Queue.offer(pages, page)),
      Effect.catchAllCause((cause) => Queue.offer(pages, { _failed: cause })),
      Effect.forkScoped,
    )
    return pages
  })

const takePage = (pages, ms, label) =>
  Effect.gen(function* () {
    const page = yield* Queue.take(pages).pipe(within(ms, label))
    if (page._failed) return yield* Effect.fail(new Error(`pull stream failed: ${String(page._failed)}`))
    return page
  })

/** Takes pages until one with `remaining === 0` arrived (the end of the initial pull). */
export const takeInitialPull = (pages, ms = 5_000) =>
  Effect.gen(function* () {
    const out = []
    const deadline = Date.now() + ms
    for (;;) {
      const page = yield* takePage(pages, Math.max(1, deadline - Date.now()), 'initial pull pages')
      out.push(page)
      if (page.remaining === 0) return out
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
    return [...rest].flatMap((page) => (page._failed ? [{ _failed: page._failed }] : page.batch.map((i) => i.eventEncoded)))
  })

/** One-shot read of a whole store through a fresh backend: all events from `cursor` on. */
export const pullAll = (storeId, cursor = Option.none(), ms = 10_000) =>
  Effect.gen(function* () {
    const backend = yield* makeBackend(storeId, { clientId: 'reader' })
    const pages = yield* startPull(backend, cursor)
    const initial = yield* takeInitialPull(pages, ms)
    return { pages: initial, events: initial.flatMap((p) => p.batch.map((i) => i.eventEncoded)) }
  }).pipe(Effect.scoped)

/** Pushes and returns the error (fails the test when the push succeeds or hangs). */
export const pushExpectingError = (backend, batch, ms = 5_000) =>
  backend.push(batch).pipe(
    Effect.either,
    within(ms, `push of seq ${batch[0].seqNum} (expected a rejection)`),
    Effect.flatMap((result) =>
      result._tag === 'Left' ? Effect.succeed(result.left) : Effect.fail(new Error('push unexpectedly succeeded')),
    ),
  )

/** The 0.3 cursor argument of `pull`. */
export const cursorAt = (n) => Option.some({ cursor: { global: n, client: 0 }, metadata: Option.none() })

/** The message of an `InvalidPushError` (reason `Unexpected`) or any other error, for assertions. */
export const errorText = (err) =>
  [err?.reason?.message, err?.message, err?.cause?.message, JSON.stringify(err)].filter(Boolean).join(' | ')

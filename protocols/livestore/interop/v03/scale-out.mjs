// Cross-instance delivery with the real 0.3.1 client. Two Junction instances, A and B, share one
// Postgres and one Redis; driven by the Rust test `scale_out::real_clients_see_each_other_across_instances`.
//
//   JUNCTION_URL_A=http://127.0.0.1:PORT_A JUNCTION_URL_B=http://127.0.0.1:PORT_B node scale-out.mjs
//
// 1. A live subscriber on each instance; pushers on both instances take turns (60 pushes of 2
//    events): each subscriber gets exactly 1..120, in order, identical to what was pushed, and
//    nothing more.
// 2. Ten races: a client on A and a client on B push the same next seq at once; exactly one is
//    acknowledged, the other gets InvalidPushError; the subscribers see exactly the winners.
// Exits 0 on success, 1 (with the reason on stderr) otherwise; within 60 s either way.
import crypto from 'node:crypto'
import { deepStrictEqual, equal } from 'node:assert/strict'

import { makeCfSync } from '@livestore/sync-cf'
import { Duration, Effect, FetchHttpClient, Option, Queue, Stream } from '@livestore/utils/effect'

globalThis.WebSocket = (await import('ws')).WebSocket

const wsOf = (name) => {
  const url = process.env[name]
  if (!url) throw new Error(`${name} is not set`)
  return url.replace(/\/+$/, '').replace(/^http/, 'ws')
}
const urlA = wsOf('JUNCTION_URL_A')
const urlB = wsOf('JUNCTION_URL_B')
const storeId = `scale-out-v03-${crypto.randomUUID()}`

const ev = (n, clientId) => ({ name: 'todoCreated', args: { id: `t${n}`, by: clientId }, seqNum: n, parentSeqNum: n - 1, clientId, sessionId: 's1' })
const within = (ms, label) => (effect) =>
  Effect.timeoutFail(effect, { duration: Duration.millis(ms), onTimeout: () => new Error(`timed out after ${ms} ms: ${label}`) })

const backendOn = (url, clientId) => makeCfSync({ url })({ storeId, clientId, payload: undefined })

const subscribe = (url, clientId) =>
  Effect.gen(function* () {
    const backend = yield* backendOn(url, clientId)
    const pages = yield* Queue.unbounded()
    yield* backend.pull(Option.none()).pipe(
      Stream.runForEach((page) => Queue.offer(pages, page)),
      Effect.catchAllCause((cause) => Queue.offer(pages, { failed: String(cause) })),
      Effect.forkScoped,
    )
    const first = yield* Queue.take(pages).pipe(within(5_000, `${clientId}: initial pull`))
    deepStrictEqual(first.batch, [], `${clientId}: the store starts empty`)
    return { clientId, pages }
  })

const takeEvents = (sub, count) =>
  Effect.gen(function* () {
    const events = []
    while (events.length < count) {
      const page = yield* Queue.take(sub.pages).pipe(within(10_000, `${sub.clientId}: waiting for ${count} events (got ${events.length})`))
      if (page.failed) throw new Error(`${sub.clientId}: pull failed: ${page.failed}`)
      events.push(...page.batch.map((item) => item.eventEncoded))
    }
    return events
  })

const quietFor = (sub, ms) =>
  Effect.gen(function* () {
    yield* Effect.sleep(Duration.millis(ms))
    const rest = [...(yield* Queue.takeAll(sub.pages))]
    deepStrictEqual(rest.flatMap((p) => p.batch ?? [p]), [], `${sub.clientId}: nothing more arrives`)
  })

const program = Effect.gen(function* () {
  const subs = [yield* subscribe(urlA, 'subscriber-on-a'), yield* subscribe(urlB, 'subscriber-on-b')]
  const pushers = [
    { name: 'pusher-on-a', backend: yield* backendOn(urlA, 'pusher-on-a') },
    { name: 'pusher-on-b', backend: yield* backendOn(urlB, 'pusher-on-b') },
  ]

  const pushed = []
  for (let i = 0; i < 60; i++) {
    const pusher = pushers[i % 2]
    const batch = [ev(2 * i + 1, pusher.name), ev(2 * i + 2, pusher.name)]
    yield* pusher.backend.push(batch).pipe(within(5_000, `${pusher.name} pushes ${2 * i + 1},${2 * i + 2}`))
    pushed.push(...batch)
  }
  for (const sub of subs) {
    deepStrictEqual(yield* takeEvents(sub, 120), pushed, `${sub.clientId}: exactly 1..120 in order`)
    yield* quietFor(sub, 300)
  }
  console.log('alternating pushes: both subscribers got exactly 1..120 in order')

  const winners = []
  for (let round = 0; round < 10; round++) {
    const seq = 121 + round
    const results = yield* Effect.all(
      pushers.map((p) => p.backend.push([ev(seq, p.name)]).pipe(Effect.either, within(5_000, `race ${round}: ${p.name}`))),
      { concurrency: 'unbounded' },
    )
    const accepted = results.filter((r) => r._tag === 'Right').length
    equal(accepted, 1, `race ${round}: exactly one push accepted`)
    const loser = results.find((r) => r._tag === 'Left').left
    equal(loser._tag, 'InvalidPushError', `race ${round}: the loser gets InvalidPushError`)
    winners.push(ev(seq, pushers[results.findIndex((r) => r._tag === 'Right')].name))
  }
  for (const sub of subs) {
    deepStrictEqual(yield* takeEvents(sub, 10), winners, `${sub.clientId}: exactly the winners of the races`)
    yield* quietFor(sub, 300)
  }
  console.log(`races: exactly one push accepted per round (${winners.map((e) => e.clientId.slice(-1)).join('')}); subscribers saw the winners only`)
})

Effect.runPromise(program.pipe(within(60_000, 'scale-out.mjs'), Effect.scoped, Effect.provide(FetchHttpClient.layer))).then(
  () => process.exit(0),
  (error) => {
    console.error('FAILED', error)
    process.exit(1)
  },
)

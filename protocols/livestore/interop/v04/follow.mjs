// Follows a store with the real 0.4.0 client's WebSocket live pull until it has seen events
// 1..<lastSeq>, pulling again from its cursor whenever the connection dies, as the LiveStore
// leader does. Driven by the Rust test `scale_out::kill_9_of_an_instance_while_clients_write_through_the_other`,
// which points it at a relay (the "load balancer") and kills the instance behind it.
//
//   JUNCTION_URL=http://127.0.0.1:PORT node follow.mjs <storeId> <lastSeq>
//
// Prints `seen N` after every page (N: the last seq so far), a line for every reconnect, then
// `done …`. Exits 0 when it saw exactly 1..lastSeq, each once, in order; 1 otherwise (a gap, a
// duplicate, or not done within 90 s).
import { makeWsSync } from '@livestore/sync-cf/client'
import { Duration, Effect, FetchHttpClient, KeyValueStore, Layer, Option, Stream } from '@livestore/utils/effect'

globalThis.WebSocket = (await import('ws')).WebSocket

const url = process.env.JUNCTION_URL.replace(/\/+$/, '').replace(/^http/, 'ws')
const storeId = process.argv[2]
const target = Number(process.argv[3])

const program = Effect.gen(function* () {
  const backend = yield* makeWsSync({ url })({ storeId, clientId: 'follower', payload: undefined })
  let last = 0
  let pulls = 0
  const take = (page) =>
    Effect.suspend(() => {
      for (const item of page.batch) {
        const seq = item.eventEncoded.seqNum
        if (seq !== last + 1) return Effect.fail(new Error(`after ${last} came ${seq}: a gap or a duplicate`))
        last = seq
      }
      console.log(`seen ${last}`)
      return Effect.void
    })
  while (last < target) {
    pulls++
    // The cursor needs the backendId the client learned on its first pull (same store, same id
    // on every instance: they share the database).
    const cursor = last === 0 ? Option.none() : Option.some({ eventSequenceNumber: last, metadata: Option.none() })
    const ended = yield* backend.pull(cursor, { live: true }).pipe(
      Stream.mapEffect(take),
      Stream.takeUntil(() => last >= target),
      Stream.runDrain,
      Effect.either,
    )
    if (last >= target) break
    if (ended._tag === 'Left' && ended.left instanceof Error && !ended.left._tag) return yield* Effect.fail(ended.left)
    const why = ended._tag === 'Left' ? ended.left?._tag ?? String(ended.left) : 'the stream ended'
    console.log(`live pull ended (${why}) after ${last}; pulling again from the cursor`)
    // The client reconnects by itself (backoff from 1 s); until then a pull fails at once.
    yield* Effect.sleep(Duration.millis(200))
  }
  console.log(`done: 1..${target} exactly once and in order, over ${pulls} live pulls`)
})

Effect.runPromise(
  program.pipe(
    Effect.timeoutFail({ duration: Duration.seconds(90), onTimeout: () => new Error('not done within 90 s') }),
    Effect.scoped,
    Effect.provide(Layer.mergeAll(FetchHttpClient.layer, KeyValueStore.layerMemory)),
  ),
).then(
  () => process.exit(0),
  (error) => {
    console.error('FAILED', error)
    process.exit(1)
  },
)

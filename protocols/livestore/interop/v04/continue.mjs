// After an import: the real 0.4 client pulls the imported store from Junction and keeps pushing
// on top of it.
//
//   JUNCTION_URL=http://127.0.0.1:PORT node continue.mjs <storeId> <expectedEvents> <expectedLastSeq> [expectedBackendId]
//
// Exits 0 when the pull returns exactly the expected number of events ending at the expected
// seq (and, when given, the client learned the expected backendId), a push of lastSeq+1 on top is
// accepted, and a pull from the old head returns just that event. Prints what it saw.
import { makeWsSync } from '@livestore/sync-cf/client'
import { Chunk, Duration, Effect, FetchHttpClient, KeyValueStore, Layer, Option, Stream } from '@livestore/utils/effect'

globalThis.WebSocket = (await import('ws')).WebSocket

const [storeId, expectedCount, expectedLast, expectedBackendId] = process.argv.slice(2)
const url = process.env.JUNCTION_URL.replace(/^http/, 'ws')

const program = Effect.gen(function* () {
  const kv = yield* KeyValueStore.KeyValueStore
  const backend = yield* makeWsSync({ url })({ storeId, clientId: 'continuer', payload: undefined })
  yield* backend.connect
  const pages = yield* backend.pull(Option.none()).pipe(Stream.runCollect)
  const events = Chunk.toArray(pages).flatMap((p) => p.batch.map((e) => e.eventEncoded))
  const last = events.at(-1)?.seqNum ?? 0
  console.log(`pulled ${events.length} events, last seq ${last}`)
  if (events.length !== Number(expectedCount) || last !== Number(expectedLast)) {
    throw new Error(`expected ${expectedCount} events ending at ${expectedLast}`)
  }
  const backendId = Option.getOrUndefined(yield* kv.get('backendId'))
  console.log(`backendId ${backendId}`)
  if (expectedBackendId && backendId !== expectedBackendId) throw new Error(`expected backendId ${expectedBackendId}`)
  const next = { name: 'todoCreated-v1', args: { id: 'after-import' }, seqNum: last + 1, parentSeqNum: last, clientId: 'continuer', sessionId: 's1' }
  yield* backend.push([next])
  const cursor = Option.some({ eventSequenceNumber: last, metadata: Option.none() })
  const after = Chunk.toArray(yield* backend.pull(cursor).pipe(Stream.runCollect)).flatMap((p) => p.batch.map((e) => e.eventEncoded.seqNum))
  console.log(`pushed ${last + 1} on top; pull from ${last} returns ${JSON.stringify(after)}`)
  if (after.length !== 1 || after[0] !== last + 1) throw new Error('the pushed event did not come back')
})

Effect.runPromise(
  program.pipe(Effect.timeout(Duration.seconds(60)), Effect.scoped, Effect.provide(Layer.mergeAll(FetchHttpClient.layer, KeyValueStore.layerMemory))),
).then(
  () => process.exit(0),
  (error) => {
    console.error('FAILED', error)
    process.exit(1)
  },
)

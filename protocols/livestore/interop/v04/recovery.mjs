// The server closes the socket (Junction restarts on the same port) and the real 0.4 client
// recovers: its live pull fails with IsOfflineError, it reconnects by itself, and a pull from its
// cursor on the new connection gets what was pushed meanwhile.
//
// Driven by the Rust test `livestore_interop::v04_client_recovers_from_a_server_side_close`:
//   1. prints "ready" once its live pull has delivered event 1;
//   2. the test restarts Junction on the same port and pushes event 2 directly;
//   3. this script exits 0 once it has pulled event 2 over a fresh connection (non-zero on failure).
import { makeWsSync } from '@livestore/sync-cf/client'
import { Effect, FetchHttpClient, KeyValueStore, Layer, Option, Stream, Chunk, Duration } from '@livestore/utils/effect'

globalThis.WebSocket = (await import('ws')).WebSocket

const url = process.env.JUNCTION_URL.replace(/^http/, 'ws')
const storeId = process.argv[2]
const ev = (n) => ({ name: 'todoCreated-v1', args: { id: `t${n}` }, seqNum: n, parentSeqNum: n - 1, clientId: 'c1', sessionId: 's1' })

const program = Effect.gen(function* () {
  const backend = yield* makeWsSync({ url })({ storeId, clientId: 'c1', payload: undefined })
  yield* backend.connect
  yield* backend.push([ev(1)])
  // The live pull: one page up to NoMore holding event 1, then it waits, until the server closes.
  const ended = yield* backend.pull(Option.none(), { live: true }).pipe(
    Stream.tap((page) => Effect.sync(() => {
      if (page.batch.some((e) => e.eventEncoded.seqNum === 1)) console.log('ready')
    })),
    Stream.runDrain,
    Effect.either,
  )
  if (ended._tag !== 'Left') throw new Error('the live pull ended without an error')
  const tag = ended.left?._tag
  if (tag !== 'IsOfflineError') throw new Error(`the live pull failed with ${tag}, not IsOfflineError`)
  console.log('live pull failed with IsOfflineError')
  // Reconnects by itself (backoff from 1 s); pull from the cursor until event 2 is there.
  const cursor = Option.some({ eventSequenceNumber: 1, metadata: Option.none() })
  for (let attempt = 0; attempt < 40; attempt++) {
    const pulled = yield* backend.pull(cursor).pipe(Stream.runCollect, Effect.either)
    if (pulled._tag === 'Right') {
      const seqs = Chunk.toArray(pulled.right).flatMap((p) => p.batch.map((e) => e.eventEncoded.seqNum))
      if (seqs.length === 1 && seqs[0] === 2) {
        console.log('recovered: pulled [2] on a new connection')
        return
      }
      if (seqs.length > 0) throw new Error(`unexpected events after the cursor: ${JSON.stringify(seqs)}`)
    }
    yield* Effect.sleep(Duration.millis(500))
  }
  throw new Error('did not recover within 20 s')
})

Effect.runPromise(
  program.pipe(
    Effect.timeout(Duration.seconds(60)),
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

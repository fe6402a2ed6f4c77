// After an import: the real 0.3 client pulls the imported store from Junction and keeps pushing
// on top of it.
//
//   JUNCTION_URL=http://127.0.0.1:PORT node continue.mjs <storeId> <expectedEvents> <expectedLastSeq>
//
// Exits 0 when the initial pull (pages up to remaining 0) returns exactly the expected number of
// events ending at the expected seq, a push of lastSeq+1 on top is acknowledged, and the pull
// stream then delivers exactly that event. Prints what it saw.
import { makeCfSync } from '@livestore/sync-cf'
import { Duration, Effect, FetchHttpClient, Option, Queue, Stream } from '@livestore/utils/effect'

globalThis.WebSocket = (await import('ws')).WebSocket

const [storeId, expectedCount, expectedLast] = process.argv.slice(2)
const url = process.env.JUNCTION_URL.replace(/^http/, 'ws')

const program = Effect.gen(function* () {
  const backend = yield* makeCfSync({ url })({ storeId, clientId: 'continuer', payload: undefined })
  const pages = yield* Queue.unbounded()
  // pull() may be called once per backend; its stream carries the pages, then the live echoes.
  yield* backend.pull(Option.none()).pipe(Stream.runForEach((page) => Queue.offer(pages, page)), Effect.forkScoped)
  const events = []
  for (;;) {
    const page = yield* Queue.take(pages)
    events.push(...page.batch.map((e) => e.eventEncoded))
    if (page.remaining === 0) break
  }
  const last = events.at(-1)?.seqNum ?? 0
  console.log(`pulled ${events.length} events, last seq ${last}`)
  if (events.length !== Number(expectedCount) || last !== Number(expectedLast)) {
    throw new Error(`expected ${expectedCount} events ending at ${expectedLast}`)
  }
  const next = { name: 'todoCreated', args: { id: 'after-import' }, seqNum: last + 1, parentSeqNum: last, clientId: 'continuer', sessionId: 's1' }
  yield* backend.push([next])
  const echo = yield* Queue.take(pages)
  const seqs = echo.batch.map((e) => e.eventEncoded.seqNum)
  console.log(`pushed ${last + 1} on top; the pull stream delivered ${JSON.stringify(seqs)}`)
  if (seqs.length !== 1 || seqs[0] !== last + 1) throw new Error('the pushed event did not come back exactly once')
})

Effect.runPromise(program.pipe(Effect.timeout(Duration.seconds(60)), Effect.scoped, Effect.provide(FetchHttpClient.layer))).then(
  () => process.exit(0),
  (error) => {
    console.error('FAILED', error)
    process.exit(1)
  },
)

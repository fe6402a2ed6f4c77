// 0.3.1 client: auth. Needs a Junction configured with an auth token; the Rust harness runs this
// file against such a server with JUNCTION_EXPECT_AUTH=1 and JUNCTION_AUTH_TOKEN=<the token>.
//
// A rejected 0.3 client never sees an error: its socket simply never opens and it retries forever.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { Effect, SubscriptionRef, ev, makeBackend, pullAll, randomStoreId, runTest, waitConnected, within } from './helpers.mjs'

const expectAuth = process.env.JUNCTION_EXPECT_AUTH === '1'
const skip = expectAuth
  ? false
  : 'JUNCTION_EXPECT_AUTH is not 1: auth tests need a Junction started with an auth token (JUNCTION_AUTH_TOKEN)'
if (!expectAuth) console.log(`# SKIP v03 auth tests: ${skip}`)

/** Asserts the backend stays disconnected and a push never completes for `ms`. */
const assertNeverConnects = (backend, ms) =>
  Effect.gen(function* () {
    const pushed = yield* backend.push([ev(1, { args: { by: 'intruder' } })]).pipe(Effect.either, Effect.timeout(ms), Effect.option)
    assert.ok(pushed._tag === 'None' || pushed.value._tag === 'Left', 'push must not succeed')
    assert.equal(yield* SubscriptionRef.get(backend.isConnected), false, 'isConnected stays false')
  })

test('14. a wrong or missing auth token never connects; the right token works', { skip }, async () => {
  const token = process.env.JUNCTION_AUTH_TOKEN
  assert.ok(token, 'JUNCTION_AUTH_TOKEN must be set when JUNCTION_EXPECT_AUTH=1')
  const storeId = randomStoreId('auth')
  await runTest(
    Effect.gen(function* () {
      const wrong = yield* makeBackend(storeId, { clientId: 'wrong', payload: { authToken: 'wrong' } })
      const missing = yield* makeBackend(storeId, { clientId: 'missing', payload: undefined })
      yield* Effect.all([assertNeverConnects(wrong, 3_000), assertNeverConnects(missing, 3_000)], { concurrency: 'unbounded' })

      const good = yield* makeBackend(storeId, { clientId: 'good', payload: { authToken: token } })
      yield* waitConnected(good, 3_000)
      yield* good.push([ev(1, { args: { by: 'good' } })]).pipe(within(5_000, 'push with the right token'))
      assert.deepEqual(
        (yield* pullAll(storeId)).events.map((e) => [e.seqNum, e.args.by]),
        [[1, 'good']],
        'only the authorised event is stored',
      )
    }),
  )
})

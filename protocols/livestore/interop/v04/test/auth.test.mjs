// 0.4.0 clients: auth. Needs a Junction configured with an auth token; the Rust harness runs this
// file against such a server with JUNCTION_EXPECT_AUTH=1 and JUNCTION_AUTH_TOKEN=<the token>.
//
// A rejected WebSocket client sees no error: the socket fails to open, it retries silently and
// `isConnected` stays false. A rejected HTTP request fails the RPC (UnknownError).
import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  Effect,
  SubscriptionRef,
  ev,
  makeClient,
  pullAll,
  pullPages,
  randomStoreId,
  runTest,
  within,
} from './helpers.mjs'

const expectAuth = process.env.JUNCTION_EXPECT_AUTH === '1'
const skip = expectAuth
  ? false
  : 'JUNCTION_EXPECT_AUTH is not 1: auth tests need a Junction started with an auth token (JUNCTION_AUTH_TOKEN)'
if (!expectAuth) console.log(`# SKIP v04 auth tests: ${skip}`)

const token = () => {
  const t = process.env.JUNCTION_AUTH_TOKEN
  assert.ok(t, 'JUNCTION_AUTH_TOKEN must be set when JUNCTION_EXPECT_AUTH=1')
  return t
}

/** connect (ping timeout 2.5 s) must not leave the client connected; a push must not succeed. */
const assertWsNeverConnects = (backend) =>
  Effect.gen(function* () {
    // connect swallows the ping timeout and just leaves isConnected false; an error is fine too.
    yield* backend.connect.pipe(Effect.either, within(5_000, 'connect with a rejected payload'))
    assert.equal(yield* SubscriptionRef.get(backend.isConnected), false, 'isConnected stays false')
    const pushed = yield* backend.push([ev(1, { args: { by: 'intruder' } })]).pipe(Effect.either, Effect.timeout(1_000), Effect.option)
    assert.ok(pushed._tag === 'None' || pushed.value._tag === 'Left', 'push must not succeed')
    assert.equal(yield* SubscriptionRef.get(backend.isConnected), false, 'isConnected still false')
  })

test('14. WS: a wrong or missing auth token never connects; the right token works', { skip }, async () => {
  const storeId = randomStoreId('auth-ws')
  const ping = { requestTimeout: 2_500 }
  await runTest(
    Effect.gen(function* () {
      const { backend: wrong } = yield* makeClient(storeId, { clientId: 'wrong', payload: { authToken: 'wrong' }, ping })
      const { backend: missing } = yield* makeClient(storeId, { clientId: 'missing', payload: undefined, ping })
      yield* Effect.all([assertWsNeverConnects(wrong), assertWsNeverConnects(missing)], { concurrency: 'unbounded' })

      const { backend: good } = yield* makeClient(storeId, { clientId: 'good', payload: { authToken: token() }, ping })
      yield* good.connect.pipe(within(3_000, 'connect with the right token'))
      assert.equal(yield* SubscriptionRef.get(good.isConnected), true)
      yield* good.push([ev(1, { args: { by: 'good' } })]).pipe(within(5_000, 'push with the right token'))
      assert.deepEqual(
        (yield* pullAll(storeId)).events.map((e) => [e.seqNum, e.args.by]),
        [[1, 'good']],
        'only the authorised event is stored',
      )
    }),
  )
})

test('14b. HTTP: a wrong or missing auth token is refused; the right token works', { skip }, async () => {
  const storeId = randomStoreId('auth-http')
  await runTest(
    Effect.gen(function* () {
      for (const [label, payload] of [
        ['wrong', { authToken: 'wrong' }],
        ['missing', undefined],
      ]) {
        const { backend } = yield* makeClient(storeId, { transport: 'http', clientId: label, payload, ping: { enabled: false } })
        const push = yield* backend.push([ev(1, { args: { by: label } })]).pipe(Effect.either, within(5_000, `${label} HTTP push`))
        assert.equal(push._tag, 'Left', `${label} token: the HTTP push must fail`)
        // A non-2xx answer surfaces as UnknownError(RpcClientError(ResponseError)), not as a typed error.
        assert.equal(push.left._tag, 'UnknownError', `${label} token: push error`)
        const pull = yield* pullPages(backend).pipe(Effect.either)
        assert.equal(pull._tag, 'Left', `${label} token: the HTTP pull must fail`)
        assert.equal(pull.left._tag, 'UnknownError', `${label} token: pull error`)
        yield* backend.ping.pipe(Effect.ignore, within(5_000, `${label} HTTP ping`))
        assert.equal(yield* SubscriptionRef.get(backend.isConnected), false, `${label} token: isConnected stays false`)
      }

      const { backend: good } = yield* makeClient(storeId, { transport: 'http', clientId: 'good', payload: { authToken: token() } })
      yield* good.ping.pipe(within(5_000, 'HTTP ping with the right token'))
      assert.equal(yield* SubscriptionRef.get(good.isConnected), true)
      yield* good.push([ev(1, { args: { by: 'good' } })]).pipe(within(5_000, 'HTTP push with the right token'))
      const pages = yield* pullPages(good)
      assert.deepEqual(
        pages.flatMap((p) => p.batch.map((i) => [i.eventEncoded.seqNum, i.eventEncoded.args.by])),
        [[1, 'good']],
      )
    }),
  )
})

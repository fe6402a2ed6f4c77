// Prints the backendId a real @livestore/sync-cf 0.4.0 client learns from one non-live pull of a store.
//
//   JUNCTION_URL=http://127.0.0.1:PORT node backend-id.mjs <storeId> [--push N] [--transport ws|http]
//
// stdout: exactly one line, the backendId. Exit code 0 on success, 1 on any failure (message on
// stderr), always within ~15 s. `--push N` first pushes events 1..N (parent chain from 0) so the
// store exists with content; it fails if the store is not empty. Uses JUNCTION_AUTH_TOKEN as
// `{authToken}` payload when set. The Rust tests use it to check that a store keeps its backendId
// across a Junction restart.
import { Effect, Option, Stream } from '@livestore/utils/effect'

import { evRange, makeClient, runTest, within } from './test/helpers.mjs'

const args = process.argv.slice(2)
const storeId = args.find((a, i) => !a.startsWith('--') && !(i > 0 && args[i - 1].startsWith('--')))
const flag = (name) => {
  const i = args.indexOf(name)
  return i === -1 ? undefined : args[i + 1]
}
const push = Number(flag('--push') ?? 0)
const transport = flag('--transport') ?? 'ws'

if (!storeId || !Number.isInteger(push) || push < 0 || !['ws', 'http'].includes(transport)) {
  console.error('usage: JUNCTION_URL=http://host:port node backend-id.mjs <storeId> [--push N] [--transport ws|http]')
  process.exit(2)
}

try {
  const id = await runTest(
    Effect.gen(function* () {
      const { backend, backendId } = yield* makeClient(storeId, { clientId: 'backend-id-probe', transport, ping: { enabled: false } })
      if (push > 0) {
        for (let n = 1; n <= push; n += 50) {
          yield* backend.push(evRange(n, Math.min(push, n + 49))).pipe(within(5_000, `push ${n}..`))
        }
      }
      yield* Stream.runDrain(backend.pull(Option.none())).pipe(within(5_000, 'pull'))
      const id = yield* backendId()
      if (Option.isNone(id)) return yield* Effect.fail(new Error('the pull returned no backendId'))
      return id.value
    }),
    15_000,
  )
  console.log(id)
  process.exit(0)
} catch (error) {
  console.error(`backend-id.mjs: ${error?.message ?? error}`)
  process.exit(1)
}

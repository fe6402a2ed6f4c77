// Real clients that stay connected while Junction restarts on the same port, driven by the Rust
// test (tests/it/synckit_interop.rs):
//
//   SYNCKIT_URL=… SYNCKIT_DOC=<id> node reconnect.mjs
//
// 1. Clients A ("client-A") and B ("user-B") write and converge, then the script prints "ready".
// 2. The harness restarts Junction on the same port and database.
// 3. A writes while it is disconnected (the SDK queues it) and both reconnect on their own (SDK
//    backoff). The queued write must reach the server (replayed and acked); new writes to fields
//    both clients already hold at the server's old clock must converge on both — the restarted
//    server's clock has to continue above the one it had.
// Prints "recovered" and exits 0 on success.
import assert from 'node:assert/strict'
import { converge, newClient, openDoc, serverUrl, waitFor } from './lib/harness.mjs'
import { serverDocument } from './lib/raw.mjs'

const id = process.env.SYNCKIT_DOC

try {
  const a = await newClient('client-A')
  const b = await newClient('user-B')
  const states = { a: [], b: [] }
  a.websocket.onStateChange((s) => states.a.push(s))
  b.websocket.onStateChange((s) => states.b.push(s))
  const da = await openDoc(a, id)
  const db = await openDoc(b, id)
  await da.update({ title: 'before restart', n: 1 })
  for (let i = 0; i < 5; i++) await db.set('n', i + 10)
  await converge([da, db], { title: 'before restart', n: 14 })
  process.stdout.write('ready\n')

  await waitFor(() => states.a.includes('reconnecting'), { ms: 30000, what: 'A to notice the restart' })
  await da.set('offline', 'written while disconnected') // queued by the SDK, resolves at once
  const reconnected = (s) => s.lastIndexOf('connected') > s.lastIndexOf('reconnecting')
  await waitFor(() => reconnected(states.a) && reconnected(states.b), {
    ms: 60000,
    what: 'both clients to reconnect',
    describe: () => JSON.stringify(states),
  })
  await waitFor(() => a.getSyncState(id).state === 'synced' && b.getSyncState(id).state === 'synced', {
    ms: 20000, what: 'both clients to re-subscribe',
  })

  // The queued write is replayed on reconnect and acked. B only sees it if it re-subscribed before
  // the replay reached the server (0.1.1 ignores sync_response.state), so check it at the server.
  await waitFor(() => a.getNetworkStatus().queueSize === 0, { ms: 20000, what: "A's offline queue to drain" })
  assert.equal((await serverDocument(serverUrl(), id)).state.offline, 'written while disconnected')
  assert.equal(da.get().offline, 'written while disconnected')
  await db.set('title', 'B after restart')
  await converge([da, db], { title: 'B after restart' })
  await da.set('n', 'A after restart')
  await converge([da, db], { n: 'A after restart' })
  const server = await serverDocument(serverUrl(), id)
  assert.deepStrictEqual(server.state, { title: 'B after restart', n: 'A after restart', offline: 'written while disconnected' })
  process.stdout.write('recovered\n')
  process.exit(0)
} catch (error) {
  console.error(error)
  process.exit(1)
}

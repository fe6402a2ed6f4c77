// The faithful engine across a server restart, driven by tests/it/pocket_interop.rs:
//   node scripts/restart.mjs <ws-url> <collection>
// 1. syncs a document, prints "ready";
// 2. the test restarts Junction on the same port (the socket closes with 1001);
// 3. while disconnected, writes another document (queued, as the real engine does offline);
// 4. the engine reconnects by itself (its own backoff) and forceSync()s: the queued write is
//    pushed, and "from-other" (pushed meanwhile by the test over HTTP) is pulled;
// 5. a newcomer pulls from nothing: everyone must agree; prints "recovered <json>".

import { createSyncEngine } from '../src/index.js';

const [url, col] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fail = (message) => { console.log(`failed: ${message}`); process.exit(1); };
const until = async (what, check, ms = 30_000) => {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
};

const options = { collections: [col], pullInterval: 0, retryDelay: 50, transportOptions: { reconnectBaseDelayMs: 200 } };
const a = createSyncEngine({ serverUrl: url, nodeId: 'A', ...options });
await a.start();
a.insert(col, { _id: 'before', v: 1 });
await a.idle();
if (a.queue.size !== 0) fail('the first write was not acknowledged');
console.log('ready');

await until('the restart to close the socket', () => a.events.some((e) => e.name === 'close'));
const close = a.events.find((e) => e.name === 'close');
if (close.code !== 1001) fail(`closed with ${close.code}, expected 1001 (going away)`);
a.insert(col, { _id: 'offline', v: 2 });
a.update(col, 'before', { v: 'edited offline' });
await until('the reconnect', () => a.events.some((e) => e.name === 'reconnected'));
await until('the offline writes to be pushed and the other write pulled', () =>
  a.queue.size === 0 && a.status === 'idle' && a.get(col, 'from-other') !== undefined);

const b = createSyncEngine({ serverUrl: url, nodeId: 'B', ...options });
await b.start();
const state = (e) => JSON.stringify(e.documents(col).map(({ _id, v }) => ({ _id, v })));
if (state(a) !== state(b)) fail(`A ${state(a)} differs from the server ${state(b)}`);
const seqs = a.wire.filter((w) => w.dir === 'in' && w.data.startsWith('{"type":"pull-response"'))
  .flatMap((w) => JSON.parse(w.data).changes[col] ?? []).map((c) => c.sequence);
if (JSON.stringify(seqs) !== JSON.stringify([...new Set(seqs)].sort((x, y) => x - y))) fail(`pulled ${seqs}`);
console.log(`recovered ${state(b)}`);
await a.close();
await b.close();

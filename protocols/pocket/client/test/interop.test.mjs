// Interop: 2–3 faithful clients against a running server (Junction), over both transports.
// Skipped unless POCKET_WS_URL is set. Environment:
//   POCKET_WS_URL    e.g. ws://127.0.0.1:8080/sync
//   POCKET_HTTP_URL  e.g. http://127.0.0.1:8080 (HTTP-mode tests are skipped without it)
//   POCKET_TOKEN     a valid token (default "tok"); POCKET_TOKEN_2 another user's (optional)
//   POCKET_BAD_TOKEN a token the server rejects (default "definitely-not-a-token")
// Each test uses fresh collection names, so it runs against a server with existing data.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import WebSocket from 'ws';

import { createSyncEngine, randomBase36 } from '../src/index.js';

const WS_URL = process.env.POCKET_WS_URL;
const HTTP_URL = process.env.POCKET_HTTP_URL;
const TOKEN = process.env.POCKET_TOKEN ?? 'tok';
const BAD_TOKEN = process.env.POCKET_BAD_TOKEN ?? 'definitely-not-a-token';
const skip = WS_URL ? false : 'POCKET_WS_URL is not set';
const skipHttp = skip || (HTTP_URL ? false : 'POCKET_HTTP_URL is not set');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ID_PATTERN = /^[0-9a-z]+-[0-9a-z]{6}$/;
const fresh = (prefix) => `${prefix}_${randomBase36(8)}`;

const engines = [];

/** A client; `pullInterval: 0` so that only explicit sync()/pull() pulls, as tests decide. */
async function client(name, collections, overrides = {}) {
  const engine = createSyncEngine({
    serverUrl: WS_URL,
    authToken: TOKEN,
    nodeId: `${name}_${randomBase36(4)}`,
    collections,
    pullInterval: 0,
    retryDelay: 50,
    ...overrides,
  });
  engines.push(engine);
  await engine.start();
  return engine;
}

async function closeAll() {
  for (const e of engines.splice(0)) await e.close();
}

const sent = (engine, type) => engine.wire.filter((w) => w.dir === 'out' && w.data.startsWith('{'))
  .map((w) => JSON.parse(w.data)).filter((m) => !type || m.type === type);
const received = (engine, type) => engine.wire.filter((w) => w.dir === 'in' && w.data.startsWith('{'))
  .map((w) => JSON.parse(w.data)).filter((m) => !type || m.type === type);

/** The user-visible state: live documents without local-only fields. */
const state = (engine, collection) => engine.documents(collection).map(({ _id, _rev, ...rest }) => ({ _id, _rev, ...rest }));

async function settle(...clients) {
  // Two rounds: pushes land, then every client pulls what the others pushed.
  for (let round = 0; round < 2; round++) {
    for (const c of clients) await c.idle();
    for (const c of clients) await c.sync();
  }
}

describe('Pocket interop (WebSocket)', { skip, concurrency: false }, () => {
  test('first sync: the pull and its reply have the real shapes', async (t) => {
    t.after(closeAll);
    const col = fresh('todos');
    const a = await client('A', [col]);
    const [pull] = sent(a, 'pull');
    assert.deepEqual(Object.keys(pull), ['type', 'id', 'timestamp', 'collections', 'checkpoint', 'limit']);
    assert.match(pull.id, ID_PATTERN);
    assert.deepEqual(pull.collections, [col]);
    assert.equal(pull.limit, 100);
    assert.deepEqual(pull.checkpoint, { id: pull.checkpoint.id, sequences: {}, timestamp: 0, nodeId: a.nodeId });
    assert.match(pull.checkpoint.id, new RegExp(`^${a.nodeId}_\\d+$`));
    const [reply] = received(a, 'pull-response');
    assert.equal(reply.id, pull.id, 'the reply echoes the request id');
    assert.deepEqual(reply.changes, {});
    assert.equal(reply.hasMore, false);
    assert.equal(typeof reply.checkpoint.sequences, 'object');
    assert.equal(a.status, 'idle');
  });

  test('insert → push → push-response; the push carries the full checkpoint', async (t) => {
    t.after(closeAll);
    const col = fresh('todos');
    const a = await client('A', [col]);
    a.insert(col, { _id: 't1', title: 'hello' });
    await a.idle();
    const [push] = sent(a, 'push');
    assert.deepEqual(Object.keys(push), ['type', 'id', 'timestamp', 'collection', 'changes', 'checkpoint']);
    assert.deepEqual(Object.keys(push.changes[0]), ['operation', 'documentId', 'document', 'isFromSync', 'timestamp', 'sequence']);
    assert.deepEqual(Object.keys(push.checkpoint), ['id', 'sequences', 'timestamp', 'nodeId']);
    const [reply] = received(a, 'push-response');
    assert.equal(reply.id, push.id);
    assert.equal(reply.success, true);
    assert.equal(reply.conflicts, undefined, 'conflicts left out when there are none');
    assert.equal(a.queue.size, 0);
  });

  test('overlapping pushes: three quick inserts send [a], [a,b], [a,b,c] before any reply', async (t) => {
    t.after(closeAll);
    const col = fresh('todos');
    const a = await client('A', [col]);
    const b = await client('B', [col]);
    a.insert(col, { _id: 'a', n: 1 });
    a.insert(col, { _id: 'b', n: 2 });
    a.insert(col, { _id: 'c', n: 3 });
    const pushes = sent(a, 'push');
    assert.deepEqual(pushes.map((p) => p.changes.map((c) => c.documentId)), [['a'], ['a', 'b'], ['a', 'b', 'c']]);
    assert.deepEqual(pushes.at(-1).changes.map((c) => c.sequence), [1, 2, 3], 'client sequences on the way up');
    await a.idle();
    assert.equal(a.queue.size, 0);
    assert.equal(received(a, 'push-response').length, 3);
    await b.pull();
    assert.deepEqual(state(b, col), state(a, col), 'duplicates did not duplicate documents');
    // Each document arrives once per distinct write at most, and the checkpoint moves forward.
    const pulled = received(b, 'pull-response').at(-1).changes[col] ?? [];
    const seqs = pulled.map((c) => c.sequence);
    assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));
    assert.equal(b.checkpoint.sequences[col], Math.max(...seqs));
  });

  test('three clients interleaving inserts, updates and deletes converge', async (t) => {
    t.after(closeAll);
    const col = fresh('notes');
    const a = await client('A', [col]);
    const b = await client('B', [col]);
    const c = await client('C', [col]);
    a.insert(col, { _id: 'a1', v: 'a' });
    b.insert(col, { _id: 'b1', v: 'b' });
    c.insert(col, { _id: 'c1', v: 'c' });
    await settle(a, b, c);
    await sleep(2);
    a.update(col, 'b1', { v: 'b by a' });
    b.delete(col, 'c1');
    c.insert(col, { _id: 'c2', v: 'c2' });
    await sleep(2);
    c.update(col, 'a1', { v: 'a by c' });
    await settle(a, b, c);
    const expected = [
      { v: 'a by c' }, { v: 'b by a' }, { v: 'c2' },
    ];
    for (const e of [a, b, c]) {
      assert.deepEqual(e.documents(col).map(({ v }) => ({ v })), expected, e.nodeId);
      assert.equal(e.queue.size, 0, `${e.nodeId} has nothing left to push`);
    }
    assert.deepEqual(state(a, col), state(b, col));
    assert.deepEqual(state(b, col), state(c, col));
    // No redelivery: one more pull brings nothing new.
    await a.pull();
    assert.deepEqual(received(a, 'pull-response').at(-1).changes, {});
  });

  test('three clients, ~200 writes each, pulling only with their checkpoints, end equal to the server', async (t) => {
    t.after(closeAll);
    const col = fresh('busy');
    const clients = [await client('A', [col]), await client('B', [col]), await client('C', [col])];
    const WRITES = Number(process.env.POCKET_WRITES ?? 200);
    let seed = 12345;
    const random = (n) => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
    for (let i = 0; i < WRITES; i++) {
      for (const c of clients) {
        const live = c.documents(col);
        const deleted = c.documents(col, { includeDeleted: true }).filter((d) => d._deleted);
        const roll = random(100);
        if (live.length === 0 || roll < 35) c.insert(col, { _id: `${c.nodeId}-${i}`, v: `${c.nodeId}-${i}` });
        else if (roll < 40 && deleted.length > 0) c.insert(col, { _id: deleted[random(deleted.length)]._id, v: `again-${i}` });
        else if (roll < 85) c.update(col, live[random(live.length)]._id, { v: `${c.nodeId}-${i}` });
        else c.delete(col, live[random(live.length)]._id);
      }
      if (i % 3 === 0) await sleep(1);
      // Each client syncs now and then, on its own schedule.
      if (i % 10 === 3) await clients[0].sync();
      if (i % 15 === 7) await clients[1].sync();
      if (i % 25 === 11) await clients[2].sync();
    }
    await settle(...clients);
    // The server's state as a newcomer pulls it from nothing.
    const server = await client('S', [col], { batchSize: 37 });
    const expected = state(server, col);
    assert.ok(expected.length > 10, `the collection holds ${expected.length} documents`);
    for (const c of clients) {
      assert.equal(c.queue.size, 0, `${c.nodeId} has nothing left to push`);
      assert.deepEqual(state(c, col), expected, `${c.nodeId} ends equal to the server`);
      assert.equal(c.checkpoint.sequences[col], server.checkpoint.sequences[col], `${c.nodeId} has seen every change`);
      // Pulls never delivered a server sequence twice nor went backwards.
      const seqs = received(c, 'pull-response').filter((m) => !m.id.startsWith('broadcast_'))
        .flatMap((m) => (m.changes[col] ?? []).map((x) => x.sequence));
      assert.deepEqual(seqs, [...new Set(seqs)].sort((x, y) => x - y), `${c.nodeId} pulled each change once, in order`);
    }
    const serverSeqs = received(server, 'pull-response').flatMap((m) => (m.changes[col] ?? []).map((x) => x.sequence));
    assert.deepEqual(serverSeqs, serverSeqs.map((_, i) => i + 1), 'sequences are the store\'s seqs 1..n, gap-free');
  });

  test('concurrent updates of one document: last write wins everywhere', async (t) => {
    t.after(closeAll);
    const col = fresh('docs');
    const a = await client('A', [col]);
    const b = await client('B', [col]);
    a.insert(col, { _id: 'x', v: 0 });
    await settle(a, b);
    // Hold B's push so that both writes are concurrent on the server.
    b.status = 'syncing';
    b.update(col, 'x', { v: 'b-first' });
    await sleep(5);
    a.update(col, 'x', { v: 'a-later' });
    await a.idle();
    b.status = 'idle';
    await b.push();
    // The server's copy is newer, so under last-write-wins it wins and is reported.
    const reply = received(b, 'push-response').at(-1);
    assert.equal(reply.success, false);
    assert.equal(reply.conflicts[0].documentId, 'x');
    assert.equal(reply.conflicts[0].serverDocument.v, 'a-later');
    assert.equal(b.get(col, 'x').v, 'a-later', 'B resolved locally without pushing back');
    assert.equal(b.queue.size, 0);
    await settle(a, b);
    assert.equal(a.get(col, 'x').v, 'a-later');
    assert.equal(b.get(col, 'x').v, 'a-later');
  });

  test('a delete goes up as document:null with previousDocument, and hard-deletes elsewhere', async (t) => {
    t.after(closeAll);
    const col = fresh('todos');
    const a = await client('A', [col]);
    const b = await client('B', [col]);
    a.insert(col, { _id: 'd', v: 1 });
    await settle(a, b);
    assert.ok(b.get(col, 'd'));
    a.delete(col, 'd');
    await a.idle();
    const del = sent(a, 'push').at(-1).changes.at(-1);
    assert.equal(del.operation, 'delete');
    assert.equal(del.document, null);
    assert.equal(del.previousDocument._id, 'd');
    await b.pull();
    assert.equal(b.get(col, 'd'), undefined, 'document:null hard-deletes');
    assert.equal(a.get(col, 'd')._deleted, true, 'the writer keeps a tombstone');
  });

  test('broadcasts are dropped: remote changes arrive only by pulling', async (t) => {
    t.after(closeAll);
    const col = fresh('todos');
    const a = await client('A', [col]);
    const b = await client('B', [col]); // its first pull subscribed it
    a.insert(col, { _id: 'r', v: 1 });
    await a.idle();
    await sleep(100);
    assert.equal(b.get(col, 'r'), undefined, 'not applied from a broadcast');
    // Parity with the reference: B got a broadcast, and dropped it.
    assert.ok(b.ignoredMessages.length >= 1, 'a broadcast reached B');
    for (const m of b.ignoredMessages) assert.match(m.id, /^broadcast_/);
    await b.pull();
    assert.equal(b.get(col, 'r').v, 1);
  });

  test('hasMore: a small batchSize pages through everything with a forward-moving checkpoint', async (t) => {
    t.after(closeAll);
    const col = fresh('many');
    const a = await client('A', [col]);
    for (let i = 0; i < 7; i++) a.insert(col, { _id: `m${i}`, i });
    await a.idle();
    const b = await client('B', [col], { batchSize: 2 });
    assert.equal(b.documents(col).length, 7);
    const pulls = sent(b, 'pull');
    assert.ok(pulls.length >= 4, `paged (${pulls.length} pulls)`);
    const marks = pulls.map((p) => p.checkpoint.sequences[col] ?? 0);
    for (let i = 1; i < marks.length; i++) assert.ok(marks[i] > marks[i - 1], `checkpoint moved: ${marks}`);
  });

  test('text ping gets text pong; the connection stays up', async (t) => {
    t.after(closeAll);
    const a = await client('A', [fresh('hb')], { transportOptions: { heartbeatIntervalMs: 100, heartbeatTimeoutMs: 80 } });
    await sleep(450);
    assert.ok(a.wire.filter((w) => w.dir === 'in' && w.data === 'pong').length >= 3);
    assert.ok(!a.events.some((e) => e.name === 'close'));
  });

  test('a bad token is refused (4001 after open, or the upgrade fails)', async () => {
    const ws = new WebSocket(`${WS_URL}${WS_URL.includes('?') ? '&' : '?'}token=${encodeURIComponent(BAD_TOKEN)}`);
    const outcome = await new Promise((resolve) => {
      ws.on('close', (code) => resolve({ code }));
      ws.on('error', (err) => resolve({ error: err.message }));
      setTimeout(() => resolve({ stillOpen: true }), 5_000).unref();
    });
    assert.ok(!outcome.stillOpen, 'the server kept a connection with a bad token open');
    if (outcome.code !== undefined) assert.ok([4001, 1006].includes(outcome.code), JSON.stringify(outcome));
    ws.terminate();
  });

  test('error replies echo the request id (Junction)', async () => {
    const url = new URL(WS_URL);
    url.searchParams.set('token', TOKEN);
    const ws = new WebSocket(url);
    await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
    const replies = [];
    ws.on('message', (d) => replies.push(d.toString()));
    ws.send(JSON.stringify({ type: 'ack', id: 'e1', timestamp: 1, originalId: 'x' }));
    ws.send(JSON.stringify({ type: 'pull', id: 'e2', collections: ['x'] }));
    ws.send('not-json');
    ws.send('ping');
    const deadline = Date.now() + 2000;
    while (replies.length < 4 && Date.now() < deadline) await sleep(10);
    ws.close();
    const byId = Object.fromEntries(replies.filter((r) => r.startsWith('{')).map((r) => JSON.parse(r)).map((m) => [m.id, m]));
    assert.equal(byId.e1?.code, 'UNKNOWN_MESSAGE');
    assert.equal(byId.e2?.type, 'error');
    assert.ok(replies.some((r) => r.startsWith('{') && JSON.parse(r).code === 'PARSE_ERROR'));
    assert.ok(replies.includes('pong'));
  });
});

describe('Pocket interop (two users)', { skip: skip || (process.env.POCKET_TOKEN_2 ? false : 'POCKET_TOKEN_2 is not set'), concurrency: false }, () => {
  // POCKET_TOKEN may read and write everything; POCKET_TOKEN_2 only collections named `u2-*`
  // (see tests/it/pocket_interop.rs).
  test('a user sees and writes only the collections its token allows', async (t) => {
    t.after(closeAll);
    const mine = fresh('u2');
    const mine2 = mine.replace(/^u2_/, 'u2-');
    const theirs = fresh('private');
    const a = await client('A', [theirs, mine2]);
    const b = await client('B', [theirs, mine2], { authToken: process.env.POCKET_TOKEN_2 });
    a.insert(theirs, { _id: 'secret', v: 1 });
    a.insert(mine2, { _id: 'shared', v: 1 });
    await settle(a, b);
    assert.deepEqual(b.documents(theirs), [], 'nothing of a collection B may not read');
    assert.equal(b.get(mine2, 'shared').v, 1, 'B reads what it may');
    assert.equal(b.checkpoint.sequences[theirs] ?? 0, 0, 'no checkpoint progress on a forbidden collection');
    assert.ok(!b.ignoredMessages.some((m) => m.changes?.[theirs]), 'no broadcast of a forbidden collection');
    b.insert(theirs, { _id: 'intruder', v: 2 });
    await b.idle();
    const refusal = received(b, 'error').at(-1);
    assert.equal(refusal.code, 'FORBIDDEN');
    assert.equal(refusal.id, sent(b, 'push').at(-1).id, 'the refusal answers the push');
    assert.equal(b.queue.size, 1, 'the refused change stays queued, as the real engine keeps it');
    await a.pull();
    assert.equal(a.get(theirs, 'intruder'), undefined, 'nothing was written');
  });
});

describe('Pocket interop (HTTP, useWebSocket:false)', { skip: skipHttp, concurrency: false }, () => {
  test('HTTP and WebSocket clients converge; routes and Bearer are used', async (t) => {
    t.after(closeAll);
    const col = fresh('mixed');
    const h = await client('H', [col], { serverUrl: `${HTTP_URL}/ignored/base/path`, useWebSocket: false });
    const w = await client('W', [col]);
    h.insert(col, { _id: 'h1', v: 'http' });
    w.insert(col, { _id: 'w1', v: 'ws' });
    await settle(h, w);
    h.update(col, 'w1', { v: 'ws by http' });
    w.delete(col, 'h1');
    await settle(h, w);
    assert.deepEqual(state(h, col), state(w, col));
    assert.deepEqual(h.documents(col).map((d) => d.v), ['ws by http']);
    const routes = h.wire.filter((x) => x.dir === 'out').map((x) => x.route);
    assert.ok(routes.includes('/sync/push') && routes.includes('/sync/pull'));
    assert.equal(h.events[0].name, 'open');
    assert.match(h.events[0].url, /\/health$/);
  });

  test('HTTP: a bad token makes start() fail with C500 "HTTP error: 401|403"', async (t) => {
    t.after(closeAll);
    const col = fresh('badtok');
    const h = createSyncEngine({
      serverUrl: HTTP_URL, authToken: BAD_TOKEN, nodeId: 'H', collections: [col], useWebSocket: false,
      pullInterval: 0, retryDelay: 10, maxRetryAttempts: 2,
    });
    engines.push(h);
    await assert.rejects(h.start(), (e) => e.code === 'POCKET_C500' && /HTTP error: (401|403)/.test(e.message));
    assert.equal(h.status, 'error');
  });
});

// Offline tests of the client's own behaviour: shapes, rules, and both transports against
// scripted sockets (no protocol server).

import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import { test } from 'node:test';

import { WebSocketServer } from 'ws';

import {
  CheckpointManager,
  ConnectionError,
  ErrorCodes,
  HttpTransport,
  OptimisticQueue,
  WebSocketTransport,
  compareVClocks,
  createSyncEngine,
  detectConflict,
  httpUrl,
  messageId,
  resolveConflict,
  routeFor,
  webSocketUrl,
} from '../src/index.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Ids, documents, changes.

test('message ids look like <ms base36>-<6 base36>', () => {
  const id = messageId(1795311045387);
  assert.match(id, /^mwr5uccr-[0-9a-z]{6}$/);
  for (let i = 0; i < 200; i++) assert.match(messageId(), /^[0-9a-z]+-[0-9a-z]{6}$/);
});

test('insert, update, delete produce the real client\'s documents and changes', () => {
  const engine = createSyncEngine({ serverUrl: 'ws://127.0.0.1:1/sync', nodeId: 'nodeA', collections: ['todos'] });
  const changes = [];
  engine.collection('todos').onChange((c) => changes.push(c));

  const doc = engine.insert('todos', { _id: 't1', title: 'hello' });
  assert.deepEqual(Object.keys(doc), ['_id', 'title', '_rev', '_createdAt', '_updatedAt', '_vclock']);
  assert.match(doc._rev, /^1-[0-9a-z]{8}$/);
  assert.equal(doc._createdAt, doc._updatedAt);
  assert.deepEqual(doc._vclock, { nodeA: 1 });

  const updated = engine.update('todos', 't1', { title: 'again' });
  assert.match(updated._rev, /^2-[0-9a-z]{8}$/);
  assert.deepEqual(updated._vclock, { nodeA: 2 });
  assert.equal(updated._createdAt, doc._createdAt);

  engine.delete('todos', 't1');
  const tombstone = engine.get('todos', 't1');
  assert.equal(tombstone._deleted, true);
  assert.match(tombstone._rev, /^3-/);
  assert.deepEqual(engine.documents('todos'), []);
  assert.equal(engine.documents('todos', { includeDeleted: true }).length, 1);

  assert.deepEqual(changes.map((c) => Object.keys(c)), [
    ['operation', 'documentId', 'document', 'isFromSync', 'timestamp', 'sequence'],
    ['operation', 'documentId', 'document', 'previousDocument', 'isFromSync', 'timestamp', 'sequence'],
    ['operation', 'documentId', 'document', 'previousDocument', 'isFromSync', 'timestamp', 'sequence'],
  ]);
  assert.deepEqual(changes.map((c) => [c.operation, c.sequence, c.isFromSync]), [
    ['insert', 1, false], ['update', 2, false], ['delete', 3, false],
  ]);
  assert.equal(changes[1].previousDocument, doc);
  assert.equal(changes[2].document, null);
  assert.equal(changes[2].previousDocument, updated);
  assert.throws(() => engine.update('todos', 't1', { title: 'x' }), /not found/);
});

test('B editing A\'s document bumps only B\'s clock entry', () => {
  const b = createSyncEngine({ serverUrl: 'ws://127.0.0.1:1/sync', nodeId: 'nodeB', collections: ['todos'] });
  b.collection('todos').applyRemoteChange({
    operation: 'update', documentId: 'd', document: { _id: 'd', _rev: '2-x', _vclock: { nodeA: 2 } },
  });
  assert.deepEqual(b.update('todos', 'd', { v: 1 })._vclock, { nodeA: 2, nodeB: 1 });
  assert.match(b.get('todos', 'd')._rev, /^3-/);
});

test('applyRemoteChange: store, hard delete on null, tombstone on a delete with a document', () => {
  const e = createSyncEngine({ serverUrl: 'ws://127.0.0.1:1/sync', nodeId: 'n', collections: ['c'] });
  const c = e.collection('c');
  const seen = [];
  c.onChange((ch) => seen.push(ch));
  c.applyRemoteChange({ operation: 'insert', documentId: 'a', document: { _id: 'a', v: 1 } });
  c.applyRemoteChange({ operation: 'insert', documentId: 'b', document: { _id: 'b', v: 1 } });
  c.applyRemoteChange({ operation: 'delete', documentId: 'a', document: null });
  c.applyRemoteChange({ operation: 'delete', documentId: 'b', document: { _id: 'b', v: 2 } });
  assert.equal(e.get('c', 'a'), undefined);
  assert.deepEqual(e.get('c', 'b'), { _id: 'b', v: 2, _deleted: true });
  assert.ok(seen.every((ch) => ch.isFromSync === true && ch.sequence === 0));
  assert.equal(c.sequence, 0, 'remote changes do not advance the local counter');
});

// ---------------------------------------------------------------------------------------------
// Queue and checkpoint.

test('queue keys are <collection>_<docId>_<ms>: a same-ms write replaces the earlier one', () => {
  const q = new OptimisticQueue();
  const insert = { operation: 'insert', documentId: 'a' };
  const update = { operation: 'update', documentId: 'a' };
  assert.equal(q.add('todos', insert, 1000), 'todos_a_1000');
  q.add('todos', { operation: 'insert', documentId: 'b' }, 1000);
  q.add('todos', update, 1000);
  assert.deepEqual(q.forCollection('todos'), [update, { operation: 'insert', documentId: 'b' }]);
  q.add('notes', insert, 1001);
  assert.deepEqual(q.collections(), ['todos', 'notes']);
  q.clearDocument('todos', 'a');
  assert.equal(q.hasDocument('todos', 'a'), false);
  q.clearCollection('todos');
  assert.equal(q.size, 1);
});

test('checkpoint: initial shape, max merge, TypeError without a checkpoint', () => {
  const cp = new CheckpointManager('nodeA', 1795311045375);
  assert.deepEqual(cp.snapshot(), { id: 'nodeA_1795311045375', sequences: {}, timestamp: 0, nodeId: 'nodeA' });
  assert.deepEqual(Object.keys(cp.snapshot()), ['id', 'sequences', 'timestamp', 'nodeId']);
  cp.mergeServerCheckpoint({ sequences: { todos: 0 }, timestamp: 5 });
  assert.equal(cp.getSequence('todos'), 0);
  assert.ok(cp.snapshot().timestamp > 0);
  cp.mergeServerCheckpoint({ sequences: { todos: 7, other: 2 } });
  cp.mergeServerCheckpoint({ sequences: { todos: 3 } });
  cp.mergeServerCheckpoint({ timestamp: 9 }); // missing sequences: tolerated
  assert.deepEqual(cp.snapshot().sequences, { todos: 7, other: 2 });
  assert.throws(() => cp.mergeServerCheckpoint(undefined), TypeError);
  const snap = cp.snapshot();
  snap.sequences.todos = 99;
  assert.equal(cp.getSequence('todos'), 7, 'snapshots are copies');
});

// ---------------------------------------------------------------------------------------------
// The conflict rules.

test('detectConflict follows the four rules', () => {
  const cases = [
    [{ _rev: '1-a' }, { _rev: '1-a' }, false],
    [{}, {}, false],
    [{ _rev: '2-a', _vclock: { A: 2 } }, { _rev: '2-b', _vclock: { A: 1, B: 1 } }, true],
    [{ _rev: '2-a', _vclock: { A: 1 } }, { _rev: '2-b', _vclock: { A: 1 } }, true],
    [{ _rev: '2-a', _vclock: { A: 2 } }, { _rev: '1-b', _vclock: { A: 1 } }, false],
    [{ _rev: '1-a' }, {}, true],
    [{ _rev: '2-x' }, { _rev: '3-y' }, false],
    [{ _rev: '3-x' }, { _rev: '3-y' }, true],
    [{ _rev: '01-x' }, { _rev: '1-y' }, true],
    [{ _rev: 'abc' }, { _rev: '1-y' }, false],
  ];
  for (const [a, b, want] of cases) {
    assert.equal(detectConflict(a, b), want, JSON.stringify([a, b]));
    assert.equal(detectConflict(b, a), want, JSON.stringify([b, a]));
  }
  assert.equal(compareVClocks({ A: 1 }, { A: 1 }), 'concurrent');
  assert.equal(compareVClocks({ A: 2 }, { A: 1 }), 'after');
  assert.equal(compareVClocks({}, { B: 1 }), 'before');
});

test('resolveConflict strategies', () => {
  const older = { _id: 'd', v: 1, _updatedAt: 10, _vclock: { A: 1 } };
  const newer = { _id: 'd', v: 2, _updatedAt: 20, _vclock: { B: 1 } };
  const lww = (l, r) => resolveConflict('last-write-wins', { localDocument: l, remoteDocument: r }).winner;
  assert.equal(lww(newer, older), 'local');
  assert.equal(lww(older, newer), 'remote');
  assert.equal(lww({ _updatedAt: 10, _vclock: { A: 2 } }, older), 'local');
  assert.equal(lww(older, { _updatedAt: 10, _vclock: { A: 2 } }), 'remote');
  assert.equal(lww({ _updatedAt: 10, _vclock: { C: 1 } }, older), 'remote');
  assert.equal(resolveConflict('server-wins', { localDocument: newer, remoteDocument: older }).winner, 'remote');
  assert.equal(resolveConflict('client-wins', { localDocument: older, remoteDocument: newer }).winner, 'local');
  const merged = resolveConflict('merge', {
    localDocument: { _id: 'd', a: 2, b: 1, _updatedAt: 10, _vclock: { A: 2 } },
    remoteDocument: { _id: 'd', a: 1, b: 3, _updatedAt: 20, _vclock: { B: 1 } },
    baseDocument: { _id: 'd', a: 1, b: 1 },
  });
  assert.equal(merged.winner, 'merged');
  assert.equal(merged.document.a, 2);
  assert.equal(merged.document.b, 3);
  assert.deepEqual(merged.document._vclock, { A: 2, B: 1 });
});

// ---------------------------------------------------------------------------------------------
// WebSocket transport against a scripted socket.

async function scriptedServer(onConnection) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(wss, 'listening');
  const upgrades = [];
  wss.on('connection', (ws, req) => {
    upgrades.push({ url: req.url, headers: req.headers });
    onConnection(ws, req);
  });
  return {
    url: `ws://127.0.0.1:${wss.address().port}/sync`,
    upgrades,
    close: () => new Promise((resolve) => {
      for (const c of wss.clients) c.terminate();
      wss.close(() => resolve());
    }),
  };
}

test('WS: token in the query, replies matched by id and type, others handed off, timeout C504', async () => {
  const server = await scriptedServer((ws) => {
    ws.on('message', (data) => {
      const text = data.toString();
      if (text === 'ping') return ws.send('pong');
      const msg = JSON.parse(text);
      // A broadcast, a reply with the wrong id, a non-response type with the right id, then the reply.
      ws.send(JSON.stringify({ type: 'pull-response', id: 'broadcast_1', changes: {}, checkpoint: {}, hasMore: false }));
      ws.send(JSON.stringify({ type: 'pull-response', id: 'someone-else', changes: {}, checkpoint: {}, hasMore: false }));
      ws.send(JSON.stringify({ type: 'checkpoint', id: msg.id }));
      if (msg.id.endsWith('silent')) return;
      if (msg.type === 'push') ws.send(JSON.stringify({ type: 'error', id: msg.id, code: 'X', message: 'm', retryable: false }));
      else ws.send(JSON.stringify({ type: 'pull-response', id: msg.id, changes: {}, checkpoint: { sequences: {} }, hasMore: false }));
    });
  });
  const other = [];
  const t = new WebSocketTransport({ serverUrl: `${server.url}?keep=1`, authToken: 'tok en', timeout: 300 });
  t.onMessage((m) => other.push(m));
  try {
    await t.connect();
    assert.equal(server.upgrades[0].url, '/sync?keep=1&token=tok+en');
    assert.equal(server.upgrades[0].headers['sec-websocket-protocol'], undefined);
    assert.equal(server.upgrades[0].headers.authorization, undefined);

    const reply = await t.send({ type: 'pull', id: 'r1' });
    assert.equal(reply.id, 'r1');
    assert.deepEqual(other.map((m) => m.id), ['broadcast_1', 'someone-else', 'r1']);

    const error = await t.send({ type: 'push', id: 'r2' });
    assert.equal(error.type, 'error', 'a matching error resolves the request');

    await assert.rejects(t.send({ type: 'pull', id: 'r3-silent' }), (e) => e.code === ErrorCodes.C504);
  } finally {
    await t.disconnect();
    await server.close();
  }
  assert.equal(webSocketUrl('ws://h/sync', ''), 'ws://h/sync');
});

test('WS: a server that refuses the upgrade: backoff doubles, then gives up after maxReconnectAttempts', async () => {
  const server = http.createServer();
  server.on('upgrade', (req, socket) => { socket.end('HTTP/1.1 401 Unauthorized\r\n\r\n'); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const events = [];
  const t = new WebSocketTransport({
    serverUrl: `ws://127.0.0.1:${server.address().port}/sync`, reconnectBaseDelayMs: 5, maxReconnectAttempts: 3,
    onEvent: (name, detail) => events.push({ name, ...detail }),
  });
  try {
    await assert.rejects(t.connect(), (e) => e.code === ErrorCodes.C502);
    // The initial connect's close schedules reconnects too (autoReconnect).
    const deadline = Date.now() + 2000;
    while (!events.some((e) => e.name === 'gave-up') && Date.now() < deadline) await sleep(10);
    assert.deepEqual(events.filter((e) => e.name === 'reconnect-scheduled').map((e) => e.delay), [5, 10, 20]);
  } finally {
    await t.disconnect();
    server.close();
  }
});

test('WS: explicit disconnect rejects pending with C503; send when closed is C501', async () => {
  const server = await scriptedServer(() => {});
  const t = new WebSocketTransport({ serverUrl: server.url, timeout: 5000, autoReconnect: false });
  try {
    await t.connect();
    const pending = assert.rejects(t.send({ type: 'pull', id: 'p' }),
      (e) => e instanceof ConnectionError && e.code === ErrorCodes.C503);
    await t.disconnect();
    await pending;
    await assert.rejects(t.send({ type: 'pull', id: 'q' }), (e) => e.code === ErrorCodes.C501);
  } finally {
    await server.close();
  }
});

test('WS: text ping every interval; a missing pong closes and reconnects', async () => {
  let answer = true;
  let connections = 0;
  const server = await scriptedServer((ws) => {
    connections += 1;
    ws.on('message', (d) => { if (d.toString() === 'ping' && answer) ws.send('pong'); });
  });
  const events = [];
  const wire = [];
  const t = new WebSocketTransport({
    serverUrl: server.url, heartbeatIntervalMs: 50, heartbeatTimeoutMs: 40, reconnectBaseDelayMs: 20,
    onEvent: (name) => events.push(name), onWire: (w) => wire.push(w),
  });
  let reconnected = 0;
  t.onReconnect(() => { reconnected += 1; });
  try {
    await t.connect();
    await sleep(250);
    assert.ok(wire.filter((w) => w.dir === 'out' && w.data === 'ping').length >= 3);
    assert.ok(wire.filter((w) => w.dir === 'in' && w.data === 'pong').length >= 3);
    assert.ok(!events.includes('close'));
    answer = false;
    const deadline = Date.now() + 2000;
    while (reconnected === 0 && Date.now() < deadline) await sleep(20);
    assert.ok(events.includes('close') && events.includes('reconnected'), events.join(','));
    assert.ok(connections >= 2);
  } finally {
    await t.disconnect();
    await server.close();
  }
});

test('WS: a 4001 close right after open loops through reconnects; each open resets the counter', async () => {
  const server = await scriptedServer((ws) => ws.close(4001, 'Authentication failed'));
  const events = [];
  const t = new WebSocketTransport({
    serverUrl: server.url, authToken: 'bad', reconnectBaseDelayMs: 5, maxReconnectAttempts: 3,
    onEvent: (name, detail) => events.push({ name, ...detail }),
  });
  try {
    await t.connect(); // resolves on open, as in the real client
    const deadline = Date.now() + 2000;
    while (events.filter((e) => e.name === 'reconnect-scheduled').length < 6 && Date.now() < deadline) await sleep(10);
    assert.equal(t.lastClose.code, 4001);
    const delays = events.filter((e) => e.name === 'reconnect-scheduled').map((e) => e.delay);
    assert.ok(delays.length >= 6 && delays.every((d) => d === 5), delays.join(','));
    assert.ok(!events.some((e) => e.name === 'gave-up'), 'more than maxReconnectAttempts tries');
  } finally {
    await t.disconnect();
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// HTTP transport against a scripted server.

test('HTTP: /health at the root, Bearer token, routes, status errors', async () => {
  const requests = [];
  let status = 200;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      requests.push({ method: req.method, url: req.url, headers: req.headers, body });
      res.statusCode = status;
      res.setHeader('content-type', 'application/json');
      res.end(req.url === '/health' ? 'ok' : JSON.stringify({ type: 'pull-response', id: 'not-checked' }));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const base = `http://127.0.0.1:${server.address().port}/api/v1/sync`;
  try {
    const t = new HttpTransport({ serverUrl: base, authToken: 'tok' });
    await t.connect();
    const reply = await t.send({ type: 'pull', id: 'a' });
    assert.equal(reply.id, 'not-checked', 'the body is returned without checking its id');
    await t.send({ type: 'push', id: 'b' });
    await t.send({ type: 'other', id: 'c' });
    assert.deepEqual(requests.map((r) => `${r.method} ${r.url}`),
      ['GET /health', 'POST /sync/pull', 'POST /sync/push', 'POST /sync']);
    assert.equal(requests[1].headers.authorization, 'Bearer tok');
    assert.equal(requests[1].headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(requests[1].body), { type: 'pull', id: 'a' });

    status = 503;
    await assert.rejects(t.send({ type: 'pull', id: 'd' }), (e) => e.code === ErrorCodes.C500 && e.message === 'HTTP error: 503');
    await assert.rejects(new HttpTransport({ serverUrl: base }).connect(), (e) => e.code === ErrorCodes.C501);
    const noToken = new HttpTransport({ serverUrl: base });
    noToken.connected = true;
    status = 200;
    await noToken.send({ type: 'pull', id: 'e' });
    assert.equal(requests.at(-1).headers.authorization, undefined);
  } finally {
    server.close();
  }
  assert.equal(httpUrl('/health', 'https://h/api/sync'), 'https://h/health');
  assert.equal(routeFor({ type: 'ack' }), '/sync');
});

// ---------------------------------------------------------------------------------------------
// Engine against a fake transport: the engine's steps that need no server.

function fakeTransport(reply) {
  const sent = [];
  return {
    sent,
    connected: true,
    isConnected() { return this.connected; },
    async connect() {},
    async disconnect() {},
    onMessage() {}, onReconnect() {}, onError() {},
    send(message) {
      sent.push(structuredClone(message));
      return Promise.resolve(reply(message, sent.length));
    },
  };
}

test('engine: push success clears the collection queue; conflicts clear only their documents', async () => {
  const serverDoc = { _id: 'b', v: 'server', _rev: '1-srv', _updatedAt: 8_000_000_000_000 };
  const transport = fakeTransport((m) => {
    if (m.type === 'pull') return { type: 'pull-response', id: m.id, changes: {}, checkpoint: { sequences: {} }, hasMore: false };
    if (m.changes.length === 2) {
      return { type: 'push-response', id: m.id, success: false, conflicts: [{ documentId: 'b', serverDocument: serverDoc }], checkpoint: { sequences: { todos: 4 } } };
    }
    return { type: 'push-response', id: m.id, success: true, checkpoint: { sequences: { todos: 5 } } };
  });
  const e = createSyncEngine({ serverUrl: 'ws://x/sync', nodeId: 'n', collections: ['todos'], transport, pullInterval: 0 });
  await e.start();
  e.status = 'syncing'; // writes during a sync are queued but not pushed
  e.insert('todos', { _id: 'a', v: 1 });
  e.insert('todos', { _id: 'b', v: 1 });
  e.status = 'idle';
  assert.equal(transport.sent.filter((m) => m.type === 'push').length, 0);
  await e.push('todos');
  assert.deepEqual(e.get('todos', 'b'), serverDoc, 'LWW took the newer server copy, not re-queued');
  assert.deepEqual(e.queue.forCollection('todos').map((c) => c.documentId), ['a']);
  assert.equal(e.checkpoint.sequences.todos, 4);
  await e.push('todos');
  assert.equal(e.queue.size, 0);
  assert.equal(e.checkpoint.sequences.todos, 5);
  const pushes = transport.sent.filter((m) => m.type === 'push');
  assert.deepEqual(pushes.map((p) => p.changes.map((c) => c.documentId)), [['a', 'b'], ['a']]);
  await e.close();
});

test('engine: an error reply leaves the queue; a pull applies changes, takes max sequences, follows hasMore', async () => {
  let pulls = 0;
  const transport = fakeTransport((m) => {
    if (m.type === 'push') return { type: 'error', id: m.id, code: 'INVALID_MESSAGE', message: 'x', retryable: false };
    pulls += 1;
    if (pulls === 1) return { type: 'pull-response', id: m.id, changes: {}, checkpoint: { sequences: { todos: 0 } }, hasMore: false };
    if (pulls === 2) {
      return {
        type: 'pull-response', id: m.id, hasMore: true, checkpoint: { sequences: { todos: 2 } },
        changes: { todos: [
          { operation: 'insert', documentId: 'r1', document: { _id: 'r1' }, sequence: 1 },
          { operation: 'insert', documentId: 'r2', document: { _id: 'r2' }, sequence: 2 },
        ] },
      };
    }
    return {
      type: 'pull-response', id: m.id, hasMore: false, checkpoint: { sequences: { todos: 3 } },
      changes: { todos: [{ operation: 'delete', documentId: 'r1', document: null, sequence: 3 }] },
    };
  });
  const e = createSyncEngine({ serverUrl: 'ws://x/sync', nodeId: 'n', collections: ['todos'], transport, pullInterval: 0 });
  await e.start();
  e.insert('todos', { _id: 'mine' });
  await e.idle();
  assert.equal(e.queue.size, 1, 'an error reply is ignored; the change stays queued');
  await e.pull();
  assert.deepEqual(e.documents('todos').map((d) => d._id), ['mine', 'r2']);
  assert.equal(e.checkpoint.sequences.todos, 3);
  const pullMsgs = transport.sent.filter((m) => m.type === 'pull');
  assert.deepEqual(pullMsgs.map((m) => m.checkpoint.sequences.todos), [undefined, 0, 2]);
  assert.deepEqual(Object.keys(pullMsgs[0]), ['type', 'id', 'timestamp', 'collections', 'checkpoint', 'limit']);
  assert.equal(pullMsgs[0].limit, 100);
  await e.close();
});

test('engine: with no `collections`, only collections with queued changes are pulled; pre-start writes stay local', async () => {
  const transport = fakeTransport((m) => (m.type === 'pull'
    ? { type: 'pull-response', id: m.id, changes: {}, checkpoint: { sequences: {} }, hasMore: false }
    : { type: 'push-response', id: m.id, success: true, checkpoint: { sequences: {} } }));
  const e = createSyncEngine({ serverUrl: 'ws://x/sync', nodeId: 'n', transport, pullInterval: 0, localCollections: ['notes'] });
  e.insert('notes', { _id: 'before-start' });
  await e.start();
  assert.deepEqual(transport.sent.map((m) => [m.type, m.collections]), [['pull', []]]);
  e.insert('notes', { _id: 'n1' });
  e.insert('late', { _id: 'l1' }); // a collection created after start() is not tracked
  await e.idle();
  await e.pull();
  const push = transport.sent.find((m) => m.type === 'push');
  assert.deepEqual(push.changes.map((c) => c.documentId), ['n1']);
  assert.equal(push.collection, 'notes');
  assert.deepEqual(transport.sent.at(-1).collections, [], 'queue cleared, so nothing named');
  await e.close();
});

test('engine: write-triggered push retries with backoff, then gives up and keeps the change queued', async () => {
  let pushes = 0;
  const transport = fakeTransport((m) => {
    if (m.type === 'pull') return { type: 'pull-response', id: m.id, changes: {}, checkpoint: { sequences: {} }, hasMore: false };
    pushes += 1;
    throw new ConnectionError(ErrorCodes.C504, 'timeout');
  });
  const e = createSyncEngine({ serverUrl: 'ws://x/sync', nodeId: 'n', collections: ['c'], transport, pullInterval: 0, retryDelay: 5 });
  await e.start();
  const t0 = Date.now();
  e.insert('c', { _id: 'x' });
  await e.idle();
  assert.equal(pushes, 5);
  assert.ok(Date.now() - t0 >= 5 * (1 + 2 + 4 + 8), 'backoff 5·2^attempt between attempts');
  assert.equal(e.queue.size, 1);
  await e.close();
});

#!/usr/bin/env node
// Memory and slow-consumer accounting with a live puller that never reads (issue #12).
//
// Opens a LiveStore 0.4 live pull over a raw WebSocket, reads the first page, then stops reading
// (the TCP connection stays open). A writer then pushes events of --event-mb MB over the HTTP
// transport until --total-mb MB are written. After each push it prints the server's resident
// memory, its slow-consumer disconnects and its open LiveStore connections, from /metrics.
//
// Then it keeps the stalled socket open for --hold-secs seconds (default 45), still printing, to
// show whether the server closes it by itself. --no-puller writes without one: what the writes
// alone cost.
//
//   node scripts/stalled-reader.mjs --url http://127.0.0.1:8787 [--event-mb 10] [--total-mb 300]

import net from 'node:net';
import crypto from 'node:crypto';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const base = new URL(args.url ?? 'http://127.0.0.1:8787');
const eventMb = Number(args['event-mb'] ?? 10);
const totalMb = Number(args['total-mb'] ?? 300);
const store = args.store ?? `stalled-${Date.now()}`;
const holdSecs = Number(args['hold-secs'] ?? 45);
const started = Date.now();
const clock = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;

function frame(text) {
  const payload = Buffer.from(text);
  const mask = crypto.randomBytes(4);
  let header;
  if (payload.length < 126) header = Buffer.from([0x81, 0x80 | payload.length]);
  else if (payload.length < 65536) header = Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 255]);
  else throw new Error('frame too large for this script');
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
  return Buffer.concat([header, mask, masked]);
}

async function metrics() {
  const text = await (await fetch(new URL('/metrics', base))).text();
  const sum = (prefix) =>
    text
      .split('\n')
      .filter((l) => l.startsWith(prefix))
      .reduce((total, l) => total + Number(l.split(' ').pop()), 0);
  return {
    rssMiB: sum('junction_process_resident_memory_bytes') / 1048576,
    slowConsumerDisconnects: sum('junction_slow_consumer_disconnects_total'),
    livestoreConnections: sum('junction_connections{protocol="livestore"}'),
  };
}

function stalledPuller() {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(base.port), base.hostname);
    let received = Buffer.alloc(0);
    socket.on('error', () => {});
    socket.on('connect', () => {
      socket.write(
        `GET /?storeId=${store}&transport=ws HTTP/1.1\r\nHost: ${base.host}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\n` +
          'Sec-WebSocket-Version: 13\r\n\r\n',
      );
      const pull = `{"_tag":"Request","id":"p","tag":"SyncWsRpc.Pull","payload":{"storeId":"${store}","live":true,"cursor":{"_tag":"None"}},"headers":[]}`;
      socket.write(frame(pull));
    });
    socket.on('data', (chunk) => {
      received = Buffer.concat([received, chunk]);
      if (received.includes('NoMore')) {
        // From here on the kernel's buffers fill and nothing is read again.
        socket.pause();
        resolve(socket);
      }
    });
    setTimeout(() => reject(new Error('no first page within 10 s')), 10_000);
  });
}

async function push(seq, pad) {
  const event = { name: 'big', args: { pad }, seqNum: seq, parentSeqNum: seq - 1, clientId: 'w', sessionId: 'w' };
  const body = JSON.stringify({
    _tag: 'Request',
    id: String(seq),
    tag: 'SyncHttpRpc.Push',
    payload: { storeId: store, batch: [event], backendId: { _tag: 'None' } },
  });
  const url = new URL(`/?storeId=${store}&transport=http`, base);
  const reply = await (await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body })).text();
  if (!reply.includes('"Success"')) throw new Error(`push ${seq} refused: ${reply.slice(0, 200)}`);
}

const before = await metrics();
console.log(`before: rss ${before.rssMiB.toFixed(1)} MiB`);
const socket = 'no-puller' in args ? null : await stalledPuller();
const pad = 'x'.repeat(eventMb * 1024 * 1024);
const pushes = Math.floor(totalMb / eventMb);
let peak = 0;
for (let seq = 1; seq <= pushes; seq++) {
  await push(seq, pad);
  const now = await metrics();
  peak = Math.max(peak, now.rssMiB);
  console.log(
    `${clock()}: written ${seq * eventMb} MB: rss ${now.rssMiB.toFixed(1)} MiB, slow-consumer disconnects ${now.slowConsumerDisconnects}, livestore connections ${now.livestoreConnections}`,
  );
}
for (let held = 0; held < holdSecs; held += 5) {
  await new Promise((resolve) => setTimeout(resolve, 5000));
  const now = await metrics();
  peak = Math.max(peak, now.rssMiB);
  console.log(
    `${clock()}: holding: rss ${now.rssMiB.toFixed(1)} MiB, slow-consumer disconnects ${now.slowConsumerDisconnects}, livestore connections ${now.livestoreConnections}`,
  );
}
const after = await metrics();
console.log(
  JSON.stringify({ eventMb, writtenMb: pushes * eventMb, rssBeforeMiB: +before.rssMiB.toFixed(1), peakRssMiB: +peak.toFixed(1), ...after }),
);
socket?.destroy();

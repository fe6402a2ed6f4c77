// Medians of junction-bench runs, as the Markdown tables of BENCHMARKS.md.
// Usage: node scripts/bench-summary.mjs results.jsonl
import { readFileSync } from 'node:fs';

const runs = readFileSync(process.argv[2], 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const median = (xs) => {
  const s = xs.filter((x) => x != null).sort((a, b) => a - b);
  if (s.length === 0) return null;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const n = (x) => (x == null ? '-' : Math.round(x).toLocaleString('en-US'));
const ms = (x) => (x == null ? '-' : `${x.toFixed(1)} ms`);
const get = (path) => (run) => path.split('.').reduce((v, k) => (v == null ? v : v[k]), run);

function table(mode, keyOf, header, row) {
  const groups = new Map();
  for (const run of runs.filter((r) => r.mode === mode)) {
    const key = keyOf(run);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(run);
  }
  if (groups.size === 0) return;
  console.log(`\n| ${header.join(' | ')} |\n|${header.map(() => '---').join('|')}|`);
  for (const [key, group] of groups) {
    const m = (path) => median(group.map(get(path)));
    const max = (path) => Math.max(...group.map(get(path)));
    console.log(`| ${key} | ${row(m, max, group).join(' | ')} |`);
  }
}

table(
  'idle',
  (r) => `${r.protocol} | ${r.label} | ${n(r.connections)}`,
  ['protocol', 'store', 'connections', 'connected (min)', 'held (min)', 'server memory per connection', 'server RSS', 'runs'],
  (m, max, group) => [
    n(Math.min(...group.map((r) => r.connected))),
    n(m('held')),
    m('per_connection') == null ? '-' : `${(m('per_connection') / 1024).toFixed(1)} KiB`,
    m('server_rss_after') == null ? '-' : `${(m('server_rss_after') / 1048576).toFixed(0)} MiB`,
    group.length,
  ],
);
table(
  'fanout',
  (r) => `${r.protocol} | ${r.label} | ${n(r.subscribers)} | ${n(r.rate)} | ${r.max_batch}`,
  ['protocol', 'store', 'subscribers', 'events/s offered', 'max batch', 'deliveries/s', 'frames/s', 'events/write',
    'delivery p50', 'p95', 'p99', 'max', 'lost (max)', 'duplicated (max)', 'runs'],
  (m, max, group) => [
    n(m('deliveries_per_sec')), n(m('frames_per_sec')), m('events_per_write')?.toFixed(1),
    ms(m('delivery_ms.p50')), ms(m('delivery_ms.p95')), ms(m('delivery_ms.p99')), ms(m('delivery_ms.max')),
    n(max('lost')), n(max('duplicated')), group.length,
  ],
);
table(
  'push',
  (r) => `${r.protocol} | ${r.label} | ${r.clients} | ${r.batch}`,
  ['protocol', 'store', 'writers', 'events/write', 'acknowledged events/s', 'ack p50', 'p95', 'p99', 'max', 'runs'],
  (m, max, group) => [
    n(m('events_per_sec')), ms(m('ack_ms.p50')), ms(m('ack_ms.p95')), ms(m('ack_ms.p99')), ms(m('ack_ms.max')), group.length,
  ],
);

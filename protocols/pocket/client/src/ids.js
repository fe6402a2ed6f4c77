// Identifiers, as the real client makes them.

/** `length` random base-36 characters (`Math.random().toString(36)` digits). */
export function randomBase36(length) {
  let out = '';
  while (out.length < length) out += Math.random().toString(36).slice(2);
  return out.slice(0, length);
}

/** A message id: `<ms base36>-<6 random base36>`, e.g. `mwr5uccz-pyu5ef`. */
export function messageId(now = Date.now()) {
  return `${now.toString(36)}-${randomBase36(6)}`;
}

/** A `_rev`: `<generation>-<8 random base36>`, e.g. `1-2tswmozt`. */
export function makeRev(generation) {
  return `${generation}-${randomBase36(8)}`;
}

/** The generation of a `_rev` (`"3-abc"` → 3); 0 when it has none. */
export function revGeneration(rev) {
  if (typeof rev !== 'string') return 0;
  const n = Number.parseInt(rev.split('-')[0], 10);
  return Number.isFinite(n) ? n : 0;
}

/** GUESS (we did not read how the real client makes a node id or a generated `_id`). */
export function makeNodeId() {
  return `node_${randomBase36(10)}`;
}

/** GUESS: an `_id` for an insert that gave none. */
export function makeDocumentId(now = Date.now()) {
  return `${now.toString(36)}${randomBase36(10)}`;
}

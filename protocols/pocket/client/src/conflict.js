// Conflict detection and resolution, shared by the push-response and pull paths.

const REV_PATTERN = /^(\d+)-([A-Za-z0-9]+)$/;

/**
 * Compares two vector clocks; a missing entry counts as 0.
 * Returns 'before' (a < b), 'after' (a > b) or 'concurrent'. As in the reference, **equal clocks
 * are 'concurrent'**.
 */
export function compareVClocks(a, b) {
  let aAhead = false;
  let bAhead = false;
  for (const node of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const x = a[node] ?? 0;
    const y = b[node] ?? 0;
    if (x > y) aAhead = true;
    if (y > x) bAhead = true;
  }
  if (aAhead && !bAhead) return 'after';
  if (bAhead && !aAhead) return 'before';
  return 'concurrent';
}

/** `detectConflict(a, b)`: the four rules, in order. */
export function detectConflict(a, b) {
  if (a._rev === b._rev) return false; // 1. same rev, both missing included
  if (a._vclock && b._vclock) return compareVClocks(a._vclock, b._vclock) === 'concurrent'; // 2.
  if (!a._rev || !b._rev) return true; // 3. only one side has a rev
  const ma = REV_PATTERN.exec(a._rev); // 4.
  const mb = REV_PATTERN.exec(b._rev);
  if (!ma || !mb) return false;
  return Number.parseInt(ma[1], 10) === Number.parseInt(mb[1], 10);
}

function mergeVClocks(a = {}, b = {}) {
  const out = { ...a };
  for (const [node, n] of Object.entries(b)) out[node] = Math.max(out[node] ?? 0, n);
  return out;
}

function sameValue(x, y) {
  return JSON.stringify(x) === JSON.stringify(y);
}

/**
 * `ConflictResolver(strategy).resolve({localDocument, remoteDocument, baseDocument?})`.
 * Returns `{winner: 'local'|'remote'|'merged', document}`.
 */
export function resolveConflict(strategy, { localDocument, remoteDocument, baseDocument, mergeFunction }) {
  switch (strategy) {
    case 'server-wins':
      return { winner: 'remote', document: remoteDocument };
    case 'client-wins':
      return { winner: 'local', document: localDocument };
    case 'merge':
      return { winner: 'merged', document: merge(localDocument, remoteDocument, baseDocument, mergeFunction) };
    case 'last-write-wins':
    default: {
      const l = localDocument._updatedAt ?? 0;
      const r = remoteDocument._updatedAt ?? 0;
      if (l > r) return { winner: 'local', document: localDocument };
      if (r > l) return { winner: 'remote', document: remoteDocument };
      // Tie: local wins only if its clock strictly dominates. GUESS: both must have a clock.
      if (localDocument._vclock && remoteDocument._vclock &&
          compareVClocks(localDocument._vclock, remoteDocument._vclock) === 'after') {
        return { winner: 'local', document: localDocument };
      }
      return { winner: 'remote', document: remoteDocument };
    }
  }
}

// The real client's `merge`: `_`-prefixed keys skipped; with a base, the side that changed a field wins;
// otherwise the newer `_updatedAt` wins per field; vclocks merged by max; `_updatedAt = now`.
// GUESS: the details below (which side's `_id`/`_rev`/`_createdAt` the result keeps, a field
// changed on both sides going to the newer doc) were not read from the real client.
function merge(local, remote, base, mergeFunction) {
  if (mergeFunction) return mergeFunction(local, remote, base);
  const localNewer = (local._updatedAt ?? 0) >= (remote._updatedAt ?? 0);
  const newer = localNewer ? local : remote;
  const older = localNewer ? remote : local;
  const out = { ...older, ...newer };
  for (const key of new Set([...Object.keys(local), ...Object.keys(remote)])) {
    if (key.startsWith('_')) continue;
    if (base) {
      const localChanged = !sameValue(local[key], base[key]);
      const remoteChanged = !sameValue(remote[key], base[key]);
      if (localChanged && !remoteChanged) out[key] = local[key];
      else if (remoteChanged && !localChanged) out[key] = remote[key];
      else out[key] = key in newer ? newer[key] : older[key];
    } else {
      out[key] = key in newer ? newer[key] : older[key];
    }
    if (out[key] === undefined) delete out[key];
  }
  out._vclock = mergeVClocks(local._vclock, remote._vclock);
  out._updatedAt = Date.now();
  return out;
}

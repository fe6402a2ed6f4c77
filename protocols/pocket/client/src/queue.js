// The optimistic-update queue: queued local changes keyed
// `<collection>_<docId>_<ms>`, in insertion order.
//
// Faithful quirk: two writes to the same document in the same millisecond share a key, so the
// second replaces the first (in the first's position). An insert followed by an update within
// 1 ms therefore reaches the server as an `update` of a document it has never seen.

export class OptimisticQueue {
  constructor() {
    this.entries = new Map();
  }

  add(collection, change, now = Date.now()) {
    const key = `${collection}_${change.documentId}_${now}`;
    this.entries.set(key, { key, collection, documentId: change.documentId, change, queuedAt: now });
    return key;
  }

  /** Queued entries (`{key, collection, documentId, change}`) of `collection`, oldest first. */
  entriesFor(collection) {
    return [...this.entries.values()].filter((e) => e.collection === collection);
  }

  /** Removes one entry by key (`markSynced`). */
  remove(key) {
    this.entries.delete(key);
  }

  /** Queued changes of `collection`, oldest first. */
  forCollection(collection) {
    return [...this.entries.values()].filter((e) => e.collection === collection).map((e) => e.change);
  }

  hasDocument(collection, documentId) {
    for (const e of this.entries.values()) {
      if (e.collection === collection && e.documentId === documentId) return true;
    }
    return false;
  }

  /** Collections with queued changes, in first-queued order. */
  collections() {
    return [...new Set([...this.entries.values()].map((e) => e.collection))];
  }

  clearCollection(collection) {
    for (const [key, e] of this.entries) if (e.collection === collection) this.entries.delete(key);
  }

  clearDocument(collection, documentId) {
    for (const [key, e] of this.entries) {
      if (e.collection === collection && e.documentId === documentId) this.entries.delete(key);
    }
  }

  get size() {
    return this.entries.size;
  }
}

// The local, in-memory document store the engine syncs (a stand-in for @pocket/core's
// Database/Collection). It produces documents and ChangeEvents the way the real
// client does, and applies remote changes the way `collection.applyRemoteChange` does.

import { makeDocumentId, makeRev, revGeneration } from './ids.js';

function bumpVClock(vclock, nodeId) {
  // As in the real client: the writer's entry goes up by 1. This needs the existing doc to have a `_vclock`;
  // GUESS: an existing doc without one stays without one.
  if (!vclock) return undefined;
  return { ...vclock, [nodeId]: (vclock[nodeId] ?? 0) + 1 };
}

function withoutUndefined(doc) {
  for (const key of Object.keys(doc)) if (doc[key] === undefined) delete doc[key];
  return doc;
}

export class LocalCollection {
  constructor(name, nodeId) {
    this.name = name;
    this.nodeId = nodeId;
    /** `_id` → document; deleted documents stay as `_deleted:true` tombstones. */
    this.docs = new Map();
    /** The per-collection change counter: the `sequence` of local changes (1, 2, 3…). */
    this.sequence = 0;
    this.listeners = new Set();
  }

  /** Subscribes to the change stream; returns the unsubscribe function. */
  onChange(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(change) {
    for (const listener of [...this.listeners]) listener(change, this);
  }

  get(id) {
    return this.docs.get(id);
  }

  /** Live (non-deleted) documents, sorted by `_id`. */
  all({ includeDeleted = false } = {}) {
    return [...this.docs.values()]
      .filter((d) => includeDeleted || !d._deleted)
      .sort((a, b) => (a._id < b._id ? -1 : a._id > b._id ? 1 : 0));
  }

  localChange(operation, documentId, document, previousDocument) {
    const change = { operation, documentId, document };
    if (previousDocument !== undefined) change.previousDocument = previousDocument;
    change.isFromSync = false;
    change.timestamp = Date.now();
    change.sequence = ++this.sequence;
    return change;
  }

  /**
   * insert: `{_id, ...fields, _rev:"1-<rand>", _createdAt = _updatedAt = now, _vclock:{[node]:1}}`
   * (key order as the real client writes it). Throws if a live document with that `_id` exists.
   */
  insert(input) {
    const now = Date.now();
    const _id = input._id ?? makeDocumentId(now);
    const existing = this.docs.get(_id);
    if (existing && !existing._deleted) throw new Error(`Document ${_id} already exists in ${this.name}`);
    const doc = { _id, ...input, _rev: makeRev(1), _createdAt: now, _updatedAt: now, _vclock: { [this.nodeId]: 1 } };
    this.docs.set(_id, doc);
    this.emit(this.localChange('insert', _id, doc));
    return doc;
  }

  /** update: generation +1, `_updatedAt = now`, the writer's clock entry +1; carries `previousDocument`. */
  update(id, patch) {
    const existing = this.docs.get(id);
    if (!existing || existing._deleted) throw new Error(`Document ${id} not found in ${this.name}`);
    const doc = withoutUndefined({
      ...existing,
      ...patch,
      _id: id,
      _rev: makeRev(revGeneration(existing._rev) + 1),
      _updatedAt: Date.now(),
      _vclock: bumpVClock(existing._vclock, this.nodeId),
    });
    this.docs.set(id, doc);
    this.emit(this.localChange('update', id, doc, existing));
    return doc;
  }

  /**
   * Soft delete: a `_deleted:true` tombstone is kept locally (rev, `_updatedAt` and clock bumped
   * like an update), but the change sent carries `document:null` and `previousDocument`.
   */
  delete(id) {
    const existing = this.docs.get(id);
    if (!existing || existing._deleted) throw new Error(`Document ${id} not found in ${this.name}`);
    const tombstone = withoutUndefined({
      ...existing,
      _deleted: true,
      _rev: makeRev(revGeneration(existing._rev) + 1),
      _updatedAt: Date.now(),
      _vclock: bumpVClock(existing._vclock, this.nodeId),
    });
    this.docs.set(id, tombstone);
    this.emit(this.localChange('delete', id, null, existing));
    return tombstone;
  }

  /**
   * `applyRemoteChange`: insert/update with a document stores it; delete with
   * `document:null` hard-deletes; delete with a document stores it as a tombstone. Emits a
   * change with `isFromSync:true, sequence:0`, which the engine does not queue.
   * GUESS: a delete's document is stored with `_deleted:true` forced on; an insert/update
   * without a document is ignored.
   */
  applyRemoteChange(change) {
    const { operation, documentId } = change;
    const previous = this.docs.get(documentId);
    if (operation === 'delete') {
      if (change.document) this.docs.set(documentId, { ...change.document, _deleted: true });
      else this.docs.delete(documentId);
    } else if (change.document) {
      this.docs.set(documentId, change.document);
    } else {
      return;
    }
    this.emit(this.syncChange(operation, documentId, this.docs.get(documentId) ?? null, previous));
  }

  /** The local write of a resolved conflict: an `update` with `isFromSync:true, sequence:0`. */
  applyResolved(document) {
    const previous = this.docs.get(document._id);
    this.docs.set(document._id, document);
    this.emit(this.syncChange('update', document._id, document, previous));
  }

  syncChange(operation, documentId, document, previousDocument) {
    const change = { operation, documentId, document };
    if (previousDocument !== undefined) change.previousDocument = previousDocument;
    change.isFromSync = true;
    change.timestamp = Date.now();
    change.sequence = 0;
    return change;
  }
}

export class LocalDatabase {
  constructor(nodeId) {
    this.nodeId = nodeId;
    this.collections = new Map();
  }

  /** The named collection, created on first use. */
  collection(name) {
    let collection = this.collections.get(name);
    if (!collection) {
      collection = new LocalCollection(name, this.nodeId);
      this.collections.set(name, collection);
    }
    return collection;
  }

  hasCollection(name) {
    return this.collections.has(name);
  }

  collectionNames() {
    return [...this.collections.keys()];
  }
}

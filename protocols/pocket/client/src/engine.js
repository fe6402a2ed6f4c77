// SyncEngine: push/pull of queued local changes over one transport.

import { CheckpointManager } from './checkpoint.js';
import { detectConflict, resolveConflict } from './conflict.js';
import { makeNodeId, messageId } from './ids.js';
import { OptimisticQueue } from './queue.js';
import { LocalDatabase } from './store.js';
import { HttpTransport } from './transport/http.js';
import { WebSocketTransport } from './transport/websocket.js';

/** SyncConfig defaults. */
export const ENGINE_DEFAULTS = Object.freeze({
  collections: [],
  direction: 'both',
  conflictStrategy: 'last-write-wins',
  autoRetry: true,
  retryDelay: 1000,
  maxRetryAttempts: 5,
  useWebSocket: true,
  pullInterval: 30_000,
  batchSize: 100,
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const silentLogger = { debug() {}, info() {}, warn() {}, error() {} };

export class SyncEngine {
  /**
   * @param {LocalDatabase} db
   * @param {object} config SyncConfig plus `serverUrl`, `authToken`, and test-only options:
   *   `nodeId`, `logger`, `transportOptions` (timeouts, heartbeat, reconnect timings), `transport`.
   */
  constructor(db, config) {
    this.db = db;
    this.config = { ...ENGINE_DEFAULTS, ...config };
    this.nodeId = db.nodeId;
    this.logger = this.config.logger ?? silentLogger;
    this.checkpointManager = new CheckpointManager(this.nodeId);
    this.queue = new OptimisticQueue();
    this.status = 'idle';
    this.isRunning = false;
    this.unsubscribers = [];
    this.pullTimer = null;
    /** Test hooks, not in the real engine: every frame, and the messages the engine drops. */
    this.wire = [];
    this.ignoredMessages = [];
    this.events = [];
    this.inflight = new Set();

    const transportOptions = {
      serverUrl: this.config.serverUrl,
      authToken: this.config.authToken,
      autoReconnect: this.config.autoRetry,
      ...this.config.transportOptions,
      onWire: (entry) => this.wire.push({ at: Date.now(), ...entry }),
      onEvent: (name, detail) => this.events.push({ at: Date.now(), name, ...detail }),
    };
    this.transport = this.config.transport ??
      (this.config.useWebSocket ? new WebSocketTransport(transportOptions) : new HttpTransport(transportOptions));
    // The real engine never calls transport.onMessage, so broadcasts are dropped. The
    // transport hands unmatched messages to this handler only so tests can see what was dropped.
    this.transport.onMessage?.((message) => this.ignoredMessages.push(message));
    // Status follows the transport: any transport error → 'error', a close → 'offline', a
    // reconnect → 'idle' and then forceSync().
    this.transport.onError?.((err) => {
      this.logger.warn(err.message);
      this.setStatus('error');
    });
    this.transport.onDisconnect?.(() => this.setStatus('offline'));
    this.transport.onReconnect?.(() => {
      this.setStatus('idle');
      if (this.isRunning) this.forceSync().catch((err) => this.logger.warn('forceSync after reconnect failed', err));
    });
  }

  /** The checkpoint as it would be sent now (a copy). */
  get checkpoint() {
    return this.checkpointManager.snapshot();
  }

  setStatus(status) {
    this.status = status;
  }

  /**
   * start(): connect; subscribe to the local change streams of the collections that exist
   * now (filtered by `collections`; skipped for direction 'pull'); start the pull timer; forceSync().
   */
  async start() {
    if (this.isRunning) return;
    try {
      await this.transport.connect();
      this.isRunning = true;
      this.setStatus('idle');
      if (this.config.direction !== 'pull') this.subscribe();
      if (this.config.direction !== 'push' && this.config.pullInterval > 0) {
        this.pullTimer = setInterval(() => {
          // The pull timer never pushes, and pulls only while connected and 'idle'.
          if (!this.transport.isConnected() || this.status !== 'idle') return;
          this.pullWithRetry().catch((err) => this.logger.warn('interval pull failed', err));
        }, this.config.pullInterval);
      }
      await this.forceSync();
    } catch (err) {
      this.setStatus('error');
      throw err;
    }
  }

  subscribe() {
    const wanted = this.config.collections;
    for (const name of this.db.collectionNames()) {
      if (wanted.length > 0 && !wanted.includes(name)) continue;
      const collection = this.db.collection(name);
      this.unsubscribers.push(collection.onChange((change) => this.onLocalChange(name, change)));
    }
  }

  onLocalChange(collection, change) {
    if (change.isFromSync) return;
    this.queue.add(collection, change);
    // Pushed at once (not awaited) unless a sync is running: that produces the overlapping
    // pushes the real engine makes, each carrying every queued change of the collection.
    if (this.transport.isConnected() && this.status !== 'syncing') this.track(this.pushWithRetry(collection));
  }

  track(promise) {
    const tracked = promise
      .catch((err) => this.logger.warn('push failed', err))
      .finally(() => this.inflight.delete(tracked));
    this.inflight.add(tracked);
  }

  /** Test helper, not in the real engine: waits until no write-triggered push is in flight. */
  async idle() {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  /**
   * forceSync(): push, then pull. Returns at once if a sync is running (status
   * 'syncing'). The push here is one attempt per collection (no retry); the pull has the
   * engine's retry (see `pullWithRetry`). Failure: status 'error', rethrown.
   */
  async forceSync() {
    if (this.status === 'syncing') return;
    this.setStatus('syncing');
    try {
      if (this.config.direction !== 'pull') await this.push();
      if (this.config.direction !== 'push') await this.pullWithRetry();
      this.setStatus('idle');
    } catch (err) {
      this.setStatus('error');
      throw err;
    }
  }

  /** Alias of forceSync(). */
  sync() {
    return this.forceSync();
  }

  /**
   * push(): one push per collection to sync (`collections` if set, else those with queued
   * changes), in order, one attempt each. `push(name)` pushes just that collection (test helper).
   */
  async push(collection) {
    const collections = collection === undefined ? this.collectionsToSync() : [collection];
    for (const c of collections) await this.pushCollection(c);
  }

  /** Pulls (with retry, and again while `hasMore`). */
  pull() {
    return this.pullWithRetry();
  }

  /**
   * Up to `maxRetryAttempts` attempts (1 without `autoRetry`), waiting
   * `retryDelay·2^attempt + random(0..0.5·retryDelay)` between them. A write-triggered
   * push only logs its last failure (the changes stay queued); a pull rethrows it.
   */
  async withRetry(label, fn, rethrow) {
    const attempts = this.config.autoRetry ? this.config.maxRetryAttempts : 1;
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await fn();
      } catch (err) {
        if (attempt + 1 >= attempts) {
          this.logger.warn(`${label} failed after ${attempt + 1} attempts`, err);
          if (rethrow) throw err;
          return undefined;
        }
        const delay = this.config.retryDelay * 2 ** attempt + Math.random() * 0.5 * this.config.retryDelay;
        await sleep(delay);
      }
    }
  }

  pushWithRetry(collection) {
    return this.withRetry(`push ${collection}`, () => this.pushCollection(collection), false);
  }

  pullWithRetry() {
    return this.withRetry('pull', () => this.pullOnce(), true);
  }

  /** One push of every queued change of `collection`. */
  async pushCollection(collection) {
    const entries = this.queue.entriesFor(collection);
    if (entries.length === 0) return;
    const message = {
      type: 'push',
      id: messageId(),
      timestamp: Date.now(),
      collection,
      changes: entries.map((e) => e.change),
      checkpoint: this.checkpointManager.snapshot(),
    };
    const response = await this.transport.send(message);
    if (response?.type !== 'push-response') return; // e.g. an `error`: nothing happens, changes stay queued
    if (response.success) {
      // The queue entries this push carried are removed (by key); later writes stay queued.
      for (const entry of entries) this.queue.remove(entry.key);
    } else if (response.conflicts) {
      const local = this.db.collection(collection);
      for (const { documentId, serverDocument } of response.conflicts) {
        const localDocument = local.get(documentId);
        if (!localDocument) continue; // no local copy: nothing resolved, nothing cleared
        const resolved = resolveConflict(this.config.conflictStrategy, { localDocument, remoteDocument: serverDocument });
        // Written locally as a sync change: not queued, so never pushed back.
        local.applyResolved(resolved.document);
        this.queue.clearDocument(collection, documentId);
      }
    }
    // Throws a TypeError when the response has no checkpoint, as the real client does.
    this.checkpointManager.mergeServerCheckpoint(response.checkpoint);
  }

  /** Collections to sync: `collections` if set, else those with queued changes. */
  collectionsToSync() {
    return this.config.collections.length > 0 ? [...this.config.collections] : this.queue.collections();
  }

  /** One pull; pulls again at once while `hasMore`, with no cap. */
  async pullOnce() {
    const message = {
      type: 'pull',
      id: messageId(),
      timestamp: Date.now(),
      collections: this.collectionsToSync(),
      checkpoint: this.checkpointManager.snapshot(),
      limit: this.config.batchSize,
    };
    const response = await this.transport.send(message);
    if (response?.type !== 'pull-response') return;
    for (const [name, changes] of Object.entries(response.changes)) {
      const collection = this.db.collection(name);
      for (const change of changes) this.applyPulledChange(name, collection, change);
      if (changes.length > 0) {
        this.checkpointManager.updateSequence(name, changes[changes.length - 1].sequence);
      }
    }
    this.checkpointManager.mergeServerCheckpoint(response.checkpoint);
    if (response.hasMore) await this.pullOnce();
  }

  /**
   * A pulled change goes through applyRemoteChange. When the document still has queued changes
   * and conflicts with the local copy, the change's document is first replaced by
   * the strategy's result (so a local win re-stores the local copy). The queue is left as it is.
   */
  applyPulledChange(name, collection, change) {
    if (change.document && this.queue.hasDocument(name, change.documentId)) {
      const localDocument = collection.get(change.documentId);
      if (localDocument && detectConflict(localDocument, change.document)) {
        const resolved = resolveConflict(this.config.conflictStrategy, {
          localDocument,
          remoteDocument: change.document,
        });
        change = { ...change, document: resolved.document };
      }
    }
    collection.applyRemoteChange(change);
  }

  /** Stops the timer and the subscriptions, and disconnects (pending requests fail with C503). */
  async stop() {
    this.isRunning = false;
    clearInterval(this.pullTimer);
    this.pullTimer = null;
    for (const unsubscribe of this.unsubscribers.splice(0)) unsubscribe();
    await this.transport.disconnect();
    this.setStatus('idle');
  }
}

/**
 * Builds a SyncEngine over a fresh in-memory database.
 *
 * The configured `collections` are created before start(), so their writes are tracked. Other
 * collections must be created with `engine.collection(name)` **before** start() to be synced
 * (the real engine subscribes only to collections that exist when it starts).
 * Writes made before start() are local only, as in the real engine.
 */
export function createSyncEngine(config) {
  const db = new LocalDatabase(config.nodeId ?? makeNodeId());
  for (const name of config.collections ?? []) db.collection(name);
  for (const name of config.localCollections ?? []) db.collection(name);
  const engine = new SyncEngine(db, config);
  return Object.assign(engine, {
    collection: (name) => db.collection(name),
    insert: (name, doc) => db.collection(name).insert(doc),
    update: (name, id, patch) => db.collection(name).update(id, patch),
    delete: (name, id) => db.collection(name).delete(id),
    get: (name, id) => (db.hasCollection(name) ? db.collection(name).get(id) : undefined),
    /** Live documents of a collection, sorted by `_id` (`{includeDeleted:true}` adds tombstones). */
    documents: (name, options) => (db.hasCollection(name) ? db.collection(name).all(options) : []),
    close: () => engine.stop(),
  });
}

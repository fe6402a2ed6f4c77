// A faithful client for Pocket's push/pull sync protocol, written from our reading of the real
// engine's source to test Junction. See README.md.

export { SyncEngine, createSyncEngine, ENGINE_DEFAULTS } from './engine.js';
export { LocalDatabase, LocalCollection } from './store.js';
export { OptimisticQueue } from './queue.js';
export { CheckpointManager } from './checkpoint.js';
export { compareVClocks, detectConflict, resolveConflict } from './conflict.js';
export { ConnectionError, ErrorCodes } from './errors.js';
export { messageId, makeRev, revGeneration, randomBase36 } from './ids.js';
export { WebSocketTransport, RESPONSE_TYPES, WS_DEFAULTS, webSocketUrl } from './transport/websocket.js';
export { HttpTransport, httpUrl, routeFor } from './transport/http.js';

// WebSocketTransport: the `ws` package stands in for the global WebSocket the real client
// uses (browsers, Node ≥ 22; Node 20 needs exactly this polyfill).

import WebSocket from 'ws';

import { ConnectionError, ErrorCodes } from '../errors.js';

/** Incoming types that can answer a request (matched by `id`). */
export const RESPONSE_TYPES = new Set(['push-response', 'pull-response', 'ack', 'error']);

export const WS_DEFAULTS = Object.freeze({
  timeout: 30_000,
  heartbeatIntervalMs: 30_000,
  heartbeatTimeoutMs: 10_000,
  maxReconnectAttempts: 10,
  reconnectBaseDelayMs: 1_000,
  reconnectMaxDelayMs: 30_000,
});

/** `serverUrl` exactly as given, plus `token=<authToken>` when the token is non-empty. */
export function webSocketUrl(serverUrl, authToken) {
  const url = new URL(serverUrl);
  if (authToken) url.searchParams.set('token', authToken);
  return url.toString();
}

export class WebSocketTransport {
  /**
   * @param {object} options
   * @param {string} options.serverUrl
   * @param {string} [options.authToken]
   * @param {boolean} [options.autoReconnect=true]
   * @param {(entry: object) => void} [options.onWire] test hook: every frame in and out
   * @param {(event: string, detail?: object) => void} [options.onEvent] test hook: lifecycle
   * Timing options (defaults as in the real client): timeout, heartbeatIntervalMs,
   * heartbeatTimeoutMs, maxReconnectAttempts, reconnectBaseDelayMs, reconnectMaxDelayMs.
   */
  constructor(options) {
    this.options = { autoReconnect: true, ...WS_DEFAULTS, ...options };
    this.ws = null;
    this.connected = false;
    this.explicitClose = false;
    this.reconnectAttempts = 0;
    this.reconnectTimer = null;
    this.heartbeatTimer = null;
    this.pongTimer = null;
    /** id → {resolve, reject, timer} */
    this.pending = new Map();
    this.messageHandler = null;
    this.reconnectHandler = null;
    this.disconnectHandler = null;
    this.errorHandler = null;
    this.lastClose = null;
  }

  isConnected() {
    return this.connected;
  }

  /** Messages that answer no pending request. The real SyncEngine never registers one. */
  onMessage(handler) {
    this.messageHandler = handler;
  }

  /** Called after an automatic reconnect succeeded; SyncEngine runs `forceSync()` then. */
  onReconnect(handler) {
    this.reconnectHandler = handler;
  }

  onError(handler) {
    this.errorHandler = handler;
  }

  onDisconnect(handler) {
    this.disconnectHandler = handler;
  }

  event(name, detail) {
    this.options.onEvent?.(name, detail);
  }

  reportError(error) {
    this.event('error', { error });
    this.errorHandler?.(error);
  }

  /** Resolves on `open`; from then on the transport counts as connected. */
  connect() {
    this.explicitClose = false;
    return this.openSocket(false);
  }

  openSocket(isReconnect) {
    return new Promise((resolve, reject) => {
      const url = webSocketUrl(this.options.serverUrl, this.options.authToken);
      // No headers, no subprotocol, no nodeId.
      const ws = new WebSocket(url);
      this.ws = ws;
      let opened = false;

      ws.on('open', () => {
        opened = true;
        this.connected = true;
        this.reconnectAttempts = 0;
        this.startHeartbeat();
        this.event(isReconnect ? 'reconnected' : 'open', { url });
        resolve();
        if (isReconnect) this.reconnectHandler?.();
      });

      ws.on('message', (data, isBinary) => this.handleFrame(isBinary ? Buffer.from(data).toString('utf8') : data.toString()));

      ws.on('error', (err) => {
        const error = new ConnectionError(ErrorCodes.C502, 'WebSocket connection error', err);
        this.reportError(error);
        if (!opened) reject(error);
      });

      ws.on('close', (code, reasonBuffer) => {
        const reason = reasonBuffer.toString();
        if (this.ws !== ws) return;
        this.lastClose = { code, reason };
        this.connected = false;
        this.stopHeartbeat();
        this.event('close', { code, reason });
        this.disconnectHandler?.();
        if (!opened) reject(new ConnectionError(ErrorCodes.C502, `WebSocket closed before open (${code})`));
        // Pending requests are NOT rejected on an unexpected close: they time out.
        if (!this.explicitClose && this.options.autoReconnect) this.scheduleReconnect();
      });
    });
  }

  /**
   * `1000 ms × 2^(attempt−1)`, capped at 30 s, up to 10 attempts. A successful `open` resets
   * the counter, so a server that closes right after `open` (4001/4002) is retried every
   * second for ever, not 10 times.
   */
  scheduleReconnect() {
    if (this.reconnectTimer) return;
    if (this.reconnectAttempts >= this.options.maxReconnectAttempts) {
      this.reportError(new ConnectionError(ErrorCodes.C500, 'Max reconnection attempts reached'));
      this.event('gave-up');
      return;
    }
    this.reconnectAttempts += 1;
    const delay = Math.min(
      this.options.reconnectBaseDelayMs * 2 ** (this.reconnectAttempts - 1),
      this.options.reconnectMaxDelayMs,
    );
    this.event('reconnect-scheduled', { attempt: this.reconnectAttempts, delay });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.explicitClose) return;
      // A failed attempt closes the socket, which schedules the next one.
      this.openSocket(true).catch(() => {});
    }, delay);
  }

  handleFrame(text) {
    this.options.onWire?.({ dir: 'in', data: text });
    if (text === 'pong') {
      clearTimeout(this.pongTimer);
      this.pongTimer = null;
      return;
    }
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      this.reportError(new Error('Unparsable frame')); // reported to onError, otherwise dropped
      return;
    }
    if (message && RESPONSE_TYPES.has(message.type) && this.pending.has(message.id)) {
      const pending = this.pending.get(message.id);
      this.pending.delete(message.id);
      clearTimeout(pending.timer);
      // A matching `error` resolves the request too; the engine then ignores it.
      pending.resolve(message);
      return;
    }
    this.messageHandler?.(message);
  }

  startHeartbeat() {
    this.stopHeartbeat();
    this.heartbeatTimer = setInterval(() => {
      if (!this.connected || this.ws?.readyState !== WebSocket.OPEN) return;
      this.ws.send('ping');
      this.options.onWire?.({ dir: 'out', data: 'ping' });
      if (this.pongTimer) return;
      this.pongTimer = setTimeout(() => {
        this.pongTimer = null;
        this.reportError(new ConnectionError(ErrorCodes.C500, 'Heartbeat timeout — no pong received'));
        // Closing starts a reconnect (an unexpected close).
        this.ws?.close();
      }, this.options.heartbeatTimeoutMs);
    }, this.options.heartbeatIntervalMs);
  }

  stopHeartbeat() {
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.pongTimer);
    this.heartbeatTimer = null;
    this.pongTimer = null;
  }

  /** Sends a request and waits for the response with the same `id` (30 s timeout, C504). */
  send(message) {
    if (!this.connected || this.ws?.readyState !== WebSocket.OPEN) {
      return Promise.reject(new ConnectionError(ErrorCodes.C501, 'Not connected'));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(message.id);
        reject(new ConnectionError(ErrorCodes.C504, `Request timeout: ${message.type} ${message.id}`));
      }, this.options.timeout);
      this.pending.set(message.id, { resolve, reject, timer });
      const text = JSON.stringify(message);
      this.ws.send(text);
      this.options.onWire?.({ dir: 'out', data: text });
    });
  }

  /** Explicit disconnect: rejects pending requests with C503 and does not reconnect. */
  disconnect() {
    this.explicitClose = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.stopHeartbeat();
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(new ConnectionError(ErrorCodes.C503, `Connection closed while request ${id} was pending`));
    }
    this.pending.clear();
    this.connected = false;
    const ws = this.ws;
    if (!ws) return Promise.resolve();
    if (ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      ws.once('close', () => resolve());
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else ws.close(1000);
      // Do not wait forever for a peer that never answers the close handshake.
      setTimeout(() => { ws.terminate(); resolve(); }, 2_000).unref();
    });
  }
}

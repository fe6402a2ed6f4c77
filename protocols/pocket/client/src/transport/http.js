// HttpTransport: `useWebSocket:false`. No server push, no heartbeat.

import { ConnectionError, ErrorCodes } from '../errors.js';

/** Every path is resolved against `serverUrl` with `new URL('/…', serverUrl)`: a base path is dropped. */
export function httpUrl(path, serverUrl) {
  return new URL(path, serverUrl).toString();
}

/** push → `/sync/push`, pull → `/sync/pull`, anything else → `/sync`. */
export function routeFor(message) {
  if (message.type === 'push') return '/sync/push';
  if (message.type === 'pull') return '/sync/pull';
  return '/sync';
}

export class HttpTransport {
  constructor(options) {
    this.options = { timeout: 30_000, ...options };
    this.connected = false;
  }

  isConnected() {
    return this.connected;
  }

  // No server-pushed messages over HTTP; the hooks exist for interface parity.
  onMessage() {}
  onReconnect() {}
  onError(handler) {
    this.errorHandler = handler;
  }

  /** `GET /health`: any 2xx is success and the body is ignored; otherwise C501. */
  async connect() {
    const url = httpUrl('/health', this.options.serverUrl);
    let response;
    try {
      response = await fetch(url, { method: 'GET', signal: AbortSignal.timeout(this.options.timeout) });
    } catch (err) {
      throw new ConnectionError(ErrorCodes.C501, `Health check failed: ${err.message}`, err);
    }
    await response.arrayBuffer().catch(() => {});
    if (!response.ok) throw new ConnectionError(ErrorCodes.C501, `Health check failed: ${response.status}`);
    this.connected = true;
    this.options.onEvent?.('open', { url });
  }

  /**
   * POSTs the JSON message. Headers: `Content-Type: application/json`, plus
   * `Authorization: Bearer <token>` when a token is set. Non-2xx → C500 `HTTP error: <status>`;
   * the JSON body is returned as the reply without checking its id.
   */
  async send(message) {
    if (!this.connected) throw new ConnectionError(ErrorCodes.C501, 'Not connected');
    const headers = { 'Content-Type': 'application/json' };
    if (this.options.authToken) headers.Authorization = `Bearer ${this.options.authToken}`;
    const body = JSON.stringify(message);
    this.options.onWire?.({ dir: 'out', data: body, route: routeFor(message) });
    let response;
    try {
      response = await fetch(httpUrl(routeFor(message), this.options.serverUrl), {
        method: 'POST',
        headers,
        body,
        signal: AbortSignal.timeout(this.options.timeout),
      });
    } catch (err) {
      if (err?.name === 'TimeoutError') {
        throw new ConnectionError(ErrorCodes.C504, `Request timeout: ${message.type} ${message.id}`);
      }
      // GUESS: a network failure is reported as C500.
      throw new ConnectionError(ErrorCodes.C500, `HTTP request failed: ${err.message}`, err);
    }
    if (!response.ok) {
      await response.arrayBuffer().catch(() => {});
      throw new ConnectionError(ErrorCodes.C500, `HTTP error: ${response.status}`);
    }
    const text = await response.text();
    this.options.onWire?.({ dir: 'in', data: text, route: routeFor(message) });
    return JSON.parse(text);
  }

  async disconnect() {
    this.connected = false;
  }
}

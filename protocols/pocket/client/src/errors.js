// ConnectionError and its codes.

export const ErrorCodes = Object.freeze({
  /** Heartbeat timeout, max reconnect attempts, or an HTTP status error. */
  C500: 'POCKET_C500',
  /** Not connected, or the HTTP health check failed. */
  C501: 'POCKET_C501',
  /** WebSocket error. */
  C502: 'POCKET_C502',
  /** Closed while a request was pending (only on an explicit `disconnect()`). */
  C503: 'POCKET_C503',
  /** Request timeout (30 s). */
  C504: 'POCKET_C504',
});

export class ConnectionError extends Error {
  constructor(code, message, details) {
    super(message);
    this.name = 'ConnectionError';
    this.code = code;
    if (details !== undefined) this.details = details;
  }
}

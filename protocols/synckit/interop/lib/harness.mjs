// Shared set-up for the interop tests: the real @synckit-js/sdk 0.1.1 from npm against a running
// Junction whose WebSocket URL is in SYNCKIT_URL (e.g. ws://127.0.0.1:8080/ws).
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import WebSocket from 'ws'

// Node 20 has no global WebSocket; the SDK uses the global one. Must happen before the
// SDK is imported.
globalThis.WebSocket = WebSocket

// The SDK logs every frame with console.log; keep the test output readable unless asked.
if (!process.env.SYNCKIT_VERBOSE) console.log = () => {}

export const { SyncKit } = await import('@synckit-js/sdk')

export const BASE_URL = process.env.SYNCKIT_URL
if (!BASE_URL) throw new Error('SYNCKIT_URL is not set (e.g. ws://127.0.0.1:8080/ws)')

/** `BASE_URL`, with `?token=` when a token is given (or SYNCKIT_TOKEN is set and `token` is undefined). */
export function serverUrl(token = process.env.SYNCKIT_TOKEN) {
  if (!token) return BASE_URL
  const url = new URL(BASE_URL)
  url.searchParams.set('token', token)
  return url.toString()
}

/** A fresh document id, so that test files can run in parallel against one server. */
export function uniqueDoc(prefix) {
  return `${prefix}-${randomUUID().slice(0, 8)}`
}

const kits = new Set()

/** A connected SDK client (`SyncKit.init()` resolved). Disposed by `disposeAll()`. */
export async function newClient(clientId, { url = serverUrl() } = {}) {
  const kit = new SyncKit({ clientId, storage: 'memory', serverUrl: url })
  kits.add(kit)
  await kit.init()
  return kit
}

/** `kit.document(id)` initialised: subscribed, and the server's sync_response received. */
export async function openDoc(kit, documentId) {
  const doc = kit.document(documentId)
  await doc.init()
  return doc
}

/** Records every message of `type` the SDK's socket receives (the SDK exposes its socket as `kit.websocket`). */
export function recordIncoming(kit, type) {
  const seen = []
  kit.websocket.on(type, (payload) => seen.push(payload))
  return seen
}

/** Polls `probe` until it returns a truthy value; fails with `describe()` after `ms`. */
export async function waitFor(probe, { ms = 10000, every = 20, what = 'a condition', describe = () => '' } = {}) {
  const deadline = Date.now() + ms
  for (;;) {
    const value = await probe()
    if (value) return value
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}. ${describe()}`)
    await new Promise((resolve) => setTimeout(resolve, every))
  }
}

function isDeepEqual(a, b) {
  try {
    assert.deepStrictEqual(a, b)
    return true
  } catch {
    return false
  }
}

/** Waits until every doc's `get()` contains `expected` (deep-equal per field). */
export async function converge(docs, expected, { ms = 10000 } = {}) {
  const matches = (doc) => Object.entries(expected).every(([k, v]) => isDeepEqual(doc.get()[k], v))
  await waitFor(() => docs.every(matches), {
    ms,
    what: `${docs.length} clients to hold ${JSON.stringify(expected).slice(0, 300)}`,
    describe: () => docs.map((d, i) => `client ${i}: ${JSON.stringify(d.get()).slice(0, 300)}`).join('; '),
  })
}

/** `await fn()` and how long it took, in ms. */
export async function timed(fn) {
  const start = performance.now()
  const value = await fn()
  return { value, ms: performance.now() - start }
}

export function disposeAll() {
  for (const kit of kits) {
    try {
      kit.dispose()
    } catch {}
  }
  kits.clear()
}

export function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

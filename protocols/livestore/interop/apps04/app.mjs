// One real LiveStore 0.4.0 app: a store with a schema and materializers, the Node adapter
// (leader in this process, wasm SQLite persisted under <dataDir>) and makeWsSync to JUNCTION_URL.
//
//   JUNCTION_URL=ws://127.0.0.1:PORT node app.mjs <storeId> <clientId> <dataDir>
//
// Driven line by line over stdin/stdout by the Rust test livestore_apps.rs. Each command is one
// JSON line `{"id": n, "cmd": …}`; its answer is one stdout line `@@ {"id": n, "ok": true, …}` (or
// `"ok": false, "error": …`). Other stdout lines are the library's own logs. The app announces
// itself with `@@ {"ready": true}`.
//
// Commands:
//   create  {ids, batch, paceMs}      commits todoCreated for each id, `batch` per commit (default
//                                     1), one commit every paceMs
//   rename  {ids, text, paceMs}       commits todoRenamed(id, text) for each id, one every paceMs
//   synced  {head, timeoutMs}         waits until the leader holds exactly `head` events, all of
//                                     them confirmed by the server (nothing pending)
//   dump    {dir}                     writes the leader's state and eventlog databases to
//                                     <dir>/state.db and <dir>/eventlog.db (what it persisted)
//   exit                              shuts the store down (the leader flushes) and exits
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'

import { makeAdapter } from '@livestore/adapter-node'
import {
  createStorePromise,
  Events,
  makeSchema,
  Schema,
  State,
  StoreInternalsSymbol,
} from '@livestore/livestore'
import { makeWsSync } from '@livestore/sync-cf/client'
import { Effect } from '@livestore/utils/effect'

// Node 20 has no global WebSocket; without it the 0.4 client silently never connects.
globalThis.WebSocket = (await import('ws')).WebSocket

const [storeId, clientId, dataDir] = process.argv.slice(2)
if (!storeId || !clientId || !dataDir || !process.env.JUNCTION_URL) {
  console.error('usage: JUNCTION_URL=ws://host:port node app.mjs <storeId> <clientId> <dataDir>')
  process.exit(2)
}

const todos = State.SQLite.table({
  name: 'todos',
  columns: {
    id: State.SQLite.text({ primaryKey: true }),
    text: State.SQLite.text({ default: '' }),
    renames: State.SQLite.integer({ default: 0 }),
  },
})

const events = {
  todoCreated: Events.synced({
    name: 'v1.TodoCreated',
    schema: Schema.Struct({ id: Schema.String, text: Schema.String }),
  }),
  todoRenamed: Events.synced({
    name: 'v1.TodoRenamed',
    schema: Schema.Struct({ id: Schema.String, text: Schema.String }),
  }),
}

// Renames count up, so that a lost or doubled event shows in the state, not only in the log.
const materializers = State.SQLite.materializers(events, {
  'v1.TodoCreated': ({ id, text }) => todos.insert({ id, text }),
  // Plain SQL, not a read then a write: a materializer must give the same statement in the session
  // and in the leader, whose copies of the state may differ for a moment.
  'v1.TodoRenamed': ({ id, text }) => ({
    sql: 'UPDATE todos SET text = $text, renames = renames + 1 WHERE id = $id',
    bindValues: { text, id },
    writeTables: new Set(['todos']),
  }),
})

const schema = makeSchema({ events, state: State.SQLite.makeState({ tables: { todos }, materializers }) })

const adapter = makeAdapter({
  storage: { type: 'fs', baseDirectory: dataDir },
  clientId,
  sessionId: 'app',
  sync: { backend: makeWsSync({ url: process.env.JUNCTION_URL }) },
})

const store = await createStorePromise({ adapter, schema, storeId, disableDevtools: true })
const leader = store[StoreInternalsSymbol].clientSession.leaderThread

const reply = (message) => process.stdout.write(`@@ ${JSON.stringify(message)}\n`)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const syncState = () => Effect.runPromise(leader.syncState.get)

const commands = {
  async create({ ids, batch = 1, paceMs = 0 }) {
    for (let i = 0; i < ids.length; i += batch) {
      store.commit(...ids.slice(i, i + batch).map((id) => events.todoCreated({ id, text: `todo ${id}` })))
      await sleep(paceMs)
    }
    return {}
  },
  async rename({ ids, text, paceMs = 0 }) {
    for (const id of ids) {
      store.commit(events.todoRenamed({ id, text }))
      await sleep(paceMs)
    }
    return {}
  },
  async synced({ head, timeoutMs = 30_000 }) {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const state = await syncState()
      const local = state.localHead.global
      if (state.pending.length === 0 && state.upstreamHead.global === head && local === head) return { head: local }
      if (local > head || Date.now() > deadline) {
        throw new Error(
          `leader at ${local} (upstream ${state.upstreamHead.global}, ${state.pending.length} pending), expected ${head}`,
        )
      }
      await sleep(50)
    }
  },
  async dump({ dir }) {
    fs.mkdirSync(dir, { recursive: true })
    fs.writeFileSync(path.join(dir, 'state.db'), await Effect.runPromise(leader.export))
    fs.writeFileSync(path.join(dir, 'eventlog.db'), await Effect.runPromise(leader.getEventlogData))
    return {}
  },
  async exit() {
    await store.shutdownPromise()
    reply({ id: this.id, ok: true })
    process.exit(0)
  },
}

// One command at a time, in order: the test paces the apps, not this loop.
let queue = Promise.resolve()
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  queue = queue.then(async () => {
    let request
    try {
      request = JSON.parse(line)
      const command = commands[request.cmd]
      if (!command) throw new Error(`unknown command ${request.cmd}`)
      reply({ id: request.id, ok: true, ...(await command.call(request, request)) })
    } catch (error) {
      reply({ id: request?.id, ok: false, error: String(error?.stack ?? error) })
    }
  })
})

reply({ ready: true })

#!/usr/bin/env bash
# Runs the real SyncKit SDK (@synckit-js/sdk 0.1.1 from npm) against a running Junction.
#
#   SYNCKIT_URL=ws://127.0.0.1:PORT/ws protocols/synckit/interop/run.sh [TEST...]
#
# TEST: a file of test/ without its suffix (convergence, ack, concurrent, late-joiner, auth).
# Default: every file of test/.
#
# Environment:
#   SYNCKIT_URL                 required; the WebSocket URL of Junction's SyncKit endpoint
#   SYNCKIT_TOKEN               optional; every client connects with ?token=<it>
#   SYNCKIT_EXPECT_AUTH=1       run the auth tests (skipped otherwise); the server must have
#                               allow_anonymous=false and accept SYNCKIT_TOKEN (read+write all) and
#                               SYNCKIT_READONLY_TOKEN (read all, write none)
#   SYNCKIT_VERBOSE=1           keep the SDK's console.log chatter
#   SYNCKIT_INTEROP_CONCURRENCY test files run in parallel (default 2)
#
# restart.mjs and reconnect.mjs are not node:test files: tests/it/synckit_interop.rs drives them
# around server restarts.
#
# Installs the package with `npm ci` from its committed lockfile when node_modules is missing.
# Exit status: 0 when every selected test passed (or was skipped), 1 otherwise.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)

log() { printf '[synckit-interop] %s\n' "$*" >&2; }

if [ -z "${SYNCKIT_URL:-}" ]; then
  log 'SYNCKIT_URL is not set (e.g. SYNCKIT_URL=ws://127.0.0.1:8080/ws)'
  exit 2
fi
command -v node >/dev/null || { log 'node not found (Node >= 20.14 needed)'; exit 2; }
node -e '
  const [maj, min] = process.versions.node.split(".").map(Number)
  process.exit(maj > 20 || (maj === 20 && min >= 14) ? 0 : 1)
' || { log "Node $(node --version) is too old: >= 20.14 needed (node --test --test-force-exit)"; exit 2; }

if [ ! -d "$here/node_modules" ]; then
  log 'npm ci'
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) || { log 'npm ci failed'; exit 1; }
fi

tests=()
if [ $# -eq 0 ]; then
  tests=("$here"/test/*.test.mjs)
else
  for name in "$@"; do
    if [ -f "$here/test/$name.test.mjs" ]; then
      tests+=("$here/test/$name.test.mjs")
    else
      log "no test file test/$name.test.mjs"
      exit 2
    fi
  done
fi

log "node --test ${tests[*]##*/} against $SYNCKIT_URL"
# --test-force-exit: the SDK's heartbeat, reconnect and ACK-polling timers would keep each test
#                    process alive after its tests finished; failures still give a non-zero exit.
# --test-timeout:    a hard per-test bound on top of the tests' own timeouts.
if ! (cd "$here" && node --test --test-force-exit --test-timeout=120000 \
  --test-concurrency="${SYNCKIT_INTEROP_CONCURRENCY:-2}" "${tests[@]}"); then
  log FAILED
  exit 1
fi
log ok

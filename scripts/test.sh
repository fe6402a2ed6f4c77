#!/usr/bin/env bash
# Runs Junction's whole test suite on a fresh machine.
#
# Needs the Rust toolchain, Node and the Postgres server binaries. It installs or starts what the
# tests need and stops it again on exit:
#   - the npm packages of the real-client interop suites (npm ci from the committed lockfiles);
#   - a throwaway Postgres cluster (unless DATABASE_URL or TEST_POSTGRES_URL is given),
#     run as the `postgres` system user when started as root, since initdb refuses root;
#   - redis-server (apt-get, when missing): the scale-out tests start their own Redis processes,
#     each on its own port, so that a test can stop and restart its Redis.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh eventlog).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib.sh

# A clean build of the tests needs about 1 GB under target/; say so up front rather than let
# the linker die of a full disk halfway through.
log "disk free under $(pwd): $(df -h --output=avail . | tail -n 1 | tr -d ' ')"
# Incremental caches only pay off on the next build; a CI run has none.
if [[ -n "${CI:-}" ]]; then export CARGO_INCREMENTAL=0; fi

install_redis() {
  command -v redis-server >/dev/null && return
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "redis-server not found: install it (apt-get install redis-server) or run this script as root"
    exit 1
  fi
  log "installing redis-server (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
}
install_redis

if [ -n "${TEST_POSTGRES_URL:-}" ]; then
  log "using Postgres at TEST_POSTGRES_URL"
elif [ -n "${DATABASE_URL:-}" ]; then
  log "using Postgres at DATABASE_URL"
  export TEST_POSTGRES_URL="$DATABASE_URL"
else
  start_postgres
  export TEST_POSTGRES_URL="$postgres_url"
fi
# The real client libraries the interop tests drive (lockfiles committed; installed once here so
# that tests running in parallel never install into the same folder at the same time).
for package in protocols/livestore/interop/v03 protocols/livestore/interop/v04 \
  protocols/livestore/interop/apps04 protocols/pocket/client \
  protocols/synckit/interop; do
  if [ ! -d "$package/node_modules" ]; then
    log "installing the npm packages of $package"
    (cd "$package" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done

# The server under test must not pick up the developer's settings.
unset DATABASE_URL REDIS_URL

# The faithful Pocket client's own tests (offline; its interop tests need a Pocket server).
log "running the Pocket client's unit tests"
node --test protocols/pocket/client/test/unit.test.mjs

# Two cores: two test threads keep servers, databases and clients from starving each other.
# A hung test must fail the run with a message while there is time to read it, not run into
# CI's own limit: the suite (build included) takes under 10 minutes on 2 cores.
suite_limit_minutes="${TEST_LIMIT_MINUTES:-45}"
status=0
timeout --kill-after=60 "${suite_limit_minutes}m" cargo test --locked -- --test-threads=2 "$@" || status=$?
if [ "$status" = 124 ]; then
  log "the test suite ran over $suite_limit_minutes minutes and was stopped: a test hung (look above for \"has been running for over 60 seconds\")"
fi
exit "$status"

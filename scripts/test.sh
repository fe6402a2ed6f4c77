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

log() { printf '[test.sh] %s\n' "$*" >&2; }

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

cleanup_actions=()
cleanup() {
  local i
  for ((i = ${#cleanup_actions[@]} - 1; i >= 0; i--)); do eval "${cleanup_actions[i]}" || true; done
}
trap cleanup EXIT

# A clean build of the tests needs about 1.5 GB under target/; say so up front rather than let
# the linker die of a full disk halfway through.
log "disk free under $(pwd): $(df -h --output=avail . | tail -n 1 | tr -d ' ')"
# Incremental caches only pay off on the next build; a CI run has none.
if [[ -n "${CI:-}" ]]; then export CARGO_INCREMENTAL=0; fi

start_postgres() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$bin" ] && command -v pg_ctl >/dev/null; then bin=$(dirname "$(command -v pg_ctl)"); fi
  [ -n "$bin" ] || { log "no Postgres server binaries found (initdb, pg_ctl); install postgresql"; exit 1; }

  local dir port run_as=()
  dir=$(mktemp -d /tmp/junction-pg.XXXXXX)
  port=$(free_port)
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    run_as=(runuser -u postgres --)
  fi
  log "starting Postgres ($bin) on 127.0.0.1:$port in $dir"
  "${run_as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=on -c max_connections=300" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  cleanup_actions+=("${run_as[*]} $bin/pg_ctl -D $dir/data -m immediate stop >/dev/null; rm -rf $dir")
  export TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

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
fi
# The real client libraries the interop tests drive (lockfiles committed; installed once here so
# that tests running in parallel never install into the same folder at the same time).
for package in protocols/livestore/interop/v03 protocols/livestore/interop/v04 protocols/pocket/client \
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
cargo test --locked -- --test-threads=2 "$@"

# Shared by scripts/test.sh and scripts/bench.sh (sourced, not run): logging, free ports, clean-up
# on exit, and a throwaway Postgres cluster.

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# Commands run on exit, last added first.
cleanup_actions=()
cleanup() {
  local i
  for ((i = ${#cleanup_actions[@]} - 1; i >= 0; i--)); do eval "${cleanup_actions[i]}" || true; done
}
trap cleanup EXIT

# start_postgres [SERVER OPTIONS...]: a throwaway cluster on a free port of 127.0.0.1, fsync on,
# stopped and removed on exit; its URL is left in $postgres_url. Run as the `postgres` system user
# when started as root, since initdb refuses root.
start_postgres() {
  local bin dir port run_as=()
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$bin" ] && command -v pg_ctl >/dev/null; then bin=$(dirname "$(command -v pg_ctl)"); fi
  [ -n "$bin" ] || { log "no Postgres server binaries found (initdb, pg_ctl); install postgresql"; exit 1; }
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
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=on -c max_connections=300 $*" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  cleanup_actions+=("${run_as[*]} $bin/pg_ctl -D $dir/data -m immediate stop >/dev/null; rm -rf $dir")
  postgres_url="postgres://postgres@127.0.0.1:$port/postgres"
}

#!/usr/bin/env bash
# Reproduces BENCHMARKS.md: builds Junction and junction-bench in release mode, then for each
# store (embedded SQLite, a throwaway Postgres) and each protocol the server serves, starts a
# fresh Junction per scenario, runs the load generator several times and prints the medians as
# Markdown tables. Every run's JSON line is kept in the output file.
#
#   scripts/bench.sh                       # everything, 3 runs each (about an hour)
#   scripts/bench.sh --quick               # one short run of each scenario, smaller scales
#   scripts/bench.sh --runs 5 --protocols livestore --stores postgres --modes "fanout push"
#   scripts/bench.sh --modes idle-instances   # 50,000 idle connections over several instances
#
# Modes: idle, fanout, push (the default), and idle-instances: when this machine's limit on open
# files keeps one process under 50,000 sockets, 50,000 idle connections spread over as many
# Junction instances as needed, on one Postgres database (and Redis, when redis-server is
# installed), each with its own load generator, all at once on this one machine.
#
# Load generator and server share the machine; run it on a quiet one (check `uptime`).
# Needs the Rust toolchain, Node (ports, the summary) and the Postgres server binaries (unless
# BENCH_POSTGRES_URL names a Postgres where it may create databases).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3
quick=0
protocols="livestore synckit pocket"
stores="sqlite postgres"
modes="idle fanout push"
out="target/bench/results-$(date +%Y%m%d-%H%M%S).jsonl"
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --quick) quick=1; runs=1; shift ;;
    --protocols) protocols=$2; shift 2 ;;
    --stores) stores=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

source scripts/lib.sh

# A throwaway Postgres for the benchmarks, as scripts/test.sh starts it, with a larger cache.
start_bench_postgres() {
  start_postgres -c shared_buffers=256MB
  BENCH_POSTGRES_URL=$postgres_url
}

# A fresh, empty store for one Junction, in $store_url; removed on exit.
fresh_store() {
  case "$1" in
    sqlite)
      local dir
      dir=$(mktemp -d /tmp/junction-bench-sqlite.XXXXXX)
      cleanup_actions+=("rm -rf $dir")
      store_url="sqlite://$dir/junction.db"
      ;;
    postgres)
      local name
      name="junction_bench_$(date +%s%N)"
      psql "$BENCH_POSTGRES_URL" -qc "CREATE DATABASE $name" >/dev/null
      cleanup_actions+=("psql '$BENCH_POSTGRES_URL' -qc 'DROP DATABASE IF EXISTS $name' >/dev/null")
      store_url="${BENCH_POSTGRES_URL%/*}/$name"
      ;;
  esac
}

server_pid=""
server_url=""
store_url=""
start_junction() {
  stop_junction
  local port
  port=$(free_port)
  fresh_store "$1"
  # The per-connection message rate limit would cap a single fast writer: raised, so that the
  # numbers show what the server can do.
  JUNCTION_SERVER__LISTEN="127.0.0.1:$port" JUNCTION_STORE__URL="$store_url" JUNCTION_LOG__LEVEL=warn \
    JUNCTION_LIMITS__MAX_CONNECTIONS=200000 JUNCTION_LIMITS__MESSAGES_PER_SECOND=1000000 \
    target/release/junction >>"$workdir/junction.log" 2>&1 &
  server_pid=$!
  server_url="ws://127.0.0.1:$port"
  for _ in $(seq 1 100); do
    if node -e "require('http').get('http://127.0.0.1:$port/health',r=>process.exit(r.statusCode==200?0:1)).on('error',()=>process.exit(1))" 2>/dev/null; then
      return
    fi
    sleep 0.1
  done
  log "Junction did not start; see $workdir/junction.log"
  exit 1
}
stop_junction() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}

# run LABEL ARGS...: one scenario, $runs times, each on a fresh Junction; JSON lines to $out.
run() {
  local store=$1 protocol=$2; shift 2
  local i line
  for i in $(seq 1 "$runs"); do
    start_junction "$store"
    log "$store $protocol: $* (run $i of $runs)"
    if line=$(target/release/junction-bench "$@" --protocol "$protocol" --url "$server_url" \
      --server-pid "$server_pid" --label "$store" 2>>"$workdir/bench.log" | tail -n 1); then
      echo "$line" >>"$out"
    else
      log "failed; see $workdir/bench.log"
    fi
  done
  stop_junction
}

wants() { case " $modes " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# idle_instances PROTOCOL TOTAL: TOTAL idle connections over enough instances that none passes
# the fd limit; one JSON line per instance, then one for the whole machine.
idle_instances() {
  local protocol=$1 total=$2 per_instance instances i port redis_url="" pids=() benches=()
  per_instance=$((fd_limit - 200))
  instances=$(((total + per_instance - 1) / per_instance))
  per_instance=$(((total + instances - 1) / instances))
  fresh_store postgres
  if command -v redis-server >/dev/null; then
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$workdir/redis.log" 2>&1 &
    cleanup_actions+=("kill $! 2>/dev/null")
    redis_url="redis://127.0.0.1:$port"
    sleep 0.5
  fi
  log "$protocol: $total idle connections over $instances instances of $per_instance (redis: ${redis_url:-none})"
  for i in $(seq 1 "$instances"); do
    port=$(free_port)
    JUNCTION_SERVER__LISTEN="127.0.0.1:$port" JUNCTION_STORE__URL="$store_url" JUNCTION_LOG__LEVEL=warn \
      JUNCTION_REDIS__URL="$redis_url" JUNCTION_LIMITS__MAX_CONNECTIONS=200000 \
      target/release/junction >>"$workdir/junction-$i.log" 2>&1 &
    pids+=($!)
    cleanup_actions+=("kill $! 2>/dev/null")
    until node -e "require('http').get('http://127.0.0.1:$port/health',r=>process.exit(r.statusCode==200?0:1)).on('error',()=>process.exit(1))" 2>/dev/null; do sleep 0.1; done
    target/release/junction-bench idle --protocol "$protocol" --url "ws://127.0.0.1:$port" --server-pid "${pids[-1]}" \
      --connections "$per_instance" --stores 100 --hold-seconds 20 --label "postgres, instance $i of $instances" \
      >"$workdir/idle-$i.out" 2>>"$workdir/bench.log" &
    benches+=($!)
    sleep 1  # one instance's connections under way before the next starts
  done
  for i in "${!benches[@]}"; do wait "${benches[$i]}" || log "instance $((i + 1)): the load generator failed"; done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; done
  local lines
  lines=$(for i in $(seq 1 "$instances"); do tail -n 1 "$workdir/idle-$i.out"; done)
  echo "$lines" >>"$out"
  echo "$lines" | node -e '
    const runs = require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean).map(JSON.parse);
    const sum = (k) => runs.reduce((a, r) => a + (r[k] || 0), 0);
    const growth = runs.reduce((a, r) => a + (r.server_rss_after - r.server_rss_before), 0);
    const line = { mode: "idle", protocol: runs[0].protocol, label: `postgres, ${runs.length} instances`,
      instances: runs.length, connections: sum("connections"), connected: sum("connected"), held: sum("held"),
      per_connection: Math.round(growth / sum("connected")), server_rss_after: sum("server_rss_after") };
    console.log(JSON.stringify(line));
    console.error(`[bench.sh] ${line.connected} connected, ${line.held} held over ${line.instances} instances; ` +
      `${(line.per_connection / 1024).toFixed(1)} KiB of server memory per connection`);
  ' >>"$out"
}

# Whether the server speaks the protocol: one tiny push.
serves() {
  local ok=0
  start_junction sqlite
  target/release/junction-bench push --protocol "$1" --url "$server_url" --clients 1 --seconds 1 \
    >/dev/null 2>>"$workdir/bench.log" || ok=1
  stop_junction
  return $ok
}

# Logs of the server and the tool; kept for a look after a failed run.
workdir=$(mktemp -d /tmp/junction-bench.XXXXXX)
cleanup_actions+=("stop_junction")
mkdir -p "$(dirname "$out")"
ulimit -n "$(ulimit -Hn)"
fd_limit=$(ulimit -n)

log "building (release)"
cargo build --release --locked --bins >&2

case " $stores " in *" postgres "*) [ -n "${BENCH_POSTGRES_URL:-}" ] || start_bench_postgres ;; esac

seconds=10; idle_hold=5; subscribers=1000; big_idle=50000
if [ "$quick" = 1 ]; then seconds=3; idle_hold=2; subscribers=200; big_idle=2000; fi
# Each connection is a file in both processes; the hard limit caps what one machine can test.
if [ "$big_idle" -gt $((fd_limit - 200)) ]; then
  log "the hard limit on open files is $fd_limit: idle runs at $((fd_limit - 200)) connections instead of $big_idle"
  big_idle=$((fd_limit - 200))
fi
small_idle=$((big_idle < 10000 ? big_idle : 10000))
if [ "$quick" = 1 ]; then small_idle=500; fi

log "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; load: $(uptime | sed 's/.*load average: //')"
for protocol in $protocols; do
  if ! serves "$protocol"; then
    log "$protocol: the server does not serve it (yet); skipped"
    continue
  fi
  for store in $stores; do
    if wants idle; then
      for n in $small_idle $big_idle; do
        run "$store" "$protocol" idle --connections "$n" --stores 100 --hold-seconds "$idle_hold"
      done
    fi
    if wants fanout; then
      # 250 events/s offered to 1,000 subscribers: 250,000 deliveries/s, above the 200,000 target,
      # so that the run shows whether the server keeps up rather than what was offered.
      for batch in 50 1; do
        run "$store" "$protocol" fanout --subscribers "$subscribers" --rate 250 --max-batch "$batch" --seconds "$seconds"
      done
    fi
    if wants push; then
      for clients in 1 16 64; do
        run "$store" "$protocol" push --clients "$clients" --seconds "$seconds"
      done
      run "$store" "$protocol" push --clients 64 --batch 10 --seconds "$seconds"
    fi
  done
done

if wants idle-instances; then
  case " $stores " in *" postgres "*) ;; *) [ -n "${BENCH_POSTGRES_URL:-}" ] || start_bench_postgres ;; esac
  for protocol in $protocols; do
    for i in $(seq 1 "$runs"); do idle_instances "$protocol" 50000; done
  done
fi

log "results: $out"
node scripts/bench-summary.mjs "$out"

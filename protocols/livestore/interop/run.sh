#!/usr/bin/env bash
# Runs the real LiveStore sync clients (@livestore/sync-cf 0.3.1 and 0.4.0) against a running
# Junction.
#
#   JUNCTION_URL=http://127.0.0.1:PORT protocols/livestore/interop/run.sh [SELECTOR...]
#
# SELECTOR: `v03` or `v04` (one package), a test file name such as `auth` or `live` (that file in
# both packages), or `v04/http` (one file of one package). Default: every test of both packages.
#
# Environment:
#   JUNCTION_URL                 required; base URL of the server (http://…; ws:// is derived)
#   JUNCTION_AUTH_TOKEN          optional; every client then sends payload {authToken: <token>}
#   JUNCTION_EXPECT_AUTH=1       run the auth tests (otherwise they are reported as skipped);
#                                the server must require JUNCTION_AUTH_TOKEN
#   JUNCTION_INTEROP_CONCURRENCY test files run in parallel per package (default 2)
#
# Installs each package with `npm ci` from its committed lockfile when node_modules is missing.
# Exit status: 0 when every selected test passed (or was skipped), 1 otherwise.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)

log() { printf '[livestore-interop] %s\n' "$*" >&2; }

if [ -z "${JUNCTION_URL:-}" ]; then
  log 'JUNCTION_URL is not set (e.g. JUNCTION_URL=http://127.0.0.1:8080)'
  exit 2
fi
command -v node >/dev/null || { log 'node not found (Node >= 20.14 needed)'; exit 2; }
node -e '
  const [maj, min] = process.versions.node.split(".").map(Number)
  process.exit(maj > 20 || (maj === 20 && min >= 14) ? 0 : 1)
' || { log "Node $(node --version) is too old: >= 20.14 needed (node --test --test-force-exit)"; exit 2; }

packages=(v03 v04)
declare -A files_for=()
if [ $# -gt 0 ]; then
  sel_pkgs=()
  for sel in "$@"; do
    case "$sel" in
      v03 | v04) files_for[$sel]+=' ALL' ;;
      v03/* | v04/*) files_for[${sel%%/*}]+=" ${sel#*/}" ;;
      *) for p in "${packages[@]}"; do files_for[$p]+=" $sel"; done ;;
    esac
  done
  for p in "${packages[@]}"; do [ -n "${files_for[$p]:-}" ] && sel_pkgs+=("$p"); done
  packages=("${sel_pkgs[@]}")
fi

failed=0
ran=0
for pkg in "${packages[@]}"; do
  dir="$here/$pkg"
  if [ ! -d "$dir/node_modules" ]; then
    log "$pkg: npm ci"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || { log "$pkg: npm ci failed"; failed=1; continue; }
  fi

  tests=()
  for name in ${files_for[$pkg]:-ALL}; do
    if [ "$name" = ALL ]; then
      tests+=("$dir"/test/*.test.mjs)
    elif [ -f "$dir/test/$name.test.mjs" ]; then
      tests+=("$dir/test/$name.test.mjs")
    elif [ -f "$dir/test/$name" ]; then
      tests+=("$dir/test/$name")
    else
      log "$pkg: no test file '$name' (skipped for this package)"
    fi
  done
  [ ${#tests[@]} -gt 0 ] || continue
  # De-duplicate (a selector may name a file twice).
  mapfile -t tests < <(printf '%s\n' "${tests[@]}" | sort -u)

  ran=$((ran + ${#tests[@]}))
  log "$pkg: node --test ${tests[*]##*/} against $JUNCTION_URL"
  # --test-force-exit: the process ends once all tests finished even if a client left a socket
  #                    or timer behind; failures still give a non-zero exit code.
  # --test-timeout:    a hard per-test bound on top of the tests' own timeouts.
  if ! (cd "$dir" && node --test --test-force-exit --test-timeout=120000 \
    --test-concurrency="${JUNCTION_INTEROP_CONCURRENCY:-2}" "${tests[@]}"); then
    log "$pkg: FAILED"
    failed=1
  else
    log "$pkg: ok"
  fi
done

if [ "$ran" -eq 0 ]; then
  log "no test file matched: $*"
  exit 2
fi
exit "$failed"

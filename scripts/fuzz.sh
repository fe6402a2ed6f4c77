#!/usr/bin/env bash
# Fuzzes every decoder: scripts/fuzz.sh [INPUTS_PER_DECODER [DECODER_PATTERN]]
# (default 10,000,000 inputs; every decoder, or those whose test name contains the pattern).
#
# Each decoder's test in src/fuzz/ runs in release mode, one after the other, fed mutants of its
# golden frames; it prints inputs, time, inputs/s and failures, and fails on any panic. A failing
# input is kept in target/fuzz-failures/. `cargo test` runs the same tests with a few thousand
# inputs each (the CI smoke).
#
# Environment: FUZZ_SEED (repeat a run; default from the clock, so that each run explores anew),
# FUZZ_NICE (default 15).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib.sh

export FUZZ_INPUTS="${1:-10000000}"
export FUZZ_SEED="${FUZZ_SEED:-$(date +%s%N)}"
nice_level="${FUZZ_NICE:-15}"
decoders=(
  livestore::livestore_v03_messages
  livestore::livestore_v04_ws_messages
  livestore::livestore_v04_http_requests
  synckit::synckit_frames
  synckit::synckit_chunk_reassembly
  pocket::pocket_ws_frames
  pocket::pocket_http_bodies
  d1::d1_import_reader
  export::export_reader
)

log "building (release)"
build=$(nice -n "$nice_level" cargo test --release --locked --lib --no-run 2>&1) || { echo "$build" >&2; exit 1; }
# Run the test binary itself: one build for every decoder, whatever happens to the sources meanwhile.
binary=$(echo "$build" | sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))$/\1/p')
[ -x "$binary" ] || { echo "$build" >&2; log "could not find the test binary"; exit 1; }
results=()
failed=0
for decoder in "${decoders[@]}"; do
  [[ "$decoder" == *"${2:-}"* ]] || continue
  log "fuzzing $decoder with $FUZZ_INPUTS inputs"
  output=$(mktemp)
  cleanup_actions+=("rm -f $output")
  status=0
  nice -n "$nice_level" "$binary" "fuzz::$decoder" --exact --nocapture --test-threads=1 >"$output" 2>&1 || status=$?
  summary=$(grep -ao 'fuzz [^ ]*: [0-9].*FUZZ_SEED=[0-9]*' "$output" || true)
  if [ "$status" != 0 ]; then
    failed=1
    grep -a -v '^\s*$' "$output" | tail -n 30 >&2
    summary="${summary:-fuzz $decoder: FAILED (exit $status)}"
  fi
  echo "$summary"
  results+=("$summary")
done
echo
echo "summary ($FUZZ_INPUTS inputs per decoder):"
printf '  %s\n' "${results[@]}"
exit "$failed"

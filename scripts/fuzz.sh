#!/usr/bin/env bash
# Runs the property tests ("fuzzing" on the stable toolchain: proptest drives the framer and
# parser, the XEP-0106 escapes, SASL and JID parsing, the torrent protocol parsers) again and
# again with fresh random seeds for a given time. Usage: scripts/fuzz.sh [SECONDS] (default 3600)
# Each round runs PROPTEST_CASES cases per property (default 5000). A failure stops the run and
# prints proptest's minimal failing input. FUZZ_RELEASE=1 builds optimised test binaries (more
# cases per second, a long build first); by default the debug ones `cargo test` built are used.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL="${1:-3600}"
export PROPTEST_CASES="${PROPTEST_CASES:-5000}"
# Property tests are named *never_panic*, *round_trip* or *prop_*; the fuzz_* test files hold
# only property tests.
FILTERS=(never_panic round_trip prop_)
PROFILE=()
if [ -n "${FUZZ_RELEASE:-}" ]; then PROFILE=(--release); fi
cargo build "${PROFILE[@]}" --tests --locked
end=$(( $(date +%s) + SECONDS_TOTAL ))
round=0
while [ "$(date +%s)" -lt "$end" ]; do
  round=$((round + 1))
  echo "== fuzz round $round ($PROPTEST_CASES cases per property)"
  for f in "${FILTERS[@]}"; do
    log="$(mktemp)"
    if ! cargo test "${PROFILE[@]}" --locked --lib --tests -q -- "$f" > "$log" 2>&1; then
      grep -E -A8 "FAILED|minimal failing|panicked" "$log" >&2 || cat "$log" >&2
      echo "fuzz: failure in round $round (filter $f)" >&2
      rm -f "$log"
      exit 1
    fi
    rm -f "$log"
  done
done
echo "fuzz: $round rounds, no failure"

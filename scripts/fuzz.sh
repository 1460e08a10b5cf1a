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
# The property tests live in the library's unit tests (torrent parsers, XEP-0106 escapes, legacy
# text, SASL, addresses) and in the fuzz_* / *_props test files; each round runs all of those.
TARGETS=(--lib --test fuzz_xml --test hostile_auth_props)
PROFILE=()
if [ -n "${FUZZ_RELEASE:-}" ]; then PROFILE=(--release); fi
cargo build "${PROFILE[@]}" --tests --locked
end=$(( $(date +%s) + SECONDS_TOTAL ))
round=0
while [ "$(date +%s)" -lt "$end" ]; do
  round=$((round + 1))
  echo "== fuzz round $round ($PROPTEST_CASES cases per property)"
  log="$(mktemp)"
  if ! cargo test "${PROFILE[@]}" --locked "${TARGETS[@]}" -q > "$log" 2>&1; then
    grep -E -A8 "FAILED|minimal failing|panicked" "$log" >&2 || cat "$log" >&2
    echo "fuzz: failure in round $round" >&2
    rm -f "$log"
    exit 1
  fi
  grep -E "^test result" "$log" | tr '\n' ' '; echo
  rm -f "$log"
done
echo "fuzz: $round rounds, no failure"

#!/usr/bin/env bash
# The README's test command: installs what the build and the tests need (Debian packages,
# idempotent), then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
export CI="${CI:-}"
cargo test --workspace --locked --no-fail-fast 2>&1

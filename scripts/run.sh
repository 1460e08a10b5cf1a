#!/usr/bin/env bash
# The README's run command: installs build dependencies, builds wockd and runs it on its
# embedded default (domain localhost, loopback listeners, SQLite under the XDG data dir).
# On first run it creates the account me@localhost and prints its password once.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked
exec target/release/wockd run "$@"

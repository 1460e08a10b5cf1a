#!/usr/bin/env bash
# The IM transport's figures on loopback, with a release wockd as `wockd run` runs it: starts
# ngircd on a free port and a throwaway wockd (temp data dir, trusted loopback listener,
# transport on with irc.localhost, prpl-irc's rate limit off like the tests), creates
# alice/pw, then runs scripts/transport-bench.py: relay latency XMPP -> IRC -> XMPP (median,
# p99) and the wockd process's RSS with 1, 5 and 20 IRC accounts. Stops everything it started.
#
#   scripts/transport-bench.sh [ROUNDS]      (default 200 round trips)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-200}"

command -v ngircd >/dev/null || { echo "transport-bench: ngircd is not installed (scripts/install-deps.sh)" >&2; exit 1; }
cargo build --release --bin wockd
WOCKD="$PWD/target/release/wockd"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 100); do port_open "$1" && return 0; sleep 0.1; done; echo "transport-bench: nothing on port $1" >&2; return 1; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/wockd-tbench.XXXXXX")"
chmod 755 "$TMP"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

IRC_PORT=$(free_port)
XMPP_PORT=$(free_port)
mkdir -p "$TMP/run" && chmod 777 "$TMP/run"
cat > "$TMP/ngircd.conf" <<EOF
[Global]
	Name = irc.wockd.test
	Info = wockd transport bench
	Listen = 127.0.0.1
	Ports = $IRC_PORT
	PidFile = $TMP/run/ngircd.pid
	ServerUID = $(id -u)
	ServerGID = $(id -g)
[Limits]
	MaxConnectionsIP = 0
	MaxPenaltyTime = 0
	MaxNickLength = 30
[Options]
	PAM = no
	Ident = no
	DNS = no
EOF
ngircd -n -f "$TMP/ngircd.conf" > "$TMP/ngircd.log" 2>&1 &
PIDS+=($!)
wait_port "$IRC_PORT"

cat > "$TMP/wockd.toml" <<EOF
domains = ["localhost"]
data_dir = "$TMP/data"

[[listen]]
address = "127.0.0.1:$XMPP_PORT"
trusted_loopback = true

[log]
level = "warn"

[torrent]
enabled = false

[transport]
enabled = true
[[transport.services]]
domain = "irc.localhost"
prpl = "prpl-irc"
defaults = { ratelimit-interval = "0", ratelimit-burst = "100" }
EOF
echo pw | "$WOCKD" -c "$TMP/wockd.toml" adduser alice@localhost --password-stdin
"$WOCKD" -c "$TMP/wockd.toml" run > "$TMP/wockd.log" 2>&1 &
WOCKD_PID=$!
PIDS+=("$WOCKD_PID")
wait_port "$XMPP_PORT"

python3 scripts/transport-bench.py "$XMPP_PORT" "$IRC_PORT" "$WOCKD_PID" "$ROUNDS"

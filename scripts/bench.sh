#!/usr/bin/env bash
# Benchmarks wockd with wockd-bench: builds release, starts a throwaway wockd (temp data dir,
# plain listener 127.0.0.1:15222 marked trusted_loopback so PLAIN works without TLS, log level
# warn), creates the accounts bench0..bench999 (password "pw"), then measures
#   1. idle: RSS of the fresh server and KiB per session with 1000 open sessions,
#   2. the unloaded round trip: one pair, one message in flight, 5000 messages after 200 of
#      warm-up: latency p50/p99/max and the server's CPU per message,
#   3. logins/s and login latency with PLAIN, SCRAM-SHA-1 and SCRAM-SHA-256,
#   4. messages between 50 online sender/receiver pairs: msg/s, delivery latency p50/p99/max
#      and the server's CPU per routed message (target: ≤ 5 µs),
#   5. messages to offline receivers (store rate), then their delivery when they log in,
#   6. presence fan-out: 1000 users with 20 contacts each (mutual subscriptions, set up over
#      XMPP first), all online, each sends 10 presence updates: deliveries/s, the server's CPU
#      per delivery, and every one of the 1000 × 10 × 20 deliveries counted (missing ones fail),
# prints a summary and stops the server. Run from anywhere: scripts/bench.sh
#
# Knobs (environment): BENCH_PORT (15222), BENCH_SESSIONS (1000), BENCH_LOGINS (2000),
# BENCH_CONCURRENCY (50), BENCH_PAIRS (50), BENCH_MESSAGES (2000 per pair),
# BENCH_OFFLINE_MESSAGES (200 per pair), BENCH_RTT_MESSAGES (5000),
# BENCH_FANOUT_USERS (1000), BENCH_FANOUT_CONTACTS (20, even), BENCH_FANOUT_UPDATES (10 per
# user), BENCH_THREADS (generator threads; default CPUs-1), BENCH_KEEP=1 keeps the temp dir
# (server log, results).
#
# The same benchmarks against another server (plain TCP; the server must offer SASL without
# TLS; give the server's pid for CPU/RSS numbers):
#
#   Prosody — a config with
#       pidfile = "/tmp/pbench/prosody.pid"; data_path = "/tmp/pbench/data"
#       c2s_ports = { 25222 }; c2s_require_encryption = false
#       allow_unencrypted_plain_auth = true; authentication = "internal_hashed"
#       default_iteration_count = 4096   -- same PBKDF2 cost as wockd's accounts
#       modules_enabled = { "roster", "saslauth", "disco", "ping", "presence", "offline", "posix" }
#       VirtualHost "localhost"
#   then
#       for i in $(seq 0 999); do prosodyctl --config prosody.cfg.lua register bench$i localhost pw; done
#       prosody --config prosody.cfg.lua &       # (prosody -F to stay in the foreground)
#       B="target/release/wockd-bench --port 25222 --pid $(cat /tmp/pbench/prosody.pid)"
#       $B idle --sessions 1000; $B logins --mech PLAIN; $B logins --mech SCRAM-SHA-1
#       $B rtt --messages 5000; $B messages --pairs 50 --messages 2000
#       $B messages --offline --drain --messages 200
#       $B fanout --user-count 1000 --contacts 20 --updates 10 --teardown
#   (internal_hashed keeps SCRAM-SHA-1 keys only, so Prosody offers no SCRAM-SHA-256.)
#   fanout subscribes the accounts to each other over XMPP (rerunning it on subscribed
#   accounts just checks the rosters). Without --teardown the subscriptions stay, and every
#   later login of those accounts (logins, idle, messages) also broadcasts presence to 20
#   contacts: run fanout last, or with --teardown, which empties the rosters afterwards.
#
#   ejabberd — in ejabberd.yml: hosts: [localhost]; auth_method: internal;
#       auth_password_format: scram; a listener {port: 25222, ip: "127.0.0.1",
#       module: ejabberd_c2s, starttls_required: false}; and lift the default c2s shaper
#       (shaper_rules: c2s_shaper: none), which otherwise throttles clients to a few KB/s;
#       mind max_user_offline_messages (default 5000 per user) for --offline runs. Then
#       for i in $(seq 0 999); do ejabberdctl register bench$i localhost pw; done
#       and the same wockd-bench commands with --pid of the beam.smp process. For fanout mind
#       the listener's max_fsm_queue: every update is a burst of 20 deliveries.
#
# `wockd-bench create-users --print-only --count N` prints these account loops.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${BENCH_PORT:-15222}"
SESSIONS="${BENCH_SESSIONS:-1000}"
LOGINS="${BENCH_LOGINS:-2000}"
CONCURRENCY="${BENCH_CONCURRENCY:-50}"
PAIRS="${BENCH_PAIRS:-50}"
MESSAGES="${BENCH_MESSAGES:-2000}"
OFFLINE_MESSAGES="${BENCH_OFFLINE_MESSAGES:-200}"
RTT_MESSAGES="${BENCH_RTT_MESSAGES:-5000}"
FANOUT_USERS="${BENCH_FANOUT_USERS:-1000}"
FANOUT_CONTACTS="${BENCH_FANOUT_CONTACTS:-20}"
FANOUT_UPDATES="${BENCH_FANOUT_UPDATES:-10}"
ACCOUNTS=$(( SESSIONS > 2 * PAIRS ? SESSIONS : 2 * PAIRS ))
ACCOUNTS=$(( ACCOUNTS > FANOUT_USERS ? ACCOUNTS : FANOUT_USERS ))

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if port_open "$PORT"; then
  echo "bench: 127.0.0.1:$PORT is already in use; set BENCH_PORT to a free port" >&2
  exit 1
fi

cargo build --release --workspace --bin wockd --bin wockd-bench
WOCKD="$PWD/target/release/wockd"
BENCH=("$PWD/target/release/wockd-bench" --port "$PORT" --accounts "$ACCOUNTS")
if [ -n "${BENCH_THREADS:-}" ]; then BENCH+=(--threads "$BENCH_THREADS"); fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/wockd-bench.XXXXXX")"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ -n "${BENCH_KEEP:-}" ]; then
    echo "bench: kept $TMP"
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT

cat > "$TMP/wockd.toml" <<EOF
domains = ["localhost"]
data_dir = "$TMP/data"

[[listen]]
address = "127.0.0.1:$PORT"
trusted_loopback = true

[log]
level = "warn"

# The generator is one address with 1000 sessions and 50 concurrent logins (100 in the
# fan-out): lift the per-address connection caps (the read-rate limits stay at their
# defaults).
[limits]
max_connections_per_ip = 100000
max_unauthenticated_per_ip = 100000
max_unauthenticated = 100000
EOF

echo "== creating $ACCOUNTS accounts"
# Before the server starts: the CLI writes the database directly.
"${BENCH[@]}" create-users --count "$ACCOUNTS" --wockd "$WOCKD" --config "$TMP/wockd.toml"

echo "== starting wockd on 127.0.0.1:$PORT"
"$WOCKD" -c "$TMP/wockd.toml" run > "$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
  port_open "$PORT" && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/server.log" >&2; echo "bench: wockd exited" >&2; exit 1; }
  sleep 0.1
done
port_open "$PORT" || { echo "bench: wockd is not listening" >&2; exit 1; }

RESULTS="$TMP/results"
: > "$RESULTS"
FAILED=()
bench() {
  local name="$1"; shift
  echo
  echo "== $name"
  if ! "${BENCH[@]}" --pid "$SERVER_PID" "$@" | tee -a "$RESULTS"; then
    FAILED+=("$name")
  fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "bench: wockd died during '$name'; its log:" >&2
    tail -20 "$TMP/server.log" >&2
    exit 1
  fi
}

echo
echo "== worst-case stanza parse time (in-process, default limits)"
"$PWD/target/release/wockd-bench" parse-worst | tee -a "$RESULTS"

# Idle first, so "idle RSS" is that of a server that has not served anything yet.
bench "idle sessions" idle --sessions "$SESSIONS" --concurrency 100
# The round trip on a server that is not busy, before the heavy runs.
bench "round trip" rtt --messages "$RTT_MESSAGES"
bench "logins PLAIN" logins --count "$LOGINS" --concurrency "$CONCURRENCY" --mech PLAIN
bench "logins SCRAM-SHA-1" logins --count "$LOGINS" --concurrency "$CONCURRENCY" --mech SCRAM-SHA-1
bench "logins SCRAM-SHA-256" logins --count "$LOGINS" --concurrency "$CONCURRENCY" --mech SCRAM-SHA-256
bench "messages, online" messages --pairs "$PAIRS" --messages "$MESSAGES"
bench "messages, offline + drain" messages --pairs "$PAIRS" --messages "$OFFLINE_MESSAGES" --offline --drain
# Last: it leaves the accounts subscribed to each other (a fresh server each run).
bench "presence fan-out" fanout --user-count "$FANOUT_USERS" --contacts "$FANOUT_CONTACTS" --updates "$FANOUT_UPDATES"

# Summary from the RESULT lines: "RESULT <bench> key=value ...".
get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
echo
echo "================ wockd-bench summary ($(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs) ================"
while IFS= read -r line; do
  case "$line" in
    "RESULT idle "*)
      printf '%-22s RSS idle %s KiB, %s KiB with %s sessions = %s KiB/session (anonymous %s KiB/session)\n' "idle" \
        "$(get rss_idle_kb "$line")" "$(get rss_open_kb "$line")" "$(get sessions "$line")" "$(get kb_per_session "$line")" \
        "$(get anon_kb_per_session "$line")" ;;
    "RESULT logins "*)
      printf '%-22s %8s logins/s  p50 %s ms  p99 %s ms  server %s µs/login  (%s failed)\n' "logins $(get mech "$line")" \
        "$(get rate "$line")" "$(get p50_ms "$line")" "$(get p99_ms "$line")" "$(get server_us_per_login "$line")" "$(get failed "$line")" ;;
    "RESULT rtt "*)
      printf '%-22s p50 %s ms  p99 %s ms  max %s ms  server %s µs/msg  (%s of %s delivered)\n' "rtt (1 pair, win 1)" \
        "$(get p50_ms "$line")" "$(get p99_ms "$line")" "$(get max_ms "$line")" "$(get server_us_per_msg "$line")" \
        "$(get received "$line")" "$(get sent "$line")" ;;
    "RESULT messages mode=online"*)
      printf '%-22s %8s msg/s     p50 %s ms  p99 %s ms  max %s ms  server %s µs/msg  (%s of %s delivered)\n' "messages online" \
        "$(get rate "$line")" "$(get p50_ms "$line")" "$(get p99_ms "$line")" "$(get max_ms "$line")" \
        "$(get server_us_per_msg "$line")" "$(get received "$line")" "$(get sent "$line")" ;;
    "RESULT messages mode=offline"*)
      printf '%-22s %8s msg/s     server %s µs/msg  (%s of %s stored)\n' "messages offline" \
        "$(get rate "$line")" "$(get server_us_per_msg "$line")" "$(get stored "$line")" "$(get sent "$line")"
      printf '%-22s %8s msg/s     server %s µs/msg  (%s drained)\n' "offline drain" \
        "$(get drain_rate "$line")" "$(get drain_server_us_per_msg "$line")" "$(get drained "$line")" ;;
    "RESULT fanout "*)
      printf '%-22s %8s deliveries/s  server %s µs/delivery  (%s of %s delivered, %s missing)\n' "presence fan-out" \
        "$(get rate "$line")" "$(get server_us_per_delivery "$line")" "$(get received "$line")" \
        "$(get expected "$line")" "$(get missing "$line")" ;;
  esac
done < <(grep '^RESULT ' "$RESULTS")
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "failed: ${FAILED[*]}"
  exit 1
fi

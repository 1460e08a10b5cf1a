#!/usr/bin/env bash
# Regenerates scripts/wockd.order, the link order of wockd's functions (build.rs hands it to
# lld as --symbol-ordering-file for release builds).
#
# Why: the kernel maps a binary's code 64 KiB at a time around each page that runs
# (fault-around), and rustc lays functions out by codegen unit, so the ~1.6 MiB of code a
# server runs at start and while idle was spread over ~7 MiB of resident pages. Listing the
# functions that run first puts them side by side at the start of .text.
#
# What is recorded: every wockd function that runs (valgrind's callgrind) while a release
# wockd starts on a typical configuration (the IM transport in its own process, torrent
# service on), two clients log in and exchange messages, and it shuts down. Names are
# mangled with a hash that depends on the compiler version and Cargo.lock: regenerate after
# updating either (a stale list costs resident memory, never correctness; lld ignores names
# it does not find).
#
# Usage: scripts/order-file.sh   (needs valgrind; takes about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "order-file.sh: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --locked --bin wockd -p wockd -p wockd-bench >&2

exe=target/release/wockd
tmp=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))
cat >"$tmp/wockd.toml" <<EOF
domains = ["localhost"]
data_dir = "$tmp/data"
[[listen]]
address = "127.0.0.1:$port"
trusted_loopback = true
[s2s]
enabled = false
[transport]
enabled = true
process = "separate"
[[transport.services]]
domain = "irc.localhost"
prpl = "prpl-irc"
EOF
# One run under callgrind: `$1` names the output; with `clients`, the counters are dumped
# once the server is up and idle (part 1), then two clients log in and exchange messages.
profile() {
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$tmp/$1.out" \
        "$exe" -c "$tmp/wockd.toml" run >"$tmp/$1.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
        kill -0 "$pid" 2>/dev/null || { cat "$tmp/$1.log" >&2; exit 1; }
        sleep 0.1
    done
    sleep 3 # idle: timers, the transport child's component link
    if [ "${2:-}" = clients ]; then
        callgrind_control --dump=idle "$pid" >&2
        target/release/wockd-bench rtt --port "$port" --accounts 2 --warmup 20 --messages 200 >&2
    fi
    kill -INT "$pid"
    wait "$pid" || true
    pid=
}
profile first # a first start: schema, certificate, the ready account
target/release/wockd-bench create-users --config "$tmp/wockd.toml" --accounts 2 >&2
profile again clients # a start on existing data, idle, then traffic

# Order: what runs at every start and while idle, then what only a first start runs, then
# what traffic runs. Each group is contiguous, so an idle server touches only the first.
python3 - "$exe" "$tmp"/again.out.*1 "$tmp/first.out" "$tmp/again.out" >scripts/wockd.order <<'EOF'
import re, subprocess, sys
defined = set()
nm = subprocess.run(["nm", "--defined-only", sys.argv[1]], capture_output=True, text=True, check=True)
for l in nm.stdout.splitlines():
    p = l.split()
    if len(p) == 3 and p[1] in "tTwW":
        defined.add(p[2])
seen = set()
for path in sys.argv[2:]:
    ran = set()
    for line in open(path, errors="replace"):
        m = re.match(r"c?fn=\(\d+\)\s*(\S+)", line)
        if m and m.group(1) in defined:
            ran.add(m.group(1))
    for name in sorted(ran - seen):
        print(name)
    seen |= ran
EOF
echo "scripts/wockd.order: $(wc -l <scripts/wockd.order) functions" >&2

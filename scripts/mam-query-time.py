#!/usr/bin/env python3
"""Times XEP-0313 queries for the newest N messages of an archive (RSM <before/>).

Usage: scripts/mam-query-time.py HOST PORT USER PASSWORD [DOMAIN] [N] [ROUNDS]
Logs in with SASL PLAIN over plain TCP (the listener must be trusted loopback), binds,
then sends ROUNDS queries for the last N messages and prints the median and worst wall time
from sending the query to receiving its <fin/>, and how many results each returned.
Fill an archive first, e.g. with
  wockd-bench --port P --accounts 2 messages --pairs 1 --messages 100000 --offline
(bench0 sends to bench1, who is offline: every message goes through the mailbox/archive).
"""
import base64, socket, statistics, sys, time

host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
domain = sys.argv[5] if len(sys.argv) > 5 else "localhost"
n = int(sys.argv[6]) if len(sys.argv) > 6 else 50
rounds = int(sys.argv[7]) if len(sys.argv) > 7 else 20

s = socket.create_connection((host, port))
buf = b""

def until(needle: bytes) -> bytes:
    global buf
    while needle not in buf:
        chunk = s.recv(1 << 20)
        if not chunk:
            raise SystemExit(f"closed while waiting for {needle!r}: {buf[-500:]!r}")
        buf += chunk
    i = buf.index(needle) + len(needle)
    out, buf = buf[:i], buf[i:]
    return out

def header():
    s.sendall(f"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>".encode())
    until(b"</stream:features>")

header()
token = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
s.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>".encode())
if b"<success" not in until(b"/>"):
    raise SystemExit("authentication failed")
header()
s.sendall(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>mam</resource></bind></iq>")
until(b"</iq>")

times, counts = [], []
for r in range(rounds):
    q = (f"<iq type='set' id='q{r}'><query xmlns='urn:xmpp:mam:2' queryid='x{r}'>"
         f"<set xmlns='http://jabber.org/protocol/rsm'><max>{n}</max><before/></set></query></iq>")
    t0 = time.perf_counter()
    s.sendall(q.encode())
    got = until(b"</fin>")
    times.append(time.perf_counter() - t0)
    counts.append(got.count(b"<result "))
    until(b"</iq>")
times.sort()
print(f"MAM last {n}: median {statistics.median(times)*1000:.2f} ms, worst {times[-1]*1000:.2f} ms "
      f"over {rounds} queries; results per query: {sorted(set(counts))}")
s.sendall(b"</stream:stream>")

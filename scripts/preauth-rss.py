#!/usr/bin/env python3
"""RSS of a wockd holding N idle pre-auth connections (each has sent a stream header and got
its features), spread over loopback addresses so the per-address caps (default 64
unauthenticated per address, 1024 in all) are not what is measured.
Usage: scripts/preauth-rss.py PORT PID [N=1000]"""
import socket, sys, time

port, pid = int(sys.argv[1]), int(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

before = rss_kib()
socks = []
for i in range(n):
    s = socket.socket()
    s.bind((f"127.0.1.{1 + i // 60}", 0))
    s.connect(("127.0.0.1", port))
    s.sendall(HEADER)
    socks.append(s)
for s in socks:
    s.settimeout(10)
    got = b""
    while b"</stream:features>" not in got:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("a connection was closed")
        got += chunk
time.sleep(1)
after = rss_kib()
print(f"RESULT preauth connections={n} rss_before_kib={before} rss_after_kib={after} "
      f"kib_per_connection={(after - before) / n:.2f}")

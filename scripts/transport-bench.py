#!/usr/bin/env python3
"""Relay latency and memory of the IM transport against a loopback IRC server.

Usage: scripts/transport-bench.py XMPP_PORT IRC_PORT WOCKD_PID [ROUNDS]
(scripts/transport-bench.sh starts ngircd and a release wockd and calls this.)

As alice@localhost (password "pw", SASL PLAIN on a trusted loopback listener) it registers
an IRC account `alicebot` at irc.localhost, while a raw IRC client `bob` echoes every
private message back. It prints
  * relay latency XMPP -> IRC -> XMPP over ROUNDS round trips (median, p99), and the two
    legs separately;
  * the wockd process's RSS with 1, 5 and 20 IRC accounts connected.
"""
import base64, socket, statistics, sys, time

xport, iport, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 200


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def send(self, text):
        self.s.sendall(text.encode())

    def until(self, needle, timeout=30.0):
        needle = needle.encode()
        deadline = time.monotonic() + timeout
        while needle not in self.buf:
            self.s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.s.recv(1 << 16)
            except socket.timeout:
                raise SystemExit(f"timed out waiting for {needle!r}; have {self.buf[-300:]!r}")
            if not chunk:
                raise SystemExit(f"closed waiting for {needle!r}")
            self.buf += chunk
        i = self.buf.index(needle) + len(needle)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out.decode(errors="replace")


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# The XMPP side.
x = Conn(xport)
hdr = ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
       "to='localhost' version='1.0'>")
x.send(hdr)
x.until("</stream:features>")
x.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
       + base64.b64encode(b"\0alice\0pw").decode() + "</auth>")
if "<success" not in x.until("/>"):
    raise SystemExit("authentication failed")
x.send(hdr)
x.until("</stream:features>")
x.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
       "<resource>bench</resource></bind></iq>")
x.until("</iq>")
x.send("<presence/>")


def register(n, nick):
    x.send(f"<iq type='set' id='reg{n}' to='irc.localhost'><query xmlns='jabber:iq:register'>"
           "<x xmlns='jabber:x:data' type='submit'>"
           f"<field var='username'><value>{nick}</value></field>"
           "<field var='split:0'><value>127.0.0.1</value></field>"
           f"<field var='opt:port'><value>{iport}</value></field>"
           "<field var='opt:ssl'><value>0</value></field>"
           "</x></query></iq>")
    x.until(f"{nick}@127.0.0.1: online")


# The IRC side: bob echoes.
bob = Conn(iport)
bob.send("NICK bob\r\nUSER bob 0 * :bob\r\n")
bob.until(" 001 ")

register(1, "alicebot")
rss = [(1, rss_kib())]

samples, out_leg, back_leg = [], [], []
for i in range(rounds):
    t0 = time.perf_counter()
    x.send(f"<message to='bob@irc.localhost' type='chat'><body>ping {i}</body></message>")
    bob.until(f":ping {i}\r\n")
    t1 = time.perf_counter()
    bob.send(f"PRIVMSG alicebot :pong {i}\r\n")
    x.until(f"pong {i}<")
    t2 = time.perf_counter()
    samples.append(t2 - t0)
    out_leg.append(t1 - t0)
    back_leg.append(t2 - t1)


def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] * 1000


print(f"relay XMPP->IRC->XMPP over {rounds} round trips: median {q(samples, .5):.2f} ms, "
      f"p99 {q(samples, .99):.2f} ms (XMPP->IRC median {q(out_leg, .5):.2f} ms, "
      f"IRC->XMPP median {q(back_leg, .5):.2f} ms)")

for n in range(2, 21):
    register(n, f"alicebot{n}")
    if n in (5, 20):
        time.sleep(1)  # let the new connections settle before reading RSS
        rss.append((n, rss_kib()))
print("wockd RSS with IRC accounts connected: "
      + ", ".join(f"{n}: {k / 1024:.1f} MiB" for n, k in rss))
x.send("</stream:stream>")

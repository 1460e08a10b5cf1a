//! Connection and rate limits (issue 10, point 5): a flood of idle connections from one address
//! does not lock out a real login, a connection reading too fast is throttled, and the per
//! address cap refuses the surplus. The server keeps serving throughout.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{HEADER, Raw, TestServer};

/// The test process holds both ends of every connection.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= 3000,
        "need 3000 file descriptors, the hard limit is {}",
        lim.rlim_cur
    );
}

fn ping(c: &mut Raw, id: &str) {
    let r = c.ping(id);
    assert!(!r.contains("type=\"error\""), "{r}");
}

/// 1,100 idle connections from one address, half of them having sent a stream header: the
/// server holds at most `max_unauthenticated_per_ip` of them (the oldest are evicted with a
/// policy-violation), and a real login from the same address still works.
#[test]
fn idle_connection_flood_does_not_lock_out_a_real_login() {
    raise_fd_limit();
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    let mut idle = Vec::new();
    for i in 0..1100 {
        let mut s = TcpStream::connect(srv.trusted).unwrap();
        if i % 2 == 0 {
            s.write_all(HEADER.as_bytes()).unwrap();
        }
        idle.push(s);
    }
    let mut alice = Raw::login_plain(srv.trusted, "alice", "pw", "real");
    ping(&mut alice, "p1");
    // The oldest idle connections were closed, with the reason.
    let mut first = idle.remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let _ = first.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("<policy-violation"), "{text}");
    drop(idle);
    ping(&mut alice, "p2");
}

/// More than `max_connections_per_ip` from one address are refused; another address is not
/// affected (any 127/8 address is loopback).
#[test]
fn connections_per_address_are_capped() {
    let srv = TestServer::start_with(|c| c.limits.max_connections_per_ip = 5, |_| {});
    srv.add_user("alice", "pw");
    let mut held: Vec<Raw> = (0..5)
        .map(|i| Raw::login_plain(srv.trusted, "alice", "pw", &format!("r{i}")))
        .collect();
    let mut extra = TcpStream::connect(srv.trusted).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = extra.write_all(HEADER.as_bytes());
    let mut buf = Vec::new();
    let _ = extra.read_to_end(&mut buf);
    assert!(buf.is_empty(), "the sixth connection was served");
    // From another loopback address it works.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.2:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.connect(&srv.trusted.into()).unwrap();
    let mut other: TcpStream = sock.into();
    other.write_all(HEADER.as_bytes()).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut chunk = [0u8; 4096];
    let n = other.read(&mut chunk).unwrap();
    assert!(String::from_utf8_lossy(&chunk[..n]).contains("<stream:stream"));
    ping(&mut held[0], "still");
}

/// A connection that sends faster than its read rate is slowed to that rate: 16 KiB of
/// whitespace at 4 KiB/s with a 4 KiB burst cannot be through in less than 3 s. A lower
/// bound, which the token bucket guarantees; meanwhile another client is served.
#[test]
fn reading_is_throttled_to_the_configured_rate() {
    let srv = TestServer::start_with(
        |c| {
            c.limits.read_rate_pre_auth = 4096;
            c.limits.read_burst_pre_auth = 4096;
        },
        |_| {},
    );
    srv.add_user("alice", "pw");
    let mut fast = Raw::connect(srv.trusted);
    fast.send(HEADER);
    fast.until("</stream:features>");
    let start = Instant::now();
    for _ in 0..16 {
        fast.send(&" ".repeat(1024));
    }
    // Pre-auth ping: answered only once everything before it was read.
    fast.send("<iq type='get' id='late'><ping xmlns='urn:xmpp:ping'/></iq>");
    let mut alice = Raw::login_plain(srv.trusted, "alice", "pw", "other");
    ping(&mut alice, "meanwhile");
    fast.sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no answer: {}", fast.buf);
        let mut chunk = [0u8; 4096];
        match fast.sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => fast.buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(_) => {}
        }
        if fast.buf.contains("id=\"late\"") || fast.buf.contains("</stream:stream>") {
            break;
        }
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2900),
        "16 KiB read in {elapsed:?} at 4 KiB/s"
    );
}

/// Failed logins are counted per address across streams: past
/// `max_auth_failures_per_ip` in a minute, even the right password gets
/// `temporary-auth-failure` from that address, while another address logs in.
#[test]
fn failed_logins_per_address_are_limited() {
    use base64::Engine;
    let srv = TestServer::start_with(|c| c.limits.max_auth_failures_per_ip = 4, |_| {});
    srv.add_user("alice", "pw");
    let attempt = |c: &mut Raw, pw: &str| -> String {
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{pw}"));
        c.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
        ));
        let head = c.until("xmpp-sasl\"");
        if head.contains("<failure") {
            head + &c.until("</failure>")
        } else {
            head
        }
    };
    let mut failures = 0;
    while failures < 4 {
        let mut c = Raw::connect(srv.trusted);
        c.send(HEADER);
        c.until("</stream:features>");
        for _ in 0..2 {
            let r = attempt(&mut c, "wrong");
            assert!(r.contains("<not-authorized"), "{r}");
            failures += 1;
        }
    }
    let mut c = Raw::connect(srv.trusted);
    c.send(HEADER);
    c.until("</stream:features>");
    let r = attempt(&mut c, "pw");
    assert!(r.contains("<temporary-auth-failure"), "{r}");
    // Another address is not affected.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.3:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.connect(&srv.trusted.into()).unwrap();
    let stream: TcpStream = sock.into();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut other = Raw {
        sock: stream,
        buf: String::new(),
    };
    other.send(HEADER);
    other.until("</stream:features>");
    let r = attempt(&mut other, "pw");
    assert!(r.contains("<success"), "{r}");
}

//! Hostile input and slow peers (issue 10): large stanzas over TLS are never lost, characters
//! outside XML 1.0 are refused, a client that stops reading is cut off without stalling others
//! and without losing what it never acknowledged. After each attack a second client is served.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{HEADER, Raw, TestServer, Tls, read_until, tls_client};

/// Logs in over direct TLS with PLAIN and binds `res`.
fn tls_login(srv: &TestServer, user: &str, res: &str) -> (Tls, String) {
    use base64::Engine;
    let mut s = tls_client(srv);
    let mut buf = String::new();
    s.write_all(HEADER.as_bytes()).unwrap();
    read_until(&mut s, &mut buf, "</stream:features>");
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0pw"));
    s.write_all(
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>")
            .as_bytes(),
    )
    .unwrap();
    read_until(&mut s, &mut buf, "<success");
    s.write_all(HEADER.as_bytes()).unwrap();
    read_until(&mut s, &mut buf, "</stream:features>");
    s.write_all(format!("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{res}</resource></bind></iq>").as_bytes()).unwrap();
    read_until(&mut s, &mut buf, "</iq>");
    (s, buf)
}

/// A client that still gets served: logs in and gets a ping answered.
fn second_client_served(srv: &TestServer) {
    let mut c = Raw::login_plain(srv.trusted, "bob", "pw", "check");
    c.send("<iq type='get' id='alive'><ping xmlns='urn:xmpp:ping'/></iq>");
    let r = c.until("id=\"alive\"");
    let tail = c.until(">");
    assert!(r.contains("type=\"result\""), "{r}{tail}");
}

/// A 200 KiB private-XML item and a 200 KiB message fetched back as a MAM page, both over TLS,
/// with a 1 MiB stanza limit: more than rustls buffers at once, so every byte must be queued
/// and written as the socket drains (it was silently dropped past ~64 KiB).
#[test]
fn stanzas_larger_than_the_tls_buffer_round_trip() {
    let srv = TestServer::start_with(|c| c.limits.max_stanza_bytes = 1024 * 1024, |_| {});
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let (mut s, mut buf) = tls_login(&srv, "alice", "big");
    let blob: String = (0..200 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    s.write_all(format!("<iq type='set' id='store'><query xmlns='jabber:iq:private'><big xmlns='urn:test:big'>{blob}</big></query></iq>").as_bytes()).unwrap();
    let r = read_until(&mut s, &mut buf, "id=\"store\"");
    assert!(r.contains("type=\"result\""), "{r}");
    s.write_all(b"<iq type='get' id='fetch'><query xmlns='jabber:iq:private'><big xmlns='urn:test:big'/></query></iq>").unwrap();
    read_until(&mut s, &mut buf, "id=\"fetch\"");
    let page = read_until(&mut s, &mut buf, "</iq>");
    assert!(
        page.contains(&blob),
        "private XML came back with {} bytes",
        page.len()
    );

    // The same size as a message body, archived, then fetched as a MAM page.
    s.write_all(
        format!("<message to='bob@localhost' type='chat' id='m1'><body>{blob}</body></message>")
            .as_bytes(),
    )
    .unwrap();
    s.write_all(b"<iq type='set' id='mam'><query xmlns='urn:xmpp:mam:2' queryid='q'/></iq>")
        .unwrap();
    let page = read_until(&mut s, &mut buf, "<fin");
    assert!(
        page.contains(&blob),
        "MAM page came back with {} bytes",
        page.len()
    );
    second_client_served(&srv);
}

/// Characters outside XML 1.0 `Char` from a client close its stream with `not-well-formed`,
/// literally or as character references; the server keeps serving others.
#[test]
fn control_characters_from_a_client_are_refused() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    for bad in [
        "<message to='bob@localhost'><body>ring \u{7}</body></message>",
        "<message to='bob@localhost'><body>&#x1b;[31m</body></message>",
        "<message to='bob@localhost'><body>&#xFFFF;</body></message>",
        "<message to='bob@localhost'><body>&#xD800;</body></message>",
        "<message to='bob@localhost&#0;'/>",
    ] {
        let mut c = Raw::login_plain(srv.trusted, "alice", "pw", "ctl");
        c.send(bad);
        let rest = c.until_closed();
        assert!(rest.contains("<not-well-formed"), "{bad}: {rest}");
        second_client_served(&srv);
    }
}

/// A reader with stream management stops reading while another client floods it: the
/// flooder's pings are still answered, the reader's stream is closed once its output budget is
/// exceeded, and every message it did not acknowledge is in its mailbox afterwards.
#[test]
fn a_client_that_stops_reading_is_cut_off_and_loses_nothing() {
    const N: usize = 2000;
    let srv = TestServer::start_with(|c| c.limits.max_output_bytes = 256 * 1024, |_| {});
    srv.add_user("reader", "pw");
    srv.add_user("flooder", "pw");
    srv.add_user("bob", "pw");
    let mut reader = Raw::login_plain(srv.trusted, "reader", "pw", "slow");
    reader.send("<enable xmlns='urn:xmpp:sm:3'/>");
    reader.until("<enabled");
    reader.send("<presence/>");
    reader.until("<presence");
    // From here on the reader reads nothing at all.

    let mut flooder = Raw::login_plain(srv.trusted, "flooder", "pw", "fast");
    let body = "x".repeat(8 * 1024);
    for i in 0..N {
        flooder.send(&format!(
            "<message to='reader@localhost/slow' type='chat' id='f{i}'><body>{i} {body}</body></message>"
        ));
        if i % 200 == 0 {
            // The server keeps serving the flooder while the reader's output piles up.
            flooder.send(&format!(
                "<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>"
            ));
            let r = flooder.until(&format!("id=\"p{i}\""));
            assert!(!r.contains("type=\"error\""), "{r}");
        }
    }
    // The reader's session ended (its stream was closed for leaving output unread) and
    // everything it never acknowledged went back to its mailbox: all of it.
    srv.wait_mailbox("reader", N as u64, 60);
    let mut rest = Vec::new();
    reader
        .sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Drain what the kernel still holds: the stream ends with a policy-violation.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        assert!(Instant::now() < deadline, "reader's stream never closed");
        match reader.sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => rest.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.contains("<policy-violation"),
        "no policy-violation at the end of {} bytes",
        rest.len()
    );
    second_client_served(&srv);
}

/// A bug in one stanza handler (here a rule that panics) closes that stream with
/// `internal-server-error`; the process and every other session live on.
#[test]
fn a_panicking_handler_closes_only_its_stream() {
    let srv = TestServer::start_with(
        |_| {},
        |s| {
            s.iqs()
                .rule("urn:test:bug", "q")
                .get(|_iq| panic!("a bug in a handler"));
        },
    );
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut bob = Raw::login_plain(srv.trusted, "bob", "pw", "watching");
    let mut alice = Raw::login_plain(srv.trusted, "alice", "pw", "buggy");
    alice.send("<iq type='get' id='bug'><q xmlns='urn:test:bug'/></iq>");
    let rest = alice.until_closed();
    assert!(rest.contains("<internal-server-error"), "{rest}");
    bob.send("<iq type='get' id='ok'><ping xmlns='urn:xmpp:ping'/></iq>");
    let r = bob.until("id=\"ok\"");
    assert!(r.contains("type=\"result\""), "{r}");
    second_client_served(&srv);
}

/// Unterminated input in every framer state (an endless quoted attribute in the stream header,
/// an endless end tag, an endless start tag, endless text) ends the stream with
/// `policy-violation` once it passes the stanza limit, before authentication, over plain TCP
/// and over TLS; nothing is buffered beyond the limit.
#[test]
fn unterminated_input_is_cut_off_at_the_limit() {
    let srv = TestServer::start_with(|c| c.limits.max_stanza_bytes = 64 * 1024, |_| {});
    srv.add_user("bob", "pw");
    let header_open = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' a='";
    let shapes: [(&str, &str); 4] = [
        (header_open, "x"),
        (HEADER, "</"),
        (HEADER, "<message a='"),
        (HEADER, "<message><body>"),
    ];
    let chunk = "x".repeat(16 * 1024);
    for (i, (head, opener)) in shapes.iter().enumerate() {
        let mut c = Raw::connect(srv.trusted);
        c.send(head);
        if *head == HEADER {
            c.until("</stream:features>");
        }
        c.send(opener);
        let mut sent = 0;
        while sent < 256 * 1024 {
            if c.sock.write_all(chunk.as_bytes()).is_err() {
                break;
            }
            sent += chunk.len();
        }
        let rest = c.until_closed();
        assert!(rest.contains("<policy-violation"), "shape {i}: {rest}");
        second_client_served(&srv);
    }
    // The same over TLS.
    let mut s = tls_client(&srv);
    s.write_all(HEADER.as_bytes()).unwrap();
    let mut buf = String::new();
    read_until(&mut s, &mut buf, "</stream:features>");
    s.write_all(b"<message a='").unwrap();
    for _ in 0..16 {
        if s.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    read_until(&mut s, &mut buf, "<policy-violation");
    second_client_served(&srv);
}

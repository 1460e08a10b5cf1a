//! Bad input gets the right stream or stanza error (RFC 6120 §4.9, §8.3), and a second client
//! on the same server keeps working meanwhile.

mod common;

use common::{HEADER, Raw, TestServer};

/// Opens a stream, sends `bad`, expects the stream error `condition` and a closed connection.
fn expect_stream_error(srv: &TestServer, header: &str, bad: &str, condition: &str) {
    let mut c = Raw::connect(srv.trusted);
    c.send(header);
    c.send(bad);
    let all = c.until_closed();
    assert!(
        all.contains(&format!(
            "<{condition} xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>"
        )),
        "expected {condition} for {bad:?}, got {all}"
    );
    assert!(all.contains("</stream:stream>"), "stream not closed: {all}");
    assert!(
        all.contains("<stream:stream"),
        "no header before the error: {all}"
    );
}

/// A logged-in client that checks the server still answers.
fn still_works(other: &mut Raw, id: &str) {
    other.send(&format!(
        "<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    let reply = other.until(&format!("id=\"{id}\"/>"));
    assert!(reply.contains("type=\"result\""), "{reply}");
}

#[test]
fn each_bad_input_gets_its_error_while_others_keep_working() {
    let srv = TestServer::start_with(|c| c.limits.max_stanza_bytes = 8192, |_| {});
    srv.add_user("alice", "pw");
    let mut other = Raw::login_plain(srv.trusted, "alice", "pw", "watcher");

    // A half-sent stanza from one client never delays another.
    let mut slow = Raw::login_plain(srv.trusted, "alice", "pw", "slow");
    slow.send("<message to='alice@localhost/watcher'><body>hal");

    let cases: &[(&str, &str)] = &[
        ("<message><body></message>", "not-well-formed"),
        ("<message><body>&xxe;</body></message>", "restricted-xml"),
        (
            "<!DOCTYPE foo [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>",
            "restricted-xml",
        ),
        ("<!-- comment -->", "restricted-xml"),
        ("<?php echo 1; ?>", "restricted-xml"),
        ("<message/>", "not-authorized"),
        ("<presence/>", "not-authorized"),
        (
            "<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>",
            "not-authorized",
        ),
        ("<foo xmlns='urn:example:foo'/>", "unsupported-stanza-type"),
        ("text at stream level", "bad-format"),
    ];
    for (i, (bad, cond)) in cases.iter().enumerate() {
        expect_stream_error(&srv, HEADER, bad, cond);
        still_works(&mut other, &format!("a{i}"));
    }
    let big = format!("<message><body>{}</body></message>", "x".repeat(9000));
    expect_stream_error(&srv, HEADER, &big, "policy-violation");
    let deep = format!(
        "<message>{}{}</message>",
        "<a>".repeat(40),
        "</a>".repeat(40)
    );
    expect_stream_error(&srv, HEADER, &deep, "policy-violation");
    still_works(&mut other, "b1");

    // Header checks.
    expect_stream_error(
        &srv,
        &HEADER.replace("to='localhost'", "to='elsewhere.example'"),
        "",
        "host-unknown",
    );
    expect_stream_error(
        &srv,
        &HEADER.replace("jabber:client", "jabber:server"),
        "",
        "invalid-namespace",
    );
    expect_stream_error(
        &srv,
        &HEADER.replace("version='1.0'", "version='2.0'"),
        "",
        "unsupported-version",
    );
    expect_stream_error(&srv, "garbage", "", "not-well-formed");
    still_works(&mut other, "b2");

    // The slow client finishes its stanza and it is delivered.
    slow.send("f</body></message>");
    let msg = other.until("</message>");
    assert!(msg.contains("<body>half</body>"), "{msg}");
}

#[test]
fn iq_errors_and_from_stamping() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut a = Raw::login_plain(srv.trusted, "alice", "pw", "a");
    let mut b = Raw::login_plain(srv.trusted, "bob", "pw", "b");

    a.send("<iq type='get' id='u1'><nothing xmlns='urn:example:unknown'/></iq>");
    assert!(a.until("</iq>").contains("service-unavailable"));
    a.send(
        "<iq type='get' id='u2'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert!(a.until("</iq>").contains("bad-request"));
    a.send("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(a.until("</iq>").contains("bad-request"));
    a.send("<iq type='fetch' id='u3'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(a.until("</iq>").contains("bad-request"));
    a.send("<iq type='get' id='u4' to='bob@localhost/nope'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(a.until("</iq>").contains("service-unavailable"));
    a.send("<message to='a@@b'><body>x</body></message>");
    assert!(a.until("</message>").contains("jid-malformed"));
    a.send("<message to='someone@elsewhere.example'><body>x</body></message>");
    assert!(a.until("</message>").contains("remote-server-not-found"));
    // Results and errors to the server are never answered: the next reply is the ping's.
    a.send("<iq type='result' id='r1'/><iq type='error' id='r2'/>");
    a.send("<iq type='get' id='u5'><ping xmlns='urn:xmpp:ping'/></iq>");
    let next = a.until("/>");
    assert!(
        next.contains("id=\"u5\""),
        "the server answered a result/error: {next}"
    );

    // The server stamps 'from': no spoofing. Whitespace keepalives are fine.
    a.send("  \n  <message to='bob@localhost/b' from='mallory@localhost/x' id='m1'><body>hi</body></message>");
    let got = b.until("</message>");
    assert!(got.contains("from=\"alice@localhost/a\""), "{got}");
    assert!(!got.contains("mallory"), "{got}");
    // IQ between full JIDs is routed, and the answer comes back.
    a.send("<iq type='get' id='q1' to='bob@localhost/b'><query xmlns='jabber:iq:version'/></iq>");
    let iq = b.until("</iq>");
    assert!(iq.contains("from=\"alice@localhost/a\""), "{iq}");
    b.send("<iq type='result' id='q1' to='alice@localhost/a'><query xmlns='jabber:iq:version'><name>x</name></query></iq>");
    let back = a.until("</iq>");
    assert!(
        back.contains("from=\"bob@localhost/b\"") && back.contains("<name>x</name>"),
        "{back}"
    );
    // Directed presence to a full JID.
    a.send("<presence to='bob@localhost/b'/>");
    assert!(b.until("/>").contains("<presence"));
}

#[test]
fn conflict_timeout_and_shutdown() {
    let srv = TestServer::start_with(|c| c.limits.auth_timeout_secs = 1, |_| {});
    srv.add_user("alice", "pw");
    let mut first = Raw::login_plain(srv.trusted, "alice", "pw", "same");
    let mut second = Raw::login_plain(srv.trusted, "alice", "pw", "same");
    let closed = first.until_closed();
    assert!(
        closed.contains("<conflict xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>"),
        "{closed}"
    );
    second.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(second.until("/>").contains("result"));

    // A connection that never authenticates is timed out.
    let mut idle = Raw::connect(srv.trusted);
    idle.send(HEADER);
    let all = idle.until_closed();
    assert!(all.contains("connection-timeout"), "{all}");

    // Shutdown tells every client.
    let mut c = Raw::login_plain(srv.trusted, "alice", "pw", "x");
    srv.stop();
    let all = c.until_closed();
    assert!(all.contains("system-shutdown"), "{all}");
}

#[test]
fn sasl_failures() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    let mut c = Raw::connect(srv.trusted);
    c.send(HEADER);
    let features = c.until("</stream:features>");
    for m in [
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
        "starttls",
        "iq-auth",
    ] {
        assert!(features.contains(m), "{m} missing from {features}");
    }
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        b64("\0alice\0wrong")
    ));
    assert!(c.until("</failure>").contains("not-authorized"));
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-NOPE'/>");
    assert!(c.until("</failure>").contains("invalid-mechanism"));
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!notbase64</auth>");
    let last = c.until_closed();
    assert!(last.contains("incorrect-encoding"), "{last}");
    assert!(
        last.contains("policy-violation"),
        "three failures must end the stream: {last}"
    );

    // Untrusted listener without TLS: only STARTTLS (required) is offered; SASL is refused.
    let mut u = Raw::connect(srv.untrusted);
    u.send(HEADER);
    let features = u.until("</stream:features>");
    assert!(
        features.contains("<required/>") && !features.contains("PLAIN"),
        "{features}"
    );
    u.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        b64("\0alice\0pw")
    ));
    assert!(u.until("</failure>").contains("encryption-required"));
}

//! Property tests over real sockets (issue 10, fuzzing): arbitrary SASL2 `<authenticate/>` and
//! `<response/>` elements, and arbitrary resource strings at bind (XEP-0078 and Bind 2), never
//! take the server down; every one is answered; a bound JID always belongs to the account that
//! authenticated. `PROPTEST_CASES` sets the number of cases (default here: 24, as each case is
//! a connection).

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{HEADER, Raw, TestServer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Text that is allowed in XML 1.0 (the XML layer is not what these tests are about),
/// escaped for an attribute or element content.
fn xml_text() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| {
        s.chars()
            .filter(|c| {
                matches!(c, '\t' | '\n' | '\r')
                    || (*c >= ' ' && !matches!(c, '\u{fffe}' | '\u{ffff}'))
            })
            .collect::<String>()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('\'', "&apos;")
            .replace('"', "&quot;")
    })
}

/// Base64 of bytes that look like a PLAIN, SCRAM or HT message more often than random ones.
fn payload() -> impl Strategy<Value = String> {
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        (any::<String>(), any::<String>()).prop_map(|(u, p)| format!("\0{u}\0{p}").into_bytes()),
        Just(b"\0alice\0pw".to_vec()),
        any::<String>().prop_map(|u| format!("n,,n={u},r=abc").into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|p| {
            let mut v = b"alice\0".to_vec();
            v.extend(p);
            v
        }),
    ];
    prop_oneof![
        bytes.prop_map(|b| B64.encode(b)),
        xml_text(),
        Just("=".to_owned()),
    ]
}

fn mechanism() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("PLAIN".to_owned()),
        Just("SCRAM-SHA-1".to_owned()),
        Just("SCRAM-SHA-256".to_owned()),
        Just("HT-SHA-256-NONE".to_owned()),
        xml_text(),
    ]
}

/// An `<authenticate/>` with any mix of what SASL2, Bind 2, SM and FAST put in it, and maybe
/// a `<response/>` after it.
fn authenticate() -> impl Strategy<Value = String> {
    (
        mechanism(),
        proptest::option::of(payload()),
        proptest::option::of(xml_text()),
        proptest::option::of(xml_text()),
        proptest::option::of((xml_text(), xml_text())),
        any::<(bool, bool)>(),
        proptest::option::of(payload()),
    )
        .prop_map(|(mech, initial, ua, tag, resume, (token, invalidate), response)| {
            let mut el = format!("<authenticate xmlns='urn:xmpp:sasl:2' mechanism='{mech}'>");
            if let Some(i) = initial {
                el.push_str(&format!("<initial-response>{i}</initial-response>"));
            }
            if let Some(id) = ua {
                el.push_str(&format!("<user-agent id='{id}'><software>x</software></user-agent>"));
            }
            if let Some(tag) = tag {
                el.push_str(&format!(
                    "<bind xmlns='urn:xmpp:bind:0'><tag>{tag}</tag><enable xmlns='urn:xmpp:sm:3'/></bind>"
                ));
            }
            if let Some((previd, h)) = resume {
                el.push_str(&format!(
                    "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='{h}'/>"
                ));
            }
            if token {
                el.push_str(
                    "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>",
                );
            }
            if invalidate {
                el.push_str("<fast xmlns='urn:xmpp:fast:0' invalidate='true'/>");
            }
            el.push_str("</authenticate>");
            if let Some(r) = response {
                el.push_str(&format!("<response xmlns='urn:xmpp:sasl:2'>{r}</response>"));
            }
            el
        })
}

/// Reads until the server closes; false if it did not within 10 s.
fn read_to_close(c: &mut Raw) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 65536];
    while Instant::now() < deadline {
        match c.sock.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => c.buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A stream authenticated as alice with SASL PLAIN, restarted, not yet bound.
fn authenticated(srv: &TestServer) -> Raw {
    Raw::authenticated(srv.trusted, "alice", "pw").0
}

fn alive(watcher: &mut Raw, n: u32) {
    watcher.send(&format!(
        "<iq type='get' id='alive{n}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    watcher.until(&format!("id=\"alive{n}\""));
}

#[test]
fn arbitrary_sasl2_elements_are_answered_and_the_server_stays_up() {
    let srv = TestServer::start_with(|c| c.auth.max_failures = 1000, |_| {});
    srv.add_user("alice", "pw");
    let watcher = std::cell::RefCell::new(Raw::login_plain(srv.trusted, "alice", "pw", "watcher"));
    let n = std::cell::Cell::new(0);
    TestRunner::new(config())
        .run(&authenticate(), |el| {
            let mut c = Raw::connect(srv.trusted);
            c.send(HEADER);
            c.until("</stream:features>");
            c.send(&el);
            c.send("</stream:stream>");
            prop_assert!(read_to_close(&mut c), "no end after {el}");
            let got = std::mem::take(&mut c.buf);
            prop_assert!(
                got.contains("</stream:stream>"),
                "not closed cleanly after {el}: {got}"
            );
            // Whoever got bound is alice.
            if let Some(i) = got.find("<authorization-identifier>") {
                let id = &got[i + "<authorization-identifier>".len()..];
                prop_assert!(id.starts_with("alice@localhost"), "{el} → {got}");
            }
            n.set(n.get() + 1);
            alive(&mut watcher.borrow_mut(), n.get());
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_resources_at_bind_are_answered_and_stay_in_the_account() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    let watcher = std::cell::RefCell::new(Raw::login_plain(srv.trusted, "alice", "pw", "watcher"));
    let n = std::cell::Cell::new(0);
    TestRunner::new(config())
        .run(&xml_text(), |resource| {
            // XEP-0078 binds the resource in the same request.
            let mut c = Raw::connect(srv.trusted);
            c.send(HEADER);
            c.until("</stream:features>");
            c.send(&format!(
                "<iq type='set' id='auth'><query xmlns='jabber:iq:auth'><username>alice</username>\
                 <password>pw</password><resource>{resource}</resource></query></iq>"
            ));
            let head = c.until("id=\"auth\"");
            let answer = format!("{head}{}", c.until(">"));
            prop_assert!(
                answer.contains("type=\"result\"") || answer.contains("type=\"error\""),
                "{resource:?} → {answer}"
            );
            // RFC 6120 resource binding: the JID the server assigns is alice's.
            let mut c = authenticated(&srv);
            c.send(&format!(
                "<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
            ));
            c.send("</stream:stream>");
            prop_assert!(read_to_close(&mut c));
            let got = std::mem::take(&mut c.buf);
            if let Some(i) = got.find("<jid>") {
                prop_assert!(got[i + 5..].starts_with("alice@localhost/"), "{got}");
            }
            n.set(n.get() + 1);
            alive(&mut watcher.borrow_mut(), n.get());
            Ok(())
        })
        .unwrap();
}

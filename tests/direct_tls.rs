//! XEP-0368 direct TLS: TLS from the first byte, verified against the server's self-signed
//! certificate (made on first run), then SASL PLAIN inside TLS on an untrusted listener.

mod common;

use std::io::Write;

use common::{HEADER, TestServer, read_until, tls_client};

#[test]
fn direct_tls_login_with_plain() {
    use base64::Engine;
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    let mut s = tls_client(&srv);
    let mut buf = String::new();
    s.write_all(HEADER.as_bytes()).unwrap();
    let features = read_until(&mut s, &mut buf, "</stream:features>");
    // Already encrypted: no STARTTLS offered, PLAIN allowed.
    assert!(!features.contains("starttls"), "{features}");
    assert!(
        features.contains("<mechanism>PLAIN</mechanism>"),
        "{features}"
    );
    let creds = base64::engine::general_purpose::STANDARD.encode("\0alice\0pw");
    s.write_all(
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>")
            .as_bytes(),
    )
    .unwrap();
    read_until(&mut s, &mut buf, "<success");
    s.write_all(HEADER.as_bytes()).unwrap();
    let features = read_until(&mut s, &mut buf, "</stream:features>");
    assert!(
        features.contains("urn:ietf:params:xml:ns:xmpp-bind"),
        "{features}"
    );
    s.write_all(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .unwrap();
    let bound = read_until(&mut s, &mut buf, "</iq>");
    // A server-generated resource.
    assert!(bound.contains("<jid>alice@localhost/"), "{bound}");
    s.write_all(
        b"<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
    )
    .unwrap();
    assert!(read_until(&mut s, &mut buf, "id=\"s\"/>").contains("result"));
    s.write_all(b"</stream:stream>").unwrap();
    assert!(read_until(&mut s, &mut buf, "</stream:stream>").contains("</stream:stream>"));
}

#[test]
fn certificate_and_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let srv = TestServer::start();
    for f in [srv.dir.join("tls/key.pem"), srv.dir.join("wockd.sqlite")] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", f.display());
    }
}

//! The IQ-rule API's edge cases (a handler that drops its responder, get/set without a
//! child), an IPv6 listener, and the account commands of the command line against a running
//! server.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{DOMAIN, Raw, TestServer, plain_ok};

#[test]
fn dropped_responder_and_childless_requests_get_errors() {
    let srv = TestServer::start_with(
        |_| {},
        |s| {
            // A handler that forgets to answer: the dropped responder answers for it.
            s.iqs().rule("urn:example:forgetful", "q").get(drop);
        },
    );
    srv.add_user("alice", "pw");
    let mut a = Raw::login_plain(srv.trusted, "alice", "pw", "a");
    a.send("<iq type='get' id='f1'><q xmlns='urn:example:forgetful'/></iq>");
    let r = a.until("</iq>");
    assert!(
        r.contains("id=\"f1\"")
            && r.contains("type=\"error\"")
            && r.contains("<internal-server-error"),
        "{r}"
    );
    for (id, iq) in [
        ("e1", "<iq type='set' id='e1'/>"),
        ("e2", "<iq type='get' id='e2'>just text</iq>"),
    ] {
        a.send(iq);
        let r = a.until("</iq>");
        assert!(
            r.contains(&format!("id=\"{id}\"")) && r.contains("<bad-request"),
            "{id}: {r}"
        );
    }
    // The stream is still fine.
    a.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(a.until("/>").contains("id=\"p\""));
}

#[test]
fn ipv6_listener_serves_clients() {
    let srv = TestServer::start_with(
        |c| {
            c.listen[0].address = "[::1]:0".parse().unwrap();
            c.listen[1].trusted_loopback = true;
        },
        |_| {},
    );
    assert!(srv.trusted.is_ipv6(), "{}", srv.trusted);
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut a = Raw::login_plain(srv.trusted, "alice", "pw", "v6");
    let mut b = Raw::login_plain(srv.untrusted, "bob", "pw", "v4");
    a.send("<message to='bob@localhost/v4'><body>over ::1</body></message>");
    let got = b.until("</message>");
    assert!(
        got.contains("from=\"alice@localhost/v6\"") && got.contains("over ::1"),
        "{got}"
    );
}

fn wockd(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wockd"))
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn account_commands_work_beside_a_running_server() {
    let srv = TestServer::start();
    let config = srv.dir.join("wockd.toml");
    std::fs::write(
        &config,
        format!(
            "domains = ['{DOMAIN}']\ndata_dir = '{}'\n[log]\nlevel = 'warn'\n",
            srv.dir.display()
        ),
    )
    .unwrap();

    let o = wockd(
        &config,
        &["adduser", "carol@localhost", "--password-stdin"],
        Some("first pw\n"),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(plain_ok(srv.trusted, "carol", "first pw"));
    let o = wockd(&config, &["users"], None);
    assert!(
        text(&o).lines().any(|l| l == "carol@localhost"),
        "{}",
        text(&o)
    );

    // The same account twice, a bad JID, a domain we do not serve: each a clear error.
    for (args, says) in [
        (
            vec!["adduser", "carol@localhost", "--password-stdin"],
            "already exists",
        ),
        (
            vec!["adduser", "not a jid@@", "--password-stdin"],
            "is not a valid JID",
        ),
        (
            vec!["adduser", "dave@elsewhere.example", "--password-stdin"],
            "elsewhere.example",
        ),
        (
            vec!["deluser", "nobody@localhost"],
            "no account nobody@localhost",
        ),
    ] {
        let o = wockd(&config, &args, Some("pw\n"));
        assert!(!o.status.success(), "{args:?} succeeded: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
    }

    let o = wockd(
        &config,
        &["passwd", "carol@localhost", "--password-stdin"],
        Some("second pw\n"),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(plain_ok(srv.trusted, "carol", "second pw"));
    assert!(!plain_ok(srv.trusted, "carol", "first pw"));

    let o = wockd(&config, &["deluser", "carol@localhost"], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!plain_ok(srv.trusted, "carol", "second pw"));
    let o = wockd(&config, &["users"], None);
    assert!(!text(&o).contains("carol@localhost"), "{}", text(&o));
}

#[test]
fn xml_lang_and_escaping_survive_routing() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut a = Raw::login_plain(srv.trusted, "alice", "pw", "a");
    let mut b = Raw::login_plain(srv.trusted, "bob", "pw", "b");
    a.send("<message to='bob@localhost/b' xml:lang='de'><body>Grüße &amp; &lt;Küsse&gt; &#x263A;</body></message>");
    let got = b.until("</message>");
    assert!(got.contains("xml:lang=\"de\""), "{got}");
    assert!(
        got.contains("<body>Grüße &amp; &lt;Küsse&gt; ☺</body>"),
        "{got}"
    );
}

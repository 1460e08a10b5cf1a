//! Writes off the main loop (issue 12): vCards, private XML, blocklists, archive preferences
//! and PEP are written by the store's writer thread. A client that sends a write and the read
//! of it back to back, without waiting, reads what it wrote; and what was answered survives a
//! `kill -9` of the server right after the answer.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{DOMAIN, Raw, TestServer};

/// The answers to the IQs with these ids, by id, whatever order they come in (answers wait
/// for their writes; a read's answer may come before the answer to an earlier write).
fn answers(c: &mut Raw, ids: &[&str]) -> HashMap<String, String> {
    let mut text = String::new();
    loop {
        let found = complete_iqs(&text);
        if ids.iter().all(|id| found.contains_key(*id)) {
            return found;
        }
        text.push_str(&c.until(">"));
    }
}

/// The complete `<iq>` elements in `text`, by id.
fn complete_iqs(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = text;
    while let Some(start) = rest.find("<iq ") {
        let iq = &rest[start..];
        let Some(head_end) = iq.find('>') else { break };
        let end = if iq[..=head_end].ends_with("/>") {
            head_end + 1
        } else {
            match iq.find("</iq>") {
                Some(e) => e + "</iq>".len(),
                None => break,
            }
        };
        let el = &iq[..end];
        if let Some(id) = el[..=head_end]
            .split("id=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        {
            out.insert(id.to_owned(), el.to_owned());
        }
        rest = &iq[end..];
    }
    out
}

fn assert_result(s: &str) {
    assert!(s.contains("type=\"result\""), "not a result: {s}");
}

const VCARD_SET: &str =
    "<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Alice Pipelined</FN></vCard></iq>";
const PRIVATE_SET: &str = "<iq type='set' id='x1'><query xmlns='jabber:iq:private'><p xmlns='urn:test:prefs'>pipelined</p></query></iq>";
const PEP_PUBLISH: &str = "<iq type='set' id='p1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
     <publish node='urn:test:node'><item id='it1'><n xmlns='urn:test:node'>pipelined</n></item></publish>\
     </pubsub></iq>";

#[test]
fn a_write_and_its_read_sent_back_to_back_see_the_write() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    let mut alice = Raw::login_plain(srv.trusted, "alice", "pw", "a");
    // Everything in one go: no read waits for the answer to its write.
    let mut burst = String::new();
    burst.push_str(VCARD_SET);
    burst.push_str("<iq type='get' id='v2'><vCard xmlns='vcard-temp'/></iq>");
    burst.push_str(PRIVATE_SET);
    burst.push_str(
        "<iq type='get' id='x2'><query xmlns='jabber:iq:private'><p xmlns='urn:test:prefs'/></query></iq>",
    );
    burst.push_str(PEP_PUBLISH);
    burst.push_str(
        "<iq type='get' id='p2'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <items node='urn:test:node'/></pubsub></iq>",
    );
    // A second publish replaces what the first one stored (max_items 1 by default).
    burst.push_str(
        "<iq type='set' id='p3'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <publish node='urn:test:node'><item id='it2'><n xmlns='urn:test:node'>second</n></item></publish>\
         </pubsub></iq>",
    );
    burst.push_str(
        "<iq type='get' id='p4'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <items node='urn:test:node'/></pubsub></iq>",
    );
    burst.push_str(
        "<iq type='get' id='d1' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    burst.push_str(
        "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='eve@localhost'/></block></iq>",
    );
    burst.push_str("<iq type='get' id='b2'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
    burst.push_str(
        "<iq type='set' id='m1'><prefs xmlns='urn:xmpp:mam:2' default='never'>\
         <always><jid>bob@localhost</jid></always></prefs></iq>",
    );
    burst.push_str("<iq type='get' id='m2'><prefs xmlns='urn:xmpp:mam:2'/></iq>");
    alice.send(&burst);

    let got = answers(
        &mut alice,
        &[
            "v1", "v2", "x1", "x2", "p1", "p2", "p3", "p4", "d1", "b1", "b2", "m1", "m2",
        ],
    );
    for id in ["v1", "x1", "p1", "p3", "b1", "m1"] {
        assert_result(&got[id]);
    }
    let v = &got["v2"];
    assert_result(v);
    assert!(v.contains("Alice Pipelined"), "{v}");

    let x = &got["x2"];
    assert_result(x);
    assert!(x.contains(">pipelined</p>"), "{x}");

    let p = &got["p1"];
    assert!(p.contains("id=\"it1\""), "{p}");
    let items = &got["p2"];
    assert_result(items);
    assert!(
        items.contains("id=\"it1\"") && items.contains(">pipelined</n>"),
        "{items}"
    );
    let items = &got["p4"];
    assert!(
        items.contains("id=\"it2\"") && !items.contains("id=\"it1\""),
        "{items}"
    );

    let d = &got["d1"];
    assert!(d.contains("node=\"urn:test:node\""), "{d}");

    let b = &got["b2"];
    assert!(b.contains("jid=\"eve@localhost\""), "{b}");

    let m = &got["m2"];
    assert!(
        m.contains("default=\"never\"") && m.contains("bob@localhost"),
        "{m}"
    );
}

// ---- the real binary ------------------------------------------------------------------------

/// A `wockd run` process, killed when dropped.
struct Wockd {
    child: Child,
}

impl Wockd {
    fn start(config: &Path, addr: SocketAddr) -> Wockd {
        let child = Command::new(env!("CARGO_BIN_EXE_wockd"))
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let w = Wockd { child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "wockd did not start listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        w
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Wockd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn add_user(data_dir: &Path, name: &str) {
    use wockd::auth::scram::{Hash, new_keys};
    let store = wockd::store::Store::open(&data_dir.join("wockd.sqlite")).unwrap();
    let keys = vec![
        (Hash::Sha1, new_keys(Hash::Sha1, "pw", 4096).unwrap()),
        (Hash::Sha256, new_keys(Hash::Sha256, "pw", 4096).unwrap()),
    ];
    store.create_account(name, DOMAIN, &keys).unwrap();
}

/// What was answered is on disk: the server is killed (`SIGKILL`) as soon as the last answer
/// arrives, and the database then holds every write answered.
#[test]
fn answered_writes_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config: PathBuf = dir.join("wockd.toml");
    let mut f = std::fs::File::create(&config).unwrap();
    write!(
        f,
        "domains = ['localhost']\ndata_dir = '{}'\n[[listen]]\naddress = '{addr}'\ntrusted_loopback = true\n[log]\nlevel = 'warn'\n",
        dir.display()
    )
    .unwrap();
    drop(f);
    add_user(dir, "alice");

    let server = Wockd::start(&config, addr);
    let mut alice = Raw::login_plain(addr, "alice", "pw", "a");
    alice.send(&format!(
        "{VCARD_SET}{PRIVATE_SET}{PEP_PUBLISH}\
         <iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='eve@localhost'/></block></iq>\
         <iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'/></query></iq>"
    ));
    let ids = ["v1", "x1", "p1", "b1", "r1"];
    let got = answers(&mut alice, &ids);
    for id in ids {
        assert_result(&got[id]);
    }
    server.kill9();

    // Opening the database recovers the WAL.
    let store = wockd::store::Store::open(&dir.join("wockd.sqlite")).unwrap();
    let id = store.account_id("alice", DOMAIN).unwrap().unwrap();
    let vcard = store.vcard(id).unwrap().expect("the vCard was answered");
    assert!(vcard.xml.contains("Alice Pipelined"), "{vcard:?}");
    let private = store.private_xml(id, "urn:test:prefs", "p").unwrap();
    assert!(
        private.as_deref().is_some_and(|x| x.contains("pipelined")),
        "{private:?}"
    );
    let node = store
        .pep_node(id, "urn:test:node")
        .unwrap()
        .expect("the node was created");
    let item = store.pep_item(node.id, "it1").unwrap().expect("published");
    assert!(item.payload.contains("pipelined"), "{item:?}");
    assert_eq!(store.blocklist(id).unwrap(), ["eve@localhost"]);
    let (_, roster) = store.load_roster(id).unwrap();
    assert!(
        roster
            .iter()
            .any(|r| r.contact == "bob@localhost" && r.name.as_deref() == Some("Bob")),
        "{roster:?}"
    );
}

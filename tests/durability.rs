//! Durability as promised (issue 10): when the mailbox cannot be committed (the disk is full),
//! no acknowledgement for those messages is written; once the disk has room again the rows
//! are committed and only then acknowledged. The server survives and serves again.
//!
//! The full disk is real as far as SQLite is concerned: a test-only IQ rule sets
//! `PRAGMA max_page_count` on the server's own connection to its current size, so the next
//! commit that needs a page fails with `SQLITE_FULL`, and a glib timer lifts the cap again.

mod common;

use std::time::Duration;

use common::{Raw, TestServer};

const NS_FILL: &str = "urn:test:disk-full";

fn install_disk_full_rule(s: &mut wockd::core::Module) {
    s.iqs().rule(NS_FILL, "fill").set(|iq| {
        let server = iq.server().clone();
        server
            .store
            .conn()
            .execute_batch("PRAGMA max_page_count = 1")
            .unwrap();
        let again = server.clone();
        server.after(Duration::from_millis(1500), move || {
            again
                .store
                .conn()
                .execute_batch("PRAGMA max_page_count = 1073741823")
                .unwrap();
        });
        iq.result(None);
    });
}

fn pending(srv: &TestServer, user: &str) -> u64 {
    let store = wockd::store::Store::open(&srv.dir.join("wockd.sqlite")).unwrap();
    let id = store.account_id(user, "localhost").unwrap().unwrap();
    wockd::store::mailbox::count_pending(store.conn(), id).unwrap()
}

#[test]
fn nothing_is_acknowledged_before_it_is_on_disk() {
    let srv = TestServer::start_with(|_| {}, install_disk_full_rule);
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut alice = Raw::login_plain(srv.trusted, "alice", "pw", "a");
    alice.send("<enable xmlns='urn:xmpp:sm:3'/>");
    alice.until("<enabled");
    alice.send(&format!(
        "<iq type='set' id='fill'><fill xmlns='{NS_FILL}'/></iq>"
    ));
    alice.until("id=\"fill\"");
    // Big enough that the rows need new database pages.
    let body = "b".repeat(20 * 1024);
    for i in 0..5 {
        alice.send(&format!(
            "<message to='bob@localhost' type='chat' id='m{i}'><body>{i} {body}</body></message>"
        ));
    }
    alice.send("<r xmlns='urn:xmpp:sm:3'/>");
    // The answer counts the IQ and the five messages; when it arrives they are on disk.
    let ack = alice.until("<a ");
    let rest = alice.until("/>");
    assert!(
        rest.contains("h=\"6\"") || rest.contains("h='6'"),
        "{ack}{rest}"
    );
    assert_eq!(
        pending(&srv, "bob"),
        5,
        "acknowledged before the rows were committed"
    );
    // The server recovered: a new client is served and gets the messages.
    let mut bob = Raw::login_plain(srv.trusted, "bob", "pw", "b");
    bob.send("<presence/>");
    for i in 0..5 {
        bob.until(&format!("id=\"m{i}\""));
    }
}

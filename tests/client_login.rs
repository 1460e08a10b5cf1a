//! A real XMPP client library nobody here wrote (tokio-xmpp, xmpp-rs) logs in to wockd with
//! SCRAM over STARTTLS as two accounts and exchanges messages.

mod common;

use std::str::FromStr;
use std::time::Duration;

use common::TestServer;
use common::xmpp::{PinnedStartTls, client_config_trusting, try_sasl, wait_online};
use futures::StreamExt;
use tokio_xmpp::rustls::pki_types::{CertificateDer, pem::PemObject};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::{Lang, Message};

const T: Duration = Duration::from_secs(20);

fn connector(srv: &TestServer) -> PinnedStartTls {
    let der = CertificateDer::from_pem_file(srv.cert_path()).unwrap();
    let mut c = PinnedStartTls::new(srv.untrusted, client_config_trusting(&[der]));
    // wockd offers SCRAM without -PLUS; with channel-binding data tokio-xmpp only tries -PLUS.
    c.channel_binding = false;
    c
}

async fn next_body(client: &mut Client) -> (Jid, String) {
    tokio::time::timeout(T, async {
        loop {
            if let Event::Stanza(Stanza::Message(m)) = client.next().await.expect("stream ended")
                && let Some((_, body)) = m.get_best_body_cloned(vec![])
            {
                return (m.from.expect("from"), body);
            }
        }
    })
    .await
    .expect("no message")
}

// Current-thread runtime and unconstrained sends: tokio-xmpp 6.0.0 loses a wakeup when a send
// holds its stream lock while the reader polls (see tests/im_real_client.rs).
#[tokio::test]
async fn two_accounts_scram_over_starttls_exchange_messages() {
    let srv = TestServer::start();
    srv.add_user("alice", "alice-pw");
    srv.add_user("bob", "bob-pw");
    let c = connector(&srv);

    // The untrusted listener requires STARTTLS; SCRAM then succeeds, one mechanism at a time.
    let alice_jid = Jid::from_str("alice@localhost").unwrap();
    for mech in ["SCRAM-SHA-256", "SCRAM-SHA-1"] {
        try_sasl(&c, &alice_jid, "alice-pw", &[mech])
            .await
            .unwrap_or_else(|e| panic!("{mech}: {e:?}"));
        assert!(
            try_sasl(&c, &alice_jid, "wrong", &[mech]).await.is_err(),
            "{mech} accepted a wrong password"
        );
    }

    let mut alice = Client::new_with_connector(
        BareJid::from_str("alice@localhost").unwrap(),
        "alice-pw",
        c.clone(),
        Timeouts::tight(),
    );
    let mut bob = Client::new_with_connector(
        BareJid::from_str("bob@localhost").unwrap(),
        "bob-pw",
        c,
        Timeouts::tight(),
    );
    let a = wait_online(&mut alice, T).await.expect("alice online");
    let b = wait_online(&mut bob, T).await.expect("bob online");
    assert_eq!(a.to_bare().to_string(), "alice@localhost");

    let msg = Message::chat(Some(b.clone())).with_body(Lang::default(), "hello bob <&>".to_owned());
    tokio::task::unconstrained(alice.send_stanza(msg.into()))
        .await
        .expect("send");
    let (from, body) = next_body(&mut bob).await;
    assert_eq!((from, body.as_str()), (a.clone(), "hello bob <&>"));

    let reply = Message::chat(Some(a)).with_body(Lang::default(), "hi alice".to_owned());
    tokio::task::unconstrained(bob.send_stanza(reply.into()))
        .await
        .expect("send");
    let (from, body) = next_body(&mut alice).await;
    assert_eq!((from, body.as_str()), (b, "hi alice"));

    alice.send_end().await.expect("close alice");
    bob.send_end().await.expect("close bob");
}

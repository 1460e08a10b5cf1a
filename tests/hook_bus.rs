//! The hook bus as a module sees it (`wockd::core::hooks`): a hook registered at install time
//! runs at its point in priority order, may change the stanza or take it, and lifecycle events
//! reach the hooks of their type. The hooks here are the test's own, installed next to the
//! built-in modules exactly as a module's `install` would.

mod common;

use common::{Client, TestServer, is_result};
use wockd::core::{AccountDiscoInfo, Flow, Name, Point, To};
use wockd::xml::Element;

const NS: &str = "urn:test:hooks";

/// Adds `<seen xmlns='urn:test:hooks' by='{by}'/>` to the message.
fn mark(
    by: &'static str,
) -> impl Fn(&std::rc::Rc<wockd::core::Server>, &mut wockd::core::Routed<'_>) -> Flow {
    move |_, ev| {
        ev.stanza.push(Element::new("seen", NS).attr("by", by));
        Flow::Continue
    }
}

fn server() -> TestServer {
    let srv = TestServer::start_with(
        |_| {},
        |m| {
            // Out of registration order on purpose: the priority decides.
            m.hook(
                Point::Deliver(Name::Message, To::Bare),
                -500,
                mark("after-send"),
            );
            m.hook(
                Point::Deliver(Name::Message, To::Bare),
                75,
                mark("before-send"),
            );
            m.hook(Point::Deliver(Name::Message, To::Bare), 200, mark("first"));
            // Taken before routing: never delivered, answered by the hook.
            m.hook(Point::Pre(Name::Message, To::Any), 2000, |_, ev| {
                let taken =
                    ev.stanza.child_text("body", "jabber:client").as_deref() == Some("drop me");
                if !taken {
                    return Flow::Continue;
                }
                let mut note = Element::stanza("message").attr("type", "headline");
                note.push(Element::new("taken", NS));
                ev.reply(&note);
                Flow::Handled
            });
            m.on(0, |_, e: &mut AccountDiscoInfo| {
                e.features.push("urn:test:hooks#account")
            });
        },
    );
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    srv
}

fn online(srv: &TestServer, user: &str) -> Client {
    let mut c = Client::login(srv, user, "r");
    c.send("<presence/>");
    c.clear();
    c
}

#[test]
fn delivery_hooks_run_in_priority_order_around_the_send() {
    let srv = server();
    let mut alice = online(&srv, "alice");
    let mut bob = online(&srv, "bob");
    alice.send("<message to='bob@localhost' type='chat' id='m1'><body>hello</body></message>");
    let got = bob.wait(|s| s.starts_with("<message") && s.contains("id=\"m1\""));
    // Top-level stanzas inherit the stream's namespace; minidom wants it written.
    let doc: minidom::Element = got
        .replacen("<message", "<message xmlns='jabber:client'", 1)
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {got}"));
    let seen: Vec<&str> = doc
        .children()
        .filter(|c| c.is("seen", NS))
        .filter_map(|c| c.attr("by"))
        .collect();
    // 200 before the archive's stamp (50) and the send (0); −500 runs after the send.
    assert_eq!(seen, ["first", "before-send"], "{got}");
    assert!(
        doc.children().any(|c| c.is("stanza-id", "urn:xmpp:sid:0")),
        "the archive still stamps it: {got}"
    );
    alice.barrier();
}

#[test]
fn a_pre_hook_can_take_a_stanza_before_routing() {
    let srv = server();
    let mut alice = online(&srv, "alice");
    let mut bob = online(&srv, "bob");
    alice.send("<message to='bob@localhost' type='chat' id='d1'><body>drop me</body></message>");
    let note = alice.wait(|s| s.contains("<taken"));
    assert!(note.starts_with("<message"), "{note}");
    // A later message on the same path arrives; the taken one never did.
    alice.send("<message to='bob@localhost/r' type='chat' id='d2'><body>after</body></message>");
    bob.wait(|s| s.contains("id=\"d2\""));
    assert!(
        !bob.queue.iter().any(|s| s.contains("drop me")),
        "delivered although a hook took it: {:#?}",
        bob.queue
    );
}

#[test]
fn lifecycle_events_reach_their_hooks() {
    let srv = server();
    let mut alice = Client::login(&srv, "alice", "r");
    let info = alice.iq(
        "get",
        Some("alice@localhost"),
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    assert!(is_result(&info), "{info}");
    assert!(info.contains("var=\"urn:test:hooks#account\""), "{info}");
    // The built-in modules' features arrive the same way.
    assert!(info.contains("var=\"urn:xmpp:mam:2\""), "{info}");
    assert!(info.contains("type=\"pep\""), "{info}");
}

//! One-to-one messages both ways (RFC 6121 §5, XEP-0085 chat states).
//!
//! * Legacy → XMPP: libpurple's `write_im` (and `write_conv`, its fallback) with
//!   `PURPLE_MESSAGE_RECV` becomes a `chat` message from the contact JID, the markup reduced to
//!   a plain body. Every one goes through `ServiceHost::to_account` (the server's bare-JID route), which delivers to
//!   the user's devices or stores it in the mailbox when the user is offline — the legacy
//!   account stays connected meanwhile.
//! * Our own sends come back through `write_im` with `PURPLE_MESSAGE_SEND` and are dropped
//!   (the XMPP client has them). Messages the user sent from another legacy client arrive
//!   with `PURPLE_MESSAGE_SEND | PURPLE_MESSAGE_REMOTE_SEND` (also through `write_conv`) and
//!   become XEP-0280 `<sent/>` carbons to the user's carbon-enabled devices.
//! * XMPP → legacy: the body is escaped into libpurple markup and sent through the IM
//!   conversation (created if needed). Chat states `composing`/`paused`/`active` map to
//!   `serv_send_typing`; typing signals from the prpl map back (not stored: `no-store`).
//! * Errors libpurple writes into a conversation (`PURPLE_MESSAGE_ERROR`) become message
//!   errors from the contact.

use std::rc::Rc;

use jid::FullJid;
use rand::Rng;

use super::forms;
use super::purple::conversation::{self, Kind, MessageFlags};
use super::purple::markup::{html_to_text, text_to_html};
use super::purple::{Account, Conversation, Typing};
use super::{ServiceInfo, Transport, accounts, core, muc, text};
use crate::core::stanza::Condition;
use crate::router::ServiceHost;
use crate::server::Server;
use crate::xml::{Element, ns};

/// A fresh stanza id.
pub fn new_id() -> String {
    let n: u64 = rand::thread_rng().r#gen();
    format!("wt{n:016x}")
}

pub fn install_ui_ops() {
    conversation::set_ui_ops(
        conversation::UiOps {
            write_im,
            write_chat: muc::write_chat,
            write_conv,
            chat_add_users: muc::chat_add_users,
            chat_rename_user: muc::chat_rename_user,
            chat_remove_users: muc::chat_remove_users,
            destroy_conversation: muc::destroy_conversation,
        },
        conversation::Signals {
            typing: chat_state,
            chat_joined: muc::chat_joined,
            topic_changed: muc::topic_changed,
        },
    );
}

/// The peer name libpurple uses, as the contact's legacy name: XMPP resources stripped.
pub fn peer_name(protocol: &str, name: &str) -> String {
    if protocol == "prpl-jabber" {
        return name.split('/').next().unwrap_or(name).to_owned();
    }
    name.to_owned()
}

fn write_im(conv: Conversation, _who: &str, message: &str, flags: MessageFlags, mtime: i64) {
    let Some(acc) = conv.account() else { return };
    incoming(acc, &conv.name().unwrap_or_default(), message, flags, mtime);
}

/// The fallback writer. Only IM conversations get here: write_chat is implemented.
fn write_conv(conv: Conversation, name: &str, message: &str, flags: MessageFlags, mtime: i64) {
    if conv.kind() != Kind::Im {
        return;
    }
    let Some(acc) = conv.account() else { return };
    let peer = conv.name().unwrap_or_else(|| name.to_owned());
    incoming(acc, &peer, message, flags, mtime);
}

fn incoming(acc: Account, peer: &str, html: &str, flags: MessageFlags, mtime: i64) {
    let Some(server) = core::server() else { return };
    let t = Transport::get(&server);
    let Some(id) = t.id_of(acc) else { return };
    let (owner, protocol, service) = {
        let legacy = t.legacy.borrow();
        let Some(l) = legacy.get(&id) else { return };
        (l.owner.clone(), l.protocol.clone(), l.service.clone())
    };
    let name = peer_name(&protocol, peer);
    let Some(contact) = t.contact_jid(id, &name) else {
        tracing::warn!("legacy name {name:?} makes no valid JID; message dropped");
        return;
    };
    // Bells, IRC codes prpl-irc left, U+FFFF…: gone before anything is sent or archived.
    let html = &text::display(html);
    if flags.send() {
        if flags.remote_send() {
            sent_elsewhere(&server, &owner, &service, &contact, html);
        }
        return;
    }
    let text = html_to_text(html);
    if flags.error() {
        let mut m = Element::stanza("message")
            .attr("from", contact.to_string())
            .attr("to", owner.to_string())
            .attr("type", "error")
            .attr("id", new_id());
        m.push(crate::core::stanza::error_element(
            Condition::RecipientUnavailable.default_type(),
            Condition::RecipientUnavailable,
            Some(&text),
        ));
        server.to_available(&owner, &m);
        return;
    }
    if !flags.recv() || text.is_empty() {
        tracing::debug!(%contact, flags = flags.0, "system line in a conversation: {text}");
        return;
    }
    let mut m = Element::stanza("message")
        .attr("from", contact.to_string())
        .attr("to", owner.to_string())
        .attr("type", "chat")
        .attr("id", new_id())
        .child(Element::new("body", ns::CLIENT).text(text))
        .child(Element::new("active", forms::CHATSTATES));
    if let Some(x) = xhtml_im(html) {
        m.push(x);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // Messages the network held for us (offline messages, history) keep their time.
    if flags.delayed() || (mtime > 0 && now - mtime > 30) {
        m.push(
            Element::new("delay", forms::DELAY)
                .attr("from", service.as_str())
                .attr("stamp", rfc3339(mtime)),
        );
    }
    server.to_account(&owner, m);
}

/// XEP-0071 XHTML-IM for a libpurple message that carries formatting (bold, links, colours
/// from IRC's mIRC codes or another network's HTML); `None` for plain text. The XHTML comes
/// from libpurple's converter and goes out only if it parses as well-formed XML.
pub fn xhtml_im(html: &str) -> Option<Element> {
    if !html.contains('<') {
        return None; // text with character references only
    }
    let xhtml = super::purple::markup::html_to_xhtml(html);
    let wrapped = format!("<body xmlns='{}'>{xhtml}</body>", forms::XHTML);
    let body = crate::xml::parse::element(wrapped.as_bytes(), &Default::default()).ok()?;
    body.elements().next()?;
    Some(Element::new("html", forms::XHTML_IM).child(body))
}

/// The user's XHTML-IM body as markup for libpurple, if the message has one.
fn xhtml_body(el: &Element) -> Option<String> {
    let body = el
        .get_child("html", forms::XHTML_IM)?
        .get_child("body", forms::XHTML)?;
    let mut out = Vec::new();
    body.write_to(&mut out, forms::XHTML);
    let s = String::from_utf8(out).ok()?;
    // Inside the <body …>…</body> that write_to produced.
    let inner = s.get(s.find('>')? + 1..s.rfind("</body>")?)?;
    (!inner.trim().is_empty()).then(|| inner.to_owned())
}

/// The user wrote to `contact` from another client of the legacy network: the user's devices
/// get an XEP-0280 `<sent/>` carbon, as if a resource named after the service had sent it,
/// and the message is archived as sent by the user.
fn sent_elsewhere(
    server: &Rc<Server>,
    owner: &jid::BareJid,
    service: &str,
    contact: &jid::BareJid,
    html: &str,
) {
    let text = html_to_text(&text::display(html));
    let Ok(from) = FullJid::new(&format!("{owner}/{service}")) else {
        return;
    };
    let m = Element::stanza("message")
        .attr("from", from.to_string())
        .attr("to", contact.to_string())
        .attr("type", "chat")
        .attr("id", new_id())
        .child(Element::new("body", ns::CLIENT).text(text));
    // Sent carbons, and the archive keeps it, so devices that were offline see it when they
    // sync (XEP-0313).
    server.sent_elsewhere(&from, contact, &m);
}

/// UTC timestamp as XEP-0082 `DateTime`.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A chat message (or bare chat state) from the user to a legacy contact.
pub fn to_legacy(server: &Rc<Server>, info: &ServiceInfo, from: &FullJid, node: &str, el: Element) {
    let owner = from.to_bare();
    let t = Transport::get(server);
    let Some((id, name)) = t.resolve(&owner, &info.domain, node) else {
        return;
    };
    let Some(gc) = accounts::connection(server, id) else {
        return super::service::bounce(
            server,
            from,
            &el,
            Condition::RecipientUnavailable,
            &format!("{} is not connected", accounts::label(server, id)),
        );
    };
    let body = el.child_text("body", ns::CLIENT).filter(|b| !b.is_empty());
    let state = ["composing", "paused", "active", "inactive", "gone"]
        .into_iter()
        .find(|s| el.get_child(s, forms::CHATSTATES).is_some());
    if let Some(state) = state {
        let typing = match state {
            "composing" => Typing::Composing,
            "paused" => Typing::Paused,
            _ => Typing::Stopped,
        };
        // A body implies the user stopped typing; the prpl handles that itself.
        if body.is_none() {
            gc.send_typing(&name, typing);
        }
    }
    let Some(body) = body else { return };
    // The conversation is owned by libpurple (destroyed by it, never by us while in use).
    let conv = gc.account().and_then(|acc| {
        Conversation::find(acc, Kind::Im, &name).or_else(|| Conversation::new_im(acc, &name))
    });
    let Some(conv) = conv else {
        return super::service::bounce(
            server,
            from,
            &el,
            Condition::InternalServerError,
            "cannot open a conversation",
        );
    };
    // A lone CR would end the line for some prpls (IRC); the XHTML carries it unescaped.
    let markup = xhtml_body(&el).map_or_else(|| text_to_html(&body), |x| x.replace('\r', ""));
    conv.im_send(&markup);
}

/// A typing notification from a contact (not stored: `no-store`).
fn chat_state(acc: Account, name: &str, typing: Typing) {
    let state = match typing {
        Typing::Composing => "composing",
        Typing::Paused => "paused",
        Typing::Stopped => "active",
    };
    let Some(server) = core::server() else { return };
    let t = Transport::get(&server);
    let Some(id) = t.id_of(acc) else { return };
    let Some(owner) = t.legacy.borrow().get(&id).map(|l| l.owner.clone()) else {
        return;
    };
    let protocol = t
        .legacy
        .borrow()
        .get(&id)
        .map(|l| l.protocol.clone())
        .unwrap_or_default();
    let Some(contact) = t.contact_jid(id, &peer_name(&protocol, name)) else {
        return;
    };
    let m = Element::stanza("message")
        .attr("from", contact.to_string())
        .attr("to", owner.to_string())
        .attr("type", "chat")
        .child(Element::new(state, forms::CHATSTATES))
        .child(Element::new("no-store", "urn:xmpp:hints"));
    server.to_available(&owner, &m);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(
            peer_name("prpl-jabber", "bob@localhost/wockd"),
            "bob@localhost"
        );
        assert_eq!(peer_name("prpl-irc", "bob"), "bob");
    }
}

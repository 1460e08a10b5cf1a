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

use std::ffi::{c_char, c_void};
use std::rc::Rc;

use jid::FullJid;
use purple_sys as p;
use rand::Rng;

use super::ffi::{cstring, html_to_text, opt_string, string, text_to_html};
use super::forms;
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
    // SAFETY: leaked ui-ops set once on the main thread; signal handlers have the documented
    // signatures (conversation-signals: void (*)(PurpleAccount *, const char *name)).
    unsafe {
        p::purple_conversations_set_ui_ops(Box::leak(Box::new(p::PurpleConversationUiOps {
            write_im: Some(write_im),
            write_chat: Some(muc::write_chat),
            write_conv: Some(write_conv),
            chat_add_users: Some(muc::chat_add_users),
            chat_rename_user: Some(muc::chat_rename_user),
            chat_remove_users: Some(muc::chat_remove_users),
            destroy_conversation: Some(muc::destroy_conversation),
            ..Default::default()
        })));
        let h = p::purple_conversations_get_handle();
        core::connect_signal(h, "buddy-typing", typing as *const ());
        core::connect_signal(h, "buddy-typed", typed as *const ());
        core::connect_signal(h, "buddy-typing-stopped", typing_stopped as *const ());
    }
}

/// The peer name libpurple uses, as the contact's legacy name: XMPP resources stripped.
pub fn peer_name(protocol: &str, name: &str) -> String {
    if protocol == "prpl-jabber" {
        return name.split('/').next().unwrap_or(name).to_owned();
    }
    name.to_owned()
}

unsafe extern "C" fn write_im(
    conv: *mut p::PurpleConversation,
    _who: *const c_char,
    message: *const c_char,
    flags: p::PurpleMessageFlags,
    mtime: p::time_t,
) {
    super::ffi::guard("write_im", (), || {
        // SAFETY: conv is live during the ui-op.
        let (acc, name) = unsafe {
            (
                p::purple_conversation_get_account(conv),
                string(p::purple_conversation_get_name(conv)),
            )
        };
        incoming(acc, &name, &string(message), flags, mtime);
    })
}

unsafe extern "C" fn write_conv(
    conv: *mut p::PurpleConversation,
    name: *const c_char,
    _alias: *const c_char,
    message: *const c_char,
    flags: p::PurpleMessageFlags,
    mtime: p::time_t,
) {
    super::ffi::guard("write_conv", (), || {
        // SAFETY: as above. Only IM conversations get here: write_chat is implemented.
        unsafe {
            if p::purple_conversation_get_type(conv) != p::PURPLE_CONV_TYPE_IM {
                return;
            }
            let acc = p::purple_conversation_get_account(conv);
            let peer =
                opt_string(p::purple_conversation_get_name(conv)).unwrap_or_else(|| string(name));
            incoming(acc, &peer, &string(message), flags, mtime);
        }
    })
}

fn incoming(
    acc: *mut p::PurpleAccount,
    peer: &str,
    html: &str,
    flags: p::PurpleMessageFlags,
    mtime: i64,
) {
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
    if flags & p::PURPLE_MESSAGE_SEND != 0 {
        if flags & p::PURPLE_MESSAGE_REMOTE_SEND != 0 {
            sent_elsewhere(&server, &owner, &service, &contact, html);
        }
        return;
    }
    let text = html_to_text(html);
    if flags & p::PURPLE_MESSAGE_ERROR != 0 {
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
    if flags & p::PURPLE_MESSAGE_RECV == 0 || text.is_empty() {
        tracing::debug!(%contact, flags, "system line in a conversation: {text}");
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
    if flags & p::PURPLE_MESSAGE_DELAYED != 0 || (mtime > 0 && now - mtime > 30) {
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
    let xhtml = super::ffi::html_to_xhtml(html);
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
    let c_name = cstring(&name);
    let state = ["composing", "paused", "active", "inactive", "gone"]
        .into_iter()
        .find(|s| el.get_child(s, forms::CHATSTATES).is_some());
    if let Some(state) = state {
        let typing = match state {
            "composing" => p::PURPLE_TYPING,
            "paused" => p::PURPLE_TYPED,
            _ => p::PURPLE_NOT_TYPING,
        };
        // A body implies the user stopped typing; the prpl handles that itself.
        if body.is_none() {
            // SAFETY: main thread, live connection.
            unsafe { p::serv_send_typing(gc, c_name.as_ptr(), typing) };
        }
    }
    let Some(body) = body else { return };
    // SAFETY: main thread. The conversation is owned by libpurple (destroyed by it or by
    // muc::destroy_conversation's counterpart for IMs: never by us while in use).
    unsafe {
        let acc = p::purple_connection_get_account(gc);
        let mut conv =
            p::purple_find_conversation_with_account(p::PURPLE_CONV_TYPE_IM, c_name.as_ptr(), acc);
        if conv.is_null() {
            conv = p::purple_conversation_new(p::PURPLE_CONV_TYPE_IM, acc, c_name.as_ptr());
        }
        if conv.is_null() {
            return super::service::bounce(
                server,
                from,
                &el,
                Condition::InternalServerError,
                "cannot open a conversation",
            );
        }
        // A lone CR would end the line for some prpls (IRC); the XHTML carries it unescaped.
        let markup = xhtml_body(&el).map_or_else(|| text_to_html(&body), |x| x.replace('\r', ""));
        let html = cstring(&markup);
        p::purple_conv_im_send(p::purple_conversation_get_im_data(conv), html.as_ptr());
    }
}

fn chat_state(acc: *mut p::PurpleAccount, name: *const c_char, state: &str) {
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
    let Some(contact) = t.contact_jid(id, &peer_name(&protocol, &string(name))) else {
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

unsafe extern "C" fn typing(acc: *mut p::PurpleAccount, name: *const c_char, _data: *mut c_void) {
    super::ffi::guard("typing", (), || {
        chat_state(acc, name, "composing");
    })
}

unsafe extern "C" fn typed(acc: *mut p::PurpleAccount, name: *const c_char, _data: *mut c_void) {
    super::ffi::guard("typed", (), || {
        chat_state(acc, name, "paused");
    })
}

unsafe extern "C" fn typing_stopped(
    acc: *mut p::PurpleAccount,
    name: *const c_char,
    _data: *mut c_void,
) {
    super::ffi::guard("typing_stopped", (), || {
        chat_state(acc, name, "active");
    })
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

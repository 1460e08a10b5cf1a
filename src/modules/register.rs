//! XEP-0077 In-Band Registration (`jabber:iq:register`).
//!
//! * §3.1 account creation before authentication: only when `auth.registration` is on, and only
//!   on streams where passwords may be sent (TLS or trusted loopback); then the stream feature
//!   `<register xmlns='http://jabber.org/features/iq-register'/>` (§8) is offered too. With
//!   registration off the requests get `service-unavailable`, as for a server without it. A
//!   taken username gets `conflict`, missing fields or an invalid username `not-acceptable`.
//! * §3.2 cancellation (`<remove/>`, always available to a logged-in user for their own
//!   account): the account and everything stored for it are deleted, the request answered,
//!   then every stream of the account is closed with a `not-authorized` stream error.
//! * §3.3 password change (always available to a logged-in user): new SCRAM keys are derived
//!   for every supported hash with `auth.scram_iterations`; an empty password is refused
//!   (`bad-request`) and the old one kept. Other sessions stay logged in.
//! * A logged-in get answers `<registered/>` with the username.
//!
//! Data forms (§5) and out-of-band redirection are not offered.

use std::rc::Rc;

use jid::BareJid;

use crate::auth::scram::{self, Hash, ScramError, ScramKeys};
use crate::iq::Incoming;
use crate::server::Server;
use crate::stanza::{Condition, ErrorType, StreamError};
use crate::store::StoreError;
use crate::stream::Stream;
use crate::xml::{Element, ns};

use super::disco::{Addressee, addressee};

pub fn install(s: &mut Stream) {
    let stage = s.before_auth();
    stage.feature_when(Element::new("register", ns::REGISTER_FEATURE), |info| {
        info.registration && info.plaintext_ok
    });
    stage
        .iqs()
        .rule(ns::REGISTER, "query")
        .get(get_unauthenticated)
        .set(create_account);
    s.iqs()
        .rule(ns::REGISTER, "query")
        .get(get_registered)
        .set(change_or_remove);
}

/// New SCRAM verifiers for every hash the server supports.
fn derive_keys(server: &Server, password: &str) -> Result<Vec<(Hash, ScramKeys)>, ScramError> {
    let i = server.config.auth.scram_iterations;
    Ok(vec![
        (Hash::Sha1, scram::new_keys(Hash::Sha1, password, i)?),
        (Hash::Sha256, scram::new_keys(Hash::Sha256, password, i)?),
    ])
}

/// The password as sent (not trimmed: spaces may be part of it); `None` when absent or empty.
fn password(query: &Element) -> Option<String> {
    query
        .get_child("password", ns::REGISTER)
        .map(Element::text_content)
        .filter(|p| !p.is_empty())
}

// ---- before authentication --------------------------------------------------------------------

/// Registration is possible on this stream; otherwise the request has been answered.
fn registration_open(iq: Incoming) -> Option<(Incoming, String)> {
    let conn = iq.connection()?;
    let info = conn.info();
    if !info.registration {
        iq.fail(
            Condition::ServiceUnavailable,
            "in-band registration is disabled",
        );
        return None;
    }
    if !info.plaintext_ok {
        iq.error(ErrorType::Cancel, Condition::NotAllowed, "start TLS first");
        return None;
    }
    Some((iq, conn.domain()))
}

fn get_unauthenticated(iq: Incoming) {
    let Some((iq, _)) = registration_open(iq) else {
        return;
    };
    let q = Element::new("query", ns::REGISTER)
        .child(Element::new("instructions", ns::REGISTER).text("Choose a username and password."))
        .child(Element::new("username", ns::REGISTER))
        .child(Element::new("password", ns::REGISTER));
    iq.result(Some(q));
}

fn create_account(iq: Incoming) {
    let Some((iq, domain)) = registration_open(iq) else {
        return;
    };
    if iq.payload.get_child("remove", ns::REGISTER).is_some() {
        return iq.fail(
            Condition::UnexpectedRequest,
            "log in to cancel a registration",
        );
    }
    let username = iq
        .payload
        .child_text("username", ns::REGISTER)
        .unwrap_or_default();
    let (Some(password), false) = (password(&iq.payload), username.is_empty()) else {
        return iq.fail(
            Condition::NotAcceptable,
            "username and password are required",
        );
    };
    // Nodeprep through the jid crate; '@' or '/' would make it parse as another JID.
    let node = BareJid::new(&format!("{username}@{domain}"))
        .ok()
        .filter(|j| !username.contains(['@', '/']) && j.domain().as_str() == domain)
        .and_then(|j| j.node().map(|n| n.to_string()));
    let Some(node) = node else {
        return iq.fail(Condition::NotAcceptable, "invalid username");
    };
    let keys = match derive_keys(iq.server(), &password) {
        Ok(k) => k,
        Err(_) => return iq.fail(Condition::NotAcceptable, "this password cannot be used"),
    };
    match iq.server().store.create_account(&node, &domain, &keys) {
        Ok(()) => {
            tracing::info!(account = %format!("{node}@{domain}"), "account registered in-band");
            iq.result(None);
        }
        Err(StoreError::AccountExists) => iq.fail(Condition::Conflict, "the username is taken"),
        Err(e) => {
            tracing::error!("store error creating account: {e}");
            iq.fail(Condition::InternalServerError, "");
        }
    }
}

// ---- logged in --------------------------------------------------------------------------------

/// The sender's account when the request is for it (no `to`, a hosted domain or its own bare
/// JID); otherwise answers `forbidden`.
fn own_account(iq: Incoming) -> Option<(Incoming, BareJid)> {
    match (addressee(&iq), iq.account()) {
        (Addressee::Unaddressed | Addressee::Server | Addressee::Own, Some(me)) => Some((iq, me)),
        _ => {
            iq.fail(Condition::Forbidden, "");
            None
        }
    }
}

fn get_registered(iq: Incoming) {
    let Some((iq, me)) = own_account(iq) else {
        return;
    };
    let node = me.node().map(|n| n.to_string()).unwrap_or_default();
    let q = Element::new("query", ns::REGISTER)
        .child(Element::new("registered", ns::REGISTER))
        .child(Element::new("username", ns::REGISTER).text(node))
        .child(Element::new("password", ns::REGISTER));
    iq.result(Some(q));
}

fn change_or_remove(iq: Incoming) {
    let Some((iq, me)) = own_account(iq) else {
        return;
    };
    if iq.payload.get_child("remove", ns::REGISTER).is_some() {
        if iq.payload.elements().count() != 1 {
            return iq.fail(Condition::BadRequest, "<remove/> must be the only child");
        }
        return remove_account(iq, &me);
    }
    if !iq.connection().is_some_and(|c| c.info().plaintext_ok) {
        return iq.error(
            ErrorType::Modify,
            Condition::NotAuthorized,
            "this stream is not encrypted",
        );
    }
    let Some(password) = password(&iq.payload) else {
        return iq.fail(Condition::BadRequest, "a new password is required");
    };
    let node = me.node().map(|n| n.to_string()).unwrap_or_default();
    let domain = me.domain().to_string();
    if let Some(username) = iq.payload.child_text("username", ns::REGISTER) {
        let same = BareJid::new(&format!("{username}@{domain}")).is_ok_and(|j| j == me);
        if !same {
            return iq.fail(Condition::BadRequest, "the username is not yours");
        }
    }
    let keys = match derive_keys(iq.server(), &password) {
        Ok(k) => k,
        Err(_) => return iq.fail(Condition::NotAcceptable, "this password cannot be used"),
    };
    match iq.server().store.set_keys(&node, &domain, &keys) {
        Ok(()) => {
            tracing::info!(account = %me, "password changed in-band");
            iq.result(None);
        }
        Err(e) => {
            tracing::error!(account = %me, "store error changing password: {e}");
            iq.fail(Condition::InternalServerError, "");
        }
    }
}

fn remove_account(iq: Incoming, me: &BareJid) {
    let server: Rc<Server> = iq.server().clone();
    let node = me.node().map(|n| n.to_string()).unwrap_or_default();
    match server.store.delete_account(&node, me.domain().as_str()) {
        Ok(()) => {}
        Err(StoreError::NoSuchAccount) => return iq.fail(Condition::RegistrationRequired, ""),
        Err(e) => {
            tracing::error!(account = %me, "store error deleting account: {e}");
            return iq.fail(Condition::InternalServerError, "");
        }
    }
    tracing::info!(account = %me, "account deleted in-band");
    super::blocking::forget(&server, me);
    super::vcard::forget(&server, me);
    super::roster::forget(&server, me);
    crate::torrent::forget_account(&server, me);
    // The answer goes out before the stream error that ends the requesting stream.
    iq.result(None);
    let conns: Vec<_> = server
        .sessions
        .borrow()
        .of(me)
        .iter()
        .filter_map(|s| s.connection())
        .collect();
    for c in conns {
        c.close(Some((
            StreamError::NotAuthorized,
            Some("the account was deleted".into()),
        )));
    }
}

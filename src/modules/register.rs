//! XEP-0077 In-Band Registration (`jabber:iq:register`).
//!
//! * §3.1 account creation before authentication: only when `auth.registration` is on, and only
//!   on streams where passwords may be sent (TLS or trusted loopback); then the stream feature
//!   `<register xmlns='http://jabber.org/features/iq-register'/>` (§8) is offered too. With
//!   registration off the requests get `service-unavailable`, as for a server without it. A
//!   taken username gets `conflict`, missing fields or an invalid username `not-acceptable`.
//! * §3.2 cancellation (`<remove/>`, always available to a logged-in user for their own
//!   account): the account and everything stored for it are deleted, the request answered,
//!   then every stream of the account is closed with a `not-authorized` stream error and its
//!   hibernating (XEP-0198) sessions are ended, never to be resumed; what modules cache for it
//!   is dropped: `AccountDeleted` is fired, on which modules and services drop what they hold (legacy accounts of the
//!   IM transport, torrent jobs). A new account with the same name inherits nothing.
//! * §3.3 password change (always available to a logged-in user): new SCRAM keys are derived
//!   for every supported hash with `auth.scram_iterations`; an empty password is refused
//!   (`bad-request`) and the old one kept. The account's XEP-0484 FAST tokens are revoked and
//!   its other sessions (hibernating ones too) are closed with `not-authorized`; the session
//!   that made the change stays.
//!
//! Key derivation (PBKDF2) for creation and password change runs off the main loop
//! (src/auth/kdf.rs); the requesting stream handles nothing else until it is answered.
//! * A logged-in get answers `<registered/>` with the username.
//!
//! Data forms (§5) and out-of-band redirection are not offered.

use std::rc::Rc;

use jid::BareJid;

use crate::auth::kdf;
use crate::auth::scram::{Hash, ScramKeys};
use crate::core::Incoming;
use crate::core::Module;
use crate::core::stanza::{Condition, ErrorType, StreamError};
use crate::core::{AccountCreated, AccountDeleted, LoggedIn, PasswordChanged, Server, Tick};
use crate::store::StoreError;
use crate::xml::{Element, ns};

use crate::core::account::{Addressee, addressee};

pub fn install(s: &mut Module) {
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
    s.on(0, |server, e: &mut LoggedIn| note_login(server, &e.account));
    s.on(0, |server, _: &mut Tick| notice_outside_changes(server));
    // First of all: the account's streams close before services tear down what they hold.
    s.on(1000, |server, e: &mut AccountDeleted| {
        server.ext::<Outside>().keys.borrow_mut().remove(&e.account);
        end_sessions(server, &e.account, None, "the account was deleted");
    });
}

/// Derives new SCRAM verifiers for every supported hash on the key derivation pool, with the
/// requesting stream paused; `done` gets them, or has answered the request already (`None`).
fn derive_keys_then(
    iq: Incoming,
    password: String,
    done: impl FnOnce(Incoming, Vec<(Hash, ScramKeys)>) + 'static,
) {
    let Some(conn) = iq.connection() else { return };
    let server = iq.server().clone();
    let iterations = server.config.auth.scram_iterations;
    conn.kdf_then(
        &server,
        move || kdf::derive_all(&password, iterations),
        move |_, keys| match keys {
            Ok(Ok(keys)) => done(iq, keys),
            Ok(Err(_)) => iq.fail(Condition::NotAcceptable, "this password cannot be used"),
            Err(_) => iq.error(
                ErrorType::Wait,
                Condition::ResourceConstraint,
                "the server is busy; try again",
            ),
        },
    );
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
    // Spare the key derivation for a name that is taken (the store checks again).
    if iq
        .server()
        .store
        .account_exists(&node, &domain)
        .unwrap_or(false)
    {
        return iq.fail(Condition::Conflict, "the username is taken");
    }
    derive_keys_then(iq, password, move |iq, keys| {
        // Written by the store's writer thread; answered once committed.
        let server = iq.server().clone();
        let (n, d) = (node.clone(), domain.clone());
        server.store.write(
            move |tx| crate::store::accounts::create_account_tx(tx, &n, &d, &keys),
            move |done| match done {
                Ok(()) => {
                    tracing::info!(account = %format!("{node}@{domain}"), "account registered in-band");
                    let server = iq.server().clone();
                    iq.result(None);
                    if let Ok(account) = BareJid::new(&format!("{node}@{domain}")) {
                        server.hooks.fire(&server, &mut AccountCreated { account });
                    }
                }
                Err(StoreError::AccountExists) => {
                    iq.fail(Condition::Conflict, "the username is taken")
                }
                Err(e) => {
                    tracing::error!("store error creating account: {e}");
                    iq.fail(Condition::InternalServerError, "");
                }
            },
        );
    });
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
    let Some(this_stream) = iq.connection().map(|c| c.id) else {
        return;
    };
    derive_keys_then(iq, password, move |iq, keys| {
        let server = iq.server().clone();
        let (n, d) = (node.clone(), domain.clone());
        server.store.write(
            move |tx| crate::store::accounts::set_keys_tx(tx, &n, &d, &keys),
            move |done| password_set(iq, me, this_stream, done),
        );
    });
}

/// A password change committed (or failed): the answer, then the other streams end.
fn password_set(iq: Incoming, me: BareJid, this_stream: u64, done: Result<(), StoreError>) {
    let server = iq.server().clone();
    match done {
        Ok(()) => {
            // set_keys revoked the FAST tokens in the same transaction.
            tracing::info!(account = %me, "password changed in-band");
            note_login(&server, &me);
            iq.result(None);
            end_sessions(
                &server,
                &me,
                Some(this_stream),
                "the account's password was changed",
            );
            server.hooks.fire(
                &server,
                &mut PasswordChanged {
                    account: me.clone(),
                },
            );
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
    let account_id = server
        .store
        .account_id(&node, me.domain().as_str())
        .ok()
        .flatten();
    let domain = me.domain().to_string();
    let me = me.clone();
    // Written by the store's writer thread; answered (and the account's streams ended) once
    // committed.
    server.store.write(
        move |tx| crate::store::accounts::delete_account_tx(tx, &node, &domain),
        move |done| {
            let server = iq.server().clone();
            server.store.forget_account_ids();
            match done {
                Ok(()) => {}
                Err(StoreError::NoSuchAccount) => {
                    return iq.fail(Condition::RegistrationRequired, "");
                }
                Err(e) => {
                    tracing::error!(account = %me, "store error deleting account: {e}");
                    return iq.fail(Condition::InternalServerError, "");
                }
            }
            tracing::info!(account = %me, "account deleted in-band");
            // The answer goes out before the stream error that ends the requesting stream.
            iq.result(None);
            account_deleted(&server, &me, account_id);
        },
    );
}

/// Everything held for a deleted account goes: its streams are closed, its hibernating
/// sessions ended (so nothing can resume them), module caches dropped, and the services told
/// through the `AccountDeleted` event. The rows went with the account (`ON DELETE
/// CASCADE`: keys, FAST tokens, roster, mailbox, archive, vCard, private XML, PEP, legacy
/// accounts, torrent jobs).
///
/// Services register their hook where they are installed: the IM transport logs out and
/// removes the account's legacy accounts (`transport::install`); the torrent service stops the
/// account's jobs in the engine (`torrent::service::install`).
pub(crate) fn account_deleted(server: &Rc<Server>, account: &BareJid, account_id: Option<i64>) {
    server.hooks.fire(
        server,
        &mut AccountDeleted {
            account: account.clone(),
            id: account_id,
        },
    );
}

/// Ends every session of `account` except the one on connection `except`: live streams are
/// closed with a `not-authorized` stream error carrying `why`, hibernating (XEP-0198) ones are
/// ended for good (what they never had acknowledged goes back to the mailbox, as when the
/// resumption window runs out).
pub(crate) fn end_sessions(server: &Rc<Server>, account: &BareJid, except: Option<u64>, why: &str) {
    let conns: Vec<_> = server
        .sessions
        .borrow()
        .of(account)
        .iter()
        .filter_map(|s| s.connection())
        .filter(|c| Some(c.id) != except)
        .collect();
    for c in conns {
        if c.is_open() {
            c.close(Some((StreamError::NotAuthorized, Some(why.to_owned()))));
        } else {
            // Hibernating: no socket to write to; the session ends here.
            c.teardown();
        }
    }
}

// ---- changes made by the command line ---------------------------------------------------------

/// What [`notice_outside_changes`] remembers: the accounts' change counter at the last look,
/// and the id and SCRAM-SHA-256 `StoredKey` of every account that logged in (bounded by the
/// number of accounts).
#[derive(Default)]
struct Outside {
    version: std::cell::Cell<Option<i64>>,
    keys: std::cell::RefCell<std::collections::HashMap<BareJid, (i64, Vec<u8>)>>,
}

/// The account's id and current `StoredKey`; `Ok(None)` if it does not exist.
fn fingerprint(server: &Server, account: &BareJid) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
    let node = account.node().map(|n| n.to_string()).unwrap_or_default();
    let domain = account.domain().as_str();
    let Some(id) = server.store.account_id(&node, domain)? else {
        return Ok(None);
    };
    Ok(server
        .store
        .account_keys(&node, domain, Hash::Sha256)?
        .map(|k| (id, k.stored_key)))
}

/// Remembers what `account` authenticated against (called on every successful login), so
/// that a change made from the command line while it is online is noticed.
fn note_login(server: &Server, account: &BareJid) {
    match fingerprint(server, account) {
        Ok(Some(f)) => {
            server
                .ext::<Outside>()
                .keys
                .borrow_mut()
                .insert(account.clone(), f);
        }
        Ok(None) => {}
        Err(e) => tracing::error!(%account, "cannot look up account: {e}"),
    }
}

/// `wockd deluser` and `wockd passwd` change the database from another process. Called every
/// second: when an account was deleted or its verifiers changed since the last call (the
/// accounts' change counter, `Store::account_changes`; not `PRAGMA data_version`, which every
/// commit of the mailbox's writer changes, and which had this look up every account that ever
/// logged in, every second, under load),
/// every account that logged in is looked up again. A deleted one (or one deleted and made
/// again: its id changed) is torn down as by an in-band removal; one whose verifier changed has
/// its sessions closed as after an in-band password change (its FAST tokens went with the
/// change, see `Store::set_keys`).
fn notice_outside_changes(server: &Rc<Server>) {
    let version = match server.store.account_changes() {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("cannot read the accounts' change counter: {e}");
            return;
        }
    };
    let state = server.ext::<Outside>();
    if state.version.replace(Some(version)) == Some(version) {
        return;
    }
    let known: Vec<(BareJid, (i64, Vec<u8>))> = state
        .keys
        .borrow()
        .iter()
        .map(|(a, f)| (a.clone(), f.clone()))
        .collect();
    for (account, (id, key)) in known {
        match fingerprint(server, &account) {
            Err(e) => tracing::error!(%account, "cannot look up account: {e}"),
            Ok(Some((now_id, now_key))) if now_id == id => {
                if now_key != key {
                    tracing::info!(%account, "password changed outside the server");
                    state
                        .keys
                        .borrow_mut()
                        .insert(account.clone(), (id, now_key));
                    end_sessions(server, &account, None, "the account's password was changed");
                }
            }
            Ok(_) => {
                tracing::info!(%account, "account deleted outside the server");
                state.keys.borrow_mut().remove(&account);
                account_deleted(server, &account, Some(id));
            }
        }
    }
}

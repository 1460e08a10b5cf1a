//! XEP-0078 Non-SASL Authentication, exactly as the seed's protocol example: the feature
//! `http://jabber.org/features/iq-auth`, a get answered with empty username/password/resource,
//! a wrong password answered `modify`/`not-acceptable`, a right one with an empty result that
//! binds the stream. Plaintext only (no digest), and only where SASL PLAIN would be allowed;
//! the password is checked against the same stored SCRAM keys as SASL, off the main loop
//! (src/auth/kdf.rs). Wrong credentials count towards the same `auth.max_failures` as SASL:
//! at the limit the stream is closed with `policy-violation`.

use std::rc::Rc;

use jid::BareJid;

use crate::core::Incoming;
use crate::core::stanza::{Condition, ErrorType};
use crate::core::{Connection, Module};
use crate::xml::{Element, ns};

pub fn install(s: &mut Module) {
    let stage = s.before_auth();
    stage.feature_when(Element::new("auth", ns::IQ_AUTH_FEATURE), |info| {
        info.plaintext_ok
    });
    stage
        .iqs()
        .rule(ns::IQ_AUTH, "query")
        .get(get_iq_auth)
        .set(set_iq_auth);
}

fn allowed(iq: &Incoming) -> bool {
    iq.server().config.auth.legacy_auth && iq.connection().is_some_and(|c| c.info().plaintext_ok)
}

fn get_iq_auth(iq: Incoming) {
    if !allowed(&iq) {
        return iq.error(ErrorType::Cancel, Condition::NotAllowed, "use TLS and SASL");
    }
    let q = Element::new("query", ns::IQ_AUTH)
        .child(Element::new("username", ns::IQ_AUTH))
        .child(Element::new("password", ns::IQ_AUTH))
        .child(Element::new("resource", ns::IQ_AUTH));
    iq.result(Some(q));
}

fn set_iq_auth(iq: Incoming) {
    if !allowed(&iq) {
        return iq.error(ErrorType::Cancel, Condition::NotAllowed, "use TLS and SASL");
    }
    let Some(conn) = iq.connection() else { return };
    if !iq.server().auth_allowed(conn.peer.ip()) {
        return iq.error(
            ErrorType::Wait,
            Condition::ResourceConstraint,
            "too many failed logins from your address; try again later",
        );
    }
    let field = |name: &str| {
        iq.payload
            .child_text(name, ns::IQ_AUTH)
            .filter(|s| !s.is_empty())
    };
    let (Some(username), Some(password), Some(resource)) =
        (field("username"), field("password"), field("resource"))
    else {
        return iq.error(
            ErrorType::Modify,
            Condition::NotAcceptable,
            "username, password and resource are required",
        );
    };
    let Some(account) = BareJid::new(&format!("{username}@{}", conn.domain())).ok() else {
        return legacy_auth_failed(&conn, iq);
    };
    // PBKDF2 on a worker (unknown users against a dummy key, at the same cost); the stream's
    // input waits for the verdict, so the client's next stanzas are handled after it.
    let server = iq.server().clone();
    conn.check_password_then(
        &server,
        &account.clone(),
        &password,
        move |conn, verdict| {
            match verdict {
                Ok(true) => {}
                Ok(false) => return legacy_auth_failed(conn, iq),
                Err(_) => {
                    return iq.error(
                        ErrorType::Wait,
                        Condition::ResourceConstraint,
                        "too many logins in progress; try again",
                    );
                }
            }
            if let Some(server) = conn.server() {
                server.hooks.fire(
                    &server,
                    &mut crate::core::LoggedIn {
                        account: account.clone(),
                    },
                );
            }
            conn.set_authenticated(account);
            match conn.bind_resource(Some(&resource)) {
                Ok(full) => {
                    tracing::info!(%full, "authenticated (legacy iq-auth)");
                    iq.result(None);
                }
                Err((cond, text)) => iq.error(ErrorType::Modify, cond, text),
            }
        },
    );
}

/// A wrong username or password: `not-acceptable` (XEP-0078 §3), counted with the stream's
/// SASL failures; at `auth.max_failures` the stream is closed with `policy-violation`.
fn legacy_auth_failed(conn: &Rc<Connection>, iq: Incoming) {
    tracing::info!(conn = conn.id, peer = %conn.peer, "legacy auth failed");
    let server = iq.server().clone();
    iq.error(ErrorType::Modify, Condition::NotAcceptable, "");
    conn.count_auth_failure(&server);
}

//! SASL negotiation (RFC 6120 §6): SCRAM-SHA-256, SCRAM-SHA-1 and PLAIN against the stored
//! SCRAM keys. PLAIN is offered only where plaintext passwords may travel (TLS, or a listener
//! configured as trusted loopback).
//!
//! State owned here ([`SaslState`], the connection's `sasl` cell): the SCRAM exchange in
//! progress, whether PLAIN awaits its credentials, and the count of failed authentication
//! attempts on this stream — shared with SASL2 and XEP-0078, which count through
//! [`Connection::count_auth_failure`].

use std::rc::Rc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jid::BareJid;

use super::{Connection, StreamInfo};
use crate::auth::plain;
use crate::auth::scram::{Hash, ScramServer};
use crate::core::stanza::StreamError;
use crate::server::Server;
use crate::xml::{Element, ns};

/// Mechanisms in order of preference.
pub(crate) fn mechanisms(info: &StreamInfo) -> Vec<&'static str> {
    let mut m = vec!["SCRAM-SHA-256", "SCRAM-SHA-1"];
    if info.plaintext_ok {
        m.push("PLAIN");
    }
    m
}

/// Per-connection SASL state.
#[derive(Default)]
pub(crate) struct SaslState {
    /// A SCRAM exchange in progress (boxed: idle connections stay small).
    scram: Option<Box<Scram>>,
    /// SASL PLAIN was started without an initial response.
    plain_pending: bool,
    /// Failed authentication attempts on this stream (SASL, SASL2 and XEP-0078 alike).
    failures: u32,
}

impl SaslState {
    /// Forgets the exchange in progress, if any.
    fn reset(&mut self) {
        self.scram = None;
        self.plain_pending = false;
    }

    /// Counts one more failed attempt; returns how many there were.
    fn count_failure(&mut self) -> u32 {
        self.failures = self.failures.saturating_add(1);
        self.failures
    }
}

/// A SCRAM exchange in progress.
struct Scram {
    scram: ScramServer,
    hash: Hash,
    username: Option<String>,
    awaiting_final: bool,
}

/// What one client message of a SCRAM exchange came to.
pub(super) enum Step {
    /// Send this challenge; the exchange goes on.
    Challenge(Vec<u8>),
    /// Authenticated as this account; the server's final message goes with the success.
    Success(BareJid, Vec<u8>),
}

impl Scram {
    fn new(server: &Server, hash: Hash) -> Scram {
        Scram {
            scram: ScramServer::new(hash)
                .with_unknown_user_iterations(server.config.auth.scram_iterations),
            hash,
            username: None,
            awaiting_final: false,
        }
    }

    /// Takes the client-first message (looking up the account's keys in `domain`) or the
    /// client-final one. `Err` is the SASL failure condition.
    fn step(&mut self, server: &Server, domain: &str, data: &[u8]) -> Result<Step, &'static str> {
        if !self.awaiting_final {
            let first = self.scram.client_first(data).map_err(|e| e.condition())?;
            let Some(account) = account_for(&first.username, domain) else {
                return Err("not-authorized");
            };
            if let Some(authzid) = &first.authzid
                && BareJid::new(authzid).ok().as_ref() != Some(&account)
            {
                return Err("invalid-authzid");
            }
            let node = account.node().map(|n| n.to_string()).unwrap_or_default();
            let keys = server
                .store
                .account_keys(&node, domain, self.hash)
                .ok()
                .flatten();
            let reply = match keys {
                Some(k) => self.scram.server_first(k),
                // Same shape of answer for unknown users: existence is not revealed here.
                None => self.scram.server_first_unknown_user(&node),
            };
            self.username = Some(node);
            self.awaiting_final = true;
            Ok(Step::Challenge(reply))
        } else {
            let server_final = self.scram.client_final(data).map_err(|e| e.condition())?;
            let username = self.username.take().unwrap_or_default();
            let Some(account) = account_for(&username, domain) else {
                return Err("not-authorized");
            };
            Ok(Step::Success(account, server_final))
        }
    }
}

fn failure(condition: &str, text: Option<&str>) -> Element {
    let mut f = Element::new("failure", ns::SASL).child(Element::new(condition, ns::SASL));
    if let Some(t) = text {
        f.push(
            Element::new("text", ns::SASL)
                .attr("xml:lang", "en")
                .text(t),
        );
    }
    f
}

fn challenge(data: &[u8]) -> Element {
    Element::new("challenge", ns::SASL).text(B64.encode(data))
}

/// Decodes a SASL payload: empty element = no data, `=` = empty data (RFC 6120 §6.4.2).
fn decode_payload(el: &Element) -> Result<Option<Vec<u8>>, ()> {
    let text = el.text_content();
    let text = text.trim();
    match text {
        "" => Ok(None),
        "=" => Ok(Some(Vec::new())),
        t => B64.decode(t).map(Some).map_err(|_| ()),
    }
}

/// Normalises a SASL authcid into the account's local part (nodeprep via the `jid` crate).
fn account_for(username: &str, domain: &str) -> Option<BareJid> {
    BareJid::new(&format!("{username}@{domain}")).ok()
}

impl Connection {
    pub(crate) fn on_sasl(self: &Rc<Self>, el: Element) {
        let Some(server) = self.server() else { return };
        let info = self.info();
        if !info.plaintext_ok {
            // TLS is mandatory on this listener and was not negotiated.
            self.send(&failure("encryption-required", None));
            return;
        }
        match el.name.as_str() {
            // Too many failed logins from this address in the last minute: none is tried.
            "auth" if !server.auth_allowed(self.peer.ip()) => {
                self.send(&failure(
                    "temporary-auth-failure",
                    Some("too many failed logins from your address; try again later"),
                ));
            }
            "auth" => self.on_sasl_auth(&server, &info, &el),
            "response" => self.on_sasl_response(&server, &el),
            "abort" => {
                self.sasl.borrow_mut().scram = None;
                self.sasl_failed(&server, "aborted", None);
            }
            _ => self.close(Some((StreamError::UnsupportedStanzaType, None))),
        }
    }

    fn on_sasl_auth(self: &Rc<Self>, server: &Rc<Server>, info: &StreamInfo, el: &Element) {
        let mech = el.get_attr("mechanism").unwrap_or("");
        if !mechanisms(info).contains(&mech) {
            self.sasl_failed(server, "invalid-mechanism", None);
            return;
        }
        let Ok(initial) = decode_payload(el) else {
            self.sasl_failed(server, "incorrect-encoding", None);
            return;
        };
        if mech == "PLAIN" {
            match initial {
                Some(data) => self.sasl_plain(server, &data),
                None => {
                    // Empty challenge; the client answers with its credentials.
                    self.sasl.borrow_mut().plain_pending = true;
                    self.send(&Element::new("challenge", ns::SASL));
                }
            }
            return;
        }
        let Some(hash) = Hash::from_mechanism(mech) else {
            self.sasl_failed(server, "invalid-mechanism", None);
            return;
        };
        self.sasl.borrow_mut().scram = Some(Box::new(Scram::new(server, hash)));
        match initial {
            Some(data) => self.scram_step(server, &data),
            None => self.send(&Element::new("challenge", ns::SASL)),
        }
    }

    fn on_sasl_response(self: &Rc<Self>, server: &Rc<Server>, el: &Element) {
        let Ok(data) = decode_payload(el) else {
            self.sasl_failed(server, "incorrect-encoding", None);
            return;
        };
        let data = data.unwrap_or_default();
        if std::mem::take(&mut self.sasl.borrow_mut().plain_pending) {
            self.sasl_plain(server, &data);
            return;
        }
        if self.sasl.borrow().scram.is_none() {
            self.sasl_failed(server, "malformed-request", Some("no exchange in progress"));
            return;
        }
        self.scram_step(server, &data);
    }

    fn scram_step(self: &Rc<Self>, server: &Rc<Server>, data: &[u8]) {
        let domain = self.domain();
        let Some(mut sasl) = self.sasl.borrow_mut().scram.take() else {
            return;
        };
        match sasl.step(server, &domain, data) {
            Ok(Step::Challenge(reply)) => {
                self.send(&challenge(&reply));
                self.sasl.borrow_mut().scram = Some(sasl);
            }
            Ok(Step::Success(account, server_final)) => {
                self.sasl_succeeded(account, Some(&server_final));
            }
            Err(condition) => self.sasl_failed(server, condition, None),
        }
    }

    fn sasl_plain(self: &Rc<Self>, server: &Rc<Server>, data: &[u8]) {
        let domain = self.domain();
        let creds = match plain::parse(data) {
            Ok(c) => c,
            Err(_) => return self.sasl_failed(server, "malformed-request", None),
        };
        let Some(account) = account_for(creds.authcid, &domain) else {
            return self.sasl_failed(server, "not-authorized", None);
        };
        if let Some(authzid) = creds.authzid
            && BareJid::new(authzid).ok().as_ref() != Some(&account)
        {
            return self.sasl_failed(server, "invalid-authzid", None);
        }
        // PBKDF2 on a worker; this stream's input waits for the verdict.
        let who = account.clone();
        self.check_password_then(server, &who, creds.password, move |conn, verdict| {
            let Some(server) = conn.server() else { return };
            match verdict {
                Ok(true) => conn.sasl_succeeded(account, None),
                Ok(false) => conn.sasl_failed(&server, "not-authorized", None),
                Err(_) => conn.sasl_failed(&server, "temporary-auth-failure", None),
            }
        });
    }

    fn sasl_succeeded(self: &Rc<Self>, account: BareJid, additional: Option<&[u8]>) {
        tracing::info!(conn = self.id, %account, "authenticated");
        let mut success = Element::new("success", ns::SASL);
        if let Some(data) = additional {
            success
                .children
                .push(crate::xml::Node::Text(B64.encode(data)));
        }
        self.sasl.borrow_mut().scram = None;
        if let Some(server) = self.server() {
            server.hooks.fire(
                &server,
                &mut crate::core::LoggedIn {
                    account: account.clone(),
                },
            );
        }
        self.set_authenticated(account);
        self.send(&success);
        self.restart_stream();
    }

    fn sasl_failed(self: &Rc<Self>, server: &Rc<Server>, condition: &str, text: Option<&str>) {
        self.sasl.borrow_mut().reset();
        tracing::info!(conn = self.id, peer = %self.peer, "SASL failure: {condition}");
        self.send(&failure(condition, text));
        if condition != "aborted" {
            self.count_auth_failure(server);
        }
    }

    /// Counts a failed authentication attempt (SASL, SASL2 or XEP-0078: one budget per
    /// stream) and closes the stream with `policy-violation` once `auth.max_failures` is
    /// reached. Call after sending the failure itself.
    pub(crate) fn count_auth_failure(self: &Rc<Self>, server: &Server) {
        server.note_auth_failure(self.peer.ip());
        let failures = self.sasl.borrow_mut().count_failure();
        if failures >= server.config.auth.max_failures {
            self.close(Some((
                StreamError::PolicyViolation,
                Some("too many failed authentication attempts".into()),
            )));
        }
    }
}

//! Fast reconnects for phones: XEP-0388 Extensible SASL Profile (SASL2), XEP-0386 Bind 2 and
//! XEP-0484 FAST tokens. A resuming client authenticates, binds or resumes (XEP-0198) and gets
//! a fresh token in one round trip, with no stream restart.
//!
//! FAST uses `HT-SHA-256-NONE` (draft-schmaus-kitten-sasl-ht): the client proves the token
//! with HMAC(token, "Initiator"). Without channel binding that value is fixed per token, so the
//! server stores only a hash of it and HMAC(token, "Responder") sealed with it — never the
//! token nor the proof (see src/store/fast.rs). A password change revokes them all. Tokens live
//! 14 days, are bound to the client's user-agent id, and rotate through two slots ("new" and
//! "current") as XEP-0484 §7 describes.
//!
//! State owned here (`Sasl2State`, the connection's `sasl2` cell): the SCRAM exchange in
//! progress with the `<authenticate/>` request it answers. Failures count against the
//! stream's one budget in sasl.rs (`Connection::count_auth_failure`); binding, resumption
//! and client state go through the methods of negotiate.rs, sm.rs and csi.rs.

use std::rc::Rc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use jid::BareJid;
use rand::Rng;
use sha2::Sha256;

use super::Connection;
use super::sasl::Step;
use crate::auth::scram::{Hash, ScramServer};
use crate::core::stanza::StreamError;
use crate::server::Server;
use crate::store::fast as tokens;
use crate::xml::{Element, ns};

pub const NS: &str = ns::SASL2;
pub const BIND2: &str = "urn:xmpp:bind:0";
/// Inline features of Bind 2 besides stream management.
const CARBONS: &str = ns::CARBONS;
const CSI: &str = super::csi::NS;
pub const FAST: &str = ns::FAST;
const HT: &str = "HT-SHA-256-NONE";
const TOKEN_LIFETIME_SECS: i64 = 14 * 24 * 3600;

/// Per-connection SASL2 state.
#[derive(Default)]
pub(crate) struct Sasl2State {
    /// An exchange in progress (boxed: idle connections stay small).
    exchange: Option<Box<Exchange>>,
}

/// An exchange in progress, with what the client asked to happen on success.
struct Exchange {
    scram: ScramServer,
    hash: Hash,
    username: Option<String>,
    request: Element,
}

impl Exchange {
    fn new(server: &Server, hash: Hash, request: Element) -> Exchange {
        Exchange {
            scram: ScramServer::new(hash)
                .with_unknown_user_iterations(server.config.auth.scram_iterations),
            hash,
            username: None,
            request,
        }
    }

    /// Takes the client-first message (looking up the account's keys in `domain`) or the
    /// client-final one. `Err` is the SASL failure condition.
    fn step(&mut self, server: &Server, domain: &str, data: &[u8]) -> Result<Step, &'static str> {
        if self.username.is_none() {
            let first = self.scram.client_first(data).map_err(|e| e.condition())?;
            let account = BareJid::new(&format!("{}@{domain}", first.username)).ok();
            let node = account
                .as_ref()
                .and_then(|a| a.node().map(|n| n.to_string()))
                .unwrap_or_default();
            let keys = server
                .store
                .account_keys(&node, domain, self.hash)
                .ok()
                .flatten();
            let reply = match keys {
                Some(k) => self.scram.server_first(k),
                None => self.scram.server_first_unknown_user(&node),
            };
            self.username = Some(node);
            Ok(Step::Challenge(reply))
        } else {
            let server_final = self.scram.client_final(data).map_err(|e| e.condition())?;
            let node = self.username.as_deref().unwrap_or_default();
            let Some(account) = BareJid::new(&format!("{node}@{domain}")).ok() else {
                return Err("not-authorized");
            };
            Ok(Step::Success(account, server_final))
        }
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn failure(condition: &str, text: Option<&str>) -> Element {
    let mut f = Element::new("failure", NS).child(Element::new(condition, ns::SASL));
    if let Some(t) = text {
        f.push(Element::new("text", NS).text(t));
    }
    f
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The `<authentication/>` stream feature.
pub(crate) fn feature(mechanisms: &[&str]) -> Element {
    let mut auth = Element::new("authentication", NS);
    for m in mechanisms {
        auth.push(Element::new("mechanism", NS).text(*m));
    }
    let inline = Element::new("inline", NS)
        .child(
            Element::new("bind", BIND2).child(
                Element::new("inline", BIND2)
                    .child(Element::new("feature", BIND2).attr("var", super::sm::NS))
                    .child(Element::new("feature", BIND2).attr("var", CARBONS))
                    .child(Element::new("feature", BIND2).attr("var", CSI)),
            ),
        )
        .child(Element::new("sm", super::sm::NS))
        .child(Element::new("fast", FAST).child(Element::new("mechanism", FAST).text(HT)));
    auth.push(inline);
    auth
}

impl Connection {
    pub(crate) fn on_sasl2(self: &Rc<Self>, el: Element) {
        let Some(server) = self.server() else { return };
        if !self.info().plaintext_ok {
            return self.send(&failure("encryption-required", None));
        }
        match el.name.as_str() {
            "authenticate" if !server.auth_allowed(self.peer.ip()) => {
                self.send(&failure("temporary-auth-failure", None));
            }
            "authenticate" => self.sasl2_authenticate(&server, el),
            "response" => {
                let data = match B64.decode(el.text_content().trim()) {
                    Ok(d) => d,
                    Err(_) => return self.sasl2_failed(&server, "incorrect-encoding"),
                };
                self.sasl2_scram_step(&server, &data);
            }
            "abort" => {
                self.sasl2.borrow_mut().exchange = None;
                self.send(&failure("aborted", None));
            }
            _ => self.close(Some((StreamError::UnsupportedStanzaType, None))),
        }
    }

    fn sasl2_authenticate(self: &Rc<Self>, server: &Rc<Server>, el: Element) {
        let mech = el.get_attr("mechanism").unwrap_or("").to_owned();
        let initial = match el
            .get_child("initial-response", NS)
            .map(|i| i.text_content())
        {
            None => None,
            Some(t) => match B64.decode(t.trim()) {
                Ok(d) => Some(d),
                Err(_) => return self.sasl2_failed(server, "incorrect-encoding"),
            },
        };
        let info = self.info();
        if mech == HT {
            let Some(data) = initial else {
                return self.sasl2_failed(server, "malformed-request");
            };
            return self.fast_login(server, &el, &data);
        }
        if mech == "PLAIN" && info.plaintext_ok {
            let Some(data) = initial else {
                return self.sasl2_failed(server, "malformed-request");
            };
            let creds = match crate::auth::plain::parse(&data) {
                Ok(c) => c,
                Err(_) => return self.sasl2_failed(server, "malformed-request"),
            };
            let Some(account) = BareJid::new(&format!("{}@{}", creds.authcid, self.domain())).ok()
            else {
                return self.sasl2_failed(server, "not-authorized");
            };
            // PBKDF2 on a worker; this stream's input waits for the verdict.
            let who = account.clone();
            return self.check_password_then(server, &who, creds.password, move |conn, verdict| {
                let Some(server) = conn.server() else { return };
                match verdict {
                    Ok(true) => conn.sasl2_succeeded(&server, account, &el, None),
                    Ok(false) => conn.sasl2_failed(&server, "not-authorized"),
                    Err(_) => conn.sasl2_failed(&server, "temporary-auth-failure"),
                }
            });
        }
        let Some(hash) = Hash::from_mechanism(&mech) else {
            return self.sasl2_failed(server, "invalid-mechanism");
        };
        self.sasl2.borrow_mut().exchange = Some(Box::new(Exchange::new(server, hash, el)));
        match initial {
            Some(data) => self.sasl2_scram_step(server, &data),
            None => self.send(&Element::new("challenge", NS)),
        }
    }

    fn sasl2_scram_step(self: &Rc<Self>, server: &Rc<Server>, data: &[u8]) {
        let domain = self.domain();
        let Some(mut st) = self.sasl2.borrow_mut().exchange.take() else {
            return self.sasl2_failed(server, "malformed-request");
        };
        match st.step(server, &domain, data) {
            Ok(Step::Challenge(reply)) => {
                self.send(&Element::new("challenge", NS).text(B64.encode(reply)));
                self.sasl2.borrow_mut().exchange = Some(st);
            }
            Ok(Step::Success(account, server_final)) => {
                self.sasl2_succeeded(server, account, &st.request, Some(&server_final));
            }
            Err(condition) => self.sasl2_failed(server, condition),
        }
    }

    /// HT-SHA-256-NONE: `authcid NUL HMAC(token, "Initiator")`, checked against stored hashes.
    fn fast_login(self: &Rc<Self>, server: &Rc<Server>, el: &Element, data: &[u8]) {
        let Some(nul) = data.iter().position(|b| *b == 0) else {
            return self.sasl2_failed(server, "malformed-request");
        };
        let (user, proof) = (&data[..nul], &data[nul + 1..]);
        let Ok(user) = std::str::from_utf8(user) else {
            return self.sasl2_failed(server, "malformed-request");
        };
        let Some(account) = BareJid::new(&format!("{user}@{}", self.domain())).ok() else {
            return self.sasl2_failed(server, "not-authorized");
        };
        let Some(ua) = el
            .get_child("user-agent", NS)
            .and_then(|u| u.get_attr("id"))
            .map(str::to_owned)
        else {
            return self.sasl2_failed(server, "malformed-request");
        };
        let node = account.node().map(|n| n.to_string()).unwrap_or_default();
        match tokens::check(
            &server.store,
            &node,
            &self.domain(),
            &ua,
            HT,
            proof,
            now_secs(),
        ) {
            Ok(Some(ok)) => {
                let invalidate = el
                    .get_child("fast", FAST)
                    .is_some_and(|f| matches!(f.get_attr("invalidate"), Some("1" | "true")));
                // Written by the store's writer thread; the success waits for the commit.
                let (id, agent) = (ok.account, ua.clone());
                if ok.promote || invalidate {
                    let promote = ok.promote;
                    server.store.write(
                        move |tx| {
                            if promote {
                                tokens::promote(tx, id, &agent)?;
                            }
                            if invalidate {
                                tokens::forget_client(tx, id, &agent)?;
                            }
                            Ok(())
                        },
                        |done| {
                            if let Err(e) = done {
                                tracing::error!("FAST token update: {e}");
                            }
                        },
                    );
                }
                self.sasl2_succeeded(server, account, el, Some(&ok.responder));
            }
            Ok(None) => self.sasl2_failed(server, "not-authorized"),
            Err(e) => {
                tracing::error!("FAST token lookup: {e}");
                self.sasl2_failed(server, "temporary-auth-failure");
            }
        }
    }

    fn sasl2_failed(self: &Rc<Self>, server: &Rc<Server>, condition: &str) {
        self.sasl2.borrow_mut().exchange = None;
        self.send(&failure(condition, None));
        if condition != "aborted" {
            self.count_auth_failure(server);
        }
    }

    /// Success: authenticated, then (as the request asked) resumed or bound, and a token.
    fn sasl2_succeeded(
        self: &Rc<Self>,
        server: &Rc<Server>,
        account: BareJid,
        req: &Element,
        additional: Option<&[u8]>,
    ) {
        tracing::info!(conn = self.id, %account, "authenticated (SASL2)");
        self.sasl2.borrow_mut().exchange = None;
        server.hooks.fire(
            server,
            &mut crate::core::LoggedIn {
                account: account.clone(),
            },
        );
        self.set_authenticated(account.clone());
        let mut success = Element::new("success", NS);
        if let Some(data) = additional {
            success.push(Element::new("additional-data", NS).text(B64.encode(data)));
        }
        let ua = req
            .get_child("user-agent", NS)
            .and_then(|u| u.get_attr("id"))
            .map(str::to_owned);
        // A token is issued on request; FAST logins always rotate (XEP-0484 §6).
        let wants_token = req
            .get_child("request-token", FAST)
            .is_some_and(|r| r.get_attr("mechanism") == Some(HT))
            || (req.get_attr("mechanism") == Some(HT)
                && !req
                    .get_child("fast", FAST)
                    .is_some_and(|f| matches!(f.get_attr("invalidate"), Some("1" | "true"))));
        let token = match (&ua, wants_token) {
            (Some(ua), true) => self.issue_token(server, &account, ua),
            _ => None,
        };

        let mut after: Vec<Element> = Vec::new();
        if let Some(resume) = req.get_child("resume", super::sm::NS) {
            // XEP-0198 inside SASL2: <resumed/> (or <failed/>) goes inside <success/>.
            match self.resume_inline(resume) {
                Ok((resumed, replay)) => {
                    success.push(
                        Element::new("authorization-identifier", NS)
                            .text(self.jid().map(|j| j.to_string()).unwrap_or_default()),
                    );
                    success.push(resumed);
                    after = replay;
                }
                Err(failed) => {
                    success.push(
                        Element::new("authorization-identifier", NS).text(account.to_string()),
                    );
                    success.push(failed);
                }
            }
        } else if let Some(bind) = req.get_child("bind", BIND2) {
            let tag = bind.child_text("tag", BIND2).filter(|t| !t.is_empty());
            let suffix: u32 = rand::thread_rng().r#gen();
            let resource = match tag {
                Some(t) => format!("{t}.{suffix:08x}"),
                None => format!("wockd.{suffix:08x}"),
            };
            match self.bind_resource(Some(&resource)) {
                Ok(full) => {
                    success
                        .push(Element::new("authorization-identifier", NS).text(full.to_string()));
                    let mut bound = Element::new("bound", BIND2);
                    if bind.get_child("enable", super::sm::NS).is_some() {
                        bound.push(self.enable_sm_inline());
                    }
                    // XEP-0386 §4: carbons and client state set in the same round trip.
                    server.hooks.fire(
                        server,
                        &mut crate::core::Bind2Request {
                            jid: full.clone(),
                            request: bind.clone(),
                        },
                    );
                    if let Some(state) = bind
                        .elements()
                        .find(|c| c.ns == CSI && matches!(c.name.as_str(), "active" | "inactive"))
                    {
                        self.on_csi(state);
                    }
                    success.push(bound);
                }
                Err(_) => {
                    success.push(
                        Element::new("authorization-identifier", NS).text(account.to_string()),
                    );
                }
            }
        } else {
            success.push(Element::new("authorization-identifier", NS).text(account.to_string()));
        }
        if let Some((token, expiry)) = token {
            success.push(
                Element::new("token", FAST)
                    .attr("token", token)
                    .attr("expiry", expiry),
            );
        }
        self.send(&success);
        for el in &after {
            self.send(el);
        }
    }

    fn issue_token(
        &self,
        server: &Rc<Server>,
        account: &BareJid,
        ua: &str,
    ) -> Option<(String, String)> {
        let raw: [u8; 24] = rand::thread_rng().r#gen();
        let token = B64.encode(raw);
        let expires = now_secs() + TOKEN_LIFETIME_SECS;
        let node = account.node().map(|n| n.to_string()).unwrap_or_default();
        let initiator = hmac(token.as_bytes(), b"Initiator");
        let responder = hmac(token.as_bytes(), b"Responder");
        let id = match server.store.account_id(&node, account.domain().as_str()) {
            Ok(Some(id)) => id,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!("storing a FAST token: {e}");
                return None;
            }
        };
        let row = tokens::NewToken::new(id, ua, HT, &initiator, &responder, expires);
        // Written by the store's writer thread: the success that carries the token waits for
        // its commit, so a client never holds a token the database lacks.
        server.store.write(
            move |tx| row.insert(tx),
            |done| {
                if let Err(e) = done {
                    tracing::error!("storing a FAST token: {e}");
                }
            },
        );
        // The success may be sent after the input was handled (a password check runs on
        // another thread): it waits for this write all the same.
        self.note_write();
        Some((token, crate::core::time::datetime(expires * 1_000_000)))
    }
}

//! XEP-0115 Entity Capabilities, as far as PEP's filtered notifications need them
//! (XEP-0163 §4, XEP-0060 §9.2): which `<node>+notify` features each available resource
//! advertises.
//!
//! A resource's available presence carries `<c node ver hash/>`. Unknown `ver`s are resolved
//! with a disco#info query to the resource (`node#ver`, §6.2); an answer whose features hash
//! to `ver` (§5.1, with the §5.4 checks) is cached for every later resource advertising the same
//! `ver`, one that does not (or legacy caps without `hash`) counts only for the resource
//! asked. Resources waiting for the same `ver` share one query. Once a resource's interest
//! is known, it is sent the last items of the nodes it newly wants (XEP-0163 §4.3.2).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::{Rc, Weak};
use std::time::Duration;

use base64::Engine;
use jid::{BareJid, FullJid};
use sha1::Digest;

use crate::core::Server;
use crate::xml::{Element, ns};

/// Node names a resource wants notifications for (its `+notify` features, suffix removed).
pub type Interest = BTreeSet<String>;

/// Verified `ver`s kept; beyond this the cache starts again (client versions churn slowly).
const MAX_CACHED: usize = 4096;
/// After this, a `ver` whose query got no answer may be asked about again.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// What a presence's `<c/>` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapsKey {
    pub node: String,
    pub ver: String,
    /// `None` for legacy (pre-1.5) caps.
    pub hash: Option<String>,
}

impl CapsKey {
    pub fn of_presence(el: &Element) -> Option<CapsKey> {
        let c = el.get_child("c", ns::CAPS)?;
        let node = c.get_attr("node").filter(|n| !n.is_empty())?;
        let ver = c.get_attr("ver").filter(|v| !v.is_empty())?;
        Some(CapsKey {
            node: node.to_owned(),
            ver: ver.to_owned(),
            hash: c.get_attr("hash").map(str::to_owned),
        })
    }

    /// The key of the shared cache: only `ver`s this server can verify.
    fn shared(&self) -> Option<(String, String)> {
        let hash = self.hash.as_deref()?;
        matches!(hash, "sha-1" | "sha-256").then(|| (hash.to_owned(), self.ver.clone()))
    }
}

struct SessionCaps {
    key: Option<CapsKey>,
    /// Available with a non-negative priority: may get notifications (XEP-0163 §4.3.1).
    eligible: bool,
    /// Its interest; empty until resolved.
    notify: Rc<Interest>,
    /// Nodes whose last items it has been sent (or was not eligible for) since it became
    /// available.
    delivered: Rc<Interest>,
}

/// Module state (`server.ext::<Caps>()`).
#[derive(Default)]
pub struct Caps {
    verified: RefCell<HashMap<(String, String), Rc<Interest>>>,
    /// Queries under way by shared key, with the resources waiting for them.
    pending: RefCell<HashMap<(String, String), Vec<FullJid>>>,
    sessions: RefCell<HashMap<FullJid, SessionCaps>>,
}

/// An available presence from `from` (`initial`: it was not available before). Records its
/// caps; when its interest is known (now or after the disco query) the last items it newly
/// wants are delivered through `super::notify::send_last_items`.
pub fn available(server: &Rc<Server>, from: &FullJid, el: &Element, initial: bool, eligible: bool) {
    let key = CapsKey::of_presence(el);
    let state = server.ext::<Caps>();
    let known = {
        let mut sessions = state.sessions.borrow_mut();
        let entry = sessions.entry(from.clone()).or_insert_with(|| SessionCaps {
            key: None,
            eligible: false,
            notify: Rc::default(),
            delivered: Rc::default(),
        });
        if initial {
            // Newly available: everything it wants is new to it (§4.3.2).
            entry.key = None;
            entry.notify = Rc::default();
            entry.delivered = Rc::default();
        }
        let was_eligible = entry.eligible;
        entry.eligible = eligible;
        if entry.key != key {
            entry.key = key.clone();
            entry.notify = Rc::default();
            None
        } else if eligible && !was_eligible && !entry.notify.is_empty() {
            // Same caps, but only now with a non-negative priority.
            Some(entry.notify.clone())
        } else {
            // Unchanged, or still being resolved (the answer does the rest).
            return;
        }
    };
    let Some(key) = key else { return };
    let cached = known.or_else(|| {
        key.shared()
            .and_then(|k| state.verified.borrow().get(&k).cloned())
    });
    match cached {
        Some(interest) => apply(server, from, &key, interest),
        None => resolve(server, from, &key),
    }
}

/// The resource is no longer available (unavailable presence or its session ended).
pub fn forget(server: &Server, jid: &FullJid) {
    server.ext::<Caps>().sessions.borrow_mut().remove(jid);
}

/// The eligible resources of `user` whose interest is known, with that interest.
pub fn interested_resources(server: &Server, user: &BareJid) -> Vec<(FullJid, Rc<Interest>)> {
    server
        .ext::<Caps>()
        .sessions
        .borrow()
        .iter()
        .filter(|(jid, s)| s.eligible && !s.notify.is_empty() && jid.to_bare() == *user)
        .map(|(jid, s)| (jid.clone(), s.notify.clone()))
        .collect()
}

/// Whether `jid` is available with a non-negative priority and wants notifications of `node`.
pub fn wants(server: &Server, jid: &FullJid, node: &str) -> bool {
    server
        .ext::<Caps>()
        .sessions
        .borrow()
        .get(jid)
        .is_some_and(|s| s.eligible && s.notify.contains(node))
}

/// Records `interest` for `jid` (if it still advertises `key`) and sends the last items of
/// the nodes it did not have yet.
fn apply(server: &Rc<Server>, jid: &FullJid, key: &CapsKey, interest: Rc<Interest>) {
    let fresh: Interest = {
        let state = server.ext::<Caps>();
        let mut sessions = state.sessions.borrow_mut();
        let Some(s) = sessions.get_mut(jid) else {
            return;
        };
        if s.key.as_ref() != Some(key) {
            return;
        }
        s.notify = interest.clone();
        if !s.eligible {
            return;
        }
        let fresh = interest.difference(&s.delivered).cloned().collect();
        s.delivered = interest;
        fresh
    };
    if !fresh.is_empty() {
        super::notify::send_last_items(server, jid, &fresh);
    }
}

/// Asks `jid` what its caps mean, sharing a query under way for the same verifiable `ver`.
fn resolve(server: &Rc<Server>, jid: &FullJid, key: &CapsKey) {
    let state = server.ext::<Caps>();
    let shared = key.shared();
    if let Some(k) = &shared {
        let mut pending = state.pending.borrow_mut();
        if let Some(waiting) = pending.get_mut(k) {
            waiting.push(jid.clone());
            return;
        }
        pending.insert(k.clone(), vec![jid.clone()]);
        let weak: Weak<Server> = Rc::downgrade(server);
        let k = k.clone();
        server.after(QUERY_TIMEOUT, move || {
            if let Some(server) = weak.upgrade()
                && server
                    .ext::<Caps>()
                    .pending
                    .borrow_mut()
                    .remove(&k)
                    .is_some()
            {
                tracing::debug!(ver = %k.1, "no answer to a caps query");
            }
        });
    }
    query(server, jid, key, shared);
}

fn query(server: &Rc<Server>, jid: &FullJid, key: &CapsKey, shared: Option<(String, String)>) {
    let iq = Element::stanza("iq")
        .attr("type", "get")
        .attr("from", jid.domain().as_str())
        .child(
            Element::new("query", ns::DISCO_INFO).attr("node", format!("{}#{}", key.node, key.ver)),
        );
    let asked = jid.clone();
    let key = key.clone();
    server.send_iq(
        jid,
        iq,
        Box::new(move |server, reply| answered(server, &asked, &key, shared, &reply)),
    );
}

fn answered(
    server: &Rc<Server>,
    asked: &FullJid,
    key: &CapsKey,
    shared: Option<(String, String)>,
    reply: &Element,
) {
    let state = server.ext::<Caps>();
    let result = (reply.get_attr("type") == Some("result"))
        .then(|| reply.get_child("query", ns::DISCO_INFO))
        .flatten();
    let interest = Rc::new(result.map(notify_nodes).unwrap_or_default());
    let waiting = shared
        .as_ref()
        .and_then(|k| state.pending.borrow_mut().remove(k))
        .unwrap_or_default();
    let verified = match (&shared, result) {
        (Some((hash, ver)), Some(q)) => verify(hash, ver, q),
        _ => false,
    };
    if let (true, Some(k)) = (verified, shared.clone()) {
        let mut cache = state.verified.borrow_mut();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(k, interest.clone());
        drop(cache);
        for jid in waiting.iter().chain(std::iter::once(asked)) {
            apply(server, jid, key, interest.clone());
        }
    } else {
        if shared.is_some() && result.is_some() {
            tracing::debug!(%asked, ver = %key.ver, "caps answer does not match its hash; used for that resource only");
        }
        apply(server, asked, key, interest);
        // The others advertised the same `ver` but may mean something else by it.
        for jid in waiting.iter().filter(|j| *j != asked) {
            query(server, jid, key, None);
        }
    }
}

/// The nodes named by `+notify` features in a disco#info result.
fn notify_nodes(query: &Element) -> Interest {
    query
        .elements()
        .filter(|f| f.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.get_attr("var")?.strip_suffix("+notify"))
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A form field of an extended disco#info result: `var` and its values.
type Field = (String, Vec<String>);

/// XEP-0115 §5.1 verification string of a disco#info result; `None` when §5.4 says the
/// result must not be used for caching (duplicate identities, features or form types).
pub fn ver_string(query: &Element) -> Option<String> {
    let mut identities = Vec::new();
    let mut features = Vec::new();
    // (FORM_TYPE, [(var, values)])
    let mut forms: Vec<(String, Vec<Field>)> = Vec::new();
    for el in query.elements() {
        if el.is("identity", ns::DISCO_INFO) {
            let attr = |k| el.get_attr(k).unwrap_or("");
            identities.push((
                attr("category"),
                attr("type"),
                attr("xml:lang"),
                attr("name"),
            ));
        } else if el.is("feature", ns::DISCO_INFO) {
            features.push(el.get_attr("var").unwrap_or(""));
        } else if el.is("x", ns::DATA_FORMS) {
            let mut form_type = None;
            let mut fields = Vec::new();
            for f in el.elements().filter(|f| f.is("field", ns::DATA_FORMS)) {
                let values: Vec<String> = f
                    .elements()
                    .filter(|v| v.is("value", ns::DATA_FORMS))
                    .map(Element::text_content)
                    .collect();
                let var = f.get_attr("var").unwrap_or("");
                if var == "FORM_TYPE" {
                    if f.get_attr("type") == Some("hidden") {
                        form_type = values.into_iter().next();
                    }
                } else {
                    fields.push((var.to_owned(), values));
                }
            }
            // §5.4 3.6: a form without a hidden FORM_TYPE is ignored.
            if let Some(t) = form_type {
                forms.push((t, fields));
            }
        }
    }
    identities.sort();
    features.sort();
    forms.sort_by(|a, b| a.0.cmp(&b.0));
    let dup_identity = identities
        .windows(2)
        .any(|w| (w[0].0, w[0].1, w[0].2) == (w[1].0, w[1].1, w[1].2));
    let dup_feature = features.windows(2).any(|w| w[0] == w[1]);
    let dup_form = forms.windows(2).any(|w| w[0].0 == w[1].0);
    if dup_identity || dup_feature || dup_form {
        return None;
    }
    let mut s = String::new();
    for (category, kind, lang, name) in identities {
        s.push_str(&format!("{category}/{kind}/{lang}/{name}<"));
    }
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    for (form_type, mut fields) in forms {
        s.push_str(&form_type);
        s.push('<');
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        for (var, mut values) in fields {
            s.push_str(&var);
            s.push('<');
            values.sort();
            for v in values {
                s.push_str(&v);
                s.push('<');
            }
        }
    }
    Some(s)
}

/// True when the disco#info result hashes to `ver` with `hash`.
pub fn verify(hash: &str, ver: &str, query: &Element) -> bool {
    let Some(s) = ver_string(query) else {
        return false;
    };
    let digest = match hash {
        "sha-1" => sha1::Sha1::digest(s.as_bytes()).to_vec(),
        "sha-256" => sha2::Sha256::digest(s.as_bytes()).to_vec(),
        _ => return false,
    };
    base64::engine::general_purpose::STANDARD.encode(digest) == ver
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disco(children: Vec<Element>) -> Element {
        let mut q = Element::new("query", ns::DISCO_INFO);
        for c in children {
            q.push(c);
        }
        q
    }

    fn feature(var: &str) -> Element {
        Element::new("feature", ns::DISCO_INFO).attr("var", var)
    }

    #[test]
    fn xep_0115_simple_example() {
        // §5.2.
        let q = disco(vec![
            Element::new("identity", ns::DISCO_INFO)
                .attr("category", "client")
                .attr("type", "pc")
                .attr("name", "Exodus 0.9.1"),
            feature("http://jabber.org/protocol/muc"),
            feature("http://jabber.org/protocol/disco#info"),
            feature("http://jabber.org/protocol/caps"),
            feature("http://jabber.org/protocol/disco#items"),
        ]);
        assert!(verify("sha-1", "QgayPKawpkPSDYmwT/WM94uAlu0=", &q));
        assert!(!verify("sha-1", "QgayPKawpkPSDYmwT/WM94uAlu1=", &q));
        assert!(!verify("md5", "QgayPKawpkPSDYmwT/WM94uAlu0=", &q));
    }

    #[test]
    fn xep_0115_complex_example() {
        // §5.3.
        let field = |var: &str, values: &[&str]| {
            let mut f = Element::new("field", ns::DATA_FORMS).attr("var", var);
            for v in values {
                f.push(Element::new("value", ns::DATA_FORMS).text(*v));
            }
            f
        };
        let q = disco(vec![
            Element::new("identity", ns::DISCO_INFO)
                .attr("xml:lang", "en")
                .attr("category", "client")
                .attr("name", "Psi 0.11")
                .attr("type", "pc"),
            Element::new("identity", ns::DISCO_INFO)
                .attr("xml:lang", "el")
                .attr("category", "client")
                .attr("name", "Ψ 0.11")
                .attr("type", "pc"),
            feature("http://jabber.org/protocol/caps"),
            feature("http://jabber.org/protocol/disco#info"),
            feature("http://jabber.org/protocol/disco#items"),
            feature("http://jabber.org/protocol/muc"),
            Element::new("x", ns::DATA_FORMS)
                .attr("type", "result")
                .child(
                    field("FORM_TYPE", &["urn:xmpp:dataforms:softwareinfo"]).attr("type", "hidden"),
                )
                .child(field("ip_version", &["ipv4", "ipv6"]))
                .child(field("os", &["Mac"]))
                .child(field("os_version", &["10.5.1"]))
                .child(field("software", &["Psi"]))
                .child(field("software_version", &["0.11"])),
        ]);
        assert!(verify("sha-1", "q07IKJEyjvHSyhy//CH0CxmKi8w=", &q));
    }

    #[test]
    fn duplicates_are_not_verifiable_and_notify_nodes_are_found() {
        let q = disco(vec![feature("a"), feature("a")]);
        assert_eq!(ver_string(&q), None);
        let q = disco(vec![
            feature("urn:xmpp:avatar:metadata+notify"),
            feature("urn:xmpp:avatar:metadata"),
            feature("+notify"),
        ]);
        assert_eq!(
            notify_nodes(&q).into_iter().collect::<Vec<_>>(),
            ["urn:xmpp:avatar:metadata"]
        );
    }

    #[test]
    fn caps_of_presence() {
        let p = Element::stanza("presence").child(
            Element::new("c", ns::CAPS)
                .attr("node", "n")
                .attr("ver", "v")
                .attr("hash", "sha-1"),
        );
        let k = CapsKey::of_presence(&p).unwrap();
        assert_eq!(k.shared(), Some(("sha-1".into(), "v".into())));
        let legacy = Element::stanza("presence").child(
            Element::new("c", ns::CAPS)
                .attr("node", "n")
                .attr("ver", "1.0"),
        );
        assert_eq!(CapsKey::of_presence(&legacy).unwrap().shared(), None);
        assert_eq!(CapsKey::of_presence(&Element::stanza("presence")), None);
    }
}

//! The service JID of each network (e.g. `irc.localhost`), written against
//! [`crate::router::Service`] — the shape of an XEP-0114 component — so the transport could
//! later run attached to another server.
//!
//! * XEP-0030: identity `gateway/<type>` (and `conference/text`), features; items: the
//!   user's rooms, and the XEP-0050 command node.
//! * XEP-0100 §6.3 `jabber:iq:gateway`: prompt → contact JID, legacy name escaped per
//!   XEP-0106.
//! * XEP-0077 with an XEP-0004 form (FORM_TYPE `jabber:iq:register`) generated from the
//!   prpl's user splits and protocol options; the legacy `<username/>`/`<password/>` fields
//!   too. Each registration with a new legacy username adds an account (several per user);
//!   the same username updates it; `<remove/>` removes all of the user's accounts here.
//! * Routing of everything else addressed to `*@service` to contacts, messages, rooms.
//! * The service JID's presence tells the user the state of their accounts.

use std::collections::BTreeMap;
use std::rc::Rc;

use jid::{BareJid, FullJid, Jid};

use super::accounts::{self, FieldKind};
use super::forms::{self, FormField};
use super::{
    LinkState, ServiceInfo, Transport, adhoc, contacts, escape, messages, muc, requests,
    roster_bridge,
};
use crate::core::stanza::{Condition, error_reply};
use crate::router::Service;
use crate::router::ServiceHost;
use crate::server::Server;
use crate::xml::Element;

/// Describes a configured service from its prpl; `None` if the plugin is missing.
pub fn describe(
    domain: &str,
    prpl: &str,
    name: Option<String>,
    defaults: BTreeMap<String, String>,
) -> Option<ServiceInfo> {
    let plugin = super::purple::prpl::Prpl::find(prpl)?;
    let plugin_name = super::text::line(&plugin.name());
    let kind = match prpl {
        "prpl-irc" => "irc".to_owned(),
        "prpl-jabber" => "xmpp".to_owned(),
        "prpl-gg" => "gadu-gadu".to_owned(),
        "prpl-simple" => "sip".to_owned(),
        other => other.trim_start_matches("prpl-").to_owned(),
    };
    Some(ServiceInfo {
        domain: domain.to_owned(),
        prpl: prpl.to_owned(),
        name: name.unwrap_or_else(|| format!("{plugin_name} gateway")),
        kind,
        defaults,
        allow_private: false,
    })
}

/// The router's handle on one service domain.
pub struct Gateway {
    pub domain: String,
}

impl Service for Gateway {
    fn handle(&self, server: &Rc<Server>, stanza: Element, from: &FullJid) {
        let Some(info) = Transport::get(server).service(&self.domain) else {
            return;
        };
        let to = match stanza.get_attr("to").map(Jid::new) {
            Some(Ok(j)) => j,
            _ => return bounce(server, from, &stanza, Condition::JidMalformed, "bad 'to'"),
        };
        match stanza.name.as_str() {
            "iq" => iq(server, &info, from, &to, stanza),
            "message" => message(server, &info, from, &to, stanza),
            "presence" => presence(server, &info, from, &to, stanza),
            _ => {}
        }
        // Whatever that handed to prpl-irc goes out now, not at its next queue tick.
        let t = Transport::get(server);
        for id in t.accounts_of(&from.to_bare(), &self.domain) {
            let acc = t.legacy.borrow().get(&id).map(|l| l.account);
            if let Some(acc) = acc {
                super::purple::eventloop::flush_send_queue(acc);
            }
        }
    }
}

/// Sends an error reply for `stanza` back to its sender.
pub fn bounce(server: &Rc<Server>, from: &FullJid, stanza: &Element, cond: Condition, text: &str) {
    if let Some(e) = error_reply(stanza, cond.default_type(), cond, Some(text)) {
        server.to_session(from, &e);
    }
}

/// Sends the result of IQ `req` with `payload` (for answers given on a later loop turn).
pub fn reply(server: &Rc<Server>, from: &FullJid, req: &Element, payload: Element) {
    result(server, from, req, Some(payload))
}

fn result(server: &Rc<Server>, from: &FullJid, req: &Element, payload: Option<Element>) {
    let mut r = Element::stanza("iq").attr("type", "result");
    if let Some(id) = req.get_attr("id") {
        r.set_attr("id", id);
    }
    if let Some(to) = req.get_attr("to") {
        r.set_attr("from", to);
    }
    r.set_attr("to", from.to_string());
    if let Some(p) = payload {
        r.push(p);
    }
    server.to_session(from, &r);
}

fn iq(server: &Rc<Server>, info: &ServiceInfo, from: &FullJid, to: &Jid, el: Element) {
    let kind = el.get_attr("type").unwrap_or("");
    if !matches!(kind, "get" | "set") {
        // Responses to IQs the transport sent: none are outstanding today.
        return;
    }
    let Some(q) = el.elements().next().cloned() else {
        return bounce(
            server,
            from,
            &el,
            Condition::BadRequest,
            "an IQ needs a payload",
        );
    };
    let at_domain = to.node().is_none();
    match (q.ns.as_str(), q.name.as_str(), kind, at_domain) {
        (forms::DISCO_INFO, "query", "get", true) => {
            if q.get_attr("node") == Some(forms::COMMANDS) {
                return result(
                    server,
                    from,
                    &el,
                    Some(
                        Element::new("query", forms::DISCO_INFO)
                            .attr("node", forms::COMMANDS)
                            .child(
                                Element::new("identity", forms::DISCO_INFO)
                                    .attr("category", "automation")
                                    .attr("type", "command-list"),
                            ),
                    ),
                );
            }
            result(server, from, &el, Some(service_info(info)))
        }
        (forms::DISCO_ITEMS, "query", "get", true) => {
            if q.get_attr("node") == Some(forms::COMMANDS) {
                return result(server, from, &el, Some(adhoc::items(info)));
            }
            super::roomlist::items(server, info, from, el.clone(), &q)
        }
        (forms::DISCO_INFO, "query", "get", false) => {
            let node = to.node().map(|n| n.to_string()).unwrap_or_default();
            let q = if muc::is_room(server, &from.to_bare(), &info.domain, &node) {
                muc::room_info(&node)
            } else {
                Element::new("query", forms::DISCO_INFO)
                    .child(
                        Element::new("identity", forms::DISCO_INFO)
                            .attr("category", "client")
                            .attr("type", "pc"),
                    )
                    .child(
                        Element::new("feature", forms::DISCO_INFO).attr("var", forms::DISCO_INFO),
                    )
                    .child(
                        Element::new("feature", forms::DISCO_INFO).attr("var", forms::CHATSTATES),
                    )
                    .child(
                        Element::new("feature", forms::DISCO_INFO)
                            .attr("var", super::avatars::VCARD),
                    )
            };
            result(server, from, &el, Some(q))
        }
        (super::avatars::VCARD, "vCard", "get", false) => {
            super::avatars::vcard(server, info, from, to, &el)
        }
        (forms::REGISTER, "query", "get", true) => result(
            server,
            from,
            &el,
            Some(register_form(server, info, &from.to_bare())),
        ),
        (forms::REGISTER, "query", "set", true) => register_set(server, info, from, &el, &q),
        (forms::GATEWAY, "query", "get", true) => result(
            server,
            from,
            &el,
            Some(
                Element::new("query", forms::GATEWAY)
                    .child(
                        Element::new("desc", forms::GATEWAY)
                            .text(format!("Enter the {} name of the contact.", info.kind)),
                    )
                    .child(Element::new("prompt", forms::GATEWAY).text("Contact")),
            ),
        ),
        (forms::GATEWAY, "query", "set", true) => {
            let Some(prompt) = q
                .child_text("prompt", forms::GATEWAY)
                .filter(|p| !p.is_empty())
            else {
                return bounce(
                    server,
                    from,
                    &el,
                    Condition::BadRequest,
                    "a prompt is required",
                );
            };
            // The first account's JID space; `%n` suffixes select others (see escape.rs).
            let jid = format!("{}@{}", escape::escape(&prompt), info.domain);
            match BareJid::new(&jid) {
                Ok(j) => result(
                    server,
                    from,
                    &el,
                    Some(
                        Element::new("query", forms::GATEWAY)
                            .child(Element::new("jid", forms::GATEWAY).text(j.to_string())),
                    ),
                ),
                Err(_) => bounce(
                    server,
                    from,
                    &el,
                    Condition::JidMalformed,
                    "that name makes no valid JID",
                ),
            }
        }
        (forms::COMMANDS, "command", "set", true) => {
            match adhoc::execute(server, info, from, &el, &q) {
                Some(Ok(resp)) => result(server, from, &el, Some(resp)),
                Some(Err((cond, text))) => bounce(server, from, &el, cond, &text),
                None => {} // answered later
            }
        }
        (forms::PING, "ping", "get", _) => result(server, from, &el, None),
        _ => bounce(server, from, &el, Condition::ServiceUnavailable, ""),
    }
}

fn feature(var: &str) -> Element {
    Element::new("feature", forms::DISCO_INFO).attr("var", var)
}

fn service_info(info: &ServiceInfo) -> Element {
    let mut q = Element::new("query", forms::DISCO_INFO)
        .child(
            Element::new("identity", forms::DISCO_INFO)
                .attr("category", "gateway")
                .attr("type", info.kind.as_str())
                .attr("name", info.name.as_str()),
        )
        .child(
            Element::new("identity", forms::DISCO_INFO)
                .attr("category", "conference")
                .attr("type", "text")
                .attr("name", info.name.as_str()),
        );
    for f in [
        forms::DISCO_INFO,
        forms::DISCO_ITEMS,
        forms::REGISTER,
        forms::GATEWAY,
        forms::COMMANDS,
        forms::MUC,
        forms::CHATSTATES,
        forms::PING,
    ] {
        q.push(feature(f));
    }
    q
}

/// The rooms `owner` joined or will re-join on this service, as disco items.
pub fn own_rooms(server: &Server, info: &ServiceInfo, owner: &BareJid) -> Element {
    let mut q = Element::new("query", forms::DISCO_ITEMS);
    let t = Transport::get(server);
    for id in t.accounts_of(owner, &info.domain) {
        let rooms: Vec<String> = match server.store.legacy_rooms(id) {
            Ok(r) => r.into_iter().map(|(room, _)| room).collect(),
            Err(_) => Vec::new(),
        };
        let live: Vec<String> = t
            .legacy
            .borrow()
            .get(&id)
            .map(|l| l.rooms.keys().cloned().collect())
            .unwrap_or_default();
        let mut all: Vec<String> = rooms.into_iter().chain(live).collect();
        all.sort();
        all.dedup();
        for room in all {
            if let Some(j) = t.contact_jid(id, &room) {
                q.push(
                    Element::new("item", forms::DISCO_ITEMS)
                        .attr("jid", j.to_string())
                        .attr("name", room.as_str()),
                );
            }
        }
    }
    q
}

/// The XEP-0077 form for a new account on this service.
fn register_form(server: &Server, info: &ServiceInfo, owner: &BareJid) -> Element {
    let fields = accounts::form_fields(&info.prpl);
    let mut out = Vec::new();
    for f in &fields {
        let default = f
            .var
            .strip_prefix("opt:")
            .and_then(|k| info.defaults.get(k).cloned())
            .unwrap_or_else(|| f.default.clone());
        let ff = match &f.kind {
            FieldKind::Text | FieldKind::Int => {
                FormField::new(&f.var, "text-single", Some(&f.label))
            }
            FieldKind::Password => FormField::new(&f.var, "text-private", Some(&f.label)),
            FieldKind::Bool => FormField::new(&f.var, "boolean", Some(&f.label)),
            FieldKind::List(opts) => {
                let mut ff = FormField::new(&f.var, "list-single", Some(&f.label));
                ff.options = opts.clone();
                ff
            }
        };
        out.push(ff.value(default).required(f.required));
    }
    let registered = !Transport::get(server)
        .accounts_of(owner, &info.domain)
        .is_empty();
    let text = format!(
        "Log in to {} with your {} account. Registering again with another username adds another account.",
        info.name, info.kind
    );
    let mut q = Element::new("query", forms::REGISTER)
        .child(Element::new("instructions", forms::REGISTER).text(text.as_str()));
    if registered {
        q.push(Element::new("registered", forms::REGISTER));
    }
    q.push(Element::new("username", forms::REGISTER));
    if fields.iter().any(|f| f.var == "password") {
        q.push(Element::new("password", forms::REGISTER));
    }
    q.push(forms::form(
        Some(forms::REGISTER),
        &format!("{} registration", info.name),
        &text,
        &out,
    ));
    q
}

fn register_set(
    server: &Rc<Server>,
    info: &ServiceInfo,
    from: &FullJid,
    el: &Element,
    q: &Element,
) {
    let owner = from.to_bare();
    let t = Transport::get(server);
    if q.get_child("remove", forms::REGISTER).is_some() {
        for id in t.accounts_of(&owner, &info.domain) {
            accounts::remove(server, id);
        }
        result(server, from, el, None);
        let p = Element::stanza("presence")
            .attr("from", info.domain.as_str())
            .attr("to", owner.to_string())
            .attr("type", "unavailable");
        server.to_available(&owner, &p);
        roster_bridge::remove_item(server, &owner, &info.domain);
        return;
    }
    let fields = accounts::form_fields(&info.prpl);
    let values: Vec<(String, Vec<String>)> =
        match q.get_child("x", forms::DATA).and_then(forms::submitted) {
            Some(v) => v,
            None => ["username", "password"]
                .iter()
                .filter_map(|k| {
                    q.child_text(k, forms::REGISTER)
                        .map(|v| (k.to_string(), vec![v]))
                })
                .collect(),
        };
    let label = |var: &str| {
        fields
            .iter()
            .find(|f| f.var == var)
            .map_or_else(|| var.to_owned(), |f| f.label.clone())
    };
    if let Some(why) = forms::control_char_refusal(&values, label) {
        return bounce(server, from, el, Condition::NotAcceptable, &why);
    }
    let username = forms::value(&values, "username")
        .unwrap_or("")
        .trim()
        .to_owned();
    if username.is_empty() {
        return bounce(
            server,
            from,
            el,
            Condition::NotAcceptable,
            "a username is required",
        );
    }
    let splits: Vec<String> = fields
        .iter()
        .filter(|f| f.var.starts_with("split:"))
        .map(|f| {
            forms::value(&values, &f.var)
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .collect();
    let password = forms::value(&values, "password").filter(|p| !p.is_empty());
    if fields.iter().any(|f| f.var == "password" && f.required) && password.is_none() {
        return bounce(
            server,
            from,
            el,
            Condition::NotAcceptable,
            "a password is required",
        );
    }
    let mut settings = Vec::new();
    for f in fields.iter().filter(|f| f.var.starts_with("opt:")) {
        let Some(v) = forms::value(&values, &f.var) else {
            continue;
        };
        let Some(key) = f.var.strip_prefix("opt:") else {
            continue;
        };
        let v = match f.kind {
            FieldKind::Bool => if forms::truthy(v) { "1" } else { "0" }.to_owned(),
            FieldKind::Int => match v.trim().parse::<i32>() {
                Ok(n) => n.to_string(),
                Err(_) => {
                    return bounce(
                        server,
                        from,
                        el,
                        Condition::BadRequest,
                        &format!("{} must be a number", f.label),
                    );
                }
            },
            _ => v.to_owned(),
        };
        let default = info
            .defaults
            .get(key)
            .cloned()
            .unwrap_or_else(|| f.default.clone());
        if v != default {
            settings.push((key.to_owned(), v));
        }
    }
    let legacy_user = accounts::compose_username(&info.prpl, &username, &splits);
    // The servers named must be public unless the service allows otherwise (policy.rs);
    // names are resolved first, so the answer may come on a later loop turn.
    let hosts = accounts::hosts(info, &legacy_user, &settings);
    let password = password.map(str::to_owned);
    let (server2, info2, from2, el2) = (server.clone(), info.clone(), from.clone(), el.clone());
    super::policy::vet(hosts, info.allow_private, move |verdict| match verdict {
        Err(why) => bounce(&server2, &from2, &el2, Condition::NotAcceptable, &why),
        Ok(()) => finish_registration(
            &server2,
            &info2,
            &from2,
            &el2,
            &legacy_user,
            password.as_deref(),
            &settings,
        ),
    });
}

/// Stores a vetted registration, (re)attaches the account and logs it in.
fn finish_registration(
    server: &Rc<Server>,
    info: &ServiceInfo,
    from: &FullJid,
    el: &Element,
    legacy_user: &str,
    password: Option<&str>,
    settings: &[(String, String)],
) {
    let owner = from.to_bare();
    let t = Transport::get(server);
    let node = owner.node().map(|n| n.to_string()).unwrap_or_default();
    let saved = server.store.save_legacy_account(
        (&node, owner.domain().as_str()),
        &info.domain,
        &info.prpl,
        legacy_user,
        password,
        settings,
    );
    let id = match saved {
        Ok(id) => id,
        Err(e) => {
            tracing::error!("cannot save legacy account: {e}");
            return bounce(
                server,
                from,
                el,
                Condition::InternalServerError,
                "cannot store the account",
            );
        }
    };
    let Ok(Some(rec)) = server.store.legacy_account(id) else {
        return bounce(
            server,
            from,
            el,
            Condition::InternalServerError,
            "cannot read the account back",
        );
    };
    // A re-registration replaces the settings: log out, re-apply, log in.
    if t.legacy.borrow().contains_key(&id) {
        accounts::logout(server, id, LinkState::Offline);
    }
    if accounts::attach(server, &rec).is_none() {
        return bounce(
            server,
            from,
            el,
            Condition::InternalServerError,
            "libpurple refused the account",
        );
    }
    if let Some(l) = t.legacy.borrow_mut().get_mut(&id) {
        l.backoff.attempts = 0;
        l.told = None;
    }
    result(server, from, el, None);
    tracing::info!(owner = %owner, service = %info.domain, "legacy account registered");
    roster_bridge::set_item(server, &owner, &info.domain, &info.name, &[], "both");
    accounts::login(server, id);
    announce(server, &owner, &info.domain);
}

fn message(server: &Rc<Server>, info: &ServiceInfo, from: &FullJid, to: &Jid, el: Element) {
    if el.get_attr("type") == Some("error") {
        return;
    }
    let owner = from.to_bare();
    let Some(node) = to.node().map(|n| n.to_string()) else {
        // To the service itself: answers to libpurple's prompts, or a command word.
        return requests::answer_message(server, info, from, &el);
    };
    if Transport::get(server)
        .resolve(&owner, &info.domain, &node)
        .is_none()
    {
        return bounce(
            server,
            from,
            &el,
            Condition::RegistrationRequired,
            "register with this gateway first",
        );
    }
    let is_room = muc::is_room(server, &owner, &info.domain, &node);
    match (el.get_attr("type"), to.resource()) {
        (Some("groupchat"), _) => muc::message_from_user(server, info, from, &node, el),
        (_, Some(res)) if is_room => {
            muc::private_message(server, info, from, &node, res.as_str(), el)
        }
        _ => messages::to_legacy(server, info, from, &node, el),
    }
}

fn presence(server: &Rc<Server>, info: &ServiceInfo, from: &FullJid, to: &Jid, el: Element) {
    let owner = from.to_bare();
    let kind = el.get_attr("type").map(str::to_owned);
    let Some(node) = to.node().map(|n| n.to_string()) else {
        match kind.as_deref() {
            None => contacts::user_status(server, info, &owner, &el),
            Some("probe") => announce(server, &owner, &info.domain),
            Some("subscribe") => {
                let p = Element::stanza("presence")
                    .attr("from", info.domain.as_str())
                    .attr("to", owner.to_string())
                    .attr("type", "subscribed");
                server.to_available(&owner, &p);
                announce(server, &owner, &info.domain);
            }
            _ => {}
        }
        return;
    };
    if Transport::get(server)
        .resolve(&owner, &info.domain, &node)
        .is_none()
    {
        if kind.as_deref() != Some("unavailable") {
            bounce(
                server,
                from,
                &el,
                Condition::RegistrationRequired,
                "register with this gateway first",
            );
        }
        return;
    }
    match to.resource() {
        Some(nick) => muc::presence_from_user(server, info, from, &node, nick.as_str(), el),
        None => contacts::presence_to_contact(server, info, &owner, &node, kind.as_deref()),
    }
}

/// Sends a chat message from the service JID (stored in the mailbox if the user is offline).
pub fn tell(server: &Rc<Server>, owner: &BareJid, service: &str, text: &str) {
    let msg = Element::stanza("message")
        .attr("from", service)
        .attr("to", owner.to_string())
        .attr("type", "chat")
        .attr("id", messages::new_id())
        .child(Element::new("body", crate::xml::ns::CLIENT).text(text));
    server.to_account(owner, msg);
}

/// The service JID's presence to the user: available while every enabled account is
/// online; `away` while connecting; `xa` with the reasons when some are down.
pub fn announce(server: &Rc<Server>, owner: &BareJid, service: &str) {
    let t = Transport::get(server);
    let mut lines = Vec::new();
    let mut worst = 0;
    let mut any = false;
    for id in t.accounts_of(owner, service) {
        let legacy = t.legacy.borrow();
        let Some(l) = legacy.get(&id) else { continue };
        any = true;
        let (rank, text) = match &l.state {
            LinkState::Online => (0, "online".to_owned()),
            LinkState::Connecting => (1, "connecting".to_owned()),
            LinkState::Offline => (1, "offline".to_owned()),
            LinkState::Down(r) => (2, format!("down ({r}), reconnecting")),
            LinkState::Failed(r) => (3, format!("failed: {r}")),
            LinkState::Disabled => (0, "disabled".to_owned()),
        };
        worst = worst.max(rank);
        lines.push(format!("{}: {text}", l.username));
    }
    let mut p = Element::stanza("presence")
        .attr("from", service)
        .attr("to", owner.to_string());
    if !any {
        p.set_attr("type", "unavailable");
    } else {
        match worst {
            0 => {}
            1 => p.push(Element::new("show", crate::xml::ns::CLIENT).text("away")),
            _ => p.push(Element::new("show", crate::xml::ns::CLIENT).text("xa")),
        }
        p.push(Element::new("status", crate::xml::ns::CLIENT).text(lines.join("; ")));
    }
    server.to_available(owner, &p);
}

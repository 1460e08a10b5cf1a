//! XEP-0050 ad-hoc commands on each service JID: list accounts, re-login, enable, disable,
//! remove, and change an account's settings (protocol options and password).
//!
//! Every command but `accounts` has two steps: a form choosing the account (and for
//! `settings`, the options with their current values), then completion with a note.

use std::rc::Rc;

use jid::FullJid;

use super::accounts::{self, FieldKind};
use super::forms::{self, FormField};
use super::{LinkState, ServiceInfo, Transport};
use crate::core::stanza::Condition;
use crate::server::Server;
use crate::xml::Element;

const COMMANDS: [(&str, &str); 6] = [
    ("accounts", "List my accounts"),
    ("relogin", "Log in again"),
    ("enable", "Enable an account"),
    ("disable", "Disable an account"),
    ("remove", "Remove an account"),
    ("settings", "Change an account's settings"),
];

pub fn items(info: &ServiceInfo) -> Element {
    let mut q = Element::new("query", forms::DISCO_ITEMS).attr("node", forms::COMMANDS);
    for (node, name) in COMMANDS {
        q.push(
            Element::new("item", forms::DISCO_ITEMS)
                .attr("jid", info.domain.as_str())
                .attr("node", node)
                .attr("name", name),
        );
    }
    q
}

fn response(node: &str, session: &str, status: &str) -> Element {
    Element::new("command", forms::COMMANDS)
        .attr("node", node)
        .attr("sessionid", session)
        .attr("status", status)
}

fn note(el: Element, kind: &str, text: &str) -> Element {
    el.child(
        Element::new("note", forms::COMMANDS)
            .attr("type", kind)
            .text(text),
    )
}

type Outcome = Result<Element, (Condition, String)>;

/// Runs command `cmd` of request `req`; `None` when the answer goes out later (a settings
/// change whose servers are being resolved, see `policy::vet`).
pub fn execute(
    server: &Rc<Server>,
    info: &ServiceInfo,
    from: &FullJid,
    req: &Element,
    cmd: &Element,
) -> Option<Outcome> {
    let node = cmd.get_attr("node").unwrap_or("");
    if !COMMANDS.iter().any(|(n, _)| *n == node) {
        return Some(Err((Condition::ItemNotFound, "no such command".into())));
    }
    let session = cmd
        .get_attr("sessionid")
        .map(str::to_owned)
        .unwrap_or_else(super::messages::new_id);
    if cmd.get_attr("action") == Some("cancel") {
        return Some(Ok(response(node, &session, "canceled")));
    }
    let owner = from.to_bare();
    let t = Transport::get(server);
    let ids = t.accounts_of(&owner, &info.domain);
    let submitted = cmd.get_child("x", forms::DATA).and_then(forms::submitted);
    if node == "accounts" {
        let mut lines = Vec::new();
        for id in &ids {
            let legacy = t.legacy.borrow();
            let Some(l) = legacy.get(id) else { continue };
            lines.push(format!("{}: {}", l.username, state_text(&l.state)));
        }
        let text = if lines.is_empty() {
            "No accounts; register with this gateway.".to_owned()
        } else {
            lines.join("\n")
        };
        return Some(Ok(note(
            response(node, &session, "completed"),
            "info",
            &text,
        )));
    }
    if ids.is_empty() {
        return Some(Ok(note(
            response(node, &session, "completed"),
            "warn",
            "No accounts; register with this gateway.",
        )));
    }
    let choose = || {
        let mut f = FormField::new("account", "list-single", Some("Account")).required(true);
        f.options = ids
            .iter()
            .map(|id| (accounts::label(server, *id), id.to_string()))
            .collect();
        f.values.extend(ids.first().map(i64::to_string));
        f
    };
    let Some(values) = submitted else {
        let mut fields = vec![choose()];
        if node == "settings"
            && let [only] = ids.as_slice()
        {
            fields.extend(settings_fields(server, info, *only));
        }
        let title = COMMANDS
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, t)| *t)
            .unwrap_or("");
        return Some(Ok(response(node, &session, "executing")
            .child(
                Element::new("actions", forms::COMMANDS)
                    .attr("execute", "complete")
                    .child(Element::new("complete", forms::COMMANDS)),
            )
            .child(forms::form(None, title, "", &fields))));
    };
    let label_of = |var: &str| match var {
        "account" => "Account".to_owned(),
        "password" => "New password".to_owned(),
        _ => accounts::form_fields(&info.prpl)
            .into_iter()
            .find(|f| f.var == var)
            .map_or_else(|| var.to_owned(), |f| f.label),
    };
    if let Some(why) = forms::control_char_refusal(&values, label_of) {
        return Some(Err((Condition::NotAcceptable, why)));
    }
    let Some(id) = forms::value(&values, "account")
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|id| ids.contains(id))
    else {
        return Some(Err((
            Condition::BadRequest,
            "choose one of your accounts".into(),
        )));
    };
    let label = accounts::label(server, id);
    let done = |text: String| {
        Some(Ok(note(
            response(node, &session, "completed"),
            "info",
            &text,
        )))
    };
    match node {
        "relogin" => {
            accounts::logout(server, id, LinkState::Offline);
            if let Some(l) = t.legacy.borrow_mut().get_mut(&id) {
                l.backoff.attempts = 0;
                l.told = None;
            }
            let _ = server.store.set_legacy_enabled(id, true);
            accounts::login(server, id);
            done(format!("{label}: logging in again."))
        }
        "enable" => {
            let _ = server.store.set_legacy_enabled(id, true);
            let state = t.legacy.borrow().get(&id).map(|l| l.state.clone());
            if let Some(s @ (LinkState::Online | LinkState::Connecting)) = state {
                // Logging in again would leave a connected account marked "connecting".
                return done(format!("{label}: already enabled ({}).", state_text(&s)));
            }
            // An explicit enable starts a fresh run: full retries, failures told again.
            if let Some(l) = t.legacy.borrow_mut().get_mut(&id) {
                l.backoff.cancel();
                l.backoff.attempts = 0;
                l.told = None;
            }
            accounts::login(server, id);
            super::service::announce(server, &owner, &info.domain);
            done(format!("{label}: enabled."))
        }
        "disable" => {
            let _ = server.store.set_legacy_enabled(id, false);
            accounts::logout(server, id, LinkState::Disabled);
            super::service::announce(server, &owner, &info.domain);
            done(format!(
                "{label}: disabled; it stays logged out until enabled."
            ))
        }
        "remove" => {
            accounts::remove(server, id);
            super::service::announce(server, &owner, &info.domain);
            done(format!("{label}: removed."))
        }
        "settings" => {
            if !values
                .iter()
                .any(|(k, _)| k.starts_with("opt:") || k == "password")
            {
                // First the account, now its settings.
                return Some(Ok(response(node, &session, "executing")
                    .child(
                        Element::new("actions", forms::COMMANDS)
                            .attr("execute", "complete")
                            .child(Element::new("complete", forms::COMMANDS)),
                    )
                    .child(forms::form(
                        None,
                        "Settings",
                        &label,
                        &[vec![choose()], settings_fields(server, info, id)].concat(),
                    ))));
            }
            let Ok(Some(rec)) = server.store.legacy_account(id) else {
                return Some(Err((
                    Condition::InternalServerError,
                    "cannot read the account".into(),
                )));
            };
            let mut settings = rec.settings.clone();
            for f in accounts::form_fields(&info.prpl)
                .into_iter()
                .filter(|f| f.var.starts_with("opt:"))
            {
                let Some(v) = forms::value(&values, &f.var) else {
                    continue;
                };
                let v = match f.kind {
                    FieldKind::Bool => if forms::truthy(v) { "1" } else { "0" }.to_owned(),
                    _ => v.to_owned(),
                };
                let Some(key) = f.var.strip_prefix("opt:").map(str::to_owned) else {
                    continue;
                };
                settings.retain(|(k, _)| *k != key);
                settings.push((key, v));
            }
            let password = forms::value(&values, "password")
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .or(rec.password.clone());
            // The servers named must be public unless the service allows otherwise.
            let hosts = accounts::hosts(info, &rec.username, &settings);
            let (server, from, req) = (server.clone(), from.clone(), req.clone());
            let (node, session) = (node.to_owned(), session.clone());
            super::policy::vet(hosts, info.allow_private, move |verdict| {
                let outcome = match verdict {
                    Err(why) => Err((Condition::NotAcceptable, why)),
                    Ok(()) => save_settings(&server, id, &rec, password.as_deref(), &settings)
                        .map(|text| note(response(&node, &session, "completed"), "info", &text)),
                };
                match outcome {
                    Ok(resp) => super::service::reply(&server, &from, &req, resp),
                    Err((cond, text)) => super::service::bounce(&server, &from, &req, cond, &text),
                }
            });
            None
        }
        _ => Some(Err((Condition::ItemNotFound, "no such command".into()))),
    }
}

/// Stores vetted settings and logs the account in again (unless it is disabled); the note
/// for the user.
fn save_settings(
    server: &Rc<Server>,
    id: i64,
    rec: &crate::store::transport::LegacyAccount,
    password: Option<&str>,
    settings: &[(String, String)],
) -> Result<String, (Condition, String)> {
    let label = accounts::label(server, id);
    // Saving re-enables the account in the store; a disabled one must stay so.
    let was_enabled = rec.enabled;
    let saved = server.store.save_legacy_account(
        (&rec.owner.0, &rec.owner.1),
        &rec.service,
        &rec.protocol,
        &rec.username,
        password,
        settings,
    );
    if saved.is_err() {
        return Err((
            Condition::InternalServerError,
            "cannot store the settings".into(),
        ));
    }
    if !was_enabled {
        let _ = server.store.set_legacy_enabled(id, false);
        if let Ok(Some(rec)) = server.store.legacy_account(id) {
            accounts::attach(server, &rec);
        }
        return Ok(format!(
            "{label}: settings saved; it stays logged out until enabled."
        ));
    }
    if let Ok(Some(rec)) = server.store.legacy_account(id) {
        accounts::logout(server, id, LinkState::Offline);
        accounts::attach(server, &rec);
        accounts::login(server, id);
    }
    Ok(format!("{label}: settings saved; logging in again."))
}

fn settings_fields(server: &Server, info: &ServiceInfo, id: i64) -> Vec<FormField> {
    let current = server
        .store
        .legacy_account(id)
        .ok()
        .flatten()
        .map(|r| r.settings)
        .unwrap_or_default();
    let mut out = vec![FormField::new(
        "password",
        "text-private",
        Some("New password (empty: unchanged)"),
    )];
    for f in accounts::form_fields(&info.prpl)
        .into_iter()
        .filter(|f| f.var.starts_with("opt:"))
    {
        let Some(key) = f.var.strip_prefix("opt:") else {
            continue;
        };
        let value = current
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| info.defaults.get(key).cloned())
            .unwrap_or(f.default.clone());
        let ff = match &f.kind {
            FieldKind::Bool => FormField::new(&f.var, "boolean", Some(&f.label)),
            FieldKind::Password => FormField::new(&f.var, "text-private", Some(&f.label)),
            FieldKind::List(opts) => {
                let mut ff = FormField::new(&f.var, "list-single", Some(&f.label));
                ff.options = opts.clone();
                ff
            }
            _ => FormField::new(&f.var, "text-single", Some(&f.label)),
        };
        out.push(ff.value(value));
    }
    out
}

pub fn state_text(s: &LinkState) -> String {
    match s {
        LinkState::Offline => "offline".into(),
        LinkState::Connecting => "connecting".into(),
        LinkState::Online => "online".into(),
        LinkState::Down(r) => format!("down ({r}), reconnecting"),
        LinkState::Failed(r) => format!("failed: {r}"),
        LinkState::Disabled => "disabled".into(),
    }
}

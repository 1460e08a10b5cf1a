//! Headless prompts: libpurple's request ui-ops (certificate trust, passwords, 2FA codes,
//! "create this room?"…) and legacy authorisation requests, turned into questions to the
//! user.
//!
//! Each request becomes a chat message from the service JID carrying the question as text and
//! as an XEP-0004 form (a hidden `request` field names it). The user answers with the
//! submitted form, or simply by replying in text: a number or label for choices and actions,
//! the value for inputs (`cancel` cancels). Unanswered requests stay pending until libpurple
//! closes them — **nothing is ever accepted automatically**, certificates included.
//!
//! Requests without an account (libpurple's certificate checks have none) go to the owners of
//! the accounts that are connecting at that moment — the only ones that can be waiting.
//! Callbacks are called exactly once, from the stanza handler (never inside a ui-op), and the
//! request is then closed with `purple_request_close` so libpurple forgets its handle.
//! `va_list` ops (`request_action`, `request_choice`) come through the C shim in purple-sys.

use std::rc::Rc;

use jid::{BareJid, FullJid};

use super::forms::{self, FormField};
use super::purple::Account;
use super::purple::markup::html_to_text;
use super::purple::request::{self, AuthAnswer, FieldKind, Prompt, Request as Kind};
use super::{LinkState, ServiceInfo, Transport, core, messages, roster_bridge, service, text};
use crate::router::ServiceHost;
use crate::server::Server;
use crate::xml::{Element, ns};

struct Request {
    id: usize,
    kind: Kind,
    owners: Vec<(BareJid, String)>,
}

struct Auth {
    handle: usize,
    legacy: i64,
    name: String,
    answer: AuthAnswer,
}

/// Open requests (in `Transport`).
#[derive(Default)]
pub struct Pending {
    next: usize,
    items: Vec<Request>,
    auths: Vec<Auth>,
}

impl Pending {
    fn next_handle(&mut self) -> usize {
        self.next += 1;
        self.next
    }
}

pub fn install_ui_ops() {
    request::set_ui_ops(request::UiOps {
        open: open_request,
        close: close_request,
        notify: notify_message,
        authorize: request_authorize,
        close_authorize: close_account_request,
    });
}

thread_local! {
    /// The user whose answer is being carried out (see `owners_for`).
    static ANSWERING: std::cell::RefCell<Option<(BareJid, String)>> = const { std::cell::RefCell::new(None) };
}

/// Sets [`ANSWERING`] for as long as it lives.
struct Answering(Option<(BareJid, String)>);

impl Answering {
    fn set(owner: BareJid, service: String) -> Answering {
        Answering(ANSWERING.replace(Some((owner, service))))
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        ANSWERING.set(self.0.take());
    }
}

/// Who should answer a request for `acc`. A request without an account (libpurple's
/// certificate prompts have none) goes to the owners of the accounts connecting to a host the
/// question names — libpurple's certificate cache is process-wide, so they are the ones whose
/// connection the answer decides — and only if none matches, to every connecting account.
fn owners_for(server: &Server, acc: Option<Account>, question: &str) -> Vec<(BareJid, String)> {
    let t = Transport::get(server);
    let legacy = t.legacy.borrow();
    if acc.is_none() {
        // Raised while one account's certificate is verified (certs.rs), or again from one
        // user's answer ("View certificate" re-opens the question): that user's alone.
        if let Some(l) = super::certs::verifying().and_then(|id| legacy.get(&id)) {
            return vec![(l.owner.clone(), l.service.clone())];
        }
        if let Some(who) = ANSWERING.with_borrow(|a| a.clone()) {
            return vec![who];
        }
    }
    let connecting = || legacy.values().filter(|l| l.state == LinkState::Connecting);
    let chosen: Vec<&super::Legacy> = if acc.is_none() {
        let naming: Vec<_> = connecting()
            .filter(|l| hosts_of(l).iter().any(|h| question.contains(h.as_str())))
            .collect();
        if naming.is_empty() {
            tracing::warn!(
                "libpurple request names no connecting account's host; asking every connecting account's owner"
            );
            connecting().collect()
        } else {
            naming
        }
    } else {
        legacy.values().filter(|l| Some(l.account) == acc).collect()
    };
    let mut out: Vec<(BareJid, String)> = chosen
        .into_iter()
        .map(|l| (l.owner.clone(), l.service.clone()))
        .collect();
    out.sort_by(|a, b| (a.0.to_string(), &a.1).cmp(&(b.0.to_string(), &b.1)));
    out.dedup();
    out
}

/// The hosts an account connects to: its `connect_server` setting and the server part of its
/// username (`nick@irc.example.org`, `user@example.org/resource`).
fn hosts_of(l: &super::Legacy) -> Vec<String> {
    let mut hosts = Vec::new();
    if let Some((_, server)) = l.username.rsplit_once('@') {
        let server = server.split('/').next().unwrap_or(server);
        hosts.push(server.to_owned());
    }
    // `l.account` is alive while the link is (see `Legacy::account`).
    let connect = l.account.get_string("connect_server", "");
    if !connect.is_empty() {
        hosts.push(connect);
    }
    hosts.retain(|h| !h.is_empty());
    hosts
}

fn text_of(prompt: &Prompt) -> (String, String) {
    let title = text::line(&html_to_text(&prompt.title));
    let parts: Vec<String> = [&prompt.primary, &prompt.secondary]
        .into_iter()
        .map(|s| text::display(&html_to_text(s)))
        .filter(|s| !s.is_empty())
        .collect();
    (title, parts.join("\n"))
}

/// What the user is asked: a title, an explanation, the form's fields, and how to answer by
/// chat.
struct Question {
    title: String,
    text: String,
    fields: Vec<FormField>,
    hint: String,
}

/// Registers a request and sends the question; returns the ui handle (NULL if nobody can
/// answer, which libpurple treats as "no UI").
fn open(server: &Rc<Server>, acc: Option<Account>, kind: Kind, question: Question) -> usize {
    let Question {
        title,
        text,
        fields,
        hint,
    } = question;
    let owners = owners_for(server, acc, &format!("{title}\n{text}"));
    if owners.is_empty() {
        tracing::warn!(%title, "libpurple request with nobody to ask; left unanswered");
    }
    let t = Transport::get(server);
    let id = {
        let mut pending = t.requests.borrow_mut();
        let id = pending.next_handle();
        pending.items.push(Request {
            id,
            kind,
            owners: owners.clone(),
        });
        id
    };
    let mut all = vec![FormField::new("request", "hidden", None).value(id.to_string())];
    all.extend(fields);
    for (owner, svc) in &owners {
        let body = format!("{title}\n{text}\n{hint}");
        let msg = Element::stanza("message")
            .attr("from", svc.as_str())
            .attr("to", owner.to_string())
            .attr("type", "chat")
            .attr("id", messages::new_id())
            .child(Element::new("body", ns::CLIENT).text(body.trim()))
            .child(forms::form(None, &title, &text, &all));
        server.to_account(owner, msg);
    }
    id
}

/// A button or choice label for the user: mnemonic underscores and what XML cannot carry
/// removed.
fn clean_label(l: &str) -> String {
    text::line(&l.replace('_', ""))
}

/// libpurple asks something: the question goes to the user(s) who can answer it.
fn open_request(acc: Option<Account>, prompt: Prompt, mut kind: Kind) -> Option<usize> {
    let server = core::server()?;
    let (title, text) = text_of(&prompt);
    let reply_with = |labels: &[String]| {
        labels
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{} ({l})", i + 1))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (fields, hint) = match &mut kind {
        Kind::Action { labels, .. } => {
            *labels = labels.iter().map(|l| clean_label(l)).collect();
            let mut f = FormField::new("action", "list-single", Some("Answer")).required(true);
            f.options = labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), i.to_string()))
                .collect();
            (
                vec![f],
                format!("Reply with one of: {}", reply_with(labels)),
            )
        }
        Kind::Choice { labels, values, .. } => {
            *labels = labels.iter().map(|l| clean_label(l)).collect();
            let mut f = FormField::new("choice", "list-single", Some("Choice")).required(true);
            f.options = labels
                .iter()
                .zip(values.iter())
                .map(|(l, v)| (l.clone(), v.to_string()))
                .collect();
            (
                vec![f],
                format!("Reply with one of: {} — or 'cancel'", reply_with(labels)),
            )
        }
        Kind::Input {
            default, masked, ..
        } => {
            let kind = if *masked {
                "text-private"
            } else {
                "text-single"
            };
            let f = FormField::new("value", kind, Some("Answer"))
                .value(text::line(default))
                .required(true);
            (vec![f], "Reply with the answer, or 'cancel'.".into())
        }
        Kind::Fields { fields, .. } => {
            let mut out = Vec::new();
            for f in fields.all() {
                let var = text::line(&f.id());
                let label = text::line(&f.label());
                let ff = match f.kind() {
                    FieldKind::Text { masked, default } => {
                        let kind = if masked {
                            "text-private"
                        } else {
                            "text-single"
                        };
                        FormField::new(&var, kind, Some(&label)).value(text::display(&default))
                    }
                    FieldKind::Int(n) => {
                        FormField::new(&var, "text-single", Some(&label)).value(n.to_string())
                    }
                    FieldKind::Bool(b) => FormField::new(&var, "boolean", Some(&label))
                        .value(if b { "1" } else { "0" }),
                    FieldKind::Choice(default, labels) => {
                        let mut ff = FormField::new(&var, "list-single", Some(&label))
                            .value(default.to_string());
                        ff.options = labels
                            .iter()
                            .enumerate()
                            .map(|(i, l)| (clean_label(l), i.to_string()))
                            .collect();
                        ff
                    }
                    FieldKind::Label => FormField::new("", "fixed", None).value(label),
                    FieldKind::Other => continue,
                };
                out.push(ff.required(f.required()));
            }
            (
                out,
                "Answer with the form, reply with the value of the first field, or 'cancel'."
                    .into(),
            )
        }
    };
    Some(open(
        &server,
        acc,
        kind,
        Question {
            title,
            text,
            fields,
            hint,
        },
    ))
}

/// libpurple closed a request: forget it.
fn close_request(handle: usize) {
    let Some(server) = core::server() else { return };
    Transport::get(&server)
        .requests
        .borrow_mut()
        .items
        .retain(|r| r.id != handle);
}

fn notify_message(prompt: Prompt) {
    // No account context: logged, not sent (it could concern any user's account).
    let (title, text) = text_of(&prompt);
    tracing::info!(target: "purple", "notice: {title}: {text}");
}

/// A message from the user to the service JID: an answer to the oldest request they were
/// asked (or the one the submitted form names).
pub fn answer_message(server: &Rc<Server>, info: &ServiceInfo, from: &FullJid, el: &Element) {
    let owner = from.to_bare();
    let form = el.get_child("x", forms::DATA).and_then(forms::submitted);
    let body = el.child_text("body", ns::CLIENT).unwrap_or_default();
    if form.is_none() && body.is_empty() {
        return;
    }
    // Answers go into libpurple (passwords, codes, nicks): no control characters, which a
    // prpl could send on as protocol (a CR LF in an IRC line starts another command).
    let bad = text::first_control(&body).or_else(|| {
        form.iter()
            .flatten()
            .flat_map(|(_, vs)| vs)
            .find_map(|v| text::first_control(v))
    });
    if let Some(c) = bad {
        service::tell(
            server,
            &owner,
            &info.domain,
            &format!(
                "That answer contains a control character (U+{:04X}), which is not accepted; try again.",
                u32::from(c)
            ),
        );
        return;
    }
    let t = Transport::get(server);
    let wanted = form
        .as_ref()
        .and_then(|v| forms::value(v, "request"))
        .and_then(|v| v.parse::<usize>().ok());
    let req = {
        let mut pending = t.requests.borrow_mut();
        let pos = pending.items.iter().position(|r| {
            r.owners
                .iter()
                .any(|(o, s)| o == &owner && s == &info.domain)
                && wanted.is_none_or(|w| w == r.id)
        });
        pos.map(|i| pending.items.remove(i))
    };
    let Some(req) = req else {
        service::tell(
            server,
            &owner,
            &info.domain,
            "Nothing is waiting for an answer. Use the ad-hoc commands of this gateway to manage your accounts.",
        );
        return;
    };
    let first = |var: &str| {
        form.as_ref()
            .and_then(|v| forms::value(v, var))
            .map(str::to_owned)
    };
    let cancel = body.trim().eq_ignore_ascii_case("cancel");
    let pick = |labels: &[String], var: &str| -> Option<usize> {
        if let Some(v) = first(var) {
            return v.parse().ok().filter(|i| *i < labels.len());
        }
        let b = body.trim();
        b.parse::<usize>()
            .ok()
            .filter(|n| (1..=labels.len()).contains(n))
            .map(|n| n - 1)
            .or_else(|| labels.iter().position(|l| l.eq_ignore_ascii_case(b)))
    };
    // Whatever the callback asks next belongs to the same user.
    let _answering = Answering::set(owner.clone(), info.domain.clone());
    let ok = match &req.kind {
        Kind::Action { labels, answer } => match pick(labels, "action") {
            Some(i) => {
                answer.call(i);
                true
            }
            None => false,
        },
        Kind::Choice {
            labels,
            values,
            answer,
        } => {
            let chosen = if cancel {
                Some(0)
            } else {
                pick(labels, "choice").or_else(|| {
                    first("choice")
                        .and_then(|v| v.parse::<i32>().ok())
                        .and_then(|v| values.iter().position(|x| *x == v))
                })
            };
            match chosen {
                Some(i) => {
                    answer.choice(cancel, values.get(i).copied().unwrap_or(0));
                    true
                }
                None => false,
            }
        }
        Kind::Input { masked, answer, .. } => {
            let value = first("value").unwrap_or_else(|| body.clone());
            if *masked {
                tracing::debug!("masked input answered");
            }
            answer.input(cancel, &value);
            true
        }
        Kind::Fields { fields, answer } => {
            if !cancel {
                fill_fields(fields, form.as_deref(), &body);
            }
            answer.fields(cancel, fields);
            true
        }
    };
    if !ok {
        service::tell(
            server,
            &owner,
            &info.domain,
            "That is not one of the choices; try again.",
        );
        t.requests.borrow_mut().items.insert(0, req);
        return;
    }
    // Tells libpurple the request is finished (it calls close_request, a no-op now).
    req.kind.close(req.id);
}

fn fill_fields(fields: &request::Fields, form: Option<&[(String, Vec<String>)]>, body: &str) {
    let mut body_used = false;
    for f in fields.all() {
        // The id as the form showed it (see open_request).
        let var = text::line(&f.id());
        let value = match form.and_then(|v| forms::value(v, &var)) {
            Some(v) => v.to_owned(),
            None if !body_used && f.is_text() => {
                body_used = true;
                body.to_owned()
            }
            None => continue,
        };
        f.set(&value, forms::truthy(&value));
    }
}

// ---- legacy authorisation requests ----------------------------------------------------------

/// A legacy contact asks to see the user's presence: a `subscribe` from the contact JID.
fn request_authorize(
    acc: Account,
    remote_user: &str,
    message: &str,
    answer: AuthAnswer,
) -> Option<usize> {
    let server = core::server()?;
    let t = Transport::get(&server);
    let legacy = t.id_of(acc)?;
    let (owner, protocol) = t
        .legacy
        .borrow()
        .get(&legacy)
        .map(|l| (l.owner.clone(), l.protocol.clone()))?;
    let name = messages::peer_name(&protocol, remote_user);
    let contact = t.contact_jid(legacy, &name)?;
    let handle = {
        let mut pending = t.requests.borrow_mut();
        let handle = pending.next_handle();
        pending.auths.push(Auth {
            handle,
            legacy,
            name,
            answer,
        });
        handle
    };
    let mut el = Element::stanza("presence")
        .attr("from", contact.to_string())
        .attr("to", owner.to_string())
        .attr("type", "subscribe");
    let msg = text::display(message);
    if !msg.is_empty() {
        el.push(Element::new("status", ns::CLIENT).text(msg));
    }
    roster_bridge::pending_in(&server, &owner, &contact, &el);
    server.to_available(&owner, &el);
    Some(handle)
}

fn close_account_request(handle: usize) {
    let Some(server) = core::server() else { return };
    Transport::get(&server)
        .requests
        .borrow_mut()
        .auths
        .retain(|a| a.handle != handle);
}

/// The user's `subscribed` (true) or `unsubscribed` to a contact with a pending legacy
/// authorisation request. Returns false when there was none.
pub fn answer_authorization(server: &Rc<Server>, legacy: i64, name: &str, accept: bool) -> bool {
    let t = Transport::get(server);
    let auth = {
        let mut pending = t.requests.borrow_mut();
        let pos = pending
            .auths
            .iter()
            .position(|a| a.legacy == legacy && a.name.eq_ignore_ascii_case(name));
        pos.map(|i| pending.auths.remove(i))
    };
    let Some(auth) = auth else { return false };
    // Called exactly once: the request left the table above.
    auth.answer.call(accept);
    if accept
        && let Some(contact) = t.contact_jid(legacy, name)
        && let Some(owner) = t.legacy.borrow().get(&legacy).map(|l| l.owner.clone())
    {
        roster_bridge::set_item(server, &owner, &contact.to_string(), name, &[], "both");
    }
    true
}

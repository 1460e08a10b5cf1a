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

use std::ffi::{c_char, c_int, c_void};
use std::rc::Rc;

use jid::{BareJid, FullJid};
use purple_sys as p;

use super::ffi::{cstring, glist, string};
use super::forms::{self, FormField};
use super::{LinkState, ServiceInfo, Transport, core, messages, roster_bridge, service, text};
use crate::router::ServiceHost;
use crate::server::Server;
use crate::xml::{Element, ns};

enum Kind {
    Action {
        labels: Vec<String>,
        cbs: Vec<p::GCallback>,
    },
    Input {
        ok: p::GCallback,
        cancel: p::GCallback,
        masked: bool,
    },
    Choice {
        labels: Vec<String>,
        values: Vec<c_int>,
        ok: p::GCallback,
        cancel: p::GCallback,
    },
    Fields {
        fields: *mut p::PurpleRequestFields,
        ok: p::GCallback,
        cancel: p::GCallback,
    },
}

struct Request {
    id: usize,
    kind: Kind,
    owners: Vec<(BareJid, String)>,
    user_data: *mut c_void,
}

struct Auth {
    handle: usize,
    legacy: i64,
    name: String,
    authorize: p::PurpleAccountRequestAuthorizationCb,
    deny: p::PurpleAccountRequestAuthorizationCb,
    user_data: *mut c_void,
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
    // SAFETY: leaked ui-ops set once on the main thread; the shim forwards the va_list ops.
    unsafe {
        p::wockd_shim_set_request_callbacks(Some(request_action), Some(request_choice));
        p::purple_request_set_ui_ops(Box::leak(Box::new(p::PurpleRequestUiOps {
            request_input: Some(request_input),
            request_choice: Some(p::wockd_shim_request_choice),
            request_action: Some(p::wockd_shim_request_action),
            request_fields: Some(request_fields),
            close_request: Some(close_request),
            ..Default::default()
        })));
        p::purple_notify_set_ui_ops(Box::leak(Box::new(p::PurpleNotifyUiOps {
            notify_message: Some(notify_message),
            ..Default::default()
        })));
    }
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
fn owners_for(
    server: &Server,
    acc: *mut p::PurpleAccount,
    question: &str,
) -> Vec<(BareJid, String)> {
    let t = Transport::get(server);
    let legacy = t.legacy.borrow();
    if acc.is_null() {
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
    let chosen: Vec<&super::Legacy> = if acc.is_null() {
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
        legacy.values().filter(|l| l.account == acc).collect()
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
    let key = cstring("connect_server");
    let empty = cstring("");
    // SAFETY: main thread; `l.account` is alive while the link is (see `Legacy::account`);
    // libpurple returns a borrowed string or the default.
    let connect = unsafe {
        string(p::purple_account_get_string(
            l.account,
            key.as_ptr(),
            empty.as_ptr(),
        ))
    };
    if !connect.is_empty() {
        hosts.push(connect);
    }
    hosts.retain(|h| !h.is_empty());
    hosts
}

fn text_of(
    title: *const c_char,
    primary: *const c_char,
    secondary: *const c_char,
) -> (String, String) {
    let title = text::line(&super::ffi::html_to_text(&string(title)));
    let parts: Vec<String> = [primary, secondary]
        .into_iter()
        .map(|s| text::display(&super::ffi::html_to_text(&string(s))))
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
fn open(
    server: &Rc<Server>,
    acc: *mut p::PurpleAccount,
    kind: Kind,
    user_data: *mut c_void,
    question: Question,
) -> *mut c_void {
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
            user_data,
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
    id as *mut c_void
}

/// A button or choice label for the user: mnemonic underscores and what XML cannot carry
/// removed.
fn clean_label(l: &str) -> String {
    text::line(&l.replace('_', ""))
}

unsafe extern "C" fn request_action(
    title: *const c_char,
    primary: *const c_char,
    secondary: *const c_char,
    _default: c_int,
    acc: *mut p::PurpleAccount,
    _who: *const c_char,
    _conv: *mut p::PurpleConversation,
    user_data: *mut c_void,
    count: usize,
    labels: *const *const c_char,
    cbs: *const p::GCallback,
) -> *mut c_void {
    super::ffi::guard("request_action", std::ptr::null_mut(), || {
        let Some(server) = core::server() else {
            return std::ptr::null_mut();
        };
        // SAFETY: the shim passes `count` valid entries for the duration of the call.
        let (labels, cbs): (Vec<String>, Vec<p::GCallback>) = unsafe {
            (0..count)
                .map(|i| (clean_label(&string(*labels.add(i))), *cbs.add(i)))
                .unzip()
        };
        let (title, text) = text_of(title, primary, secondary);
        let mut f = FormField::new("action", "list-single", Some("Answer")).required(true);
        f.options = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i.to_string()))
            .collect();
        let hint = format!(
            "Reply with one of: {}",
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| format!("{} ({l})", i + 1))
                .collect::<Vec<_>>()
                .join(", ")
        );
        open(
            &server,
            acc,
            Kind::Action { labels, cbs },
            user_data,
            Question {
                title,
                text,
                fields: vec![f],
                hint,
            },
        )
    })
}

unsafe extern "C" fn request_choice(
    title: *const c_char,
    primary: *const c_char,
    secondary: *const c_char,
    _default: c_int,
    _ok_text: *const c_char,
    ok: p::GCallback,
    _cancel_text: *const c_char,
    cancel: p::GCallback,
    acc: *mut p::PurpleAccount,
    _who: *const c_char,
    _conv: *mut p::PurpleConversation,
    user_data: *mut c_void,
    count: usize,
    labels: *const *const c_char,
    values: *const c_int,
) -> *mut c_void {
    super::ffi::guard("request_choice", std::ptr::null_mut(), || {
        let Some(server) = core::server() else {
            return std::ptr::null_mut();
        };
        // SAFETY: as in request_action.
        let (labels, values): (Vec<String>, Vec<c_int>) = unsafe {
            (0..count)
                .map(|i| (clean_label(&string(*labels.add(i))), *values.add(i)))
                .unzip()
        };
        let (title, text) = text_of(title, primary, secondary);
        let mut f = FormField::new("choice", "list-single", Some("Choice")).required(true);
        f.options = labels
            .iter()
            .zip(&values)
            .map(|(l, v)| (l.clone(), v.to_string()))
            .collect();
        let hint = format!(
            "Reply with one of: {} — or 'cancel'",
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| format!("{} ({l})", i + 1))
                .collect::<Vec<_>>()
                .join(", ")
        );
        open(
            &server,
            acc,
            Kind::Choice {
                labels,
                values,
                ok,
                cancel,
            },
            user_data,
            Question {
                title,
                text,
                fields: vec![f],
                hint,
            },
        )
    })
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn request_input(
    title: *const c_char,
    primary: *const c_char,
    secondary: *const c_char,
    default: *const c_char,
    _multiline: p::gboolean,
    masked: p::gboolean,
    _hint: *mut p::gchar,
    _ok_text: *const c_char,
    ok: p::GCallback,
    _cancel_text: *const c_char,
    cancel: p::GCallback,
    acc: *mut p::PurpleAccount,
    _who: *const c_char,
    _conv: *mut p::PurpleConversation,
    user_data: *mut c_void,
) -> *mut c_void {
    super::ffi::guard("request_input", std::ptr::null_mut(), || {
        let Some(server) = core::server() else {
            return std::ptr::null_mut();
        };
        let (title, text) = text_of(title, primary, secondary);
        let kind = if masked != 0 {
            "text-private"
        } else {
            "text-single"
        };
        let f = FormField::new("value", kind, Some("Answer"))
            .value(text::line(&string(default)))
            .required(true);
        open(
            &server,
            acc,
            Kind::Input {
                ok,
                cancel,
                masked: masked != 0,
            },
            user_data,
            Question {
                title,
                text,
                fields: vec![f],
                hint: "Reply with the answer, or 'cancel'.".into(),
            },
        )
    })
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn request_fields(
    title: *const c_char,
    primary: *const c_char,
    secondary: *const c_char,
    fields: *mut p::PurpleRequestFields,
    _ok_text: *const c_char,
    ok: p::GCallback,
    _cancel_text: *const c_char,
    cancel: p::GCallback,
    acc: *mut p::PurpleAccount,
    _who: *const c_char,
    _conv: *mut p::PurpleConversation,
    user_data: *mut c_void,
) -> *mut c_void {
    super::ffi::guard("request_fields", std::ptr::null_mut(), || {
        let Some(server) = core::server() else {
            return std::ptr::null_mut();
        };
        let (title, text) = text_of(title, primary, secondary);
        let mut out = Vec::new();
        for f in all_fields(fields) {
            // SAFETY: fields belong to the request, alive until it is closed.
            unsafe {
                let var = text::line(&string(p::purple_request_field_get_id(f)));
                let label = text::line(&string(p::purple_request_field_get_label(f)));
                let ff = match p::purple_request_field_get_type(f) {
                    p::PURPLE_REQUEST_FIELD_STRING => {
                        let kind = if p::purple_request_field_string_is_masked(f) != 0 {
                            "text-private"
                        } else {
                            "text-single"
                        };
                        FormField::new(&var, kind, Some(&label)).value(text::display(&string(
                            p::purple_request_field_string_get_default_value(f),
                        )))
                    }
                    p::PURPLE_REQUEST_FIELD_INTEGER => {
                        FormField::new(&var, "text-single", Some(&label))
                            .value(p::purple_request_field_int_get_default_value(f).to_string())
                    }
                    p::PURPLE_REQUEST_FIELD_BOOLEAN => {
                        FormField::new(&var, "boolean", Some(&label)).value(
                            if p::purple_request_field_bool_get_default_value(f) != 0 {
                                "1"
                            } else {
                                "0"
                            },
                        )
                    }
                    p::PURPLE_REQUEST_FIELD_CHOICE => {
                        let mut ff = FormField::new(&var, "list-single", Some(&label))
                            .value(p::purple_request_field_choice_get_default_value(f).to_string());
                        ff.options = glist(p::purple_request_field_choice_get_labels(f))
                            .into_iter()
                            .enumerate()
                            .map(|(i, l)| (clean_label(&string(l as *const c_char)), i.to_string()))
                            .collect();
                        ff
                    }
                    p::PURPLE_REQUEST_FIELD_LABEL => FormField::new("", "fixed", None).value(label),
                    _ => continue,
                };
                out.push(ff.required(p::purple_request_field_is_required(f) != 0));
            }
        }
        open(
            &server,
            acc,
            Kind::Fields { fields, ok, cancel },
            user_data,
            Question {
                title,
                text,
                fields: out,
                hint: "Answer with the form, reply with the value of the first field, or 'cancel'."
                    .into(),
            },
        )
    })
}

fn all_fields(fields: *mut p::PurpleRequestFields) -> Vec<*mut p::PurpleRequestField> {
    // SAFETY: borrowed lists of the request's groups and fields.
    unsafe {
        glist(p::purple_request_fields_get_groups(fields))
            .into_iter()
            .flat_map(|g| {
                glist(p::purple_request_field_group_get_fields(
                    g as *mut p::PurpleRequestFieldGroup,
                ))
            })
            .map(|f| f as *mut p::PurpleRequestField)
            .collect()
    }
}

unsafe extern "C" fn close_request(_kind: p::PurpleRequestType, handle: *mut c_void) {
    super::ffi::guard("close_request", (), || {
        let Some(server) = core::server() else { return };
        Transport::get(&server)
            .requests
            .borrow_mut()
            .items
            .retain(|r| r.id != handle as usize);
    })
}

unsafe extern "C" fn notify_message(
    _kind: p::PurpleNotifyMsgType,
    title: *const c_char,
    primary: *const c_char,
    secondary: *const c_char,
) -> *mut c_void {
    super::ffi::guard("notify_message", std::ptr::null_mut(), || {
        // No account context: logged, not sent (it could concern any user's account).
        let (title, text) = text_of(title, primary, secondary);
        tracing::info!(target: "purple", "notice: {title}: {text}");
        std::ptr::null_mut()
    })
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
    let (rtype, ok) = match &req.kind {
        Kind::Action { labels, cbs } => match pick(labels, "action") {
            Some(i) => {
                if let Some(cb) = cbs.get(i).copied().flatten() {
                    // SAFETY: PurpleRequestActionCb(void *user_data, int action), called once.
                    unsafe {
                        let f: unsafe extern "C" fn(*mut c_void, c_int) = std::mem::transmute(cb);
                        f(req.user_data, i as c_int);
                    }
                }
                (p::PURPLE_REQUEST_ACTION, true)
            }
            None => (p::PURPLE_REQUEST_ACTION, false),
        },
        Kind::Choice {
            labels,
            values,
            ok,
            cancel: cancel_cb,
        } => {
            let cb = if cancel { *cancel_cb } else { *ok };
            let chosen = if cancel {
                Some(0)
            } else {
                pick(labels, "choice").or_else(|| {
                    first("choice")
                        .and_then(|v| v.parse::<c_int>().ok())
                        .and_then(|v| values.iter().position(|x| *x == v))
                })
            };
            match chosen {
                Some(i) => {
                    if let Some(cb) = cb {
                        // SAFETY: PurpleRequestChoiceCb(void *user_data, int value), called once.
                        unsafe {
                            let f: unsafe extern "C" fn(*mut c_void, c_int) =
                                std::mem::transmute(cb);
                            f(req.user_data, values.get(i).copied().unwrap_or(0));
                        }
                    }
                    (p::PURPLE_REQUEST_CHOICE, true)
                }
                None => (p::PURPLE_REQUEST_CHOICE, false),
            }
        }
        Kind::Input {
            ok,
            cancel: cancel_cb,
            masked,
        } => {
            let value = first("value").unwrap_or_else(|| body.clone());
            let cb = if cancel { *cancel_cb } else { *ok };
            if *masked {
                tracing::debug!("masked input answered");
            }
            let c = cstring(&value);
            if let Some(cb) = cb {
                // SAFETY: PurpleRequestInputCb(void *user_data, const char *value), called once.
                unsafe {
                    let f: unsafe extern "C" fn(*mut c_void, *const c_char) =
                        std::mem::transmute(cb);
                    f(req.user_data, c.as_ptr());
                }
            }
            (p::PURPLE_REQUEST_INPUT, true)
        }
        Kind::Fields {
            fields,
            ok,
            cancel: cancel_cb,
        } => {
            if !cancel {
                fill_fields(*fields, form.as_deref(), &body);
            }
            let cb = if cancel { *cancel_cb } else { *ok };
            if let Some(cb) = cb {
                // SAFETY: PurpleRequestFieldsCb(void *user_data, PurpleRequestFields *), once.
                unsafe {
                    let f: unsafe extern "C" fn(*mut c_void, *mut p::PurpleRequestFields) =
                        std::mem::transmute(cb);
                    f(req.user_data, *fields);
                }
            }
            (p::PURPLE_REQUEST_FIELDS, true)
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
    // SAFETY: tells libpurple the request is finished (it calls close_request, a no-op now).
    unsafe { p::purple_request_close(rtype, req.id as *mut c_void) };
}

fn fill_fields(
    fields: *mut p::PurpleRequestFields,
    form: Option<&[(String, Vec<String>)]>,
    body: &str,
) {
    let mut body_used = false;
    for f in all_fields(fields) {
        // SAFETY: live request fields; setters copy strings.
        unsafe {
            // The id as the form showed it (see request_fields).
            let var = text::line(&string(p::purple_request_field_get_id(f)));
            let value = match form.and_then(|v| forms::value(v, &var)) {
                Some(v) => v.to_owned(),
                None if !body_used
                    && p::purple_request_field_get_type(f) == p::PURPLE_REQUEST_FIELD_STRING =>
                {
                    body_used = true;
                    body.to_owned()
                }
                None => continue,
            };
            match p::purple_request_field_get_type(f) {
                p::PURPLE_REQUEST_FIELD_STRING => {
                    let c = cstring(&value);
                    p::purple_request_field_string_set_value(f, c.as_ptr());
                }
                p::PURPLE_REQUEST_FIELD_INTEGER => {
                    if let Ok(n) = value.trim().parse() {
                        p::purple_request_field_int_set_value(f, n);
                    }
                }
                p::PURPLE_REQUEST_FIELD_BOOLEAN => {
                    p::purple_request_field_bool_set_value(f, forms::truthy(&value) as p::gboolean)
                }
                p::PURPLE_REQUEST_FIELD_CHOICE => {
                    if let Ok(n) = value.trim().parse() {
                        p::purple_request_field_choice_set_value(f, n);
                    }
                }
                _ => {}
            }
        }
    }
}

// ---- legacy authorisation requests ----------------------------------------------------------

#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn request_authorize(
    acc: *mut p::PurpleAccount,
    remote_user: *const c_char,
    _id: *const c_char,
    _alias: *const c_char,
    message: *const c_char,
    _on_list: p::gboolean,
    authorize: p::PurpleAccountRequestAuthorizationCb,
    deny: p::PurpleAccountRequestAuthorizationCb,
    user_data: *mut c_void,
) -> *mut c_void {
    super::ffi::guard("request_authorize", std::ptr::null_mut(), || {
        let Some(server) = core::server() else {
            return std::ptr::null_mut();
        };
        let t = Transport::get(&server);
        let Some(legacy) = t.id_of(acc) else {
            return std::ptr::null_mut();
        };
        let Some((owner, protocol)) = t
            .legacy
            .borrow()
            .get(&legacy)
            .map(|l| (l.owner.clone(), l.protocol.clone()))
        else {
            return std::ptr::null_mut();
        };
        let name = messages::peer_name(&protocol, &string(remote_user));
        let Some(contact) = t.contact_jid(legacy, &name) else {
            return std::ptr::null_mut();
        };
        let handle = {
            let mut pending = t.requests.borrow_mut();
            let handle = pending.next_handle();
            pending.auths.push(Auth {
                handle,
                legacy,
                name,
                authorize,
                deny,
                user_data,
            });
            handle
        };
        let mut el = Element::stanza("presence")
            .attr("from", contact.to_string())
            .attr("to", owner.to_string())
            .attr("type", "subscribe");
        let msg = text::display(&string(message));
        if !msg.is_empty() {
            el.push(Element::new("status", ns::CLIENT).text(msg));
        }
        roster_bridge::pending_in(&server, &owner, &contact, &el);
        server.to_available(&owner, &el);
        handle as *mut c_void
    })
}

pub unsafe extern "C" fn close_account_request(handle: *mut c_void) {
    super::ffi::guard("close_account_request", (), || {
        let Some(server) = core::server() else { return };
        Transport::get(&server)
            .requests
            .borrow_mut()
            .auths
            .retain(|a| a.handle != handle as usize);
    })
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
    let cb = if accept { auth.authorize } else { auth.deny };
    if let Some(cb) = cb {
        // SAFETY: PurpleAccountRequestAuthorizationCb(void *user_data), called exactly once.
        unsafe { cb(auth.user_data) };
    }
    if accept
        && let Some(contact) = t.contact_jid(legacy, name)
        && let Some(owner) = t.legacy.borrow().get(&legacy).map(|l| l.owner.clone())
    {
        roster_bridge::set_item(server, &owner, &contact.to_string(), name, &[], "both");
    }
    true
}

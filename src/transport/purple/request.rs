//! libpurple's request ui-ops (prompts), notify ui-op, and the account ui-ops' authorisation
//! requests, as safe values.
//!
//! Ownership: a request's callbacks and `user_data` belong to whoever asked (libpurple or a
//! prpl) and stay valid until the request is answered or closed; the `PurpleRequestFields`
//! of a fields request (and its groups and fields) belong to the request, alive until it is
//! closed. The answer types below hold them for that time; the caller calls one answer at
//! most once and then [`Request::close`]s the request (or libpurple closes it through the
//! `close_request` ui-op, after which the caller drops it). Strings are copied out at once.
//! `va_list` ops (`request_action`, `request_choice`) come through the C shim in purple-sys.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};

use purple_sys as p;

use super::account::Account;
use super::ffi::{cstring, glist, guard, string};

/// The texts of a prompt, as libpurple gave them (markup).
#[derive(Clone, Debug, Default)]
pub struct Prompt {
    pub title: String,
    pub primary: String,
    pub secondary: String,
}

fn prompt(title: *const c_char, primary: *const c_char, secondary: *const c_char) -> Prompt {
    Prompt {
        title: string(title),
        primary: string(primary),
        secondary: string(secondary),
    }
}

/// The actions of an action request (see the module's ownership note).
pub struct ActionAnswer {
    cbs: Vec<p::GCallback>,
    user_data: *mut c_void,
}

impl ActionAnswer {
    /// Runs action `i` (if it has a callback).
    pub fn call(&self, i: usize) {
        if let Some(cb) = self.cbs.get(i).copied().flatten() {
            // SAFETY: PurpleRequestActionCb(void *user_data, int action), with the request's
            // own user data while it is open.
            unsafe {
                let f: unsafe extern "C" fn(*mut c_void, c_int) = std::mem::transmute(cb);
                f(self.user_data, i as c_int);
            }
        }
    }
}

/// The ok/cancel callbacks of a choice, input or fields request.
pub struct OkCancel {
    ok: p::GCallback,
    cancel: p::GCallback,
    user_data: *mut c_void,
}

impl OkCancel {
    fn pick(&self, cancel: bool) -> p::GCallback {
        if cancel { self.cancel } else { self.ok }
    }

    /// A choice request's answer: `value`, or cancel.
    pub fn choice(&self, cancel: bool, value: i32) {
        if let Some(cb) = self.pick(cancel) {
            // SAFETY: PurpleRequestChoiceCb(void *user_data, int value), request still open.
            unsafe {
                let f: unsafe extern "C" fn(*mut c_void, c_int) = std::mem::transmute(cb);
                f(self.user_data, value);
            }
        }
    }

    /// An input request's answer: `value`, or cancel.
    pub fn input(&self, cancel: bool, value: &str) {
        let c = cstring(value);
        if let Some(cb) = self.pick(cancel) {
            // SAFETY: PurpleRequestInputCb(void *user_data, const char *value), request still
            // open; the value is borrowed for the call.
            unsafe {
                let f: unsafe extern "C" fn(*mut c_void, *const c_char) = std::mem::transmute(cb);
                f(self.user_data, c.as_ptr());
            }
        }
    }

    /// A fields request's answer (the fields set beforehand), or cancel.
    pub fn fields(&self, cancel: bool, fields: &Fields) {
        if let Some(cb) = self.pick(cancel) {
            // SAFETY: PurpleRequestFieldsCb(void *user_data, PurpleRequestFields *), request
            // still open, with its own fields.
            unsafe {
                let f: unsafe extern "C" fn(*mut c_void, *mut p::PurpleRequestFields) =
                    std::mem::transmute(cb);
                f(self.user_data, fields.0);
            }
        }
    }
}

/// The fields of a fields request (alive while the request is open).
pub struct Fields(*mut p::PurpleRequestFields);

/// One field of a fields request.
#[derive(Clone, Copy)]
pub struct Field(*mut p::PurpleRequestField);

/// A field's type and default.
#[derive(Clone, Debug)]
pub enum FieldKind {
    Text {
        masked: bool,
        default: String,
    },
    Int(i32),
    Bool(bool),
    /// Default index and labels.
    Choice(i32, Vec<String>),
    Label,
    Other,
}

impl Fields {
    pub fn all(&self) -> Vec<Field> {
        if self.0.is_null() {
            return Vec::new();
        }
        // SAFETY: borrowed lists of the open request's groups and fields.
        unsafe {
            glist(p::purple_request_fields_get_groups(self.0))
                .into_iter()
                .flat_map(|g| {
                    glist(p::purple_request_field_group_get_fields(
                        g as *mut p::PurpleRequestFieldGroup,
                    ))
                })
                .map(|f| Field(f as *mut p::PurpleRequestField))
                .collect()
        }
    }
}

impl Field {
    pub fn id(self) -> String {
        // SAFETY: a field of an open request; borrowed string copied.
        string(unsafe { p::purple_request_field_get_id(self.0) })
    }

    pub fn label(self) -> String {
        // SAFETY: as in `id`.
        string(unsafe { p::purple_request_field_get_label(self.0) })
    }

    pub fn required(self) -> bool {
        // SAFETY: a field of an open request.
        unsafe { p::purple_request_field_is_required(self.0) != 0 }
    }

    pub fn kind(self) -> FieldKind {
        let f = self.0;
        // SAFETY: a field of an open request; the typed getters match its type; borrowed
        // strings and lists are copied.
        unsafe {
            match p::purple_request_field_get_type(f) {
                p::PURPLE_REQUEST_FIELD_STRING => FieldKind::Text {
                    masked: p::purple_request_field_string_is_masked(f) != 0,
                    default: string(p::purple_request_field_string_get_default_value(f)),
                },
                p::PURPLE_REQUEST_FIELD_INTEGER => {
                    FieldKind::Int(p::purple_request_field_int_get_default_value(f))
                }
                p::PURPLE_REQUEST_FIELD_BOOLEAN => {
                    FieldKind::Bool(p::purple_request_field_bool_get_default_value(f) != 0)
                }
                p::PURPLE_REQUEST_FIELD_CHOICE => FieldKind::Choice(
                    p::purple_request_field_choice_get_default_value(f),
                    glist(p::purple_request_field_choice_get_labels(f))
                        .into_iter()
                        .map(|l| string(l as *const c_char))
                        .collect(),
                ),
                p::PURPLE_REQUEST_FIELD_LABEL => FieldKind::Label,
                _ => FieldKind::Other,
            }
        }
    }

    pub fn is_text(self) -> bool {
        // SAFETY: a field of an open request.
        unsafe { p::purple_request_field_get_type(self.0) == p::PURPLE_REQUEST_FIELD_STRING }
    }

    /// Sets the field from a text value, as its type reads it (numbers that do not parse and
    /// fields of other types are left alone).
    pub fn set(self, value: &str, truthy: bool) {
        let f = self.0;
        // SAFETY: a field of an open request; the setter matches its type; strings are copied.
        unsafe {
            match p::purple_request_field_get_type(f) {
                p::PURPLE_REQUEST_FIELD_STRING => {
                    let c = cstring(value);
                    p::purple_request_field_string_set_value(f, c.as_ptr());
                }
                p::PURPLE_REQUEST_FIELD_INTEGER => {
                    if let Ok(n) = value.trim().parse() {
                        p::purple_request_field_int_set_value(f, n);
                    }
                }
                p::PURPLE_REQUEST_FIELD_BOOLEAN => {
                    p::purple_request_field_bool_set_value(f, truthy as p::gboolean)
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

/// An open request, with what answers it.
pub enum Request {
    Action {
        labels: Vec<String>,
        answer: ActionAnswer,
    },
    Choice {
        labels: Vec<String>,
        values: Vec<i32>,
        answer: OkCancel,
    },
    Input {
        default: String,
        masked: bool,
        answer: OkCancel,
    },
    Fields {
        fields: Fields,
        answer: OkCancel,
    },
}

impl Request {
    /// Tells libpurple the request with ui handle `handle` is finished (libpurple then calls
    /// the `close_request` ui-op).
    pub fn close(&self, handle: usize) {
        let kind = match self {
            Request::Action { .. } => p::PURPLE_REQUEST_ACTION,
            Request::Choice { .. } => p::PURPLE_REQUEST_CHOICE,
            Request::Input { .. } => p::PURPLE_REQUEST_INPUT,
            Request::Fields { .. } => p::PURPLE_REQUEST_FIELDS,
        };
        // SAFETY: main thread; `handle` is the ui handle we returned for this request.
        unsafe { p::purple_request_close(kind, handle as *mut c_void) };
    }
}

/// A legacy contact's authorisation request (see the module's ownership note).
pub struct AuthAnswer {
    authorize: p::PurpleAccountRequestAuthorizationCb,
    deny: p::PurpleAccountRequestAuthorizationCb,
    user_data: *mut c_void,
}

impl AuthAnswer {
    pub fn call(&self, accept: bool) {
        let cb = if accept { self.authorize } else { self.deny };
        if let Some(cb) = cb {
            // SAFETY: PurpleAccountRequestAuthorizationCb(void *user_data), request open.
            unsafe { cb(self.user_data) };
        }
    }
}

/// The request, notify and authorisation ui-ops, as safe functions. `open` and `authorize`
/// return the ui handle (non-zero), or `None` for "no UI".
#[derive(Clone, Copy)]
pub struct UiOps {
    pub open: fn(Option<Account>, Prompt, Request) -> Option<usize>,
    pub close: fn(usize),
    pub notify: fn(Prompt),
    /// `(account, remote user, message, answer)`.
    pub authorize: fn(Account, &str, &str, AuthAnswer) -> Option<usize>,
    pub close_authorize: fn(usize),
}

thread_local! {
    static OPS: Cell<Option<UiOps>> = const { Cell::new(None) };
}

/// Sets the request, notify and account ui-ops (once, on the main thread).
pub fn set_ui_ops(ops: UiOps) {
    OPS.set(Some(ops));
    // SAFETY: main thread; the structs are leaked (libpurple keeps them); the shim forwards
    // the va_list ops to our two array-taking callbacks.
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
        p::purple_accounts_set_ui_ops(Box::leak(Box::new(p::PurpleAccountUiOps {
            request_authorize: Some(request_authorize),
            close_account_request: Some(close_account_request),
            ..Default::default()
        })));
    }
}

fn open(acc: *mut p::PurpleAccount, prompt: Prompt, req: Request) -> *mut c_void {
    let Some(ops) = OPS.get() else {
        return std::ptr::null_mut();
    };
    (ops.open)(Account::from_ptr(acc), prompt, req)
        .map_or(std::ptr::null_mut(), |h| h as *mut c_void)
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
    guard("request_action", std::ptr::null_mut(), || {
        // SAFETY: the shim passes `count` valid entries for the duration of the call.
        let (labels, cbs): (Vec<String>, Vec<p::GCallback>) = unsafe {
            (0..count)
                .map(|i| (string(*labels.add(i)), *cbs.add(i)))
                .unzip()
        };
        open(
            acc,
            prompt(title, primary, secondary),
            Request::Action {
                labels,
                answer: ActionAnswer { cbs, user_data },
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
    guard("request_choice", std::ptr::null_mut(), || {
        // SAFETY: as in request_action.
        let (labels, values): (Vec<String>, Vec<c_int>) = unsafe {
            (0..count)
                .map(|i| (string(*labels.add(i)), *values.add(i)))
                .unzip()
        };
        open(
            acc,
            prompt(title, primary, secondary),
            Request::Choice {
                labels,
                values,
                answer: OkCancel {
                    ok,
                    cancel,
                    user_data,
                },
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
    guard("request_input", std::ptr::null_mut(), || {
        open(
            acc,
            prompt(title, primary, secondary),
            Request::Input {
                default: string(default),
                masked: masked != 0,
                answer: OkCancel {
                    ok,
                    cancel,
                    user_data,
                },
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
    guard("request_fields", std::ptr::null_mut(), || {
        open(
            acc,
            prompt(title, primary, secondary),
            Request::Fields {
                fields: Fields(fields),
                answer: OkCancel {
                    ok,
                    cancel,
                    user_data,
                },
            },
        )
    })
}

unsafe extern "C" fn close_request(_kind: p::PurpleRequestType, handle: *mut c_void) {
    guard("close_request", (), || {
        if let Some(ops) = OPS.get() {
            (ops.close)(handle as usize)
        }
    })
}

unsafe extern "C" fn notify_message(
    _kind: p::PurpleNotifyMsgType,
    title: *const c_char,
    primary: *const c_char,
    secondary: *const c_char,
) -> *mut c_void {
    guard("notify_message", std::ptr::null_mut(), || {
        if let Some(ops) = OPS.get() {
            (ops.notify)(prompt(title, primary, secondary))
        }
        std::ptr::null_mut()
    })
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn request_authorize(
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
    guard("request_authorize", std::ptr::null_mut(), || {
        let (Some(ops), Some(acc)) = (OPS.get(), Account::from_ptr(acc)) else {
            return std::ptr::null_mut();
        };
        let answer = AuthAnswer {
            authorize,
            deny,
            user_data,
        };
        (ops.authorize)(acc, &string(remote_user), &string(message), answer)
            .map_or(std::ptr::null_mut(), |h| h as *mut c_void)
    })
}

unsafe extern "C" fn close_account_request(handle: *mut c_void) {
    guard("close_account_request", (), || {
        if let Some(ops) = OPS.get() {
            (ops.close_authorize)(handle as usize)
        }
    })
}

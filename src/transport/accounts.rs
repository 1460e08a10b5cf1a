//! Legacy accounts: wockd's store is the source of truth, libpurple holds a working copy.
//!
//! * The store (`store/transport.rs`) keeps owner, service, prpl, username (user splits
//!   included), password and the protocol-option settings the user chose.
//! * At start-up and on registration a `PurpleAccount` is made (or found) for each record,
//!   its options set from the service defaults then the user's settings, and the password
//!   injected just before connecting. `remember_password` stays off, so libpurple never writes
//!   the password to `accounts.xml`; nothing here logs it.
//! * The registration form is generated from the prpl's user splits (e.g. IRC's `@server`)
//!   and protocol options (port, TLS, encoding…), so every prpl gets a complete form.

use std::rc::Rc;

use jid::BareJid;
use purple_sys as p;

use super::ffi::{cstring, glist, opt_string, prpl_info, string};
use super::{Legacy, LinkState, ServiceInfo, Transport, core, policy, reconnect, text};
use crate::server::Server;
use crate::store::transport::LegacyAccount;

/// One field of the registration form.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// `username`, `password`, `split:N` or `opt:<setting>`.
    pub var: String,
    pub label: String,
    pub kind: FieldKind,
    pub default: String,
    pub required: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FieldKind {
    Text,
    Password,
    Int,
    Bool,
    /// (label, value) pairs.
    List(Vec<(String, String)>),
}

/// The form fields for a prpl: username, each user split, password, each protocol option.
pub fn form_fields(prpl: &str) -> Vec<Field> {
    let id = cstring(prpl);
    // SAFETY: plugin and its protocol info are static for the process; lists are borrowed.
    let info = prpl_info(unsafe { p::purple_find_prpl(id.as_ptr()) });
    let mut out = vec![Field {
        var: "username".into(),
        label: "Username".into(),
        kind: FieldKind::Text,
        default: String::new(),
        required: true,
    }];
    if info.is_null() {
        return out;
    }
    // SAFETY: reading the prpl's static option descriptions with libpurple's accessors.
    unsafe {
        for (i, split) in glist((*info).user_splits).into_iter().enumerate() {
            let s = split as *mut p::PurpleAccountUserSplit;
            out.push(Field {
                var: format!("split:{i}"),
                label: text::line(&string(p::purple_account_user_split_get_text(s))),
                kind: FieldKind::Text,
                default: string(p::purple_account_user_split_get_default_value(s)),
                required: true,
            });
        }
        let no_password = (*info).options & p::OPT_PROTO_NO_PASSWORD != 0;
        let optional = (*info).options & p::OPT_PROTO_PASSWORD_OPTIONAL != 0;
        if !no_password {
            out.push(Field {
                var: "password".into(),
                label: "Password".into(),
                kind: FieldKind::Password,
                default: String::new(),
                required: !optional,
            });
        }
        for opt in glist((*info).protocol_options) {
            let o = opt as *mut p::PurpleAccountOption;
            let setting = text::line(&string(p::purple_account_option_get_setting(o)));
            let label = text::line(&string(p::purple_account_option_get_text(o)));
            let (kind, default) = match p::purple_account_option_get_type(o) {
                p::PURPLE_PREF_BOOLEAN => (
                    FieldKind::Bool,
                    if p::purple_account_option_get_default_bool(o) != 0 {
                        "1"
                    } else {
                        "0"
                    }
                    .to_owned(),
                ),
                p::PURPLE_PREF_INT => (
                    FieldKind::Int,
                    p::purple_account_option_get_default_int(o).to_string(),
                ),
                p::PURPLE_PREF_STRING_LIST => {
                    let items = glist(p::purple_account_option_get_list(o))
                        .into_iter()
                        .map(|kv| {
                            let kv = kv as *mut p::PurpleKeyValuePair;
                            (
                                text::line(&string((*kv).key)),
                                text::line(&string((*kv).value as *const _)),
                            )
                        })
                        .collect();
                    (
                        FieldKind::List(items),
                        string(p::purple_account_option_get_default_list_value(o)),
                    )
                }
                _ => {
                    let kind = if p::purple_account_option_get_masked(o) != 0 {
                        FieldKind::Password
                    } else {
                        FieldKind::Text
                    };
                    (kind, string(p::purple_account_option_get_default_string(o)))
                }
            };
            out.push(Field {
                var: format!("opt:{setting}"),
                label,
                kind,
                default,
                required: false,
            });
        }
    }
    out
}

/// Builds libpurple's username from the form's username and user-split values
/// (`nick` + `@` + `server` for IRC).
pub fn compose_username(prpl: &str, username: &str, splits: &[String]) -> String {
    let id = cstring(prpl);
    // SAFETY: as in form_fields.
    let info = prpl_info(unsafe { p::purple_find_prpl(id.as_ptr()) });
    let mut out = username.to_owned();
    if info.is_null() {
        return out;
    }
    // SAFETY: as in form_fields.
    unsafe {
        for (i, split) in glist((*info).user_splits).into_iter().enumerate() {
            let s = split as *mut p::PurpleAccountUserSplit;
            let sep = p::purple_account_user_split_get_separator(s) as u8 as char;
            let v = splits.get(i).cloned().unwrap_or_default();
            let v = if v.is_empty() {
                string(p::purple_account_user_split_get_default_value(s))
            } else {
                v
            };
            if !v.is_empty() {
                out.push(sep);
                out.push_str(&v);
            }
        }
    }
    out
}

/// The hosts an account with `username` and `settings` (over the service's defaults)
/// connects to (see `policy::endpoints`).
pub fn hosts(info: &ServiceInfo, username: &str, settings: &[(String, String)]) -> Vec<String> {
    let mut effective = info.defaults.clone();
    effective.extend(settings.iter().cloned());
    policy::endpoints(
        username,
        effective.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

/// Applies one protocol-option setting with the type the prpl declares for it.
fn apply_setting(acc: *mut p::PurpleAccount, prpl: &str, key: &str, value: &str) {
    let kind = form_fields(prpl)
        .into_iter()
        .find(|f| f.var.strip_prefix("opt:") == Some(key))
        .map(|f| f.kind);
    let k = cstring(key);
    tracing::debug!(setting = key, kind = ?kind, "applying account setting");
    // SAFETY: acc is a live account; libpurple copies key and value.
    unsafe {
        match kind {
            Some(FieldKind::Bool) => {
                let b = matches!(value, "1" | "true" | "yes" | "on");
                p::purple_account_set_bool(acc, k.as_ptr(), b as p::gboolean)
            }
            Some(FieldKind::Int) => match value.trim().parse::<i32>() {
                Ok(n) => p::purple_account_set_int(acc, k.as_ptr(), n),
                Err(_) => tracing::warn!(setting = key, "not an integer; ignored"),
            },
            // Unknown keys are passed through as strings (Spectrum does the same for its
            // `[purple]` section): some prpls read settings they do not list.
            _ => {
                let v = cstring(value);
                p::purple_account_set_string(acc, k.as_ptr(), v.as_ptr())
            }
        }
    }
}

/// Loads every stored legacy account and logs in the enabled ones.
pub fn load_all(server: &Rc<Server>) {
    let list = match server.store.legacy_accounts() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot read legacy accounts: {e}");
            return;
        }
    };
    for rec in list {
        if Transport::get(server).service(&rec.service).is_none() {
            continue;
        }
        if let Some(id) = attach(server, &rec)
            && rec.enabled
        {
            login(server, id);
        }
    }
}

/// Makes the libpurple account for a stored record and the run-time entry; returns its id.
pub fn attach(server: &Rc<Server>, rec: &LegacyAccount) -> Option<i64> {
    if !core::on_main_thread() {
        return None;
    }
    let t = Transport::get(server);
    let info: ServiceInfo = t.service(&rec.service)?;
    let owner = BareJid::new(&format!("{}@{}", rec.owner.0, rec.owner.1)).ok()?;
    let existing = t.legacy.borrow().get(&rec.id).map(|l| l.account);
    let acc = match existing {
        Some(acc) => acc,
        None => {
            let user = cstring(&rec.username);
            let prpl = cstring(&rec.protocol);
            // Reuse the account libpurple loaded from accounts.xml unless another legacy
            // account (another wockd user with the same legacy username) holds it.
            // SAFETY: main thread; purple_accounts_find returns a borrowed live account.
            let found = unsafe { p::purple_accounts_find(user.as_ptr(), prpl.as_ptr()) };
            let taken = !found.is_null() && t.id_of(found).is_some();
            if !found.is_null() && !taken {
                found
            } else {
                // SAFETY: a new account, handed to libpurple's list which owns it from now on.
                unsafe {
                    let a = p::purple_account_new(user.as_ptr(), prpl.as_ptr());
                    p::purple_accounts_add(a);
                    a
                }
            }
        }
    };
    // SAFETY: acc is live; the settings are copied by libpurple.
    unsafe { p::purple_account_set_remember_password(acc, 0) };
    for (k, v) in &info.defaults {
        apply_setting(acc, &rec.protocol, k, v);
    }
    for (k, v) in &rec.settings {
        apply_setting(acc, &rec.protocol, k, v);
    }
    let mut legacy = t.legacy.borrow_mut();
    let index = rec.slot;
    legacy.entry(rec.id).or_insert_with(|| Legacy {
        id: rec.id,
        owner,
        service: rec.service.clone(),
        protocol: rec.protocol.clone(),
        username: rec.username.clone(),
        account: acc,
        state: LinkState::Offline,
        index,
        backoff: reconnect::Backoff::default(),
        rooms: Default::default(),
        told: None,
    });
    Some(rec.id)
}

/// Injects the password from the store and connects (if not already connecting).
pub fn login(server: &Rc<Server>, id: i64) {
    if !core::on_main_thread() {
        return;
    }
    let t = Transport::get(server);
    let Some(acc) = t.legacy.borrow().get(&id).map(|l| l.account) else {
        return;
    };
    let rec = server.store.legacy_account(id).ok().flatten();
    // The public-address rule (policy.rs): numeric addresses are checked here, names when
    // libpurple looks them up (the DNS ui-op), with this account's hosts let through if its
    // service allows private addresses.
    if let Some(rec) = &rec
        && let Some(info) = t.service(&rec.service)
    {
        let hosts = hosts(&info, &rec.username, &rec.settings);
        policy::set_account(id, hosts.clone(), info.allow_private);
        if !info.allow_private
            && let Some(why) = policy::literal_refusal(&hosts)
        {
            tracing::warn!(account = %rec.username, "not connecting: {why}");
            reconnect::failed(server, id, &why, true);
            return;
        }
    }
    let password = rec.and_then(|r| r.password);
    // An account already online (or on its way) keeps its state; only a real connect is
    // "connecting" — set before libpurple starts it, as enabling may connect at once.
    // SAFETY: main thread, live account.
    if unsafe { p::purple_account_is_disconnected(acc) } != 0
        && let Some(l) = t.legacy.borrow_mut().get_mut(&id)
    {
        l.state = LinkState::Connecting;
    }
    let ui = cstring(core::UI_ID);
    // SAFETY: main thread, live account. The password is copied by libpurple and, with
    // remember_password off, kept in memory only.
    unsafe {
        if let Some(pw) = password {
            let c = cstring(&pw);
            p::purple_account_set_password(acc, c.as_ptr());
        }
        p::purple_account_set_enabled(acc, ui.as_ptr(), 1);
        let st = p::purple_account_get_status_type_with_primitive(acc, p::PURPLE_STATUS_AVAILABLE);
        if !st.is_null() {
            p::purple_account_set_status_list(
                acc,
                p::purple_status_type_get_id(st),
                1,
                std::ptr::null_mut(),
            );
        }
        if p::purple_account_is_disconnected(acc) != 0 {
            p::purple_account_connect(acc);
        }
    }
}

/// Disconnects and stops automatic reconnects.
pub fn logout(server: &Rc<Server>, id: i64, state: LinkState) {
    let t = Transport::get(server);
    let acc = {
        let mut legacy = t.legacy.borrow_mut();
        let Some(l) = legacy.get_mut(&id) else { return };
        l.state = state;
        l.backoff.cancel();
        l.account
    };
    let ui = cstring(core::UI_ID);
    // SAFETY: main thread, live account.
    unsafe {
        p::purple_account_set_enabled(acc, ui.as_ptr(), 0);
        if p::purple_account_is_disconnected(acc) == 0 {
            p::purple_account_disconnect(acc);
        }
    }
}

/// Removes a legacy account everywhere: libpurple (buddies too) and the store.
pub fn remove(server: &Rc<Server>, id: i64) {
    logout(server, id, LinkState::Disabled);
    let t = Transport::get(server);
    let gone = t.legacy.borrow_mut().remove(&id);
    if let Some(l) = gone {
        // SAFETY: main thread; after this call the pointer is dead and no longer stored.
        unsafe { p::purple_accounts_delete(l.account) };
    }
    policy::set_account(id, Vec::new(), false);
    if let Err(e) = server.store.delete_legacy_account(id) {
        tracing::error!("cannot delete legacy account {id}: {e}");
    }
    super::roomlist::forget(id);
}

/// The prpl id of a legacy account (empty if unknown).
pub fn protocol(server: &Server, id: i64) -> String {
    Transport::get(server)
        .legacy
        .borrow()
        .get(&id)
        .map(|l| l.protocol.clone())
        .unwrap_or_default()
}

/// A short human label for an account: its libpurple username.
pub fn label(server: &Server, id: i64) -> String {
    Transport::get(server)
        .legacy
        .borrow()
        .get(&id)
        .map(|l| l.username.clone())
        .unwrap_or_default()
}

/// The connection of an online account.
pub fn connection(server: &Server, id: i64) -> Option<*mut p::PurpleConnection> {
    let acc = Transport::get(server)
        .legacy
        .borrow()
        .get(&id)
        .map(|l| l.account)?;
    // SAFETY: main thread, live account.
    let gc = unsafe { p::purple_account_get_connection(acc) };
    if gc.is_null() {
        return None;
    }
    // SAFETY: gc is live while the account is connected.
    let state = unsafe { p::purple_connection_get_state(gc) };
    (state == p::PURPLE_CONNECTED).then_some(gc)
}

/// The account's own name on the network (IRC: the nick), if known.
pub fn display_name(server: &Server, id: i64) -> Option<String> {
    let gc = connection(server, id)?;
    // SAFETY: live connection.
    opt_string(unsafe { p::purple_connection_get_display_name(gc) })
}

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

use super::purple::prpl::{OptionKind, Password, Prpl};
use super::purple::{Account, Connection, StatusKind};
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
    let mut out = vec![Field {
        var: "username".into(),
        label: "Username".into(),
        kind: FieldKind::Text,
        default: String::new(),
        required: true,
    }];
    let Some(form) = Prpl::find(prpl).and_then(|p| p.account_form()) else {
        return out;
    };
    for (i, split) in form.user_splits.into_iter().enumerate() {
        out.push(Field {
            var: format!("split:{i}"),
            label: text::line(&split.text),
            kind: FieldKind::Text,
            default: split.default,
            required: true,
        });
    }
    if form.password != Password::None {
        out.push(Field {
            var: "password".into(),
            label: "Password".into(),
            kind: FieldKind::Password,
            default: String::new(),
            required: form.password == Password::Required,
        });
    }
    for o in form.options {
        let (kind, default) = match o.kind {
            OptionKind::Bool(b) => (FieldKind::Bool, if b { "1" } else { "0" }.to_owned()),
            OptionKind::Int(n) => (FieldKind::Int, n.to_string()),
            OptionKind::List(items, default) => (
                FieldKind::List(
                    items
                        .into_iter()
                        .map(|(k, v)| (text::line(&k), text::line(&v)))
                        .collect(),
                ),
                default,
            ),
            OptionKind::Text { masked, default } => (
                if masked {
                    FieldKind::Password
                } else {
                    FieldKind::Text
                },
                default,
            ),
        };
        out.push(Field {
            var: format!("opt:{}", text::line(&o.setting)),
            label: text::line(&o.text),
            kind,
            default,
            required: false,
        });
    }
    out
}

/// Builds libpurple's username from the form's username and user-split values
/// (`nick` + `@` + `server` for IRC).
pub fn compose_username(prpl: &str, username: &str, splits: &[String]) -> String {
    let mut out = username.to_owned();
    let Some(form) = Prpl::find(prpl).and_then(|p| p.account_form()) else {
        return out;
    };
    for (i, split) in form.user_splits.into_iter().enumerate() {
        let v = splits.get(i).cloned().unwrap_or_default();
        let v = if v.is_empty() { split.default } else { v };
        if !v.is_empty() {
            out.push(split.separator);
            out.push_str(&v);
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
fn apply_setting(acc: Account, prpl: &str, key: &str, value: &str) {
    let kind = form_fields(prpl)
        .into_iter()
        .find(|f| f.var.strip_prefix("opt:") == Some(key))
        .map(|f| f.kind);
    tracing::debug!(setting = key, kind = ?kind, "applying account setting");
    match kind {
        Some(FieldKind::Bool) => {
            acc.set_bool(key, matches!(value, "1" | "true" | "yes" | "on"));
        }
        Some(FieldKind::Int) => match value.trim().parse::<i32>() {
            Ok(n) => acc.set_int(key, n),
            Err(_) => tracing::warn!(setting = key, "not an integer; ignored"),
        },
        // Unknown keys are passed through as strings (Spectrum does the same for its
        // `[purple]` section): some prpls read settings they do not list.
        _ => acc.set_string(key, value),
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
            // Reuse the account libpurple loaded from accounts.xml unless another legacy
            // account (another wockd user with the same legacy username) holds it.
            match Account::find(&rec.username, &rec.protocol) {
                Some(found) if t.id_of(found).is_none() => found,
                _ => Account::create(&rec.username, &rec.protocol)?,
            }
        }
    };
    acc.set_remember_password(false);
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
    if acc.is_disconnected()
        && let Some(l) = t.legacy.borrow_mut().get_mut(&id)
    {
        l.state = LinkState::Connecting;
    }
    // The password is copied by libpurple and, with remember_password off, kept in memory
    // only.
    if let Some(pw) = password {
        acc.set_password(&pw);
    }
    acc.set_enabled(core::UI_ID, true);
    acc.set_status(StatusKind::Available, None);
    if acc.is_disconnected() {
        acc.connect();
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
    acc.set_enabled(core::UI_ID, false);
    if !acc.is_disconnected() {
        acc.disconnect();
    }
}

/// Removes a legacy account everywhere: libpurple (buddies too) and the store.
pub fn remove(server: &Rc<Server>, id: i64) {
    logout(server, id, LinkState::Disabled);
    let t = Transport::get(server);
    let gone = t.legacy.borrow_mut().remove(&id);
    if let Some(l) = gone {
        // The handle is dead after this and no longer stored anywhere.
        l.account.delete();
    }
    policy::set_account(id, Vec::new(), false);
    if let Err(e) = server.store.delete_legacy_account(id) {
        tracing::error!("cannot delete legacy account {id}: {e}");
    }
    t.events
        .account_removed
        .publish(server, &super::events::AccountRemoved { id });
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
pub fn connection(server: &Server, id: i64) -> Option<Connection> {
    let acc = Transport::get(server)
        .legacy
        .borrow()
        .get(&id)
        .map(|l| l.account)?;
    acc.connection().filter(|gc| gc.is_connected())
}

/// The account's own name on the network (IRC: the nick), if known.
pub fn display_name(server: &Server, id: i64) -> Option<String> {
    connection(server, id)?.display_name()
}

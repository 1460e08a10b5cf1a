//! Protocol plugins (prpls): their names, user splits and protocol options.
//!
//! Ownership: a loaded plugin, its `PurplePluginInfo` and its protocol info (user splits,
//! options) are static for the life of the process; everything here is copied out.

use std::ffi::c_char;

use purple_sys as p;

use super::ffi::{cstring, glist, handle, prpl_info, string};

handle!(
    /// A loaded protocol plugin (static for the process).
    Prpl,
    p::PurplePlugin
);

/// One user split (`@server` for IRC): the extra parts of the libpurple username.
#[derive(Clone, Debug)]
pub struct UserSplit {
    pub text: String,
    pub default: String,
    pub separator: char,
}

/// The type and default of a protocol option.
#[derive(Clone, Debug)]
pub enum OptionKind {
    Bool(bool),
    Int(i32),
    /// (label, value) pairs and the default value.
    List(Vec<(String, String)>, String),
    Text {
        masked: bool,
        default: String,
    },
}

/// One protocol option (port, TLS, encoding…).
#[derive(Clone, Debug)]
pub struct ProtocolOption {
    pub setting: String,
    pub text: String,
    pub kind: OptionKind,
}

/// Whether accounts of a prpl have a password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Password {
    None,
    Optional,
    Required,
}

/// What a prpl asks of an account.
#[derive(Clone, Debug)]
pub struct AccountForm {
    pub user_splits: Vec<UserSplit>,
    pub password: Password,
    pub options: Vec<ProtocolOption>,
}

impl Prpl {
    pub fn find(id: &str) -> Option<Prpl> {
        let id = cstring(id);
        // SAFETY: main thread after purple_core_init; plugins live for the process.
        Prpl::from_ptr(unsafe { p::purple_find_prpl(id.as_ptr()) })
    }

    /// The plugin's name ("IRC", "XMPP"…).
    pub fn name(self) -> String {
        // SAFETY: a loaded plugin's info is static.
        unsafe {
            let info = (*self.as_ptr()).info;
            if info.is_null() {
                return String::new();
            }
            string((*info).name as *const c_char)
        }
    }

    /// The account form of a protocol plugin (`None` if the plugin is not one).
    pub fn account_form(self) -> Option<AccountForm> {
        let info = prpl_info(self.as_ptr());
        if info.is_null() {
            return None;
        }
        // SAFETY: reading the prpl's static option descriptions with libpurple's accessors;
        // the lists and their entries are borrowed and copied at once.
        unsafe {
            let user_splits = glist((*info).user_splits)
                .into_iter()
                .map(|split| {
                    let s = split as *mut p::PurpleAccountUserSplit;
                    UserSplit {
                        text: string(p::purple_account_user_split_get_text(s)),
                        default: string(p::purple_account_user_split_get_default_value(s)),
                        separator: p::purple_account_user_split_get_separator(s) as u8 as char,
                    }
                })
                .collect();
            let password = if (*info).options & p::OPT_PROTO_NO_PASSWORD != 0 {
                Password::None
            } else if (*info).options & p::OPT_PROTO_PASSWORD_OPTIONAL != 0 {
                Password::Optional
            } else {
                Password::Required
            };
            let options = glist((*info).protocol_options)
                .into_iter()
                .map(|opt| {
                    let o = opt as *mut p::PurpleAccountOption;
                    let kind = match p::purple_account_option_get_type(o) {
                        p::PURPLE_PREF_BOOLEAN => {
                            OptionKind::Bool(p::purple_account_option_get_default_bool(o) != 0)
                        }
                        p::PURPLE_PREF_INT => {
                            OptionKind::Int(p::purple_account_option_get_default_int(o))
                        }
                        p::PURPLE_PREF_STRING_LIST => {
                            let items = glist(p::purple_account_option_get_list(o))
                                .into_iter()
                                .map(|kv| {
                                    let kv = kv as *mut p::PurpleKeyValuePair;
                                    (string((*kv).key), string((*kv).value as *const _))
                                })
                                .collect();
                            OptionKind::List(
                                items,
                                string(p::purple_account_option_get_default_list_value(o)),
                            )
                        }
                        _ => OptionKind::Text {
                            masked: p::purple_account_option_get_masked(o) != 0,
                            default: string(p::purple_account_option_get_default_string(o)),
                        },
                    };
                    ProtocolOption {
                        setting: string(p::purple_account_option_get_setting(o)),
                        text: string(p::purple_account_option_get_text(o)),
                        kind,
                    }
                })
                .collect();
            Some(AccountForm {
                user_splits,
                password,
                options,
            })
        }
    }
}

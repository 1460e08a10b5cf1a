//! Safe wrappers over libpurple: every `unsafe` of the transport lives in this folder.
//!
//! The feature files (`accounts.rs`, `contacts.rs`, `messages.rs`, `muc.rs`…) call these
//! wrappers and contain no `unsafe` (a unit test in `ffi.rs` checks). Each file here keeps the
//! ownership note for the libpurple objects it wraps (who owns the pointer, how long it
//! lives); `ffi.rs` has the general rules. libpurple is not thread-safe: every function here
//! must run on the main thread, where libpurple's own callbacks arrive too.
//!
//! Callbacks: libpurple's ui-ops and signal handlers are `extern "C"` trampolines here, each
//! wrapped in [`ffi::guard`] (a panic is contained, not unwound into C). They turn their raw
//! arguments into handles and owned strings and call the safe functions the feature files
//! registered (`set_ui_ops`, `connect`…).
//!
//! Files: `init` (libpurple start-up, core ui-ops), `eventloop` (GLib event loop, the default
//! context pump, prpl-irc's send queue), `debug`, `dns` (GIO resolver), `account`,
//! `connection`, `conversation` (IMs, chats), `blist` (buddies), `prpl` (protocol plugins),
//! `request` (prompts, authorisation requests), `roomlist`, `certificate`, `markup`, `ffi`.

pub mod account;
pub mod blist;
pub mod certificate;
pub mod connection;
pub mod conversation;
pub mod debug;
pub mod dns;
pub mod eventloop;
pub mod ffi;
pub mod init;
pub mod markup;
pub mod prpl;
pub mod request;
pub mod roomlist;

pub use account::{Account, StatusKind};
pub use blist::Buddy;
pub use connection::{Connection, Typing};
pub use conversation::Conversation;

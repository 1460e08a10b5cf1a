//! The IQ-rule API of the seed's library example: a stream gets rules keyed by the payload's
//! (namespace, name) and the IQ type, and a handler receives an owned [`Incoming`] that it
//! must answer exactly once — at once, or later from a future on the main context.
//!
//! ```ignore
//! fn install(s: &mut Stream) {
//!     s.iqs().rule(ns::PING, "ping").get(|iq| iq.result(None));
//! }
//! ```

mod incoming;
mod rules;

pub use incoming::{Incoming, NS_PRIVILEGE, ReplyTo};
pub use rules::{Handler, IqRules, IqType, RuleBuilder};

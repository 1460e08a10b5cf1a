//! XEP-0199 XMPP Ping.
//!
//! * §4.2/§4.3 client-to-server: the server answers pings addressed to it (no `to`, a hosted
//!   domain) or to the sender's own bare JID; a ping to another account's bare JID gets
//!   `service-unavailable` (the server does not answer for other users).
//! * §4.1 server-to-client: the connection's housekeeping (src/stream/connection.rs) pings a
//!   bound client that has been silent for `limits.keepalive_secs` and drops it with
//!   `connection-timeout` when nothing at all comes back in time.

use crate::core::stanza::Condition;
use crate::core::Module;
use crate::xml::ns;

use crate::core::account::{Addressee, addressee};

pub fn install(s: &mut Module) {
    s.iqs()
        .rule(ns::PING, "ping")
        .get(|iq| match addressee(&iq) {
            Addressee::Other(_) => iq.fail(Condition::ServiceUnavailable, ""),
            _ => iq.result(None),
        });
}

//! XEP-0199 XMPP Ping.
//!
//! * §4.2/§4.3 client-to-server: the server answers pings addressed to it (no `to`, a hosted
//!   domain) or to the sender's own bare JID; a ping to another account's bare JID gets
//!   `service-unavailable` (the server does not answer for other users).
//! * §4.1 server-to-client: the connection's housekeeping (src/stream/connection.rs) pings a
//!   bound client that has been silent for `limits.keepalive_secs` and drops it with
//!   `connection-timeout` when nothing at all comes back in time.

use crate::core::account::{Addressee, addressee};
use crate::core::stanza::{Condition, IqResult};
use crate::core::{Incoming, Module};
use crate::xml::ns;

pub fn install(m: &mut Module) {
    m.iqs().rule(ns::PING, "ping").get_result(pong);
}

fn pong(iq: &Incoming) -> IqResult {
    match addressee(iq) {
        Addressee::Other(_) => Err(Condition::ServiceUnavailable.into()),
        _ => Ok(None),
    }
}

//! XEP-0199 XMPP Ping: the server answers pings addressed to it.

use crate::stream::Stream;
use crate::xml::ns;

pub fn install(s: &mut Stream) {
    s.iqs().rule(ns::PING, "ping").get(|iq| iq.result(None));
}

//! XEP-0092 Software Version: the server's name (`wockd`), version ([`crate::VERSION`]) and
//! operating system, answered when the request is for the server (no `to` or a hosted domain).
//! Accounts' bare JIDs get `service-unavailable`: their clients answer at full JIDs.

use crate::core::account::{Addressee, addressee};
use crate::core::stanza::{Condition, IqResult};
use crate::core::{Incoming, Module};
use crate::xml::{Element, ns};

pub fn install(m: &mut Module) {
    m.iqs().rule(ns::VERSION, "query").get_result(version);
}

fn version(iq: &Incoming) -> IqResult {
    match addressee(iq) {
        Addressee::Unaddressed | Addressee::Server => Ok(Some(
            Element::new("query", ns::VERSION)
                .child(Element::new("name", ns::VERSION).text("wockd"))
                .child(Element::new("version", ns::VERSION).text(crate::VERSION))
                .child(Element::new("os", ns::VERSION).text(std::env::consts::OS)),
        )),
        _ => Err(Condition::ServiceUnavailable.into()),
    }
}

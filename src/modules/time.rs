//! XEP-0202 Entity Time: the server's UTC time and its local offset (`tzo`), in the XEP-0082
//! formats, answered when the request is for the server (no `to` or a hosted domain). Accounts'
//! bare JIDs get `service-unavailable`: their clients answer at full JIDs.

use crate::core::account::{Addressee, addressee};
use crate::core::stanza::{Condition, IqResult};
use crate::core::{Incoming, Module, time};
use crate::xml::{Element, ns};

pub fn install(m: &mut Module) {
    m.iqs().rule(ns::TIME, "time").get_result(entity_time);
}

fn entity_time(iq: &Incoming) -> IqResult {
    match addressee(iq) {
        Addressee::Unaddressed | Addressee::Server => {
            let now = time::now_secs();
            let offset = time::format_offset(time::utc_offset(now));
            Ok(Some(
                Element::new("time", ns::TIME)
                    .child(Element::new("tzo", ns::TIME).text(offset))
                    .child(Element::new("utc", ns::TIME).text(time::datetime_secs(now))),
            ))
        }
        _ => Err(Condition::ServiceUnavailable.into()),
    }
}

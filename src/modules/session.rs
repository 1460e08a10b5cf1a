//! RFC 3921 §3 session establishment: a no-op since RFC 6121, still answered for old clients.

use crate::core::Module;
use crate::xml::ns;

pub fn install(s: &mut Module) {
    s.iqs()
        .rule(ns::SESSION, "session")
        .set(|iq| iq.result(None));
}

//! RFC 3921 §3 session establishment: a no-op since RFC 6121, still answered for old clients.

use crate::stream::Stream;
use crate::xml::ns;

pub fn install(s: &mut Stream) {
    s.iqs()
        .rule(ns::SESSION, "session")
        .set(|iq| iq.result(None));
}

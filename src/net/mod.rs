//! Sockets on the glib main loop: listeners, per-fd sources and TLS.

pub mod addr;
pub mod source;
pub mod tls;

//! Sockets on the glib main loop: listeners, per-fd sources and TLS; the address policy of
//! outbound connections made for users.

pub mod addr;
pub mod limits;
pub mod source;
pub mod tls;

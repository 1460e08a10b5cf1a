//! Sockets on the glib main loop: listeners, per-fd sources and TLS; the address policy of
//! outbound connections made for users.

pub mod limits;
pub mod addr;
pub mod source;
pub mod tls;

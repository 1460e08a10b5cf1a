//! Sockets on the glib main loop: listeners, per-fd sources and TLS; the address policy of
//! outbound connections made for users.

pub mod addr;
pub mod limits;
pub mod link;
pub mod source;
pub mod tls;

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

/// A non-blocking listening socket on `addr`. An IPv6 address listens on IPv6 only, so that
/// separate v4 and v6 listeners may share a port.
pub fn listen_tcp(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

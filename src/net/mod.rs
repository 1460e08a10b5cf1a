//! Sockets on the glib main loop: listeners, per-fd sources and TLS; the address policy of
//! outbound connections made for users.

pub mod addr;
pub mod limits;
pub mod link;
pub mod source;
pub mod tls;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use std::os::fd::AsRawFd;
use std::time::Duration;

use glib::{ControlFlow, IOCondition};
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

/// A non-blocking TCP connect to `addr`, awaited on the loop, with a timeout.
pub async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_nonblocking(true)?;
    match sock.connect(&addr.into()) {
        Ok(()) => return Ok(sock.into()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let (tx, rx) = async_channel::bounded::<bool>(1);
    let writable = {
        let tx = tx.clone();
        crate::net::source::watch_fd(
            sock.as_raw_fd(),
            IOCondition::OUT | IOCondition::ERR | IOCondition::HUP,
            move |_, _| {
                let _ = tx.try_send(true);
                ControlFlow::Break
            },
        )
    };
    let timer = crate::net::source::every(timeout, move || {
        let _ = tx.try_send(false);
        ControlFlow::Break
    });
    let done = rx.recv().await.unwrap_or(false);
    writable.destroy();
    timer.destroy();
    if !done {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
    }
    if let Some(e) = sock.take_error()? {
        return Err(e);
    }
    Ok(sock.into())
}

/// Listens on `addr` on the loop: every accepted connection goes to `accept` with the server,
/// while the server lives. Returns the bound address and the source (destroying it closes
/// the listener). `what` names the listener in logs.
pub fn serve(
    server: &std::rc::Rc<crate::server::Server>,
    addr: SocketAddr,
    backlog: i32,
    what: &'static str,
    accept: impl Fn(&std::rc::Rc<crate::server::Server>, TcpStream, SocketAddr) + 'static,
) -> io::Result<(SocketAddr, glib::Source)> {
    let listener = listen_tcp(addr, backlog)?;
    let local = listener.local_addr()?;
    let weak = std::rc::Rc::downgrade(server);
    let fd = listener.as_raw_fd();
    let src = crate::net::source::watch_fd(fd, IOCondition::IN, move |_, _| {
        let Some(server) = weak.upgrade() else {
            return ControlFlow::Break;
        };
        loop {
            match listener.accept() {
                Ok((sock, peer)) => accept(&server, sock, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ControlFlow::Continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("{what} accept: {e}");
                    return ControlFlow::Continue;
                }
            }
        }
    });
    Ok((local, src))
}

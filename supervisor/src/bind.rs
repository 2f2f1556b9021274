//! Getting the listening sockets: bound here (as root, before the drop) or taken from
//! systemd socket activation (`LISTEN_FDS`, matched to listeners by `LISTEN_FDNAMES`).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Backlog of every listening socket.
pub const BACKLOG: i32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("listener {listener}: cannot bind {addr}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("systemd passed fd {fd} named {name:?}, which is not a listening TCP socket")]
    NotListening { fd: i32, name: String },
    #[error("systemd passed fd {fd} named {name:?}, but no listener has that name")]
    UnknownName { fd: i32, name: String },
    #[error("invalid LISTEN_FDS environment: {0}")]
    Env(String),
}

/// One bound listening socket.
#[derive(Debug)]
pub struct Socket2 {
    pub addr: SocketAddr,
    pub fd: OwnedFd,
}

/// Binds `addr` for listening: close-on-exec, `SO_REUSEADDR`, `IPV6_V6ONLY` for IPv6.
pub fn bind(addr: SocketAddr) -> io::Result<Socket2> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(BACKLOG)?;
    let bound = local_addr(&socket)?;
    Ok(Socket2 {
        addr: bound,
        fd: socket.into(),
    })
}

fn local_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an inet socket"))
}

/// Listening sockets systemd passed us, by `FileDescriptorName=`.
#[derive(Debug, Default)]
pub struct Activated {
    pub by_name: BTreeMap<String, Vec<Socket2>>,
}

/// Reads `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`; `Ok(None)` when this process
/// was not socket-activated. The fds are checked (listening TCP sockets) and adopted.
/// Must run before anything else opens an fd.
pub fn from_systemd(listener_names: &[&str]) -> Result<Option<Activated>, BindError> {
    let Ok(pid) = std::env::var("LISTEN_PID") else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let count: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| BindError::Env("LISTEN_FDS is not a number".into()))?;
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut activated = Activated::default();
    for (i, owned) in crate::sys::adopt_systemd_fds(count).into_iter().enumerate() {
        let fd = 3 + i as i32;
        let name = names.get(i).cloned().unwrap_or_default();
        // Inherited without FD_CLOEXEC; keep them out of workers' exec.
        nix::fcntl::fcntl(
            owned.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| BindError::Env(format!("fd {fd}: {e}")))?;
        let socket = Socket::from(owned);
        let listening =
            socket.is_listener().unwrap_or(false) && socket.r#type().ok() == Some(Type::STREAM);
        let addr = match local_addr(&socket) {
            Ok(addr) if listening => addr,
            _ => return Err(BindError::NotListening { fd, name }),
        };
        if !listener_names.contains(&name.as_str()) {
            return Err(BindError::UnknownName { fd, name });
        }
        activated.by_name.entry(name).or_default().push(Socket2 {
            addr,
            fd: socket.into(),
        });
    }
    Ok(Some(activated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_v4_and_v6_only() {
        let s = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        assert_ne!(s.addr.port(), 0);
        if let Ok(s6) = bind("[::1]:0".parse().expect("addr")) {
            let sock = Socket::from(s6.fd);
            assert!(sock.only_v6().expect("v6only"));
        }
    }
}

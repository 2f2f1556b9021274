//! The fd handoff: one blocking `recvmsg` of the `Hello` with its fds, checked against
//! the manifest before anything else runs (no runtime exists yet).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};

use postern_config::counter::Counter;
use postern_config::ipc::{self, Hello, SupervisorMsg};
use postern_config::{codec, fdpass};

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("cannot receive the hello")]
    Recv(#[from] fdpass::FdPassError),
    #[error("the supervisor closed the ipc socket before the hello")]
    Eof,
    #[error("cannot decode the hello")]
    Decode(#[from] codec::CodecError),
    #[error("first message was not a hello")]
    NotHello,
    #[error("supervisor speaks ipc protocol {theirs}, this worker {ours}")]
    Proto { theirs: u32, ours: u32 },
    #[error("supervisor build {theirs} differs from this worker's {ours}")]
    Build { theirs: String, ours: String },
    #[error("manifest lists {listed} fds but {received} arrived")]
    CountMismatch { listed: usize, received: usize },
    #[error("fd for {expected} is bound to {actual}")]
    AddressMismatch {
        expected: SocketAddr,
        actual: SocketAddr,
    },
    #[error("fd for {0} is not a listening socket")]
    NotListening(SocketAddr),
    #[error("cannot inspect a received fd")]
    Inspect(#[source] std::io::Error),
    #[error("cannot map the connection counter")]
    Counter(#[source] std::io::Error),
}

/// What the handshake yields: the setup, its listening sockets and the counter.
pub struct Handoff {
    pub hello: Hello,
    pub listeners: Vec<TcpListener>,
    pub counter: Counter,
}

/// Receives and checks the `Hello` on `ipc` (blocking for the duration).
pub fn receive(ipc: &OwnedFd) -> Result<Handoff, HandshakeError> {
    fdpass::set_nonblocking(ipc, false).map_err(HandshakeError::Inspect)?;
    let (bytes, fds) =
        fdpass::recv_message(ipc.as_fd(), ipc::MAX_RECORD_BYTES)?.ok_or(HandshakeError::Eof)?;
    let SupervisorMsg::Hello(hello) = codec::decode::<SupervisorMsg>(&bytes)? else {
        return Err(HandshakeError::NotHello);
    };
    let hello = *hello;
    if hello.proto != ipc::PROTO {
        return Err(HandshakeError::Proto {
            theirs: hello.proto,
            ours: ipc::PROTO,
        });
    }
    if hello.build_id != postern_config::BUILD_ID {
        return Err(HandshakeError::Build {
            theirs: hello.build_id,
            ours: postern_config::BUILD_ID.into(),
        });
    }
    let (listeners, counter) = pair(&hello.sockets, fds)?;
    Ok(Handoff {
        hello,
        listeners,
        counter,
    })
}

/// Pairs received fds with the manifest: one listening socket per address, in order,
/// then the counter memfd.
pub fn pair(
    manifest: &[SocketAddr],
    mut fds: Vec<OwnedFd>,
) -> Result<(Vec<TcpListener>, Counter), HandshakeError> {
    if fds.len() != manifest.len() + 1 {
        return Err(HandshakeError::CountMismatch {
            listed: manifest.len() + 1,
            received: fds.len(),
        });
    }
    let counter_fd = fds.pop().ok_or(HandshakeError::CountMismatch {
        listed: 1,
        received: 0,
    })?;
    let counter = Counter::open(&counter_fd).map_err(HandshakeError::Counter)?;
    let listeners = manifest
        .iter()
        .zip(fds)
        .map(|(expected, fd)| {
            let listening =
                nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::AcceptConn).map_err(
                    |e| HandshakeError::Inspect(std::io::Error::from_raw_os_error(e as i32)),
                )?;
            if !listening {
                return Err(HandshakeError::NotListening(*expected));
            }
            let listener = TcpListener::from(fd);
            let actual = listener.local_addr().map_err(HandshakeError::Inspect)?;
            if actual != *expected {
                return Err(HandshakeError::AddressMismatch {
                    expected: *expected,
                    actual,
                });
            }
            listener
                .set_nonblocking(true)
                .map_err(HandshakeError::Inspect)?;
            Ok(listener)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((listeners, counter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_mismatches_are_caught() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let (_c, memfd) = Counter::create("t").expect("counter");
        // Wrong count.
        let err = pair(&[addr], vec![memfd.try_clone().expect("dup")])
            .err()
            .expect("count");
        assert!(matches!(err, HandshakeError::CountMismatch { .. }), "{err}");
        // Wrong address.
        let other: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let fd: OwnedFd = l.try_clone().expect("dup").into();
        let err = pair(&[other], vec![fd, memfd.try_clone().expect("dup")])
            .err()
            .expect("addr");
        assert!(
            matches!(err, HandshakeError::AddressMismatch { .. }),
            "{err}"
        );
        // Not listening.
        let s = std::net::TcpStream::connect(addr).expect("connect");
        let err = pair(
            &[s.local_addr().expect("addr")],
            vec![s.into(), memfd.try_clone().expect("dup")],
        )
        .err()
        .expect("listen");
        assert!(matches!(err, HandshakeError::NotListening(_)), "{err}");
        // Right.
        let (ls, _) = pair(&[addr], vec![l.into(), memfd]).expect("pair");
        assert_eq!(ls.len(), 1);
    }
}

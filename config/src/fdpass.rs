//! Records with attached fds over a `SOCK_SEQPACKET` Unix socket.
//!
//! One record is one message; fds travel as a single SCM_RIGHTS block on the record
//! that names them. Received fds are close-on-exec (`MSG_CMSG_CLOEXEC`) and become
//! [`OwnedFd`] at once, so no bare fd leaves this module.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

/// One received record: its bytes and the fds that rode with it.
pub type Record = (Vec<u8>, Vec<OwnedFd>);

/// Most fds one record may carry (`SCM_MAX_FD` is 253).
pub const MAX_FDS: usize = 253;

#[derive(Debug, thiserror::Error)]
pub enum FdPassError {
    #[error("record i/o")]
    Io(#[from] io::Error),
    #[error("record larger than {0} bytes was truncated")]
    Truncated(usize),
    #[error("control data was truncated (too many fds)")]
    ControlTruncated,
    #[error("{0} fds is more than one record may carry")]
    TooManyFds(usize),
}

fn io_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// A connected `SOCK_SEQPACKET` pair, both ends close-on-exec and non-blocking.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(io_err)
}

/// Sends one record, with `fds` attached when non-empty.
pub fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), FdPassError> {
    if fds.len() > MAX_FDS {
        return Err(FdPassError::TooManyFds(fds.len()));
    }
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
    let iov = [IoSlice::new(bytes)];
    let sent = sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(io_err)?;
    if sent != bytes.len() {
        return Err(FdPassError::Io(io::Error::new(
            io::ErrorKind::WriteZero,
            "short record write",
        )));
    }
    Ok(())
}

/// Receives one record of at most `max` bytes. `Ok(None)` is end of stream (the peer
/// closed). A would-block socket gives `Io` with kind `WouldBlock`.
pub fn recv(sock: BorrowedFd<'_>, max: usize) -> Result<Option<Record>, FdPassError> {
    let mut buf = vec![0u8; max];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (len, fds, flags) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io_err)?;
        let mut fds = Vec::new();
        // Adopt whatever arrived before judging the record, so nothing leaks.
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    fds.extend(crate::sys::adopt(&raw));
                }
            }
        }
        (msg.bytes, fds, msg.flags)
    };
    if flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(FdPassError::ControlTruncated);
    }
    if flags.contains(MsgFlags::MSG_TRUNC) {
        return Err(FdPassError::Truncated(max));
    }
    if len == 0 && fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(len);
    Ok(Some((buf, fds)))
}

/// Payloads up to this size travel inside the record; larger ones in a memfd.
pub const INLINE_MAX: usize = 32 * 1024;

const TAG_INLINE: u8 = 0;
const TAG_MEMFD: u8 = 1;

/// Sends a message of any size, supervisor to worker: inline in one record when
/// small, else written to a sealed memfd that rides first among the record's fds.
/// The record's first byte says which.
pub fn send_message(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), FdPassError> {
    if bytes.len() <= INLINE_MAX {
        let mut record = Vec::with_capacity(bytes.len() + 1);
        record.push(TAG_INLINE);
        record.extend_from_slice(bytes);
        return send(sock, &record, fds);
    }
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let memfd = memfd_create(
        "postern-msg",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(io_err)?;
    let mut file = std::fs::File::from(memfd);
    std::io::Write::write_all(&mut file, bytes)?;
    // The receiver reads from the shared file offset: rewind it.
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
    let seals = SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SEAL;
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals)).map_err(io_err)?;
    let mut record = vec![TAG_MEMFD];
    record.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    let mut all = Vec::with_capacity(fds.len() + 1);
    all.push(file.as_fd());
    all.extend_from_slice(fds);
    send(sock, &record, &all)
}

/// Receives a message sent with [`send_message`], refusing payloads over `max`.
pub fn recv_message(sock: BorrowedFd<'_>, max: usize) -> Result<Option<Record>, FdPassError> {
    let Some((record, mut fds)) = recv(sock, INLINE_MAX + 1)? else {
        return Ok(None);
    };
    match record.split_first() {
        Some((&TAG_INLINE, body)) => Ok(Some((body.to_vec(), fds))),
        Some((&TAG_MEMFD, len)) if len.len() == 8 && !fds.is_empty() => {
            let mut n = [0u8; 8];
            n.copy_from_slice(len);
            let len = u64::from_le_bytes(n) as usize;
            if len > max {
                return Err(FdPassError::Truncated(max));
            }
            let mut file = std::fs::File::from(fds.remove(0));
            let mut body = vec![0u8; len];
            std::io::Read::read_exact(&mut file, &mut body)?;
            Ok(Some((body, fds)))
        }
        _ => Err(FdPassError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "malformed message record",
        ))),
    }
}

/// A `SOCK_SEQPACKET` socket driven by tokio's readiness, records read and written
/// with the functions above. (Wrapped in a `UnixStream` only for its safe readiness
/// API; no stream read or write is ever made on it.)
pub struct Channel {
    socket: tokio::net::UnixStream,
}

impl Channel {
    /// Adopts `fd` (made non-blocking); needs a tokio runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Channel> {
        set_nonblocking(&fd, true)?;
        let socket = tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))?;
        Ok(Channel { socket })
    }

    /// One record of at most `max` bytes; `None` at end of stream.
    pub async fn recv(&self, max: usize) -> io::Result<Option<Record>> {
        self.io(tokio::io::Interest::READABLE, || {
            recv(self.socket.as_fd(), max)
        })
        .await
    }

    /// One message sent with [`send_message`], of at most `max` bytes.
    pub async fn recv_message(&self, max: usize) -> io::Result<Option<Record>> {
        self.io(tokio::io::Interest::READABLE, || {
            recv_message(self.socket.as_fd(), max)
        })
        .await
    }

    /// One record, no fds.
    pub async fn send(&self, bytes: &[u8]) -> io::Result<()> {
        self.io(tokio::io::Interest::WRITABLE, || {
            send(self.socket.as_fd(), bytes, &[])
        })
        .await
    }

    /// One message of any size (see [`send_message`]), no fds.
    pub async fn send_message(&self, bytes: &[u8]) -> io::Result<()> {
        self.io(tokio::io::Interest::WRITABLE, || {
            send_message(self.socket.as_fd(), bytes, &[])
        })
        .await
    }

    async fn io<T>(
        &self,
        interest: tokio::io::Interest,
        mut op: impl FnMut() -> Result<T, FdPassError>,
    ) -> io::Result<T> {
        loop {
            self.socket.ready(interest).await?;
            // `try_io` clears readiness on WouldBlock, so keep that error kind intact.
            match self.socket.try_io(interest, || op().map_err(into_io)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

fn into_io(e: FdPassError) -> io::Error {
    match e {
        FdPassError::Io(e) => e,
        other => io::Error::other(other),
    }
}

/// Switches an fd between blocking and non-blocking mode.
pub fn set_nonblocking(fd: impl AsFd, on: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL).map_err(io_err)?;
    let mut flags = OFlag::from_bits_truncate(flags);
    flags.set(OFlag::O_NONBLOCK, on);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags)).map_err(io_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn fds_cross_a_seqpacket_pair_with_their_record() {
        let (a, b) = seqpacket_pair().expect("pair");
        let l1 = TcpListener::bind("127.0.0.1:0").expect("bind");
        let l2 = TcpListener::bind("127.0.0.1:0").expect("bind");
        send(a.as_fd(), b"hello", &[l1.as_fd(), l2.as_fd()]).expect("send");
        let (bytes, fds) = recv(b.as_fd(), 64).expect("recv").expect("record");
        assert_eq!(bytes, b"hello");
        assert_eq!(fds.len(), 2);
        let got = TcpListener::from(fds.into_iter().next().expect("fd"));
        assert_eq!(
            got.local_addr().expect("addr"),
            l1.local_addr().expect("addr")
        );
        // Received fds are close-on-exec.
        let fl = nix::fcntl::fcntl(got.as_fd(), nix::fcntl::FcntlArg::F_GETFD).expect("getfd");
        assert_ne!(fl & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn large_messages_travel_in_a_memfd_with_their_fds() {
        let (a, b) = seqpacket_pair().expect("pair");
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        send_message(a.as_fd(), &big, &[l.as_fd()]).expect("send");
        let (body, fds) = recv_message(b.as_fd(), 1 << 20)
            .expect("recv")
            .expect("msg");
        assert_eq!(body, big);
        assert_eq!(fds.len(), 1);
        send_message(a.as_fd(), b"small", &[]).expect("send");
        let (body, fds) = recv_message(b.as_fd(), 1 << 20)
            .expect("recv")
            .expect("msg");
        assert_eq!((body.as_slice(), fds.len()), (&b"small"[..], 0));
        send_message(a.as_fd(), &big, &[]).expect("send");
        assert!(recv_message(b.as_fd(), 1000).is_err(), "over the limit");
    }

    #[test]
    fn oversized_record_is_refused_and_eof_is_none() {
        let (a, b) = seqpacket_pair().expect("pair");
        send(a.as_fd(), &[7u8; 100], &[]).expect("send");
        assert!(matches!(
            recv(b.as_fd(), 10),
            Err(FdPassError::Truncated(10))
        ));
        drop(a);
        assert!(recv(b.as_fd(), 10).expect("eof").is_none());
    }
}

//! `splice-relay`: the least a relay can do, as a reference beside postern.
//!
//! A blind TCP relay with nothing but the kernel's zero-copy path: per connection, one
//! blocking thread per direction moving socket → pipe → socket with `splice(2)` through
//! a pipe of postern's size (256 KiB). No protocol, no event loop, no timers, no
//! accounting. Whatever throughput it loses against a direct connection is the cost of
//! the second TCP connection itself on this machine, the floor under any proxy.
//!
//! Prints `listening <addr>` on stdout once bound and then serves until killed.

use std::io::{self, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::thread;

use anyhow::{Context as _, Result};
use clap::Args;
use nix::errno::Errno;
use nix::fcntl::{self, FcntlArg, OFlag, SpliceFFlags};
use nix::unistd;

/// The pipe size postern asks for (`worker/src/splice.rs`, `PIPE_BYTES`).
const PIPE_BYTES: usize = 256 * 1024;

#[derive(Args)]
pub struct SpliceRelayArgs {
    /// Where to listen (port 0: any free port, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The backend every connection is relayed to.
    #[arg(long)]
    to: SocketAddr,
}

pub fn run(args: &SpliceRelayArgs) -> Result<()> {
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("bind {}", args.listen))?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening {}", listener.local_addr()?)?;
    out.flush()?;
    drop(out);
    serve(&listener, args.to)
}

/// Relays every connection `listener` accepts to `to`.
fn serve(listener: &TcpListener, to: SocketAddr) -> Result<()> {
    for client in listener.incoming() {
        let client = client.context("accept")?;
        let backend = match TcpStream::connect(to) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("bench: splice-relay: connect {to}: {e}");
                continue;
            }
        };
        for s in [&client, &backend] {
            s.set_nodelay(true)?;
        }
        let (c2, b2) = (client.try_clone()?, backend.try_clone()?);
        thread::spawn(move || pump(&client, &backend));
        thread::spawn(move || pump(&b2, &c2));
    }
    Ok(())
}

/// Moves `from` → `to` until EOF or an error, then half-closes `to`.
fn pump(from: &TcpStream, to: &TcpStream) {
    if let Err(e) = splice_all(from, to) {
        eprintln!("bench: splice-relay: {e}");
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn splice_all(from: &TcpStream, to: &TcpStream) -> io::Result<()> {
    let (read, write) = unistd::pipe2(OFlag::O_CLOEXEC)?;
    // A refused resize leaves the default 64 KiB.
    let _ = fcntl::fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as i32));
    loop {
        let mut queued = splice(from, &write, PIPE_BYTES)?;
        if queued == 0 {
            return Ok(());
        }
        while queued > 0 {
            match splice(&read, to, queued)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => queued -= n,
            }
        }
    }
}

/// One blocking `splice(2)` of up to `len` bytes, retried on EINTR.
fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    loop {
        match fcntl::splice(&from, None, &to, None, len, SpliceFFlags::SPLICE_F_MOVE) {
            Err(Errno::EINTR) => {}
            r => return Ok(r?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    /// Bytes both ways, byte-exact, and a half-close passed on: an echo backend sees the
    /// client's EOF and closes, and the client reads everything before its own EOF.
    #[test]
    fn relays_byte_exact_with_half_close() {
        let backend = TcpListener::bind("127.0.0.1:0").expect("bind");
        let backend_addr = backend.local_addr().expect("addr");
        thread::spawn(move || {
            let (mut s, _) = backend.accept().expect("accept");
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("backend read");
            s.write_all(&got).expect("backend write");
        });
        let relay = TcpListener::bind("127.0.0.1:0").expect("bind");
        let relay_addr = relay.local_addr().expect("addr");
        thread::spawn(move || serve(&relay, backend_addr));

        let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut c = TcpStream::connect(relay_addr).expect("connect");
        c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("timeout");
        let writer = {
            let (mut c, data) = (c.try_clone().expect("clone"), data.clone());
            thread::spawn(move || {
                c.write_all(&data).expect("client write");
                c.shutdown(Shutdown::Write).expect("shutdown");
            })
        };
        let mut back = Vec::new();
        c.read_to_end(&mut back).expect("client read");
        writer.join().expect("writer");
        assert!(back == data, "{} bytes back of {}", back.len(), data.len());
    }
}

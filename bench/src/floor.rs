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
    for client in listener.incoming() {
        let client = client.context("accept")?;
        let backend = match TcpStream::connect(args.to) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("bench: splice-relay: connect {}: {e}", args.to);
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

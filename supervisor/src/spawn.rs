//! Starting one worker: exec `/proc/self/exe worker`, fd 3 its end of a
//! `SOCK_SEQPACKET` pair, then the `Hello` with the listening fds attached.
//!
//! Only fork+exec: never a bare fork once a runtime exists (reference/privsep.md §2.3).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::Stdio;

use postern_config::{codec, fdpass, ipc};

/// Environment variables a worker may inherit; everything else is cleared.
const PASSED_ENV: &[&str] = &[
    "POSTERN_LOG",
    "POSTERN_LOG_FORMAT",
    "RUST_BACKTRACE",
    "RUST_LIB_BACKTRACE",
];

/// A worker that has been exec'd and handed its `Hello`.
pub struct Spawned {
    pub child: tokio::process::Child,
    pub pid: u32,
    /// The supervisor's end of the IPC pair (non-blocking).
    pub ipc: OwnedFd,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create the worker's ipc socket")]
    Pair(#[source] io::Error),
    #[error("cannot exec the worker")]
    Exec(#[source] io::Error),
    #[error("cannot encode the worker's hello")]
    Encode(#[from] codec::CodecError),
    #[error("cannot send the worker its hello")]
    Send(#[from] fdpass::FdPassError),
}

/// Execs a worker and sends it `hello` with `fds` (the listening sockets, then the
/// connection counter) attached.
pub fn spawn(
    hello: &ipc::Hello,
    fds: &[BorrowedFd<'_>],
    log_filter: &str,
) -> Result<Spawned, SpawnError> {
    let (ours, theirs) = fdpass::seqpacket_pair().map_err(SpawnError::Pair)?;
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.arg0("postern")
        .args(["worker", "--ipc-fd", "3", "--id", &hello.worker_id])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(false);
    for key in PASSED_ENV {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    if std::env::var_os("POSTERN_LOG").is_none() {
        cmd.env("POSTERN_LOG", log_filter);
    }
    crate::sys::worker_pre_exec(&mut cmd, theirs.as_raw_fd());
    let child = cmd.spawn().map_err(SpawnError::Exec)?;
    drop(theirs);
    let pid = child.id().unwrap_or(0);
    let msg = codec::encode(&ipc::SupervisorMsg::Hello(Box::new(hello.clone())))?;
    // The pair is fresh, so the first record always fits in the send buffer (large
    // payloads go through a memfd).
    fdpass::send_message(ours.as_fd(), &msg, fds)?;
    Ok(Spawned {
        child,
        pid,
        ipc: ours,
    })
}

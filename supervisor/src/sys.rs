//! The supervisor's only unsafe code: prctl calls nix does not wrap, the `pre_exec`
//! hook of worker spawns, and adopting systemd's inherited fds.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `PR_SET_SECUREBITS`.
pub fn set_securebits(bits: libc::c_ulong) -> io::Result<()> {
    // SAFETY: PR_SET_SECUREBITS takes one integer argument and touches no memory of ours.
    check(unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) })
}

/// `PR_SET_DUMPABLE`.
pub fn set_dumpable(on: bool) -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no memory of ours.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(on), 0, 0, 0) })
}

/// Marks every fd from `first` up close-on-exec, so nothing inherited by the
/// supervisor leaks into a worker.
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on open fds.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11: walk the fd table instead.
    let dir = std::fs::read_dir("/proc/self/fd")?;
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on an fd number only changes its flag; a stale number fails harmlessly.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Takes ownership of the `count` listening fds systemd passed (from fd 3). Called
/// once, at startup, before anything else could have claimed those numbers.
pub fn adopt_systemd_fds(count: i32) -> Vec<OwnedFd> {
    (3..3 + count)
        // SAFETY: systemd passed fds 3..3+LISTEN_FDS to this process (LISTEN_PID
        // checked by the caller) and nothing has used them yet.
        .map(|fd| unsafe { postern_config::adopt_inherited(fd) })
        .collect()
}

/// Arranges for a spawned worker to find `ipc` at fd 3, in its own process group.
/// Runs in the child between fork and exec: async-signal-safe calls only.
pub fn worker_pre_exec(cmd: &mut tokio::process::Command, ipc: RawFd) {
    let target = postern_config::ipc::WORKER_IPC_FD;
    // SAFETY: the closure makes only async-signal-safe calls (dup2, fcntl, setpgid) and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if ipc == target {
                // dup2 onto itself would keep FD_CLOEXEC: clear it instead.
                check(libc::fcntl(ipc, libc::F_SETFD, 0))?;
            } else {
                check(libc::dup2(ipc, target))?;
            }
            check(libc::setpgid(0, 0))?;
            Ok(())
        });
    }
}

//! The contract crate's only unsafe code: adopting raw fds the kernel handed us.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Takes ownership of fds just received through SCM_RIGHTS.
pub(crate) fn adopt(raw: &[RawFd]) -> Vec<OwnedFd> {
    raw.iter()
        // SAFETY: each fd was installed in our table by this recvmsg call and nothing
        // else refers to it yet, so this is its one owner.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

/// Takes ownership of an fd inherited at a fixed number (the worker's IPC fd 3, or a
/// systemd `LISTEN_FDS` fd).
///
/// # Safety
/// `fd` must be open and owned by nobody else in this process.
pub unsafe fn adopt_inherited(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

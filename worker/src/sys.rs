//! The worker's only unsafe code: adopting its inherited IPC fd.

use std::os::fd::OwnedFd;

/// Takes the IPC socket the supervisor placed at fd 3. Called once, first thing in
/// `postern worker`, before anything could have claimed fd 3.
pub fn take_ipc_fd(fd: i32) -> Option<OwnedFd> {
    if fd != postern_config::ipc::WORKER_IPC_FD {
        return None;
    }
    // Refuse a closed fd rather than adopting a number nobody opened; and keep it
    // out of anything exec'd later (dup2 cleared the flag).
    nix::fcntl::fcntl(
        // SAFETY: borrowing fd 3 for one fcntl call; it is not closed meanwhile.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .ok()?;
    // SAFETY: the supervisor dup2'd our end of the IPC pair to fd 3 before exec, and
    // this is the only place that takes it.
    Some(unsafe { postern_config::adopt_inherited(fd) })
}

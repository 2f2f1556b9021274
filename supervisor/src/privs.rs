//! Dropping root for good (reference/privsep.md §2.4), and proving it.
//!
//! Runs once, in the supervisor, after every socket is bound and every key is read,
//! while the process has exactly one thread: capabilities and securebits are
//! per-thread, so a second thread would keep what this one drops.

use std::io;

use caps::CapSet;
use nix::unistd::{Gid, Group, Uid, User};

/// The account to drop to, looked up while NSS can still run.
#[derive(Debug, Clone)]
pub struct Account {
    pub user: String,
    pub uid: Uid,
    pub gid: Gid,
}

#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error(
        "service account {0:?} does not exist; create it (the package does) or set server.user"
    )]
    NoUser(String),
    #[error("service group {0:?} does not exist; create it or set server.group")]
    NoGroup(String),
    #[error("refusing to run the service as root; set server.user to an unprivileged account")]
    RootTarget,
    #[error("privileges must be dropped while single-threaded, but the process has {0} threads")]
    Threaded(usize),
    #[error("{step} failed")]
    Step {
        step: &'static str,
        source: io::Error,
    },
    #[error("privilege drop did not hold: {0}")]
    Verify(String),
}

/// Resolves `server.user` and `server.group`.
pub fn lookup(user: &str, group: &str) -> Result<Account, PrivError> {
    let u = User::from_name(user)
        .ok()
        .flatten()
        .ok_or_else(|| PrivError::NoUser(user.into()))?;
    let g = Group::from_name(group)
        .ok()
        .flatten()
        .ok_or_else(|| PrivError::NoGroup(group.into()))?;
    if u.uid.is_root() || g.gid.as_raw() == 0 {
        return Err(PrivError::RootTarget);
    }
    Ok(Account {
        user: u.name,
        uid: u.uid,
        gid: g.gid,
    })
}

fn step<T, E: Into<io::Error>>(step: &'static str, r: Result<T, E>) -> Result<T, PrivError> {
    r.map_err(|e| PrivError::Step {
        step,
        source: e.into(),
    })
}

fn caps_err(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// NOROOT, NO_SETUID_FIXUP_LOCKED, KEEP_CAPS_LOCKED and NO_CAP_AMBIENT_RAISE, each
/// locked: root regains nothing on exec, and nothing can be re-enabled.
const SECUREBITS: libc::c_ulong = 0xEB;

/// Drops to `account` with no capability in any set, then sets `NoNewPrivs` and makes
/// the process non-dumpable. Verifies the result; an error means the process must exit.
pub fn drop_to(account: &Account) -> Result<(), PrivError> {
    let threads = thread_count();
    if threads != 1 {
        return Err(PrivError::Threaded(threads));
    }
    step(
        "PR_SET_KEEPCAPS",
        nix::sys::prctl::set_keepcaps(false).map_err(nix_err),
    )?;
    step(
        "clearing the ambient set",
        caps::clear(None, CapSet::Ambient).map_err(caps_err),
    )?;
    // Needs CAP_SETPCAP, so before the uid change.
    step(
        "clearing the bounding set",
        caps::clear(None, CapSet::Bounding).map_err(caps_err),
    )?;
    step("PR_SET_SECUREBITS", crate::sys::set_securebits(SECUREBITS))?;
    step("setgroups", nix::unistd::setgroups(&[]).map_err(nix_err))?;
    step(
        "setresgid",
        nix::unistd::setresgid(account.gid, account.gid, account.gid).map_err(nix_err),
    )?;
    // All uids non-zero and KEEPCAPS off: the kernel clears permitted and effective.
    step(
        "setresuid",
        nix::unistd::setresuid(account.uid, account.uid, account.uid).map_err(nix_err),
    )?;
    step(
        "clearing the inheritable set",
        caps::clear(None, CapSet::Inheritable).map_err(caps_err),
    )?;
    verify(account)?;
    seal()
}

/// `NoNewPrivs` and non-dumpable: done in every mode, dropped or not.
pub fn seal() -> Result<(), PrivError> {
    step(
        "PR_SET_NO_NEW_PRIVS",
        nix::sys::prctl::set_no_new_privs().map_err(nix_err),
    )?;
    step("PR_SET_DUMPABLE", crate::sys::set_dumpable(false))?;
    Ok(())
}

fn verify(account: &Account) -> Result<(), PrivError> {
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivError::Verify("setuid(0) succeeded".into()));
    }
    if nix::unistd::setgid(Gid::from_raw(0)).is_ok() {
        return Err(PrivError::Verify("setgid(0) succeeded".into()));
    }
    let uids = nix::unistd::getresuid().map_err(|e| PrivError::Verify(e.to_string()))?;
    let gids = nix::unistd::getresgid().map_err(|e| PrivError::Verify(e.to_string()))?;
    if [uids.real, uids.effective, uids.saved] != [account.uid; 3]
        || [gids.real, gids.effective, gids.saved] != [account.gid; 3]
    {
        return Err(PrivError::Verify(
            "uids or gids are not all the service account's".into(),
        ));
    }
    for set in [
        CapSet::Permitted,
        CapSet::Effective,
        CapSet::Inheritable,
        CapSet::Ambient,
        CapSet::Bounding,
    ] {
        let held = caps::read(None, set).map_err(|e| PrivError::Verify(e.to_string()))?;
        if !held.is_empty() {
            return Err(PrivError::Verify(format!(
                "{set:?} set still holds {held:?}"
            )));
        }
    }
    Ok(())
}

/// Threads of this process, from `/proc/self/status`.
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

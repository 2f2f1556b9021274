//! The worker's seccomp sandbox (reference/privsep.md §2.10).
//!
//! Installed after the tokio runtime is built (building it needs `socketpair`,
//! `eventfd2`, `epoll_create1`) and applied to every thread (TSYNC). Filters stack,
//! and the most severe action wins, so:
//! - filter B1 makes `clone3` fail with ENOSYS, so glibc falls back to `clone`, whose
//!   flags can be checked;
//! - filter B2 makes file opens and stats fail with EACCES (a soft deny: a library
//!   probing a file gets an error, not a dead worker);
//! - filter A, installed last because installing a filter needs `prctl` and `seccomp`
//!   which A forbids, allows the list below and kills the process on anything else
//!   (`enforce`) or lets it through with an audit log line (`log`).
//!
//! `bind` is allowed (backend `source_ips`) but `listen` is not: a worker can never
//! open a listening socket of its own. No `execve`, `kill`, `ptrace`, `pidfd_*`,
//! `process_vm_*`, `io_uring_*`, `unshare`, `setns`, `mount`, `bpf`.

use std::collections::BTreeMap;

use postern_config::model::SeccompMode;
use seccompiler::{
    apply_filter_all_threads, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp,
    SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("this architecture has no seccomp filter")]
    UnsupportedArch,
    #[error("cannot build the seccomp filter")]
    Build(#[source] seccompiler::BackendError),
    #[error("cannot compile the seccomp filter")]
    Compile(#[source] seccompiler::BackendError),
    #[error("cannot install the seccomp filter")]
    Install(#[source] seccompiler::Error),
}

/// Syscalls a worker makes in normal operation (measured with `strace -ff`).
const ALLOWED: &[i64] = &[
    // I/O and sockets
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_lseek,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_recvmmsg,
    libc::SYS_sendmmsg,
    libc::SYS_accept4,
    libc::SYS_close,
    libc::SYS_shutdown,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_pipe2,
    libc::SYS_splice,
    libc::SYS_dup,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_openat,
    // event loop
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_epoll_ctl,
    libc::SYS_ppoll,
    // memory and signals
    libc::SYS_futex,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_mremap,
    libc::SYS_brk,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    // threads, time, identity
    libc::SYS_clone3,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// Older syscalls that exist only on some architectures (aarch64 has neither).
#[cfg(target_arch = "x86_64")]
const ARCH_ALLOWED: &[i64] = &[libc::SYS_epoll_wait, libc::SYS_poll];
#[cfg(not(target_arch = "x86_64"))]
const ARCH_ALLOWED: &[i64] = &[];

/// Installs the worker filters. `Off` installs nothing.
pub fn install(mode: SeccompMode) -> Result<(), SandboxError> {
    let kill_or_log = match mode {
        SeccompMode::Off => return Ok(()),
        SeccompMode::Enforce => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
    };
    let arch = target_arch()?;
    let b1 = filter(
        [(libc::SYS_clone3, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    let b2 = filter(
        [libc::SYS_openat, libc::SYS_newfstatat, libc::SYS_statx]
            .into_iter()
            .map(|s| (s, vec![]))
            .collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        arch,
    )?;
    let a = filter(allowlist()?, kill_or_log, SeccompAction::Allow, arch)?;
    for program in [b1, b2, a] {
        apply_filter_all_threads(&program).map_err(SandboxError::Install)?;
    }
    Ok(())
}

fn target_arch() -> Result<TargetArch, SandboxError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| SandboxError::UnsupportedArch)
}

fn filter(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, SandboxError> {
    let f = SeccompFilter::new(rules, mismatch, matched, arch).map_err(SandboxError::Build)?;
    f.try_into().map_err(SandboxError::Compile)
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SandboxError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(SandboxError::Build)
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SandboxError> {
    SeccompRule::new(conds).map_err(SandboxError::Build)
}

fn allowlist() -> Result<BTreeMap<i64, Vec<SeccompRule>>, SandboxError> {
    use SeccompCmpOp::{Eq, MaskedEq};
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
        .iter()
        .chain(ARCH_ALLOWED)
        .map(|s| (*s, vec![]))
        .collect();
    // socket(): IPv4 and IPv6 only (no AF_UNIX, AF_NETLINK, AF_PACKET...).
    rules.insert(
        libc::SYS_socket,
        vec![
            rule(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                Eq,
                libc::AF_INET as u64,
            )
            .map_err(SandboxError::Build)?])?,
            rule(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                Eq,
                libc::AF_INET6 as u64,
            )
            .map_err(SandboxError::Build)?])?,
        ],
    );
    // clone(): threads only, never new namespaces.
    let new_ns = (libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWCGROUP) as u64;
    rules.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(0, MaskedEq(new_ns), 0)?])?],
    );
    // prctl(): naming threads only.
    rules.insert(
        libc::SYS_prctl,
        vec![rule(vec![cond(0, Eq, libc::PR_SET_NAME as u64)?])?],
    );
    // tgkill(): only signals to our own threads (Rust's abort, tokio's wakeups).
    rules.insert(
        libc::SYS_tgkill,
        vec![rule(vec![cond(0, Eq, u64::from(std::process::id()))?])?],
    );
    Ok(rules)
}

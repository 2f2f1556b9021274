//! Supervisor <-> worker messages. One enum per direction; these enums are the whole
//! protocol. Each message is one `SOCK_SEQPACKET` record, encoded by [`crate::codec`];
//! the listening fds ride as SCM_RIGHTS on the `Hello` record that names them.
//!
//! The supervisor decodes [`WorkerMsg`] as hostile input: a record that does not decode,
//! or a message wrong for the worker's phase, gets that worker killed, never the
//! supervisor.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::material::Material;
use crate::model::Config;

/// Version of this protocol; bump it on any change to the enums below.
pub const PROTO: u32 = 3;

/// Largest record either side accepts. The `Hello` carries the config and TLS
/// material, so it is generous; everything else is tiny.
pub const MAX_RECORD_BYTES: usize = 8 << 20;

/// The fd a worker finds its end of the IPC socketpair on.
pub const WORKER_IPC_FD: i32 = 3;

/// Everything the supervisor may say to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SupervisorMsg {
    /// Sent exactly once, first, with one listening fd per entry of `sockets`.
    Hello(Box<Hello>),
    /// Stop accepting, let live sessions finish, exit 0 before `deadline_ms`.
    Drain { deadline_ms: u64 },
    /// Liveness probe; answered with `WorkerMsg::Pong`.
    Ping { seq: u64 },
}

/// The worker's whole setup, delivered once with its listening sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub proto: u32,
    pub build_id: String,
    /// Config generation this worker belongs to; every later message carries it.
    pub generation: u64,
    /// `<listener>.<index>`, e.g. `imap.0`; used in logs.
    pub worker_id: String,
    /// The listener this worker serves.
    pub listener: String,
    /// Bound address of each listening fd attached to this record, in the same order.
    /// After them comes one more fd: the listener's shared connection counter
    /// (a memfd, see [`crate::counter`]).
    pub sockets: Vec<SocketAddr>,
    /// This worker's slot in the connection counter.
    pub counter_slot: u32,
    /// Runtime threads ([`Config::threads_per_worker`]), counted by the supervisor:
    /// the CPU count comes from cgroup and proc files, and workers open no file.
    pub threads: u32,
    pub config: Config,
    pub material: Material,
    /// Backend addresses, resolved by the supervisor (workers do no DNS).
    pub resolved: BTreeMap<String, Vec<IpAddr>>,
    /// Every address postern itself listens on, for the loop guard.
    pub own_addrs: Vec<SocketAddr>,
    /// Test-only fault injection; always `None` outside tests.
    pub fault: Option<Fault>,
}

/// Faults a worker can be asked to commit, to test the supervisor's reaction. Only
/// honoured when the supervisor was started with `POSTERN_TEST_FAULTS=1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// After `Ready`, make a forbidden syscall (`execve`), so seccomp kills the worker.
    ForbiddenSyscallAfterReady,
    /// Exit with status 1 before `Ready`: a startup failure.
    ExitBeforeReady,
    /// Report a configuration-level failure (`Fatal`) and exit 78.
    FatalConfig,
    /// After `Ready`, send a record that is not a valid message.
    GarbageAfterReady,
}

/// Everything a worker may say to the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkerMsg {
    /// Sent once, after the seccomp filter is installed and the accept loops run.
    Ready { pid: u32, generation: u64 },
    /// Answer to `Ping`, with live and lifetime connection counts.
    Pong { seq: u64, active: u32, total: u64 },
    /// A configuration-level failure: the worker exits 78 and is not restarted
    /// until reload.
    Fatal { reason: String },
}

//! The worker table: one pool per listener, its workers, and the restart policy of
//! reference/privsep.md §2.7. Pure bookkeeping: no I/O, no clocks of its own (`now` is
//! passed in), so the policy is unit-tested directly.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use postern_config::control::{PoolState, PoolStatus, WorkerPhase, WorkerStatus};
use postern_config::counter::{Counter, SLOTS};
use postern_config::model;
use tokio::sync::mpsc;

use crate::bind::Socket2;

/// First delay after a startup failure; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// More than this many crashes of ready workers within [`CRASH_WINDOW`] throttle the pool.
pub const CRASH_BURST: usize = 5;
pub const CRASH_WINDOW: Duration = Duration::from_secs(30);
/// A pool this long without failure gets its backoff reset.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// One worker process.
pub struct Worker {
    pub serial: u64,
    /// Position in the pool (`imap.0`, `imap.1`, ...).
    pub index: u32,
    /// Slot in the listener's shared connection counter.
    pub slot: u32,
    pub generation: u64,
    pub pid: u32,
    pub phase: WorkerPhase,
    pub spawned: Instant,
    pub ready: Option<Instant>,
    /// Set when the worker sent `Fatal`.
    pub fatal: Option<String>,
    pub tx: mpsc::UnboundedSender<postern_config::ipc::SupervisorMsg>,
    pub total: u64,
    pub pings_unanswered: u32,
    pub drain_deadline: Option<Instant>,
    /// SIGKILL was sent; waiting for its exit.
    pub killed: bool,
}

impl Worker {
    pub fn id(&self, listener: &str) -> String {
        format!("{listener}.{}", self.index)
    }
}

/// What to do about a worker that exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitVerdict {
    /// It was draining or no longer wanted: nothing.
    Expected,
    /// Configuration-level failure: the pool waits for reload.
    Failed,
    /// Respawn now.
    RespawnNow,
    /// Respawn when the backoff expires.
    Throttle(Duration),
}

/// Restart throttling of one pool.
#[derive(Debug, Default)]
pub struct Backoff {
    next_delay: Option<Duration>,
    crashes: VecDeque<Instant>,
    last_failure: Option<Instant>,
}

impl Backoff {
    /// A startup failure (or a crash burst): the delay before the next attempt.
    pub fn on_startup_failure(&mut self, now: Instant) -> Duration {
        self.forget_if_stable(now);
        let delay = self.next_delay.unwrap_or(BACKOFF_MIN);
        self.next_delay = Some((delay * 2).min(BACKOFF_MAX));
        self.last_failure = Some(now);
        delay
    }

    /// A ready worker crashed: respawn now, unless crashes come in a burst.
    pub fn on_crash(&mut self, now: Instant) -> Option<Duration> {
        self.forget_if_stable(now);
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            self.crashes.pop_front();
        }
        self.last_failure = Some(now);
        if self.crashes.len() > CRASH_BURST {
            let delay = self.next_delay.unwrap_or(BACKOFF_MIN);
            self.next_delay = Some((delay * 2).min(BACKOFF_MAX));
            Some(delay)
        } else {
            None
        }
    }

    pub fn reset(&mut self) {
        *self = Backoff::default();
    }

    fn forget_if_stable(&mut self, now: Instant) {
        if self
            .last_failure
            .is_some_and(|t| now.duration_since(t) >= STABLE_AFTER)
        {
            self.reset();
        }
    }
}

/// One listener and the workers serving it.
pub struct Pool {
    pub listener: model::Listener,
    pub sockets: Vec<Socket2>,
    pub counter: Counter,
    pub counter_fd: OwnedFd,
    /// Workers wanted in the current generation.
    pub size: u32,
    /// The generation new workers of this pool are spawned in.
    pub generation: u64,
    pub workers: BTreeMap<u64, Worker>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub backoff: Backoff,
    /// Indexes waiting for a throttled respawn, and when.
    pub pending: BTreeMap<u32, Instant>,
    /// A worker reported a configuration-level failure; no respawn until reload.
    pub failed: Option<String>,
    /// Spawns so far (fault injection keys on the first).
    pub spawns: u64,
    /// Removed from the config by a reload: draining out.
    pub removed: bool,
}

impl Pool {
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|s| s.addr).collect()
    }

    /// A counter slot no live worker holds.
    pub fn free_slot(&self) -> Option<u32> {
        (0..SLOTS as u32).find(|s| !self.workers.values().any(|w| w.slot == *s))
    }

    /// Indexes of the current generation with neither a live worker nor a pending
    /// respawn.
    pub fn missing_indexes(&self) -> Vec<u32> {
        (0..self.size)
            .filter(|i| {
                !self.pending.contains_key(i)
                    && !self.workers.values().any(|w| {
                        w.index == *i
                            && w.generation == self.generation
                            && w.phase != WorkerPhase::Draining
                    })
            })
            .collect()
    }

    /// Judges a worker's exit and updates counters. `code` is its exit code, `None`
    /// when a signal killed it.
    pub fn on_exit(
        &mut self,
        worker: &Worker,
        code: Option<i32>,
        shutting_down: bool,
        now: Instant,
    ) -> ExitVerdict {
        if shutting_down
            || self.removed
            || worker.phase == WorkerPhase::Draining
            || worker.generation != self.generation
        {
            return ExitVerdict::Expected;
        }
        if code == Some(postern_config::EX_CONFIG) || worker.fatal.is_some() {
            self.failed = Some(
                worker
                    .fatal
                    .clone()
                    .unwrap_or_else(|| "exit 78 (configuration)".into()),
            );
            return ExitVerdict::Failed;
        }
        self.restarts += 1;
        if worker.ready.is_none() {
            return ExitVerdict::Throttle(self.backoff.on_startup_failure(now));
        }
        match self.backoff.on_crash(now) {
            Some(delay) => ExitVerdict::Throttle(delay),
            None => ExitVerdict::RespawnNow,
        }
    }

    pub fn state(&self, shutting_down: bool) -> PoolState {
        if shutting_down || self.removed {
            PoolState::Draining
        } else if self.failed.is_some() {
            PoolState::Failed
        } else if !self.pending.is_empty() {
            PoolState::Throttled
        } else if self.ready_current() >= self.size as usize {
            PoolState::Running
        } else {
            PoolState::Starting
        }
    }

    /// Ready workers of the current generation.
    pub fn ready_current(&self) -> usize {
        self.workers
            .values()
            .filter(|w| w.generation == self.generation && w.phase == WorkerPhase::Ready)
            .count()
    }

    pub fn status(&self, shutting_down: bool, now: Instant) -> PoolStatus {
        let name = &self.listener.name;
        let mut workers: Vec<&Worker> = self.workers.values().collect();
        workers.sort_by_key(|w| (w.generation, w.index));
        PoolStatus {
            listener: name.clone(),
            protocol: self.listener.protocol.as_str().to_owned(),
            addrs: self.addrs(),
            state: self.state(shutting_down),
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            next_try_secs: self
                .pending
                .values()
                .min()
                .map(|t| t.saturating_duration_since(now).as_secs_f64().ceil() as u64),
            active: self.counter.total(),
            total: self.workers.values().map(|w| w.total).sum(),
            workers: workers
                .into_iter()
                .map(|w| WorkerStatus {
                    id: w.id(name),
                    pid: w.pid,
                    generation: w.generation,
                    phase: w.phase,
                    uptime_secs: now.duration_since(w.spawned).as_secs(),
                    active: self.counter.get(w.slot as usize),
                    total: w.total,
                })
                .collect(),
        }
    }
}

/// Describes how a process ended, for `status` and logs: `exit 1`, `signal 9 (KILL)`.
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit {code}");
    }
    match status.signal() {
        Some(sig) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(s) => format!("signal {sig} ({})", s.as_str().trim_start_matches("SIG")),
            Err(_) => format!("signal {sig}"),
        },
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_failures_back_off_doubling_to_the_cap() {
        let mut b = Backoff::default();
        let t = Instant::now();
        let delays: Vec<u64> = (0..8)
            .map(|i| b.on_startup_failure(t + Duration::from_secs(i)).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn crashes_respawn_at_once_until_a_burst() {
        let mut b = Backoff::default();
        let t = Instant::now();
        for i in 0..CRASH_BURST as u64 {
            assert_eq!(b.on_crash(t + Duration::from_secs(i)), None);
        }
        assert_eq!(b.on_crash(t + Duration::from_secs(6)), Some(BACKOFF_MIN));
        // Crashes spread beyond the window do not throttle.
        let mut b = Backoff::default();
        for i in 0..20u64 {
            assert_eq!(b.on_crash(t + Duration::from_secs(i * 10)), None);
        }
    }

    #[test]
    fn a_stable_pool_forgets_its_backoff() {
        let mut b = Backoff::default();
        let t = Instant::now();
        b.on_startup_failure(t);
        assert_eq!(b.on_startup_failure(t), Duration::from_secs(2));
        assert_eq!(
            b.on_startup_failure(t + STABLE_AFTER + Duration::from_secs(5)),
            BACKOFF_MIN
        );
    }
}

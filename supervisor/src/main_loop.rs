//! The supervisor after the privilege drop: one current-thread event loop that spawns
//! workers, reads their messages, restarts them, answers the control socket, reloads
//! and drains. Every worker has a small I/O task that forwards what happens to it as
//! an [`Event`]; all state lives here, touched by this loop alone.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use postern_config::control::{Answer, Command, StatusReport, WorkerPhase};
use postern_config::counter::Counter;
use postern_config::ipc::{self, Fault, Hello, SupervisorMsg, WorkerMsg};
use postern_config::material::Material;
use postern_config::model::Config;
use postern_config::{codec, fdpass};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use crate::bind::{self, Socket2};
use crate::registry::{describe_exit, ExitVerdict, Pool, Worker};
use crate::{notify, spawn};

/// A worker must say `Ready` within this long after exec.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often workers are pinged; three unanswered pings get a worker killed.
const PING_EVERY: Duration = Duration::from_secs(1);
const MAX_UNANSWERED_PINGS: u32 = 3;
/// Largest record a worker may send.
const MAX_WORKER_RECORD: usize = 64 * 1024;

/// Something that happened, for the loop to act on. Workers are named by their
/// serial, unique for the supervisor's life: a pool may be renamed while it drains.
pub enum Event {
    Msg {
        serial: u64,
        msg: WorkerMsg,
    },
    /// A worker sent something that is not a valid message: it gets killed.
    Bad {
        serial: u64,
        reason: String,
    },
    Exited {
        serial: u64,
        status: std::process::ExitStatus,
    },
    Control {
        command: Command,
        reply: oneshot::Sender<Answer>,
    },
}

/// What the startup phase hands the loop.
pub struct Startup {
    pub config_path: PathBuf,
    pub config: Config,
    pub material: Material,
    pub sockets: BTreeMap<String, Vec<Socket2>>,
    pub control: std::os::unix::net::UnixListener,
    /// The account the supervisor runs as.
    pub user: String,
    /// True when started as root and dropped: privileged binds need a restart.
    pub dropped: bool,
    /// Listeners that came from systemd socket activation.
    pub activated: bool,
    pub faults: BTreeMap<String, FaultSpec>,
}

/// Test-only fault injection for one listener (`POSTERN_TEST_FAULTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultSpec {
    /// Every spawn exits before `Ready`.
    ExitBeforeReady,
    /// The first spawn makes a forbidden syscall after `Ready`.
    SeccompOnce,
    /// Every spawn reports a configuration-level failure.
    Fatal,
    /// The first spawn sends garbage on its IPC socket after `Ready`.
    GarbageOnce,
}

impl FaultSpec {
    pub fn parse(spec: &str) -> BTreeMap<String, FaultSpec> {
        spec.split(',')
            .filter_map(|item| {
                let (name, fault) = item.split_once(':')?;
                let fault = match fault.trim() {
                    "exit-before-ready" => FaultSpec::ExitBeforeReady,
                    "seccomp-once" => FaultSpec::SeccompOnce,
                    "fatal" => FaultSpec::Fatal,
                    "garbage-once" => FaultSpec::GarbageOnce,
                    _ => return None,
                };
                Some((name.trim().to_owned(), fault))
            })
            .collect()
    }

    fn for_spawn(self, spawns: u64) -> Option<Fault> {
        match self {
            FaultSpec::ExitBeforeReady => Some(Fault::ExitBeforeReady),
            FaultSpec::SeccompOnce if spawns == 0 => Some(Fault::ForbiddenSyscallAfterReady),
            FaultSpec::SeccompOnce => None,
            FaultSpec::Fatal => Some(Fault::FatalConfig),
            FaultSpec::GarbageOnce if spawns == 0 => Some(Fault::GarbageAfterReady),
            FaultSpec::GarbageOnce => None,
        }
    }
}

struct Supervisor {
    config_path: PathBuf,
    config: Arc<Config>,
    material: Arc<Material>,
    resolved: BTreeMap<String, Vec<IpAddr>>,
    generation: u64,
    started: Instant,
    reloaded: Option<Instant>,
    pools: BTreeMap<String, Pool>,
    user: String,
    dropped: bool,
    activated: bool,
    faults: BTreeMap<String, FaultSpec>,
    events: mpsc::UnboundedSender<Event>,
    next_serial: u64,
    ping_seq: u64,
    /// Set on SIGTERM: when the drain must be over.
    shutdown_deadline: Option<Instant>,
    notified_ready: bool,
    last_status_line: String,
}

/// Runs the loop until shutdown; returns the process exit code.
pub async fn run(startup: Startup) -> i32 {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let own_uid = nix::unistd::getuid().as_raw();
    match tokio::net::UnixListener::from_std(startup.control) {
        Ok(listener) => {
            tokio::spawn(crate::control::serve(listener, own_uid, tx.clone()));
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot use the control socket");
            return postern_config::EX_OSERR;
        }
    }
    let mut sup = Supervisor {
        resolved: resolve(&startup.config),
        config_path: startup.config_path,
        config: Arc::new(startup.config),
        material: Arc::new(startup.material),
        generation: 1,
        started: Instant::now(),
        reloaded: None,
        pools: BTreeMap::new(),
        user: startup.user,
        dropped: startup.dropped,
        activated: startup.activated,
        faults: startup.faults,
        events: tx,
        next_serial: 0,
        ping_seq: 0,
        shutdown_deadline: None,
        notified_ready: false,
        last_status_line: String::new(),
    };
    let mut sockets = startup.sockets;
    for listener in sup.config.listeners.clone() {
        let socks = sockets.remove(&listener.name).unwrap_or_default();
        if let Err(code) = sup.add_pool(listener, socks) {
            return code;
        }
    }
    if sup.pools.is_empty() {
        tracing::warn!("no listener configured: nothing to serve");
    }
    let (Ok(mut sighup), Ok(mut sigterm), Ok(mut sigint)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return postern_config::EX_OSERR;
    };
    let watchdog = notify::watchdog_interval();
    let mut last_watchdog = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ping = Instant::now();
    loop {
        tokio::select! {
            Some(event) = rx.recv() => sup.on_event(event),
            _ = sighup.recv() => {
                match sup.reload() {
                    Ok(generation) => tracing::info!(generation, "reloaded on SIGHUP"),
                    Err(reason) => tracing::error!(%reason, "reload refused; the running configuration stays"),
                }
            }
            _ = sigterm.recv() => sup.begin_shutdown("SIGTERM"),
            _ = sigint.recv() => sup.begin_shutdown("SIGINT"),
            _ = tick.tick() => {
                let now = Instant::now();
                if now.duration_since(last_ping) >= PING_EVERY {
                    last_ping = now;
                    sup.ping_and_watch(now);
                }
                sup.on_tick(now);
                if let Some(every) = watchdog {
                    if now.duration_since(last_watchdog) >= every {
                        last_watchdog = now;
                        notify::watchdog();
                    }
                }
            }
        }
        if let Some(deadline) = sup.shutdown_deadline {
            if sup.live_workers() == 0 {
                tracing::info!("all workers exited; supervisor done");
                return 0;
            }
            if Instant::now() >= deadline + Duration::from_secs(2) {
                tracing::warn!(
                    left = sup.live_workers(),
                    "workers did not exit after the grace period"
                );
                return 0;
            }
        }
    }
}

impl Supervisor {
    fn add_pool(
        &mut self,
        listener: postern_config::model::Listener,
        sockets: Vec<Socket2>,
    ) -> Result<(), i32> {
        let (counter, counter_fd) = Counter::create(&listener.name).map_err(|e| {
            tracing::error!(listener = %listener.name, error = %e, "cannot create the connection counter");
            postern_config::EX_OSERR
        })?;
        for s in &sockets {
            tracing::info!(listener = %listener.name, addr = %s.addr, protocol = %listener.protocol, "listening");
        }
        let name = listener.name.clone();
        let pool = Pool {
            listener,
            sockets,
            counter,
            counter_fd,
            size: self.config.workers_per_listener(),
            generation: self.generation,
            workers: BTreeMap::new(),
            restarts: 0,
            last_exit: None,
            backoff: Default::default(),
            pending: BTreeMap::new(),
            failed: None,
            spawns: 0,
            removed: false,
        };
        self.pools.insert(name.clone(), pool);
        self.fill(&name);
        Ok(())
    }

    /// Spawns workers for every index of the pool's current generation that has none.
    fn fill(&mut self, name: &str) {
        let Some(pool) = self.pools.get(name) else {
            return;
        };
        if pool.failed.is_some() || pool.removed || self.shutdown_deadline.is_some() {
            return;
        }
        for index in pool.missing_indexes() {
            self.spawn_worker(name, index);
        }
    }

    fn spawn_worker(&mut self, name: &str, index: u32) {
        let generation = self.generation;
        let Some(pool) = self.pools.get_mut(name) else {
            return;
        };
        let Some(slot) = pool.free_slot() else {
            tracing::error!(listener = %name, "no free connection-counter slot; not spawning");
            return;
        };
        pool.counter.reset(slot as usize);
        let fault = self.faults.get(name).and_then(|f| f.for_spawn(pool.spawns));
        pool.spawns += 1;
        let worker_id = format!("{name}.{index}");
        let hello = Hello {
            proto: ipc::PROTO,
            build_id: postern_config::BUILD_ID.to_owned(),
            generation,
            worker_id: worker_id.clone(),
            listener: name.to_owned(),
            sockets: pool.addrs(),
            counter_slot: slot,
            threads: self.config.threads_per_worker(),
            config: (*self.config).clone(),
            material: material_for(&pool.listener, &self.material),
            resolved: self.resolved.clone(),
            own_addrs: self.pools.values().flat_map(Pool::addrs).collect(),
            fault,
        };
        let Some(pool) = self.pools.get_mut(name) else {
            return;
        };
        let mut fds: Vec<_> = pool.sockets.iter().map(|s| s.fd.as_fd()).collect();
        fds.push(pool.counter_fd.as_fd());
        let log = self.config.server.log_level.clone();
        let spawned = match spawn::spawn(&hello, &fds, &log) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(worker = %worker_id, error = %postern_config::ErrorChain(&e).to_string(), "cannot start worker");
                let delay = pool.backoff.on_startup_failure(Instant::now());
                pool.pending.insert(index, Instant::now() + delay);
                pool.last_exit = Some(format!("spawn failed: {e}"));
                return;
            }
        };
        let serial = self.next_serial;
        self.next_serial += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        tracing::info!(worker = %worker_id, pid = spawned.pid, generation, "worker spawned");
        pool.workers.insert(
            serial,
            Worker {
                serial,
                index,
                slot,
                generation,
                pid: spawned.pid,
                phase: WorkerPhase::Spawned,
                spawned: Instant::now(),
                ready: None,
                fatal: None,
                tx,
                total: 0,
                pings_unanswered: 0,
                drain_deadline: None,
                killed: false,
            },
        );
        tokio::spawn(worker_io(
            serial,
            spawned.child,
            spawned.ipc,
            rx,
            self.events.clone(),
        ));
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Msg { serial, msg } => {
                if let Some(pool) = self.pool_of(serial) {
                    self.on_worker_msg(&pool, serial, msg);
                }
            }
            Event::Bad { serial, reason } => {
                let Some(pool) = self.pool_of(serial) else {
                    return;
                };
                if let Some(w) = self
                    .pools
                    .get_mut(&pool)
                    .and_then(|p| p.workers.get_mut(&serial))
                {
                    tracing::warn!(worker = %w.id(&pool), pid = w.pid, %reason, "worker broke the ipc protocol; killing it");
                    kill_worker(w);
                }
            }
            Event::Exited { serial, status } => {
                if let Some(pool) = self.pool_of(serial) {
                    self.on_exit(&pool, serial, status);
                }
            }
            Event::Control { command, reply } => {
                let answer = match command {
                    Command::Status => Answer::Status(self.status()),
                    Command::Reload => match self.reload() {
                        Ok(generation) => Answer::Reloaded { generation },
                        Err(reason) => {
                            tracing::error!(%reason, "reload refused; the running configuration stays");
                            Answer::Failed { reason }
                        }
                    },
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// The pool a worker currently belongs to.
    fn pool_of(&self, serial: u64) -> Option<String> {
        self.pools
            .iter()
            .find(|(_, p)| p.workers.contains_key(&serial))
            .map(|(name, _)| name.clone())
    }

    fn on_worker_msg(&mut self, name: &str, serial: u64, msg: WorkerMsg) {
        let Some(pool) = self.pools.get_mut(name) else {
            return;
        };
        let Some(w) = pool.workers.get_mut(&serial) else {
            return;
        };
        // Each message is valid in one phase only (OpenSSH's monitor rule).
        let ok = match (&msg, w.phase) {
            (WorkerMsg::Ready { generation, .. }, WorkerPhase::Spawned)
                if *generation == w.generation =>
            {
                w.phase = WorkerPhase::Ready;
                w.ready = Some(Instant::now());
                tracing::info!(worker = %w.id(name), pid = w.pid, "worker ready");
                true
            }
            (
                WorkerMsg::Pong {
                    active: _, total, ..
                },
                WorkerPhase::Ready | WorkerPhase::Draining,
            ) => {
                w.total = *total;
                w.pings_unanswered = 0;
                true
            }
            (WorkerMsg::Fatal { reason }, WorkerPhase::Spawned) => {
                tracing::error!(worker = %w.id(name), %reason, "worker cannot run this configuration; it waits for a reload");
                w.fatal = Some(reason.clone());
                true
            }
            _ => false,
        };
        if !ok {
            tracing::warn!(worker = %w.id(name), pid = w.pid, ?msg, phase = ?w.phase, "unexpected worker message; killing it");
            kill_worker(w);
            return;
        }
        if matches!(msg, WorkerMsg::Ready { .. }) {
            self.retire_old_generation(name);
            self.update_notify();
        }
    }

    /// Once the current generation of a pool is fully ready, older workers drain.
    fn retire_old_generation(&mut self, name: &str) {
        let grace = self.config.server.shutdown_grace;
        let Some(pool) = self.pools.get_mut(name) else {
            return;
        };
        if pool.ready_current() < pool.size as usize {
            return;
        }
        let current = pool.generation;
        for w in pool
            .workers
            .values_mut()
            .filter(|w| w.generation < current && w.phase != WorkerPhase::Draining)
        {
            tracing::info!(worker = %w.id(name), pid = w.pid, generation = w.generation, "draining old generation");
            drain(w, grace);
        }
    }

    fn on_exit(&mut self, name: &str, serial: u64, status: std::process::ExitStatus) {
        let shutting_down = self.shutdown_deadline.is_some();
        let now = Instant::now();
        let Some(pool) = self.pools.get_mut(name) else {
            return;
        };
        let Some(worker) = pool.workers.remove(&serial) else {
            return;
        };
        pool.counter.reset(worker.slot as usize);
        let how = describe_exit(status);
        let verdict = pool.on_exit(&worker, status.code(), shutting_down, now);
        let id = worker.id(name);
        match &verdict {
            ExitVerdict::Expected => {
                tracing::info!(worker = %id, pid = worker.pid, exit = %how, "worker exited")
            }
            ExitVerdict::Failed => {
                tracing::error!(worker = %id, pid = worker.pid, exit = %how, "worker failed on its configuration; not restarting until reload")
            }
            ExitVerdict::RespawnNow => {
                tracing::warn!(worker = %id, pid = worker.pid, exit = %how, "worker died; restarting")
            }
            ExitVerdict::Throttle(d) => {
                tracing::warn!(worker = %id, pid = worker.pid, exit = %how, retry_in = ?d, "worker failed; throttling restarts")
            }
        }
        if verdict != ExitVerdict::Expected {
            pool.last_exit = Some(how);
        }
        match verdict {
            ExitVerdict::RespawnNow => self.spawn_worker(name, worker.index),
            ExitVerdict::Throttle(delay) => {
                pool.pending.insert(worker.index, now + delay);
            }
            ExitVerdict::Expected | ExitVerdict::Failed => {}
        }
        if let Some(pool) = self.pools.get(name) {
            if pool.removed && pool.workers.is_empty() {
                self.pools.remove(name);
            }
        }
        self.update_notify();
    }

    fn on_tick(&mut self, now: Instant) {
        let names: Vec<String> = self.pools.keys().cloned().collect();
        for name in names {
            let due: Vec<u32> = self.pools.get(&name).map_or_else(Vec::new, |p| {
                p.pending
                    .iter()
                    .filter(|(_, t)| **t <= now)
                    .map(|(i, _)| *i)
                    .collect()
            });
            for index in due {
                if let Some(pool) = self.pools.get_mut(&name) {
                    pool.pending.remove(&index);
                }
                if self.shutdown_deadline.is_none() {
                    self.spawn_worker(&name, index);
                }
            }
            let Some(pool) = self.pools.get_mut(&name) else {
                continue;
            };
            for w in pool.workers.values_mut().filter(|w| !w.killed) {
                let late_ready = w.phase == WorkerPhase::Spawned
                    && now.duration_since(w.spawned) > READY_TIMEOUT;
                let late_drain = w
                    .drain_deadline
                    .is_some_and(|d| now > d + Duration::from_secs(1));
                if late_ready || late_drain {
                    tracing::warn!(worker = %w.id(&name), pid = w.pid, late_ready, late_drain, "worker overdue; killing it");
                    kill_worker(w);
                }
            }
        }
    }

    /// Pings ready workers, kills the unresponsive and the oversized.
    fn ping_and_watch(&mut self, _now: Instant) {
        self.ping_seq += 1;
        let seq = self.ping_seq;
        let limit = self.config.server.max_session_memory;
        for (name, pool) in &mut self.pools {
            for w in pool
                .workers
                .values_mut()
                .filter(|w| w.phase != WorkerPhase::Spawned && !w.killed)
            {
                if w.pings_unanswered >= MAX_UNANSWERED_PINGS {
                    tracing::warn!(worker = %w.id(name), pid = w.pid, "worker stopped answering pings; killing it");
                    kill_worker(w);
                    continue;
                }
                if let (Some(limit), Some(rss)) = (limit, rss_bytes(w.pid)) {
                    if rss > limit {
                        tracing::warn!(worker = %w.id(name), pid = w.pid, rss, limit, "worker over server.max_session_memory; killing it");
                        kill_worker(w);
                        continue;
                    }
                }
                w.pings_unanswered += 1;
                let _ = w.tx.send(SupervisorMsg::Ping { seq });
            }
        }
    }

    fn begin_shutdown(&mut self, why: &str) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let grace = self.config.server.shutdown_grace;
        tracing::info!(signal = why, grace = ?grace, "shutting down: no new connections, draining sessions");
        self.shutdown_deadline = Some(Instant::now() + grace);
        notify::stopping();
        for (name, pool) in &mut self.pools {
            pool.pending.clear();
            // Close our copies so the kernel refuses new connections once the
            // workers close theirs.
            pool.sockets.clear();
            for w in pool.workers.values_mut() {
                if w.phase != WorkerPhase::Draining {
                    tracing::debug!(worker = %w.id(name), "draining");
                    drain(w, grace);
                }
            }
        }
    }

    fn live_workers(&self) -> usize {
        self.pools.values().map(|p| p.workers.len()).sum()
    }

    fn status(&self) -> StatusReport {
        let now = Instant::now();
        let shutting_down = self.shutdown_deadline.is_some();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            build_id: postern_config::BUILD_ID.to_owned(),
            supervisor_pid: std::process::id(),
            user: self.user.clone(),
            uptime_secs: now.duration_since(self.started).as_secs(),
            generation: self.generation,
            reloaded_secs_ago: self.reloaded.map(|t| now.duration_since(t).as_secs()),
            pools: self
                .pools
                .values()
                .map(|p| p.status(shutting_down, now))
                .collect(),
        }
    }

    fn update_notify(&mut self) {
        let wanted: usize = self
            .pools
            .values()
            .filter(|p| !p.removed)
            .map(|p| p.size as usize)
            .sum();
        let ready: usize = self
            .pools
            .values()
            .filter(|p| !p.removed)
            .map(Pool::ready_current)
            .sum();
        let line = format!("{ready}/{wanted} workers ready");
        if line != self.last_status_line {
            notify::status(&line);
            self.last_status_line = line;
        }
        // Ready once no pool is still starting: a throttled or failed pool is reported
        // in the status line and by `postern status`, not by hanging the unit's start.
        let settled = self
            .pools
            .values()
            .all(|p| p.state(false) != postern_config::control::PoolState::Starting);
        if !self.notified_ready && settled {
            self.notified_ready = true;
            notify::ready();
            tracing::info!(ready, wanted, "startup complete");
        }
    }

    /// Re-reads the config; on any problem returns why and changes nothing.
    fn reload(&mut self) -> Result<u64, String> {
        if self.shutdown_deadline.is_some() {
            return Err("shutting down".into());
        }
        let config =
            postern_config::load_file(&self.config_path).map_err(|issues| join_issues(&issues))?;
        let material =
            postern_config::material::read(&config).map_err(|issues| join_issues(&issues))?;
        // Sockets: reuse a listener's sockets when its bind list is unchanged; bind the
        // rest now, refusing what would need privileges we no longer have.
        let mut fresh: BTreeMap<String, Vec<Socket2>> = BTreeMap::new();
        for l in &config.listeners {
            let unchanged = self.pools.get(&l.name).is_some_and(|p| {
                !p.removed && p.listener.bind == l.bind && p.listener.protocol == l.protocol
            });
            if unchanged {
                continue;
            }
            if self.activated {
                return Err(format!(
                    "listener.{}: its sockets come from systemd socket activation; edit postern.socket and restart",
                    l.name
                ));
            }
            let mut socks = Vec::new();
            for addr in &l.bind {
                if self.dropped && addr.port() != 0 && addr.port() < 1024 {
                    return Err(format!(
                        "listener.{}: binding {addr} needs privileges the supervisor dropped; this change requires a restart (systemctl restart postern)",
                        l.name
                    ));
                }
                // The same address held by another pool being replaced: hand it over.
                let reused = self.share_socket_of_changing_listener(*addr, &config);
                let sock = match reused {
                    Some(s) => s,
                    None => bind::bind(*addr)
                        .map_err(|e| format!("listener.{}: cannot bind {addr}: {e}", l.name))?,
                };
                socks.push(sock);
            }
            fresh.insert(l.name.clone(), socks);
        }
        self.generation += 1;
        let generation = self.generation;
        self.config = Arc::new(config);
        self.material = Arc::new(material);
        self.resolved = resolve(&self.config);
        self.reloaded = Some(Instant::now());
        let grace = self.config.server.shutdown_grace;
        let size = self.config.workers_per_listener();
        // Pools that are gone or whose sockets change drain out.
        let keep: Vec<String> = self
            .config
            .listeners
            .iter()
            .map(|l| l.name.clone())
            .collect();
        let mut retired = Vec::new();
        for (name, pool) in &mut self.pools {
            if !keep.contains(name) || fresh.contains_key(name) {
                pool.removed = true;
                pool.pending.clear();
                pool.sockets.clear();
                for w in pool.workers.values_mut() {
                    drain(w, grace);
                }
                retired.push(name.clone());
            }
        }
        // Retired pools keep draining under a private name until their workers exit.
        for name in retired {
            if let Some(pool) = self.pools.remove(&name) {
                if !pool.workers.is_empty() {
                    self.pools.insert(format!("{name}~{generation}"), pool);
                }
            }
        }
        for listener in self.config.listeners.clone() {
            match self.pools.get_mut(&listener.name) {
                Some(pool) => {
                    pool.listener = listener.clone();
                    pool.size = size;
                    pool.generation = generation;
                    pool.failed = None;
                    pool.pending.clear();
                    pool.backoff.reset();
                    self.fill(&listener.name);
                }
                None => {
                    let socks = fresh.remove(&listener.name).unwrap_or_default();
                    if let Err(code) = self.add_pool(listener, socks) {
                        return Err(format!("cannot set up a new listener (exit code {code})"));
                    }
                }
            }
        }
        self.notified_ready = true;
        self.update_notify();
        Ok(generation)
    }

    /// A second handle (dup) on the socket bound at `addr` in a pool that the new
    /// config changes or drops, so the address stays served across the change without
    /// a rebind (which would fail with EADDRINUSE while the old socket is open). The old
    /// pool keeps its handle: if the reload fails later, nothing has changed.
    fn share_socket_of_changing_listener(
        &self,
        addr: SocketAddr,
        config: &Config,
    ) -> Option<Socket2> {
        if addr.port() == 0 {
            return None;
        }
        self.pools
            .iter()
            .filter(|(name, pool)| {
                !pool.removed
                    && config.listener(name).is_none_or(|l| {
                        l.bind != pool.listener.bind || l.protocol != pool.listener.protocol
                    })
            })
            .flat_map(|(_, pool)| &pool.sockets)
            .find(|s| s.addr == addr)
            .and_then(|s| {
                Some(Socket2 {
                    addr: s.addr,
                    fd: s.fd.try_clone().ok()?,
                })
            })
    }
}

/// What a worker of `listener` may hold: a plain-TCP listener's workers never see
/// the server certificates' private keys.
fn material_for(listener: &postern_config::model::Listener, all: &Material) -> Material {
    let mut m = all.clone();
    if listener.tls == postern_config::model::TlsMode::Plain {
        m.certificates.clear();
    }
    m
}

/// SIGKILLs a worker, once; its exit arrives as an `Exited` event.
fn kill_worker(w: &mut Worker) {
    if !w.killed {
        w.killed = true;
        let _ = kill(Pid::from_raw(w.pid as i32), Signal::SIGKILL);
    }
}

fn drain(w: &mut Worker, grace: Duration) {
    w.phase = WorkerPhase::Draining;
    w.drain_deadline = Some(Instant::now() + grace);
    let _ = w.tx.send(SupervisorMsg::Drain {
        deadline_ms: grace.as_millis() as u64,
    });
}

fn join_issues(issues: &[postern_config::Issue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Resolves every destination host that is not an IP literal; workers do no DNS.
pub fn resolve(config: &Config) -> BTreeMap<String, Vec<IpAddr>> {
    config
        .destinations
        .values()
        .map(|d| {
            let ips = match d.host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => match (d.host.as_str(), 0).to_socket_addrs() {
                    Ok(addrs) => {
                        let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                        ips.dedup();
                        ips
                    }
                    Err(e) => {
                        tracing::warn!(destination = %d.name, host = %d.host, error = %e, "cannot resolve destination host");
                        Vec::new()
                    }
                },
            };
            (d.name.clone(), ips)
        })
        .collect()
}

/// Resident memory of `pid` in bytes, from `/proc/PID/statm`.
fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    Some(pages * page)
}

/// One worker's I/O: its exit, its messages in, the supervisor's messages out.
async fn worker_io(
    serial: u64,
    mut child: tokio::process::Child,
    ipc: OwnedFd,
    mut outbox: mpsc::UnboundedReceiver<SupervisorMsg>,
    events: mpsc::UnboundedSender<Event>,
) {
    let ipc = match fdpass::Channel::new(ipc) {
        Ok(c) => Some(c),
        Err(e) => {
            let _ = events.send(Event::Bad {
                serial,
                reason: format!("ipc: {e}"),
            });
            None
        }
    };
    let mut open = ipc.is_some();
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = match status {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot wait for worker");
                        return;
                    }
                };
                let _ = events.send(Event::Exited { serial, status });
                return;
            }
            Some(msg) = outbox.recv(), if open => {
                let sent = match (&ipc, codec::encode(&msg)) {
                    (Some(ipc), Ok(bytes)) => ipc.send_message(&bytes).await.is_ok(),
                    _ => false,
                };
                open &= sent;
            }
            record = async { ipc.as_ref()?.recv(MAX_WORKER_RECORD).await.ok() }, if open => {
                match record {
                    Some(Some((bytes, fds))) => {
                        let event = if !fds.is_empty() {
                            Event::Bad { serial, reason: "sent file descriptors".into() }
                        } else {
                            match codec::decode::<WorkerMsg>(&bytes) {
                                Ok(msg) => Event::Msg { serial, msg },
                                Err(e) => Event::Bad { serial, reason: e.to_string() },
                            }
                        };
                        let _ = events.send(event);
                    }
                    // End of stream, or a record we could not read (oversized, truncated).
                    Some(None) => open = false,
                    None => {
                        let _ = events.send(Event::Bad { serial, reason: "unreadable record".into() });
                        open = false;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_config::material::CertMaterial;
    use postern_config::model::{Listener, Protocol, ProxyProtocolIn, TlsMode};

    fn listener(tls: TlsMode) -> Listener {
        Listener {
            name: "l".into(),
            protocol: Protocol::Lmtp,
            bind: vec![],
            tls,
            proxy_protocol: ProxyProtocolIn::Off,
            proxy_trusted: vec![],
            max_connections: 1,
            preauth_timeout: Duration::from_secs(1),
            max_auth_attempts: 1,
            forwarded_trust: false,
        }
    }

    #[test]
    fn plain_listeners_get_no_private_keys() {
        let cert = CertMaterial {
            name: "c".into(),
            chain_pem: b"chain".to_vec(),
            key_pem: b"secret".to_vec(),
            subjects: vec![],
            default: true,
        };
        let all = Material {
            certificates: vec![cert],
            ..Material::default()
        };
        assert!(material_for(&listener(TlsMode::Plain), &all)
            .certificates
            .is_empty());
        assert_eq!(
            material_for(&listener(TlsMode::Implicit), &all)
                .certificates
                .len(),
            1
        );
        assert_eq!(
            material_for(&listener(TlsMode::Starttls), &all)
                .certificates
                .len(),
            1
        );
    }

    #[test]
    fn fault_specs_parse_and_apply_to_the_right_spawns() {
        let faults = FaultSpec::parse("a:seccomp-once, b:exit-before-ready,c:bogus");
        assert_eq!(faults.len(), 2);
        assert_eq!(
            faults["a"].for_spawn(0),
            Some(Fault::ForbiddenSyscallAfterReady)
        );
        assert_eq!(faults["a"].for_spawn(1), None);
        assert_eq!(faults["b"].for_spawn(5), Some(Fault::ExitBeforeReady));
    }
}

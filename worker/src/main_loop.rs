//! The worker's life after exec, in order (reference/privsep.md §2.4, worker side):
//! handshake → services (TLS configs etc.) → not dumpable → runtime → seccomp →
//! accept loops → `Ready` → answer pings until `Drain` or supervisor EOF → drain → exit.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_config::ipc::{Fault, SupervisorMsg, WorkerMsg};
use postern_config::{codec, fdpass, EX_CONFIG};
use tokio::sync::watch;

use crate::handshake;
use crate::listener::{accept_loop, Load};
use crate::services::Services;

/// Exit code for a worker that could not start for a reason other than its config.
const EX_SOFTWARE: i32 = 70;

/// `postern worker --ipc-fd 3 --id NAME`: returns the process exit code.
pub fn run(ipc_fd: i32, id: &str) -> i32 {
    let Some(ipc) = crate::sys::take_ipc_fd(ipc_fd) else {
        eprintln!(
            "postern worker: no ipc socket at fd {ipc_fd}; workers are started by `postern run`"
        );
        return 2;
    };
    let span = tracing::info_span!("worker", role = "worker", worker = %id);
    let _entered = span.enter();
    let handoff = match handshake::receive(&ipc) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "handshake failed");
            return EX_SOFTWARE;
        }
    };
    let hello = handoff.hello;
    match hello.fault {
        Some(Fault::ExitBeforeReady) => {
            tracing::warn!("test fault: exiting before ready");
            return 1;
        }
        Some(Fault::FatalConfig) => {
            return fatal(&ipc, "test fault: configuration-level failure".into())
        }
        _ => {}
    }
    let services = match Services::new(&hello) {
        Ok(s) => Arc::new(s),
        Err(e) => return fatal(&ipc, postern_config::ErrorChain(&e).to_string()),
    };
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::error!(error = %e, "cannot make the worker non-dumpable");
        return EX_SOFTWARE;
    }
    let runtime = match build_runtime(hello.threads) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the runtime");
            return EX_SOFTWARE;
        }
    };
    // Every thread exists now (tokio spawns its workers eagerly): filter them all.
    let mode = hello.config.sandbox.seccomp;
    if let Err(e) = crate::sandbox::install(mode) {
        return fatal(
            &ipc,
            format!(
                "sandbox.seccomp = \"{mode}\": {}",
                postern_config::ErrorChain(&e)
            ),
        );
    }
    tracing::debug!(seccomp = %mode, "sandbox installed");
    let load = Arc::new(Load {
        counter: handoff.counter,
        slot: hello.counter_slot as usize,
        total: AtomicU64::new(0),
    });
    let grace = hello.config.server.shutdown_grace;
    let code = runtime.block_on(serve(
        ipc,
        handoff.listeners,
        services,
        load,
        hello.generation,
        grace,
        hello.fault,
    ));
    // Don't wait for sessions still open past the deadline.
    runtime.shutdown_background();
    code
}

/// The worker's runtime: `threads` of 1 (the default with one worker per CPU) runs
/// every session on the process's own thread, so a session's wakeups never cross
/// threads (no futex or eventfd wakeups between them); more build a thread pool.
fn build_runtime(threads: u32) -> std::io::Result<tokio::runtime::Runtime> {
    tracing::debug!(threads, "runtime");
    if threads <= 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads as usize)
        .thread_name("postern-worker")
        .enable_all()
        .build()
}

async fn serve(
    ipc: OwnedFd,
    listeners: Vec<std::net::TcpListener>,
    services: Arc<Services>,
    load: Arc<Load>,
    generation: u64,
    grace: Duration,
    fault: Option<Fault>,
) -> i32 {
    let ipc = match fdpass::Channel::new(ipc) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "ipc socket");
            return EX_SOFTWARE;
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = Vec::new();
    for l in listeners {
        loops.push(tokio::spawn(accept_loop(
            l,
            services.clone(),
            load.clone(),
            stop_rx.clone(),
        )));
    }
    if send(
        &ipc,
        &WorkerMsg::Ready {
            pid: std::process::id(),
            generation,
        },
    )
    .await
    .is_err()
    {
        return EX_SOFTWARE;
    }
    tracing::info!(listener = %services.listener().name, "worker ready");
    match fault {
        Some(Fault::ForbiddenSyscallAfterReady) => {
            tracing::warn!("test fault: calling execve under seccomp");
            let _ = nix::unistd::execv(c"/bin/true", &[c"true"]);
        }
        Some(Fault::GarbageAfterReady) => {
            tracing::warn!("test fault: sending garbage to the supervisor");
            let _ = ipc.send(&[0xff; 64]).await;
        }
        _ => {}
    }
    // Serve until told to drain, or until the supervisor is gone.
    let deadline = loop {
        match recv(&ipc).await {
            Ok(Some(SupervisorMsg::Ping { seq })) => {
                let pong = WorkerMsg::Pong {
                    seq,
                    active: load.active(),
                    total: load.total.load(Ordering::Relaxed),
                };
                if send(&ipc, &pong).await.is_err() {
                    break Instant::now() + grace;
                }
            }
            Ok(Some(SupervisorMsg::Drain { deadline_ms })) => {
                tracing::info!(active = load.active(), "draining");
                break Instant::now() + Duration::from_millis(deadline_ms);
            }
            Ok(Some(SupervisorMsg::Hello(_))) => {
                tracing::error!("second hello from the supervisor; exiting");
                return EX_SOFTWARE;
            }
            Ok(None) => {
                tracing::warn!(
                    active = load.active(),
                    "supervisor is gone; draining and exiting"
                );
                break Instant::now() + grace;
            }
            Err(e) => {
                tracing::error!(error = %e, "ipc failure; draining and exiting");
                break Instant::now() + grace;
            }
        }
    };
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    while load.active() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if load.active() > 0 {
        tracing::warn!(
            active = load.active(),
            "drain deadline passed; closing remaining sessions"
        );
    }
    0
}

async fn recv(ipc: &fdpass::Channel) -> std::io::Result<Option<SupervisorMsg>> {
    match ipc
        .recv_message(postern_config::ipc::MAX_RECORD_BYTES)
        .await?
    {
        None => Ok(None),
        Some((bytes, _fds)) => codec::decode(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
    }
}

async fn send(ipc: &fdpass::Channel, msg: &WorkerMsg) -> std::io::Result<()> {
    ipc.send(&codec::encode(msg).map_err(std::io::Error::other)?)
        .await
}

/// Reports a configuration-level failure to the supervisor and returns exit 78.
fn fatal(ipc: &OwnedFd, reason: String) -> i32 {
    tracing::error!(%reason, "worker cannot run this configuration");
    if let Ok(bytes) = codec::encode(&WorkerMsg::Fatal { reason }) {
        let _ = fdpass::set_nonblocking(ipc, false);
        let _ = fdpass::send(ipc.as_fd(), &bytes, &[]);
    }
    EX_CONFIG
}

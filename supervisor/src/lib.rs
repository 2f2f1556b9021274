//! postern's supervisor: started as root, it binds every listener, reads the TLS
//! material, opens the control socket, drops every privilege for good, then spawns
//! and supervises one pool of sandboxed workers per listener.
//!
//! It never parses a byte that came from the network: worker messages and control
//! requests are the only input it decodes, and both are treated as hostile.
#![deny(unsafe_code)]

pub mod bind;
pub mod control;
pub mod main_loop;
pub mod notify;
pub mod privs;
pub mod registry;
pub mod spawn;
#[allow(unsafe_code)]
mod sys;

use std::collections::BTreeMap;
use std::path::PathBuf;

use postern_config::{EX_CONFIG, EX_OSERR};

use crate::main_loop::{FaultSpec, Startup};

/// `postern run`: returns the process exit code.
pub fn run(config_path: PathBuf) -> i32 {
    let span = tracing::info_span!("supervisor", role = "supervisor");
    let _entered = span.enter();
    // 1. Nothing inherited may reach a worker (systemd's LISTEN_FDS excepted; they
    //    get FD_CLOEXEC when adopted).
    let first_free = 3 + systemd_fd_count();
    if let Err(e) = sys::cloexec_from(first_free) {
        tracing::warn!(error = %e, "cannot mark inherited fds close-on-exec");
    }
    // 2. Configuration, every problem at once.
    let config = match postern_config::load_file(&config_path) {
        Ok(c) => c,
        Err(issues) => {
            for issue in &issues {
                tracing::error!("{issue}");
                eprintln!("{}: {issue}", config_path.display());
            }
            return EX_CONFIG;
        }
    };
    let material = match postern_config::material::read(&config) {
        Ok(m) => m,
        Err(issues) => {
            for issue in &issues {
                eprintln!("{}: {issue}", config_path.display());
            }
            return EX_CONFIG;
        }
    };
    let is_root = nix::unistd::geteuid().is_root();
    // 3. Who we become, looked up while NSS still works.
    let account = if is_root {
        match privs::lookup(&config.server.user, &config.server.group) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("{e}");
                return EX_CONFIG;
            }
        }
    } else {
        None
    };
    // 4. Listening sockets: from systemd, else bound here.
    let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    let activated = match bind::from_systemd(&names) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return EX_OSERR;
        }
    };
    let is_activated = activated.is_some();
    let mut from_systemd = activated.map(|a| a.by_name).unwrap_or_default();
    let mut sockets = BTreeMap::new();
    for l in &config.listeners {
        if let Some(socks) = from_systemd.remove(&l.name) {
            sockets.insert(l.name.clone(), socks);
            continue;
        }
        let mut socks = Vec::new();
        for addr in &l.bind {
            match bind::bind(*addr) {
                Ok(s) => socks.push(s),
                Err(source) => {
                    let e = bind::BindError::Bind {
                        listener: l.name.clone(),
                        addr: *addr,
                        source,
                    };
                    eprintln!(
                        "{e}: {}",
                        std::error::Error::source(&e)
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    );
                    return EX_OSERR;
                }
            }
        }
        sockets.insert(l.name.clone(), socks);
    }
    // 5. Control socket, group-owned by the service account.
    let control = match control::bind(
        &config.server.control_socket,
        account.as_ref().map(|a| a.gid),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "cannot open control socket {}: {e}",
                config.server.control_socket.display()
            );
            return EX_OSERR;
        }
    };
    // 6. Drop privileges for good (or, unprivileged, just seal).
    let user = match &account {
        Some(account) => {
            if let Err(e) = privs::drop_to(account) {
                eprintln!("cannot drop privileges: {e}");
                return EX_OSERR;
            }
            tracing::info!(user = %account.user, uid = account.uid.as_raw(), "dropped privileges");
            account.user.clone()
        }
        None => {
            if let Err(e) = privs::seal() {
                eprintln!("{e}");
                return EX_OSERR;
            }
            tracing::warn!("not started as root: running unprivileged, without the privilege drop");
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map_or_else(|| nix::unistd::getuid().to_string(), |u| u.name)
        }
    };
    let faults = match std::env::var("POSTERN_TEST_FAULTS") {
        Ok(spec) => {
            tracing::warn!(%spec, "test fault injection is on");
            FaultSpec::parse(&spec)
        }
        Err(_) => BTreeMap::new(),
    };
    // 7. Only now a runtime (and with it, threads).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return EX_OSERR;
        }
    };
    let startup = Startup {
        config_path,
        config,
        material,
        sockets,
        control,
        user,
        dropped: account.is_some(),
        activated: is_activated,
        faults,
    };
    runtime.block_on(main_loop::run(startup))
}

fn systemd_fd_count() -> i32 {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if !ours {
        return 0;
    }
    std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The supervisor's build, as reported by `status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

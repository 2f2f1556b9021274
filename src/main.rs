//! `postern`: one binary for the supervisor, its workers and the operator CLI.
#![deny(unsafe_code)]

mod cli;
mod man;
mod status;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Cmd, SupervisorCmd};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Cmd::Run { config } => {
            let level = postern_config::load_file(&config)
                .map(|c| c.server.log_level)
                .unwrap_or_else(|_| "info".into());
            init_logging("supervisor", &level);
            postern_supervisor::run(config)
        }
        Cmd::Worker { ipc_fd, id } => {
            init_logging("worker", "info");
            postern_worker::run(ipc_fd, &id)
        }
        Cmd::CheckConfig { config } => check_config(&config),
        Cmd::Status(args)
        | Cmd::Supervisor {
            command: SupervisorCmd::Status(args),
        } => status::status(&args),
        Cmd::Reload(args) => status::reload(&args),
        Cmd::Man { out } => man::write_pages(&out),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Validates the file and everything it points at; prints every problem.
fn check_config(path: &std::path::Path) -> i32 {
    let config = match postern_config::load_file(path) {
        Ok(c) => c,
        Err(issues) => return report_issues(path, &issues),
    };
    if let Err(issues) = postern_config::material::read(&config) {
        return report_issues(path, &issues);
    }
    let binds: usize = config.listeners.iter().map(|l| l.bind.len()).sum();
    println!(
        "{}: ok: {} listeners on {} addresses, {} destinations, {} workers per listener, seccomp {}",
        path.display(),
        config.listeners.len(),
        binds,
        config.destinations.len(),
        config.workers_per_listener(),
        config.sandbox.seccomp,
    );
    0
}

fn report_issues(path: &std::path::Path, issues: &[postern_config::Issue]) -> i32 {
    for issue in issues {
        eprintln!("{}: {issue}", path.display());
    }
    eprintln!(
        "{}: {} problem{} found",
        path.display(),
        issues.len(),
        if issues.len() == 1 { "" } else { "s" }
    );
    postern_config::EX_CONFIG
}

/// stderr logging; `POSTERN_LOG` (an EnvFilter) overrides `default`, and
/// `POSTERN_LOG_FORMAT=json` switches to JSON lines. No thread is started.
fn init_logging(role: &'static str, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("POSTERN_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let result = if std::env::var("POSTERN_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if result.is_ok() {
        tracing::debug!(role, "logging started");
    }
}

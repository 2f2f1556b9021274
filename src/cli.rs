//! Command-line definition. Workers are the same binary, started as the hidden
//! `postern worker` subcommand by the supervisor.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const DEFAULT_CONFIG: &str = "/etc/postern/postern.toml";

#[derive(Debug, Parser)]
#[command(name = "postern", version, about = "Privilege-separated mail proxy")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the supervisor (as root: bind, then drop privileges) and its workers.
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a configuration file: exit 0 with a summary, or 78 listing every problem.
    CheckConfig {
        /// Configuration file.
        #[arg(default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show the supervisor's pools and workers. Exit 0 if all run, 3 if any does not, 4 if unreachable.
    Status(StatusArgs),
    /// Ask the running supervisor to re-read its configuration (like SIGHUP).
    Reload(ControlArgs),
    /// Supervisor commands (`postern supervisor status` is `postern status`).
    Supervisor {
        #[command(subcommand)]
        command: SupervisorCmd,
    },
    /// Internal: write the manual pages postern.8 and postern.toml.5 (used by packaging).
    #[command(hide = true)]
    Man {
        /// Directory to write them into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Internal: a worker process, started by the supervisor.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        ipc_fd: i32,
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SupervisorCmd {
    /// Same as `postern status`.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub control: ControlArgs,
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// Control socket (default: server.control_socket of --config, else /run/postern/control.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Configuration file to read the control socket path from.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

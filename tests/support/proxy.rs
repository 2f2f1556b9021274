//! The `postern` binary under test, run as a real supervisor.
//!
//! [`Proxy::start`] writes the config into the test's directory, spawns
//! `postern run --config` in its own process group with stderr going to a log file,
//! and polls `postern status --json` with a deadline until every pool is `running`.
//! The bound addresses then come from that status report. Dropping it sends SIGTERM to
//! the supervisor, waits, then SIGKILLs the process group and reaps, so nothing leaks;
//! when the test is failing, the log is printed.
//!
//! [`TestConfig`] renders the common parts of a config (`[server]` with a control
//! socket in the test's directory, `[sandbox]`, a file mapping store) around the
//! listeners and destinations a test spells out in TOML.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Time the supervisor gets to bring every pool to `running`.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Time the supervisor gets to exit after SIGTERM in `Drop`, before SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// A running `postern run`.
pub struct Proxy {
    child: Option<Child>,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub socket: PathBuf,
    pub log_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl Proxy {
    /// Starts postern with `config_toml` in `dir` and waits until every pool runs.
    pub fn start(config_toml: String, dir: &tempfile::TempDir) -> Proxy {
        let proxy = Proxy::spawn(config_toml, dir.path());
        proxy.wait_running(READY_DEADLINE);
        proxy
    }

    /// Spawns postern without waiting for it to become ready.
    pub fn spawn(config_toml: String, dir: &Path) -> Proxy {
        Proxy::spawn_env(config_toml, dir, &[])
    }

    /// [`Proxy::spawn`] with extra environment variables (e.g. `POSTERN_TEST_FAULTS`).
    pub fn spawn_env(config_toml: String, dir: &Path, env: &[(&str, &str)]) -> Proxy {
        // The service account must be able to read the config after the drop.
        super::chmod(dir, 0o755);
        if super::is_root() {
            super::test_user();
        }
        let config_path = dir.join("postern.toml");
        super::write_file(&config_path, &config_toml);
        let socket = control_socket_of(&config_toml)
            .unwrap_or_else(|| panic!("config has no server.control_socket:\n{config_toml}"));
        let log_path = dir.join("postern.log");
        let log = std::fs::File::create(&log_path).expect("create log file");
        let filter = std::env::var("POSTERN_LOG").unwrap_or_else(|_| "info,postern=debug".into());
        let child = Command::new(super::postern_bin())
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("POSTERN_LOG", filter)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawn postern run");
        Proxy {
            child: Some(child),
            dir: dir.to_path_buf(),
            config_path,
            socket,
            log_path,
            exit: None,
        }
    }

    /// Polls `postern status --json` until every pool is `running`; panics with the log
    /// if the supervisor exits or the deadline passes.
    pub fn wait_running(&self, deadline: Duration) -> Value {
        let end = Instant::now() + deadline;
        let mut last;
        loop {
            if let Some(status) = self.peek_exit() {
                panic!("postern exited during startup ({status}):\n{}", self.log());
            }
            match self.try_status_json() {
                Ok(v) if all_running(&v) => return v,
                Ok(v) => last = v.to_string(),
                Err(e) => last = e,
            }
            if Instant::now() >= end {
                panic!(
                    "postern pools not all running within {deadline:?}; last status: {last}\nlog:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The supervisor's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("postern child")
    }

    /// `postern status --json`, parsed; panics if it cannot be had.
    pub fn status_json(&self) -> Value {
        self.try_status_json()
            .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", self.log()))
    }

    /// `postern status --json`: the report, or why there is none. Exit 3 (some pool
    /// not running) still prints the report.
    pub fn try_status_json(&self) -> Result<Value, String> {
        let out = self.cli(&["status", "--json", "--socket"], true);
        let code = out.status.code();
        if !matches!(code, Some(0) | Some(3)) {
            return Err(format!(
                "postern status exited {:?}: {}",
                code,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "status --json is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs `postern <args> [socket]` and returns its output.
    pub fn cli(&self, args: &[&str], with_socket: bool) -> std::process::Output {
        let mut cmd = Command::new(super::postern_bin());
        cmd.args(args);
        if with_socket {
            cmd.arg(&self.socket);
        }
        cmd.stdin(Stdio::null());
        super::client::run_with_deadline(cmd, Duration::from_secs(15))
    }

    /// The pool of `listener` in a status report.
    pub fn pool(&self, listener: &str) -> Value {
        let status = self.status_json();
        status["pools"]
            .as_array()
            .and_then(|pools| pools.iter().find(|p| p["listener"] == listener))
            .cloned()
            .unwrap_or_else(|| panic!("no pool {listener} in status {status}"))
    }

    /// The pool of `listener` if a status report can be had now (the supervisor may be
    /// starting, or the pool not yet listed): for polling.
    pub fn try_pool(&self, listener: &str) -> Option<Value> {
        let status = self.try_status_json().ok()?;
        status["pools"]
            .as_array()?
            .iter()
            .find(|p| p["listener"] == listener)
            .cloned()
    }

    /// The first address `listener` is bound to.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.addrs(listener)[0]
    }

    /// Every address `listener` is bound to.
    pub fn addrs(&self, listener: &str) -> Vec<SocketAddr> {
        let pool = self.pool(listener);
        let addrs: Vec<SocketAddr> = pool["addrs"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str()?.parse().ok()).collect())
            .unwrap_or_default();
        assert!(
            !addrs.is_empty(),
            "pool {listener} reports no address: {pool}"
        );
        addrs
    }

    /// `postern reload`: `Ok(stdout)` on exit 0, else `Err(stdout + stderr)`.
    pub fn reload(&self) -> Result<String, String> {
        let out = self.cli(&["reload", "--socket"], true);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// Sends SIGTERM to the supervisor.
    pub fn sigterm(&self) {
        self.signal(Signal::SIGTERM);
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid() as i32), sig).expect("signal postern");
    }

    /// Waits for the supervisor to exit; `None` if it still runs at the deadline.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        super::poll_until(deadline, || self.peek_exit_mut())
    }

    fn peek_exit(&self) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        // `try_wait` needs `&mut`; a non-reaping waitid answers the same question.
        let pid = Pid::from_raw(self.pid() as i32);
        use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
        match waitid(
            Id::Pid(pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::StillAlive) | Err(_) => None,
            Ok(WaitStatus::Exited(_, code)) => {
                Some(std::os::unix::process::ExitStatusExt::from_raw(code << 8))
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                Some(std::os::unix::process::ExitStatusExt::from_raw(sig as i32))
            }
            Ok(_) => None,
        }
    }

    fn peek_exit_mut(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
        }
        self.exit
    }

    /// Everything postern logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, deadline: Duration) -> String {
        super::wait_text("postern", needle, deadline, || self.log())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            if self.exit.is_none() && child.try_wait().ok().flatten().is_none() {
                let _ = kill(pid, Signal::SIGTERM);
                if super::poll_until(STOP_DEADLINE, || child.try_wait().ok().flatten()).is_none() {
                    eprintln!("postern (pid {pid}) ignored SIGTERM for {STOP_DEADLINE:?}; killing its group");
                }
            }
            // The supervisor led its own process group; anything left in it is ours.
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
        if panicking {
            eprintln!(
                "---- postern log ({}) ----\n{}",
                self.log_path.display(),
                self.log()
            );
        }
    }
}

fn all_running(status: &Value) -> bool {
    status["pools"]
        .as_array()
        .is_some_and(|pools| !pools.is_empty() && pools.iter().all(|p| p["state"] == "running"))
}

fn control_socket_of(config_toml: &str) -> Option<PathBuf> {
    let table: toml::Table = toml::from_str(config_toml).ok()?;
    let path = table.get("server")?.get("control_socket")?.as_str()?;
    Some(PathBuf::from(path))
}

/// Renders a test config: fixed `[server]`, `[sandbox]`, `[routing]` and a file mapping
/// in the test's directory, around the test's own listener and destination tables.
#[derive(Debug, Clone)]
pub struct TestConfig {
    dir: PathBuf,
    pub workers: u32,
    pub shutdown_grace: String,
    pub seccomp: String,
    server_extra: String,
    tables: Vec<String>,
    default_destination: String,
    passthrough_destination: Option<String>,
}

impl TestConfig {
    pub fn new(dir: &Path) -> TestConfig {
        TestConfig {
            dir: dir.to_path_buf(),
            workers: 1,
            shutdown_grace: "5s".into(),
            seccomp: "enforce".into(),
            server_extra: String::new(),
            tables: Vec::new(),
            default_destination: "backend".into(),
            passthrough_destination: Some("backend".into()),
        }
    }

    pub fn workers(mut self, n: u32) -> Self {
        self.workers = n;
        self
    }

    pub fn shutdown_grace(mut self, grace: &str) -> Self {
        self.shutdown_grace = grace.into();
        self
    }

    /// More `[server]` keys (TOML key lines).
    pub fn server(mut self, lines: &str) -> Self {
        self.server_extra.push_str(lines.trim());
        self.server_extra.push('\n');
        self
    }

    /// `[listener.<name>]` with `body` (TOML key lines).
    pub fn listener(mut self, name: &str, body: &str) -> Self {
        self.tables
            .push(format!("[listener.{name}]\n{}\n", body.trim()));
        self
    }

    /// A plain-TCP SMTP/LMTP pass-through destination named `name` at 127.0.0.1:`port`
    /// (both legs on the same port).
    pub fn passthrough_destination(mut self, name: &str, port: u16, proxy_protocol: bool) -> Self {
        self.tables.push(format!(
            "[destination.{name}]\nhost = \"127.0.0.1\"\nproxy_protocol = {proxy_protocol}\n\
             [destination.{name}.protocol.lmtp]\nport = {port}\ntls = \"plain\"\n\
             [destination.{name}.protocol.smtp]\nport = {port}\ntls = \"plain\"\n"
        ));
        self.default_destination = name.into();
        self.passthrough_destination = Some(name.into());
        self
    }

    /// Routes accounts without a mapping to `name`, and drops the SMTP pass-through
    /// target (for configs without SMTP or LMTP listeners).
    pub fn default_destination(mut self, name: &str) -> Self {
        self.default_destination = name.into();
        self.passthrough_destination = None;
        self
    }

    /// Writes the mapping file (`mappings.txt` in the test's directory) now.
    pub fn mappings(self, lines: &str) -> Self {
        super::write_file(&self.dir.join("mappings.txt"), lines);
        self
    }

    /// Any other table, verbatim.
    pub fn raw(mut self, toml: &str) -> Self {
        self.tables.push(format!("{}\n", toml.trim()));
        self
    }

    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// The config text; also creates the (empty) mapping file.
    pub fn render(&self) -> String {
        let mapping = self.dir.join("mappings.txt");
        if !mapping.exists() {
            super::write_file(&mapping, "");
        }
        let user = super::TEST_USER;
        let mut c = String::new();
        let _ = write!(
            c,
            "[server]\nuser = \"{user}\"\ngroup = \"{user}\"\nworkers = {}\n\
             control_socket = \"{}\"\nshutdown_grace = \"{}\"\n{}\n\
             [sandbox]\nseccomp = \"{}\"\n\n",
            self.workers,
            self.control_socket().display(),
            self.shutdown_grace,
            self.server_extra,
            self.seccomp,
        );
        for t in &self.tables {
            c.push_str(t);
            c.push('\n');
        }
        let _ = write!(
            c,
            "[routing]\ndefault_destination = \"{}\"\n",
            self.default_destination
        );
        if let Some(p) = &self.passthrough_destination {
            let _ = writeln!(c, "smtp_passthrough_destination = \"{p}\"");
        }
        let _ = write!(
            c,
            "\n[mapping]\nsource = \"file\"\n\n[mapping.file]\npath = \"{}\"\n",
            mapping.display()
        );
        c
    }
}

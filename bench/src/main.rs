//! postern-bench: the load generator behind `scripts/bench.sh`.
//!
//! It speaks raw IMAP over tokio and measures, against the same backend, a direct
//! address and postern's address in one run, alternating the two in ABBA rounds so
//! that drift in the machine's load falls on both sides alike:
//!
//! - `logins`: connect, LOGIN, SELECT INBOX, LOGOUT in a loop from N concurrent
//!   clients for a fixed time; logins per second and latency percentiles
//!   (`--protocol pop3`: USER, PASS, STAT, QUIT; `--protocol submission`: EHLO,
//!   AUTH PLAIN, QUIT);
//! - `fetch`: `FETCH 1 BODY.PEEK[]` of one large message, repeated over one logged-in
//!   connection per side; MB/s (the first fetch is checked byte for byte);
//! - `idle`: opens N authenticated, SELECTed sessions through postern and holds them;
//!   the sum of the listener's worker RSS (`/proc/<pid>/status`, worker PIDs from
//!   `postern status --json`) before and after, per session;
//! - `append`: stores the large message once; `report`: the Markdown table;
//! - `splice-relay`: a minimal blind splice relay, measured beside postern as the
//!   floor any relay sits on (see `floor.rs`).
//!
//! Each measurement prints one JSON object on stdout; progress goes to stderr.

mod floor;
mod imap;
mod lines;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use imap::{within, Conn, Target};

/// Deadline for one protocol step (connect, a command and its reply).
const STEP: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(
    name = "postern-bench",
    about = "IMAP load generator for scripts/bench.sh"
)]
struct Cli {
    /// Client threads (1 = a single-threaded runtime, which keeps the client's CPU
    /// share small on a small machine).
    #[arg(long, default_value_t = 1, global = true)]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// APPEND the generated message of --size bytes into the user's INBOX.
    Append(AppendArgs),
    /// Login rate: connect, LOGIN, SELECT INBOX, LOGOUT (or the --protocol's login).
    Logins(LoginArgs),
    /// Relay throughput of a repeated FETCH 1 BODY.PEEK[].
    Fetch(FetchArgs),
    /// Worker RSS per idle authenticated session.
    Idle(IdleArgs),
    /// Print the Markdown table from the JSON results.
    Report(report::ReportArgs),
    /// Serve a minimal blind TCP relay (blocking splice, a thread per direction).
    SpliceRelay(floor::SpliceRelayArgs),
}

#[derive(Args, Clone)]
struct Users {
    /// Users are <prefix>1 .. <prefix><users>.
    #[arg(long, default_value = "bench")]
    user_prefix: String,
    #[arg(long, default_value_t = 32)]
    users: usize,
    #[arg(long)]
    password: String,
}

impl Users {
    fn name(&self, i: usize) -> String {
        format!("{}{}", self.user_prefix, i % self.users.max(1) + 1)
    }
}

#[derive(Args)]
struct AppendArgs {
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long)]
    user: String,
    #[arg(long)]
    password: String,
    #[arg(long, default_value_t = 10 << 20)]
    size: usize,
}

/// The dialogue one login iteration runs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// connect, LOGIN, SELECT INBOX, LOGOUT
    Imap,
    /// connect, USER, PASS, STAT, QUIT
    Pop3,
    /// connect, EHLO, AUTH PLAIN, QUIT
    Submission,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::Submission => "submission",
        }
    }

    /// One complete login iteration on a new connection.
    async fn login_once(self, target: &Target, user: &str, password: &str) -> Result<()> {
        match self {
            Protocol::Imap => {
                let mut c = session(target, user, password, 4096).await?;
                within(STEP, "LOGOUT", c.command("c", "LOGOUT")).await?;
                Ok(())
            }
            Protocol::Pop3 => lines::pop3_login(STEP, target, user, password).await,
            Protocol::Submission => lines::submission_login(STEP, target, user, password).await,
        }
    }
}

#[derive(Args)]
struct LoginArgs {
    /// The login dialogue.
    #[arg(long, value_enum, default_value_t = Protocol::Imap)]
    protocol: Protocol,
    /// The backend itself.
    #[arg(long)]
    direct: Option<SocketAddr>,
    /// postern's plain listener for --protocol in front of it.
    #[arg(long)]
    proxied: Option<SocketAddr>,
    #[command(flatten)]
    users: Users,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Length of one round on one side.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// ABBA rounds (each side runs once per round).
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// An unmeasured round per side first (processes forked, caches filled).
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
}

#[derive(Args)]
struct FetchArgs {
    #[arg(long)]
    direct: Option<SocketAddr>,
    #[arg(long)]
    proxied: Option<SocketAddr>,
    #[arg(long)]
    user: String,
    #[arg(long)]
    password: String,
    /// Expected message size (the message `append` stored).
    #[arg(long, default_value_t = 10 << 20)]
    size: usize,
    /// Fetches per side per round.
    #[arg(long, default_value_t = 10)]
    count: u32,
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Read every byte into the client (as a mail client would) instead of letting
    /// the kernel discard the literal (`recv(MSG_TRUNC)`), which keeps the client's
    /// CPU out of a measurement that shares a small machine with it.
    #[arg(long)]
    copy: bool,
}

#[derive(Args)]
struct IdleArgs {
    /// postern's listener address.
    #[arg(long)]
    addr: SocketAddr,
    /// Implicit TLS on the client leg.
    #[arg(long)]
    tls: bool,
    /// PEM certificate to trust (with --tls).
    #[arg(long)]
    ca: Option<PathBuf>,
    #[arg(long, default_value = "localhost")]
    server_name: String,
    #[command(flatten)]
    users: Users,
    #[arg(long, default_value_t = 5000)]
    sessions: usize,
    /// Sessions being opened at once.
    #[arg(long, default_value_t = 64)]
    open_concurrency: usize,
    /// Sessions opened and closed before the baseline is read.
    #[arg(long, default_value_t = 64)]
    warmup: usize,
    /// Wait between the last session opened and the second reading.
    #[arg(long, default_value_t = 2.0)]
    settle_secs: f64,
    /// The postern binary, for `postern status --json`. Without it (and --socket,
    /// --listener) nothing is measured: the sessions are only opened, held and checked.
    #[arg(long, requires_all = ["socket", "listener"])]
    postern: Option<PathBuf>,
    /// postern's control socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The listener whose workers are measured.
    #[arg(long, default_value = "")]
    listener: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    let out = match cli.cmd {
        Cmd::Report(args) => return report::print(&args),
        Cmd::SpliceRelay(args) => return floor::run(&args),
        Cmd::Append(args) => rt.block_on(append(args))?,
        Cmd::Logins(args) => rt.block_on(logins(args))?,
        Cmd::Fetch(args) => rt.block_on(fetch(args))?,
        Cmd::Idle(args) => rt.block_on(idle(args))?,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

macro_rules! progress {
    ($($t:tt)*) => { eprintln!("bench: {}", format_args!($($t)*)) };
}

/// The benchmark message: headers, then 78-character lines, CRLF ends, exactly `size`
/// bytes (ending in CRLF).
fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: bench <bench@example.org>\r\n\
To: fetch <fetch@example.org>\r\n\
Subject: postern relay benchmark\r\n\
Message-ID: <postern-bench@example.org>\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        .to_vec();
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut i = 0usize;
    while m.len() + 2 <= size {
        let room = (size - m.len() - 2).min(78);
        for _ in 0..room {
            m.push(alphabet[i % alphabet.len()]);
            i += 1;
        }
        m.extend_from_slice(b"\r\n");
    }
    m.truncate(size);
    m
}

async fn session(target: &Target, user: &str, password: &str, buf: usize) -> Result<Conn> {
    let mut c = within(STEP, "connect", target.connect(buf)).await?;
    within(STEP, "LOGIN", c.login(user, password)).await?;
    within(STEP, "SELECT", c.command("b", "SELECT INBOX")).await?;
    Ok(c)
}

async fn append(args: AppendArgs) -> Result<Value> {
    let target = Target::plain(args.addr);
    let mut c = session(&target, &args.user, &args.password, 4096).await?;
    let msg = message(args.size);
    within(STEP, "APPEND", c.append("INBOX", &msg)).await?;
    let r = within(STEP, "SELECT", c.command("c", "SELECT INBOX")).await?;
    c.command("z", "LOGOUT").await.ok();
    progress!("appended {} bytes for {}", msg.len(), args.user);
    Ok(json!({"kind": "append", "bytes": msg.len(), "exists": r.exists()}))
}

// ---- logins ---------------------------------------------------------------------------

#[derive(Default)]
struct LoginTally {
    ok: u64,
    errors: u64,
    secs: f64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
}

impl LoginTally {
    fn add(&mut self, o: LoginTally) {
        self.ok += o.ok;
        self.errors += o.errors;
        self.secs += o.secs;
        self.latencies_us.extend(o.latencies_us);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    fn json(mut self) -> Value {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| -> Option<f64> {
            let n = self.latencies_us.len();
            (n > 0).then(|| {
                let i = ((n as f64 - 1.0) * p).round() as usize;
                f64::from(self.latencies_us[i]) / 1000.0
            })
        };
        json!({
            "ok": self.ok,
            "errors": self.errors,
            "secs": self.secs,
            "rate": if self.secs > 0.0 { self.ok as f64 / self.secs } else { 0.0 },
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "first_error": self.first_error,
        })
    }
}

async fn login_round(
    protocol: Protocol,
    target: &Target,
    users: &Users,
    concurrency: usize,
    secs: f64,
) -> LoginTally {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let target = target.clone();
        let user = users.name(i);
        let password = users.password.clone();
        tasks.spawn(async move {
            let mut t = LoginTally::default();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match protocol.login_once(&target, &user, &password).await {
                    Ok(()) => {
                        t.ok += 1;
                        t.latencies_us
                            .push(t0.elapsed().as_micros().min(u32::MAX.into()) as u32);
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.first_error.get_or_insert_with(|| format!("{e:#}"));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            t
        });
    }
    let mut total = LoginTally::default();
    while let Some(t) = tasks.join_next().await {
        match t {
            Ok(t) => total.add(t),
            Err(e) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    // Iterations started before the deadline finish after it: count their time too.
    total.secs = start.elapsed().as_secs_f64();
    total
}

/// proxied / direct of each round (the two ran back to back), with their median:
/// robust against a machine whose load changes during the run.
fn ratios(per_round: &[[Option<f64>; 2]]) -> Value {
    let mut r: Vec<f64> = per_round
        .iter()
        .filter_map(|p| match p {
            [Some(d), Some(x)] if *d > 0.0 => Some(x / d),
            _ => None,
        })
        .collect();
    if r.is_empty() {
        return Value::Null;
    }
    let each = r.clone();
    r.sort_by(f64::total_cmp);
    let n = r.len();
    let median = if n % 2 == 1 {
        r[n / 2]
    } else {
        (r[n / 2 - 1] + r[n / 2]) / 2.0
    };
    json!({"median": median, "min": r[0], "max": r[n - 1], "per_round": each})
}

/// The sides to measure, in ABBA order for round `r`.
fn sides(
    direct: Option<SocketAddr>,
    proxied: Option<SocketAddr>,
    r: u32,
) -> Vec<(&'static str, SocketAddr)> {
    let mut v: Vec<_> = [("direct", direct), ("proxied", proxied)]
        .into_iter()
        .filter_map(|(n, a)| a.map(|a| (n, a)))
        .collect();
    if r % 2 == 1 {
        v.reverse();
    }
    v
}

async fn logins(args: LoginArgs) -> Result<Value> {
    if args.direct.is_none() && args.proxied.is_none() {
        bail!("give --direct, --proxied or both");
    }
    // Warm-up: every user once on each side (creates the maildirs, fills caches).
    for (side, addr) in sides(args.direct, args.proxied, 0) {
        let target = Target::plain(addr);
        for i in 0..args.users.users {
            args.protocol
                .login_once(&target, &args.users.name(i), &args.users.password)
                .await
                .with_context(|| {
                    format!("warm-up login as {} ({side}, {addr})", args.users.name(i))
                })?;
        }
        if args.warmup_secs > 0.0 {
            let t = login_round(
                args.protocol,
                &target,
                &args.users,
                args.concurrency,
                args.warmup_secs,
            )
            .await;
            progress!(
                "{} logins warm-up {side:>7}: {:.0}/s (not counted)",
                args.protocol.name(),
                t.ok as f64 / t.secs
            );
        }
    }
    let mut direct = LoginTally::default();
    let mut proxied = LoginTally::default();
    let mut per_round = Vec::new();
    for r in 0..args.rounds {
        let mut pair = [None; 2];
        for (side, addr) in sides(args.direct, args.proxied, r) {
            let t = login_round(
                args.protocol,
                &Target::plain(addr),
                &args.users,
                args.concurrency,
                args.secs,
            )
            .await;
            pair[usize::from(side != "direct")] = Some(t.ok as f64 / t.secs);
            progress!(
                "{} logins round {} {side:>7}: {} ok, {} errors in {:.2} s = {:.0}/s",
                args.protocol.name(),
                r + 1,
                t.ok,
                t.errors,
                t.secs,
                t.ok as f64 / t.secs
            );
            if side == "direct" {
                direct.add(t)
            } else {
                proxied.add(t)
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        per_round.push(pair);
    }
    Ok(json!({
        "kind": "logins",
        "protocol": args.protocol.name(),
        "concurrency": args.concurrency,
        "secs_per_round": args.secs,
        "rounds": args.rounds,
        "direct": args.direct.map(|_| direct.json()),
        "proxied": args.proxied.map(|_| proxied.json()),
        "ratio": ratios(&per_round),
    }))
}

// ---- fetch ----------------------------------------------------------------------------

async fn fetch_conn(addr: SocketAddr, args: &FetchArgs, side: &str) -> Result<Conn> {
    let target = Target::plain(addr);
    let mut c = within(STEP, "connect", target.connect(64 * 1024)).await?;
    within(STEP, "LOGIN", c.login(&args.user, &args.password)).await?;
    let sel = within(STEP, "SELECT", c.command("b", "SELECT INBOX")).await?;
    if sel.exists().unwrap_or(0) < 1 {
        bail!(
            "{side}: INBOX of {} is empty (run `append` first)",
            args.user
        );
    }
    // First fetch: checked byte for byte, and warms the page cache.
    let expected = message(args.size);
    let mut got = Vec::with_capacity(args.size);
    c.send(b"f FETCH 1 BODY.PEEK[]\r\n").await?;
    within(STEP, "FETCH", c.response("f", Some(&mut got))).await?;
    if got != expected {
        bail!(
            "{side}: FETCH returned {} bytes that differ from the {} bytes appended",
            got.len(),
            expected.len()
        );
    }
    c.discard_literals(!args.copy);
    Ok(c)
}

/// CPU time this thread has used (the runtime is single-threaded by default), from
/// `/proc/thread-self/schedstat`; 0 where that is unavailable.
fn thread_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// (bytes, seconds, client CPU seconds) of `count` fetches.
async fn fetch_batch(c: &mut Conn, count: u32) -> Result<(u64, f64, f64)> {
    let start = Instant::now();
    let cpu = thread_cpu_secs();
    let mut bytes = 0;
    for _ in 0..count {
        c.send(b"f FETCH 1 BODY.PEEK[]\r\n").await?;
        bytes += within(STEP, "FETCH", c.response("f", None))
            .await?
            .literal_bytes;
    }
    Ok((
        bytes,
        start.elapsed().as_secs_f64(),
        thread_cpu_secs() - cpu,
    ))
}

async fn fetch(args: FetchArgs) -> Result<Value> {
    let mut direct = match args.direct {
        Some(a) => Some(fetch_conn(a, &args, "direct").await?),
        None => None,
    };
    let mut proxied = match args.proxied {
        Some(a) => Some(fetch_conn(a, &args, "proxied").await?),
        None => None,
    };
    let mut totals = [(0u64, 0f64, 0f64); 2];
    let mut per_round = Vec::new();
    for r in 0..args.rounds {
        let mut pair = [None; 2];
        for (side, _) in sides(args.direct, args.proxied, r) {
            let (i, conn) = if side == "direct" {
                (0, direct.as_mut())
            } else {
                (1, proxied.as_mut())
            };
            let Some(conn) = conn else { continue };
            let (bytes, secs, cpu) = fetch_batch(conn, args.count)
                .await
                .with_context(|| side.to_string())?;
            progress!(
                "fetch round {} {side:>7}: {} x {} bytes in {:.2} s = {:.0} MB/s (client CPU {:.0} %)",
                r + 1,
                args.count,
                args.size,
                secs,
                bytes as f64 / secs / 1e6,
                cpu / secs * 100.0
            );
            totals[i].0 += bytes;
            totals[i].1 += secs;
            totals[i].2 += cpu;
            pair[i] = Some(bytes as f64 / secs / 1e6);
        }
        per_round.push(pair);
    }
    let side = |present: bool, (bytes, secs, cpu): (u64, f64, f64)| {
        present.then(|| {
            json!({
                "bytes": bytes,
                "secs": secs,
                "mb_per_s": bytes as f64 / secs / 1e6,
                "client_cpu_share": cpu / secs,
            })
        })
    };
    Ok(json!({
        "kind": "fetch",
        "message_bytes": args.size,
        "fetches_per_round": args.count,
        "rounds": args.rounds,
        "client_reads": if args.copy { "copy" } else { "kernel discard (MSG_TRUNC)" },
        "direct": side(direct.is_some(), totals[0]),
        "proxied": side(proxied.is_some(), totals[1]),
        "ratio": ratios(&per_round),
    }))
}

// ---- idle -----------------------------------------------------------------------------

/// The listener's pool in `postern status --json`: (worker PIDs, active sessions).
fn pool_status(args: &IdleArgs) -> Result<(Vec<u32>, u64)> {
    let (Some(postern), Some(socket)) = (&args.postern, &args.socket) else {
        return Ok((Vec::new(), 0));
    };
    let out = Command::new(postern)
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .output()
        .context("running postern status")?;
    if !out.status.success() {
        bail!("postern status: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("postern status --json")?;
    let pool = v["pools"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["listener"] == args.listener.as_str()))
        .with_context(|| format!("no pool for listener {:?} in postern status", args.listener))?;
    let pids = pool["workers"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|w| w["pid"].as_u64())
                .map(|p| p as u32)
                .collect()
        })
        .unwrap_or_default();
    Ok((pids, pool["active"].as_u64().unwrap_or(0)))
}

/// Sum of (VmRSS, RssAnon) in KiB over `pids`.
fn rss_kib(pids: &[u32]) -> Result<(u64, u64)> {
    let mut total = (0, 0);
    for pid in pids {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        total.0 += field("VmRSS:");
        total.1 += field("RssAnon:");
    }
    Ok(total)
}

async fn open_sessions(
    target: &Target,
    users: &Users,
    n: usize,
    concurrency: usize,
) -> (Vec<Conn>, u64, Option<String>) {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let target = target.clone();
        let user = users.name(i);
        let password = users.password.clone();
        let sem = sem.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            session(&target, &user, &password, 1024).await
        });
    }
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(c)) => conns.push(c),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (conns, failed, first_error)
}

async fn idle(args: IdleArgs) -> Result<Value> {
    let target = if args.tls {
        let ca = args.ca.as_deref().context("--tls needs --ca")?;
        Target::tls(args.addr, ca, &args.server_name)?
    } else {
        Target::plain(args.addr)
    };
    let leg = if target.is_tls() { "tls" } else { "plain" };

    if args.warmup > 0 {
        let (conns, failed, err) =
            open_sessions(&target, &args.users, args.warmup, args.open_concurrency).await;
        if failed > 0 {
            bail!(
                "warm-up: {failed} of {} sessions failed: {}",
                args.warmup,
                err.unwrap_or_default()
            );
        }
        drop(conns);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let (pids, active_before) = pool_status(&args)?;
    if pids.is_empty() && args.postern.is_some() {
        bail!("listener {:?} has no workers", args.listener);
    }
    let before = rss_kib(&pids)?;
    progress!(
        "idle {leg}: {} workers {pids:?}, RSS {} KiB before; opening {} sessions",
        pids.len(),
        before.0,
        args.sessions
    );

    let t0 = Instant::now();
    let (mut conns, failed, first_error) =
        open_sessions(&target, &args.users, args.sessions, args.open_concurrency).await;
    let open_secs = t0.elapsed().as_secs_f64();
    progress!(
        "idle {leg}: {} sessions open in {open_secs:.1} s ({failed} failed)",
        conns.len()
    );
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    let after = rss_kib(&pids)?;
    let (pids_after, active_during) = pool_status(&args)?;

    // Every held session must still answer.
    let mut noop_ok = 0u64;
    let mut noop_error = None;
    for c in conns.iter_mut() {
        match within(STEP, "NOOP", c.command("n", "NOOP")).await {
            Ok(_) => noop_ok += 1,
            Err(e) => {
                noop_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let held = conns.len();
    drop(conns);

    let sessions = held as f64;
    let per_session =
        |kib: u64, base: u64| (kib.saturating_sub(base)) as f64 * 1024.0 / sessions.max(1.0);
    progress!(
        "idle {leg}: RSS {} KiB after, {:.0} bytes/session; {noop_ok}/{held} answered NOOP",
        after.0,
        per_session(after.0, before.0)
    );
    Ok(json!({
        "kind": "idle",
        "leg": leg,
        "listener": args.listener,
        "sessions_wanted": args.sessions,
        "sessions_held": held,
        "sessions_failed": failed,
        "first_error": first_error,
        "open_secs": open_secs,
        "worker_pids": pids,
        "workers_unchanged": pids == pids_after,
        "postern_active_before": active_before,
        "postern_active_during": active_during,
        "rss_kib_before": before.0,
        "rss_kib_after": after.0,
        "rss_anon_kib_before": before.1,
        "rss_anon_kib_after": after.1,
        "bytes_per_session": per_session(after.0, before.0),
        "anon_bytes_per_session": per_session(after.1, before.1),
        "noop_ok": noop_ok,
        "noop_first_error": noop_error,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_median_of_rounds() {
        let v = ratios(&[
            [Some(100.0), Some(90.0)],
            [Some(200.0), Some(100.0)],
            [Some(50.0), Some(60.0)],
        ]);
        assert_eq!(v["median"].as_f64(), Some(0.9));
        assert_eq!(v["min"].as_f64(), Some(0.5));
        assert_eq!(v["max"].as_f64(), Some(1.2));
        assert!(ratios(&[[Some(1.0), None]]).is_null());
        let even = ratios(&[[Some(1.0), Some(0.8)], [Some(1.0), Some(1.0)]]);
        assert_eq!(even["median"].as_f64(), Some(0.9));
    }

    #[test]
    fn message_has_the_exact_size_and_crlf_lines() {
        for size in [300, 10 << 20, (10 << 20) + 1] {
            let m = message(size);
            assert_eq!(m.len(), size);
            assert!(m.ends_with(b"\r\n"));
            assert!(m
                .windows(2)
                .filter(|w| w[1] == b'\n')
                .all(|w| w[0] == b'\r'));
        }
    }
}

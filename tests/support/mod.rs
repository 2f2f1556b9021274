//! Shared helpers for the black-box tests in `tests/`.
//!
//! Each test file includes this module with `mod support;`. It owns the fixtures that
//! start real processes (the `postern` binary, a private Dovecot), scripted backends,
//! certificates, and the small utilities every test needs: root checks with a printed
//! skip, deadline-bounded waiting, free ports and the throwaway service account.
//!
//! Nothing here sleeps and hopes: every wait is a poll of a condition with a deadline,
//! and every process a fixture starts is stopped by its own PID when the fixture drops.
#![allow(dead_code)]

pub mod certs;
pub mod client;
pub mod dovecot;
pub mod mock_upstream;
pub mod proxy;
pub mod scripted;
pub mod smtp_sink;

use std::future::Future;
use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The throwaway account `postern run` drops to when the tests run as root.
pub const TEST_USER: &str = "postern-test";
/// The throwaway account that owns the mail of the tests' private Dovecot instances.
pub const MAIL_USER: &str = "postern-mail";

/// How often deadline loops poll their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The binary under test; `cargo test` builds it before any integration test runs.
pub fn postern_bin() -> &'static str {
    env!("CARGO_BIN_EXE_postern")
}

/// True when the tests run with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns true when `name` may go on; otherwise prints why it is skipped.
///
/// Tests call it first and return when it says false, so a run without root says which
/// tests did not run instead of passing them silently. Under CI it fails instead: see
/// [`skip`].
pub fn skip_unless_root(name: &str) -> bool {
    if is_root() {
        return true;
    }
    skipped(format!("skipped: {name} needs root"));
    false
}

/// Prints a skip line for `name` with `reason`; the caller then returns.
///
/// Under CI (`CI=true`), which runs as root after `scripts/install-deps.sh` installed
/// every program the tests use, a skip would pass a required test that never ran, so
/// it panics instead. Only [`skip_for_host`] may skip there.
pub fn skip(name: &str, reason: &str) {
    skipped(format!("skipped: {name}: {reason}"));
}

fn skipped(line: String) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{line}: not allowed under CI, which runs as root after scripts/install-deps.sh");
    }
    eprintln!("{line}");
}

/// Prints a skip line for `name` with `reason`, also under CI: for what no install step
/// provides (an IPv6 loopback on the host).
pub fn skip_for_host(name: &str, reason: &str) {
    eprintln!("skipped: {name}: {reason}");
}

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
pub fn eventually<T>(deadline: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Like [`eventually`], but returns `None` at the deadline instead of panicking.
pub fn poll_until<T>(deadline: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `read` (a log) until it contains `needle`, or panics after `deadline` showing
/// what `who` logged; returns the whole text.
pub fn wait_text(who: &str, needle: &str, deadline: Duration, read: impl Fn() -> String) -> String {
    match poll_until(deadline, || {
        let text = read();
        text.contains(needle).then_some(text)
    }) {
        Some(text) => text,
        None => panic!(
            "{who} never logged {needle:?} within {deadline:?}:\n{}",
            read()
        ),
    }
}

/// The async flavour of [`eventually`], for tests on a tokio runtime.
pub async fn eventually_async<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Only for programs that cannot bind port 0 and report it (Dovecot); postern itself
/// always binds `127.0.0.1:0` and tells its addresses through `status`.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// True when this host can bind and connect on `[::1]`.
pub fn ipv6_loopback_available() -> bool {
    let Ok(l) = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, 0))) else {
        return false;
    };
    let Ok(addr) = l.local_addr() else {
        return false;
    };
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// The name of the throwaway service account, created (as root) if it is missing.
pub fn test_user() -> &'static str {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| ensure_account(TEST_USER));
    TEST_USER
}

/// The account that owns the private Dovecot instances' mail, created (as root) if
/// missing.
pub fn mail_user() -> &'static str {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| ensure_account(MAIL_USER));
    MAIL_USER
}

/// uid and gid of `name`, if the account exists.
pub fn account_ids(name: &str) -> Option<(u32, u32)> {
    let user = nix::unistd::User::from_name(name).ok().flatten()?;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// Creates a system account with no home and no login shell, unless it exists or we are
/// not root. Several test binaries may race here; `useradd` failing because the other
/// one won is fine, so existence is checked again afterwards.
fn ensure_account(name: &str) {
    if account_ids(name).is_some() || !is_root() {
        return;
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            name,
        ])
        .status();
    if account_ids(name).is_none() {
        panic!("could not create the throwaway account {name}: useradd {status:?}");
    }
}

/// True when `program` is found on PATH (or is an existing path).
pub fn have_program(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Sets `path`'s permission bits.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// A temporary directory any account can read (0755), so a service account that
/// postern or Dovecot drops to can still read what the test wrote there.
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("postern-test.")
        .tempdir()
        .expect("create tempdir");
    chmod(dir.path(), 0o755);
    dir
}

/// Writes `contents` to `path` with mode 0644.
pub fn write_file(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chmod(path, 0o644);
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A message with the things a relay could damage: a dot-stuffed line, a long line,
/// 8-bit text.
pub fn sample_message(tag: &str) -> Vec<u8> {
    let long = "x".repeat(900);
    format!(
        "From: Bob <bob@example.net>\r\nTo: Alice <alice@example.org>\r\nSubject: {tag}\r\n\
         Message-ID: <{tag}@example.net>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         Hello Alice,\r\n.a line that starts with a dot\r\n..two dots\r\n{long}\r\n\
         Gr\u{fc}\u{df}e, \u{2603}\r\n\r\n-- \r\nBob\r\n"
    )
    .into_bytes()
}

/// The PROXY protocol v2 header postern must send for a TCP client `src` that reached
/// `dst`: signature, version 2 / command PROXY (0x21), TCP over IPv4 (0x11) or IPv6
/// (0x21), the address block length, then addresses and ports, big-endian, no TLVs.
pub fn proxy_v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11);
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            h.push(0x21);
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
        }
        _ => panic!("mixed families have no v2 address block: {src} -> {dst}"),
    }
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

/// `len` bytes where every byte value occurs, in a pattern that does not repeat with a
/// short period, so a dropped, duplicated or reordered chunk shows.
pub fn pattern_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            // xorshift32
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

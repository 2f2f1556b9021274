//! Privilege separation, read from `/proc` (reference/privsep.md §2.13 T1–T3, T7–T9):
//! the supervisor drops to the service account with no capability left, workers are
//! sandboxed too, no inherited fd reaches a worker, the control socket checks its
//! peers, the supervisor is not dumpable, and its death takes the workers with it.

mod support;

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use support::mock_upstream::MockUpstream;
use support::proxy::{Proxy, TestConfig};

/// `/proc/PID/status` as key → value.
fn proc_status(pid: u32) -> HashMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.trim().to_owned(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect()
}

fn worker_pids(proxy: &Proxy) -> Vec<u32> {
    let status = proxy.status_json();
    status["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["workers"].as_array().cloned().unwrap_or_default())
        .filter_map(|w| w["pid"].as_u64().map(|p| p as u32))
        .collect()
}

/// Two pass-through listeners in front of an echo backend.
fn two_listener_config(dir: &std::path::Path, backend_port: u16) -> String {
    TestConfig::new(dir)
        .listener(
            "lmtp",
            "protocol = \"lmtp\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"",
        )
        .listener(
            "smtp",
            "protocol = \"smtp\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"",
        )
        .passthrough_destination("backend", backend_port, false)
        .render()
}

fn assert_dropped(pid: u32, what: &str, uid: u32, gid: u32) -> HashMap<String, String> {
    let s = proc_status(pid);
    assert_eq!(s["Uid"], format!("{uid} {uid} {uid} {uid}"), "{what} Uid");
    assert_eq!(s["Gid"], format!("{gid} {gid} {gid} {gid}"), "{what} Gid");
    assert_eq!(
        s.get("Groups").map(String::as_str),
        Some(""),
        "{what} supplementary groups"
    );
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(s[cap], "0000000000000000", "{what} {cap}");
    }
    assert_eq!(s["NoNewPrivs"], "1", "{what} NoNewPrivs");
    // A non-dumpable process's /proc files belong to root, not to its own uid.
    use std::os::unix::fs::MetadataExt;
    let environ = std::fs::metadata(format!("/proc/{pid}/environ")).expect("environ");
    assert_eq!(environ.uid(), 0, "{what} must not be dumpable");
    s
}

#[test]
fn supervisor_and_workers_hold_no_privilege() {
    if !support::skip_unless_root("supervisor_and_workers_hold_no_privilege") {
        return;
    }
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let proxy = Proxy::start(two_listener_config(dir.path(), backend.addr().port()), &dir);
    let (uid, gid) = support::account_ids(support::test_user()).expect("test account");

    assert_dropped(proxy.pid(), "supervisor", uid, gid);
    let workers = worker_pids(&proxy);
    assert_eq!(workers.len(), 2, "one worker per listener");
    for pid in workers {
        let s = assert_dropped(pid, "worker", uid, gid);
        assert_eq!(
            s["Seccomp"], "2",
            "worker {pid} runs under a seccomp filter"
        );
    }
    // The status report names the account, too.
    assert_eq!(proxy.status_json()["user"], support::test_user());
}

#[test]
fn workers_are_sandboxed_even_without_root() {
    // Unprivileged mode has no drop to verify, but the sandbox must still be on.
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let proxy = Proxy::start(two_listener_config(dir.path(), backend.addr().port()), &dir);
    let sup = proc_status(proxy.pid());
    assert_eq!(sup["NoNewPrivs"], "1");
    for pid in worker_pids(&proxy) {
        let s = proc_status(pid);
        assert_eq!(s["Seccomp"], "2", "worker {pid}");
        assert_eq!(s["NoNewPrivs"], "1", "worker {pid}");
    }
}

#[test]
fn seccomp_log_and_off_modes_are_honoured() {
    let backend = MockUpstream::new().echo().start();
    for (mode, expected) in [("log", "2"), ("off", "0")] {
        let dir = support::shared_tempdir();
        let mut cfg = TestConfig::new(dir.path())
            .listener(
                "lmtp",
                "protocol = \"lmtp\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"",
            )
            .passthrough_destination("backend", backend.addr().port(), false);
        cfg.seccomp = mode.into();
        let proxy = Proxy::start(cfg.render(), &dir);
        for pid in worker_pids(&proxy) {
            assert_eq!(proc_status(pid)["Seccomp"], expected, "seccomp = {mode}");
        }
    }
}

#[test]
fn no_inherited_fd_leaks_into_a_worker() {
    if !support::skip_unless_root("no_inherited_fd_leaks_into_a_worker") {
        return;
    }
    // A pipe without close-on-exec, inherited by `postern run` from this process.
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    let leaked =
        std::fs::read_link(format!("/proc/self/fd/{}", read_end.as_raw_fd())).expect("pipe link");
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let proxy = Proxy::start(two_listener_config(dir.path(), backend.addr().port()), &dir);
    drop(write_end);

    for pid in worker_pids(&proxy) {
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("worker fds")
            .flatten()
        {
            let fd: i32 = entry
                .file_name()
                .to_string_lossy()
                .parse()
                .expect("fd number");
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            assert_ne!(
                target, leaked,
                "worker {pid} inherited the test's pipe as fd {fd}"
            );
            let target = target.to_string_lossy().into_owned();
            assert!(
                fd <= 2 || target.starts_with("socket:") || target.starts_with("anon_inode:"),
                "worker {pid} fd {fd} is {target}: only sockets and event fds are expected"
            );
            if fd > 2 {
                let info =
                    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).expect("fdinfo");
                let flags = info
                    .lines()
                    .find_map(|l| l.strip_prefix("flags:"))
                    .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
                    .expect("flags");
                assert_ne!(
                    flags & 0o2000000,
                    0,
                    "worker {pid} fd {fd} ({target}) is not close-on-exec"
                );
            }
        }
    }
    drop(read_end);
}

#[test]
fn killing_the_supervisor_leaves_no_worker() {
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let mut proxy = Proxy::start(two_listener_config(dir.path(), backend.addr().port()), &dir);
    let workers = worker_pids(&proxy);
    assert!(!workers.is_empty());
    proxy.signal(nix::sys::signal::Signal::SIGKILL);
    proxy
        .wait_exit(Duration::from_secs(5))
        .expect("supervisor died");
    support::eventually(Duration::from_secs(3), "every worker to exit", || {
        // A worker is gone when its /proc entry is gone or a zombie awaiting its reaper.
        workers
            .iter()
            .all(|pid| {
                proc_status(*pid)
                    .get("State")
                    .is_none_or(|s| s.starts_with('Z'))
            })
            .then_some(())
    });
}

/// Runs `args` as `uid:gid` with no supplementary groups, through setpriv.
fn run_as(uid: u32, gid: u32, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--clear-groups",
        "--",
    ]);
    cmd.args(args);
    support::client::run_with_deadline(cmd, Duration::from_secs(15))
}

#[test]
fn control_socket_admits_only_root_and_the_service_account() {
    if !support::skip_unless_root("control_socket_admits_only_root_and_the_service_account") {
        return;
    }
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let proxy = Proxy::start(two_listener_config(dir.path(), backend.addr().port()), &dir);
    let socket = proxy.socket.to_string_lossy().into_owned();
    let bin = support::postern_bin();
    let (svc_uid, svc_gid) = support::account_ids(support::test_user()).expect("test account");

    let meta = std::fs::metadata(&proxy.socket).expect("socket");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o660,
        "control socket mode"
    );
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, svc_gid),
        "control socket owner"
    );

    // root: allowed.
    let out = proxy.cli(&["status", "--socket"], true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The service account: allowed.
    let out = run_as(svc_uid, svc_gid, &[bin, "status", "--socket", &socket]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "service account: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // nobody: the file mode keeps it out (EACCES at connect).
    let out = run_as(65534, 65534, &[bin, "status", "--socket", &socket]);
    assert_eq!(out.status.code(), Some(4), "nobody must be refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    // nobody with the service group passes the mode; SO_PEERCRED turns it away.
    let out = run_as(65534, svc_gid, &[bin, "status", "--socket", &socket]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "foreign uid with the group must be refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused by the supervisor"));
    proxy.wait_log("control request rejected", Duration::from_secs(5));
}

#[test]
fn supervisor_is_not_dumpable() {
    if !support::skip_unless_root("supervisor_is_not_dumpable") {
        return;
    }
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let proxy = Proxy::start(two_listener_config(dir.path(), backend.addr().port()), &dir);
    let (uid, gid) = support::account_ids(support::test_user()).expect("test account");
    // Same uid as the supervisor, yet its environment and memory stay closed.
    let environ = format!("/proc/{}/environ", proxy.pid());
    let out = run_as(uid, gid, &["cat", &environ]);
    assert!(!out.status.success(), "a same-uid process read {environ}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
}

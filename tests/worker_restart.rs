//! Crash isolation and the restart policy (reference/privsep.md §2.7, §2.13 T4–T6):
//! a worker killed or felled by seccomp is back at once while other listeners' sessions
//! go on; startup failures back off 1 s, 2 s, 4 s...; a configuration-level failure
//! waits for a reload.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use support::mock_upstream::MockUpstream;
use support::proxy::{Proxy, TestConfig};

fn config(dir: &std::path::Path, backend_port: u16) -> String {
    TestConfig::new(dir)
        .listener(
            "steady",
            "protocol = \"lmtp\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"",
        )
        .listener(
            "victim",
            "protocol = \"smtp\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"",
        )
        .passthrough_destination("backend", backend_port, false)
        .render()
}

/// A session through `listener` to the echo backend, proven alive by one round trip.
fn open_session(proxy: &Proxy, listener: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy.addr(listener)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    round_trip(&mut s, b"first\r\n");
    s
}

fn round_trip(s: &mut TcpStream, line: &[u8]) {
    s.write_all(line).expect("write");
    let mut got = vec![0u8; line.len()];
    s.read_exact(&mut got).expect("echo through the proxy");
    assert_eq!(got, line);
}

fn worker_pid(pool: &Value) -> Option<u64> {
    pool["workers"]
        .as_array()?
        .iter()
        .find(|w| w["phase"] == "ready")
        .and_then(|w| w["pid"].as_u64())
}

#[test]
fn a_killed_worker_is_back_within_a_second_and_other_sessions_survive() {
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let proxy = Proxy::start(config(dir.path(), backend.addr().port()), &dir);
    let mut session = open_session(&proxy, "steady");
    let old = worker_pid(&proxy.pool("victim")).expect("victim worker");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let pool = support::eventually(
        Duration::from_secs(1),
        "the victim pool to be running again",
        || {
            let pool = proxy.pool("victim");
            (pool["state"] == "running" && worker_pid(&pool).is_some_and(|p| p != old))
                .then_some(pool)
        },
    );
    assert_eq!(pool["restarts"], 1);
    assert_eq!(pool["last_exit"], "signal 9 (KILL)");
    // The other listener's session never noticed, and the supervisor is the same.
    round_trip(&mut session, b"still here\r\n");
    assert_eq!(
        proxy.status_json()["supervisor_pid"].as_u64(),
        Some(u64::from(proxy.pid()))
    );
    // And the restarted worker serves.
    let mut fresh = open_session(&proxy, "victim");
    round_trip(&mut fresh, b"new worker\r\n");
}

#[test]
fn a_seccomp_violation_kills_only_that_worker_which_is_respawned() {
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let proxy = Proxy::spawn_env(
        config(dir.path(), backend.addr().port()),
        dir.path(),
        &[("POSTERN_TEST_FAULTS", "victim:seccomp-once")],
    );
    let pool = support::eventually(
        Duration::from_secs(10),
        "the victim worker to be killed and respawned",
        || {
            let pool = proxy.try_pool("victim")?;
            (pool["restarts"] == 1 && pool["state"] == "running").then_some(pool)
        },
    );
    assert_eq!(
        pool["last_exit"], "signal 31 (SYS)",
        "killed by the seccomp filter"
    );
    let steady = proxy.pool("steady");
    assert_eq!(steady["restarts"], 0, "the other pool was untouched");
    let mut s = open_session(&proxy, "victim");
    round_trip(&mut s, b"after respawn\r\n");
}

#[test]
fn a_crash_loop_backs_off_while_other_pools_keep_serving() {
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let proxy = Proxy::spawn_env(
        config(dir.path(), backend.addr().port()),
        dir.path(),
        &[("POSTERN_TEST_FAULTS", "victim:exit-before-ready")],
    );
    support::eventually(Duration::from_secs(10), "the steady pool to run", || {
        let steady = proxy.try_pool("steady")?;
        (steady["state"] == "running").then_some(())
    });
    let mut session = open_session(&proxy, "steady");
    // Four failed starts take 1 + 2 + 4 s of backoff between them.
    let log = proxy.wait_log("retry_in=8s", Duration::from_secs(15));
    let delays: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("throttling restarts") && l.contains("victim"))
        .filter_map(|l| l.split("retry_in=").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(
        delays[..4],
        ["1s", "2s", "4s", "8s"],
        "backoff doubles:\n{log}"
    );
    let victim = proxy.pool("victim");
    assert_eq!(victim["state"], "throttled");
    assert!(victim["next_try_secs"].as_u64().is_some());
    assert_eq!(victim["last_exit"], "exit 1");
    // `status` says the service is degraded.
    assert_eq!(
        proxy.cli(&["status", "--socket"], true).status.code(),
        Some(3)
    );
    round_trip(&mut session, b"unaffected\r\n");
}

#[test]
fn a_configuration_failure_waits_for_reload() {
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let proxy = Proxy::spawn_env(
        config(dir.path(), backend.addr().port()),
        dir.path(),
        &[("POSTERN_TEST_FAULTS", "victim:fatal")],
    );
    support::eventually(
        Duration::from_secs(10),
        "the victim pool to be failed",
        || {
            let victim = proxy.try_pool("victim")?;
            (victim["state"] == "failed").then_some(())
        },
    );
    let spawned = |log: &str| log.matches("worker spawned worker=victim.0").count();
    let before = spawned(&proxy.log());
    // Not restarted on its own: the failed state holds across several ping rounds.
    assert!(
        support::poll_until(Duration::from_millis(2500), || (proxy.pool("victim")
            ["state"]
            != "failed")
            .then_some(()))
        .is_none()
    );
    assert_eq!(
        spawned(&proxy.log()),
        before,
        "a failed pool must not be respawned before reload"
    );
    proxy.reload().expect("reload");
    support::eventually(
        Duration::from_secs(5),
        "reload to try the pool again",
        || (spawned(&proxy.log()) > before).then_some(()),
    );
}

#[test]
fn a_worker_that_breaks_the_ipc_protocol_is_killed_alone() {
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let proxy = Proxy::spawn_env(
        config(dir.path(), backend.addr().port()),
        dir.path(),
        &[("POSTERN_TEST_FAULTS", "victim:garbage-once")],
    );
    let pool = support::eventually(
        Duration::from_secs(10),
        "the hostile worker to be replaced",
        || {
            let pool = proxy.try_pool("victim")?;
            (pool["restarts"] == 1 && pool["state"] == "running").then_some(pool)
        },
    );
    assert_eq!(pool["last_exit"], "signal 9 (KILL)");
    assert!(proxy.log().contains("worker broke the ipc protocol"));
    assert_eq!(proxy.pool("steady")["restarts"], 0);
    assert_eq!(
        proxy.status_json()["supervisor_pid"].as_u64(),
        Some(u64::from(proxy.pid()))
    );
}

#[test]
fn a_worker_over_max_session_memory_is_killed_and_restarted() {
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    // No worker fits in 1 MiB of resident memory: every one is killed at its first check.
    let cfg = config(dir.path(), backend.addr().port())
        .replace("[sandbox]", "max_session_memory = \"1MiB\"\n\n[sandbox]");
    let proxy = Proxy::spawn(cfg, dir.path());
    proxy.wait_log("over server.max_session_memory", Duration::from_secs(10));
    let pool = support::eventually(
        Duration::from_secs(10),
        "a restart after the memory kill",
        || {
            let pool = proxy.try_pool("victim")?;
            (pool["restarts"].as_u64()? >= 1).then_some(pool)
        },
    );
    assert_eq!(pool["last_exit"], "signal 9 (KILL)");
}

//! `postern status` and `postern supervisor status`: the table, the JSON, and the
//! exit codes (0 all running, 3 degraded, 4 unreachable), with a clear message and no
//! backtrace when there is no supervisor to ask.

mod support;

use std::time::Duration;

use support::mock_upstream::MockUpstream;
use support::proxy::{Proxy, TestConfig};

#[test]
fn status_shows_every_pool_as_a_table_and_as_json() {
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let cfg = TestConfig::new(dir.path())
        .workers(2)
        .listener(
            "lmtp",
            "protocol = \"lmtp\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"",
        )
        .passthrough_destination("backend", backend.addr().port(), false)
        .render();
    let proxy = Proxy::start(cfg, &dir);
    let addr = proxy.addr("lmtp");

    let out = proxy.cli(&["status", "--socket"], true);
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("supervisor pid {}", proxy.pid())),
        "{table}"
    );
    for id in ["lmtp.0", "lmtp.1"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no row {id}:\n{table}"));
        assert!(
            row.contains(&addr.to_string()) && row.contains("running"),
            "{row}"
        );
    }

    let alias = proxy.cli(&["supervisor", "status", "--json", "--socket"], true);
    assert_eq!(alias.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&alias.stdout).expect("json");
    let pool = &json["pools"][0];
    assert_eq!(pool["listener"], "lmtp");
    assert_eq!(pool["protocol"], "lmtp");
    assert_eq!(pool["state"], "running");
    assert_eq!(pool["workers"].as_array().map(Vec::len), Some(2));
    for w in pool["workers"].as_array().into_iter().flatten() {
        assert!(w["pid"].as_u64().is_some_and(|p| p > 1));
        assert_eq!(w["phase"], "ready");
    }

    // Connections show up in the counts.
    let _c = std::net::TcpStream::connect(addr).expect("connect");
    support::eventually(
        Duration::from_secs(5),
        "the connection to be counted",
        || {
            let pool = proxy.pool("lmtp");
            (pool["active"] == 1 && pool["total"] == 1).then_some(())
        },
    );
}

#[test]
fn status_without_a_supervisor_exits_4_with_a_clear_message() {
    let dir = support::shared_tempdir();
    let missing = dir.path().join("nothing.sock");
    // A stale socket file: bound once, nobody listening now.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    for socket in [&missing, &stale] {
        let out = std::process::Command::new(support::postern_bin())
            .args(["status", "--socket"])
            .arg(socket)
            .output()
            .expect("run status");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(err.contains("cannot reach the postern supervisor"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

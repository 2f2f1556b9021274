//! `postern reload` and SIGHUP: a broken config changes nothing and says why; a good
//! one rolls a new generation onto the same sockets while old sessions finish; a new
//! privileged port after the drop is refused with a restart hint.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::mock_upstream::MockUpstream;
use support::proxy::{Proxy, TestConfig};

fn round_trip(s: &mut TcpStream, line: &[u8]) {
    s.write_all(line).expect("write");
    let mut got = vec![0u8; line.len()];
    s.read_exact(&mut got).expect("echo through the proxy");
    assert_eq!(got, line);
}

fn base(dir: &std::path::Path, port: u16) -> TestConfig {
    TestConfig::new(dir)
        .listener(
            "lmtp",
            "protocol = \"lmtp\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"",
        )
        .passthrough_destination("backend", port, false)
}

#[test]
fn a_broken_config_on_reload_leaves_the_old_one_serving() {
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let proxy = Proxy::start(base(dir.path(), backend.addr().port()).render(), &dir);
    let addr = proxy.addr("lmtp");
    let pid_before = proxy.pool("lmtp")["workers"][0]["pid"].clone();

    let broken = std::fs::read_to_string(&proxy.config_path)
        .expect("config")
        .replace("tls = \"plain\"", "tls = \"startls\"");
    support::write_file(&proxy.config_path, broken);
    let err = proxy.reload().expect_err("reload must be refused");
    assert!(
        err.contains("listener.lmtp.tls") && err.contains("startls"),
        "{err}"
    );
    // SIGHUP takes the same path.
    proxy.signal(nix::sys::signal::Signal::SIGHUP);
    proxy.wait_log("reload refused", Duration::from_secs(5));

    let status = proxy.status_json();
    assert_eq!(status["generation"], 1);
    assert_eq!(proxy.pool("lmtp")["workers"][0]["pid"], pid_before);
    let mut s = TcpStream::connect(addr).expect("still listening");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    round_trip(&mut s, b"old config serves\r\n");
}

#[test]
fn a_good_reload_rolls_a_new_generation_and_old_sessions_finish() {
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let proxy = Proxy::start(
        base(dir.path(), backend.addr().port())
            .shutdown_grace("20s")
            .render(),
        &dir,
    );
    let addr = proxy.addr("lmtp");
    let mut old_session = TcpStream::connect(addr).expect("connect");
    old_session
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    round_trip(&mut old_session, b"before\r\n");
    let old_pid = proxy.pool("lmtp")["workers"][0]["pid"]
        .as_u64()
        .expect("pid");

    let cfg = base(dir.path(), backend.addr().port())
        .shutdown_grace("20s")
        .workers(2)
        .render();
    support::write_file(&proxy.config_path, cfg);
    let out = proxy.reload().expect("reload");
    assert!(out.contains("generation 2"), "{out}");
    let pool = support::eventually(Duration::from_secs(10), "generation 2 to run", || {
        let pool = proxy.pool("lmtp");
        let gen2 = pool["workers"]
            .as_array()?
            .iter()
            .filter(|w| w["generation"] == 2 && w["phase"] == "ready")
            .count();
        (gen2 == 2).then_some(pool)
    });
    assert_eq!(
        pool["addrs"][0],
        addr.to_string(),
        "same socket after reload"
    );
    // The old worker drains: its session still works...
    round_trip(&mut old_session, b"during drain\r\n");
    let old = pool["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["pid"] == old_pid)
        .cloned();
    assert_eq!(old.map(|w| w["phase"].clone()), Some("draining".into()));
    // ...new connections go to the new generation...
    let mut new_session = TcpStream::connect(addr).expect("connect");
    new_session
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    round_trip(&mut new_session, b"new generation\r\n");
    // ...and once it ends, the old worker exits.
    drop(old_session);
    support::eventually(Duration::from_secs(5), "the old worker to exit", || {
        let pool = proxy.pool("lmtp");
        (!pool["workers"]
            .as_array()?
            .iter()
            .any(|w| w["pid"] == old_pid))
        .then_some(())
    });
}

#[test]
fn a_new_privileged_port_after_the_drop_needs_a_restart() {
    if !support::skip_unless_root("a_new_privileged_port_after_the_drop_needs_a_restart") {
        return;
    }
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let proxy = Proxy::start(base(dir.path(), backend.addr().port()).render(), &dir);
    // A privileged port nobody uses right now.
    let port = (900..1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free privileged port");
    let cfg = base(dir.path(), backend.addr().port())
        .listener(
            "smtp",
            &format!("protocol = \"smtp\"\nbind = [\"127.0.0.1:{port}\"]\ntls = \"plain\""),
        )
        .render();
    support::write_file(&proxy.config_path, cfg);
    let err = proxy.reload().expect_err("reload must be refused");
    assert!(
        err.contains("listener.smtp") && err.contains("restart"),
        "{err}"
    );
    assert_eq!(proxy.status_json()["generation"], 1);
}

#[test]
fn a_listener_can_gain_an_address_and_keep_the_old_one() {
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let (a, b) = (support::free_port(), support::free_port());
    let one = format!("protocol = \"lmtp\"\nbind = [\"127.0.0.1:{a}\"]\ntls = \"plain\"");
    let two = format!(
        "protocol = \"lmtp\"\nbind = [\"127.0.0.1:{a}\", \"127.0.0.1:{b}\"]\ntls = \"plain\""
    );
    let cfg = |body: &str| {
        TestConfig::new(dir.path())
            .listener("lmtp", body)
            .passthrough_destination("backend", backend.addr().port(), false)
            .render()
    };
    let proxy = Proxy::start(cfg(&one), &dir);
    support::write_file(&proxy.config_path, cfg(&two));
    proxy.reload().expect("reload with an added address");
    support::eventually(Duration::from_secs(10), "both addresses served", || {
        let pool = proxy.pool("lmtp");
        (pool["state"] == "running" && pool["addrs"].as_array()?.len() == 2).then_some(())
    });
    for port in [a, b] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        round_trip(&mut s, b"both\r\n");
    }
    // The generation-1 worker drains out and is gone from the report.
    support::eventually(Duration::from_secs(5), "the old generation to exit", || {
        let status = proxy.status_json();
        let pools = status["pools"].as_array()?;
        (pools.len() == 1
            && pools[0]["workers"]
                .as_array()?
                .iter()
                .all(|w| w["generation"] == 2))
        .then_some(())
    });
}

#[test]
fn a_reload_that_fails_midway_leaves_every_socket_in_place() {
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let a = support::free_port();
    // Held by this test, so binding it fails during the reload.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = taken.local_addr().expect("addr").port();
    let cfg = |bind: &str| {
        TestConfig::new(dir.path())
            .listener(
                "lmtp",
                &format!("protocol = \"lmtp\"\nbind = [{bind}]\ntls = \"plain\""),
            )
            .passthrough_destination("backend", backend.addr().port(), false)
            .render()
    };
    let proxy = Proxy::start(cfg(&format!("\"127.0.0.1:{a}\"")), &dir);
    support::write_file(
        &proxy.config_path,
        cfg(&format!("\"127.0.0.1:{a}\", \"127.0.0.1:{b}\"")),
    );
    let err = proxy
        .reload()
        .expect_err("the second address cannot be bound");
    assert!(err.contains(&format!("127.0.0.1:{b}")), "{err}");
    // A worker restarted after the failed reload still gets the listener's socket.
    let pid = proxy.pool("lmtp")["workers"][0]["pid"]
        .as_u64()
        .expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    support::eventually(Duration::from_secs(5), "the worker to be back", || {
        let pool = proxy.try_pool("lmtp")?;
        (pool["state"] == "running" && pool["workers"][0]["pid"].as_u64()? != pid).then_some(())
    });
    let mut s = TcpStream::connect(("127.0.0.1", a)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    round_trip(&mut s, b"still bound\r\n");
    assert_eq!(proxy.status_json()["generation"], 1);
}

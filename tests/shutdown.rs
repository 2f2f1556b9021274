//! SIGTERM drains: the supervisor stops accepting, a session already relaying keeps
//! relaying, and once it ends the supervisor exits 0 well before `shutdown_grace`.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::client::{self, LineClient};
use support::mock_upstream::MockUpstream;
use support::proxy::{Proxy, TestConfig};

const WAIT: Duration = Duration::from_secs(20);
const GRACE_SECS: u64 = 30;

#[test]
fn sigterm_lets_an_inflight_session_finish_and_refuses_new_ones() {
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let config = TestConfig::new(dir.path())
        .shutdown_grace(&format!("{GRACE_SECS}s"))
        .listener(
            "lmtp",
            "protocol = \"lmtp\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"",
        )
        .passthrough_destination("backend", backend.port(), false)
        .render();
    let mut proxy = Proxy::start(config, &dir);
    let addr = proxy.addr("lmtp");

    let mut session = LineClient::connect(addr);
    session.send("one");
    assert_eq!(session.read_line(), "one");

    let term_at = Instant::now();
    proxy.sigterm();

    session.send("two");
    assert_eq!(
        session.read_line(),
        "two",
        "the in-flight session stopped relaying after SIGTERM"
    );

    // New clients are turned away: refused at connect, or closed without being served.
    support::eventually(WAIT, "new connections to be refused", || {
        new_client_turned_away(addr).then_some(())
    });
    // ... and stay turned away (a client racing the signal may have been served).
    for _ in 0..3 {
        assert!(
            new_client_turned_away(addr),
            "a new client was served while draining"
        );
    }

    session.send("three");
    assert_eq!(
        session.read_line(),
        "three",
        "the in-flight session stopped relaying while draining"
    );
    assert!(
        proxy.wait_exit(Duration::from_millis(200)).is_none(),
        "postern exited with a session open"
    );

    // End the session: the backend echoes our half-close, then postern may exit.
    session.shutdown_write();
    client::read_until_closed(&mut session.stream, WAIT);
    let status = proxy
        .wait_exit(Duration::from_secs(GRACE_SECS / 2))
        .unwrap_or_else(|| {
            panic!(
                "postern still running after the last session ended:\n{}",
                proxy.log()
            )
        });
    let took = term_at.elapsed();
    assert!(
        status.success(),
        "postern exited with {status} after SIGTERM:\n{}",
        proxy.log()
    );
    assert!(
        took < Duration::from_secs(GRACE_SECS),
        "exit took {took:?}, the whole grace period"
    );
}

/// One attempt: true when the listener refuses the connection or closes it without
/// relaying anything. A connection still being served counts as false.
fn new_client_turned_away(addr: std::net::SocketAddr) -> bool {
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return true,
        Err(_) => return false,
        Ok(s) => s,
    };
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    if s.write_all(b"ping\r\n").is_err() {
        return true;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(_) => false,
    }
}

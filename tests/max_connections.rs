//! `max_connections` on a listener: past the limit, a plaintext pass-through listener
//! answers with the protocol's busy reply (`421 4.7.0 ...` for SMTP/LMTP) and closes;
//! an implicit-TLS listener closes at once; a freed slot serves the next client.

mod support;

use std::time::Duration;

use support::certs::Ca;
use support::client::{self, LineClient};
use support::mock_upstream::MockUpstream;
use support::proxy::{Proxy, TestConfig};

const WAIT: Duration = Duration::from_secs(20);
const GREETING: &str = "220 backend.test LMTP ready";

#[test]
fn third_lmtp_connection_gets_421_and_a_freed_slot_is_reused() {
    let backend = MockUpstream::new()
        .send(format!("{GREETING}\r\n").as_bytes())
        .echo()
        .start();
    let dir = support::shared_tempdir();
    let config = TestConfig::new(dir.path())
        .listener(
            "lmtp",
            "protocol = \"lmtp\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"\nmax_connections = 2",
        )
        .passthrough_destination("backend", backend.port(), false)
        .render();
    let proxy = Proxy::start(config, &dir);
    let addr = proxy.addr("lmtp");

    // Two sessions, each proven live by the backend's greeting arriving through postern.
    let mut first = LineClient::connect(addr);
    assert_eq!(first.read_line(), GREETING);
    let mut second = LineClient::connect(addr);
    assert_eq!(second.read_line(), GREETING);

    let mut third = LineClient::connect(addr);
    let busy = third.read_line();
    assert!(
        busy.starts_with("421 4.7.0 "),
        "third connection got {busy:?}, wanted a 421 4.7.0 reply"
    );
    third.expect_closed_silently(WAIT);
    assert_eq!(
        backend.connections(),
        2,
        "the refused client must not reach the backend"
    );

    // The two sessions still relay.
    first.send("NOOP");
    assert_eq!(first.read_line(), "NOOP");
    second.send("NOOP");
    assert_eq!(second.read_line(), "NOOP");

    // Close one; postern notices asynchronously, so retry until a new client is served.
    first.shutdown_write();
    client::read_until_closed(&mut first.stream, WAIT);
    drop(first);
    let mut fourth = support::eventually(WAIT, "a freed slot to serve a new client", || {
        let mut c = LineClient::connect(addr);
        let line = c.read_line();
        if line == GREETING {
            return Some(c);
        }
        assert!(line.starts_with("421 4.7.0 "), "unexpected reply {line:?}");
        None
    });
    fourth.send("NOOP");
    assert_eq!(fourth.read_line(), "NOOP");
    second.send("NOOP");
    assert_eq!(second.read_line(), "NOOP");
}

#[test]
fn implicit_tls_listener_over_the_limit_closes_at_once() {
    let backend = MockUpstream::new()
        .send(b"220 backend.test ESMTP\r\n")
        .echo()
        .start();
    let dir = support::shared_tempdir();
    let ca = Ca::new(dir.path(), "limit");
    let leaf = ca.leaf("mx", &["mx.test"]);
    let config = TestConfig::new(dir.path())
        .raw(&format!(
            "[tls.certificate.mx]\ncert = \"{}\"\nkey = \"{}\"",
            leaf.chain.display(),
            leaf.key.display()
        ))
        .listener(
            "smtps",
            "protocol = \"smtp\"\nbind = [\"127.0.0.1:0\"]\ntls = \"implicit\"\nmax_connections = 1",
        )
        .passthrough_destination("backend", backend.port(), false)
        .render();
    let proxy = Proxy::start(config, &dir);
    let addr = proxy.addr("smtps");

    let mut first = client::tls_connect(addr, "mx.test", &ca.cert_pem).expect("first TLS session");
    let mut line = [0u8; 24];
    std::io::Read::read_exact(&mut first, &mut line).expect("greeting through TLS");
    assert_eq!(&line, b"220 backend.test ESMTP\r\n");

    // Over the limit: no TLS alert, no SMTP reply, just a close.
    let mut raw = client::connect(addr);
    let ending = client::read_until_closed(&mut raw, WAIT);
    assert!(
        ending.bytes().is_empty(),
        "got {:?} before the close",
        ending.bytes()
    );
    assert_eq!(backend.connections(), 1);
}

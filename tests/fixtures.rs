//! Checks of the test fixtures themselves, without postern in the path: a private
//! Dovecot accepts a real LMTP delivery and an IMAP login, the scripted backend records
//! and echoes, and the test PKI serves and verifies per name. When a postern test
//! fails, these tell whether the fixture or postern is at fault.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::certs::Ca;
use support::client::{self, LineClient};
use support::dovecot::{Dovecot, DovecotOpts};
use support::mock_upstream::MockUpstream;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn dovecot_fixture_takes_lmtp_delivery_and_imap_login() {
    let name = "dovecot_fixture_takes_lmtp_delivery_and_imap_login";
    let Some(dovecot) = Dovecot::start(name, DovecotOpts::default().imap().pop3()) else {
        return;
    };
    let scratch = support::shared_tempdir();
    let msg = support::sample_message("fixture-direct");
    client::lmtp_deliver(
        dovecot.lmtp,
        "bob@example.net",
        &["alice@example.org"],
        &msg,
        scratch.path(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dovecot.log()));
    let stored = dovecot.wait_for_messages("alice@example.org", 1, WAIT);
    assert!(
        stored[0].ends_with(&msg),
        "stored message does not end with the sent one:\n{}",
        String::from_utf8_lossy(&stored[0])
    );

    let mut imap = LineClient::connect(dovecot.imap.expect("imap"));
    imap.expect_prefix("* OK");
    imap.send("a LOGIN alice@example.org alice-secret");
    let line = loop {
        let l = imap.read_line();
        if l.starts_with("a ") {
            break l;
        }
    };
    assert!(line.starts_with("a OK"), "{line}");
    imap.send("b LOGOUT");

    let mut pop3 = LineClient::connect(dovecot.pop3.expect("pop3"));
    pop3.expect_prefix("+OK");
}

#[test]
fn dovecot_fixture_accepts_proxy_header_when_asked() {
    let name = "dovecot_fixture_accepts_proxy_header_when_asked";
    let opts = DovecotOpts::default().haproxy("127.0.0.0/8");
    let Some(dovecot) = Dovecot::start(name, opts) else {
        return;
    };
    let mut c = LineClient::connect(dovecot.lmtp);
    c.send_raw(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 24\r\n");
    c.expect_prefix("220 ");
    c.send("LHLO client.test");
    c.expect_reply("250");
    c.send("QUIT");
    c.expect_prefix("221");
}

#[test]
fn mock_upstream_records_echoes_and_half_closes() {
    let backend = MockUpstream::new().send(b"220 mock\r\n").echo().start();
    let mut s = client::connect(backend.addr());
    let mut greeting = [0u8; 10];
    s.read_exact(&mut greeting).expect("greeting");
    assert_eq!(&greeting, b"220 mock\r\n");
    s.write_all(b"ping\r\n").expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let ending = client::read_until_closed(&mut s, WAIT);
    assert_eq!(
        ending,
        client::Ending::Eof {
            bytes: b"ping\r\n".to_vec()
        }
    );
    let rec = backend.wait_finished(0, WAIT);
    assert_eq!(rec.received, b"ping\r\n");
    assert!(rec.saw_eof);
}

#[test]
fn certs_fixture_serves_per_name_and_verifies() {
    if !support::have_program("openssl") {
        support::skip(
            "certs_fixture_serves_per_name_and_verifies",
            "openssl is not installed",
        );
        return;
    }
    let dir = support::shared_tempdir();
    let ca = Ca::new(dir.path(), "fixture");
    let leaf = ca.leaf("a", &["a.test", "www.a.test"]);
    let port = support::free_port();
    // A real TLS server with the leaf: `openssl s_server`, stopped by PID below.
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&leaf.chain)
        .arg("-key")
        .arg(&leaf.key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    support::eventually(WAIT, "s_server to listen", || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .ok()
            .map(drop)
    });
    let probe = client::openssl_probe(addr, "a.test", &ca.cert_pem);
    let tls = client::tls_connect(addr, "www.a.test", &ca.cert_pem);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = server.wait();
    assert!(probe.verified, "{probe:?}");
    assert!(probe.subject.contains("CN = a.test"), "{probe:?}");
    let tls = tls.expect("rustls handshake");
    assert_eq!(
        client::peer_leaf_der(&tls),
        client::first_cert_der(&leaf.chain)
    );
}

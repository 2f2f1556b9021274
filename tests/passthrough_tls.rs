//! An implicit-TLS SMTP pass-through listener (SMTPS-style): postern terminates TLS with
//! the certificate the client's SNI names, then relays the plaintext to the backend.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::certs::Ca;
use support::client;
use support::mock_upstream::MockUpstream;
use support::proxy::{Proxy, TestConfig};

const WAIT: Duration = Duration::from_secs(20);
const GREETING: &[u8] = b"220 backend.test ESMTP\r\n";

#[test]
fn implicit_tls_smtp_selects_the_certificate_by_sni_and_relays() {
    let backend = MockUpstream::new().send(GREETING).echo().start();
    let dir = support::shared_tempdir();
    let ca = Ca::new(dir.path(), "sni");
    let alpha = ca.leaf("alpha", &["alpha.test", "mail.alpha.test"]);
    let beta = ca.leaf("beta", &["beta.test"]);
    let config = TestConfig::new(dir.path())
        .raw(&format!(
            "[tls.certificate.alpha]\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [tls.certificate.beta]\ncert = \"{}\"\nkey = \"{}\"",
            alpha.chain.display(),
            alpha.key.display(),
            beta.chain.display(),
            beta.key.display()
        ))
        .listener(
            "smtps",
            "protocol = \"smtp\"\nbind = [\"127.0.0.1:0\"]\ntls = \"implicit\"",
        )
        .passthrough_destination("backend", backend.port(), false)
        .render();
    let proxy = Proxy::start(config, &dir);
    let addr = proxy.addr("smtps");

    // rustls client: the handshake verifies the chain for the SNI name against our CA,
    // and the leaf must be the one configured for that name.
    let cases = [
        ("alpha.test", &alpha),
        ("mail.alpha.test", &alpha),
        ("beta.test", &beta),
    ];
    for (i, (name, leaf)) in cases.into_iter().enumerate() {
        let mut tls = client::tls_connect(addr, name, &ca.cert_pem)
            .unwrap_or_else(|e| panic!("SNI {name}: {e}\nlog:\n{}", proxy.log()));
        assert_eq!(
            client::peer_leaf_der(&tls),
            client::first_cert_der(&leaf.chain),
            "SNI {name} got the wrong certificate"
        );
        let mut greeting = vec![0u8; GREETING.len()];
        tls.read_exact(&mut greeting).expect("greeting through TLS");
        assert_eq!(greeting, GREETING);
        let line = format!("EHLO client-{i}.test\r\n");
        tls.write_all(line.as_bytes()).expect("write through TLS");
        tls.flush().expect("flush");
        let mut echoed = vec![0u8; line.len()];
        tls.read_exact(&mut echoed).expect("echo through TLS");
        assert_eq!(echoed, line.as_bytes());
        // The backend got the plaintext, exactly (no PROXY header: proxy_protocol off).
        assert_eq!(backend.wait_received(i, line.len(), WAIT), line.as_bytes());
    }

    // A real client, openssl s_client, sees the same choice.
    if support::have_program("openssl") {
        for (name, cn) in [
            ("alpha.test", "CN = alpha.test"),
            ("beta.test", "CN = beta.test"),
        ] {
            let probe = client::openssl_probe(addr, name, &ca.cert_pem);
            assert!(probe.verified, "openssl could not verify {name}: {probe:?}");
            assert!(
                probe.subject.contains(cn),
                "SNI {name}: openssl saw {:?}",
                probe.subject
            );
        }
    } else {
        support::skip(
            "implicit_tls_smtp (openssl s_client part)",
            "openssl is not installed",
        );
    }
}

#[test]
fn a_client_that_never_starts_tls_is_dropped_at_preauth_timeout() {
    let backend = MockUpstream::new().send(GREETING).echo().start();
    let dir = support::shared_tempdir();
    let ca = Ca::new(dir.path(), "slow");
    let leaf = ca.leaf("only", &["only.test"]);
    let config = TestConfig::new(dir.path())
        .raw(&format!(
            "[tls.certificate.only]\ncert = \"{}\"\nkey = \"{}\"",
            leaf.chain.display(),
            leaf.key.display()
        ))
        .listener(
            "smtps",
            "protocol = \"smtp\"\nbind = [\"127.0.0.1:0\"]\ntls = \"implicit\"\npreauth_timeout = \"1s\"",
        )
        .passthrough_destination("backend", backend.port(), false)
        .render();
    let proxy = Proxy::start(config, &dir);
    // Connect and say nothing: no ClientHello ever comes.
    let mut silent = std::net::TcpStream::connect(proxy.addr("smtps")).expect("connect");
    let ending = client::read_until_closed(&mut silent, Duration::from_secs(10));
    assert!(
        ending.bytes().is_empty(),
        "nothing is sent to a client that never handshakes"
    );
    // The slot it held is free again and the backend was never dialed.
    support::eventually(WAIT, "the connection to be released", || {
        (proxy.pool("smtps")["active"] == 0).then_some(())
    });
    assert_eq!(
        backend.connections(),
        0,
        "no backend connection for a failed handshake"
    );
}

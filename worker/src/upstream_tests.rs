//! Tests of `upstream`: PROXY header bytes, loop guard, retries, breaker, source IPs,
//! backend TLS verification. Every backend is a scripted task on 127.0.0.1:0.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use postern_config::material::Material;
use postern_config::model::{Config, Forwarding, Protocol, TlsMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::testutil::{self, cert_material, self_signed, CertPair};

const BOUND: Duration = Duration::from_secs(20);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

#[test]
fn proxy_v2_ipv4_exact_bytes() {
    let h = proxy_header(addr("198.51.100.7:5555"), addr("203.0.113.9:25"));
    let mut expected = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    expected.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    expected.extend_from_slice(&[198, 51, 100, 7, 203, 0, 113, 9]);
    expected.extend_from_slice(&[0x15, 0xb3, 0x00, 0x19]);
    assert_eq!(h, expected);
    // ppp agrees on what it says.
    let parsed = ppp::v2::Header::try_from(h.as_slice()).expect("parses");
    assert_eq!(parsed.command, ppp::v2::Command::Proxy);
    assert_eq!(parsed.tlvs().count(), 0);
}

#[test]
fn proxy_v2_ipv6_exact_bytes() {
    let h = proxy_header(addr("[2001:db8::1]:1234"), addr("[2001:db8::2]:465"));
    let mut expected = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    expected.extend_from_slice(&[0x21, 0x21, 0x00, 0x24]);
    expected.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    expected.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    expected.extend_from_slice(&[0x04, 0xd2, 0x01, 0xd1]);
    assert_eq!(h, expected);
    assert_eq!(h.len(), 16 + 36);
}

#[test]
fn proxy_header_mapped_and_mixed_families() {
    // IPv4-mapped IPv6 becomes IPv4.
    let mapped = proxy_header(addr("[::ffff:198.51.100.7]:5555"), addr("203.0.113.9:25"));
    assert_eq!(
        mapped,
        proxy_header(addr("198.51.100.7:5555"), addr("203.0.113.9:25"))
    );
    // Different families: the v1 UNKNOWN line.
    assert_eq!(
        proxy_header(addr("198.51.100.7:5555"), addr("[2001:db8::2]:25")),
        b"PROXY UNKNOWN\r\n"
    );
    assert_eq!(
        proxy_header(addr("[2001:db8::1]:5555"), addr("203.0.113.9:25")),
        b"PROXY UNKNOWN\r\n"
    );
}

fn one_dest_config(host: &str, port: u16, tls: TlsMode, forwarding: Forwarding) -> Config {
    let dest = testutil::destination("b", host, &[(Protocol::Smtp, port, tls, forwarding)]);
    let listener = testutil::listener("smtp", Protocol::Smtp, TlsMode::Plain);
    let mut c = testutil::config(vec![listener], vec![dest]);
    c.server.backend_timeout = Duration::from_secs(2);
    c
}

fn upstreams(config: &Config, material: &Material, own: &[SocketAddr]) -> Upstreams {
    Upstreams::new(config, material, Protocol::Smtp, &BTreeMap::new(), own).expect("upstreams")
}

const CLIENT: &str = "198.51.100.7:5555";
const LOCAL: &str = "203.0.113.9:25";

/// A dial with no establishment step, as the pass-through does.
async fn dial(u: &Upstreams) -> Result<Connected, DialError> {
    tokio::time::timeout(
        BOUND,
        u.dial_with("b", Protocol::Smtp, addr(CLIENT), addr(LOCAL), |c| async {
            Ok(c)
        }),
    )
    .await
    .expect("dial bounded")
}

/// A port with nothing listening on it.
async fn refused_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn loop_guard_refuses_own_addresses() {
    let c = one_dest_config("127.0.0.1", 2525, TlsMode::Plain, Forwarding::Proxy);
    let m = Material::default();
    let u = upstreams(&c, &m, &[addr("127.0.0.1:2525")]);
    assert!(matches!(dial(&u).await, Err(DialError::Loop { .. })));
    let u = upstreams(&c, &m, &[addr("0.0.0.0:2525")]);
    assert!(matches!(dial(&u).await, Err(DialError::Loop { .. })));
    let u = upstreams(&c, &m, &[addr("[::]:2525")]);
    let e = dial(&u).await.err().expect("refused");
    assert!(matches!(e, DialError::Loop { .. }));
    assert_eq!(e.side(), Side::Local);

    // Another port or another address is not a loop (it just fails to connect here).
    let port = refused_port().await;
    let c = one_dest_config("127.0.0.1", port, TlsMode::Plain, Forwarding::Proxy);
    let u = upstreams(
        &c,
        &m,
        &[
            addr("127.0.0.1:2525"),
            SocketAddr::new("127.0.0.2".parse().expect("ip"), port),
        ],
    );
    assert!(matches!(dial(&u).await, Err(DialError::Connect { .. })));
}

#[test]
fn ip_literal_hosts() {
    assert_eq!(host_ip("127.0.0.1"), Some(IpAddr::from([127, 0, 0, 1])));
    assert_eq!(host_ip("[::1]"), Some("::1".parse().expect("ip")));
    assert_eq!(host_ip("::1"), Some("::1".parse().expect("ip")));
    assert_eq!(host_ip("mail.example.com"), None);
}

#[tokio::test]
async fn xclient_ttl_guard() {
    let mut c = one_dest_config("127.0.0.1", 1, TlsMode::Plain, Forwarding::Xclient);
    c.server.proxy_ttl = 1;
    let u = upstreams(&c, &Material::default(), &[]);
    assert!(matches!(
        dial(&u).await,
        Err(DialError::TtlExhausted { ttl: 1, .. })
    ));
}

#[tokio::test]
async fn hostname_uses_resolved_addresses_and_missing_ones_fail() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let c = one_dest_config("backend.test", port, TlsMode::Plain, Forwarding::None);
    let u = upstreams(&c, &Material::default(), &[]);
    assert!(matches!(dial(&u).await, Err(DialError::NoAddress { .. })));
    let mut resolved = BTreeMap::new();
    resolved.insert(
        "b".to_string(),
        vec!["127.0.0.1".parse::<IpAddr>().expect("ip")],
    );
    let u = Upstreams::new(&c, &Material::default(), Protocol::Smtp, &resolved, &[]).expect("u");
    let (d, accepted) = tokio::join!(dial(&u), l.accept());
    let d = d.expect("dialed");
    assert_eq!(d.addr.port(), port);
    assert!(!d.stream.is_tls());
    accepted.expect("accepted");
}

#[tokio::test]
async fn proxy_header_is_sent_first_and_only_with_proxy_forwarding() {
    for (forwarding, expect_header) in [(Forwarding::Proxy, true), (Forwarding::None, false)] {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let c = one_dest_config("127.0.0.1", port, TlsMode::Plain, forwarding);
        let u = upstreams(&c, &Material::default(), &[]);
        let backend = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.expect("read");
            got
        });
        let mut d = dial(&u).await.expect("dialed");
        d.stream.write_all(b"DATA").await.expect("write");
        d.stream.shutdown().await.expect("shutdown");
        let got = tokio::time::timeout(BOUND, backend)
            .await
            .expect("bounded")
            .expect("join");
        let mut expected = if expect_header {
            proxy_header(addr(CLIENT), addr(LOCAL))
        } else {
            Vec::new()
        };
        expected.extend_from_slice(b"DATA");
        assert_eq!(got, expected);
    }
}

#[tokio::test]
async fn connect_failures_are_retried_then_counted_by_the_breaker() {
    let port = refused_port().await;
    let mut c = one_dest_config("127.0.0.1", port, TlsMode::Plain, Forwarding::None);
    c.server.backend_connect_retries = 2;
    c.server.host_down_threshold = 2;
    c.server.host_down_cooldown = Duration::from_secs(600);
    let u = upstreams(&c, &Material::default(), &[]);
    let start = tokio::time::Instant::now();
    let e = dial(&u).await.err().expect("fails");
    assert!(matches!(e, DialError::Connect { .. }), "{e}");
    assert_eq!(e.side(), Side::Upstream);
    // Three attempts, two pauses of 200 ms between them.
    assert!(start.elapsed() >= 2 * RETRY_DELAY, "{:?}", start.elapsed());
    assert!(!u.health().is_down("b"), "one dial is one failure");
    assert!(dial(&u).await.is_err());
    assert!(u.health().is_down("b"));
    let start = tokio::time::Instant::now();
    assert!(matches!(dial(&u).await, Err(DialError::Down { .. })));
    assert!(start.elapsed() < RETRY_DELAY, "down: fails fast");
}

#[tokio::test]
async fn breaker_probe_after_cooldown_closes_it() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    let mut c = one_dest_config("127.0.0.1", port, TlsMode::Plain, Forwarding::None);
    c.server.backend_connect_retries = 0;
    c.server.host_down_threshold = 1;
    c.server.host_down_cooldown = Duration::from_millis(300);
    let u = upstreams(&c, &Material::default(), &[]);
    assert!(matches!(dial(&u).await, Err(DialError::Connect { .. })));
    assert!(matches!(dial(&u).await, Err(DialError::Down { .. })));
    // The backend comes back; after the cooldown the probe gets through.
    let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("rebind");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (d, _) = tokio::join!(dial(&u), l.accept());
    d.expect("probe succeeds");
    assert!(!u.health().is_down("b"));
}

/// Reference §4.6: what the establishment step returns decides retries and the breaker.
/// An unusable answer (`Refused`) is one attempt and one breaker failure; a backend that
/// fails mid-establishment (`Establish`) is retried; a local cause is neither.
#[tokio::test]
async fn establishment_outcomes_drive_retries_and_breaker() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let backend = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let mut c = one_dest_config("127.0.0.1", port, TlsMode::Plain, Forwarding::None);
    c.server.backend_connect_retries = 2;
    c.server.host_down_threshold = 2;
    c.server.host_down_cooldown = Duration::from_secs(600);
    let u = upstreams(&c, &Material::default(), &[]);
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    let establish = |make: fn(SocketAddr) -> DialError| {
        attempts.store(0, Ordering::Relaxed);
        let attempts = &attempts;
        let u = &u;
        async move {
            let dialed = u
                .dial_with("b", Protocol::Smtp, addr(CLIENT), addr(LOCAL), |c| {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    async move { Err::<(), _>(make(c.addr)) }
                })
                .await;
            (dialed.expect_err("fails"), attempts.load(Ordering::Relaxed))
        }
    };

    let (e, n) = establish(|_| DialError::NoTlsConfig {
        destination: "b".into(),
    })
    .await;
    assert!(matches!(e, DialError::NoTlsConfig { .. }), "{e}");
    assert_eq!(n, 1, "a local cause is not retried");
    let (e, _) = establish(|_| DialError::NoTlsConfig {
        destination: "b".into(),
    })
    .await;
    assert_eq!(e.side(), Side::Local);
    assert!(
        !u.health().is_down("b"),
        "a local cause is no breaker failure"
    );

    let (e, n) = establish(|addr| DialError::refused(addr, "greeting", b"* BYE go away\r\n")).await;
    assert!(
        matches!(&e, DialError::Refused { reply, .. } if reply == "* BYE go away"),
        "{e}"
    );
    assert_eq!(n, 1, "an unusable answer is not retried");
    assert!(!u.health().is_down("b"), "one failure so far");

    let (e, n) = establish(|addr| DialError::Establish {
        addr,
        stage: "greeting",
        source: io::ErrorKind::UnexpectedEof.into(),
    })
    .await;
    assert!(matches!(e, DialError::Establish { .. }), "{e}");
    assert_eq!(n, 3, "a failed establishment is retried");
    assert!(
        u.health().is_down("b"),
        "refused + failed: threshold reached"
    );
    backend.abort();
}

/// A TLS backend: closes the first `fail_first` connections at once (a failed
/// handshake), then completes handshakes and echoes one line.
async fn tls_backend(pair: &CertPair, fail_first: usize) -> (u16, tokio::task::JoinHandle<usize>) {
    let certs = vec![cert_material("backend", pair, &["localhost"], false)];
    let protocols = testutil::config(Vec::new(), Vec::new()).tls.protocols;
    let server = crate::tls::server_config(&protocols, &certs).expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let mut accepted = 0;
        loop {
            let Ok((s, _)) = l.accept().await else {
                return accepted;
            };
            accepted += 1;
            if accepted <= fail_first {
                drop(s);
                continue;
            }
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let _ = tls.write_all(b"220 tls ok\r\n").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (port, task)
}

async fn read_greeting(d: &mut Connected) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(BOUND, d.stream.read_to_end(&mut got))
        .await
        .expect("bounded");
    got
}

#[tokio::test]
async fn tls_handshake_failure_is_retried() {
    let pair = self_signed(&["localhost"]);
    let (port, _task) = tls_backend(&pair, 1).await;
    let mut c = one_dest_config("127.0.0.1", port, TlsMode::Implicit, Forwarding::None);
    c.destinations
        .get_mut("b")
        .expect("b")
        .tls_allow_invalid_certs = true;
    c.server.backend_connect_retries = 1;
    let u = upstreams(&c, &Material::default(), &[]);
    let mut d = dial(&u).await.expect("second attempt succeeds");
    assert!(d.stream.is_tls());
    assert_eq!(read_greeting(&mut d).await, b"220 tls ok\r\n");

    let (port, _task) = tls_backend(&pair, 1).await;
    let mut c = one_dest_config("127.0.0.1", port, TlsMode::Implicit, Forwarding::None);
    c.destinations
        .get_mut("b")
        .expect("b")
        .tls_allow_invalid_certs = true;
    c.server.backend_connect_retries = 0;
    let u = upstreams(&c, &Material::default(), &[]);
    assert!(matches!(dial(&u).await, Err(DialError::Tls { .. })));
}

#[tokio::test]
async fn pinned_backend_right_pin_connects_wrong_pin_fails() {
    let pair = self_signed(&["localhost"]);
    let (port, _task) = tls_backend(&pair, 0).await;
    let mut c = one_dest_config("127.0.0.1", port, TlsMode::Implicit, Forwarding::None);
    c.server.backend_connect_retries = 0;
    c.destinations
        .get_mut("b")
        .expect("b")
        .tls_pinned_cert_sha256 = Some(crate::tls::cert_sha256(&pair.cert_der));
    let u = upstreams(&c, &Material::default(), &[]);
    let mut d = dial(&u).await.expect("pin matches");
    assert_eq!(read_greeting(&mut d).await, b"220 tls ok\r\n");

    let mut wrong = crate::tls::cert_sha256(&pair.cert_der);
    wrong[31] ^= 0xff;
    c.destinations
        .get_mut("b")
        .expect("b")
        .tls_pinned_cert_sha256 = Some(wrong);
    let u = upstreams(&c, &Material::default(), &[]);
    assert!(matches!(dial(&u).await, Err(DialError::Tls { .. })));
}

#[tokio::test]
async fn default_verification_rejects_an_untrusted_certificate() {
    let pair = self_signed(&["localhost"]);
    let other = self_signed(&["other.test"]);
    let (port, _task) = tls_backend(&pair, 0).await;
    let mut c = one_dest_config("127.0.0.1", port, TlsMode::Implicit, Forwarding::None);
    c.server.backend_connect_retries = 0;
    c.destinations.get_mut("b").expect("b").tls_server_name = Some("localhost".into());
    let m = Material {
        backend_roots: vec![other.cert_der.clone()],
        ..Material::default()
    };
    let u = upstreams(&c, &m, &[]);
    assert!(matches!(dial(&u).await, Err(DialError::Tls { .. })));
    // No roots at all is a setup error, not a runtime one.
    assert!(Upstreams::new(
        &c,
        &Material::default(),
        Protocol::Smtp,
        &BTreeMap::new(),
        &[]
    )
    .is_err());
}

#[tokio::test]
async fn starttls_leg_is_dialed_plain() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let mut c = one_dest_config("127.0.0.1", port, TlsMode::Starttls, Forwarding::None);
    c.destinations
        .get_mut("b")
        .expect("b")
        .tls_allow_invalid_certs = true;
    let u = upstreams(&c, &Material::default(), &[]);
    let (d, _) = tokio::join!(dial(&u), l.accept());
    assert!(!d.expect("dialed").stream.is_tls());
}

#[tokio::test]
async fn source_ips_round_robin_and_family_filter() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let mut c = one_dest_config("127.0.0.1", port, TlsMode::Plain, Forwarding::None);
    c.destinations.get_mut("b").expect("b").source_ips = vec![
        "127.0.0.2".parse().expect("ip"),
        "::1".parse().expect("ip"),
        "127.0.0.3".parse().expect("ip"),
    ];
    let u = upstreams(&c, &Material::default(), &[]);
    let mut sources = Vec::new();
    for _ in 0..3 {
        let (d, accepted) = tokio::join!(dial(&u), l.accept());
        d.expect("dialed");
        sources.push(accepted.expect("accepted").1.ip().to_string());
    }
    assert_eq!(sources, ["127.0.0.2", "127.0.0.3", "127.0.0.2"]);

    // Only an IPv6 source for an IPv4 target: the target is skipped.
    c.destinations.get_mut("b").expect("b").source_ips = vec!["::1".parse().expect("ip")];
    let u = upstreams(&c, &Material::default(), &[]);
    let e = dial(&u).await.err().expect("no source");
    assert!(matches!(e, DialError::NoSourceIp { .. }));
    assert_eq!(e.side(), Side::Local);
}

#[tokio::test]
async fn attempt_timeout_is_retryable_and_bounded() {
    // Accepts TCP but never answers the TLS handshake.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let mut c = one_dest_config("127.0.0.1", port, TlsMode::Implicit, Forwarding::None);
    c.destinations
        .get_mut("b")
        .expect("b")
        .tls_allow_invalid_certs = true;
    c.server.backend_timeout = Duration::from_millis(200);
    c.server.backend_connect_retries = 1;
    let u = upstreams(&c, &Material::default(), &[]);
    let start = tokio::time::Instant::now();
    let e = dial(&u).await.err().expect("times out");
    assert!(matches!(e, DialError::Timeout { .. }), "{e}");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    hold.abort();
}

//! PROXY protocol through the real binary, both ways.
//!
//! Outbound: a destination with `proxy_protocol = true` gets a v2 header (command
//! PROXY, TCP, no TLVs) before any client byte; a scripted backend records it and the
//! test compares every byte. Inbound: listeners with `proxy_protocol = "required"` or
//! `"optional"` and a `proxy_trusted` list; what postern believed about the client is
//! read back from the header it sends on to the backend.

mod support;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::client::{self, LineClient};
use support::mock_upstream::MockUpstream;
use support::proxy::{Proxy, TestConfig};

const WAIT: Duration = Duration::from_secs(20);
/// The first thing the clients send; longer than any PROXY signature, so postern can
/// tell at once that it is not a header.
const LHLO: &[u8] = b"LHLO client.example.org\r\n";

/// A recording backend, and postern in front of it with one LMTP listener `lmtp`
/// configured by `listener_extra` and a destination that wants a PROXY header.
fn setup(bind: &str, listener_extra: &str) -> (tempfile::TempDir, MockUpstream, Proxy) {
    let backend = MockUpstream::new().read_to_eof().start();
    let dir = support::shared_tempdir();
    let listener =
        format!("protocol = \"lmtp\"\nbind = [\"{bind}\"]\ntls = \"plain\"\n{listener_extra}");
    let config = TestConfig::new(dir.path())
        .listener("lmtp", &listener)
        .passthrough_destination("backend", backend.port(), true)
        .render();
    let proxy = Proxy::start(config, &dir);
    // Callers bind these in this order, so they drop proxy first and the directory last.
    (dir, backend, proxy)
}

/// Asserts backend connection `i` received exactly `header` then `LHLO`.
fn assert_relayed(backend: &MockUpstream, i: usize, header: &[u8]) {
    let want = [header, LHLO].concat();
    let got = backend.wait_received(i, want.len(), WAIT);
    assert_eq!(got, want, "backend got {:02x?}\nwanted {:02x?}", got, want);
}

/// Sends `preamble` then `LHLO` and asserts postern closes without a byte in reply and
/// without dialing the backend.
fn assert_rejected(proxy: &Proxy, backend: &MockUpstream, preamble: &[u8]) {
    let mut c = LineClient::connect(proxy.addr("lmtp"));
    c.send_raw(&[preamble, LHLO].concat());
    c.expect_closed_silently(WAIT);
    assert_eq!(
        backend.connections(),
        0,
        "postern dialed the backend for a rejected client"
    );
}

fn v1_line(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let fam = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {fam} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

#[test]
fn outbound_v2_header_for_an_ipv4_client_is_exact() {
    let (_dir, backend, proxy) = setup("127.0.0.1:0", "");
    let listen = proxy.addr("lmtp");
    let mut c = LineClient::connect(listen);
    let me = c.stream.local_addr().expect("local addr");
    c.send_raw(LHLO);
    let header = support::proxy_v2_header(me, listen);
    assert_eq!(&header[12..14], &[0x21, 0x11]);
    assert_eq!(&header[14..16], &[0, 12]);
    assert_relayed(&backend, 0, &header);
}

#[test]
fn outbound_v2_header_for_an_ipv6_client_is_exact() {
    if !support::ipv6_loopback_available() {
        support::skip_for_host(
            "outbound_v2_header_for_an_ipv6_client_is_exact",
            "[::1] is not available",
        );
        return;
    }
    let (_dir, backend, proxy) = setup("[::1]:0", "");
    let listen = proxy.addr("lmtp");
    assert!(listen.is_ipv6(), "listener bound {listen}");
    let mut c = LineClient::connect(listen);
    let me = c.stream.local_addr().expect("local addr");
    c.send_raw(LHLO);
    let header = support::proxy_v2_header(me, listen);
    assert_eq!(&header[12..14], &[0x21, 0x21]);
    assert_eq!(&header[14..16], &[0, 36]);
    assert_relayed(&backend, 0, &header);
}

#[test]
fn required_trusted_v2_header_is_carried_to_the_backend() {
    let (_dir, backend, proxy) = setup(
        "127.0.0.1:0",
        "proxy_protocol = \"required\"\nproxy_trusted = [\"127.0.0.0/8\"]",
    );
    let (src, dst) = (sa("192.0.2.10:40000"), sa("198.51.100.5:25"));
    let mut c = LineClient::connect(proxy.addr("lmtp"));
    c.send_raw(&[support::proxy_v2_header(src, dst).as_slice(), LHLO].concat());
    assert_relayed(&backend, 0, &support::proxy_v2_header(src, dst));
}

#[test]
fn required_trusted_v1_header_is_carried_to_the_backend_as_v2() {
    let (_dir, backend, proxy) = setup(
        "127.0.0.1:0",
        "proxy_protocol = \"required\"\nproxy_trusted = [\"127.0.0.1\"]",
    );
    let cases = [
        (sa("192.0.2.11:40001"), sa("198.51.100.6:587")),
        (sa("[2001:db8::1]:40002"), sa("[2001:db8::2]:24")),
    ];
    for (i, (src, dst)) in cases.into_iter().enumerate() {
        let mut c = LineClient::connect(proxy.addr("lmtp"));
        c.send_raw(&[v1_line(src, dst).as_slice(), LHLO].concat());
        assert_relayed(&backend, i, &support::proxy_v2_header(src, dst));
    }
}

#[test]
fn required_without_header_is_closed_without_reply() {
    let (_dir, backend, proxy) = setup(
        "127.0.0.1:0",
        "proxy_protocol = \"required\"\nproxy_trusted = [\"127.0.0.0/8\"]",
    );
    assert_rejected(&proxy, &backend, b"");
}

#[test]
fn required_from_an_untrusted_peer_is_closed_without_reply() {
    let (_dir, backend, proxy) = setup(
        "127.0.0.1:0",
        "proxy_protocol = \"required\"\nproxy_trusted = [\"10.0.0.0/8\"]",
    );
    // Even a well-formed header does not help a peer outside proxy_trusted.
    let header = support::proxy_v2_header(sa("192.0.2.12:40003"), sa("198.51.100.7:24"));
    assert_rejected(&proxy, &backend, &header);
    assert_rejected(&proxy, &backend, b"");
}

#[test]
fn optional_without_header_is_served_with_the_socket_address() {
    let (_dir, backend, proxy) = setup(
        "127.0.0.1:0",
        "proxy_protocol = \"optional\"\nproxy_trusted = [\"127.0.0.0/8\"]",
    );
    let listen = proxy.addr("lmtp");
    let mut c = LineClient::connect(listen);
    let me = c.stream.local_addr().expect("local addr");
    c.send_raw(LHLO);
    assert_relayed(&backend, 0, &support::proxy_v2_header(me, listen));
}

#[test]
fn optional_from_an_untrusted_peer_is_served_with_the_socket_address() {
    let (_dir, backend, proxy) = setup(
        "127.0.0.1:0",
        "proxy_protocol = \"optional\"\nproxy_trusted = [\"10.0.0.0/8\"]",
    );
    let listen = proxy.addr("lmtp");
    let mut c = LineClient::connect(listen);
    let me = c.stream.local_addr().expect("local addr");
    c.send_raw(LHLO);
    assert_relayed(&backend, 0, &support::proxy_v2_header(me, listen));

    // A spoofed header from an untrusted peer must never be believed: if postern serves
    // the connection at all, the backend hears the real socket address.
    let spoofed = support::proxy_v2_header(sa("192.0.2.66:4444"), sa("198.51.100.66:24"));
    let mut s = client::connect(listen);
    let me = s.local_addr().expect("local addr");
    std::io::Write::write_all(&mut s, &[spoofed.as_slice(), LHLO].concat()).expect("write");
    let real = support::proxy_v2_header(me, listen);
    let outcome = support::eventually(WAIT, "the spoofing client to be served or closed", || {
        if backend.received(1).len() >= real.len() {
            return Some("served");
        }
        closed_now(&mut s).then_some("closed")
    });
    if outcome == "served" {
        let got = backend.received(1);
        assert_eq!(
            &got[..real.len()],
            real.as_slice(),
            "backend was told a spoofed address"
        );
    }
}

/// True when the peer has closed `s` (EOF or reset); never blocks for long.
fn closed_now(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let mut buf = [0u8; 256];
    let end = Instant::now() + Duration::from_millis(100);
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

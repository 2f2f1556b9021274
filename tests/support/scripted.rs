//! Setup shared by the tests that put postern in front of scripted backends
//! (`tests/*_scripted.rs`): postern started with trace logging, plain destination legs,
//! one-reply backend scripts, and the checks every such test makes: the exact bytes a
//! backend received, the XCLIENT line, and no credential in postern's log.

use std::time::Duration;

use super::client;
use super::mock_upstream::{MockBuilder, MockUpstream};
use super::proxy::{Proxy, TestConfig, READY_DEADLINE};

/// How long a scripted test waits for what postern sends or logs.
pub const WAIT: Duration = Duration::from_secs(20);

/// Standard, padded base64 (what postern sends to backends).
pub fn b64(bytes: &[u8]) -> String {
    client::base64(bytes)
}

/// A SASL PLAIN message without authzid.
pub fn plain(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

/// `[destination.<name>]` at `host`:`port` with one plain `protocol` leg, no PROXY
/// header, cleartext replay allowed; `extra` goes in the destination table, `leg_extra`
/// in the leg's.
pub fn destination(
    name: &str,
    protocol: &str,
    host: &str,
    port: u16,
    extra: &str,
    leg_extra: &str,
) -> String {
    format!(
        "[destination.{name}]\nhost = \"{host}\"\nproxy_protocol = false\n\
         allow_plaintext_auth = true\n{extra}\n\
         [destination.{name}.protocol.{protocol}]\nport = {port}\ntls = \"plain\"\n{leg_extra}\n"
    )
}

/// Starts postern on `config` with `POSTERN_LOG=trace` and waits until every pool runs.
pub fn start_traced(config: &TestConfig, dir: &tempfile::TempDir) -> Proxy {
    let proxy = Proxy::spawn_env(config.render(), dir.path(), &[("POSTERN_LOG", "trace")]);
    proxy.wait_running(READY_DEADLINE);
    proxy
}

/// Greeting, one command line, `reply`, then record everything until postern closes.
pub fn one_reply(greeting: &[u8], reply: &[u8]) -> MockBuilder {
    MockUpstream::new()
        .send(greeting)
        .read_line()
        .send(reply)
        .read_to_eof()
}

/// Asserts backend connection `i` received exactly `want` (waiting for that much).
pub fn assert_received(backend: &MockUpstream, i: usize, want: &[u8]) {
    let got = backend.wait_received(i, want.len(), WAIT);
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(want),
        "bytes received by backend connection {i}"
    );
}

/// Waits until backend connection `i` has received bytes ending in `last`; returns
/// what came before it.
pub fn received_before(backend: &MockUpstream, i: usize, last: &str) -> String {
    let got = super::eventually(WAIT, &format!("{last:?} at the backend"), || {
        let got = String::from_utf8_lossy(&backend.received(i)).into_owned();
        got.ends_with(last).then_some(got)
    });
    got[..got.len() - last.len()].to_owned()
}

/// Asserts postern's log holds none of `secrets`.
pub fn assert_log_clean(proxy: &Proxy, secrets: &[&str]) {
    let log = proxy.log();
    for s in secrets {
        assert!(!s.is_empty());
        assert!(
            !log.contains(s),
            "postern's log contains the credential text {s:?}"
        );
    }
}

/// Checks `line` is `XCLIENT ADDR=<addr> PORT=<port> DESTADDR=<destaddr>
/// DESTPORT=<destport> SESSION=P<hex> TTL=6 CLIENT-TRANSPORT=insecure` (the POP3 and
/// ManageSieve form, every attribute Dovecot offers).
pub fn assert_xclient(line: &str, addr: &str, port: u16, destaddr: &str, destport: u16) {
    let head = format!(
        "XCLIENT ADDR={addr} PORT={port} DESTADDR={destaddr} DESTPORT={destport} SESSION=P"
    );
    let tail = " TTL=6 CLIENT-TRANSPORT=insecure\r\n";
    let session = line
        .strip_prefix(&head)
        .and_then(|rest| rest.strip_suffix(tail))
        .unwrap_or_else(|| panic!("XCLIENT line {line:?}\nwanted {head}<hex>{tail}"));
    assert!(
        !session.is_empty()
            && session
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "SESSION=P{session:?} is not P<lowercase hex>"
    );
}

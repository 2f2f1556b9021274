//! ManageSieve through the real binary against scripted backends (issue 4, "Against
//! scripted backends"): what a real Dovecot cannot show on demand.
//!
//! Each test starts `postern run` with a plain ManageSieve listener (cleartext logins
//! allowed, SASL LOGIN listed) in front of a [`MockUpstream`] that speaks a scripted
//! ManageSieve dialogue, and asserts the exact bytes the backend received: the replay of
//! every mechanism as `AUTHENTICATE "<MECH>" "<base64>"` (SASL LOGIN rebuilt as PLAIN),
//! the XCLIENT line for an IPv4 and an IPv6 client (addresses set by an inbound PROXY
//! header), commands pipelined behind the login, the `"AQ=="` answer to a challenge
//! after the response; and the refusals: CR/LF/NUL inside decoded credentials never
//! reach a backend, `hide_auth_errors`, an unreachable backend. postern runs with
//! `POSTERN_LOG=trace` and every test checks that no password or token reached its log.
//!
//! postern drops privileges to the test account, so the tests need root; without it
//! they print `skipped:` and pass.

mod support;

use std::net::SocketAddr;

use support::client::LineClient;
use support::mock_upstream::MockUpstream;
use support::proxy::{Proxy, TestConfig};
use support::scripted::{
    assert_log_clean, assert_received, assert_xclient, b64, one_reply, plain, received_before,
    start_traced, WAIT,
};

const IMPLEMENTATION: &str = "postern sieve scripted";
const UNAVAILABLE: &str = "NO \"backend unavailable\"";
const MALFORMED: &str = "NO \"Malformed credentials.\"";
/// Dovecot's capability response, without XCLIENT.
const CAPABILITIES: &[u8] = b"\"IMPLEMENTATION\" \"mock\"\r\n\"SIEVE\" \"fileinto\"\r\n\
\"SASL\" \"PLAIN OAUTHBEARER XOAUTH2\"\r\n\"VERSION\" \"1.0\"\r\nOK \"mock ready.\"\r\n";
/// The same, offering XCLIENT the way Dovecot does to trusted networks.
const XCLIENT_CAPABILITIES: &[u8] = b"\"IMPLEMENTATION\" \"mock\"\r\n\"SIEVE\" \"fileinto\"\r\n\
\"SASL\" \"PLAIN\"\r\n\"XCLIENT\"\r\n\"VERSION\" \"1.0\"\r\nOK \"mock ready.\"\r\n";
const LOGGED_IN: &[u8] = b"OK \"Logged in.\"\r\n";

/// `[destination.backend]` at 127.0.0.1:`port`, a plain ManageSieve leg, no PROXY
/// header, cleartext replay allowed; `extra` goes in the destination table, `leg_extra`
/// in the leg's.
fn destination(port: u16, extra: &str, leg_extra: &str) -> String {
    support::scripted::destination(
        "backend",
        "managesieve",
        "127.0.0.1",
        port,
        extra,
        leg_extra,
    )
}

/// Starts postern (trace logging) with a plain ManageSieve listener `sieve`
/// (`listener_extra` keys added, `max_auth_attempts = 10`) allowing cleartext logins,
/// in front of `tables`.
fn start_proxy(dir: &tempfile::TempDir, listener_extra: &str, tables: &str) -> Proxy {
    let config = TestConfig::new(dir.path())
        .listener(
            "sieve",
            &format!(
                "protocol = \"managesieve\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"\n\
                 max_auth_attempts = 10\n{listener_extra}"
            ),
        )
        .raw(&format!(
            "[capabilities.managesieve]\nallow_plain_auth_without_tls = true\n\
             sasl = [\"PLAIN\", \"LOGIN\", \"OAUTHBEARER\", \"XOAUTH2\"]\n\
             implementation = \"{IMPLEMENTATION}\""
        ))
        .raw(tables)
        .default_destination("backend");
    start_traced(&config, dir)
}

/// A client connected to the `sieve` listener, past postern's capability response.
fn connect(proxy: &Proxy) -> LineClient {
    greeted(LineClient::connect(proxy.addr("sieve")))
}

/// Reads postern's capability response, checking it is postern's.
fn greeted(mut c: LineClient) -> LineClient {
    assert_eq!(
        c.read_line(),
        format!("\"IMPLEMENTATION\" \"{IMPLEMENTATION}\""),
        "postern's capability response"
    );
    loop {
        let line = c.read_line();
        if line.starts_with("OK") {
            assert_eq!(line, format!("OK \"{IMPLEMENTATION} ready.\""));
            return c;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Replay of every way to log in.

/// One login: the client's lines, the lines postern answers each but the last with (a
/// challenge: an empty literal `{0}` and its line end, or a quoted string), and the
/// AUTHENTICATE line the backend must receive.
struct ReplayCase {
    what: &'static str,
    client: Vec<String>,
    challenges: Vec<&'static [&'static str]>,
    replay: String,
    secrets: Vec<String>,
}

fn replay_cases() -> Vec<ReplayCase> {
    let alice = plain("alice@example.org", "Plain-S3cret");
    let bearer = "n,a=carol@example.org,\x01auth=Bearer ya29.Bearer-T0ken\x01\x01";
    let xoauth2 = "user=dave@example.org\x01auth=Bearer ya29.Xoauth2-T0ken\x01\x01";
    let replay =
        |mech: &str, payload: &[u8]| format!("AUTHENTICATE \"{mech}\" \"{}\"\r\n", b64(payload));
    vec![
        ReplayCase {
            what: "PLAIN, initial response as a quoted string",
            client: vec![format!("AUTHENTICATE \"PLAIN\" \"{}\"", b64(&alice))],
            challenges: vec![],
            replay: replay("PLAIN", &alice),
            secrets: vec!["Plain-S3cret".into(), b64(&alice)],
        },
        ReplayCase {
            what: "PLAIN, initial response as a literal (sieve-connect)",
            client: vec![format!(
                "AUTHENTICATE \"PLAIN\" {{{}+}}\r\n{}",
                b64(&alice).len(),
                b64(&alice)
            )],
            challenges: vec![],
            replay: replay("PLAIN", &alice),
            secrets: vec!["Plain-S3cret".into()],
        },
        ReplayCase {
            what: "PLAIN after an empty challenge",
            client: vec![
                "AUTHENTICATE \"PLAIN\"".into(),
                format!("\"{}\"", b64(&alice)),
            ],
            challenges: vec![&["{0}", ""]],
            replay: replay("PLAIN", &alice),
            secrets: vec!["Plain-S3cret".into()],
        },
        ReplayCase {
            what: "SASL LOGIN, rebuilt as PLAIN",
            client: vec![
                "AUTHENTICATE \"LOGIN\"".into(),
                format!("\"{}\"", b64(b"erin@example.org")),
                format!("\"{}\"", b64(b"Login-S3cret")),
            ],
            challenges: vec![&["\"VXNlcm5hbWU6\""], &["\"UGFzc3dvcmQ6\""]],
            replay: replay("PLAIN", &plain("erin@example.org", "Login-S3cret")),
            secrets: vec!["Login-S3cret".into()],
        },
        ReplayCase {
            what: "OAUTHBEARER, unchanged",
            client: vec![format!(
                "AUTHENTICATE \"OAUTHBEARER\" \"{}\"",
                b64(bearer.as_bytes())
            )],
            challenges: vec![],
            replay: replay("OAUTHBEARER", bearer.as_bytes()),
            secrets: vec!["ya29.Bearer-T0ken".into(), b64(bearer.as_bytes())],
        },
        ReplayCase {
            what: "XOAUTH2, unchanged",
            client: vec![
                "AUTHENTICATE \"XOAUTH2\"".into(),
                format!(
                    "{{{}+}}\r\n{}",
                    b64(xoauth2.as_bytes()).len(),
                    b64(xoauth2.as_bytes())
                ),
            ],
            challenges: vec![&["{0}", ""]],
            replay: replay("XOAUTH2", xoauth2.as_bytes()),
            secrets: vec!["ya29.Xoauth2-T0ken".into(), b64(xoauth2.as_bytes())],
        },
    ]
}

#[test]
fn every_mechanism_is_replayed_exactly_and_the_reply_relayed_verbatim() {
    let name = "every_mechanism_is_replayed_exactly_and_the_reply_relayed_verbatim";
    if !support::skip_unless_root(name) {
        return;
    }
    // Every connection runs the same script.
    let backend = MockUpstream::new()
        .send(CAPABILITIES)
        .read_line()
        .send(b"OK (SASL \"c2VydmVyIGZpbmFs\") \"Logged in.\"\r\n")
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(&dir, "", &destination(backend.port(), "", ""));
    let cases = replay_cases();
    for (i, case) in cases.iter().enumerate() {
        let mut c = connect(&proxy);
        for (n, line) in case.client.iter().enumerate() {
            c.send(line);
            if let Some(challenge) = case.challenges.get(n) {
                for want in challenge.iter() {
                    assert_eq!(&c.read_line(), want, "{}: challenge", case.what);
                }
            }
        }
        assert_eq!(
            c.read_line(),
            "OK (SASL \"c2VydmVyIGZpbmFs\") \"Logged in.\"",
            "{}: the backend's reply, relayed verbatim",
            case.what
        );
        assert_received(&backend, i, case.replay.as_bytes());
        // Logged in: bytes now go straight through.
        c.send("LISTSCRIPTS");
        assert_received(
            &backend,
            i,
            format!("{}LISTSCRIPTS\r\n", case.replay).as_bytes(),
        );
        c.shutdown_write();
        backend.wait_eof(i, WAIT);
    }
    assert_eq!(backend.connections(), cases.len());
    let secrets: Vec<&str> = cases
        .iter()
        .flat_map(|c| c.secrets.iter().map(String::as_str))
        .collect();
    assert_log_clean(&proxy, &secrets);
}

#[test]
fn commands_pipelined_behind_the_login_reach_the_backend_in_order() {
    let name = "commands_pipelined_behind_the_login_reach_the_backend_in_order";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = one_reply(CAPABILITIES, LOGGED_IN).start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(&dir, "", &destination(backend.port(), "", ""));
    let mut c = connect(&proxy);
    let payload = b64(&plain("frank@example.org", "Pipe-S3cret"));
    c.send_raw(
        format!(
            "AUTHENTICATE \"PLAIN\" \"{payload}\"\r\nLISTSCRIPTS\r\nPUTSCRIPT \"a\" {{6+}}\r\nkeep;\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(c.read_line(), "OK \"Logged in.\"");
    assert_received(
        &backend,
        0,
        format!(
            "AUTHENTICATE \"PLAIN\" \"{payload}\"\r\nLISTSCRIPTS\r\nPUTSCRIPT \"a\" {{6+}}\r\nkeep;\n\r\n"
        )
        .as_bytes(),
    );
    assert_log_clean(&proxy, &["Pipe-S3cret", &payload]);
}

#[test]
fn a_challenge_after_the_response_is_answered_and_the_failure_relayed() {
    let name = "a_challenge_after_the_response_is_answered_and_the_failure_relayed";
    if !support::skip_unless_root(name) {
        return;
    }
    let error = b64(br#"{"status":"invalid_token","scope":"sieve"}"#);
    let challenge = format!("\"{error}\"\r\n");
    let backend = MockUpstream::new()
        .send(CAPABILITIES)
        .read_line()
        .send(challenge.as_bytes())
        .read_line()
        .send(b"NO (SASL \"\") {13}\r\nToken expired\r\n")
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(&dir, "", &destination(backend.port(), "", ""));
    let mut c = connect(&proxy);
    let payload = b64(b"n,a=gina@example.org,\x01auth=Bearer Expired-T0ken\x01\x01");
    c.send(&format!("AUTHENTICATE \"OAUTHBEARER\" \"{payload}\""));
    // The challenge is postern's business; the client sees the final reply, literal and
    // all.
    assert_eq!(c.read_line(), "NO (SASL \"\") {13}");
    assert_eq!(c.read_line(), "Token expired");
    assert_received(
        &backend,
        0,
        format!("AUTHENTICATE \"OAUTHBEARER\" \"{payload}\"\r\n\"AQ==\"\r\n").as_bytes(),
    );
    // The client stays with postern.
    c.send("NOOP");
    assert_eq!(c.read_line(), "OK \"NOOP completed.\"");
    backend.wait_eof(0, WAIT);
    assert_log_clean(&proxy, &["Expired-T0ken", &payload]);
}

// ---------------------------------------------------------------------------------------
// Client identity by XCLIENT.

/// postern behind a trusted PROXY-header sender, forwarding by XCLIENT to a backend
/// that offers it; the client claims `src` -> `dst`. Returns the XCLIENT line the
/// backend got.
fn xclient_line_for(name: &str, src: SocketAddr, dst: SocketAddr) -> Option<String> {
    if !support::skip_unless_root(name) {
        return None;
    }
    let backend = MockUpstream::new()
        .send(XCLIENT_CAPABILITIES)
        .read_line()
        .send(b"OK \"Updated\"\r\n")
        .read_line()
        .send(LOGGED_IN)
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "proxy_protocol = \"required\"\nproxy_trusted = [\"127.0.0.0/8\"]",
        &destination(backend.port(), "", "forwarding = \"xclient\""),
    );
    let mut c = LineClient::connect(proxy.addr("sieve"));
    c.send_raw(&support::proxy_v2_header(src, dst));
    let mut c = greeted(c);
    let payload = b64(&plain("ivan@example.org", "Xclient-S3cret"));
    c.send(&format!("AUTHENTICATE \"PLAIN\" \"{payload}\""));
    assert_eq!(
        c.read_line(),
        "OK \"Logged in.\"",
        "the XCLIENT reply must not reach the client"
    );
    let auth = format!("AUTHENTICATE \"PLAIN\" \"{payload}\"\r\n");
    let xclient = received_before(&backend, 0, &auth);
    assert_log_clean(&proxy, &["Xclient-S3cret", &payload]);
    Some(xclient)
}

#[test]
fn xclient_line_for_an_ipv4_client() {
    let src: SocketAddr = "192.0.2.7:50123".parse().expect("addr");
    let dst: SocketAddr = "198.51.100.1:4190".parse().expect("addr");
    let Some(line) = xclient_line_for("xclient_line_for_an_ipv4_client", src, dst) else {
        return;
    };
    assert_xclient(&line, "192.0.2.7", 50123, "198.51.100.1", 4190);
}

#[test]
fn xclient_line_for_an_ipv6_client() {
    // Bare IPv6 (no `IPV6:` prefix): Dovecot's managesieve-login refuses the prefix
    // (managesieve_dovecot.rs proves the bare form end to end).
    let src: SocketAddr = "[2001:db8::7]:50123".parse().expect("addr");
    let dst: SocketAddr = "[2001:db8::1]:4190".parse().expect("addr");
    let Some(line) = xclient_line_for("xclient_line_for_an_ipv6_client", src, dst) else {
        return;
    };
    assert_xclient(&line, "2001:db8::7", 50123, "2001:db8::1", 4190);
}

// ---------------------------------------------------------------------------------------
// Refusals.

#[test]
fn cr_lf_nul_in_decoded_credentials_never_reach_a_backend() {
    let name = "cr_lf_nul_in_decoded_credentials_never_reach_a_backend";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = one_reply(CAPABILITIES, LOGGED_IN).start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(&dir, "", &destination(backend.port(), "", ""));
    let mut c = connect(&proxy);
    let bad_plain: [&[u8]; 5] = [
        b"\0jo\rhn@example.org\0Ctl-S3cret",
        b"\0john@example.org\0Ctl-S3cret\n",
        b"\0john@example.org\0Ctl\0S3cret",
        b"\0john@example.org\r\nNOOP\0Ctl-S3cret",
        b"\0\0Ctl-S3cret",
    ];
    for payload in bad_plain {
        c.send(&format!("AUTHENTICATE \"PLAIN\" \"{}\"", b64(payload)));
        assert_eq!(c.read_line(), MALFORMED, "{payload:?}");
    }
    // SASL LOGIN with a CR in the password.
    c.send("AUTHENTICATE \"LOGIN\"");
    assert_eq!(c.read_line(), "\"VXNlcm5hbWU6\"");
    c.send(&format!("\"{}\"", b64(b"john@example.org")));
    assert_eq!(c.read_line(), "\"UGFzc3dvcmQ6\"");
    c.send(&format!("\"{}\"", b64(b"Ctl-S3cret\r")));
    assert_eq!(c.read_line(), MALFORMED);
    // Still postern's dialogue, and no backend was ever dialed.
    c.send("NOOP");
    assert_eq!(c.read_line(), "OK \"NOOP completed.\"");
    assert_eq!(backend.connections(), 0, "a backend was contacted");
    assert_log_clean(&proxy, &["Ctl-S3cret"]);
}

#[test]
fn backend_failures_are_relayed_or_hidden() {
    let name = "backend_failures_are_relayed_or_hidden";
    if !support::skip_unless_root(name) {
        return;
    }
    let failure: &[u8] = b"NO (AUTH-TOO-WEAK) \"Mechanism too weak.\"\r\n";
    for hide in [false, true] {
        let backend = one_reply(CAPABILITIES, failure).start();
        let dir = support::shared_tempdir();
        let proxy = start_proxy(
            &dir,
            "",
            &destination(backend.port(), &format!("hide_auth_errors = {hide}"), ""),
        );
        let mut c = connect(&proxy);
        let payload = b64(&plain("kate@example.org", "Wrong-S3cret"));
        c.send(&format!("AUTHENTICATE \"PLAIN\" \"{payload}\""));
        let want = if hide {
            "NO \"Authentication failed.\"".to_owned()
        } else {
            String::from_utf8_lossy(failure).trim_end().to_owned()
        };
        assert_eq!(c.read_line(), want, "hide_auth_errors = {hide}");
        // The backend connection is dropped; the client stays with postern.
        backend.wait_eof(0, WAIT);
        c.send("NOOP");
        assert_eq!(c.read_line(), "OK \"NOOP completed.\"");
        assert_log_clean(&proxy, &["Wrong-S3cret", &payload]);
    }
}

#[test]
fn an_unreachable_backend_is_backend_unavailable_and_the_client_may_retry() {
    let name = "an_unreachable_backend_is_backend_unavailable_and_the_client_may_retry";
    if !support::skip_unless_root(name) {
        return;
    }
    // A port nothing listens on.
    let port = support::free_port();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(&dir, "", &destination(port, "", ""));
    let mut c = connect(&proxy);
    let payload = b64(&plain("liam@example.org", "Down-S3cret"));
    c.send(&format!("AUTHENTICATE \"PLAIN\" \"{payload}\""));
    assert_eq!(c.read_line(), UNAVAILABLE);
    c.send("NOOP");
    assert_eq!(c.read_line(), "OK \"NOOP completed.\"");
    c.send("LOGOUT");
    assert_eq!(c.read_line(), "OK \"Logout completed.\"");
    c.expect_closed_silently(WAIT);
    assert_log_clean(&proxy, &["Down-S3cret", &payload]);
}

#[test]
fn a_backend_that_refuses_xclient_is_unavailable() {
    let name = "a_backend_that_refuses_xclient_is_unavailable";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = one_reply(XCLIENT_CAPABILITIES, b"NO \"You are not trusted.\"\r\n").start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination(backend.port(), "", "forwarding = \"xclient\""),
    );
    let mut c = connect(&proxy);
    c.send(&format!(
        "AUTHENTICATE \"PLAIN\" \"{}\"",
        b64(&plain("mia@example.org", "Refused-S3cret"))
    ));
    assert_eq!(c.read_line(), UNAVAILABLE);
    let got = backend.wait_received(0, 8, WAIT);
    assert!(
        got.starts_with(b"XCLIENT ") && !support::contains(&got, b"AUTHENTICATE"),
        "credentials went to a backend that refused XCLIENT: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_log_clean(&proxy, &["Refused-S3cret"]);
}

//! POP3 through the real binary against scripted backends (issue 4, "Against scripted
//! backends"): what a real Dovecot cannot show on demand.
//!
//! Each test starts `postern run` with a plain POP3 listener (cleartext logins allowed,
//! SASL LOGIN listed) in front of a [`MockUpstream`] that speaks a scripted POP3
//! dialogue, and asserts the exact bytes the backend received: the XCLIENT line for an
//! IPv4 and an IPv6 client (addresses set by an inbound PROXY header), the replay of
//! every mechanism as `AUTH <MECH> <base64>`, USER/PASS and SASL LOGIN rebuilt as PLAIN,
//! commands pipelined behind the login, and the refusals: CR/LF/NUL inside decoded
//! credentials and unsafe identifiers never reach a backend, `hide_auth_errors`, an
//! unreachable backend. postern runs with `POSTERN_LOG=trace` and every test checks
//! that no password or token reached its log.
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

const BANNER: &str = "postern pop3 scripted";
const UNAVAILABLE: &str = "-ERR backend unavailable";
const MALFORMED: &str = "-ERR malformed credentials";
/// A backend greeting offering XCLIENT the way Dovecot does.
const XCLIENT_GREETING: &[u8] = b"+OK [XCLIENT] mock ready.\r\n";
const GREETING: &[u8] = b"+OK mock ready.\r\n";
const LOGGED_IN: &[u8] = b"+OK Logged in.\r\n";

/// `[destination.backend]` at 127.0.0.1:`port`, a plain POP3 leg, no PROXY header,
/// cleartext replay allowed; `extra` goes in the destination table, `leg_extra` in the
/// leg's.
fn destination(port: u16, extra: &str, leg_extra: &str) -> String {
    support::scripted::destination("backend", "pop3", "127.0.0.1", port, extra, leg_extra)
}

/// Starts postern (trace logging) with a plain POP3 listener `pop3` (`listener_extra`
/// keys added; `max_auth_attempts` is 10 unless they set it) allowing cleartext logins,
/// `server_extra` lines in `[server]`, in front of `tables`.
fn start_proxy(
    dir: &tempfile::TempDir,
    server_extra: &str,
    listener_extra: &str,
    tables: &str,
) -> Proxy {
    let attempts = if listener_extra.contains("max_auth_attempts") {
        ""
    } else {
        "max_auth_attempts = 10"
    };
    let config = TestConfig::new(dir.path())
        .listener(
            "pop3",
            &format!(
                "protocol = \"pop3\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"\n\
                 {attempts}\n{listener_extra}"
            ),
        )
        .raw(&format!(
            "[capabilities.pop3]\nallow_plain_auth_without_tls = true\n\
             sasl = [\"PLAIN\", \"LOGIN\", \"OAUTHBEARER\", \"XOAUTH2\"]\nbanner = \"{BANNER}\""
        ))
        .raw(tables)
        .default_destination("backend")
        .server(server_extra);
    start_traced(&config, dir)
}

/// A client connected to the `pop3` listener, past postern's greeting.
fn connect(proxy: &Proxy) -> LineClient {
    greeted(LineClient::connect(proxy.addr("pop3")))
}

fn greeted(mut c: LineClient) -> LineClient {
    assert_eq!(c.read_line(), format!("+OK {BANNER}"), "postern's greeting");
    c
}

// ---------------------------------------------------------------------------------------
// Replay of every way to log in.

/// One login through postern: the client's lines (each answered by postern with the
/// line in `prompts` at the same index, `None` for the last one), the AUTH line the
/// backend must receive.
struct ReplayCase<'a> {
    name: &'a str,
    /// (client line, what postern answers before the next line).
    exchange: Vec<(String, Option<&'a str>)>,
    replay: String,
    secrets: Vec<String>,
}

fn assert_replayed(case: ReplayCase<'_>) {
    let ReplayCase {
        name,
        exchange,
        replay,
        secrets,
    } = case;
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = one_reply(GREETING, LOGGED_IN).start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(&dir, "", "", &destination(backend.port(), "", ""));

    let mut c = connect(&proxy);
    for (line, answer) in &exchange {
        c.send(line);
        if let Some(answer) = answer {
            assert_eq!(&c.read_line(), answer, "postern's answer to {line:?}");
        }
    }
    assert_eq!(
        c.read_line(),
        "+OK Logged in.",
        "the backend's reply, relayed"
    );
    assert_received(&backend, 0, replay.as_bytes());

    // Authenticated: bytes now go straight through.
    c.send("STAT");
    assert_received(&backend, 0, format!("{replay}STAT\r\n").as_bytes());
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_log_clean(&proxy, &secrets);
}

#[test]
fn user_pass_is_replayed_as_auth_plain() {
    let payload = b64(&plain("alice@example.org", "User-Pass S3cret"));
    assert_replayed(ReplayCase {
        name: "user_pass_is_replayed_as_auth_plain",
        exchange: vec![
            ("USER alice@example.org".into(), Some("+OK")),
            ("PASS User-Pass S3cret".into(), None),
        ],
        replay: format!("AUTH PLAIN {payload}\r\n"),
        secrets: vec!["User-Pass S3cret".into(), payload],
    });
}

#[test]
fn auth_plain_with_initial_response_is_replayed_unchanged() {
    let payload = b64(&plain("bob@example.org", "Plain-IR-S3cret"));
    assert_replayed(ReplayCase {
        name: "auth_plain_with_initial_response_is_replayed_unchanged",
        exchange: vec![(format!("AUTH PLAIN {payload}"), None)],
        replay: format!("AUTH PLAIN {payload}\r\n"),
        secrets: vec!["Plain-IR-S3cret".into(), payload],
    });
}

#[test]
fn auth_plain_after_a_continuation_is_replayed_with_initial_response() {
    let payload = b64(&plain("carol@example.org", "Plain-Cont-S3cret"));
    assert_replayed(ReplayCase {
        name: "auth_plain_after_a_continuation_is_replayed_with_initial_response",
        exchange: vec![("AUTH PLAIN".into(), Some("+ ")), (payload.clone(), None)],
        replay: format!("AUTH PLAIN {payload}\r\n"),
        secrets: vec!["Plain-Cont-S3cret".into(), payload],
    });
}

#[test]
fn auth_login_is_rebuilt_as_plain() {
    let payload = b64(&plain("dave@example.org", "Login-S3cret"));
    assert_replayed(ReplayCase {
        name: "auth_login_is_rebuilt_as_plain",
        exchange: vec![
            ("AUTH LOGIN".into(), Some("+ VXNlcm5hbWU6")),
            (b64(b"dave@example.org"), Some("+ UGFzc3dvcmQ6")),
            (b64(b"Login-S3cret"), None),
        ],
        replay: format!("AUTH PLAIN {payload}\r\n"),
        secrets: vec!["Login-S3cret".into(), b64(b"Login-S3cret"), payload],
    });
}

#[test]
fn auth_login_with_initial_response_is_rebuilt_as_plain() {
    let payload = b64(&plain("erin@example.org", "Login-IR-S3cret"));
    assert_replayed(ReplayCase {
        name: "auth_login_with_initial_response_is_rebuilt_as_plain",
        exchange: vec![
            (
                format!("AUTH LOGIN {}", b64(b"erin@example.org")),
                Some("+ UGFzc3dvcmQ6"),
            ),
            (b64(b"Login-IR-S3cret"), None),
        ],
        replay: format!("AUTH PLAIN {payload}\r\n"),
        secrets: vec!["Login-IR-S3cret".into(), payload],
    });
}

#[test]
fn oauthbearer_is_replayed_unchanged() {
    let token = "oauthbearer-tok-7c1e";
    let payload = b64(format!("n,a=frank@example.org,\x01auth=Bearer {token}\x01\x01").as_bytes());
    assert_replayed(ReplayCase {
        name: "oauthbearer_is_replayed_unchanged",
        exchange: vec![(format!("AUTH OAUTHBEARER {payload}"), None)],
        replay: format!("AUTH OAUTHBEARER {payload}\r\n"),
        secrets: vec![token.into(), payload],
    });
}

#[test]
fn xoauth2_after_a_continuation_is_replayed_unchanged() {
    let token = "xoauth2-tok-99ab";
    let payload = b64(format!("user=gina@example.org\x01auth=Bearer {token}\x01\x01").as_bytes());
    assert_replayed(ReplayCase {
        name: "xoauth2_after_a_continuation_is_replayed_unchanged",
        exchange: vec![("AUTH XOAUTH2".into(), Some("+ ")), (payload.clone(), None)],
        replay: format!("AUTH XOAUTH2 {payload}\r\n"),
        secrets: vec![token.into(), payload],
    });
}

#[test]
fn commands_pipelined_behind_pass_reach_the_backend_after_the_reply() {
    let name = "commands_pipelined_behind_pass_reach_the_backend_after_the_reply";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = one_reply(GREETING, LOGGED_IN).start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(&dir, "", "", &destination(backend.port(), "", ""));
    let mut c = connect(&proxy);
    c.send_raw(b"USER hank@example.org\r\nPASS Pipe-S3cret\r\nSTAT\r\nLIST\r\n");
    assert_eq!(c.read_line(), "+OK");
    assert_eq!(c.read_line(), "+OK Logged in.");
    let payload = b64(&plain("hank@example.org", "Pipe-S3cret"));
    assert_received(
        &backend,
        0,
        format!("AUTH PLAIN {payload}\r\nSTAT\r\nLIST\r\n").as_bytes(),
    );
    assert_log_clean(&proxy, &["Pipe-S3cret", &payload]);
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
        .send(XCLIENT_GREETING)
        .read_line()
        .send(b"+OK Updated\r\n")
        .read_line()
        .send(LOGGED_IN)
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        "proxy_protocol = \"required\"\nproxy_trusted = [\"127.0.0.0/8\"]",
        &destination(backend.port(), "", "forwarding = \"xclient\""),
    );
    let mut c = LineClient::connect(proxy.addr("pop3"));
    c.send_raw(&support::proxy_v2_header(src, dst));
    let mut c = greeted(c);
    c.send("USER ivan@example.org");
    assert_eq!(c.read_line(), "+OK");
    c.send("PASS Xclient-S3cret");
    assert_eq!(
        c.read_line(),
        "+OK Logged in.",
        "the XCLIENT reply must not reach the client"
    );
    let auth = format!(
        "AUTH PLAIN {}\r\n",
        b64(&plain("ivan@example.org", "Xclient-S3cret"))
    );
    let xclient = received_before(&backend, 0, &auth);
    assert_log_clean(&proxy, &["Xclient-S3cret"]);
    Some(xclient)
}

#[test]
fn xclient_line_for_an_ipv4_client() {
    let src: SocketAddr = "192.0.2.7:50123".parse().expect("addr");
    let dst: SocketAddr = "198.51.100.1:110".parse().expect("addr");
    let Some(line) = xclient_line_for("xclient_line_for_an_ipv4_client", src, dst) else {
        return;
    };
    assert_xclient(&line, "192.0.2.7", 50123, "198.51.100.1", 110);
}

#[test]
fn xclient_line_for_an_ipv6_client() {
    // Bare IPv6 (no `IPV6:` prefix): that is what Dovecot's POP3 XCLIENT accepts (see
    // pop3_dovecot.rs, which proves it end to end).
    let src: SocketAddr = "[2001:db8::7]:50123".parse().expect("addr");
    let dst: SocketAddr = "[2001:db8::1]:995".parse().expect("addr");
    let Some(line) = xclient_line_for("xclient_line_for_an_ipv6_client", src, dst) else {
        return;
    };
    assert_xclient(&line, "2001:db8::7", 50123, "2001:db8::1", 995);
}

#[test]
fn xclient_is_not_sent_when_the_backend_does_not_offer_it() {
    let name = "xclient_is_not_sent_when_the_backend_does_not_offer_it";
    if !support::skip_unless_root(name) {
        return;
    }
    // No XCLIENT in the greeting: postern asks CAPA, which does not list it either.
    let backend = MockUpstream::new()
        .send(GREETING)
        .read_line()
        .send(b"+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n")
        .read_line()
        .send(LOGGED_IN)
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        "",
        &destination(backend.port(), "", "forwarding = \"xclient\""),
    );
    let mut c = connect(&proxy);
    c.send("USER judy@example.org");
    assert_eq!(c.read_line(), "+OK");
    c.send("PASS NoXclient-S3cret");
    assert_eq!(c.read_line(), "+OK Logged in.");
    let payload = b64(&plain("judy@example.org", "NoXclient-S3cret"));
    assert_received(
        &backend,
        0,
        format!("CAPA\r\nAUTH PLAIN {payload}\r\n").as_bytes(),
    );
}

#[test]
fn rejected_xclient_is_backend_unavailable() {
    let name = "rejected_xclient_is_backend_unavailable";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = MockUpstream::new()
        .send(XCLIENT_GREETING)
        .read_line()
        .send(b"-ERR You are not from trusted IP\r\n")
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "backend_connect_retries = 0",
        "",
        &destination(backend.port(), "", "forwarding = \"xclient\""),
    );
    let mut c = connect(&proxy);
    c.send("USER kim@example.org");
    assert_eq!(c.read_line(), "+OK");
    c.send("PASS Rejected-S3cret");
    assert_eq!(c.read_line(), UNAVAILABLE);
    let record = backend.wait_eof(0, WAIT);
    let got = String::from_utf8_lossy(&record.received).into_owned();
    assert!(
        got.starts_with("XCLIENT ") && !got.contains("AUTH"),
        "credentials were sent after a rejected XCLIENT: {got:?}"
    );
    // The client may try again.
    c.send("NOOP");
    assert_eq!(c.read_line(), "+OK");
    assert_log_clean(&proxy, &["Rejected-S3cret"]);
}

// ---------------------------------------------------------------------------------------
// Refusals before any backend is contacted.

#[test]
fn cr_lf_nul_in_decoded_credentials_never_reach_a_backend() {
    let name = "cr_lf_nul_in_decoded_credentials_never_reach_a_backend";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = one_reply(GREETING, LOGGED_IN).start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(&dir, "", "", &destination(backend.port(), "", ""));

    let mut c = connect(&proxy);
    // AUTH PLAIN: CR, LF or NUL inside a field.
    for payload in [
        plain("lee@example.org", "Bad\rS3cret"),
        plain("lee@example.org", "Bad\nS3cret"),
        plain("lee@exa\nmple.org", "BadS3cret"),
        b"\0lee@example.org\0Bad\0S3cret".to_vec(),
    ] {
        c.send(&format!("AUTH PLAIN {}", b64(&payload)));
        assert_eq!(c.read_line(), MALFORMED, "{payload:?}");
    }
    // SASL LOGIN: the password decodes to CR LF.
    c.send("AUTH LOGIN");
    assert_eq!(c.read_line(), "+ VXNlcm5hbWU6");
    c.send(&b64(b"lee@example.org"));
    assert_eq!(c.read_line(), "+ UGFzc3dvcmQ6");
    c.send(&b64(b"Bad\r\nS3cret"));
    assert_eq!(c.read_line(), MALFORMED);
    // USER/PASS: a raw NUL inside the password line.
    c.send("USER lee@example.org");
    assert_eq!(c.read_line(), "+OK");
    c.send_raw(b"PASS Bad\0S3cret\r\n");
    assert_eq!(c.read_line(), MALFORMED);
    // The connection is still usable (6 failures < max_auth_attempts = 10).
    c.send("NOOP");
    assert_eq!(c.read_line(), "+OK");
    assert_eq!(
        backend.connections(),
        0,
        "postern contacted the backend with refused credentials"
    );
    assert_log_clean(&proxy, &["S3cret"]);
}

#[test]
fn unsafe_identifier_is_unavailable_and_closes_without_a_backend() {
    let name = "unsafe_identifier_is_unavailable_and_closes_without_a_backend";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = one_reply(GREETING, LOGGED_IN).start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(&dir, "", "", &destination(backend.port(), "", ""));
    for user in ["mal lory@example.org", "mal\"lory@example.org"] {
        let mut c = connect(&proxy);
        c.send(&format!("USER {user}"));
        assert_eq!(c.read_line(), "+OK");
        c.send("PASS Unsafe-S3cret");
        assert_eq!(c.read_line(), UNAVAILABLE, "{user}");
        c.expect_closed_silently(WAIT);
    }
    assert_eq!(
        backend.connections(),
        0,
        "postern contacted the backend for an unsafe identifier"
    );
    assert_log_clean(&proxy, &["Unsafe-S3cret"]);
}

// ---------------------------------------------------------------------------------------
// Backend failures.

#[test]
fn backend_failure_is_relayed_verbatim_or_hidden() {
    let name = "backend_failure_is_relayed_verbatim_or_hidden";
    if !support::skip_unless_root(name) {
        return;
    }
    for (hide, want) in [
        (false, "-ERR [AUTH] Wrong password, mock says."),
        (true, "-ERR Authentication failed."),
    ] {
        let backend = one_reply(GREETING, b"-ERR [AUTH] Wrong password, mock says.\r\n").start();
        let dir = support::shared_tempdir();
        let proxy = start_proxy(
            &dir,
            "",
            "",
            &destination(backend.port(), &format!("hide_auth_errors = {hide}"), ""),
        );
        let mut c = connect(&proxy);
        c.send("USER nina@example.org");
        assert_eq!(c.read_line(), "+OK");
        c.send("PASS Wrong-S3cret");
        assert_eq!(c.read_line(), want, "hide_auth_errors = {hide}");
        // postern dropped that backend connection; the client stays with postern.
        backend.wait_eof(0, WAIT);
        c.send("NOOP");
        assert_eq!(c.read_line(), "+OK");
        c.send("QUIT");
        assert_eq!(c.read_line(), "+OK Bye");
        assert_log_clean(&proxy, &["Wrong-S3cret"]);
    }
}

#[test]
fn unreachable_backend_is_unavailable_and_not_counted() {
    let name = "unreachable_backend_is_unavailable_and_not_counted";
    if !support::skip_unless_root(name) {
        return;
    }
    let port = support::free_port();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "backend_connect_retries = 0",
        "max_auth_attempts = 1",
        &destination(port, "", ""),
    );
    let mut c = connect(&proxy);
    for _ in 0..2 {
        c.send("USER olga@example.org");
        assert_eq!(c.read_line(), "+OK");
        c.send("PASS Down-S3cret");
        assert_eq!(c.read_line(), UNAVAILABLE);
    }
    c.send("NOOP");
    assert_eq!(c.read_line(), "+OK");
    assert_log_clean(&proxy, &["Down-S3cret"]);
}

#[test]
fn max_auth_attempts_closes_after_the_last_failure() {
    let name = "max_auth_attempts_closes_after_the_last_failure";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = one_reply(GREETING, LOGGED_IN).start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        "max_auth_attempts = 2",
        &destination(backend.port(), "", ""),
    );
    let mut c = connect(&proxy);
    c.send("AUTH CRAM-MD5");
    assert_eq!(c.read_line(), "-ERR unsupported mechanism");
    // APOP and cleartext refusals are not counted; bad base64 is.
    c.send("APOP pat c4c9334bac560ecc979e58001b3e22fb");
    assert_eq!(c.read_line(), "-ERR APOP not supported");
    c.send("AUTH PLAIN !!!");
    assert_eq!(c.read_line(), "-ERR invalid base64");
    c.expect_closed_silently(WAIT);
    assert_eq!(backend.connections(), 0);
}

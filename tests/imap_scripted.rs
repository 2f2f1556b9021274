//! IMAP through the real binary against scripted backends (issue 3, "Against scripted
//! backends"): what a real Dovecot cannot show or do on demand.
//!
//! Each test starts `postern run` with one plain IMAP listener (cleartext logins allowed)
//! in front of one or two [`MockUpstream`] backends that speak a scripted IMAP dialogue,
//! and asserts the exact bytes the backend received: the replay of OAUTHBEARER and
//! XOAUTH2 with JWTs and `sw1.` tokens (and the routing by their claims), PLAIN with and
//! without SASL-IR at the backend, `LOGIN` replayed as `AUTHENTICATE PLAIN` or as
//! `LOGIN`, the `ID` command of `forwarding = "xclient"`, and the failures: a backend
//! that is down then up (circuit breaker), one that hangs mid-greeting, credentials
//! with CR/LF/NUL, `hide_auth_errors`. postern runs with `POSTERN_LOG=trace` and every
//! test checks that no password or token reached its log.
//!
//! postern drops privileges to the test account, so the tests need root; without it
//! they print `skipped:` and pass.

mod support;

use std::time::{Duration, Instant};

use support::client::LineClient;
use support::mock_upstream::MockUpstream;
use support::proxy::{Proxy, TestConfig};
use support::scripted::{
    assert_log_clean, assert_received, b64, one_reply, plain, start_traced, WAIT,
};

/// A backend greeting with everything postern may use.
const GREETING: &[u8] =
    b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=OAUTHBEARER AUTH=XOAUTH2 ID] ready\r\n";
const UNAVAILABLE: &str = "A1 NO [UNAVAILABLE] backend unavailable";
const LOGGED_IN: &[u8] = b"A1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n";

// ---------------------------------------------------------------------------------------
// Encoding helpers (the tests build their own SASL payloads, JWTs and sw1. tokens).

/// base64url without padding (JWT segments, `sw1.` tokens).
fn b64url(bytes: &[u8]) -> String {
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(URL[*s as usize] as char);
            }
        }
    }
    out
}

/// An unsigned-looking JWS: postern reads the payload's claims and never checks the
/// signature.
fn jwt(claims: &str) -> String {
    format!(
        "{}.{}.{}",
        b64url(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#),
        b64url(claims.as_bytes()),
        b64url(b"signature-never-checked-by-postern-7f3a9c")
    )
}

/// A Stalwart `sw1.` token: `sw1.` + base64url(nonce || ciphertext) + `.` +
/// base64url(account name).
fn sw1(account: &str) -> String {
    format!(
        "sw1.{}.{}",
        b64url(b"\x00\x01\x02nonce-and-aead-ciphertext\xfe\xff"),
        b64url(account.as_bytes())
    )
}

fn oauthbearer(token: &str) -> Vec<u8> {
    format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
}

fn xoauth2(user: &str, token: &str) -> Vec<u8> {
    format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes()
}

// ---------------------------------------------------------------------------------------
// Fixtures.

/// `[destination.<name>]` at 127.0.0.1:`port`, a plain IMAP leg, no PROXY header,
/// cleartext replay allowed; `extra` goes in the destination table, `leg_extra` in the
/// leg's.
fn destination(name: &str, port: u16, extra: &str, leg_extra: &str) -> String {
    support::scripted::destination(name, "imap", "127.0.0.1", port, extra, leg_extra)
}

/// Starts postern (trace logging) with a plain IMAP listener `imap` allowing cleartext
/// logins, `server_extra` lines in `[server]`, `tables` (destinations, `[oauth]`, ...;
/// the default destination is `backend`) and the mapping file `mappings`.
fn start_proxy(dir: &tempfile::TempDir, server_extra: &str, tables: &str, mappings: &str) -> Proxy {
    support::write_file(&dir.path().join("mappings.txt"), mappings);
    let config = TestConfig::new(dir.path())
        .listener(
            "imap",
            "protocol = \"imap\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"\nmax_auth_attempts = 10",
        )
        .raw("[capabilities.imap]\nallow_plain_auth_without_tls = true")
        .raw(tables)
        .server(server_extra);
    start_traced(&config, dir)
}

/// A client connected to the `imap` listener, past postern's greeting.
fn connect(proxy: &Proxy) -> LineClient {
    let mut c = LineClient::connect(proxy.addr("imap"));
    let greeting = c.read_line();
    assert!(
        greeting.starts_with("* OK [CAPABILITY "),
        "postern's greeting: {greeting:?}"
    );
    c
}

/// Waits for the `session closed` line of a session relayed to `destination`.
fn wait_session_closed(proxy: &Proxy, destination: &str) -> String {
    let forms = [
        format!("destination={destination} "),
        format!("destination=\"{destination}\""),
        format!("\"destination\":\"{destination}\""),
    ];
    support::eventually(WAIT, "a `session closed` log line", || {
        proxy
            .log()
            .lines()
            .find(|l| l.contains("session closed") && forms.iter().any(|f| l.contains(f)))
            .map(str::to_owned)
    })
}

// ---------------------------------------------------------------------------------------
// OAuth: the token is replayed unchanged, the claims route.

/// One OAuth login routed by what its credentials name.
struct OAuthCase<'a> {
    name: &'a str,
    mechanism: &'a str,
    /// The decoded SASL response.
    payload: Vec<u8>,
    /// The mapping file.
    mappings: &'a str,
    /// Extra config tables (`[oauth]`).
    tables_extra: &'a str,
    /// `other` or `backend` (the default destination).
    lands_on: &'a str,
    /// Text that must not appear in the log (the base64 payload is added).
    secrets: &'a [&'a str],
}

/// Logs in with `AUTHENTICATE <mechanism> <payload>` (SASL-IR) through postern, with
/// two destinations, `other` and the default `backend`. Asserts the one the case
/// expects gets exactly the replay of the unchanged payload, the other nothing, the
/// relay works, and the log holds no secret.
fn assert_oauth_routed(case: OAuthCase<'_>) {
    let OAuthCase {
        name,
        mechanism,
        payload,
        mappings,
        tables_extra,
        lands_on,
        secrets,
    } = case;
    if !support::skip_unless_root(name) {
        return;
    }
    let default = one_reply(GREETING, LOGGED_IN).start();
    let other = one_reply(GREETING, LOGGED_IN).start();
    let dir = support::shared_tempdir();
    let tables = format!(
        "{}{}{tables_extra}",
        destination("backend", default.port(), "", ""),
        destination("other", other.port(), "", "")
    );
    let proxy = start_proxy(&dir, "", &tables, mappings);
    let (target, bystander) = match lands_on {
        "other" => (&other, &default),
        "backend" => (&default, &other),
        _ => panic!("lands_on {lands_on:?}"),
    };

    let encoded = b64(&payload);
    let mut c = connect(&proxy);
    c.send(&format!("A1 AUTHENTICATE {mechanism} {encoded}"));
    assert_eq!(
        c.read_line(),
        "A1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in",
        "the backend's reply, relayed verbatim"
    );
    let replay = format!("A1 AUTHENTICATE {mechanism} {encoded}\r\n");
    assert_received(target, 0, replay.as_bytes());

    // Authenticated: bytes now go straight through.
    c.send("A2 NOOP");
    assert_received(target, 0, format!("{replay}A2 NOOP\r\n").as_bytes());
    assert_eq!(
        bystander.connections(),
        0,
        "the login went to the wrong destination too"
    );
    assert_eq!(target.connections(), 1);

    c.shutdown_write();
    target.wait_eof(0, WAIT);
    drop(c);
    wait_session_closed(&proxy, lands_on);
    let mut all = secrets.to_vec();
    all.push(&encoded);
    assert_log_clean(&proxy, &all);
}

#[test]
fn oauthbearer_with_a_jwt_is_replayed_unchanged_and_routed_by_its_email_claim() {
    let token = jwt(r#"{"sub":"1234567890","email":"carol@example.org","iat":1700000000}"#);
    let signature = token.rsplit('.').next().expect("signature").to_owned();
    assert_oauth_routed(OAuthCase {
        name: "oauthbearer_with_a_jwt_is_replayed_unchanged_and_routed_by_its_email_claim",
        mechanism: "OAUTHBEARER",
        payload: oauthbearer(&token),
        mappings: "carol@example.org\tother\n",
        tables_extra: "",
        lands_on: "other",
        secrets: &[&token, &signature],
    });
}

#[test]
fn oauthbearer_with_a_jwt_falls_back_through_the_claims() {
    // email is not a string, preferred_username has no `@`: upn is the first usable.
    let token = jwt(
        r#"{"email":42,"preferred_username":"gina","upn":"gina@example.org","sub":"zz@example.org"}"#,
    );
    let signature = token.rsplit('.').next().expect("signature").to_owned();
    assert_oauth_routed(OAuthCase {
        name: "oauthbearer_with_a_jwt_falls_back_through_the_claims",
        mechanism: "OAUTHBEARER",
        payload: oauthbearer(&token),
        mappings: "gina@example.org\tother\nzz@example.org\tbackend\n",
        tables_extra: "",
        lands_on: "other",
        secrets: &[&token, &signature],
    });
}

#[test]
fn oauthbearer_authzid_with_an_at_sign_routes_before_the_token() {
    let token = jwt(r#"{"email":"ken@example.org"}"#);
    let signature = token.rsplit('.').next().expect("signature").to_owned();
    assert_oauth_routed(OAuthCase {
        name: "oauthbearer_authzid_with_an_at_sign_routes_before_the_token",
        mechanism: "OAUTHBEARER",
        payload: format!("n,a=lea@example.org,\x01host=imap.example.org\x01port=143\x01auth=Bearer {token}\x01\x01")
            .into_bytes(),
        mappings: "lea@example.org\tother\nken@example.org\tbackend\n",
        tables_extra: "",
        lands_on: "other",
        secrets: &[&token, &signature],
    });
}

#[test]
fn xoauth2_with_a_jwt_routes_by_jwt_username_claim_before_the_fallbacks() {
    // The configured claim wins over `email`, which the mapping sends elsewhere.
    let token = jwt(r#"{"email":"dave@example.org","acct":"erin@example.org"}"#);
    let signature = token.rsplit('.').next().expect("signature").to_owned();
    assert_oauth_routed(OAuthCase {
        name: "xoauth2_with_a_jwt_routes_by_jwt_username_claim_before_the_fallbacks",
        mechanism: "XOAUTH2",
        // `user=` without `@` does not name the account: the token does.
        payload: xoauth2("erin", &token),
        mappings: "erin@example.org\tother\ndave@example.org\tbackend\n",
        tables_extra: "[oauth]\njwt_username_claim = \"acct\"\n",
        lands_on: "other",
        secrets: &[&token, &signature],
    });
}

#[test]
fn xoauth2_with_an_sw1_token_routes_by_its_footer() {
    let token = sw1("frank@example.org");
    let body = token.split('.').nth(1).expect("body").to_owned();
    assert_oauth_routed(OAuthCase {
        name: "xoauth2_with_an_sw1_token_routes_by_its_footer",
        mechanism: "XOAUTH2",
        payload: xoauth2("", &token),
        mappings: "frank@example.org\tother\n",
        tables_extra: "",
        lands_on: "other",
        secrets: &[&token, &body],
    });
}

#[test]
fn oauthbearer_with_an_sw1_token_routes_by_its_footer() {
    let token = sw1("hank@example.org");
    let body = token.split('.').nth(1).expect("body").to_owned();
    assert_oauth_routed(OAuthCase {
        name: "oauthbearer_with_an_sw1_token_routes_by_its_footer",
        mechanism: "OAUTHBEARER",
        payload: oauthbearer(&token),
        mappings: "hank@example.org\tother\n",
        tables_extra: "",
        lands_on: "other",
        secrets: &[&token, &body],
    });
}

#[test]
fn sw1_token_without_a_footer_goes_to_the_default_destination() {
    // An opaque token (Stalwart 0.15 and earlier) names no account, even when its body
    // would decode as claims.
    let token = format!("sw1.{}", b64url(br#"{"email":"ivy@example.org"}"#));
    let body = token.strip_prefix("sw1.").expect("sw1.").to_owned();
    assert_oauth_routed(OAuthCase {
        name: "sw1_token_without_a_footer_goes_to_the_default_destination",
        mechanism: "XOAUTH2",
        payload: xoauth2("ivy", &token),
        mappings: "ivy@example.org\tother\nivy\tother\n",
        tables_extra: "",
        lands_on: "backend",
        secrets: &[&token, &body],
    });
}

/// A backend that answers the OAUTHBEARER response with an error challenge gets `AQ==`
/// and its final `NO` reaches the client; the challenge itself does not.
fn assert_oauth_error_challenge_answered(name: &str, backend_sasl_ir: bool) {
    if !support::skip_unless_root(name) {
        return;
    }
    let token = jwt(r#"{"email":"ivan@example.org"}"#);
    let payload = oauthbearer(&token);
    let encoded = b64(&payload);
    let challenge = b"+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJpbWFwIn0=\r\n";
    let failure = b"A1 NO [AUTHENTICATIONFAILED] Invalid token\r\n";
    let builder = if backend_sasl_ir {
        MockUpstream::new().send(GREETING).read_line()
    } else {
        MockUpstream::new()
            .send(b"* OK [CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER ID] ready\r\n")
            .read_line()
            .send(b"+ \r\n")
            .read_line()
    };
    let backend = builder
        .send(challenge)
        .read_line()
        .send(failure)
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination("backend", backend.port(), "", ""),
        "",
    );

    let mut c = connect(&proxy);
    c.send(&format!("A1 AUTHENTICATE OAUTHBEARER {encoded}"));
    assert_eq!(
        c.read_line(),
        "A1 NO [AUTHENTICATIONFAILED] Invalid token",
        "the backend's final reply, and nothing before it"
    );
    let want = if backend_sasl_ir {
        format!("A1 AUTHENTICATE OAUTHBEARER {encoded}\r\nAQ==\r\n")
    } else {
        format!("A1 AUTHENTICATE OAUTHBEARER\r\n{encoded}\r\nAQ==\r\n")
    };
    assert_received(&backend, 0, want.as_bytes());
    // A failed login closes its backend connection; the client's stays usable.
    backend.wait_eof(0, WAIT);
    c.send("A2 NOOP");
    assert_eq!(c.read_line(), "A2 OK NOOP completed.");
    assert_log_clean(&proxy, &[&token, &encoded]);
}

#[test]
fn oauth_error_challenge_is_answered_with_aq() {
    assert_oauth_error_challenge_answered("oauth_error_challenge_is_answered_with_aq", true);
}

#[test]
fn oauth_error_challenge_without_sasl_ir_is_answered_with_aq() {
    assert_oauth_error_challenge_answered(
        "oauth_error_challenge_without_sasl_ir_is_answered_with_aq",
        false,
    );
}

// ---------------------------------------------------------------------------------------
// Password logins.

#[test]
fn plain_without_sasl_ir_at_the_backend_uses_a_continuation() {
    let name = "plain_without_sasl_ir_at_the_backend_uses_a_continuation";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = MockUpstream::new()
        .send(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN ID] ready\r\n")
        .read_line()
        .send(b"+ \r\n")
        .read_line()
        .send(b"A1 OK Logged in\r\n")
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination("backend", backend.port(), "", ""),
        "",
    );

    let password = "c0ntinu4tion-Secret";
    let encoded = b64(&plain("jack@example.org", password));
    // The client does without SASL-IR too.
    let mut c = connect(&proxy);
    c.send("A1 AUTHENTICATE PLAIN");
    assert_eq!(c.read_line(), "+ ");
    c.send(&encoded);
    assert_eq!(c.read_line(), "A1 OK Logged in");
    assert_received(
        &backend,
        0,
        format!("A1 AUTHENTICATE PLAIN\r\n{encoded}\r\n").as_bytes(),
    );
    assert_log_clean(&proxy, &[password, &encoded]);
}

#[test]
fn login_command_is_replayed_as_authenticate_plain() {
    let name = "login_command_is_replayed_as_authenticate_plain";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = one_reply(GREETING, LOGGED_IN).start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination("backend", backend.port(), "", ""),
        "",
    );

    let password = "L0gin pass w0rd";
    let mut c = connect(&proxy);
    c.send(&format!("A1 LOGIN kate@example.org \"{password}\""));
    assert_eq!(c.read_line(), "A1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in");
    let encoded = b64(&plain("kate@example.org", password));
    assert_received(
        &backend,
        0,
        format!("A1 AUTHENTICATE PLAIN {encoded}\r\n").as_bytes(),
    );
    assert_log_clean(&proxy, &[password, &encoded]);
}

#[test]
fn backend_without_auth_plain_gets_a_quoted_login() {
    let name = "backend_without_auth_plain_gets_a_quoted_login";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = one_reply(
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=OAUTHBEARER ID] ready\r\n",
        b"A1 OK Logged in\r\n",
    )
    .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination("backend", backend.port(), "", ""),
        "",
    );

    // IMAP LOGIN, with a password that needs escaping: pa"ss\wo rd.
    let mut c = connect(&proxy);
    c.send(r#"A1 LOGIN "liam@example.org" "pa\"ss\\wo rd""#);
    assert_eq!(c.read_line(), "A1 OK Logged in");
    assert_received(
        &backend,
        0,
        b"A1 LOGIN \"liam@example.org\" \"pa\\\"ss\\\\wo rd\"\r\n",
    );

    // AUTHENTICATE PLAIN is replayed the same way.
    let mut c2 = connect(&proxy);
    c2.send(&format!(
        "A1 AUTHENTICATE PLAIN {}",
        b64(&plain("mia@example.org", "Hunter2-plain"))
    ));
    assert_eq!(c2.read_line(), "A1 OK Logged in");
    assert_received(
        &backend,
        1,
        b"A1 LOGIN \"mia@example.org\" \"Hunter2-plain\"\r\n",
    );
    assert_log_clean(&proxy, &["wo rd", "Hunter2-plain"]);
}

#[test]
fn capabilities_are_asked_when_the_greeting_lists_none() {
    let name = "capabilities_are_asked_when_the_greeting_lists_none";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = MockUpstream::new()
        .send(b"* OK IMAP server ready\r\n")
        .read_line()
        .send(b"* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN\r\nP2 OK CAPABILITY completed\r\n")
        .read_line()
        .send(LOGGED_IN)
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination("backend", backend.port(), "", ""),
        "",
    );

    let mut c = connect(&proxy);
    c.send("A1 LOGIN nora@example.org Capa-S3cret");
    assert_eq!(c.read_line(), "A1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in");
    let encoded = b64(&plain("nora@example.org", "Capa-S3cret"));
    assert_received(
        &backend,
        0,
        format!("P2 CAPABILITY\r\nA1 AUTHENTICATE PLAIN {encoded}\r\n").as_bytes(),
    );
    assert_log_clean(&proxy, &["Capa-S3cret", &encoded]);
}

#[test]
fn commands_pipelined_after_login_reach_the_backend_and_the_session_is_logged() {
    let name = "commands_pipelined_after_login_reach_the_backend_and_the_session_is_logged";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = MockUpstream::new()
        .send(GREETING)
        .read_line()
        .send(b"A1 OK Logged in\r\n")
        .read_line()
        .send(b"* 0 EXISTS\r\nA2 OK [READ-WRITE] SELECT completed\r\n")
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination("backend", backend.port(), "", ""),
        "",
    );

    let mut c = connect(&proxy);
    c.send_raw(b"A1 LOGIN olga@example.org Pipe-S3cret\r\nA2 SELECT INBOX\r\n");
    assert_eq!(c.read_line(), "A1 OK Logged in");
    assert_eq!(c.read_line(), "* 0 EXISTS");
    assert_eq!(c.read_line(), "A2 OK [READ-WRITE] SELECT completed");
    let encoded = b64(&plain("olga@example.org", "Pipe-S3cret"));
    assert_received(
        &backend,
        0,
        format!("A1 AUTHENTICATE PLAIN {encoded}\r\nA2 SELECT INBOX\r\n").as_bytes(),
    );
    c.shutdown_write();
    backend.wait_eof(0, WAIT);
    drop(c);
    wait_session_closed(&proxy, "backend");
    assert_log_clean(&proxy, &["Pipe-S3cret", &encoded]);
}

#[test]
fn backend_failure_is_relayed_verbatim_and_the_client_may_retry() {
    let name = "backend_failure_is_relayed_verbatim_and_the_client_may_retry";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = one_reply(
        GREETING,
        b"A1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n",
    )
    .then_connection()
    .send(GREETING)
    .read_line()
    .send(b"A2 OK Logged in\r\n")
    .read_to_eof()
    .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination("backend", backend.port(), "", ""),
        "",
    );

    let mut c = connect(&proxy);
    c.send("A1 LOGIN pat@example.org Wrong-S3cret");
    assert_eq!(
        c.read_line(),
        "A1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"
    );
    // postern closes the backend connection of a failed login.
    backend.wait_eof(0, WAIT);
    c.send("A2 LOGIN pat@example.org Right-S3cret");
    assert_eq!(c.read_line(), "A2 OK Logged in");
    assert_received(
        &backend,
        1,
        format!(
            "A2 AUTHENTICATE PLAIN {}\r\n",
            b64(&plain("pat@example.org", "Right-S3cret"))
        )
        .as_bytes(),
    );
    assert_log_clean(&proxy, &["Wrong-S3cret", "Right-S3cret"]);
}

#[test]
fn hide_auth_errors_replaces_the_backend_failure_with_a_generic_one() {
    let name = "hide_auth_errors_replaces_the_backend_failure_with_a_generic_one";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = one_reply(GREETING, b"A1 NO [AUTHENTICATIONFAILED] bad user xyz\r\n").start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination("backend", backend.port(), "hide_auth_errors = true", ""),
        "",
    );

    let mut c = connect(&proxy);
    c.send("A1 LOGIN xyz@example.org Hidden-S3cret");
    assert_eq!(
        c.read_line(),
        "A1 NO [AUTHENTICATIONFAILED] Authentication failed."
    );
    backend.wait_eof(0, WAIT);
    // Nothing of the backend's text came before or comes after the generic reply.
    c.send("A2 NOOP");
    assert_eq!(c.read_line(), "A2 OK NOOP completed.");
    assert_log_clean(&proxy, &["Hidden-S3cret"]);
}

#[test]
fn cr_lf_nul_in_credentials_are_refused_before_any_backend() {
    let name = "cr_lf_nul_in_credentials_are_refused_before_any_backend";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = one_reply(GREETING, b"A1 OK Logged in\r\n").start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination("backend", backend.port(), "", ""),
        "",
    );

    let payloads: [&[u8]; 6] = [
        b"\0quinn@example.org\0Bad-S3cret\r\nA9 LOGOUT",
        b"\0quinn@example.org\0Bad-S3cret\nX",
        b"\0quinn@example.org\0Bad-S3cret\rX",
        b"\0quinn@example.org\0Bad-S3cret\0X",
        b"\0quinn@exam\r\nple.org\0Bad-S3cret",
        b"quinn@exa\nmple.org\0quinn@example.org\0Bad-S3cret",
    ];
    for payload in payloads {
        let mut c = connect(&proxy);
        c.send(&format!("A1 AUTHENTICATE PLAIN {}", b64(payload)));
        let reply = c.read_line();
        assert_eq!(
            reply, "A1 NO [AUTHENTICATIONFAILED] Malformed credentials.",
            "payload {payload:?}"
        );
    }
    // IMAP LOGIN with the password as a literal can carry the same bytes.
    for password in [&b"Bad-S3cret\r\nX"[..], b"Bad-S3cret\0X"] {
        let mut c = connect(&proxy);
        c.send(&format!(
            "A1 LOGIN quinn@example.org {{{}}}",
            password.len()
        ));
        let go = c.read_line();
        assert!(go.starts_with("+ "), "literal continuation: {go:?}");
        c.send_raw(password);
        c.send_raw(b"\r\n");
        let reply = c.read_line();
        assert!(
            reply.starts_with("A1 NO ") || reply.starts_with("A1 BAD "),
            "password {password:?}: {reply:?}"
        );
    }
    assert_eq!(
        backend.connections(),
        0,
        "postern contacted the backend for refused credentials"
    );

    // The backend was reachable all along.
    let mut c = connect(&proxy);
    c.send("A1 LOGIN quinn@example.org Good-S3cret");
    assert_eq!(c.read_line(), "A1 OK Logged in");
    assert_eq!(backend.connections(), 1);
    assert_log_clean(&proxy, &["Bad-S3cret", "Good-S3cret"]);
}

// ---------------------------------------------------------------------------------------
// Client identity by IMAP ID.

#[test]
fn id_is_sent_first_when_forwarding_is_xclient_and_the_backend_advertises_it() {
    let name = "id_is_sent_first_when_forwarding_is_xclient_and_the_backend_advertises_it";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = MockUpstream::new()
        .send(GREETING)
        .read_line()
        .send(b"* ID (\"name\" \"mock\")\r\nF1 OK ID completed\r\n")
        .read_line()
        .send(LOGGED_IN)
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination("backend", backend.port(), "", "forwarding = \"xclient\""),
        "",
    );
    let listen = proxy.addr("imap");

    let mut c = connect(&proxy);
    let me = c.stream.local_addr().expect("local addr");
    c.send("A1 LOGIN rose@example.org Id-S3cret");
    assert_eq!(
        c.read_line(),
        "A1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in",
        "the backend's ID reply must not reach the client"
    );
    let encoded = b64(&plain("rose@example.org", "Id-S3cret"));
    let auth = format!("A1 AUTHENTICATE PLAIN {encoded}\r\n");
    let got = support::eventually(WAIT, "the ID line and the replay", || {
        let got = String::from_utf8_lossy(&backend.received(0)).into_owned();
        got.ends_with(&auth).then_some(got)
    });
    let id_line = got.strip_suffix(&auth).expect("suffix");
    let head = format!(
        "F1 ID (\"x-originating-ip\" \"{}\" \"x-originating-port\" \"{}\" \
         \"x-connected-ip\" \"{}\" \"x-connected-port\" \"{}\" \"x-proxy-ttl\" \"6\" \
         \"x-session-id\" \"P",
        me.ip(),
        me.port(),
        listen.ip(),
        listen.port()
    );
    let tail = "\" \"x-client-transport\" \"insecure\")\r\n";
    let session = id_line
        .strip_prefix(&head)
        .and_then(|rest| rest.strip_suffix(tail))
        .unwrap_or_else(|| panic!("ID line {id_line:?}\nwanted {head}<hex>{tail}"));
    assert!(
        !session.is_empty() && session.bytes().all(|b| b.is_ascii_hexdigit()),
        "x-session-id P{session:?} is not P<hex>"
    );
    assert!(
        session.bytes().all(|b| !b.is_ascii_uppercase()),
        "x-session-id P{session} should be lowercase hex"
    );
    assert_log_clean(&proxy, &["Id-S3cret", &encoded]);
}

#[test]
fn id_is_not_sent_when_the_backend_does_not_advertise_it() {
    let name = "id_is_not_sent_when_the_backend_does_not_advertise_it";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = one_reply(
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n",
        LOGGED_IN,
    )
    .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination("backend", backend.port(), "", "forwarding = \"xclient\""),
        "",
    );

    let mut c = connect(&proxy);
    c.send("A1 LOGIN sam@example.org NoId-S3cret");
    assert_eq!(c.read_line(), "A1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in");
    let encoded = b64(&plain("sam@example.org", "NoId-S3cret"));
    assert_received(
        &backend,
        0,
        format!("A1 AUTHENTICATE PLAIN {encoded}\r\n").as_bytes(),
    );
    assert_log_clean(&proxy, &["NoId-S3cret", &encoded]);
}

// ---------------------------------------------------------------------------------------
// Backends that fail.

#[test]
fn backend_down_then_up_opens_the_breaker_and_a_probe_closes_it() {
    let name = "backend_down_then_up_opens_the_breaker_and_a_probe_closes_it";
    if !support::skip_unless_root(name) {
        return;
    }
    // Nothing listens here until the breaker is open.
    let port = support::free_port();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "host_down_threshold = 2\nhost_down_cooldown = \"2s\"\nbackend_connect_retries = 0",
        &destination("backend", port, "", ""),
        "",
    );
    let login = "A1 LOGIN tom@example.org Down-S3cret";

    let mut first = connect(&proxy);
    first.send(login);
    assert_eq!(first.read_line(), UNAVAILABLE, "connection refused");
    assert!(
        !proxy.log().contains("destination marked down"),
        "marked down after one failure with host_down_threshold = 2"
    );
    let before_second = Instant::now();
    let mut second = connect(&proxy);
    second.send(login);
    assert_eq!(second.read_line(), UNAVAILABLE, "connection refused");
    proxy.wait_log("destination marked down", WAIT);

    // The backend comes up, but the breaker is open: no dial during the cooldown.
    let backend = one_reply(GREETING, b"A1 OK Logged in\r\n")
        .port(port)
        .start();
    let mut third = connect(&proxy);
    let sent = Instant::now();
    third.send(login);
    assert_eq!(third.read_line(), UNAVAILABLE, "breaker open");
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "an open breaker answers at once, took {:?}",
        sent.elapsed()
    );
    assert_eq!(backend.connections(), 0, "dialed while marked down");

    // After the cooldown the next login is a probe, and it succeeds.
    let mut probe = support::eventually(WAIT, "a login after the cooldown", || {
        let mut c = connect(&proxy);
        c.send(login);
        let line = c.read_line();
        if line == "A1 OK Logged in" {
            return Some(c);
        }
        assert_eq!(line, UNAVAILABLE);
        assert_eq!(backend.connections(), 0, "dialed while marked down");
        None
    });
    assert!(
        before_second.elapsed() >= Duration::from_millis(1900),
        "the breaker let a dial through {:?} after the failure that opened it",
        before_second.elapsed()
    );
    assert_eq!(backend.connections(), 1, "one probe");
    proxy.wait_log("destination is up again", WAIT);
    probe.send("A2 NOOP");
    let encoded = b64(&plain("tom@example.org", "Down-S3cret"));
    assert_received(
        &backend,
        0,
        format!("A1 AUTHENTICATE PLAIN {encoded}\r\nA2 NOOP\r\n").as_bytes(),
    );

    // Closed again: the next login dials at once.
    let mut after = connect(&proxy);
    after.send(login);
    assert_eq!(after.read_line(), "A1 OK Logged in");
    assert_eq!(backend.connections(), 2);
    assert_log_clean(&proxy, &["Down-S3cret", &encoded]);
}

#[test]
fn backend_hanging_mid_greeting_times_out_with_unavailable() {
    let name = "backend_hanging_mid_greeting_times_out_with_unavailable";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = MockUpstream::new()
        .send(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PL")
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "backend_timeout = \"1s\"\nbackend_connect_retries = 1",
        &destination("backend", backend.port(), "", ""),
        "",
    );

    let mut c = connect(&proxy);
    let sent = Instant::now();
    c.send("A1 LOGIN uma@example.org Hang-S3cret");
    assert_eq!(c.read_line(), UNAVAILABLE);
    let took = sent.elapsed();
    // Two attempts of 1 s each, 200 ms apart.
    assert!(
        took >= Duration::from_millis(2000) && took < Duration::from_secs(8),
        "UNAVAILABLE after {took:?}"
    );
    assert_eq!(backend.connections(), 2, "one attempt and one retry");
    for i in 0..2 {
        let record = backend.wait_eof(i, WAIT);
        assert!(
            record.received.is_empty(),
            "postern sent {:?} to a backend that never finished its greeting",
            String::from_utf8_lossy(&record.received)
        );
    }
    // The client may go on.
    c.send("A2 NOOP");
    assert_eq!(c.read_line(), "A2 OK NOOP completed.");
    let encoded = b64(&plain("uma@example.org", "Hang-S3cret"));
    assert_log_clean(&proxy, &["Hang-S3cret", &encoded]);
}

#[test]
fn backend_greeting_bye_is_unavailable() {
    let name = "backend_greeting_bye_is_unavailable";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = MockUpstream::new()
        .send(b"* BYE Too many connections from your IP\r\n")
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "backend_connect_retries = 0",
        &destination("backend", backend.port(), "", ""),
        "",
    );

    let mut c = connect(&proxy);
    c.send("A1 LOGIN vera@example.org Bye-S3cret");
    assert_eq!(c.read_line(), UNAVAILABLE);
    let record = backend.wait_eof(0, WAIT);
    assert!(
        record.received.is_empty(),
        "postern sent {:?} after a BYE greeting",
        String::from_utf8_lossy(&record.received)
    );
    assert_eq!(backend.connections(), 1);
    assert_log_clean(&proxy, &["Bye-S3cret"]);
}

#[test]
fn unsafe_identifier_is_unavailable_and_closes_without_a_backend() {
    let name = "unsafe_identifier_is_unavailable_and_closes_without_a_backend";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = one_reply(GREETING, b"A1 OK Logged in\r\n").start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination("backend", backend.port(), "", ""),
        "",
    );

    for login in [
        r#"A1 LOGIN "walt er@example.org" Unsafe-S3cret"#,
        r#"A1 LOGIN "walt\"er@example.org" Unsafe-S3cret"#,
    ] {
        let mut c = connect(&proxy);
        c.send(login);
        assert_eq!(c.read_line(), UNAVAILABLE, "{login}");
        c.expect_closed_silently(WAIT);
    }
    assert_eq!(
        backend.connections(),
        0,
        "postern contacted the backend for an unsafe identifier"
    );
    assert_log_clean(&proxy, &["Unsafe-S3cret"]);
}

#[test]
fn eight_bit_password_goes_to_a_login_only_backend_as_a_literal() {
    let name = "eight_bit_password_goes_to_a_login_only_backend_as_a_literal";
    if !support::skip_unless_root(name) {
        return;
    }
    // Connection 0: no LITERAL+, so a synchronising literal and a wait for `+`.
    // Connection 1: LITERAL+, so `{n+}` inline.
    let backend = MockUpstream::new()
        .send(b"* OK [CAPABILITY IMAP4rev1 ID] ready\r\n")
        .read_line()
        .send(b"+ Ready for literal data\r\n")
        .read_line()
        .send(b"A1 OK Logged in\r\n")
        .read_to_eof()
        .then_connection()
        .send(b"* OK [CAPABILITY IMAP4rev1 LITERAL+ ID] ready\r\n")
        .read_line()
        .read_line()
        .send(b"A1 OK Logged in\r\n")
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination("backend", backend.port(), "", ""),
        "",
    );

    let password = "p\u{e4}ssw\u{f6}rd-S3cret".as_bytes();
    for i in 0..2 {
        let mut c = connect(&proxy);
        c.send(&format!("A1 LOGIN yara@example.org {{{}}}", password.len()));
        assert!(c.read_line().starts_with("+ "));
        c.send_raw(password);
        c.send_raw(b"\r\n");
        assert_eq!(c.read_line(), "A1 OK Logged in");
        let plus = if i == 1 { "+" } else { "" };
        let want = [
            format!(
                "A1 LOGIN \"yara@example.org\" {{{}{plus}}}\r\n",
                password.len()
            )
            .as_bytes(),
            password,
            b"\r\n",
        ]
        .concat();
        assert_received(&backend, i, &want);
    }
    assert_log_clean(&proxy, &["-S3cret"]);
}

#[test]
fn backend_lines_around_the_final_reply_reach_the_client() {
    let name = "backend_lines_around_the_final_reply_reach_the_client";
    if !support::skip_unless_root(name) {
        return;
    }
    // Untagged data before the tagged OK, and data after it in the same segment.
    let backend = one_reply(
        GREETING,
        b"* CAPABILITY IMAP4rev1 IDLE MOVE\r\n* OK [ALERT] Mailbox almost full\r\n\
          A1 OK Logged in\r\n* 3 EXISTS\r\n",
    )
    .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination("backend", backend.port(), "", ""),
        "",
    );

    let mut c = connect(&proxy);
    c.send("A1 LOGIN zoe@example.org Lines-S3cret");
    assert_eq!(c.read_line(), "* CAPABILITY IMAP4rev1 IDLE MOVE");
    assert_eq!(c.read_line(), "* OK [ALERT] Mailbox almost full");
    assert_eq!(c.read_line(), "A1 OK Logged in");
    assert_eq!(c.read_line(), "* 3 EXISTS");
    assert_log_clean(&proxy, &["Lines-S3cret"]);
}

#[test]
fn backend_closing_instead_of_replying_is_unavailable() {
    let name = "backend_closing_instead_of_replying_is_unavailable";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = MockUpstream::new()
        .send(GREETING)
        .read_line()
        .close()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "",
        &destination("backend", backend.port(), "", ""),
        "",
    );

    let mut c = connect(&proxy);
    c.send("A1 LOGIN abe@example.org Closed-S3cret");
    assert_eq!(c.read_line(), UNAVAILABLE);
    // The client may go on.
    c.send("A2 NOOP");
    assert_eq!(c.read_line(), "A2 OK NOOP completed.");
    assert_log_clean(&proxy, &["Closed-S3cret"]);
}

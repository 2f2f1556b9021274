//! Script-driven tests of the submission machine. Every script runs twice, with each
//! `Send` delivered whole and then one byte at a time, and both runs must produce the
//! same transcript.

use std::sync::Arc;

use postern_config::model::{Protocol, TlsMode};

use super::command::MAX_LINE_BYTES;
use super::state::{Machine, Settings, MAX_HELD_BYTES};
use crate::proto::dialogue::{Action, Dialogue, LoginRequest, Outcome, Rejection};
use crate::proto::testkit::{self, fail, send, Scripted, Step, Transcript};

const EHLO_KEYWORDS: &str = "ENHANCEDSTATUSCODES 8BITMIME PIPELINING SIZE";

fn settings(tls: TlsMode, sasl: &str, plain_allowed: bool, max: u32) -> Arc<Settings> {
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    Arc::new(Settings {
        hostname: "mx.postern.test".into(),
        ehlo: words(EHLO_KEYWORDS),
        sasl: words(sasl),
        allow_plain_auth_without_tls: plain_allowed,
        banner: "at your service.".into(),
        tls,
        max_auth_attempts: max,
    })
}

/// Default SASL list on a STARTTLS listener, cleartext not allowed, 3 attempts.
fn starttls() -> Arc<Settings> {
    settings(TlsMode::Starttls, "PLAIN OAUTHBEARER XOAUTH2", false, 3)
}

/// Implicit TLS, SASL LOGIN listed.
fn implicit() -> Arc<Settings> {
    settings(
        TlsMode::Implicit,
        "PLAIN LOGIN OAUTHBEARER XOAUTH2",
        false,
        3,
    )
}

/// Logins show the client's EHLO name as the machine exposes it at that moment.
impl Scripted for Machine {
    fn login_event(&self, req: &LoginRequest, credentials: &str) -> String {
        assert!(req.tag.is_empty() && !req.is_login_command);
        let helo = Dialogue::helo(self);
        format!(
            "<login {} {credentials} helo={helo:?}>",
            req.mechanism.name()
        )
    }
}

fn drive(settings: &Arc<Settings>, steps: &[Step], bytewise: bool) -> (Transcript, Machine) {
    testkit::drive(Machine::new(settings.clone()), steps, bytewise)
}

/// Runs `steps` whole and byte by byte, asserts both agree, returns the transcript.
fn run(settings: &Arc<Settings>, steps: &[Step]) -> Transcript {
    testkit::run(|| Machine::new(settings.clone()), steps)
}

fn lines(t: &Transcript) -> Vec<&str> {
    t.lines()
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn greeting_and_settings_from_the_config_model() {
    let mut config = crate::testutil::config(Vec::new(), Vec::new());
    let listener = crate::testutil::listener("sub", Protocol::Submission, TlsMode::Starttls);
    let s = Settings::new(&config, &listener);
    assert_eq!(s.hostname, "[127.0.0.1]");
    assert_eq!(s.tls, TlsMode::Starttls);
    assert_eq!(s.max_auth_attempts, listener.max_auth_attempts);
    assert_eq!(s.sasl, config.capabilities.submission.auth.sasl);
    assert_eq!(s.ehlo, config.capabilities.submission.ehlo);
    let greeting = Machine::new(Arc::new(s.clone())).greeting();
    assert_eq!(
        String::from_utf8(greeting).expect("utf-8"),
        format!("220 [127.0.0.1] ESMTP {}\r\n", s.banner)
    );

    config.server.hostname = Some("mail.example.org".into());
    assert_eq!(
        Settings::new(&config, &listener).hostname,
        "mail.example.org"
    );
    config.server.hostname = None;
    let mut wildcard = listener.clone();
    wildcard.bind = vec!["0.0.0.0:587".parse().expect("addr")];
    assert_eq!(Settings::new(&config, &wildcard).hostname, "localhost");
    let mut v6 = listener;
    v6.bind = vec!["[2001:db8::25]:587".parse().expect("addr")];
    assert_eq!(Settings::new(&config, &v6).hostname, "[IPv6:2001:db8::25]");
}

#[test]
fn ehlo_before_and_after_starttls() {
    let t = run(
        &starttls(),
        &[
            send("EHLO client.example\r\n"),
            send("STARTTLS\r\n"),
            Step::Tls,
            send("ehlo client.example\r\nSTARTTLS\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "250-mx.postern.test at your service, [client.example]",
            "250-ENHANCEDSTATUSCODES",
            "250-8BITMIME",
            "250-PIPELINING",
            "250-SIZE",
            "250-STARTTLS",
            "250 AUTH OAUTHBEARER XOAUTH2",
            "220 2.0.0 Ready to start TLS",
            "<starttls>",
            "250-mx.postern.test at your service, [client.example]",
            "250-ENHANCEDSTATUSCODES",
            "250-8BITMIME",
            "250-PIPELINING",
            "250-SIZE",
            "250 AUTH PLAIN OAUTHBEARER XOAUTH2",
            "503 5.5.1 TLS already active",
        ]
    );
}

#[test]
fn lhlo_helo_noop_rset_quit() {
    let t = run(
        &implicit(),
        &[send(
            "LHLO c\r\nHELO c\r\nNOOP\r\nNOOP hello there\r\nRSET\r\nQUIT\r\nNOOP\r\n",
        )],
    );
    assert_eq!(
        lines(&t),
        [
            "250-mx.postern.test at your service, [c]",
            "250-ENHANCEDSTATUSCODES",
            "250-8BITMIME",
            "250-PIPELINING",
            "250-SIZE",
            "250 AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2",
            "250 mx.postern.test",
            "250 2.0.0 OK",
            "250 2.0.0 OK",
            "250 2.0.0 OK",
            "221 2.0.0 Bye",
            "<close>",
        ]
    );
}

#[test]
fn starttls_refusals() {
    let t = run(&implicit(), &[send("STARTTLS\r\n")]);
    assert_eq!(lines(&t), ["503 5.5.1 TLS already active"]);
    let plain = settings(TlsMode::Plain, "PLAIN", true, 3);
    let t = run(&plain, &[send("STARTTLS\r\nEHLO x\r\n")]);
    assert_eq!(t.lines[0], "454 4.7.0 TLS not available");
    assert!(!t.lines.iter().any(|l| l.contains("STARTTLS")), "{t:?}");
}

#[test]
fn starttls_with_pipelined_plaintext_is_refused() {
    // Whole: the plaintext is seen with the command. Byte by byte it arrives after the
    // 220, while the handshake is due; both close, so the runs differ by design.
    let steps = [send("STARTTLS\r\nAUTH PLAIN AGEAYg==\r\n")];
    let (whole, machine) = drive(&starttls(), &steps, false);
    assert_eq!(
        lines(&whole),
        [
            "421 4.7.0 Data pipelined after STARTTLS, closing connection",
            "<close>"
        ]
    );
    assert!(machine.is_closed());
    let (bytewise, machine) = drive(&starttls(), &steps, true);
    assert_eq!(
        lines(&bytewise),
        ["220 2.0.0 Ready to start TLS", "<starttls>", "<close>"]
    );
    assert!(machine.is_closed());
}

#[test]
fn auth_plain_with_initial_response_before_ehlo_and_pipelined_mail() {
    let ir = b64(b"\0alice@example.org\0secret");
    let t = run(
        &implicit(),
        &[
            send(format!(
                "AUTH PLAIN {ir}\r\nMAIL FROM:<alice@example.org>\r\n"
            )),
            send("RCPT TO:<bob@example.net>\r\n"),
            Step::Result(Outcome::Success),
            send("DATA\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "<login PLAIN \"\\0alice@example.org\\0secret\" helo=None>",
            "<splice>"
        ]
    );
    assert_eq!(
        t.forwarded,
        b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n"
    );
}

#[test]
fn auth_without_initial_response_and_the_ehlo_name() {
    let t = run(
        &implicit(),
        &[
            send("EHLO [192.0.2.1]\r\n"),
            send("AUTH XOAUTH2\r\n"),
            send(format!("{}\r\n", b64(b"user=a@b\x01auth=Bearer t\x01\x01"))),
            fail("535 5.7.8 nope\r\n"),
            send("EHLO bad+name\r\nAUTH OAUTHBEARER =\r\n"),
            Step::Result(Outcome::Success),
        ],
    );
    let l = lines(&t);
    assert_eq!(l[6], "334 ");
    assert_eq!(
        l[7],
        "<login XOAUTH2 \"user=a@b\\u{1}auth=Bearer t\\u{1}\\u{1}\" helo=Some(\"[192.0.2.1]\")>"
    );
    assert_eq!(l[8], "535 5.7.8 nope");
    assert_eq!(l[9], "250-mx.postern.test at your service, [bad+name]");
    // An EHLO name that is not a domain or address literal is not repeated.
    assert_eq!(l[15], "<login OAUTHBEARER \"\" helo=None>");
    assert_eq!(l[16], "<splice>");
}

#[test]
fn sasl_login_when_listed() {
    let t = run(
        &implicit(),
        &[
            send("AUTH LOGIN\r\n"),
            send(format!("{}\r\n", b64(b"alice"))),
            send(format!("{}\r\n", b64(b"pw"))),
            Step::Result(Outcome::Success),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "334 VXNlcm5hbWU6",
            "334 UGFzc3dvcmQ6",
            "<login LOGIN \"alice:pw\" helo=None>",
            "<splice>"
        ]
    );
    // With the username as initial response, only the password is asked for.
    let t = run(
        &implicit(),
        &[send(format!("AUTH LOGIN {}\r\n*\r\n", b64(b"alice")))],
    );
    assert_eq!(
        lines(&t),
        ["334 UGFzc3dvcmQ6", "501 5.0.0 Authentication cancelled"]
    );
}

#[test]
fn login_and_unknown_mechanisms_are_refused_and_counted() {
    let t = run(
        &starttls(),
        &[send(
            "AUTH LOGIN\r\nAUTH CRAM-MD5\r\nAUTH GSSAPI\r\nNOOP\r\n",
        )],
    );
    assert_eq!(
        lines(&t),
        [
            "504 5.5.4 Unrecognized authentication type",
            "504 5.5.4 Unrecognized authentication type",
            "504 5.5.4 Unrecognized authentication type",
            "421 4.7.0 Too many authentication failures, closing connection",
            "<close>",
        ]
    );
}

#[test]
fn cleartext_before_tls_is_refused_and_not_counted() {
    let ir = b64(b"\0a\0b");
    let t = run(
        &starttls(),
        &[send(format!(
            "AUTH PLAIN {ir}\r\nAUTH PLAIN\r\nAUTH PLAIN\r\nAUTH PLAIN\r\nNOOP\r\n"
        ))],
    );
    let l = lines(&t);
    assert_eq!(l.len(), 5);
    assert!(l[..4]
        .iter()
        .all(|x| *x == "538 5.7.11 Encryption required for requested authentication mechanism"));
    assert_eq!(l[4], "250 2.0.0 OK");

    let allowed = settings(TlsMode::Starttls, "PLAIN", true, 3);
    let t = run(&allowed, &[send(format!("AUTH PLAIN {ir}\r\n"))]);
    assert_eq!(lines(&t), ["<login PLAIN \"\\0a\\0b\" helo=None>"]);
    // OAuth is allowed before TLS.
    let t = run(&starttls(), &[send("AUTH OAUTHBEARER\r\n")]);
    assert_eq!(lines(&t), ["334 "]);
}

#[test]
fn bad_base64_cancel_and_syntax_errors() {
    let t = run(
        &settings(TlsMode::Implicit, "PLAIN", false, 10),
        &[
            send("AUTH PLAIN !!!\r\n"),
            send("AUTH PLAIN\r\n*\r\n"),
            send("AUTH PLAIN\r\n%%%\r\n"),
            send("\r\nAUTH\r\nEHLO\r\nAUTH PLAIN a b\r\nRSET now\r\n"),
            send("MAIL FROM:<a@b>\r\nDATA\r\nVRFY x\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "501 5.5.2 Cannot decode response",
            "334 ",
            "501 5.0.0 Authentication cancelled",
            "334 ",
            "501 5.5.2 Cannot decode response",
            "500 5.5.2 Syntax error",
            "500 5.5.2 Syntax error",
            "500 5.5.2 Syntax error",
            "500 5.5.2 Syntax error",
            "500 5.5.2 Syntax error",
            "503 5.5.1 Command not allowed here",
            "503 5.5.1 Command not allowed here",
            "503 5.5.1 Command not allowed here",
        ]
    );
}

#[test]
fn overlong_lines_are_skipped_and_answered() {
    let s = settings(TlsMode::Implicit, "PLAIN", false, 10);
    let long = "x".repeat(MAX_LINE_BYTES + 10);
    let t = run(
        &s,
        &[
            send(format!("NOOP {long}\r\nNOOP\r\n")),
            send(format!("AUTH PLAIN\r\n{long}\r\nNOOP\r\n")),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "500 5.5.2 Line too long",
            "250 2.0.0 OK",
            "334 ",
            "500 5.5.6 Authentication Exchange line is too long",
            "250 2.0.0 OK",
        ]
    );
}

#[test]
fn backend_failures_hidden_errors_and_the_attempt_limit() {
    let ir = b64(b"\0alice\0wrong");
    let auth = format!("AUTH PLAIN {ir}\r\n");
    let t = run(
        &implicit(),
        &[
            send(&auth),
            fail("535-5.7.8 first line\r\n535 5.7.8 Username and Password not accepted\r\n"),
            send(&auth),
            Step::Result(Outcome::Failure { reply: None }),
            send(&auth),
            Step::Reject(Rejection::Malformed),
        ],
    );
    let login = "<login PLAIN \"\\0alice\\0wrong\" helo=None>";
    assert_eq!(
        lines(&t),
        [
            login,
            "535-5.7.8 first line",
            "535 5.7.8 Username and Password not accepted",
            login,
            "535 5.7.8 Authentication failed.",
            login,
            "535 5.7.8 Authentication credentials invalid",
            "421 4.7.0 Too many authentication failures, closing connection",
            "<close>",
        ]
    );
}

#[test]
fn pipelined_commands_after_a_failed_login_are_answered() {
    let t = run(
        &implicit(),
        &[
            send(format!("AUTH PLAIN {}\r\nNOOP\r\n", b64(b"\0a\0b"))),
            send("MAIL FROM:<a@b>\r\n"),
            fail("535 5.7.8 no\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "<login PLAIN \"\\0a\\0b\" helo=None>",
            "535 5.7.8 no",
            "250 2.0.0 OK",
            "503 5.5.1 Command not allowed here",
        ]
    );
    assert!(t.forwarded.is_empty());
}

#[test]
fn unavailable_and_unsafe_identifiers_close() {
    let auth = send(format!("AUTH PLAIN {}\r\n", b64(b"\0a\0b")));
    for step in [
        Step::Result(Outcome::Unavailable),
        Step::Reject(Rejection::UnsafeIdentifier),
    ] {
        let (t, machine) = drive(&implicit(), &[auth.clone(), step], false);
        assert_eq!(lines(&t)[1..], ["421 4.3.0 backend unavailable", "<close>"]);
        assert!(machine.is_closed());
    }
}

#[test]
fn tls_forgets_the_ehlo_name_and_input_is_bounded_during_login() {
    let (t, machine) = drive(
        &starttls(),
        &[send("EHLO before.example\r\nSTARTTLS\r\n"), Step::Tls],
        false,
    );
    assert_eq!(t.lines.last().map(String::as_str), Some("<starttls>"));
    assert!(machine.is_tls());
    assert_eq!(Dialogue::helo(&machine), None);

    let mut machine = Machine::new(implicit());
    let actions = machine.on_bytes(format!("AUTH PLAIN {}\r\n", b64(b"\0a\0b")).as_bytes());
    assert!(matches!(actions.as_slice(), [Action::Login(_)]));
    assert!(machine.on_bytes(&vec![b'x'; MAX_HELD_BYTES]).is_empty());
    let actions = machine.on_bytes(b"y");
    assert!(matches!(actions.as_slice(), [Action::Close]));
    assert!(machine.is_closed());
    assert_eq!(machine.buffered_bytes(), 0);
}

#[test]
fn a_result_without_a_login_is_ignored() {
    let mut machine = Machine::new(implicit());
    assert!(machine.on_login_result(Outcome::Success).is_empty());
    assert!(machine.on_rejected(Rejection::Malformed).is_empty());
    assert!(machine.on_tls_established().is_empty());
    assert_eq!(machine.state_name(), "ready");
    assert_eq!(machine.failures(), 0);
}

//! Script-driven tests of the POP3 machine. Every script runs twice, with each `Send`
//! delivered whole and then one byte at a time, and both runs must produce the same
//! transcript.

use std::sync::Arc;

use postern_config::model::{Protocol, TlsMode};

use super::state::{Machine, Settings, MAX_HELD_BYTES};
use crate::proto::dialogue::{Dialogue, LoginRequest, Outcome, Rejection};
use crate::proto::grammar::MAX_LINE_BYTES;
use crate::proto::testkit::{self, fail, send, Scripted, Step, Transcript};

const FIXED: [&str; 8] = [
    "TOP",
    "RESP-CODES",
    "PIPELINING",
    "EXPIRE NEVER",
    "UIDL",
    "UTF8",
    "IMPLEMENTATION Stalwart Server",
    ".",
];

fn settings(tls: TlsMode, sasl: &str, plain_allowed: bool, max: u32) -> Arc<Settings> {
    Arc::new(Settings {
        sasl: sasl.split_whitespace().map(String::from).collect(),
        allow_plain_auth_without_tls: plain_allowed,
        banner: "postern POP3 ready.".into(),
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

impl Scripted for Machine {
    const STARTTLS: &'static str = "<stls>";

    fn login_event(&self, req: &LoginRequest, credentials: &str) -> String {
        assert!(req.tag.is_empty(), "POP3 has no tags");
        let kind = if req.is_login_command { " command" } else { "" };
        format!("<login {} {credentials}{kind}>", req.mechanism.name())
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

/// `+OK Capability list follows`, `head`, then the fixed lines.
fn capa(head: &[&'static str]) -> Vec<&'static str> {
    let mut out = vec!["+OK Capability list follows"];
    out.extend(head);
    out.extend(FIXED);
    out
}

#[test]
fn greeting_is_the_banner() {
    let machine = Machine::new(starttls());
    assert_eq!(machine.greeting(), b"+OK postern POP3 ready.\r\n");
    assert!(!machine.is_tls());
    assert!(Machine::new(implicit()).is_tls());
}

#[test]
fn settings_from_the_config_model() {
    let config = crate::testutil::config(Vec::new(), Vec::new());
    let listener = crate::testutil::listener("pop3", Protocol::Pop3, TlsMode::Starttls);
    let s = Settings::new(&config, &listener);
    assert_eq!(s.tls, TlsMode::Starttls);
    assert_eq!(s.max_auth_attempts, listener.max_auth_attempts);
    assert_eq!(s.sasl, config.capabilities.pop3.auth.sasl);
    assert_eq!(s.banner, config.capabilities.pop3.banner);
    assert_eq!(
        s.allow_plain_auth_without_tls,
        config.capabilities.pop3.auth.allow_plain_auth_without_tls
    );
}

#[test]
fn capa_per_listener_kind_and_after_stls() {
    let t = run(
        &starttls(),
        &[
            send("CAPA\r\n"),
            send("STLS\r\n"),
            Step::Tls,
            send("capa\r\nSTLS\r\n"),
        ],
    );
    let mut want = capa(&["SASL OAUTHBEARER XOAUTH2", "STLS"]);
    want.extend(["+OK Begin TLS negotiation", "<stls>"]);
    want.extend(capa(&["USER", "SASL PLAIN OAUTHBEARER XOAUTH2"]));
    want.push("-ERR STLS not available");
    assert_eq!(lines(&t), want);

    let t = run(&implicit(), &[send("CAPA\r\n")]);
    assert_eq!(
        lines(&t),
        capa(&["USER", "SASL PLAIN LOGIN OAUTHBEARER XOAUTH2"])
    );

    // Cleartext allowed on a plain listener: USER and PLAIN without TLS, no STLS.
    let plain = settings(TlsMode::Plain, "PLAIN OAUTHBEARER", true, 3);
    let t = run(&plain, &[send("CAPA\r\n")]);
    assert_eq!(lines(&t), capa(&["USER", "SASL PLAIN OAUTHBEARER"]));

    // Only cleartext mechanisms and no TLS: no USER, no SASL line at all.
    let bare = settings(TlsMode::Plain, "PLAIN LOGIN", false, 3);
    let t = run(&bare, &[send("CAPA\r\n"), send("AUTH\r\n")]);
    let mut want = capa(&[]);
    want.extend(["+OK", "."]);
    assert_eq!(lines(&t), want);
}

#[test]
fn simple_commands() {
    let t = run(
        &starttls(),
        &[send("NOOP\r\nutf8\r\nAPOP alice c4c9334bac560ecc979e58001b3e22fb\r\nSTAT\r\n\r\nhello world\r\nQUIT\r\nNOOP\r\n")],
    );
    assert_eq!(
        lines(&t),
        [
            "+OK",
            "+OK",
            "-ERR APOP not supported",
            "-ERR unknown command",
            "-ERR unknown command",
            "-ERR unknown command",
            "+OK Bye",
            "<close>",
        ]
    );
    let (_, machine) = drive(&starttls(), &[send("APOP a b\r\nRETR 1\r\n")], false);
    assert_eq!(
        machine.failures(),
        0,
        "APOP and unknown commands are not counted"
    );
}

#[test]
fn auth_without_argument_lists_the_mechanisms() {
    let t = run(
        &starttls(),
        &[
            send("AUTH\r\n"),
            send("STLS\r\n"),
            Step::Tls,
            send("AUTH\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "+OK",
            "OAUTHBEARER",
            "XOAUTH2",
            ".",
            "+OK Begin TLS negotiation",
            "<stls>",
            "+OK",
            "PLAIN",
            "OAUTHBEARER",
            "XOAUTH2",
            ".",
        ]
    );
}

#[test]
fn bare_lf_line_ends_are_accepted() {
    let t = run(&implicit(), &[send("NOOP\nUSER alice\nPASS secret\n")]);
    assert_eq!(
        lines(&t),
        ["+OK", "+OK", "<login LOGIN \"alice:secret\" command>"]
    );
}

#[test]
fn user_pass_over_tls_then_failure_then_success() {
    let t = run(
        &implicit(),
        &[
            send("USER alice@example.org\r\n"),
            send("PASS wrong one\r\n"),
            fail("-ERR [AUTH] Authentication failed.\r\n"),
            // USER was used up by the failed PASS.
            send("PASS again\r\n"),
            send("user alice@example.org\r\npass right\r\n"),
            Step::Result(Outcome::Success),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "+OK",
            "<login LOGIN \"alice@example.org:wrong one\" command>",
            "-ERR [AUTH] Authentication failed.",
            "-ERR USER required before PASS",
            "+OK",
            "<login LOGIN \"alice@example.org:right\" command>",
            "<splice>",
        ]
    );
    let (_, machine) = drive(
        &implicit(),
        &[send("USER a\r\nPASS b\r\n"), fail("-ERR no\r\n")],
        false,
    );
    assert_eq!(machine.failures(), 1, "a backend failure is counted");
}

#[test]
fn user_without_argument_and_pass_without_user() {
    let t = run(&implicit(), &[send("USER\r\nPASS x\r\nUSER \r\n")]);
    assert_eq!(
        lines(&t),
        [
            "-ERR USER requires an argument",
            "-ERR USER required before PASS",
            "-ERR USER requires an argument",
        ]
    );
}

#[test]
fn cleartext_before_tls_is_refused_and_not_counted() {
    let steps = [
        send("USER alice\r\n"),
        send("PASS secret\r\n"),
        send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
        send("AUTH LOGIN\r\n"),
        send("NOOP\r\n"),
    ];
    let s = settings(TlsMode::Starttls, "PLAIN LOGIN OAUTHBEARER", false, 1);
    let t = run(&s, &steps);
    assert_eq!(
        lines(&t),
        [
            "-ERR cleartext authentication requires TLS",
            "-ERR cleartext authentication requires TLS",
            "-ERR cleartext authentication requires TLS",
            "-ERR cleartext authentication requires TLS",
            "+OK",
        ]
    );
    let (_, machine) = drive(&s, &steps, false);
    assert_eq!(machine.failures(), 0);
    assert!(!machine.is_closed());
}

#[test]
fn user_pass_allowed_without_tls_when_configured() {
    let s = settings(TlsMode::Plain, "PLAIN", true, 3);
    let t = run(&s, &[send("USER alice\r\nPASS secret\r\n")]);
    assert_eq!(lines(&t), ["+OK", "<login LOGIN \"alice:secret\" command>"]);
}

#[test]
fn stls_forgets_user_and_partial_input() {
    let t = run(
        &settings(TlsMode::Starttls, "PLAIN", true, 3),
        &[
            send("USER alice\r\nSTLS\r\n"),
            Step::Tls,
            send("PASS secret\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "+OK",
            "+OK Begin TLS negotiation",
            "<stls>",
            "-ERR USER required before PASS",
        ]
    );
}

#[test]
fn stls_unavailable_on_implicit_and_plain_listeners() {
    for s in [implicit(), settings(TlsMode::Plain, "PLAIN", true, 3)] {
        let t = run(&s, &[send("STLS\r\n")]);
        assert_eq!(lines(&t), ["-ERR STLS not available"]);
    }
}

#[test]
fn stls_with_pipelined_plaintext_closes() {
    // Whole: the plaintext is seen with the command. Byte by byte it arrives after the
    // +OK, while the handshake is due; both close, so the runs differ by design.
    let steps = [send("STLS\r\nUSER alice\r\n")];
    let (whole, machine) = drive(&starttls(), &steps, false);
    assert_eq!(lines(&whole), ["-ERR data pipelined after STLS", "<close>"]);
    assert!(machine.is_closed());
    let (bytewise, machine) = drive(&starttls(), &steps, true);
    assert_eq!(
        lines(&bytewise),
        ["+OK Begin TLS negotiation", "<stls>", "<close>"]
    );
    assert!(machine.is_closed());
}

#[test]
fn auth_plain_with_and_without_initial_response() {
    let t = run(
        &implicit(),
        &[
            send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
            fail("-ERR nope\r\n"),
            send("auth plain\r\n"),
            send("AGFsaWNlAHNlY3JldA\r\n"),
            fail("-ERR nope\r\n"),
            send("AUTH PLAIN =\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "<login PLAIN \"\\0alice\\0secret\">",
            "-ERR nope",
            "+ ",
            "<login PLAIN \"\\0alice\\0secret\">",
            "-ERR nope",
            "<login PLAIN \"\">",
        ]
    );
}

#[test]
fn auth_login_prompts_with_and_without_initial_response() {
    let t = run(
        &implicit(),
        &[
            send("AUTH LOGIN\r\n"),
            send("YWxpY2U=\r\n"),
            send("c2VjcmV0\r\n"),
            fail("-ERR no\r\n"),
            send("AUTH LOGIN YWxpY2U=\r\n"),
            send("c2VjcmV0\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "+ VXNlcm5hbWU6",
            "+ UGFzc3dvcmQ6",
            "<login LOGIN \"alice:secret\">",
            "-ERR no",
            "+ UGFzc3dvcmQ6",
            "<login LOGIN \"alice:secret\">",
        ]
    );
}

#[test]
fn auth_login_is_refused_unless_listed() {
    let t = run(
        &starttls(),
        &[send("STLS\r\n"), Step::Tls, send("AUTH LOGIN\r\n")],
    );
    assert_eq!(
        lines(&t),
        [
            "+OK Begin TLS negotiation",
            "<stls>",
            "-ERR unsupported mechanism",
        ]
    );
}

#[test]
fn oauth_mechanisms_before_tls_with_and_without_initial_response() {
    // n,,\x01auth=Bearer tok\x01\x01
    let bearer = "biwsAWF1dGg9QmVhcmVyIHRvawEB";
    // user=u\x01auth=Bearer tok\x01\x01
    let xoauth2 = "dXNlcj11AWF1dGg9QmVhcmVyIHRvawEB";
    let t = run(
        &starttls(),
        &[
            send(format!("AUTH OAUTHBEARER {bearer}\r\n")),
            fail("-ERR bad token\r\n"),
            send("AUTH OAUTHBEARER\r\n"),
            send(format!("{bearer}\r\n")),
            fail("-ERR bad token\r\n"),
            send(format!("AUTH XOAUTH2 {xoauth2}\r\n")),
            Step::Result(Outcome::Unavailable),
            send("auth xoauth2\r\n"),
            send(format!("{xoauth2}\r\n")),
            Step::Result(Outcome::Success),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "<login OAUTHBEARER \"n,,\\u{1}auth=Bearer tok\\u{1}\\u{1}\">",
            "-ERR bad token",
            "+ ",
            "<login OAUTHBEARER \"n,,\\u{1}auth=Bearer tok\\u{1}\\u{1}\">",
            "-ERR bad token",
            "<login XOAUTH2 \"user=u\\u{1}auth=Bearer tok\\u{1}\\u{1}\">",
            "-ERR backend unavailable",
            "+ ",
            "<login XOAUTH2 \"user=u\\u{1}auth=Bearer tok\\u{1}\\u{1}\">",
            "<splice>",
        ]
    );
}

#[test]
fn cancel_is_err_and_not_counted() {
    let s = settings(TlsMode::Implicit, "PLAIN LOGIN", false, 1);
    let t = run(
        &s,
        &[
            send("AUTH PLAIN\r\n*\r\n"),
            send("AUTH LOGIN\r\nYWxpY2U=\r\n*\r\n"),
            send("NOOP\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "+ ",
            "-ERR authentication cancelled",
            "+ VXNlcm5hbWU6",
            "+ UGFzc3dvcmQ6",
            "-ERR authentication cancelled",
            "+OK",
        ]
    );
}

#[test]
fn counted_refusals_close_at_max_auth_attempts() {
    let s = settings(TlsMode::Implicit, "PLAIN", false, 3);
    let t = run(
        &s,
        &[
            send("AUTH CRAM-MD5\r\n"),
            send("AUTH PLAIN !!!\r\n"),
            send("AUTH PLAIN\r\n%%%\r\n"),
            send("NOOP\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "-ERR unsupported mechanism",
            "-ERR invalid base64",
            "+ ",
            "-ERR invalid base64",
            "<close>",
        ]
    );
}

#[test]
fn malformed_and_backend_failures_count_toward_the_limit() {
    let s = settings(TlsMode::Implicit, "PLAIN", false, 2);
    let t = run(
        &s,
        &[
            send("USER alice\r\nPASS x\r\n"),
            Step::Reject(Rejection::Malformed),
            send("USER alice\r\nPASS y\r\n"),
            Step::Result(Outcome::Failure { reply: None }),
            send("NOOP\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "+OK",
            "<login LOGIN \"alice:x\" command>",
            "-ERR malformed credentials",
            "+OK",
            "<login LOGIN \"alice:y\" command>",
            "-ERR Authentication failed.",
            "<close>",
        ]
    );
}

#[test]
fn unavailable_is_not_counted_and_unsafe_identifier_closes() {
    let s = settings(TlsMode::Implicit, "PLAIN", false, 1);
    let t = run(
        &s,
        &[
            send("USER a\r\nPASS b\r\n"),
            Step::Result(Outcome::Unavailable),
            send("USER a b\r\nPASS c\r\n"),
            Step::Reject(Rejection::UnsafeIdentifier),
            send("NOOP\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "+OK",
            "<login LOGIN \"a:b\" command>",
            "-ERR backend unavailable",
            "+OK",
            "<login LOGIN \"a b:c\" command>",
            "-ERR backend unavailable",
            "<close>",
        ]
    );
}

#[test]
fn auth_syntax_and_unknown_mechanisms() {
    let s = settings(TlsMode::Implicit, "PLAIN", false, 10);
    let t = run(
        &s,
        &[send("AUTH PLAIN a b\r\nAUTH GSSAPI\r\nAUTH pl\u{e4}in\r\n")],
    );
    assert_eq!(
        lines(&t),
        [
            "-ERR invalid AUTH arguments",
            "-ERR unsupported mechanism",
            "-ERR unsupported mechanism",
        ]
    );
    let (_, machine) = drive(&s, &[send("AUTH PLAIN a b\r\nAUTH X\r\n")], false);
    assert_eq!(machine.failures(), 1, "only the unknown mechanism counts");
}

#[test]
fn pipelined_commands_go_to_the_backend_on_success() {
    let t = run(
        &implicit(),
        &[
            send("USER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\n"),
            send("RETR 1\r\n"),
            Step::Result(Outcome::Success),
        ],
    );
    assert_eq!(
        lines(&t),
        ["+OK", "<login LOGIN \"alice:secret\" command>", "<splice>"]
    );
    assert_eq!(t.forwarded, b"STAT\r\nLIST\r\nRETR 1\r\n");
}

#[test]
fn pipelined_commands_are_answered_here_on_failure() {
    let t = run(
        &implicit(),
        &[
            send("AUTH PLAIN AGEAYg==\r\nSTAT\r\nUSER alice\r\nPASS pw\r\nLIST\r\n"),
            fail("-ERR [AUTH] nope\r\n"),
            Step::Result(Outcome::Success),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "<login PLAIN \"\\0a\\0b\">",
            "-ERR [AUTH] nope",
            "-ERR unknown command",
            "+OK",
            "<login LOGIN \"alice:pw\" command>",
            "<splice>",
        ]
    );
    assert_eq!(t.forwarded, b"LIST\r\n");
}

#[test]
fn too_much_data_during_a_login_closes() {
    let mut steps = vec![send("USER alice\r\nPASS secret\r\n")];
    steps.push(send(vec![b'x'; MAX_HELD_BYTES + 1]));
    let (t, machine) = drive(&implicit(), &steps, false);
    assert_eq!(
        lines(&t),
        ["+OK", "<login LOGIN \"alice:secret\" command>", "<close>"]
    );
    assert!(machine.is_closed());
    assert_eq!(machine.buffered_bytes(), 0);
}

#[test]
fn overlong_lines_get_an_error_and_the_stream_stays_in_sync() {
    let s = settings(TlsMode::Implicit, "PLAIN", false, 10);
    let mut long = b"USER ".to_vec();
    long.extend(vec![b'u'; MAX_LINE_BYTES]);
    long.extend(b"\r\nNOOP\r\nAUTH PLAIN\r\n");
    // SASL responses may be longer than a command, but not without bound.
    long.extend(vec![b'A'; MAX_HELD_BYTES]);
    long.extend(b"\r\nCAPA\r\n");
    let t = run(&s, &[send(&long)]);
    let mut want = vec!["-ERR line too long", "+OK", "+ ", "-ERR line too long"];
    want.extend(capa(&["USER", "SASL PLAIN"]));
    assert_eq!(lines(&t), want);
    let (_, machine) = drive(&s, &[send(&long)], false);
    assert_eq!(machine.failures(), 2);
    assert!(machine.buffered_bytes() < MAX_LINE_BYTES);
}

#[test]
fn results_without_a_pending_login_are_ignored() {
    let mut machine = Machine::new(implicit());
    assert!(machine.on_login_result(Outcome::Success).is_empty());
    assert!(machine.on_rejected(Rejection::Malformed).is_empty());
    assert!(machine.on_tls_established().is_empty());
    assert_eq!(machine.state_name(), "authorization");
}

#[test]
fn nothing_is_read_after_the_splice_or_close() {
    let mut machine = Machine::new(implicit());
    machine.on_bytes(b"USER a\r\nPASS b\r\n");
    machine.on_login_result(Outcome::Success);
    assert_eq!(machine.state_name(), "authenticated");
    assert!(machine.on_bytes(b"STAT\r\n").is_empty());
    let mut machine = Machine::new(implicit());
    machine.on_bytes(b"QUIT\r\n");
    assert!(machine.is_closed());
    assert!(machine.on_bytes(b"NOOP\r\n").is_empty());
}

#[test]
fn debug_output_hides_credentials() {
    let mut machine = Machine::new(implicit());
    let actions = machine.on_bytes(b"USER alice\r\nPASS hunter2-secret\r\n");
    let text = format!("{actions:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("alice"), "{text}");
}

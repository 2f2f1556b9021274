//! Script-driven tests of the ManageSieve machine. Every script runs twice, with each
//! `Send` delivered whole and then one byte at a time, and both runs must produce the
//! same transcript.

use std::sync::Arc;

use postern_config::model::{Protocol, TlsMode};

use super::state::{Machine, Settings, MAX_HELD_BYTES};
use crate::proto::dialogue::{Dialogue, LoginRequest, Outcome, Rejection};
use crate::proto::grammar::Limits;
use crate::proto::testkit::{self, fail, send, Scripted, Step, Transcript};

const IMPLEMENTATION: &str = "postern ManageSieve";
const SIEVE: &str = "fileinto reject envelope vacation";

fn settings(tls: TlsMode, sasl: &str, plain_allowed: bool, max: u32) -> Arc<Settings> {
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    Arc::new(Settings {
        implementation: IMPLEMENTATION.into(),
        sieve: words(SIEVE),
        sasl: words(sasl),
        allow_plain_auth_without_tls: plain_allowed,
        tls,
        max_auth_attempts: max,
        limits: Limits::PRE_AUTH,
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
    fn login_event(&self, req: &LoginRequest, credentials: &str) -> String {
        assert!(req.tag.is_empty() && !req.is_login_command);
        format!("<login {} {credentials}>", req.mechanism.name())
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

/// The capability response as lines, with `sasl` and STARTTLS as given.
fn capability_lines(sasl: &str, starttls: bool) -> Vec<String> {
    let mut out = vec![
        format!("\"IMPLEMENTATION\" \"{IMPLEMENTATION}\""),
        "\"VERSION\" \"1.0\"".to_string(),
        format!("\"SASL\" \"{sasl}\""),
        format!("\"SIEVE\" \"{SIEVE}\""),
    ];
    if starttls {
        out.push("\"STARTTLS\"".into());
    }
    out.push(format!("OK \"{IMPLEMENTATION} ready.\""));
    out
}

fn greeting(settings: &Arc<Settings>) -> String {
    String::from_utf8(Machine::new(settings.clone()).greeting()).expect("utf-8")
}

fn block(sasl: &str, starttls: bool) -> String {
    let mut s = capability_lines(sasl, starttls).join("\r\n");
    s.push_str("\r\n");
    s
}

#[test]
fn greetings_per_listener_kind() {
    assert_eq!(greeting(&starttls()), block("OAUTHBEARER XOAUTH2", true));
    assert_eq!(
        greeting(&implicit()),
        block("PLAIN LOGIN OAUTHBEARER XOAUTH2", false)
    );
    let plain_allowed = settings(TlsMode::Starttls, "PLAIN OAUTHBEARER", true, 3);
    assert_eq!(greeting(&plain_allowed), block("PLAIN OAUTHBEARER", true));
    let plain_listener = settings(TlsMode::Plain, "PLAIN LOGIN XOAUTH2", false, 3);
    assert_eq!(greeting(&plain_listener), block("XOAUTH2", false));
}

#[test]
fn settings_from_the_config_model() {
    let config = crate::testutil::config(Vec::new(), Vec::new());
    let listener = crate::testutil::listener("sieve", Protocol::ManageSieve, TlsMode::Starttls);
    let s = Settings::new(&config, &listener);
    let caps = &config.capabilities.managesieve;
    assert_eq!(s.tls, TlsMode::Starttls);
    assert_eq!(s.max_auth_attempts, listener.max_auth_attempts);
    assert_eq!(s.sasl, caps.auth.sasl);
    assert_eq!(s.sieve, caps.sieve);
    assert_eq!(s.implementation, caps.implementation);
    assert_eq!(s.limits, Limits::PRE_AUTH);
    let greeting = String::from_utf8(Machine::new(Arc::new(s)).greeting()).expect("utf-8");
    assert!(greeting.contains("\"STARTTLS\"\r\nOK \""), "{greeting}");
}

#[test]
fn capability_noop_logout() {
    let t = run(
        &starttls(),
        &[send(
            "CAPABILITY\r\nnoop\r\nNOOP \"STARTTLS-SYNC-42\"\r\nNOOP {2+}\r\nab\r\nLOGOUT\r\nNOOP\r\n",
        )],
    );
    let mut expected = capability_lines("OAUTHBEARER XOAUTH2", true);
    expected.extend(
        [
            "OK \"NOOP completed.\"",
            "OK (TAG \"STARTTLS-SYNC-42\") \"Done\"",
            "OK (TAG \"ab\") \"Done\"",
            "OK \"Logout completed.\"",
            "<close>",
        ]
        .map(String::from),
    );
    assert_eq!(t.lines, expected);
}

#[test]
fn other_commands_are_not_allowed_and_not_counted() {
    let s = settings(TlsMode::Starttls, "PLAIN", false, 1);
    let t = run(
        &s,
        &[send(
            "LISTSCRIPTS\r\nPUTSCRIPT \"x\" {6+}\r\nkeep;\n\r\nHAVESPACE \"x\" 10\r\nNOOP\r\n",
        )],
    );
    assert_eq!(
        lines(&t),
        [
            "NO \"Command not allowed in this state.\"",
            "NO \"Command not allowed in this state.\"",
            "NO \"Command not allowed in this state.\"",
            "OK \"NOOP completed.\"",
        ]
    );
}

#[test]
fn starttls_then_capabilities_are_sent_again() {
    let t = run(
        &starttls(),
        &[
            send("STARTTLS\r\n"),
            Step::Tls,
            send("CAPABILITY\r\nSTARTTLS\r\n"),
        ],
    );
    let after = capability_lines("PLAIN OAUTHBEARER XOAUTH2", false);
    let mut expected = vec![
        "OK \"Begin TLS negotiation now.\"".to_string(),
        "<starttls>".into(),
    ];
    expected.extend(after.iter().cloned());
    expected.extend(after.iter().cloned());
    expected.push("NO \"STARTTLS not available\"".into());
    assert_eq!(t.lines, expected);
}

#[test]
fn starttls_unavailable_on_implicit_and_plain_listeners() {
    for s in [implicit(), settings(TlsMode::Plain, "PLAIN", true, 3)] {
        let t = run(&s, &[send("STARTTLS\r\n")]);
        assert_eq!(lines(&t), ["NO \"STARTTLS not available\""]);
    }
}

#[test]
fn starttls_with_pipelined_plaintext_is_refused() {
    // Whole: the plaintext is seen with the command. Byte by byte it arrives after the
    // OK, while the handshake is due; both close, so the runs differ by design.
    let steps = [send("STARTTLS\r\nAUTHENTICATE \"PLAIN\" \"AGEAYg==\"\r\n")];
    let (whole, machine) = drive(&starttls(), &steps, false);
    assert_eq!(
        lines(&whole),
        [
            "NO \"Data pipelined after STARTTLS.\"",
            "BYE \"Closing connection.\"",
            "<close>"
        ]
    );
    assert!(machine.is_closed());
    let (bytewise, machine) = drive(&starttls(), &steps, true);
    assert_eq!(
        lines(&bytewise),
        ["OK \"Begin TLS negotiation now.\"", "<starttls>", "<close>"]
    );
    assert!(machine.is_closed());
}

#[test]
fn cleartext_before_tls_is_encrypt_needed_and_not_counted() {
    let t = run(
        &starttls(),
        &[send(
            "AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHNlY3JldA==\"\r\nAUTHENTICATE \"PLAIN\"\r\n\
             AUTHENTICATE \"PLAIN\" {20+}\r\nAGFsaWNlAHNlY3JldA==\r\nNOOP\r\n",
        )],
    );
    let refusal = "NO (ENCRYPT-NEEDED) \"Cleartext authentication requires TLS.\"";
    assert_eq!(
        lines(&t),
        [refusal, refusal, refusal, "OK \"NOOP completed.\""]
    );
    let (_, machine) = drive(&starttls(), &[send("AUTHENTICATE \"PLAIN\"\r\n")], false);
    assert_eq!(machine.failures(), 0);
}

#[test]
fn plain_allowed_without_tls() {
    let s = settings(TlsMode::Plain, "PLAIN", true, 3);
    let t = run(
        &s,
        &[send("AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHNlY3JldA==\"\r\n")],
    );
    assert_eq!(lines(&t), ["<login PLAIN \"\\0alice\\0secret\">"]);
}

#[test]
fn authenticate_with_initial_response_quoted_and_literal() {
    let t = run(
        &implicit(),
        &[
            send("AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHNlY3JldA==\"\r\n"),
            fail("NO \"Authentication failed\"\r\n"),
            // sieve-connect's form: a non-synchronising literal.
            send("Authenticate \"PLAIN\" {20+}\r\nAGFsaWNlAHNlY3JldA==\r\n"),
            Step::Result(Outcome::Success),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "<login PLAIN \"\\0alice\\0secret\">",
            "NO \"Authentication failed\"",
            "<login PLAIN \"\\0alice\\0secret\">",
            "<splice>",
        ]
    );
}

#[test]
fn authenticate_with_an_empty_challenge() {
    let t = run(
        &implicit(),
        &[
            send("AUTHENTICATE \"PLAIN\"\r\n"),
            send("\"AGFsaWNlAHNlY3JldA==\"\r\n"),
            fail("NO \"nope\"\r\n"),
            send("AUTHENTICATE \"XOAUTH2\"\r\n"),
            send("{4+}\r\neA==\r\n"),
            fail("NO \"nope\"\r\n"),
            send("AUTHENTICATE \"OAUTHBEARER\"\r\n"),
            send("AGFsaWNlAHNlY3JldA==\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "{0}",
            "",
            "<login PLAIN \"\\0alice\\0secret\">",
            "NO \"nope\"",
            "{0}",
            "",
            "<login XOAUTH2 \"x\">",
            "NO \"nope\"",
            "{0}",
            "",
            "<login OAUTHBEARER \"\\0alice\\0secret\">",
        ]
    );
}

#[test]
fn sasl_login_prompts_as_quoted_strings() {
    let t = run(
        &implicit(),
        &[
            send("AUTHENTICATE \"LOGIN\"\r\n"),
            send("\"YWxpY2U=\"\r\n"),
            send("{8+}\r\nc2VjcmV0\r\n"),
            fail("NO \"nope\"\r\n"),
            send("AUTHENTICATE \"LOGIN\" \"YWxpY2U=\"\r\n\"c2VjcmV0\"\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "\"VXNlcm5hbWU6\"",
            "\"UGFzc3dvcmQ6\"",
            "<login LOGIN \"alice:secret\">",
            "NO \"nope\"",
            "\"UGFzc3dvcmQ6\"",
            "<login LOGIN \"alice:secret\">",
        ]
    );
}

#[test]
fn login_not_listed_is_unsupported() {
    let t = run(&starttls(), &[send("AUTHENTICATE \"LOGIN\"\r\n")]);
    assert_eq!(lines(&t), ["NO \"Unsupported authentication mechanism.\""]);
}

#[test]
fn cancel_is_not_counted() {
    let s = settings(TlsMode::Implicit, "PLAIN", false, 1);
    let t = run(
        &s,
        &[send(
            "AUTHENTICATE \"PLAIN\"\r\n\"*\"\r\nAUTHENTICATE \"PLAIN\"\r\n*\r\nNOOP\r\n",
        )],
    );
    assert_eq!(
        lines(&t),
        [
            "{0}",
            "",
            "NO \"Authentication cancelled.\"",
            "{0}",
            "",
            "NO \"Authentication cancelled.\"",
            "OK \"NOOP completed.\"",
        ]
    );
}

#[test]
fn counted_failures_end_with_bye() {
    let t = run(
        &implicit(),
        &[
            send("AUTHENTICATE \"CRAM-MD5\"\r\n"),
            send("AUTHENTICATE \"PLAIN\" \"!!!\"\r\n"),
            send("AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHNlY3JldA==\"\r\n"),
            fail("NO \"wrong\"\r\n"),
            send("NOOP\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "NO \"Unsupported authentication mechanism.\"",
            "NO \"Invalid base64 data.\"",
            "<login PLAIN \"\\0alice\\0secret\">",
            "NO \"wrong\"",
            "BYE \"Too many authentication failures.\"",
            "<close>",
        ]
    );
}

#[test]
fn parse_errors_are_counted() {
    let s = settings(TlsMode::Implicit, "PLAIN", false, 2);
    let t = run(&s, &[send("AUTHENTICATE\r\n\"x\r\nNOOP\r\n")]);
    assert_eq!(
        lines(&t),
        [
            "NO \"Missing argument.\"",
            "NO \"Syntax error.\"",
            "BYE \"Too many authentication failures.\"",
            "<close>",
        ]
    );
}

#[test]
fn oversized_input_gets_a_reply_and_the_stream_stays_in_sync() {
    let s = settings(TlsMode::Implicit, "PLAIN", false, 5);
    let mut input = b"AUTHENTICATE \"PLAIN\" \"".to_vec();
    input.extend(std::iter::repeat_n(b'A', 9000));
    input.extend(b"\"\r\nAUTHENTICATE \"PLAIN\" {70000+}\r\n");
    input.extend(b"x\n".repeat(35_000));
    input.extend(b"\r\nAUTHENTICATE \"PLAIN\" {70000}\r\n");
    input.extend(b"x\n".repeat(35_000));
    input.extend(b"\r\nNOOP\r\n");
    let t = run(&s, &[send(&input)]);
    assert_eq!(
        lines(&t),
        [
            "NO \"Line too long.\"",
            "NO \"Literal too large.\"",
            "NO \"Literal too large.\"",
            "OK \"NOOP completed.\"",
        ]
    );
}

#[test]
fn malformed_and_unsafe_rejections() {
    let t = run(
        &implicit(),
        &[
            send("AUTHENTICATE \"PLAIN\" \"AGEAYgpj\"\r\n"),
            Step::Reject(Rejection::Malformed),
            send("AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHNlY3JldA==\"\r\n"),
            Step::Reject(Rejection::UnsafeIdentifier),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "<login PLAIN \"\\0a\\0b\\nc\">",
            "NO \"Malformed credentials.\"",
            "<login PLAIN \"\\0alice\\0secret\">",
            "NO \"backend unavailable\"",
            "<close>",
        ]
    );
}

#[test]
fn unavailable_and_hidden_failures() {
    let t = run(
        &implicit(),
        &[
            send("AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHNlY3JldA==\"\r\n"),
            Step::Result(Outcome::Unavailable),
            send("AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHNlY3JldA==\"\r\n"),
            Step::Result(Outcome::Failure { reply: None }),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "<login PLAIN \"\\0alice\\0secret\">",
            "NO \"backend unavailable\"",
            "<login PLAIN \"\\0alice\\0secret\">",
            "NO \"Authentication failed.\"",
        ]
    );
}

#[test]
fn pipelined_bytes_follow_a_successful_login() {
    let t = run(
        &implicit(),
        &[
            send("AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHNlY3JldA==\"\r\nLISTSCRIPTS\r\n"),
            send("GETSCRIPT \"x\"\r\n"),
            Step::Result(Outcome::Success),
            send("ignored: the caller relays now"),
        ],
    );
    assert_eq!(
        lines(&t),
        ["<login PLAIN \"\\0alice\\0secret\">", "<splice>"]
    );
    assert_eq!(t.forwarded, b"LISTSCRIPTS\r\nGETSCRIPT \"x\"\r\n");
}

#[test]
fn pipelined_bytes_are_answered_after_a_failure() {
    let t = run(
        &implicit(),
        &[
            send("AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHNlY3JldA==\"\r\nNOOP\r\n"),
            fail("NO \"nope\"\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "<login PLAIN \"\\0alice\\0secret\">",
            "NO \"nope\"",
            "OK \"NOOP completed.\"",
        ]
    );
}

#[test]
fn too_much_data_during_a_login_closes() {
    let (t, machine) = drive(
        &implicit(),
        &[
            send("AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHNlY3JldA==\"\r\n"),
            send(vec![b'x'; MAX_HELD_BYTES + 1]),
        ],
        false,
    );
    assert_eq!(
        lines(&t),
        ["<login PLAIN \"\\0alice\\0secret\">", "<close>"]
    );
    assert!(machine.is_closed());
}

#[test]
fn plaintext_while_awaiting_tls_closes() {
    let (t, machine) = drive(
        &starttls(),
        &[send("STARTTLS\r\n"), send("NOOP\r\n")],
        false,
    );
    assert_eq!(
        lines(&t),
        ["OK \"Begin TLS negotiation now.\"", "<starttls>", "<close>"]
    );
    assert!(machine.is_closed());
}

#[test]
fn results_without_a_pending_login_are_ignored() {
    let mut machine = Machine::new(implicit());
    assert!(machine.on_login_result(Outcome::Success).is_empty());
    assert!(machine.on_rejected(Rejection::Malformed).is_empty());
    assert!(machine.on_tls_established().is_empty());
    assert_eq!(machine.state_name(), "not_authenticated");
}

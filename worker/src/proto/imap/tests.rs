//! Script-driven tests of the IMAP machine. Every script runs twice, with each `Send`
//! delivered whole and then one byte at a time, and both runs must produce the same
//! transcript.

use std::sync::Arc;

use postern_config::model::{Protocol, TlsMode};

use super::state::{Machine, Settings, MAX_HELD_BYTES};
use crate::proto::dialogue::{Action, Dialogue, LoginRequest, Outcome, Rejection};
use crate::proto::grammar::Limits;
use crate::proto::testkit::{self, fail, send, Scripted, Step, Transcript};

const ADVERTISE: &str = "IMAP4rev2 IMAP4rev1 ENABLE SASL-IR LITERAL+ ID UTF8=ACCEPT JMAPACCESS";

fn settings(tls: TlsMode, sasl: &str, plain_allowed: bool, max: u32) -> Arc<Settings> {
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    Arc::new(Settings {
        advertise: words(ADVERTISE),
        sasl: words(sasl),
        allow_plain_auth_without_tls: plain_allowed,
        banner: "postern ready.".into(),
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
        let kind = if req.is_login_command { " command" } else { "" };
        format!(
            "<login {} {} {credentials}{kind}>",
            req.tag,
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

fn greeting(settings: &Arc<Settings>) -> String {
    String::from_utf8(Machine::new(settings.clone()).greeting()).expect("utf-8")
}

#[test]
fn greetings_per_listener_kind() {
    assert_eq!(
        greeting(&starttls()),
        format!(
            "* OK [CAPABILITY {ADVERTISE} AUTH=OAUTHBEARER AUTH=XOAUTH2 LOGINDISABLED STARTTLS] \
             postern ready.\r\n"
        )
    );
    assert_eq!(
        greeting(&implicit()),
        format!(
            "* OK [CAPABILITY {ADVERTISE} AUTH=PLAIN AUTH=LOGIN AUTH=OAUTHBEARER AUTH=XOAUTH2] \
             postern ready.\r\n"
        )
    );
    let plain_allowed = settings(TlsMode::Starttls, "PLAIN OAUTHBEARER", true, 3);
    assert_eq!(
        greeting(&plain_allowed),
        format!(
            "* OK [CAPABILITY {ADVERTISE} AUTH=PLAIN AUTH=OAUTHBEARER STARTTLS] postern ready.\r\n"
        )
    );
    let plain_listener = settings(TlsMode::Plain, "PLAIN XOAUTH2", false, 3);
    assert_eq!(
        greeting(&plain_listener),
        format!("* OK [CAPABILITY {ADVERTISE} AUTH=XOAUTH2 LOGINDISABLED] postern ready.\r\n")
    );
}

#[test]
fn settings_from_the_config_model() {
    let config = crate::testutil::config(Vec::new(), Vec::new());
    let listener = crate::testutil::listener("imap", Protocol::Imap, TlsMode::Starttls);
    let s = Settings::new(&config.capabilities.imap, &listener);
    assert_eq!(s.tls, TlsMode::Starttls);
    assert_eq!(s.max_auth_attempts, listener.max_auth_attempts);
    assert_eq!(s.sasl, config.capabilities.imap.auth.sasl);
    assert_eq!(s.limits, Limits::PRE_AUTH);
    let caps = Machine::new(Arc::new(s)).capabilities().to_owned();
    assert!(caps.ends_with("LOGINDISABLED STARTTLS"), "{caps}");
}

#[test]
fn starttls_then_capabilities_are_recomputed() {
    let t = run(
        &starttls(),
        &[
            send("a CAPABILITY\r\n"),
            send("b STARTTLS\r\n"),
            Step::Tls,
            send("c capability\r\nd STARTTLS\r\n"),
        ],
    );
    let before =
        format!("* CAPABILITY {ADVERTISE} AUTH=OAUTHBEARER AUTH=XOAUTH2 LOGINDISABLED STARTTLS");
    let after = format!("* CAPABILITY {ADVERTISE} AUTH=PLAIN AUTH=OAUTHBEARER AUTH=XOAUTH2");
    assert_eq!(
        lines(&t),
        [
            before.as_str(),
            "a OK CAPABILITY completed.",
            "b OK Begin TLS negotiation now.",
            "<starttls>",
            after.as_str(),
            "c OK CAPABILITY completed.",
            "d BAD STARTTLS is not available.",
        ]
    );
}

#[test]
fn starttls_unavailable_on_implicit_and_plain_listeners() {
    for s in [implicit(), settings(TlsMode::Plain, "PLAIN", true, 3)] {
        let t = run(&s, &[send("a STARTTLS\r\n")]);
        assert_eq!(lines(&t), ["a BAD STARTTLS is not available."]);
    }
}

#[test]
fn starttls_with_pipelined_plaintext_is_refused() {
    // Whole: the plaintext is seen with the command. Byte by byte it arrives after the
    // OK, while the handshake is due; both close, so the runs differ by design.
    let steps = [send("a STARTTLS\r\nb LOGIN alice secret\r\n")];
    let (whole, machine) = drive(&starttls(), &steps, false);
    assert_eq!(
        lines(&whole),
        [
            "a BAD Data pipelined after STARTTLS.",
            "* BYE Closing connection.",
            "<close>"
        ]
    );
    assert!(machine.is_closed());
    let (bytewise, machine) = drive(&starttls(), &steps, true);
    assert_eq!(
        lines(&bytewise),
        ["a OK Begin TLS negotiation now.", "<starttls>", "<close>"]
    );
    assert!(machine.is_closed());
}

#[test]
fn login_quoted_and_literals_over_tls() {
    let t = run(
        &implicit(),
        &[
            send("a LOGIN \"alice\" \"p \\\"w\\\\\"\r\n"),
            fail("a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
            send("b LOGIN {5}\r\n"),
            send("alice {3+}\r\n{}!\r\n"),
            Step::Result(Outcome::Success),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "<login a LOGIN \"alice:p \\\"w\\\\\" command>",
            "a NO [AUTHENTICATIONFAILED] Authentication failed.",
            "+ Ready for 5 bytes.",
            "<login b LOGIN \"alice:{}!\" command>",
            "<splice>",
        ]
    );
}

#[test]
fn cleartext_before_tls_is_privacy_required_and_not_counted() {
    let t = run(
        &starttls(),
        &[
            send("a LOGIN alice secret\r\n"),
            send("b AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
            send("c login {5}\r\n"),
            send("d LOGIN x y\r\ne NOOP\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "a NO [PRIVACYREQUIRED] Cleartext authentication requires TLS.",
            "b NO [PRIVACYREQUIRED] Cleartext authentication requires TLS.",
            // The literal is refused, so the password is never sent.
            "c NO [PRIVACYREQUIRED] Cleartext authentication requires TLS.",
            "d NO [PRIVACYREQUIRED] Cleartext authentication requires TLS.",
            "e OK NOOP completed.",
        ]
    );
    let (_, machine) = drive(&starttls(), &[send("a LOGIN x y\r\n")], false);
    assert_eq!(machine.failures(), 0);
}

#[test]
fn plain_allowed_without_tls() {
    let s = settings(TlsMode::Plain, "PLAIN", true, 3);
    let t = run(&s, &[send("a LOGIN alice secret\r\n")]);
    assert_eq!(lines(&t), ["<login a LOGIN \"alice:secret\" command>"]);
}

#[test]
fn authenticate_plain_with_and_without_initial_response() {
    let t = run(
        &implicit(),
        &[
            send("a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
            fail("a NO nope\r\n"),
            send("b AUTHENTICATE PLAIN\r\n"),
            send("AGFsaWNlAHNlY3JldA\r\n"),
            fail("b NO nope\r\n"),
            send("c AUTHENTICATE PLAIN =\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "<login a PLAIN \"\\0alice\\0secret\">",
            "a NO nope",
            "+ ",
            "<login b PLAIN \"\\0alice\\0secret\">",
            "b NO nope",
            "<login c PLAIN \"\">",
        ]
    );
}

#[test]
fn continuation_abort_with_star() {
    let t = run(
        &implicit(),
        &[send("a AUTHENTICATE PLAIN\r\n*\r\nb NOOP\r\n")],
    );
    assert_eq!(
        lines(&t),
        [
            "+ ",
            "a BAD Authentication cancelled.",
            "b OK NOOP completed."
        ]
    );
}

#[test]
fn oauth_mechanisms_allowed_before_tls() {
    let t = run(
        &starttls(),
        &[
            send("a AUTHENTICATE OAUTHBEARER bixhPWFAYi5jLAFhdXRoPUJlYXJlciB0AQE=\r\n"),
            fail("a NO x\r\n"),
            send("b AUTHENTICATE XOAUTH2\r\n"),
            send("dXNlcj1hQGIuYwFhdXRoPUJlYXJlciB0AQE=\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "<login a OAUTHBEARER \"n,a=a@b.c,\\u{1}auth=Bearer t\\u{1}\\u{1}\">",
            "a NO x",
            "+ ",
            "<login b XOAUTH2 \"user=a@b.c\\u{1}auth=Bearer t\\u{1}\\u{1}\">",
        ]
    );
}

#[test]
fn sasl_login_when_listed() {
    let t = run(
        &implicit(),
        &[
            send("a AUTHENTICATE LOGIN\r\nYWxpY2U=\r\n"),
            send("c2VjcmV0\r\n"),
            fail("a NO x\r\n"),
            send("b AUTHENTICATE LOGIN YWxpY2U=\r\nc2VjcmV0\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "+ VXNlcm5hbWU6",
            "+ UGFzc3dvcmQ6",
            "<login a LOGIN \"alice:secret\">",
            "a NO x",
            "+ UGFzc3dvcmQ6",
            "<login b LOGIN \"alice:secret\">",
        ]
    );
}

#[test]
fn unknown_or_unlisted_mechanisms_are_refused_and_counted() {
    let t = run(
        &starttls(),
        &[send(
            "a AUTHENTICATE CRAM-MD5\r\nb AUTHENTICATE LOGIN\r\nc AUTHENTICATE GSSAPI =\r\n",
        )],
    );
    assert_eq!(
        lines(&t),
        [
            "a NO Unsupported authentication mechanism.",
            "b NO AUTH LOGIN is not supported.",
            "c NO Unsupported authentication mechanism.",
            "* BYE Too many authentication failures.",
            "<close>",
        ]
    );
}

#[test]
fn bad_base64_is_refused_and_counted() {
    let t = run(
        &implicit(),
        &[send(
            "a AUTHENTICATE PLAIN !!!\r\nb AUTHENTICATE PLAIN\r\n%%\r\n",
        )],
    );
    assert_eq!(
        lines(&t),
        [
            "a NO Invalid base64 data.",
            "+ ",
            "b NO Invalid base64 data."
        ]
    );
    let (_, machine) = drive(&implicit(), &[send("a AUTHENTICATE PLAIN !!!\r\n")], false);
    assert_eq!(machine.failures(), 1);
}

#[test]
fn max_auth_attempts_then_bye_and_close() {
    let t = run(
        &implicit(),
        &[
            send("a LOGIN u p\r\n"),
            fail("a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
            send("b x y\r\n"),
            send("c LOGIN u p\r\n"),
            Step::Reject(Rejection::Malformed),
            send("d NOOP\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "<login a LOGIN \"u:p\" command>",
            "a NO [AUTHENTICATIONFAILED] Authentication failed.",
            "b BAD Command not allowed in this state.",
            "<login c LOGIN \"u:p\" command>",
            "c NO [AUTHENTICATIONFAILED] Malformed credentials.",
            "d OK NOOP completed.",
        ]
    );
    // The third failure (a parse error) closes.
    let t = run(
        &implicit(),
        &[
            send("a LOGIN u p\r\n"),
            fail("a NO x\r\n"),
            send("b LOGIN u p\r\n"),
            fail("b NO x\r\n"),
            send("c NOOP extra\r\nd NOOP\r\n"),
        ],
    );
    assert_eq!(
        &lines(&t)[4..],
        [
            "c BAD Unexpected argument.",
            "* BYE Too many authentication failures.",
            "<close>"
        ]
    );
}

#[test]
fn pipelined_bytes_follow_the_login() {
    let script = [
        send("a LOGIN alice secret\r\nb SELECT INBOX\r\n"),
        send("c FETCH 1 BODY[]\r\n"),
        Step::Result(Outcome::Success),
    ];
    let t = run(&implicit(), &script);
    assert_eq!(
        lines(&t),
        ["<login a LOGIN \"alice:secret\" command>", "<splice>"]
    );
    assert_eq!(t.forwarded, b"b SELECT INBOX\r\nc FETCH 1 BODY[]\r\n");
    // Whole: what arrived with the command is in the Login action itself.
    let (whole, _) = drive(&implicit(), &script[..1], false);
    assert!(whole.lines[0].starts_with("<login a"));
    let mut machine = Machine::new(implicit());
    let actions = machine.on_bytes(b"a AUTHENTICATE PLAIN AHUAcA==\r\nb NOOP\r\n");
    let [Action::Login(req)] = &actions[..] else {
        panic!("expected one login, got {actions:?}")
    };
    assert_eq!(req.pipelined.expose(), b"b NOOP\r\n");
    // After a failure, the pipelined commands are answered by postern.
    let t = run(
        &implicit(),
        &[
            send("a LOGIN alice secret\r\nb SELECT INBOX\r\nc NOOP\r\n"),
            fail("a NO x\r\n"),
        ],
    );
    assert_eq!(
        &lines(&t)[1..],
        [
            "a NO x",
            "b BAD Command not allowed in this state.",
            "c OK NOOP completed."
        ]
    );
}

#[test]
fn too_much_data_during_login_closes() {
    let mut machine = Machine::new(implicit());
    assert!(matches!(
        &machine.on_bytes(b"a LOGIN u p\r\n")[..],
        [Action::Login(_)]
    ));
    let flood = vec![b'x'; MAX_HELD_BYTES];
    assert!(machine.on_bytes(&flood).is_empty());
    assert!(matches!(&machine.on_bytes(b"x")[..], [Action::Close]));
    assert!(machine.on_login_result(Outcome::Success).is_empty());
}

#[test]
fn unavailable_and_unsafe_identifier() {
    let t = run(
        &implicit(),
        &[
            send("a LOGIN u p\r\n"),
            Step::Result(Outcome::Unavailable),
            send("b LOGIN \"u x\" p\r\n"),
            Step::Reject(Rejection::UnsafeIdentifier),
            send("c NOOP\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "<login a LOGIN \"u:p\" command>",
            "a NO [UNAVAILABLE] backend unavailable",
            "<login b LOGIN \"u x:p\" command>",
            "b NO [UNAVAILABLE] backend unavailable",
            "<close>",
        ]
    );
}

#[test]
fn oversized_line_and_literal_then_next_command_parses() {
    let mut long = b"a LOGIN ".to_vec();
    long.extend(vec![b'u'; 9000]);
    long.extend(b" p\r\nb NOOP\r\n");
    let mut lit = b"c LOGIN {70000+}\r\n".to_vec();
    lit.extend(vec![b'u'; 70000]);
    lit.extend(b" p\r\nd NOOP\r\n");
    let t = run(
        &settings(TlsMode::Implicit, "PLAIN", false, 10),
        &[
            Step::Send(long),
            Step::Send(lit),
            send("e LOGIN {70000}\r\nf NOOP\r\n"),
        ],
    );
    assert_eq!(
        lines(&t),
        [
            "a BAD [TOOBIG] Line too long.",
            "b OK NOOP completed.",
            "c BAD [TOOBIG] Literal too large.",
            "d OK NOOP completed.",
            "e BAD [TOOBIG] Literal too large.",
            "f OK NOOP completed.",
        ]
    );
    // A line too long to show its tag gets an untagged BAD.
    let t = run(
        &implicit(),
        &[Step::Send(vec![b'x'; 9000]), send("\r\ng NOOP\r\n")],
    );
    assert_eq!(
        lines(&t),
        ["* BAD [TOOBIG] Line too long.", "g OK NOOP completed."]
    );
}

#[test]
fn id_with_a_list_and_logout() {
    let s = starttls();
    let steps = [send(
        "a ID (\"name\" \"imaplib\" \"version\" NIL)\r\nb ID NIL\r\nc LOGOUT\r\nd NOOP\r\n",
    )];
    let t = run(&s, &steps);
    assert_eq!(
        lines(&t),
        [
            "* ID NIL",
            "a OK ID completed.",
            "* ID NIL",
            "b OK ID completed.",
            "* BYE Logging out.",
            "c OK LOGOUT completed.",
            "<close>",
        ]
    );
}

#[test]
fn wrong_state_commands_are_refused_and_not_counted() {
    let t = run(
        &settings(TlsMode::Implicit, "PLAIN", false, 1),
        &[send(
            "a SELECT INBOX\r\nb APPEND INBOX {100}\r\nc LIST \"\" *\r\nd FETCH 1 (BODY[])\r\ne NOOP\r\n",
        )],
    );
    assert_eq!(
        lines(&t),
        [
            "a BAD Command not allowed in this state.",
            // The literal is refused: no "+ Ready", and the next line is a new command.
            "b BAD Command not allowed in this state.",
            "c BAD Command not allowed in this state.",
            "d BAD Command not allowed in this state.",
            "e OK NOOP completed.",
        ]
    );
}

#[test]
fn parse_errors_tagged_and_untagged() {
    let t = run(
        &settings(TlsMode::Implicit, "PLAIN", false, 10),
        &[send(
            "+ NOOP\r\na\r\nb LOGIN \"x\r\nc NOOP {3}\r\n{5}\r\nd AUTHENTICATE PLAIN \"x\"\r\n",
        )],
    );
    assert_eq!(
        lines(&t),
        [
            "* BAD Missing or invalid tag.",
            "a BAD Missing command.",
            "b BAD Syntax error.",
            "c BAD Invalid argument.",
            "* BAD Missing or invalid tag.",
            "d BAD Invalid argument.",
        ]
    );
}

#[test]
fn nothing_after_close_and_stray_results_are_ignored() {
    let mut machine = Machine::new(implicit());
    assert!(machine.on_login_result(Outcome::Success).is_empty());
    assert!(machine.on_rejected(Rejection::Malformed).is_empty());
    assert!(machine.on_tls_established().is_empty());
    machine.on_bytes(b"a LOGOUT\r\n");
    assert!(machine.is_closed());
    assert!(machine.on_bytes(b"b NOOP\r\n").is_empty());
}

#[test]
fn debug_output_redacts_credentials() {
    let mut machine = Machine::new(implicit());
    let actions = machine.on_bytes(b"a LOGIN alice hunter2\r\nb LOGIN bob pw2\r\n");
    let shown = format!("{actions:?}");
    for secret in ["alice", "hunter2", "bob", "pw2"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

/// xorshift64*: a fixed-seed generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn garbage_never_panics() {
    // Mostly command-shaped lines with random arguments, some raw garbage.
    const TAGS: &[&[u8]] = &[b"a", b"b1", b"", b"+x", b"*", b"\"t\""];
    const VERBS: &[&[u8]] = &[
        b"LOGIN",
        b"AUTHENTICATE PLAIN",
        b"AUTHENTICATE LOGIN",
        b"AUTHENTICATE XOAUTH2",
        b"authenticate oauthbearer",
        b"STARTTLS",
        b"ID",
        b"NOOP",
        b"CAPABILITY",
        b"LOGOUT",
        b"SELECT",
        b"AUTHENTICATE",
    ];
    const ARGS: &[&[u8]] = &[
        b"u",
        b"\"p w\"",
        b"{3}\r\nabc",
        b"{2+}\r\nxy",
        b"{99999}\r\n",
        b"{9+}\r\n",
        b"\"",
        b"\\",
        b"(",
        b")",
        b"NIL",
        b"=",
        b"AGEAYg==",
        b"!!",
        b"\0",
        b"*",
        b"{",
        b"}",
        b"\r\n",
        b"\n",
        b"*\r\n",
        b"dXNlcg==\r\n",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let small = Limits {
        line_bytes: 48,
        literal_bytes: 64,
    };
    let (mut logins, mut upgrades) = (0, 0);
    for case in 0..2000 {
        let mut s = (*implicit()).clone();
        s.tls = [TlsMode::Implicit, TlsMode::Starttls, TlsMode::Plain][case % 3];
        s.allow_plain_auth_without_tls = rng.below(2) == 0;
        s.max_auth_attempts = 1 + rng.below(30) as u32;
        if case % 2 == 0 {
            s.limits = small;
        }
        let mut machine = Machine::new(Arc::new(s));
        let mut input = Vec::new();
        for _ in 0..rng.below(16) {
            if rng.below(8) == 0 {
                input.extend((0..rng.below(40)).map(|_| rng.next() as u8));
                continue;
            }
            input.extend_from_slice(TAGS[rng.below(TAGS.len())]);
            input.push(b' ');
            input.extend_from_slice(VERBS[rng.below(VERBS.len())]);
            for _ in 0..rng.below(3) {
                input.push(b' ');
                input.extend_from_slice(ARGS[rng.below(ARGS.len())]);
            }
            input.extend_from_slice(b"\r\n");
        }
        let mut rest = &input[..];
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len().min(16));
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut actions = machine.on_bytes(chunk);
            while let Some(action) = actions.pop() {
                match action {
                    Action::StartTls => {
                        upgrades += 1;
                        actions.extend(machine.on_tls_established())
                    }
                    Action::Login(_) => actions.extend(match (rng.below(4), logins += 1).0 {
                        0 => machine.on_login_result(Outcome::Success),
                        1 => machine.on_login_result(Outcome::Unavailable),
                        2 => machine.on_rejected(Rejection::Malformed),
                        _ => machine.on_login_result(Outcome::Failure {
                            reply: Some(b"a NO x\r\n".to_vec()),
                        }),
                    }),
                    Action::Reply(bytes) => assert!(bytes.ends_with(b"\r\n")),
                    Action::Splice { .. } | Action::Close => {}
                }
            }
            assert!(machine.buffered_bytes() <= MAX_HELD_BYTES + 16);
        }
    }
    // The loop must reach the interesting states, not only parse errors.
    assert!(
        logins > 50 && upgrades > 2,
        "logins {logins}, upgrades {upgrades}"
    );
}

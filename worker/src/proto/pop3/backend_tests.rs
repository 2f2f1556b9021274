//! The POP3 backend dialogue against scripted loopback servers: what postern sends, byte
//! for byte, and how it reads the answers.

use std::net::SocketAddr;

use postern_config::model::Forwarding;
use tokio::task::JoinHandle;

use super::*;
use crate::proto::testkit::loopback::{self, connect, identity, plain, request, Step, BOUND};

/// A backend on loopback running `script` on one connection; returns what it received.
async fn scripted(script: Vec<Step>) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    loopback::scripted("127.0.0.1:0", script, false).await
}

fn v4_identity() -> ClientIdentity {
    identity("192.0.2.7:50123", "198.51.100.1:110", false)
}

async fn run_with(
    script: Vec<Step>,
    forwarding: Forwarding,
    identity: ClientIdentity,
    credentials: Credentials,
) -> (Result<Replay, String>, Vec<u8>) {
    let (addr, task) = scripted(script).await;
    let outcome = tokio::time::timeout(BOUND, async {
        let backend = Pop3Backend::establish(connect(addr, forwarding).await, &identity)
            .await
            .map_err(|e| e.to_string())?;
        backend
            .replay(&request(""), &credentials)
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .expect("bounded");
    let received = tokio::time::timeout(BOUND, task)
        .await
        .expect("bounded")
        .expect("script");
    (outcome, received)
}

async fn run(
    script: Vec<Step>,
    forwarding: Forwarding,
    credentials: Credentials,
) -> (Result<Replay, String>, Vec<u8>) {
    run_with(script, forwarding, v4_identity(), credentials).await
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("utf8")
}

#[tokio::test]
async fn auth_plain_replay_and_verbatim_reply() {
    let (outcome, received) = run(
        vec![
            Step::Send(b"+OK Dovecot ready.\r\n"),
            Step::ReadLine,
            Step::Send(b"+OK Logged in.\r\nextra"),
        ],
        Forwarding::None,
        plain("alice", "pw"),
    )
    .await;
    assert_eq!(text(received), "AUTH PLAIN AGFsaWNlAHB3\r\n");
    match outcome.expect("replay") {
        Replay::Accepted { reply, rest, .. } => {
            assert_eq!(reply, b"+OK Logged in.\r\n");
            assert!(b"extra".starts_with(&rest));
        }
        Replay::Rejected { .. } => panic!("rejected"),
    }
}

#[tokio::test]
async fn password_logins_are_replayed_as_plain() {
    // USER/PASS and SASL LOGIN reach the replay as LOGIN credentials.
    let credentials = sasl::decode_login(b"bob@example.org", b"s3cret pw").expect("login");
    let (outcome, received) = run(
        vec![
            Step::Send(b"+OK ready\r\n"),
            Step::ReadLine,
            Step::Send(b"+OK\r\n"),
        ],
        Forwarding::None,
        credentials,
    )
    .await;
    assert_eq!(
        text(received),
        "AUTH PLAIN AGJvYkBleGFtcGxlLm9yZwBzM2NyZXQgcHc=\r\n"
    );
    match outcome.expect("replay") {
        Replay::Accepted { reply, .. } => assert_eq!(reply, b"+OK\r\n"),
        Replay::Rejected { .. } => panic!("rejected"),
    }
}

#[tokio::test]
async fn oauth_payloads_are_replayed_unchanged() {
    let payload = b"n,a=carol@example.org,\x01auth=Bearer tok-123\x01\x01";
    let credentials = sasl::decode_oauthbearer(payload).expect("oauthbearer");
    let (_, received) = run(
        vec![
            Step::Send(b"+OK ready\r\n"),
            Step::ReadLine,
            Step::Send(b"+OK\r\n"),
        ],
        Forwarding::None,
        credentials,
    )
    .await;
    assert_eq!(
        text(received),
        format!("AUTH OAUTHBEARER {}\r\n", sasl::encode_base64(payload))
    );

    let payload = b"user=dave@example.org\x01auth=Bearer tok-456\x01\x01";
    let credentials = sasl::decode_xoauth2(payload).expect("xoauth2");
    let (_, received) = run(
        vec![
            Step::Send(b"+OK ready\r\n"),
            Step::ReadLine,
            Step::Send(b"+OK\r\n"),
        ],
        Forwarding::None,
        credentials,
    )
    .await;
    assert_eq!(
        text(received),
        format!("AUTH XOAUTH2 {}\r\n", sasl::encode_base64(payload))
    );
}

#[tokio::test]
async fn error_challenge_is_acknowledged_then_err_relayed() {
    let payload = b"n,,\x01auth=Bearer expired\x01\x01";
    let credentials = sasl::decode_oauthbearer(payload).expect("oauthbearer");
    let (outcome, received) = run(
        vec![
            Step::Send(b"+OK ready\r\n"),
            Step::ReadLine,
            Step::Send(b"+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=\r\n"),
            Step::ReadLine,
            Step::Send(b"-ERR [AUTH] Authentication failed.\r\n"),
        ],
        Forwarding::None,
        credentials,
    )
    .await;
    assert_eq!(
        text(received),
        format!(
            "AUTH OAUTHBEARER {}\r\nAQ==\r\n",
            sasl::encode_base64(payload)
        )
    );
    match outcome.expect("replay") {
        Replay::Rejected { reply } => assert_eq!(reply, b"-ERR [AUTH] Authentication failed.\r\n"),
        Replay::Accepted { .. } => panic!("accepted"),
    }
}

#[tokio::test]
async fn initial_response_too_long_for_a_command_line_goes_in_a_continuation() {
    // RFC 5034 §4 / RFC 2449 §4: the AUTH line must stay within 255 octets.
    let token = "t".repeat(300);
    let payload = format!("n,,\x01auth=Bearer {token}\x01\x01");
    let credentials = sasl::decode_oauthbearer(payload.as_bytes()).expect("oauthbearer");
    let (outcome, received) = run(
        vec![
            Step::Send(b"+OK ready\r\n"),
            Step::ReadLine,
            Step::Send(b"+ \r\n"),
            Step::ReadLine,
            Step::Send(b"+OK in\r\n"),
        ],
        Forwarding::None,
        credentials,
    )
    .await;
    assert_eq!(
        text(received),
        format!(
            "AUTH OAUTHBEARER\r\n{}\r\n",
            sasl::encode_base64(payload.as_bytes())
        )
    );
    assert!(matches!(outcome, Ok(Replay::Accepted { .. })));
}

#[tokio::test]
async fn a_rejected_login_is_relayed_verbatim() {
    let (outcome, _) = run(
        vec![
            Step::Send(b"+OK ready\r\n"),
            Step::ReadLine,
            Step::Send(b"-ERR [AUTH] Authentication failed.\r\n"),
        ],
        Forwarding::None,
        plain("alice", "wrong"),
    )
    .await;
    match outcome.expect("replay") {
        Replay::Rejected { reply } => assert_eq!(reply, b"-ERR [AUTH] Authentication failed.\r\n"),
        Replay::Accepted { .. } => panic!("accepted"),
    }
}

#[tokio::test]
async fn a_garbled_auth_answer_is_an_error() {
    let (outcome, _) = run(
        vec![
            Step::Send(b"+OK ready\r\n"),
            Step::ReadLine,
            Step::Send(b"* OK what\r\n"),
        ],
        Forwarding::None,
        plain("alice", "pw"),
    )
    .await;
    let error = outcome.err().expect("error");
    assert!(error.contains("neither"), "{error}");
}

#[tokio::test]
async fn xclient_from_the_greeting_ipv4() {
    let (outcome, received) = run(
        vec![
            Step::Send(b"+OK [XCLIENT] Dovecot (Debian) ready.\r\n"),
            Step::ReadLine,
            Step::Send(b"+OK Updated\r\n"),
            Step::ReadLine,
            Step::Send(b"+OK Logged in.\r\n"),
        ],
        Forwarding::Xclient,
        plain("alice", "pw"),
    )
    .await;
    assert!(matches!(outcome, Ok(Replay::Accepted { .. })));
    assert_eq!(
        text(received),
        "XCLIENT ADDR=192.0.2.7 PORT=50123 DESTADDR=198.51.100.1 DESTPORT=110 \
         SESSION=P2a TTL=6 CLIENT-TRANSPORT=insecure\r\n\
         AUTH PLAIN AGFsaWNlAHB3\r\n"
    );
}

#[tokio::test]
async fn xclient_from_capa_ipv6_over_tls() {
    let (outcome, received) = run_with(
        vec![
            Step::Send(b"+OK Dovecot ready.\r\n"),
            Step::ReadLine,
            Step::Send(b"+OK\r\nCAPA\r\nTOP\r\nSASL PLAIN\r\nXCLIENT\r\n.\r\n"),
            Step::ReadLine,
            Step::Send(b"+OK\r\n"),
            Step::ReadLine,
            Step::Send(b"+OK Logged in.\r\n"),
        ],
        Forwarding::Xclient,
        identity("[2001:db8::7]:50123", "[2001:db8::1]:995", true),
        plain("alice", "pw"),
    )
    .await;
    assert!(matches!(outcome, Ok(Replay::Accepted { .. })));
    assert_eq!(
        text(received),
        "CAPA\r\n\
         XCLIENT ADDR=2001:db8::7 PORT=50123 DESTADDR=2001:db8::1 DESTPORT=995 \
         SESSION=P2a TTL=6 CLIENT-TRANSPORT=TLS\r\n\
         AUTH PLAIN AGFsaWNlAHB3\r\n"
    );
}

#[tokio::test]
async fn no_xclient_when_not_offered_or_not_configured() {
    let (outcome, received) = run(
        vec![
            Step::Send(b"+OK ready\r\n"),
            Step::ReadLine,
            Step::Send(b"-ERR unknown command\r\n"),
            Step::ReadLine,
            Step::Send(b"+OK\r\n"),
        ],
        Forwarding::Xclient,
        plain("alice", "pw"),
    )
    .await;
    assert!(matches!(outcome, Ok(Replay::Accepted { .. })));
    assert_eq!(text(received), "CAPA\r\nAUTH PLAIN AGFsaWNlAHB3\r\n");

    // Forwarding by PROXY header (or none): XCLIENT in the greeting is ignored.
    for forwarding in [Forwarding::Proxy, Forwarding::None] {
        let (_, received) = run(
            vec![
                Step::Send(b"+OK XCLIENT ready\r\n"),
                Step::ReadLine,
                Step::Send(b"+OK\r\n"),
            ],
            forwarding,
            plain("alice", "pw"),
        )
        .await;
        assert_eq!(text(received), "AUTH PLAIN AGFsaWNlAHB3\r\n");
    }
}

#[tokio::test]
async fn rejected_xclient_fails_the_connection() {
    let (outcome, received) = run(
        vec![
            Step::Send(b"+OK XCLIENT\r\n"),
            Step::ReadLine,
            Step::Send(b"-ERR You are not from trusted IP\r\n"),
        ],
        Forwarding::Xclient,
        plain("alice", "pw"),
    )
    .await;
    let error = outcome.err().expect("refused");
    assert!(
        error.contains("xclient") && error.contains("not from trusted IP"),
        "{error}"
    );
    assert!(text(received).starts_with("XCLIENT "));
}

#[tokio::test]
async fn unusable_greetings_and_stls_refusals() {
    let (outcome, _) = run(
        vec![Step::Send(b"-ERR too busy\r\n")],
        Forwarding::None,
        plain("a", "b"),
    )
    .await;
    let error = outcome.err().expect("refused");
    assert!(
        error.contains("greeting") && error.contains("too busy"),
        "{error}"
    );

    for capa in [
        &b"+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n"[..],
        b"-ERR no CAPA here\r\n",
    ] {
        let script = vec![
            Step::Send(b"+OK ready\r\n"),
            Step::ReadLine,
            Step::Send(capa),
        ];
        let (addr, task) = scripted(script).await;
        let mut connected = connect(addr, Forwarding::None).await;
        loopback::starttls_leg(&mut connected);
        let error = Pop3Backend::establish(connected, &v4_identity())
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(
                error,
                DialError::Refused {
                    stage: "starttls",
                    ..
                }
            ),
            "{error}"
        );
        assert!(!error.is_retryable());
        assert_eq!(text(task.await.expect("script")), "CAPA\r\n");
    }

    // STLS offered but refused.
    let (addr, task) = scripted(vec![
        Step::Send(b"+OK ready\r\n"),
        Step::ReadLine,
        Step::Send(b"+OK\r\nSTLS\r\n.\r\n"),
        Step::ReadLine,
        Step::Send(b"-ERR TLS not configured\r\n"),
    ])
    .await;
    let mut connected = connect(addr, Forwarding::None).await;
    loopback::starttls_leg(&mut connected);
    let error = Pop3Backend::establish(connected, &v4_identity())
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("TLS not configured"), "{error}");
    assert_eq!(text(task.await.expect("script")), "CAPA\r\nSTLS\r\n");
}

#[tokio::test]
async fn a_backend_closing_mid_greeting_is_an_establish_error() {
    let (outcome, _) = run(
        vec![Step::Send(b"+OK rea")],
        Forwarding::None,
        plain("a", "b"),
    )
    .await;
    let error = outcome.err().expect("failed");
    assert!(error.contains("greeting"), "{error}");
}

#[test]
fn status_lines_and_capabilities() {
    assert!(is_ok(b"+OK\r\n") && is_ok(b"+ok Logged in\r\n") && is_ok(b"+OK"));
    assert!(!is_ok(b"+OKAY\r\n") && !is_ok(b"+ \r\n") && !is_ok(b"-ERR\r\n"));
    assert!(is_err(b"-ERR [AUTH] no\r\n") && !is_err(b"-ERRx\r\n"));
    let caps = vec![b"SASL PLAIN".to_vec(), b"stls".to_vec()];
    assert!(has_capability(&caps, b"STLS"));
    assert!(!has_capability(&caps, b"PLAIN"));
    assert!(has_word(b"+OK XCLIENT ready", b"xclient"));
    assert!(has_word(
        b"+OK [XCLIENT] Dovecot (Debian) ready.",
        b"XCLIENT"
    ));
    assert!(!has_word(b"+OK XCLIENTS ready", b"XCLIENT"));
}

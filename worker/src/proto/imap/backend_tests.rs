//! The backend dialogue against scripted loopback servers: what postern sends, byte for
//! byte, and how it reads the answers.

use std::net::SocketAddr;

use postern_config::model::Forwarding;
use tokio::task::JoinHandle;

use super::*;
use crate::proto::grammar::trailing_literal;
use crate::proto::testkit::loopback::{
    self, connect, identity as identity_at, plain, request, Step, BOUND,
};

/// A backend on loopback running `script` on one connection; returns what it received.
async fn scripted(script: Vec<Step>) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    loopback::scripted("127.0.0.1:0", script, false).await
}

fn identity() -> ClientIdentity {
    identity_at("192.0.2.7:50123", "198.51.100.1:143", false)
}

async fn run(
    script: Vec<Step>,
    forwarding: Forwarding,
    credentials: Credentials,
) -> (Result<Replay, String>, Vec<u8>) {
    let (addr, task) = scripted(script).await;
    let outcome = tokio::time::timeout(BOUND, async {
        let backend = ImapBackend::establish(connect(addr, forwarding).await, &identity())
            .await
            .map_err(|e| e.to_string())?;
        backend
            .replay(&request("a1"), &credentials)
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

#[tokio::test]
async fn sasl_ir_replay_and_verbatim_reply() {
    let (outcome, received) = run(
        vec![
            Step::Send(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] hi\r\n"),
            Step::ReadLine,
            Step::Send(b"a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\nextra"),
        ],
        Forwarding::None,
        plain("alice", "pw"),
    )
    .await;
    assert_eq!(received, b"a1 AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n");
    match outcome.expect("replay") {
        Replay::Accepted { reply, .. } => {
            assert_eq!(reply, b"a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n");
        }
        Replay::Rejected { .. } => panic!("rejected"),
    }
}

#[tokio::test]
async fn continuation_without_sasl_ir_then_error_ack() {
    let (outcome, received) = run(
        vec![
            Step::Send(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n"),
            Step::ReadLine,
            Step::Send(b"+ \r\n"),
            Step::ReadLine,
            Step::Send(b"+ eyJzdGF0dXMiOiJpbnZhbGlkIn0=\r\n"),
            Step::ReadLine,
            Step::Send(b"* OK alert\r\na1 NO [AUTHENTICATIONFAILED] no\r\n"),
        ],
        Forwarding::None,
        plain("alice", "pw"),
    )
    .await;
    assert_eq!(
        received,
        b"a1 AUTHENTICATE PLAIN\r\nAGFsaWNlAHB3\r\nAQ==\r\n".as_slice()
    );
    match outcome.expect("replay") {
        Replay::Rejected { reply } => {
            assert_eq!(reply, b"* OK alert\r\na1 NO [AUTHENTICATIONFAILED] no\r\n");
        }
        Replay::Accepted { .. } => panic!("accepted"),
    }
}

#[tokio::test]
async fn login_command_when_backend_lacks_auth_plain() {
    let (outcome, received) = run(
        vec![
            Step::Send(b"* OK hi\r\n"),
            Step::ReadLine,
            Step::Send(b"* CAPABILITY IMAP4rev1 LITERAL+\r\nP2 OK done\r\n"),
            Step::ReadLine,
            Step::ReadLine,
            Step::Send(b"a1 OK Logged in\r\n"),
        ],
        Forwarding::None,
        plain("bob", "p\"w\\é"),
    )
    .await;
    let expected: &[u8] = b"P2 CAPABILITY\r\na1 LOGIN \"bob\" {6+}\r\np\"w\\\xc3\xa9\r\n";
    assert_eq!(received, expected);
    assert!(matches!(outcome, Ok(Replay::Accepted { .. })));
}

#[tokio::test]
async fn id_is_sent_for_xclient_forwarding_when_offered() {
    let (outcome, received) = run(
        vec![
            Step::Send(b"* OK [CAPABILITY IMAP4rev1 ID SASL-IR AUTH=PLAIN] hi\r\n"),
            Step::ReadLine,
            Step::Send(b"* ID NIL\r\nF1 OK ID completed\r\n"),
            Step::ReadLine,
            Step::Send(b"a1 OK in\r\n"),
        ],
        Forwarding::Xclient,
        plain("alice", "pw"),
    )
    .await;
    assert!(matches!(outcome, Ok(Replay::Accepted { .. })));
    let text = String::from_utf8(received).expect("utf8");
    assert_eq!(
        text,
        "F1 ID (\"x-originating-ip\" \"192.0.2.7\" \"x-originating-port\" \"50123\" \
         \"x-connected-ip\" \"198.51.100.1\" \"x-connected-port\" \"143\" \
         \"x-proxy-ttl\" \"6\" \"x-session-id\" \"P2a\" \"x-client-transport\" \"insecure\")\r\n\
         a1 AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n"
    );
}

#[tokio::test]
async fn unusable_greetings_and_starttls_refusals() {
    let (outcome, _) = run(
        vec![Step::Send(b"* BYE too busy\r\n")],
        Forwarding::None,
        plain("a", "b"),
    )
    .await;
    let error = outcome.err().expect("refused");
    assert!(
        error.contains("greeting") && error.contains("BYE too busy"),
        "{error}"
    );

    let (addr, _task) = scripted(vec![Step::Send(b"* OK [CAPABILITY IMAP4rev1] hi\r\n")]).await;
    let mut connected = connect(addr, Forwarding::None).await;
    loopback::starttls_leg(&mut connected);
    let error = ImapBackend::establish(connected, &identity())
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
}

#[tokio::test]
async fn a_backend_closing_mid_greeting_is_retryable() {
    let (outcome, _) = run(
        vec![Step::Send(b"* OK [CAPA")],
        Forwarding::None,
        plain("a", "b"),
    )
    .await;
    let error = outcome.err().expect("failed");
    assert!(error.contains("greeting"), "{error}");
}

#[test]
fn capabilities_literals_and_quoting() {
    let caps = Capabilities::from_response_code(b"* OK [capability IMAP4rev1 sasl-ir] x\r\n")
        .expect("code");
    assert!(caps.has("SASL-IR") && caps.has("imap4rev1") && !caps.has("ID"));
    assert!(Capabilities::from_response_code(b"* OK hello\r\n").is_none());
    assert_eq!(trailing_literal(b"* ID (\"a\" {12}\r\n"), Some(12));
    assert_eq!(trailing_literal(b"x {3+}\r\n"), Some(3));
    assert_eq!(trailing_literal(b"x {}\r\n"), None);
    assert_eq!(trailing_literal(b"x {99999999999}\r\n"), None);
    assert_eq!(quote(b"a\"b\\c").expect("quoted"), b"\"a\\\"b\\\\c\"");
    assert!(quote("é".as_bytes()).is_none());
}

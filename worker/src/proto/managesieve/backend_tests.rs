//! The backend dialogue against scripted loopback servers: what postern sends, byte for
//! byte, and how it reads the answers.

use std::net::SocketAddr;

use postern_config::model::Forwarding;
use tokio::task::JoinHandle;

use super::*;
use crate::proto::grammar::trailing_literal;
use crate::proto::testkit::loopback::{self, connect, identity, plain, request, Step, BOUND};
use crate::sasl::Mechanism;

/// A backend on loopback (IPv6 with `v6`) running `script` on one connection.
async fn scripted(script: Vec<Step>, v6: bool) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let bind = if v6 { "[::1]:0" } else { "127.0.0.1:0" };
    loopback::scripted(bind, script, false).await
}

/// Dovecot's capability response, XCLIENT included.
const CAPABILITIES: &[u8] = b"\"IMPLEMENTATION\" \"Dovecot Pigeonhole\"\r\n\
\"SIEVE\" \"fileinto reject envelope\"\r\n\"NOTIFY\" \"mailto\"\r\n\"SASL\" \"PLAIN LOGIN\"\r\n\
\"XCLIENT\"\r\n\"VERSION\" \"1.0\"\r\nOK \"Dovecot ready.\"\r\n";

fn v4_identity() -> ClientIdentity {
    identity("192.0.2.7:50123", "198.51.100.1:4190", false)
}

async fn run_as(
    script: Vec<Step>,
    forwarding: Forwarding,
    identity: ClientIdentity,
    credentials: Credentials,
    v6: bool,
) -> (Result<Replay, String>, Vec<u8>) {
    let (addr, task) = scripted(script, v6).await;
    let outcome = tokio::time::timeout(BOUND, async {
        let backend = ManageSieveBackend::establish(connect(addr, forwarding).await, &identity)
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
    run_as(script, forwarding, v4_identity(), credentials, false).await
}

fn accepted(outcome: Result<Replay, String>) -> (Vec<u8>, Vec<u8>) {
    match outcome.expect("replay") {
        Replay::Accepted { reply, rest, .. } => (reply, rest),
        Replay::Rejected { reply } => panic!("rejected: {}", String::from_utf8_lossy(&reply)),
    }
}

fn rejected(outcome: Result<Replay, String>) -> Vec<u8> {
    match outcome.expect("replay") {
        Replay::Rejected { reply } => reply,
        Replay::Accepted { .. } => panic!("accepted"),
    }
}

#[tokio::test]
async fn replay_with_initial_response_and_verbatim_reply() {
    let (outcome, received) = run(
        vec![
            Step::Send(CAPABILITIES),
            Step::ReadLine,
            Step::Send(b"OK (SASL \"dGhhbmtz\") \"Logged in.\"\r\nextra"),
        ],
        Forwarding::None,
        plain("alice", "pw"),
    )
    .await;
    assert_eq!(received, b"AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHB3\"\r\n");
    let (reply, rest) = accepted(outcome);
    assert_eq!(reply, b"OK (SASL \"dGhhbmtz\") \"Logged in.\"\r\n");
    assert!(b"extra".starts_with(&rest));
}

#[tokio::test]
async fn sasl_login_and_oauth_replays() {
    let login = sasl::decode_login(b"bob", b"p\"w").expect("login");
    let (outcome, received) = run(
        vec![
            Step::Send(CAPABILITIES),
            Step::ReadLine,
            Step::Send(b"OK\r\n"),
        ],
        Forwarding::None,
        login,
    )
    .await;
    // SASL LOGIN goes to the backend as PLAIN.
    assert_eq!(received, b"AUTHENTICATE \"PLAIN\" \"AGJvYgBwInc=\"\r\n");
    assert_eq!(accepted(outcome).0, b"OK\r\n");

    let payload = b"n,a=carol@example.org,\x01auth=Bearer tok\x01\x01";
    let bearer = sasl::decode(Mechanism::OAuthBearer, payload).expect("oauthbearer");
    let (outcome, received) = run(
        vec![
            Step::Send(CAPABILITIES),
            Step::ReadLine,
            Step::Send(b"OK \"Logged in.\"\r\n"),
        ],
        Forwarding::None,
        bearer,
    )
    .await;
    let expected = format!(
        "AUTHENTICATE \"OAUTHBEARER\" \"{}\"\r\n",
        sasl::encode_base64(payload)
    );
    assert_eq!(String::from_utf8(received).expect("utf-8"), expected);
    accepted(outcome);
}

#[tokio::test]
async fn a_challenge_after_the_response_is_acknowledged() {
    let (outcome, received) = run(
        vec![
            Step::Send(CAPABILITIES),
            Step::ReadLine,
            Step::Send(b"{28}\r\neyJzdGF0dXMiOiJpbnZhbGlkIn0=\r\n"),
            Step::ReadLine,
            Step::Send(b"\"\"\r\n"),
            Step::ReadLine,
            Step::Send(b"NO {13}\r\nToken expired\r\n"),
        ],
        Forwarding::None,
        plain("alice", "pw"),
    )
    .await;
    assert_eq!(
        received,
        b"AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHB3\"\r\n\"AQ==\"\r\n\"AQ==\"\r\n".as_slice()
    );
    assert_eq!(rejected(outcome), b"NO {13}\r\nToken expired\r\n");
}

#[tokio::test]
async fn rejections_are_relayed_verbatim() {
    let (outcome, _) = run(
        vec![
            Step::Send(CAPABILITIES),
            Step::ReadLine,
            Step::Send(b"NO (AUTH-TOO-WEAK) \"Authentication failed.\"\r\n"),
        ],
        Forwarding::None,
        plain("alice", "pw"),
    )
    .await;
    assert_eq!(
        rejected(outcome),
        b"NO (AUTH-TOO-WEAK) \"Authentication failed.\"\r\n"
    );
}

#[tokio::test]
async fn xclient_is_sent_when_forwarding_and_advertised() {
    let (outcome, received) = run(
        vec![
            Step::Send(CAPABILITIES),
            Step::ReadLine,
            Step::Send(b"OK \"Updated\"\r\n"),
            Step::ReadLine,
            Step::Send(b"OK \"Logged in.\"\r\n"),
        ],
        Forwarding::Xclient,
        plain("alice", "pw"),
    )
    .await;
    accepted(outcome);
    assert_eq!(
        String::from_utf8(received).expect("utf-8"),
        "XCLIENT ADDR=192.0.2.7 PORT=50123 DESTADDR=198.51.100.1 DESTPORT=4190 SESSION=P2a \
         TTL=6 CLIENT-TRANSPORT=insecure\r\n\
         AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHB3\"\r\n"
    );
}

#[tokio::test]
async fn xclient_is_not_sent_unless_advertised_or_configured() {
    let without: &[u8] = b"\"IMPLEMENTATION\" \"x\"\r\n\"SASL\" \"PLAIN\"\r\nOK\r\n";
    let (outcome, received) = run(
        vec![Step::Send(without), Step::ReadLine, Step::Send(b"OK\r\n")],
        Forwarding::Xclient,
        plain("a", "b"),
    )
    .await;
    accepted(outcome);
    assert!(received.starts_with(b"AUTHENTICATE "));
    let (outcome, received) = run(
        vec![
            Step::Send(CAPABILITIES),
            Step::ReadLine,
            Step::Send(b"OK\r\n"),
        ],
        Forwarding::Proxy,
        plain("a", "b"),
    )
    .await;
    accepted(outcome);
    assert!(received.starts_with(b"AUTHENTICATE "));
}

#[tokio::test]
async fn a_refused_xclient_fails_the_backend() {
    let (outcome, _) = run(
        vec![
            Step::Send(CAPABILITIES),
            Step::ReadLine,
            Step::Send(b"NO \"You are not from trusted IP\"\r\n"),
        ],
        Forwarding::Xclient,
        plain("a", "b"),
    )
    .await;
    let error = outcome.err().expect("refused");
    assert!(
        error.contains("xclient") && error.contains("not from trusted IP"),
        "{error}"
    );
}

#[tokio::test]
async fn unusable_capability_responses() {
    for (greeting, needle) in [
        (
            &b"BYE \"Too many connections\"\r\n"[..],
            "Too many connections",
        ),
        (b"\"IMPLEMENTATION\" \"x\"\r\nNO \"go away\"\r\n", "go away"),
    ] {
        let (outcome, _) = run(
            vec![Step::Send(greeting)],
            Forwarding::None,
            plain("a", "b"),
        )
        .await;
        let error = outcome.err().expect("refused");
        assert!(
            error.contains("greeting") && error.contains(needle),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_backend_closing_mid_capabilities_is_retryable() {
    let (addr, _task) = scripted(vec![Step::Send(b"\"IMPLEMENTATION\" \"x\"\r\n")], false).await;
    let error =
        ManageSieveBackend::establish(connect(addr, Forwarding::None).await, &v4_identity())
            .await
            .err()
            .expect("failed");
    assert!(error.is_retryable(), "{error}");
}

#[tokio::test]
async fn starttls_leg_needs_starttls_advertised() {
    let (addr, _task) = scripted(vec![Step::Send(CAPABILITIES)], false).await;
    let mut connected = connect(addr, Forwarding::None).await;
    loopback::starttls_leg(&mut connected);
    let error = ManageSieveBackend::establish(connected, &v4_identity())
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

    // Advertised but refused.
    let (addr, task) = scripted(
        vec![
            Step::Send(b"\"STARTTLS\"\r\nOK\r\n"),
            Step::ReadLine,
            Step::Send(b"NO \"not now\"\r\n"),
        ],
        false,
    )
    .await;
    let mut connected = connect(addr, Forwarding::None).await;
    loopback::starttls_leg(&mut connected);
    let error = ManageSieveBackend::establish(connected, &v4_identity())
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("not now"), "{error}");
    assert_eq!(task.await.expect("script"), b"STARTTLS\r\n");
}

#[test]
fn capability_parsing() {
    let mut caps = Capabilities::default();
    caps.add_line(b"\"IMPLEMENTATION\" \"Dovecot\"\r\n");
    caps.add_line(b"\"sasl\" {11}\r\nPLAIN LOGIN\r\n");
    caps.add_line(b"\"STARTTLS\"\r\n");
    caps.add_line(b"garbage \"\r\n");
    assert!(caps.has("STARTTLS") && caps.has("SASL") && !caps.has("XCLIENT"));
    assert_eq!(caps.value("sasl"), Some("PLAIN LOGIN"));
    assert_eq!(caps.value("STARTTLS"), None);
    assert!(is_status(b"ok\r\n", b"OK") && is_status(b"OK (TAG \"x\") \"y\"\r\n", b"OK"));
    assert!(!is_status(b"OKAY\r\n", b"OK") && !is_status(b"\"OK\"\r\n", b"OK"));
    assert_eq!(trailing_literal(b"NO {12}\r\n"), Some(12));
    assert_eq!(trailing_literal(b"NO {99999999999}\r\n"), None);
}

//! The backend dialogue against scripted loopback servers: what postern sends, byte for
//! byte, and how it reads the (multi-line) replies.

use std::net::SocketAddr;

use postern_config::model::Forwarding;
use tokio::task::JoinHandle;

use super::*;
use crate::proto::testkit::loopback::{
    self, connect, identity as identity_at, plain, request, Step, BOUND,
};

/// A backend on loopback running `script` on one connection; returns what it received
/// (everything, up to EOF once the script is done).
async fn scripted(script: Vec<Step>) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    loopback::scripted("127.0.0.1:0", script, true).await
}

fn identity(client: &str, helo: Option<&str>) -> ClientIdentity {
    ClientIdentity {
        helo: helo.map(str::to_owned),
        ..identity_at(client, "198.51.100.1:587", true)
    }
}

#[test]
fn ehlo_name_is_the_client_s_then_server_hostname_then_proxy() {
    let mut id = identity("192.0.2.1:1", Some("client.example"));
    id.hostname = Some("mx.example".into());
    assert_eq!(ehlo_command(&id), "EHLO client.example\r\n");
    id.helo = Some("bad name".into());
    assert_eq!(ehlo_command(&id), "EHLO mx.example\r\n");
    id.hostname = None;
    assert_eq!(ehlo_command(&id), "EHLO proxy\r\n");
}

async fn run(
    script: Vec<Step>,
    forwarding: Forwarding,
    identity: ClientIdentity,
    credentials: Credentials,
) -> (Result<Replay, String>, Vec<u8>) {
    let (addr, task) = scripted(script).await;
    let outcome = tokio::time::timeout(BOUND, async {
        let backend = SubmissionBackend::establish(connect(addr, forwarding).await, &identity)
            .await
            .map_err(|e| e.to_string())?;
        backend
            .replay(&request(""), &credentials)
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .expect("bounded");
    // Postern's side closes when `outcome`'s stream drops.
    let outcome = outcome.map(|replay| match replay {
        Replay::Accepted { reply, rest, .. } => Replay::Rejected {
            reply: [b"ACCEPTED ".as_slice(), &reply, b"REST ", &rest].concat(),
        },
        rejected => rejected,
    });
    let received = tokio::time::timeout(BOUND * 2, task)
        .await
        .expect("bounded")
        .expect("script");
    (outcome, received)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn reply_of(outcome: Result<Replay, String>) -> String {
    match outcome.expect("replay") {
        Replay::Rejected { reply } => text(&reply),
        Replay::Accepted { .. } => unreachable!("mapped in run()"),
    }
}

const EHLO_REPLY: &[u8] = b"250-backend.test\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n";

#[tokio::test]
async fn plain_replay_and_multi_line_replies() {
    let (outcome, received) = run(
        vec![
            Step::Trickle(b"220-backend.test ESMTP\r\n220 second line\r\n"),
            Step::ReadLine,
            Step::Trickle(EHLO_REPLY),
            Step::ReadLine,
            Step::Send(b"235-2.7.0 one\r\n235 2.7.0 Authentication successful\r\nextra"),
        ],
        Forwarding::None,
        identity("192.0.2.7:50123", Some("client.example")),
        plain("alice", "pw"),
    )
    .await;
    assert_eq!(
        text(&received),
        "EHLO client.example\r\nAUTH PLAIN AGFsaWNlAHB3\r\n"
    );
    let reply = reply_of(outcome);
    assert!(
        reply.starts_with("ACCEPTED 235-2.7.0 one\r\n235 2.7.0 Authentication successful\r\nREST "),
        "{reply:?}"
    );
    // What the backend sent past its reply belongs to the client (if it was read yet).
    assert!("extra".starts_with(reply.split("REST ").nth(1).unwrap_or_default()));
}

#[tokio::test]
async fn rejection_is_verbatim_then_quit() {
    let (outcome, received) = run(
        vec![
            Step::Send(b"220 hi\r\n"),
            Step::ReadLine,
            Step::Send(EHLO_REPLY),
            Step::ReadLine,
            Step::Send(b"535-5.7.8 Username and Password\r\n535 5.7.8 not accepted\r\n"),
        ],
        Forwarding::None,
        identity("192.0.2.7:50123", None),
        plain("alice", "wrong"),
    )
    .await;
    assert_eq!(
        reply_of(outcome),
        "535-5.7.8 Username and Password\r\n535 5.7.8 not accepted\r\n"
    );
    assert_eq!(
        text(&received),
        "EHLO proxy\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nQUIT\r\n"
    );
}

#[tokio::test]
async fn oauth_error_challenge_is_acknowledged() {
    let payload = b"n,a=alice@example.org,\x01auth=Bearer tok\x01\x01";
    let credentials = sasl::decode_oauthbearer(payload).expect("oauthbearer");
    let (outcome, received) = run(
        vec![
            Step::Send(b"220 hi\r\n"),
            Step::ReadLine,
            Step::Send(b"250-b\r\n250 AUTH OAUTHBEARER\r\n"),
            Step::ReadLine,
            Step::Send(b"334 eyJzdGF0dXMiOiI0MDEifQ==\r\n"),
            Step::ReadLine,
            Step::Send(b"535 5.7.8 token expired\r\n"),
        ],
        Forwarding::None,
        identity("192.0.2.7:50123", None),
        credentials,
    )
    .await;
    assert_eq!(reply_of(outcome), "535 5.7.8 token expired\r\n");
    let expected = format!("EHLO proxy\r\nAUTH OAUTHBEARER {}\r\nAQ==\r\nQUIT\r\n", {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(payload)
    });
    assert_eq!(text(&received), expected);
}

#[tokio::test]
async fn sasl_login_is_replayed_as_plain() {
    let credentials = sasl::decode_login(b"bob", b"p w").expect("login");
    let (outcome, received) = run(
        vec![
            Step::Send(b"220 hi\r\n"),
            Step::ReadLine,
            Step::Send(EHLO_REPLY),
            Step::ReadLine,
            Step::Send(b"235 ok\r\n"),
        ],
        Forwarding::None,
        identity("192.0.2.7:50123", None),
        credentials,
    )
    .await;
    assert!(reply_of(outcome).starts_with("ACCEPTED 235 ok\r\n"));
    assert_eq!(text(&received), "EHLO proxy\r\nAUTH PLAIN AGJvYgBwIHc=\r\n");
}

#[tokio::test]
async fn xclient_ipv4_filtered_then_ehlo_again() {
    let (outcome, received) = run(
        vec![
            Step::Send(b"220 hi\r\n"),
            Step::ReadLine,
            Step::Send(b"250-b\r\n250-XCLIENT ADDR PORT HELO\r\n250 AUTH PLAIN\r\n"),
            Step::ReadLine,
            Step::Send(b"220 b ESMTP after xclient\r\n"),
            Step::ReadLine,
            Step::Send(b"250-b\r\n250 AUTH PLAIN\r\n"),
            Step::ReadLine,
            Step::Send(b"235 ok\r\n"),
        ],
        Forwarding::Xclient,
        identity("192.0.2.7:50123", Some("[192.0.2.7]")),
        plain("alice", "pw"),
    )
    .await;
    assert!(reply_of(outcome).starts_with("ACCEPTED 235 ok\r\n"));
    assert_eq!(
        text(&received),
        "EHLO [192.0.2.7]\r\n\
         XCLIENT ADDR=192.0.2.7 PORT=50123 HELO=[192.0.2.7]\r\n\
         EHLO [192.0.2.7]\r\n\
         AUTH PLAIN AGFsaWNlAHB3\r\n"
    );
}

#[tokio::test]
async fn xclient_full_attribute_set_and_refusal() {
    let (outcome, received) = run(
        vec![
            Step::Send(b"220 hi\r\n"),
            Step::ReadLine,
            Step::Send(
                b"250-b\r\n250-XCLIENT ADDR PORT DESTADDR DESTPORT SESSION TTL \
                  CLIENT-TRANSPORT HELO PROTO LOGIN NAME\r\n250 AUTH PLAIN\r\n",
            ),
            Step::ReadLine,
            Step::Send(b"550 5.7.0 insufficient authorization\r\n"),
        ],
        Forwarding::Xclient,
        identity("[2001:db8::7]:50123", Some("client.example")),
        plain("alice", "pw"),
    )
    .await;
    let error = outcome.err().expect("refused");
    assert!(
        error.contains("xclient") && error.contains("insufficient"),
        "{error}"
    );
    assert_eq!(
        text(&received),
        "EHLO client.example\r\n\
         XCLIENT ADDR=IPV6:2001:db8::7 PORT=50123 DESTADDR=198.51.100.1 DESTPORT=587 \
         SESSION=P2a TTL=6 CLIENT-TRANSPORT=TLS HELO=client.example PROTO=ESMTP\r\n"
    );
}

#[tokio::test]
async fn xclient_only_when_forwarding_says_so() {
    let (outcome, received) = run(
        vec![
            Step::Send(b"220 hi\r\n"),
            Step::ReadLine,
            Step::Send(b"250-b\r\n250 XCLIENT ADDR\r\n"),
            Step::ReadLine,
            Step::Send(b"235 ok\r\n"),
        ],
        Forwarding::Proxy,
        identity("192.0.2.7:1", None),
        plain("a", "b"),
    )
    .await;
    assert!(reply_of(outcome).starts_with("ACCEPTED"));
    assert_eq!(text(&received), "EHLO proxy\r\nAUTH PLAIN AGEAYg==\r\n");
}

#[tokio::test]
async fn unusable_greetings_ehlo_and_starttls() {
    let (outcome, _) = run(
        vec![Step::Send(b"554 5.3.2 go away\r\n")],
        Forwarding::None,
        identity("192.0.2.7:1", None),
        plain("a", "b"),
    )
    .await;
    let error = outcome.err().expect("refused");
    assert!(
        error.contains("greeting") && error.contains("go away"),
        "{error}"
    );

    let (outcome, _) = run(
        vec![
            Step::Send(b"220 hi\r\n"),
            Step::ReadLine,
            Step::Send(b"502 5.5.1 no EHLO\r\n"),
        ],
        Forwarding::None,
        identity("192.0.2.7:1", None),
        plain("a", "b"),
    )
    .await;
    assert!(outcome.err().expect("refused").contains("ehlo"));

    let (outcome, _) = run(
        vec![Step::Send(b"220 hi\r\n"), Step::Send(b"not smtp\r\n")],
        Forwarding::None,
        identity("192.0.2.7:1", None),
        plain("a", "b"),
    )
    .await;
    let error = outcome.err().expect("refused");
    assert!(
        error.contains("greeting") || error.contains("ehlo"),
        "{error}"
    );

    let (addr, _task) = scripted(vec![
        Step::Send(b"220 hi\r\n"),
        Step::ReadLine,
        Step::Send(EHLO_REPLY),
    ])
    .await;
    let mut connected = connect(addr, Forwarding::None).await;
    loopback::starttls_leg(&mut connected);
    let error = SubmissionBackend::establish(connected, &identity("192.0.2.7:1", None))
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
    let (addr, _task) = scripted(vec![Step::Send(b"220-hi\r\n")]).await;
    let connected = connect(addr, Forwarding::None).await;
    let who = identity("192.0.2.7:1", None);
    let error = SubmissionBackend::establish(connected, &who);
    let error = tokio::time::timeout(BOUND * 3, error)
        .await
        .expect("bounded")
        .err()
        .expect("failed");
    assert!(error.is_retryable(), "{error}");
}

#[test]
fn reply_lines_and_extensions() {
    assert_eq!(
        parse_reply_line(b"250-A B\r\n"),
        Some((250, true, &b"A B"[..]))
    );
    assert_eq!(parse_reply_line(b"250\r\n"), Some((250, false, &b""[..])));
    assert_eq!(parse_reply_line(b"25x ok\r\n"), None);
    assert_eq!(parse_reply_line(b"250_ok\r\n"), None);
    let reply = Reply {
        code: 250,
        raw: Vec::new(),
        texts: vec![
            b"host".to_vec(),
            b"xclient addr port".to_vec(),
            b"STARTTLS".to_vec(),
        ],
    };
    let ext = Extensions::from_ehlo(&reply);
    assert_eq!(
        ext.get("XCLIENT"),
        Some(&["ADDR".to_string(), "PORT".to_string()][..])
    );
    assert!(ext.has("starttls") && !ext.has("HOST"));
    assert_eq!(xclient_command(&identity("192.0.2.7:1", None), &[]), None);
    assert_eq!(
        xclient_command(
            &identity("[::ffff:192.0.2.9]:25", Some("bad name")),
            &["ADDR".into(), "HELO".into(), "LOGIN".into()]
        )
        .as_deref(),
        Some("XCLIENT ADDR=192.0.2.9\r\n")
    );
}

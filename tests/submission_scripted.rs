//! Submission through the real binary against scripted backends (issue 4, "Against
//! scripted backends"): what a real Dovecot cannot show on demand.
//!
//! Each test starts `postern run` (trace logging) with a plain submission listener that
//! allows cleartext AUTH, in front of [`MockUpstream`] backends speaking a scripted
//! ESMTP dialogue, and asserts the exact bytes a backend received: the XCLIENT line for
//! IPv4 and IPv6 clients filtered to the attributes the backend lists, the EHLO sent
//! again after it, the `AUTH <MECH> <b64>` replay of every mechanism (SASL LOGIN
//! reconstructed as PLAIN), MAIL pipelined behind AUTH, and the refusals: CR/LF/NUL
//! inside decoded credentials (no backend contacted), `hide_auth_errors`, a backend
//! that is down. Every test checks that no credential reached postern's log.
//!
//! postern drops privileges to the test account, so the tests need root; without it
//! they print `skipped:` and pass.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use support::client::{self, LineClient};
use support::mock_upstream::{MockBuilder, MockUpstream};
use support::proxy::{Proxy, TestConfig};
use support::scripted::{assert_log_clean, assert_received, b64, plain, start_traced, WAIT};

const GREETING: &[u8] = b"220 backend.test ESMTP mock\r\n";
const EHLO_REPLY: &[u8] = b"250-backend.test\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n";
const ACCEPTED: &[u8] = b"235 2.7.0 Authentication successful\r\n";

/// `[destination.<name>]` at `host`:`port`, a plain submission leg, no PROXY header,
/// cleartext replay allowed; `extra` goes in the destination table.
fn destination(name: &str, host: &str, port: u16, extra: &str) -> String {
    support::scripted::destination(name, "submission", host, port, extra, "")
}

/// Starts postern (trace logging) with a plain submission listener `submission` on
/// `bind` allowing cleartext AUTH (SASL LOGIN listed), in front of `tables` (the default
/// destination is `backend`).
fn start_proxy(dir: &tempfile::TempDir, bind: &str, tables: &str) -> Proxy {
    let config = TestConfig::new(dir.path())
        .listener(
            "submission",
            &format!(
                "protocol = \"submission\"\nbind = [\"{bind}\"]\ntls = \"plain\"\n\
                 max_auth_attempts = 10"
            ),
        )
        .raw(
            "[capabilities.submission]\nallow_plain_auth_without_tls = true\n\
             sasl = [\"PLAIN\", \"LOGIN\", \"OAUTHBEARER\", \"XOAUTH2\"]",
        )
        .raw(tables)
        .default_destination("backend");
    start_traced(&config, dir)
}

/// A client on `stream`, past postern's greeting.
fn greeted(stream: std::net::TcpStream) -> LineClient {
    let mut c = LineClient::from_stream(stream);
    let greeting = c.read_line();
    assert!(
        greeting.starts_with("220 ") && greeting.contains(" ESMTP "),
        "postern's greeting: {greeting:?}"
    );
    c
}

/// Greeting, EHLO reply, then `auth_reply` to the AUTH line, then record everything
/// until postern closes.
fn backend_script(ehlo_reply: &[u8], auth_reply: &[u8]) -> MockBuilder {
    MockUpstream::new()
        .send(GREETING)
        .read_line()
        .send(ehlo_reply)
        .read_line()
        .send(auth_reply)
        .read_to_eof()
}

/// Waits until postern closes the client connection; returns what it sent before.
fn closed(c: &mut LineClient) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        match c.try_read_line() {
            Ok(Some(line)) => lines.push(line),
            Ok(None) => return lines,
            Err(e) => panic!("read: {e} after {lines:?}"),
        }
    }
}

#[test]
fn xclient_ipv4_is_filtered_to_the_advertised_attributes_then_ehlo_again() {
    let name = "xclient_ipv4_is_filtered_to_the_advertised_attributes_then_ehlo_again";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = MockUpstream::new()
        .send(GREETING)
        .read_line()
        .send(b"250-backend.test\r\n250-XCLIENT ADDR PORT HELO\r\n250 AUTH PLAIN\r\n")
        .read_line()
        .send(b"220 backend.test ESMTP fresh session\r\n")
        .read_line()
        .send(EHLO_REPLY)
        .read_line()
        .send(ACCEPTED)
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "127.0.0.1:0",
        &destination(
            "backend",
            "127.0.0.1",
            backend.port(),
            "forwarding = \"xclient\"",
        ),
    );
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let stream = client::connect_from(source, proxy.addr("submission"));
    let port = stream.local_addr().expect("local addr").port();
    let mut c = greeted(stream);
    c.send("EHLO client.example");
    c.expect_reply("250");
    c.send(&format!("AUTH PLAIN {}", b64(&plain("alice", "s3cret-v4"))));
    assert_eq!(c.read_line(), "235 2.7.0 Authentication successful");
    assert_received(
        &backend,
        0,
        format!(
            "EHLO client.example\r\n\
             XCLIENT ADDR=127.0.0.2 PORT={port} HELO=client.example\r\n\
             EHLO client.example\r\n\
             AUTH PLAIN {}\r\n",
            b64(&plain("alice", "s3cret-v4"))
        )
        .as_bytes(),
    );
    assert_log_clean(&proxy, &["s3cret-v4", &b64(&plain("alice", "s3cret-v4"))]);
}

#[test]
fn xclient_ipv6_client_gets_the_ipv6_prefix_and_every_attribute() {
    let name = "xclient_ipv6_client_gets_the_ipv6_prefix_and_every_attribute";
    if !support::skip_unless_root(name) {
        return;
    }
    if !support::ipv6_loopback_available() {
        support::skip_for_host(name, "no IPv6 loopback");
        return;
    }
    let backend = MockUpstream::new()
        .send(GREETING)
        .read_line()
        .send(
            b"250-backend.test\r\n250-XCLIENT ADDR PORT PROTO HELO LOGIN NAME DESTADDR \
              DESTPORT SESSION TTL CLIENT-TRANSPORT\r\n250 AUTH PLAIN\r\n",
        )
        .read_line()
        .send(b"250 2.0.0 Ok\r\n")
        .read_line()
        .send(EHLO_REPLY)
        .read_line()
        .send(ACCEPTED)
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "[::1]:0",
        &destination(
            "backend",
            "127.0.0.1",
            backend.port(),
            "forwarding = \"xclient\"",
        ),
    );
    let listener = proxy.addr("submission");
    let stream = client::connect(listener);
    let port = stream.local_addr().expect("local addr").port();
    let mut c = greeted(stream);
    c.send("EHLO [IPv6:::1]");
    c.expect_reply("250");
    c.send(&format!("AUTH PLAIN {}", b64(&plain("alice", "s3cret-v6"))));
    assert_eq!(c.read_line(), "235 2.7.0 Authentication successful");

    let got = backend.wait_received(0, 1, WAIT);
    let text = String::from_utf8_lossy(&got).into_owned();
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(lines.first().copied(), Some("EHLO [IPv6:::1]"), "{text}");
    let xclient = backend_line(&backend, 1);
    let prefix = format!(
        "XCLIENT ADDR=IPV6:::1 PORT={port} DESTADDR=IPV6:::1 DESTPORT={} SESSION=P",
        listener.port()
    );
    let suffix = " TTL=6 CLIENT-TRANSPORT=insecure HELO=[IPv6:::1] PROTO=ESMTP";
    assert!(
        xclient.starts_with(&prefix) && xclient.ends_with(suffix),
        "XCLIENT line: {xclient:?}"
    );
    let session = &xclient[prefix.len()..xclient.len() - suffix.len()];
    assert!(
        !session.is_empty() && session.chars().all(|c| c.is_ascii_hexdigit()),
        "session id {session:?}"
    );
    assert!(!xclient.contains("LOGIN="), "{xclient}");
    assert_eq!(backend_line(&backend, 2), "EHLO [IPv6:::1]");
    assert_eq!(
        backend_line(&backend, 3),
        format!("AUTH PLAIN {}", b64(&plain("alice", "s3cret-v6")))
    );
    assert_log_clean(&proxy, &["s3cret-v6"]);
}

/// Line `n` (from 0) of what backend connection 0 received, waiting for it.
fn backend_line(backend: &MockUpstream, n: usize) -> String {
    support::eventually(WAIT, &format!("line {n} at the backend"), || {
        let got = backend.received(0);
        let text = String::from_utf8_lossy(&got).into_owned();
        let complete = text.matches("\r\n").count() > n;
        complete.then(|| text.split("\r\n").nth(n).unwrap_or_default().to_owned())
    })
}

/// One login per mechanism, each on a fresh client and backend connection; the AUTH
/// line the backend received for each.
fn replays(clients: &[Vec<String>]) -> (Vec<String>, Vec<Vec<String>>, Proxy) {
    let backend = backend_script(EHLO_REPLY, ACCEPTED).start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "127.0.0.1:0",
        &destination("backend", "127.0.0.1", backend.port(), ""),
    );
    let mut auth_lines = Vec::new();
    let mut transcripts = Vec::new();
    for (i, lines) in clients.iter().enumerate() {
        let mut c = greeted(client::connect(proxy.addr("submission")));
        let mut seen = Vec::new();
        for line in lines {
            c.send(line);
            seen.push(c.read_line());
        }
        assert_eq!(
            seen.last().map(String::as_str),
            Some("235 2.7.0 Authentication successful"),
            "client {i}: {seen:?}"
        );
        let got = backend.wait_received(i, 1, WAIT);
        let text = support::eventually(WAIT, "the AUTH line", || {
            let got = backend.received(i);
            let text = String::from_utf8_lossy(&got).into_owned();
            (text.matches("\r\n").count() >= 2).then_some(text)
        });
        assert!(text.starts_with("EHLO proxy\r\n"), "{text} {got:?}");
        auth_lines.push(text.split("\r\n").nth(1).unwrap_or_default().to_owned());
        transcripts.push(seen);
    }
    // The proxy must outlive nothing here but the assertions; the backend's threads end
    // when postern's connections close.
    drop(backend);
    (auth_lines, transcripts, proxy)
}

#[test]
fn every_mechanism_is_replayed_exactly() {
    let name = "every_mechanism_is_replayed_exactly";
    if !support::skip_unless_root(name) {
        return;
    }
    let plain_ir = b64(&plain("alice@example.org", "pl4in-secret"));
    let token = "ya29.opaque-token-7f3a";
    let oauthbearer =
        b64(format!("n,a=alice@example.org,\x01auth=Bearer {token}\x01\x01").as_bytes());
    let xoauth2 = b64(format!("user=alice@example.org\x01auth=Bearer {token}\x01\x01").as_bytes());
    let authz = b64(b"admin@example.org\0alice@example.org\0master-secret");
    let plain_ir_line = format!("AUTH PLAIN {plain_ir}");
    let oauthbearer_line = format!("AUTH OAUTHBEARER {oauthbearer}");
    let authz_line = format!("AUTH PLAIN {authz}");
    let clients = vec![
        vec![plain_ir_line],
        vec!["AUTH PLAIN".to_string(), plain_ir.clone()],
        vec![oauthbearer_line],
        vec!["AUTH XOAUTH2".to_string(), xoauth2.clone()],
        vec![authz_line],
    ];
    let (auth_lines, transcripts, proxy) = replays(&clients);
    assert_eq!(transcripts[1][0], "334 ");
    assert_eq!(
        auth_lines,
        [
            format!("AUTH PLAIN {plain_ir}"),
            format!("AUTH PLAIN {plain_ir}"),
            format!("AUTH OAUTHBEARER {oauthbearer}"),
            format!("AUTH XOAUTH2 {xoauth2}"),
            format!("AUTH PLAIN {authz}"),
        ]
    );
    assert_log_clean(
        &proxy,
        &[
            "pl4in-secret",
            token,
            "master-secret",
            &plain_ir,
            &oauthbearer,
        ],
    );
}

#[test]
fn auth_login_is_reconstructed_as_plain() {
    let name = "auth_login_is_reconstructed_as_plain";
    if !support::skip_unless_root(name) {
        return;
    }
    let user = b64(b"bob@example.org");
    let password = b64(b"l0gin-secret");
    let with_ir = format!("AUTH LOGIN {user}");
    let clients = vec![
        vec!["AUTH LOGIN".to_string(), user.clone(), password.clone()],
        vec![with_ir, password.clone()],
    ];
    let (auth_lines, transcripts, proxy) = replays(&clients);
    assert_eq!(
        transcripts[0][..2],
        ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"]
    );
    assert_eq!(transcripts[1][0], "334 UGFzc3dvcmQ6");
    let expected = format!(
        "AUTH PLAIN {}",
        b64(&plain("bob@example.org", "l0gin-secret"))
    );
    assert_eq!(auth_lines, [expected.clone(), expected]);
    assert_log_clean(&proxy, &["l0gin-secret", &password]);
}

#[test]
fn cr_lf_nul_in_decoded_credentials_are_refused_before_any_backend() {
    let name = "cr_lf_nul_in_decoded_credentials_are_refused_before_any_backend";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = backend_script(EHLO_REPLY, ACCEPTED).start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "127.0.0.1:0",
        &destination("backend", "127.0.0.1", backend.port(), ""),
    );
    let mut c = greeted(client::connect(proxy.addr("submission")));
    let bad_plain = [
        b"\0alice\0pass\rword".to_vec(),
        b"\0alice\0pass\nword".to_vec(),
        b"\0al\nice\0password".to_vec(),
        b"\0alice\0pass\0word".to_vec(),
        b"ali\rce\0alice\0password".to_vec(),
    ];
    for payload in &bad_plain {
        c.send(&format!("AUTH PLAIN {}", b64(payload)));
        assert_eq!(
            c.read_line(),
            "535 5.7.8 Authentication credentials invalid"
        );
    }
    // SASL LOGIN answers are decoded separately: a NUL in the username, CR in the
    // password.
    for (user, password) in [(&b"bo\0b"[..], &b"pw"[..]), (b"bob", b"p\rw")] {
        c.send("AUTH LOGIN");
        c.expect_prefix("334 ");
        c.send(&b64(user));
        c.expect_prefix("334 ");
        c.send(&b64(password));
        assert_eq!(
            c.read_line(),
            "535 5.7.8 Authentication credentials invalid"
        );
    }
    c.send("QUIT");
    assert_eq!(c.read_line(), "221 2.0.0 Bye");
    assert_eq!(
        backend.connections(),
        0,
        "a backend was contacted for malformed credentials"
    );
}

#[test]
fn mail_pipelined_behind_auth_reaches_the_backend() {
    let name = "mail_pipelined_behind_auth_reaches_the_backend";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = MockUpstream::new()
        .send(GREETING)
        .read_line()
        .send(EHLO_REPLY)
        .read_line()
        .send(ACCEPTED)
        .read_line()
        .send(b"250 2.1.0 Ok\r\n")
        .read_line()
        .send(b"250 2.1.5 Ok\r\n")
        .read_to_eof()
        .start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "127.0.0.1:0",
        &destination("backend", "127.0.0.1", backend.port(), ""),
    );
    let mut c = greeted(client::connect(proxy.addr("submission")));
    c.send("EHLO pipelining.client");
    c.expect_reply("250");
    let auth = format!("AUTH PLAIN {}", b64(&plain("alice", "p1pe-secret")));
    c.send_raw(
        format!("{auth}\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<b@example.net>\r\n")
            .as_bytes(),
    );
    assert_eq!(c.read_line(), "235 2.7.0 Authentication successful");
    assert_eq!(c.read_line(), "250 2.1.0 Ok");
    assert_eq!(c.read_line(), "250 2.1.5 Ok");
    assert_received(
        &backend,
        0,
        format!(
            "EHLO pipelining.client\r\n{auth}\r\nMAIL FROM:<alice@example.org>\r\n\
             RCPT TO:<b@example.net>\r\n"
        )
        .as_bytes(),
    );
    assert_log_clean(&proxy, &["p1pe-secret"]);
}

#[test]
fn backend_refusals_are_relayed_or_hidden_and_the_client_may_retry() {
    let name = "backend_refusals_are_relayed_or_hidden_and_the_client_may_retry";
    if !support::skip_unless_root(name) {
        return;
    }
    let refusal: &[u8] =
        b"535-5.7.8 Username and Password not accepted.\r\n535 5.7.8 Learn more\r\n";
    let shown = backend_script(EHLO_REPLY, refusal)
        .then_connection()
        .send(GREETING)
        .read_line()
        .send(EHLO_REPLY)
        .read_line()
        .send(ACCEPTED)
        .read_to_eof()
        .start();
    let hidden = backend_script(EHLO_REPLY, refusal).start();
    let dir = support::shared_tempdir();
    let tables = format!(
        "{}\n{}",
        destination("backend", "127.0.0.1", shown.port(), ""),
        destination(
            "hidden",
            "127.0.0.1",
            hidden.port(),
            "hide_auth_errors = true"
        )
    );
    support::write_file(
        &dir.path().join("mappings.txt"),
        "carol@example.org\thidden\n",
    );
    let proxy = start_proxy(&dir, "127.0.0.1:0", &tables);

    let mut c = greeted(client::connect(proxy.addr("submission")));
    c.send(&format!(
        "AUTH PLAIN {}",
        b64(&plain("alice@example.org", "wr0ng"))
    ));
    assert_eq!(
        c.expect_reply("535"),
        [
            "535-5.7.8 Username and Password not accepted.",
            "535 5.7.8 Learn more"
        ]
    );
    // postern said QUIT to the refusing backend and dropped it.
    let first = shown.wait_eof(0, WAIT);
    assert!(
        first.received.ends_with(b"QUIT\r\n"),
        "{:?}",
        first.received
    );
    c.send(&format!(
        "AUTH PLAIN {}",
        b64(&plain("alice@example.org", "r1ght"))
    ));
    assert_eq!(c.read_line(), "235 2.7.0 Authentication successful");

    let mut c = greeted(client::connect(proxy.addr("submission")));
    c.send(&format!(
        "AUTH PLAIN {}",
        b64(&plain("carol@example.org", "wr0ng"))
    ));
    assert_eq!(c.read_line(), "535 5.7.8 Authentication failed.");
    c.send("NOOP");
    assert_eq!(c.read_line(), "250 2.0.0 OK");
    assert_log_clean(&proxy, &["wr0ng", "r1ght"]);
}

#[test]
fn an_unreachable_backend_gets_421_and_a_close() {
    let name = "an_unreachable_backend_gets_421_and_a_close";
    if !support::skip_unless_root(name) {
        return;
    }
    // A port that was free a moment ago and that nothing listens on.
    let port = support::free_port();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "127.0.0.1:0",
        &destination("backend", "127.0.0.1", port, ""),
    );
    let mut c = greeted(client::connect(proxy.addr("submission")));
    c.send(&format!(
        "AUTH PLAIN {}",
        b64(&plain("alice", "d0wn-secret"))
    ));
    assert_eq!(closed(&mut c), ["421 4.3.0 backend unavailable"]);
    assert_log_clean(&proxy, &["d0wn-secret"]);
}

#[test]
fn the_pre_auth_dialogue_is_postern_s_own() {
    let name = "the_pre_auth_dialogue_is_postern_s_own";
    if !support::skip_unless_root(name) {
        return;
    }
    let backend = backend_script(EHLO_REPLY, ACCEPTED).start();
    let dir = support::shared_tempdir();
    let proxy = start_proxy(
        &dir,
        "127.0.0.1:0",
        &destination("backend", "127.0.0.1", backend.port(), ""),
    );
    let addr: SocketAddr = proxy.addr("submission");
    let mut c = LineClient::connect(addr);
    // No server.hostname: the listener's address literal.
    assert_eq!(c.read_line(), "220 [127.0.0.1] ESMTP at your service.");
    c.send("EHLO me");
    assert_eq!(
        c.expect_reply("250"),
        [
            "250-[127.0.0.1] at your service, [me]",
            "250-ENHANCEDSTATUSCODES",
            "250-8BITMIME",
            "250-BINARYMIME",
            "250-SMTPUTF8",
            "250-PIPELINING",
            "250-CHUNKING",
            "250-REQUIRETLS",
            "250-SIZE",
            "250 AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2",
        ]
    );
    for (line, reply) in [
        ("HELO me", "250 [127.0.0.1]"),
        ("NOOP", "250 2.0.0 OK"),
        ("RSET", "250 2.0.0 OK"),
        ("MAIL FROM:<a@b>", "503 5.5.1 Command not allowed here"),
        ("STARTTLS", "454 4.7.0 TLS not available"),
        (
            "AUTH CRAM-MD5",
            "504 5.5.4 Unrecognized authentication type",
        ),
        ("AUTH PLAIN ???", "501 5.5.2 Cannot decode response"),
        ("FOO BAR\x01", "503 5.5.1 Command not allowed here"),
        ("1234", "500 5.5.2 Syntax error"),
    ] {
        c.send(line);
        assert_eq!(c.read_line(), reply, "reply to {line:?}");
    }
    c.send("AUTH XOAUTH2");
    assert_eq!(c.read_line(), "334 ");
    c.send("*");
    assert_eq!(c.read_line(), "501 5.0.0 Authentication cancelled");
    c.send("QUIT");
    assert_eq!(closed(&mut c), ["221 2.0.0 Bye"]);
    assert_eq!(backend.connections(), 0);
}

//! SMTP/LMTP pass-through through the real `postern` binary: a message delivered over
//! LMTP by a real client reaches a real Dovecot unchanged, and the relay carries bytes
//! exactly, half-closes included, in both directions.

mod support;

use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use support::client::{self, Ending, LineClient};
use support::dovecot::{Dovecot, DovecotOpts};
use support::mock_upstream::MockUpstream;
use support::proxy::{Proxy, TestConfig};

const WAIT: Duration = Duration::from_secs(20);

const LMTP_LISTENER: &str = r#"
protocol = "lmtp"
bind = ["127.0.0.1:0"]
tls = "plain"
"#;

const SMTP_LISTENER: &str = r#"
protocol = "smtp"
bind = ["127.0.0.1:0"]
tls = "plain"
"#;

#[test]
fn lmtp_delivery_through_postern_lands_byte_identical_in_dovecot() {
    let name = "lmtp_delivery_through_postern_lands_byte_identical_in_dovecot";
    let opts = DovecotOpts::default().with_user("carol@example.org", "carol-secret");
    let Some(dovecot) = Dovecot::start(name, opts) else {
        return;
    };
    let (dir, proxy) = start_lmtp("dovecot", dovecot.lmtp.port());
    let addr = proxy.addr("lmtp");

    // Two deliveries over separate sessions, to two mailboxes, by Python's smtplib.LMTP.
    for (rcpt, tag) in [
        ("alice@example.org", "through-postern-1"),
        ("carol@example.org", "through-postern-2"),
    ] {
        let msg = support::sample_message(tag);
        client::lmtp_deliver(addr, "bob@example.net", &[rcpt], &msg, dir.path())
            .unwrap_or_else(|e| panic!("{e}\ndovecot log:\n{}", dovecot.log()));
        let stored = dovecot.wait_for_messages(rcpt, 1, WAIT);
        assert_eq!(stored.len(), 1, "{rcpt} got {} messages", stored.len());
        let stored = &stored[0];
        // Dovecot prepends its trace headers (Return-Path, Delivered-To, Received);
        // everything the client sent must follow them unchanged.
        assert!(
            stored.ends_with(&msg),
            "stored message for {rcpt} does not end with the message as sent:\n{}",
            String::from_utf8_lossy(stored)
        );
        let prefix = &stored[..stored.len() - msg.len()];
        assert!(
            support::contains(prefix, b"Delivered-To: ")
                || support::contains(prefix, b"Return-Path: "),
            "no Dovecot trace header before the message:\n{}",
            String::from_utf8_lossy(prefix)
        );
    }
}

#[test]
fn lmtp_dialogue_is_relayed_unchanged_to_a_recording_backend() {
    // The backend speaks first (the greeting is relayed, not produced by postern), and
    // every client byte, pipelined, arrives as sent.
    let backend = MockUpstream::new()
        .send(b"220 backend.test LMTP ready\r\n")
        .read_until(b"QUIT\r\n")
        .send(b"221 bye\r\n")
        .close()
        .start();
    let (_dir, proxy) = start_lmtp("backend", backend.port());

    let mut c = LineClient::connect(proxy.addr("lmtp"));
    assert_eq!(c.read_line(), "220 backend.test LMTP ready");
    let dialogue: &[u8] = b"LHLO client.test\r\nMAIL FROM:<bob@example.net>\r\n\
        RCPT TO:<alice@example.org>\r\nDATA\r\nSubject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
    c.send_raw(dialogue);
    assert_eq!(c.read_line(), "221 bye");
    let rec = backend.wait_finished(0, WAIT);
    assert_eq!(
        String::from_utf8_lossy(&rec.received),
        String::from_utf8_lossy(dialogue)
    );
    c.expect_closed_silently(WAIT);
}

#[test]
fn relay_is_byte_exact_when_the_client_half_closes_first() {
    let reply = support::pattern_bytes(256 * 1024, 2);
    let backend = MockUpstream::new()
        .read_to_eof()
        .send(&reply)
        .close()
        .start();
    let dir = support::shared_tempdir();
    let config = TestConfig::new(dir.path())
        .listener("smtp", SMTP_LISTENER)
        .passthrough_destination("backend", backend.port(), false)
        .render();
    let proxy = Proxy::start(config, &dir);

    let upload = support::pattern_bytes(1024 * 1024 + 17, 1);
    let mut s = client::connect(proxy.addr("smtp"));
    // Write from a thread: the relay may apply back-pressure before we read.
    let mut writer = s.try_clone().expect("clone");
    let up = upload.clone();
    let t = std::thread::spawn(move || {
        writer.write_all(&up).expect("upload");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    // The backend answers only after it saw our EOF, so getting the reply proves the
    // half-close was relayed while the other direction stayed open.
    let ending = client::read_until_closed(&mut s, WAIT);
    t.join().expect("writer thread");
    let rec = backend.wait_finished(0, WAIT);
    assert!(rec.saw_eof, "backend never saw the client's half-close");
    assert_eq!(rec.received.len(), upload.len(), "upload length");
    assert!(rec.received == upload, "upload bytes differ");
    assert!(
        matches!(ending, Ending::Eof { .. }),
        "connection reset instead of closed"
    );
    assert_eq!(ending.bytes().len(), reply.len(), "reply length");
    assert!(ending.bytes() == reply.as_slice(), "reply bytes differ");
}

#[test]
fn relay_is_byte_exact_when_the_backend_half_closes_first() {
    let download = support::pattern_bytes(1024 * 1024 + 3, 3);
    let backend = MockUpstream::new()
        .send(&download)
        .shutdown_write()
        .read_to_eof()
        .start();
    let (_dir, proxy) = start_lmtp("backend", backend.port());

    let mut s = client::connect(proxy.addr("lmtp"));
    // EOF from the backend must reach us while our direction stays open.
    let ending = client::read_until_closed(&mut s, WAIT);
    assert!(
        matches!(ending, Ending::Eof { .. }),
        "expected a half-close, got a reset"
    );
    assert_eq!(ending.bytes().len(), download.len(), "download length");
    assert!(
        ending.bytes() == download.as_slice(),
        "download bytes differ"
    );

    let upload = support::pattern_bytes(300 * 1024, 4);
    s.write_all(&upload)
        .expect("upload after the backend's half-close");
    s.shutdown(Shutdown::Write).expect("half-close");
    let rec = backend.wait_finished(0, WAIT);
    assert!(rec.saw_eof, "backend never saw our half-close");
    assert_eq!(rec.received.len(), upload.len(), "upload length");
    assert!(rec.received == upload, "upload bytes differ");
}

/// postern with one plain LMTP pass-through listener in front of `port` (destination
/// `name`); the directory holds its config and log for the test's life.
fn start_lmtp(name: &str, port: u16) -> (tempfile::TempDir, Proxy) {
    let dir = support::shared_tempdir();
    let config = TestConfig::new(dir.path())
        .listener("lmtp", LMTP_LISTENER)
        .passthrough_destination(name, port, false)
        .render();
    let proxy = Proxy::start(config, &dir);
    (dir, proxy)
}

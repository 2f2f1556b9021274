//! Submission through the real `postern` binary in front of real Dovecot submission
//! (issue 4, "Against real Dovecot ... submission services" and "With real clients").
//!
//! Dovecot's submission service relays every message to a local [`SmtpSink`], so a
//! test can check what arrived byte for byte (Dovecot prepends its `Received:` header;
//! what the client sent must follow it unchanged). postern answers the pre-auth SMTP
//! dialogue itself (its greeting carries the test's hostname and banner, never
//! Dovecot's), replays the login on Dovecot, and then MAIL, RCPT and DATA flow straight
//! through.
//!
//! Two routes: alice goes over a plain backend leg with `forwarding = "xclient"`
//! (Dovecot trusts loopback, so it takes the XCLIENT attributes: its login line shows
//! the client's address and postern's session id), bob over a STARTTLS backend leg.
//! Clients: a hand-driven SMTP client (STARTTLS and implicit TLS), Python's smtplib
//! (STARTTLS, SASL LOGIN) and curl `smtp://` with `--ssl-reqd`.
//!
//! Needs root (postern drops privileges, Dovecot runs as root); without it every test
//! prints `skipped:` and passes.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::certs::Ca;
use support::client;
use support::dovecot::{Dovecot, DovecotOpts};
use support::proxy::{Proxy, TestConfig};
use support::smtp_sink::{SinkMessage, SmtpSink};

const WAIT: Duration = Duration::from_secs(20);
/// Longest a client program may run.
const CLIENT_DEADLINE: Duration = Duration::from_secs(40);

const ALICE: (&str, &str) = ("alice@example.org", "alice-secret");
const BOB: (&str, &str) = ("bob@example.org", "bob-secret");
const RCPT: &str = "carol@example.net";

/// postern's `server.hostname` and the first name on its certificate.
const PROXY_NAME: &str = "postern.test";
/// postern's greeting text; Dovecot's is "Dovecot (Debian) ready.".
const BANNER: &str = "postern submission test";
/// The name on Dovecot's certificate.
const DOVECOT_NAME: &str = "dovecot.test";

/// A test's world: drop order is postern, Dovecot, the sink, then the directory.
struct World {
    proxy: Proxy,
    dovecot: Dovecot,
    sink: SmtpSink,
    ca: Ca,
    dir: tempfile::TempDir,
}

/// Dovecot submission (relaying to a fresh sink, STARTTLS offered, loopback trusted
/// for XCLIENT) and postern with a STARTTLS listener `submission` and an implicit-TLS
/// listener `submissions`; alice routes to the plain XCLIENT leg, bob to the STARTTLS
/// leg. `submission_extra` goes into `[capabilities.submission]`.
fn world(test: &str, submission_extra: &str) -> Option<World> {
    if !support::skip_unless_root(test) {
        return None;
    }
    let sink = SmtpSink::start();
    let dir = support::shared_tempdir();
    let ca = Ca::new(dir.path(), "submission");
    let mut opts = DovecotOpts::default()
        .with_user(BOB.0, BOB.1)
        .tls(ca.leaf("dovecot", &[DOVECOT_NAME]))
        .extra(
            "auth_failure_delay = 0\nauth_verbose = yes\n\
             login_trusted_networks = 127.0.0.0/8\n",
        );
    opts.submission_relay = Some(sink.addr());
    let dovecot = Dovecot::start(test, opts)?;
    let port = dovecot.submission.expect("submission port").port();

    let leaf = ca.leaf("postern", &[PROXY_NAME, "127.0.0.1"]);
    let listener =
        |tls: &str| format!("protocol = \"submission\"\nbind = [\"127.0.0.1:0\"]\ntls = \"{tls}\"");
    let config = TestConfig::new(dir.path())
        .raw(&leaf.certificate_table("main"))
        .raw(&format!(
            "[capabilities.submission]\nbanner = \"{BANNER}\"\n{submission_extra}"
        ))
        .listener("submission", &listener("starttls"))
        .listener("submissions", &listener("implicit"))
        .raw(&format!(
            "[destination.xclient]\nhost = \"127.0.0.1\"\nproxy_protocol = false\n\
             allow_plaintext_auth = true\nforwarding = \"xclient\"\n\n\
             [destination.xclient.protocol.submission]\nport = {port}\ntls = \"plain\"\n\n\
             [destination.starttls]\nhost = \"127.0.0.1\"\nproxy_protocol = false\n\
             tls_server_name = \"{DOVECOT_NAME}\"\ntls_allow_invalid_certs = true\n\n\
             [destination.starttls.protocol.submission]\nport = {port}\ntls = \"starttls\""
        ))
        .default_destination("xclient")
        .mappings(&format!("{}\txclient\n{}\tstarttls\n", ALICE.0, BOB.0))
        .render();
    let config = config.replacen(
        "[server]\n",
        &format!("[server]\nhostname = \"{PROXY_NAME}\"\n"),
        1,
    );
    let proxy = Proxy::start(config, &dir);
    Some(World {
        proxy,
        dovecot,
        sink,
        ca,
        dir,
    })
}

impl World {
    /// Waits for Dovecot's `n`-th login line for `user` and returns it.
    fn login_line(&self, user: &str, n: usize) -> String {
        let needle = format!("Login: user=<{user}>");
        let log = support::eventually(WAIT, &format!("dovecot login #{n} of {user}"), || {
            let log = self.dovecot.log();
            (log.matches(&needle).count() >= n).then_some(log)
        });
        log.lines()
            .filter(|l| l.contains(&needle))
            .nth(n - 1)
            .expect("login line")
            .to_owned()
    }

    /// Waits for the sink's `n`-th message.
    fn message(&self, n: usize) -> SinkMessage {
        self.sink.wait_messages(n, WAIT).remove(n - 1)
    }
}

/// Asserts `got` (what reached the sink) is `sent` behind Dovecot's trace header.
fn assert_relayed(got: &SinkMessage, from: &str, sent: &[u8]) {
    assert_eq!(got.mail_from, format!("<{from}>"));
    assert_eq!(got.rcpt_to, [format!("<{RCPT}>")]);
    assert!(
        got.data.starts_with(b"Received: "),
        "no trace header from Dovecot: {:?}",
        String::from_utf8_lossy(&got.data)
    );
    assert!(
        got.data.ends_with(sent),
        "the sink received other bytes than the client sent:\n{:?}",
        String::from_utf8_lossy(&got.data)
    );
}

// ---- a hand-driven SMTP client ---------------------------------------------------------

/// A minimal SMTP client over any stream (plain TCP or TLS), every read bounded by the
/// socket's timeout.
struct Smtp<S: Read + Write> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: Read + Write> Smtp<S> {
    fn new(stream: S) -> Smtp<S> {
        Smtp {
            stream,
            buf: Vec::new(),
        }
    }

    fn read_line(&mut self) -> String {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).take(pos).collect();
                return String::from_utf8_lossy(&line).into_owned();
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "closed before a full line; partial {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// One whole reply: its code and every line.
    fn reply(&mut self) -> (u16, Vec<String>) {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line();
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line);
            if !more {
                let code = lines[0].get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return (code, lines);
            }
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
        self.stream.flush().expect("flush");
    }

    /// Sends `line` and reads the reply.
    fn cmd(&mut self, line: &str) -> (u16, Vec<String>) {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends `line` and asserts the reply's code.
    fn expect(&mut self, line: &str, code: u16) -> Vec<String> {
        let (got, lines) = self.cmd(line);
        assert_eq!(got, code, "{line:?} got {lines:?}");
        lines
    }

    /// MAIL, RCPT, DATA with `message` (dot-stuffed here), and the final 250.
    fn send_message(&mut self, from: &str, message: &[u8]) {
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        self.expect(&format!("RCPT TO:<{RCPT}>"), 250);
        self.expect("DATA", 354);
        let mut data = Vec::new();
        for line in message.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                data.push(b'.');
            }
            data.extend_from_slice(line);
        }
        data.extend_from_slice(b".\r\n");
        self.send_raw(&data);
        let (code, lines) = self.reply();
        assert_eq!(code, 250, "end of DATA: {lines:?}");
    }
}

fn plain_ir(user: &str, password: &str) -> String {
    client::base64(format!("\0{user}\0{password}").as_bytes())
}

/// Asserts postern's greeting is postern's own.
fn assert_postern_greeting<S: Read + Write>(c: &mut Smtp<S>) {
    let (code, lines) = c.reply();
    assert_eq!(code, 220);
    assert_eq!(lines, [format!("220 {PROXY_NAME} ESMTP {BANNER}")]);
}

/// The EHLO keywords (lines after the first, without the `250-`).
fn keywords(lines: &[String]) -> Vec<String> {
    lines.iter().skip(1).map(|l| l[4..].to_string()).collect()
}

// ---- tests -----------------------------------------------------------------------------

#[test]
fn starttls_login_wrong_then_right_and_the_message_reaches_the_sink() {
    let name = "starttls_login_wrong_then_right_and_the_message_reaches_the_sink";
    let Some(w) = world(name, "sasl = [\"PLAIN\", \"LOGIN\", \"OAUTHBEARER\"]") else {
        return;
    };
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut c = Smtp::new(client::connect_from(source, w.proxy.addr("submission")));
    assert_postern_greeting(&mut c);
    let ehlo = c.expect("EHLO client.example", 250);
    assert_eq!(
        ehlo[0],
        format!("250-{PROXY_NAME} at your service, [client.example]")
    );
    let before = keywords(&ehlo);
    assert!(before.contains(&"STARTTLS".to_string()), "{before:?}");
    assert_eq!(before.last().map(String::as_str), Some("AUTH OAUTHBEARER"));
    // No cleartext password before TLS, and nothing else but what postern answers.
    c.expect(&format!("AUTH PLAIN {}", plain_ir(ALICE.0, ALICE.1)), 538);
    c.expect(&format!("MAIL FROM:<{}>", ALICE.0), 503);
    c.expect("STARTTLS", 220);
    assert!(c.buf.is_empty());
    let tls = client::tls_upgrade(c.stream, PROXY_NAME, &w.ca.cert_pem).expect("tls");
    let mut c = Smtp::new(tls);
    let after = keywords(&c.expect("EHLO client.example", 250));
    assert!(!after.contains(&"STARTTLS".to_string()), "{after:?}");
    assert_eq!(
        after.last().map(String::as_str),
        Some("AUTH PLAIN LOGIN OAUTHBEARER")
    );

    // A wrong password: Dovecot's refusal, relayed; the client may try again.
    let (code, lines) = c.cmd(&format!("AUTH PLAIN {}", plain_ir(ALICE.0, "wrong")));
    assert_eq!(code, 535, "{lines:?}");
    c.expect(&format!("AUTH PLAIN {}", plain_ir(ALICE.0, ALICE.1)), 235);

    let message = support::sample_message("submitted-over-starttls");
    c.send_message(ALICE.0, &message);
    c.expect("QUIT", 221);
    assert_relayed(&w.message(1), ALICE.0, &message);

    // XCLIENT: Dovecot saw the client's address and EHLO name, and postern's session id.
    let login = w.login_line(ALICE.0, 1);
    assert!(login.contains("method=PLAIN"), "{login}");
    assert!(login.contains("rip=127.0.0.2,"), "{login}");
    assert!(login.contains("session=<P"), "{login}");
    let received = String::from_utf8_lossy(&w.message(1).data).into_owned();
    assert!(
        received.starts_with("Received: from client.example ([127.0.0.2])"),
        "{received}"
    );
    let log = w.proxy.log();
    for secret in [ALICE.1, "wrong"] {
        assert!(!log.contains(secret), "postern logged a password");
    }
}

#[test]
fn implicit_tls_login_over_a_starttls_backend_leg() {
    let name = "implicit_tls_login_over_a_starttls_backend_leg";
    let Some(w) = world(name, "") else {
        return;
    };
    let tls =
        client::tls_connect(w.proxy.addr("submissions"), PROXY_NAME, &w.ca.cert_pem).expect("tls");
    let mut c = Smtp::new(tls);
    assert_postern_greeting(&mut c);
    // AUTH before EHLO is fine; PLAIN is offered at once on implicit TLS.
    c.expect(&format!("AUTH PLAIN {}", plain_ir(BOB.0, "nope")), 535);
    let ehlo = keywords(&c.expect("EHLO laptop", 250));
    assert!(!ehlo.contains(&"STARTTLS".to_string()), "{ehlo:?}");
    assert_eq!(
        ehlo.last().map(String::as_str),
        Some("AUTH PLAIN OAUTHBEARER XOAUTH2")
    );
    // Without an initial response: postern's `334 `, then the response.
    c.expect("AUTH PLAIN", 334);
    c.expect(&plain_ir(BOB.0, BOB.1), 235);
    let message = support::sample_message("submitted-over-implicit-tls");
    c.send_message(BOB.0, &message);
    c.expect("QUIT", 221);
    assert_relayed(&w.message(1), BOB.0, &message);
    // The backend leg was upgraded with STARTTLS before the credentials went out.
    let login = w.login_line(BOB.0, 1);
    assert!(login.contains("TLS"), "{login}");
    assert!(
        w.dovecot.log().contains("auth failed"),
        "no failed attempt logged"
    );
}

/// Python smtplib: STARTTLS, a wrong then a right password with SASL LOGIN, then
/// `sendmail`. Prints `sent` on success.
const PY_SUBMIT: &str = r#"
import smtplib, ssl, sys
host, port, cafile, user, password, sender, rcpt, path = sys.argv[1:9]
with open(path, "rb") as f:
    msg = f.read()
ctx = ssl.create_default_context(cafile=cafile)
c = smtplib.SMTP(host, int(port), timeout=20)
try:
    c.ehlo("python.client")
    if not c.has_extn("starttls"):
        sys.exit("no STARTTLS offered: %r" % (c.esmtp_features,))
    c.starttls(context=ctx)
    c.ehlo("python.client")
    auth = c.esmtp_features.get("auth", "")
    if "LOGIN" not in auth.split():
        sys.exit("no AUTH LOGIN after STARTTLS: %r" % (auth,))
    c.user, c.password = user, "wrong-" + password
    try:
        c.auth("LOGIN", c.auth_login, initial_response_ok=False)
        sys.exit("a wrong password was accepted")
    except smtplib.SMTPAuthenticationError as e:
        if e.smtp_code != 535:
            sys.exit("unexpected refusal %r" % (e,))
    c.user, c.password = user, password
    code, _ = c.auth("LOGIN", c.auth_login, initial_response_ok=False)
    if code != 235:
        sys.exit("LOGIN: %d" % code)
    refused = c.sendmail(sender, [rcpt], msg)
    if refused:
        sys.exit("refused: %r" % (refused,))
finally:
    try:
        c.quit()
    except Exception:
        pass
print("sent")
"#;

#[test]
fn python_smtplib_submits_through_postern() {
    let name = "python_smtplib_submits_through_postern";
    let Some(w) = world(name, "sasl = [\"PLAIN\", \"LOGIN\"]") else {
        return;
    };
    let message = support::sample_message("submitted-by-smtplib");
    let path = w.dir.path().join("smtplib.eml");
    support::write_file(&path, &message);
    let addr = w.proxy.addr("submission");
    let mut cmd = Command::new(client::python());
    cmd.arg("-c")
        .arg(PY_SUBMIT)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(&w.ca.cert_pem)
        .args([ALICE.0, ALICE.1, ALICE.0, RCPT])
        .arg(&path)
        .stdin(Stdio::null());
    let out = client::run_with_deadline(cmd, CLIENT_DEADLINE);
    assert!(
        out.status.success(),
        "smtplib failed ({}): {}{}\npostern log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        w.proxy.log()
    );
    assert_relayed(&w.message(1), ALICE.0, &message);
    // SASL LOGIN was replayed to Dovecot as PLAIN.
    let login = w.login_line(ALICE.0, 1);
    assert!(login.contains("method=PLAIN"), "{login}");
}

#[test]
fn curl_smtp_with_ssl_reqd_uploads_a_message() {
    let name = "curl_smtp_with_ssl_reqd_uploads_a_message";
    if !support::have_program("curl") {
        support::skip(name, "curl is not installed");
        return;
    }
    let Some(w) = world(name, "") else {
        return;
    };
    let message = support::sample_message("uploaded-by-curl");
    let path = w.dir.path().join("curl.eml");
    support::write_file(&path, &message);
    let addr: SocketAddr = w.proxy.addr("submission");
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--verbose", "--max-time", "30"])
        .arg("--ssl-reqd")
        .arg("--cacert")
        .arg(&w.ca.cert_pem)
        .args([
            "--resolve",
            &format!("{PROXY_NAME}:{}:{}", addr.port(), addr.ip()),
        ])
        .args(["--user", &format!("{}:{}", BOB.0, BOB.1)])
        .args(["--mail-from", BOB.0, "--mail-rcpt", RCPT])
        .arg("--upload-file")
        .arg(&path)
        .arg(format!("smtp://{PROXY_NAME}:{}/curl.client", addr.port()))
        .stdin(Stdio::null());
    let out = client::run_with_deadline(cmd, CLIENT_DEADLINE);
    assert!(
        out.status.success(),
        "curl failed ({}):\n{}\npostern log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        w.proxy.log()
    );
    assert_relayed(&w.message(1), BOB.0, &message);
    let trace = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        trace.contains(&format!("< 220 {PROXY_NAME} ESMTP {BANNER}")),
        "curl did not talk to postern first:\n{trace}"
    );
    assert!(trace.contains("> STARTTLS"), "{trace}");
}

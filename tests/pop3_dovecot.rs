//! POP3 through the real `postern` binary in front of real Dovecot pop3 (passwd-file
//! users, a private instance with TLS), with a raw client and with real ones: curl
//! (`pop3://` with `--ssl-reqd`, `pop3s://`) and Python's `poplib`.
//!
//! postern answers the AUTHORIZATION state itself (its greeting carries the test's
//! banner, never Dovecot's), routes the account, opens its leg to Dovecot with STLS,
//! replays the login as `AUTH PLAIN` and relays. Each test proves its claim on the
//! Dovecot side too: its log line for the login (`Login: user=<...>, method=PLAIN,
//! rip=...`), or the message it RETRs, byte for byte as Dovecot stored it (a message
//! with dot-stuffed lines, delivered over LMTP first).
//!
//! The `fixture_*` test speaks to Dovecot directly with the same client code: when a
//! postern test fails, it tells whether the fixture or postern is at fault. Every
//! external client runs under `run_with_deadline`.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::certs::Ca;
use support::client;
use support::dovecot::{Dovecot, DovecotOpts};
use support::proxy::{Proxy, TestConfig};

const WAIT: Duration = Duration::from_secs(20);
/// Longest a client program may run.
const CLIENT_DEADLINE: Duration = Duration::from_secs(40);

const ALICE: (&str, &str) = ("alice@example.org", "alice-secret");
const BOB: (&str, &str) = ("bob@example.org", "bob-secret");

/// postern's greeting text; Dovecot's is "Dovecot ready.".
const BANNER: &str = "postern pop3 test";
/// The names on postern's certificate; clients connect to 127.0.0.1 under these.
const PROXY_NAME: &str = "postern.test";
const LOCALHOST: &str = "localhost";
/// The name on Dovecot's certificate.
const DOVECOT_NAME: &str = "dovecot.test";

/// Dovecot (POP3 with STLS) holding one message for alice, and postern in front of it
/// with a STARTTLS listener `pop3`, an implicit-TLS listener `pop3s`, and an
/// implicit-TLS listener `pop3-lb` that takes a PROXY header from loopback (a load
/// balancer's). postern's leg to Dovecot is STLS. Fields drop in order: postern,
/// Dovecot, then the directory.
struct World {
    proxy: Proxy,
    dovecot: Dovecot,
    ca: Ca,
    /// The message as Dovecot stored it (its trace headers, then what was delivered).
    stored: Vec<u8>,
    dir: tempfile::TempDir,
}

/// `forwarding` is the leg's; with `xclient`, Dovecot trusts loopback (so it offers
/// XCLIENT).
fn world(test: &str, forwarding: &str) -> Option<World> {
    if !support::skip_unless_root(test) {
        return None;
    }
    let dir = support::shared_tempdir();
    let ca = Ca::new(dir.path(), "pop3");
    let mut opts = DovecotOpts::default()
        .pop3()
        .with_user(BOB.0, BOB.1)
        .tls(ca.leaf("dovecot", &[DOVECOT_NAME]))
        .extra("auth_failure_delay = 0\nauth_verbose = yes\n");
    if forwarding == "xclient" {
        opts = opts.extra("login_trusted_networks = 127.0.0.0/8\n");
    }
    let dovecot = Dovecot::start(test, opts)?;
    let stored = dovecot.deliver_sample(ALICE.0, "through-postern-pop3", dir.path());

    let leaf = ca.leaf("postern", &[PROXY_NAME, LOCALHOST]);
    let listener = |tls: &str, extra: &str| {
        format!("protocol = \"pop3\"\nbind = [\"127.0.0.1:0\"]\ntls = \"{tls}\"\n{extra}")
    };
    let config = TestConfig::new(dir.path())
        .raw(&leaf.certificate_table("main"))
        .raw(&format!("[capabilities.pop3]\nbanner = \"{BANNER}\""))
        .listener("pop3", &listener("starttls", ""))
        .listener("pop3s", &listener("implicit", ""))
        .listener(
            "pop3-lb",
            &listener(
                "implicit",
                "proxy_protocol = \"required\"\nproxy_trusted = [\"127.0.0.0/8\"]",
            ),
        )
        .raw(&format!(
            "[destination.dovecot]\nhost = \"127.0.0.1\"\nproxy_protocol = false\n\
             tls_server_name = \"{DOVECOT_NAME}\"\ntls_allow_invalid_certs = true\n\n\
             [destination.dovecot.protocol.pop3]\nport = {}\ntls = \"starttls\"\n\
             forwarding = \"{forwarding}\"",
            dovecot.pop3.expect("pop3").port()
        ))
        .default_destination("dovecot")
        .render();
    let proxy = Proxy::start(config, &dir);
    Some(World {
        proxy,
        dovecot,
        ca,
        stored,
        dir,
    })
}

impl World {
    /// Waits for Dovecot's login line for `user` (the `n`-th, counting from 1).
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

    /// A client on listener `name` that completed its TLS handshake (implicit TLS).
    fn tls_client(&self, name: &str) -> Pop3<client::TlsStream> {
        let tls = client::tls_connect(self.proxy.addr(name), PROXY_NAME, &self.ca.cert_pem)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.proxy.log()));
        Pop3::new(tls)
    }

    /// A client on the STARTTLS listener, after STLS.
    fn stls_client(&self) -> Pop3<client::TlsStream> {
        let mut c = Pop3::new(client::connect(self.proxy.addr("pop3")));
        postern_greeting(&mut c);
        assert_eq!(c.command("STLS"), "+OK Begin TLS negotiation");
        let tls = client::tls_upgrade(c.into_inner(), PROXY_NAME, &self.ca.cert_pem)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.proxy.log()));
        Pop3::new(tls)
    }

    /// Asserts no form of alice's password is in postern's log.
    fn assert_log_clean(&self) {
        let log = self.proxy.log();
        for secret in [ALICE.1.to_owned(), plain_b64(ALICE.0, ALICE.1)] {
            assert!(
                !log.contains(&secret),
                "postern logged a credential ({secret:?})"
            );
        }
    }
}

fn plain_b64(user: &str, password: &str) -> String {
    client::base64(format!("\0{user}\0{password}").as_bytes())
}

/// The `rip=` field of a Dovecot login line.
fn rip(line: &str) -> &str {
    let start = line
        .find("rip=")
        .unwrap_or_else(|| panic!("no rip= in {line:?}"))
        + 4;
    let rest = &line[start..];
    &rest[..rest.find(',').unwrap_or(rest.len())]
}

/// A line-based POP3 client over any stream.
struct Pop3<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: Read + Write> Pop3<S> {
    fn new(stream: S) -> Pop3<S> {
        Pop3 {
            stream,
            buf: Vec::new(),
        }
    }

    /// One line, CRLF included. Panics on EOF or timeout.
    fn raw_line(&mut self) -> Vec<u8> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return self.buf.drain(..pos + 2).collect();
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "closed before a full line; partial {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// One line, CRLF stripped.
    fn line(&mut self) -> String {
        let raw = self.raw_line();
        String::from_utf8_lossy(&raw[..raw.len() - 2]).into_owned()
    }

    fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write");
        self.stream.flush().expect("flush");
    }

    /// Sends `line`, returns the one-line answer.
    fn command(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// The body of a multi-line answer, dot-unstuffed (RFC 1939 §3), CRLFs kept.
    fn multiline(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.raw_line();
            if line == b".\r\n" {
                return body;
            }
            body.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
        }
    }

    /// Sends `line`, asserts `+OK`, returns the multi-line body.
    fn multiline_command(&mut self, line: &str) -> Vec<u8> {
        let status = self.command(line);
        assert!(status.starts_with("+OK"), "{line}: {status}");
        self.multiline()
    }

    fn into_inner(self) -> S {
        assert!(self.buf.is_empty(), "unread data before a TLS upgrade");
        self.stream
    }
}

/// Reads postern's greeting and asserts it is postern's, not the backend's.
fn postern_greeting<S: Read + Write>(c: &mut Pop3<S>) {
    assert_eq!(c.line(), format!("+OK {BANNER}"), "not postern's greeting");
}

/// The CAPA lines (without the status and the final dot).
fn capa<S: Read + Write>(c: &mut Pop3<S>) -> Vec<String> {
    let body = c.multiline_command("CAPA");
    String::from_utf8(body)
        .expect("utf8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// STAT, RETR 1 (asserted equal to what Dovecot stored), QUIT.
fn retr_and_quit<S: Read + Write>(c: &mut Pop3<S>, stored: &[u8]) {
    let stat = c.command("STAT");
    assert_eq!(stat, format!("+OK 1 {}", stored.len()), "Dovecot's STAT");
    let body = c.multiline_command("RETR 1");
    assert!(
        body == stored,
        "RETR through postern returned other bytes than Dovecot stored:\n{}",
        String::from_utf8_lossy(&body)
    );
    let bye = c.command("QUIT");
    assert!(bye.starts_with("+OK"), "{bye}");
}

// ---- the raw protocol ---------------------------------------------------------------------

#[test]
fn fixture_dovecot_pop3_stls_directly() {
    let name = "fixture_dovecot_pop3_stls_directly";
    let Some(w) = world(name, "none") else {
        return;
    };
    let mut c = Pop3::new(client::connect(w.dovecot.pop3.expect("pop3")));
    assert!(c.line().starts_with("+OK"));
    assert!(capa(&mut c).iter().any(|l| l == "STLS"));
    assert!(c.command("STLS").starts_with("+OK"));
    let tls = client::tls_upgrade(c.into_inner(), DOVECOT_NAME, &w.ca.cert_pem)
        .unwrap_or_else(|e| panic!("{e}\n{}", w.dovecot.log()));
    let mut c = Pop3::new(tls);
    let ok = c.command(&format!("AUTH PLAIN {}", plain_b64(ALICE.0, ALICE.1)));
    assert!(ok.starts_with("+OK"), "{ok}");
    retr_and_quit(&mut c, &w.stored);
}

#[test]
fn login_over_stls_then_retr_is_byte_identical() {
    let name = "login_over_stls_then_retr_is_byte_identical";
    let Some(w) = world(name, "none") else {
        return;
    };
    let mut c = Pop3::new(client::connect(w.proxy.addr("pop3")));
    postern_greeting(&mut c);
    let before = capa(&mut c);
    assert!(before.iter().any(|l| l == "STLS"), "{before:?}");
    assert!(!before.iter().any(|l| l == "USER"), "{before:?}");
    assert!(
        before.iter().any(|l| l == "SASL OAUTHBEARER XOAUTH2"),
        "PLAIN is not offered before TLS: {before:?}"
    );
    // Cleartext before TLS is refused without asking Dovecot.
    assert_eq!(
        c.command(&format!("USER {}", ALICE.0)),
        "-ERR cleartext authentication requires TLS"
    );
    assert_eq!(c.command("STLS"), "+OK Begin TLS negotiation");
    let tls = client::tls_upgrade(c.into_inner(), PROXY_NAME, &w.ca.cert_pem)
        .unwrap_or_else(|e| panic!("{e}\n{}", w.proxy.log()));
    let mut c = Pop3::new(tls);
    let after = capa(&mut c);
    assert!(!after.iter().any(|l| l == "STLS"), "{after:?}");
    assert!(after.iter().any(|l| l == "USER"), "{after:?}");
    assert!(
        after.iter().any(|l| l == "SASL PLAIN OAUTHBEARER XOAUTH2"),
        "{after:?}"
    );
    assert_eq!(c.command(&format!("USER {}", ALICE.0)), "+OK");
    let ok = c.command(&format!("PASS {}", ALICE.1));
    assert!(ok.starts_with("+OK"), "PASS through postern: {ok}");
    retr_and_quit(&mut c, &w.stored);
    let line = w.login_line(ALICE.0, 1);
    assert!(line.contains("method=PLAIN"), "{line}");
    assert!(line.contains(", TLS"), "postern's leg is not TLS: {line}");
    // postern relays half-closes: the session ends once the client closed too.
    drop(c);
    w.proxy.wait_log("session closed", WAIT);
    w.assert_log_clean();
}

#[test]
fn login_over_implicit_tls_with_auth_plain() {
    let name = "login_over_implicit_tls_with_auth_plain";
    let Some(w) = world(name, "none") else {
        return;
    };
    let mut c = w.tls_client("pop3s");
    postern_greeting(&mut c);
    let caps = capa(&mut c);
    assert!(
        caps.iter().any(|l| l == "USER") && !caps.iter().any(|l| l == "STLS"),
        "{caps:?}"
    );
    // The mechanism list of a bare AUTH.
    let list = c.multiline_command("AUTH");
    assert_eq!(list, b"PLAIN\r\nOAUTHBEARER\r\nXOAUTH2\r\n");
    // PLAIN after an empty challenge.
    assert_eq!(c.command("AUTH PLAIN"), "+ ");
    let ok = c.command(&plain_b64(ALICE.0, ALICE.1));
    assert!(ok.starts_with("+OK"), "AUTH PLAIN through postern: {ok}");
    let list = c.multiline_command("LIST");
    assert_eq!(list, format!("1 {}\r\n", w.stored.len()).as_bytes());
    retr_and_quit(&mut c, &w.stored);
    w.login_line(ALICE.0, 1);
}

#[test]
fn wrong_password_then_right_one_on_the_same_connection() {
    let name = "wrong_password_then_right_one_on_the_same_connection";
    let Some(w) = world(name, "none") else {
        return;
    };
    let mismatches = || w.dovecot.log().matches("Password mismatch").count();
    let mut c = w.stls_client();
    assert_eq!(c.command(&format!("USER {}", ALICE.0)), "+OK");
    let no = c.command("PASS not-the-password");
    assert!(no.starts_with("-ERR"), "{no}");
    assert!(
        no.contains("Authentication failed"),
        "Dovecot's own -ERR is relayed: {no}"
    );
    // Dovecot, not postern, judged the password.
    support::eventually(WAIT, "dovecot to log the password mismatch", || {
        (mismatches() >= 1).then_some(())
    });
    // The USER was used up: PASS alone is refused by postern.
    assert_eq!(
        c.command(&format!("PASS {}", ALICE.1)),
        "-ERR USER required before PASS"
    );
    assert_eq!(c.command(&format!("USER {}", ALICE.0)), "+OK");
    // Dovecot's auth penalty may hold this one for a few seconds; the client's read
    // timeout allows for it.
    let ok = c.command(&format!("PASS {}", ALICE.1));
    assert!(
        ok.starts_with("+OK"),
        "second PASS on the same connection: {ok}"
    );
    retr_and_quit(&mut c, &w.stored);
    w.login_line(ALICE.0, 1);
}

#[test]
fn xclient_carries_ipv4_and_ipv6_clients_to_dovecot() {
    let name = "xclient_carries_ipv4_and_ipv6_clients_to_dovecot";
    let Some(w) = world(name, "xclient") else {
        return;
    };
    let addr = w.proxy.addr("pop3-lb");
    for (n, (src, user)) in [("192.0.2.7:40007", BOB), ("[2001:db8::7]:40008", ALICE)]
        .into_iter()
        .enumerate()
    {
        let src: SocketAddr = src.parse().expect("addr");
        // The load balancer's header names a destination of the client's family.
        let dst = SocketAddr::new(
            if src.is_ipv4() {
                "198.51.100.1".parse().expect("ip")
            } else {
                "2001:db8::1".parse().expect("ip")
            },
            995,
        );
        let mut sock = client::connect(addr);
        sock.write_all(&support::proxy_v2_header(src, dst))
            .expect("proxy header");
        let tls = client::tls_upgrade(sock, PROXY_NAME, &w.ca.cert_pem)
            .unwrap_or_else(|e| panic!("{e}\n{}", w.proxy.log()));
        let mut c = Pop3::new(tls);
        postern_greeting(&mut c);
        let ok = c.command(&format!("AUTH PLAIN {}", plain_b64(user.0, user.1)));
        assert!(ok.starts_with("+OK"), "login {n} through postern: {ok}");
        assert!(c.command("QUIT").starts_with("+OK"));
        let line = w.login_line(user.0, 1);
        assert_eq!(
            rip(&line),
            src.ip().to_string(),
            "Dovecot's view of the client: {line}"
        );
    }
}

// ---- real clients -------------------------------------------------------------------------

/// Runs curl with `args` against `url` as alice; returns stdout, panicking with curl's
/// trace and postern's log when it fails.
fn curl(w: &World, args: &[&str], url: &str) -> Vec<u8> {
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--verbose", "--max-time", "30"])
        .args(["--user", &format!("{}:{}", ALICE.0, ALICE.1)])
        .arg("--cacert")
        .arg(&w.ca.cert_pem)
        .args(args)
        .arg(url)
        .stdin(Stdio::null());
    let out = client::run_with_deadline(cmd, CLIENT_DEADLINE);
    assert!(
        out.status.success(),
        "curl {url} failed ({}):\n{}\npostern log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        w.proxy.log()
    );
    out.stdout
}

fn have(test: &str, program: &str) -> bool {
    if support::have_program(program) {
        return true;
    }
    support::skip(test, &format!("{program} is not installed"));
    false
}

/// `--resolve` so that `postern.test:<port>` is the listener at `addr`.
fn resolve(addr: SocketAddr) -> String {
    format!("{PROXY_NAME}:{}:{}", addr.port(), addr.ip())
}

#[test]
fn curl_pop3_with_ssl_reqd_retrieves_through_postern() {
    let name = "curl_pop3_with_ssl_reqd_retrieves_through_postern";
    if !have(name, "curl") {
        return;
    }
    let Some(w) = world(name, "none") else {
        return;
    };
    let addr = w.proxy.addr("pop3");
    let resolve = resolve(addr);
    let base = format!("pop3://{PROXY_NAME}:{}", addr.port());
    // A listing (LIST), then the message (RETR 1), each on its own STLS session.
    let listing = curl(
        &w,
        &["--ssl-reqd", "--resolve", &resolve],
        &format!("{base}/"),
    );
    assert_eq!(
        String::from_utf8_lossy(&listing).trim_end(),
        format!("1 {}", w.stored.len()),
        "curl's listing"
    );
    let body = curl(
        &w,
        &["--ssl-reqd", "--resolve", &resolve],
        &format!("{base}/1"),
    );
    assert!(
        body == w.stored,
        "curl (STLS) retrieved other bytes than Dovecot stored:\n{}",
        String::from_utf8_lossy(&body)
    );
    w.login_line(ALICE.0, 2);
    w.assert_log_clean();
}

#[test]
fn curl_pop3s_retrieves_through_postern() {
    let name = "curl_pop3s_retrieves_through_postern";
    if !have(name, "curl") {
        return;
    }
    let Some(w) = world(name, "none") else {
        return;
    };
    let addr = w.proxy.addr("pop3s");
    let resolve = resolve(addr);
    let url = format!("pop3s://{PROXY_NAME}:{}/1", addr.port());
    let body = curl(&w, &["--resolve", &resolve], &url);
    assert!(body == w.stored, "curl (pop3s) retrieved other bytes");
    // Again with the initial response on the AUTH line.
    let body = curl(&w, &["--resolve", &resolve, "--sasl-ir"], &url);
    assert!(
        body == w.stored,
        "curl (pop3s, SASL-IR) retrieved other bytes"
    );
    w.login_line(ALICE.0, 2);
}

/// Python's poplib: connect, STLS (verifying the certificate against the test CA),
/// USER/PASS, STAT, RETR 1 into a file (lines joined by CRLF), QUIT.
const PY_POPLIB: &str = r#"
import poplib, ssl, sys
host, port, user, password, cafile, out = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
c = poplib.POP3(host, int(port), timeout=20)
print(c.getwelcome().decode())
assert "STLS" in c.capa(), c.capa()
resp = c.stls(context=ctx)
assert resp.startswith(b"+OK"), resp
assert "USER" in c.capa(), c.capa()
resp = c.user(user)
assert resp.startswith(b"+OK"), resp
resp = c.pass_(password)
assert resp.startswith(b"+OK"), resp
count, size = c.stat()
resp, lines, octets = c.retr(1)
assert resp.startswith(b"+OK"), resp
with open(out, "wb") as f:
    f.write(b"\r\n".join(lines) + b"\r\n")
resp = c.quit()
assert resp.startswith(b"+OK"), resp
print("retrieved %d of %d message(s), %d bytes" % (1, count, size))
"#;

#[test]
fn python_poplib_stls_user_pass_retr_through_postern() {
    let name = "python_poplib_stls_user_pass_retr_through_postern";
    if !have(name, client::python()) {
        return;
    }
    let Some(w) = world(name, "none") else {
        return;
    };
    let out_path = w.dir.path().join("retrieved.eml");
    let mut cmd = Command::new(client::python());
    cmd.arg("-c")
        .arg(PY_POPLIB)
        .args([
            LOCALHOST,
            &w.proxy.addr("pop3").port().to_string(),
            ALICE.0,
            ALICE.1,
        ])
        .arg(&w.ca.cert_pem)
        .arg(&out_path)
        .stdin(Stdio::null());
    let out = client::run_with_deadline(cmd, CLIENT_DEADLINE);
    assert!(
        out.status.success(),
        "poplib failed ({}): {}{}\npostern log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        w.proxy.log()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("+OK {BANNER}")),
        "poplib's welcome: {stdout}"
    );
    let body = std::fs::read(&out_path).expect("retrieved message");
    assert!(body == w.stored, "poplib retrieved other bytes");
    let line = w.login_line(ALICE.0, 1);
    assert!(line.contains("method=PLAIN"), "{line}");
    w.assert_log_clean();
}

//! Real IMAP clients through the real `postern` binary to a real Dovecot: curl
//! (`imap://` in clear and with STARTTLS, `imaps://`) and Python's `imaplib` (plain,
//! STARTTLS, SSL). Each lists or fetches a message that was delivered to Dovecot over
//! LMTP beforehand, and the fetched bytes must be exactly the ones Dovecot stored.
//!
//! Every client runs under `run_with_deadline`, so a stuck session fails the test
//! instead of hanging it.

mod support;

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

const USER: &str = "alice@example.org";
const PASSWORD: &str = "alice-secret";
/// The names on postern's certificate; clients connect to 127.0.0.1 under these.
const PROXY_NAME: &str = "postern.test";
const LOCALHOST: &str = "localhost";

/// Dovecot holding one message for alice, and postern in front of it with a plain
/// (`imap`), a STARTTLS (`imap-starttls`) and an implicit-TLS (`imaps`) listener.
/// Fields drop in order: postern, Dovecot, then the directory.
struct World {
    proxy: Proxy,
    dovecot: Dovecot,
    ca: Ca,
    /// The message as Dovecot stored it (its trace headers, then what was delivered).
    stored: Vec<u8>,
    dir: tempfile::TempDir,
}

fn world(test: &str) -> Option<World> {
    if !support::skip_unless_root(test) {
        return None;
    }
    let dovecot = Dovecot::start(test, DovecotOpts::default().imap())?;
    let dir = support::shared_tempdir();
    let stored = dovecot.deliver_sample(USER, "through-a-real-client", dir.path());

    let ca = Ca::new(dir.path(), "clients");
    let leaf = ca.leaf("postern", &[PROXY_NAME, LOCALHOST]);
    let listener =
        |tls: &str| format!("protocol = \"imap\"\nbind = [\"127.0.0.1:0\"]\ntls = \"{tls}\"");
    let config = TestConfig::new(dir.path())
        .raw(&leaf.certificate_table("main"))
        .raw("[capabilities.imap]\nallow_plain_auth_without_tls = true")
        .listener("imap", &listener("plain"))
        .listener("imap-starttls", &listener("starttls"))
        .listener("imaps", &listener("implicit"))
        .raw(&format!(
            "[destination.dovecot]\nhost = \"127.0.0.1\"\nproxy_protocol = false\n\
             allow_plaintext_auth = true\n\n\
             [destination.dovecot.protocol.imap]\nport = {}\ntls = \"plain\"",
            dovecot.imap.expect("imap").port()
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
    /// Waits until Dovecot logged `n` logins of the user.
    fn wait_logins(&self, n: usize) {
        let needle = format!("Login: user=<{USER}>");
        support::eventually(WAIT, &format!("{n} dovecot logins"), || {
            (self.dovecot.log().matches(&needle).count() >= n).then_some(())
        });
    }
}

// ---- curl ----------------------------------------------------------------------------

/// Runs curl with `args` against `url`; returns stdout, panicking with curl's trace and
/// postern's log when it fails.
fn curl(w: &World, args: &[&str], url: &str) -> Vec<u8> {
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--verbose", "--max-time", "30"])
        .args(["--user", &format!("{USER}:{PASSWORD}")])
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

/// `--resolve` so that `postern.test:<port>` is the listener at `addr`.
fn resolve(addr: SocketAddr) -> String {
    format!("{PROXY_NAME}:{}:{}", addr.port(), addr.ip())
}

fn have_curl(test: &str) -> bool {
    if support::have_program("curl") {
        return true;
    }
    support::skip(test, "curl is not installed");
    false
}

fn assert_lists_inbox(listing: &[u8]) {
    let text = String::from_utf8_lossy(listing);
    assert!(
        text.lines()
            .any(|l| l.starts_with("* LIST ") && l.ends_with("INBOX")),
        "no INBOX in curl's listing:\n{text}"
    );
}

#[test]
fn curl_imap_lists_and_fetches_through_postern() {
    let name = "curl_imap_lists_and_fetches_through_postern";
    if !have_curl(name) {
        return;
    }
    let Some(w) = world(name) else {
        return;
    };
    let addr = w.proxy.addr("imap");
    assert_lists_inbox(&curl(&w, &[], &format!("imap://{addr}/")));
    let body = curl(&w, &[], &format!("imap://{addr}/INBOX;UID=1"));
    assert!(
        body == w.stored,
        "curl fetched other bytes than Dovecot stored:\n{}",
        String::from_utf8_lossy(&body)
    );
    w.wait_logins(2);
}

#[test]
fn curl_imap_with_starttls_fetches_through_postern() {
    let name = "curl_imap_with_starttls_fetches_through_postern";
    if !have_curl(name) {
        return;
    }
    let Some(w) = world(name) else {
        return;
    };
    let addr = w.proxy.addr("imap-starttls");
    let resolve = resolve(addr);
    let body = curl(
        &w,
        &["--ssl-reqd", "--resolve", &resolve],
        &format!("imap://{PROXY_NAME}:{}/INBOX;UID=1", addr.port()),
    );
    assert!(body == w.stored, "curl (STARTTLS) fetched other bytes");
    w.wait_logins(1);
}

#[test]
fn curl_imaps_lists_and_fetches_through_postern() {
    let name = "curl_imaps_lists_and_fetches_through_postern";
    if !have_curl(name) {
        return;
    }
    let Some(w) = world(name) else {
        return;
    };
    let addr = w.proxy.addr("imaps");
    let resolve = resolve(addr);
    let base = format!("imaps://{PROXY_NAME}:{}", addr.port());
    assert_lists_inbox(&curl(&w, &["--resolve", &resolve], &format!("{base}/")));
    // With SASL-IR this time: AUTHENTICATE PLAIN and the credentials in one line.
    let body = curl(
        &w,
        &["--resolve", &resolve, "--sasl-ir"],
        &format!("{base}/INBOX;UID=1"),
    );
    assert!(body == w.stored, "curl (imaps) fetched other bytes");
    w.wait_logins(2);
}

// ---- Python imaplib ----------------------------------------------------------------------

/// Python's imaplib: connect (plain, STARTTLS or SSL, verifying the certificate against
/// the test CA), LOGIN, SELECT INBOX, FETCH 1 (BODY.PEEK[]) into a file, LOGOUT.
const PY_IMAPLIB: &str = r#"
import imaplib, ssl, sys
mode, host, port, user, password, cafile, out = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=cafile)
if mode == "ssl":
    c = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx, timeout=20)
else:
    c = imaplib.IMAP4(host, int(port), timeout=20)
    if mode == "starttls":
        typ, data = c.starttls(ssl_context=ctx)
        assert typ == "OK", (typ, data)
typ, data = c.login(user, password)
assert typ == "OK", (typ, data)
typ, data = c.select("INBOX")
assert typ == "OK", (typ, data)
exists = int(data[0])
typ, data = c.fetch("1", "(BODY.PEEK[])")
assert typ == "OK", (typ, data)
body = data[0][1]
with open(out, "wb") as f:
    f.write(body)
typ, data = c.logout()
assert typ == "BYE", (typ, data)
print("fetched %d bytes, %d message(s)" % (len(body), exists))
"#;

#[test]
fn python_imaplib_login_select_fetch_through_postern() {
    let name = "python_imaplib_login_select_fetch_through_postern";
    if !support::have_program(client::python()) {
        support::skip(name, "python3 is not installed");
        return;
    }
    let Some(w) = world(name) else {
        return;
    };
    let cases = [
        ("plain", "127.0.0.1", w.proxy.addr("imap")),
        ("starttls", LOCALHOST, w.proxy.addr("imap-starttls")),
        ("ssl", LOCALHOST, w.proxy.addr("imaps")),
    ];
    for (i, (mode, host, addr)) in cases.into_iter().enumerate() {
        let out_path = w.dir.path().join(format!("fetched-{mode}.eml"));
        let mut cmd = Command::new(client::python());
        cmd.arg("-c")
            .arg(PY_IMAPLIB)
            .args([mode, host, &addr.port().to_string(), USER, PASSWORD])
            .arg(&w.ca.cert_pem)
            .arg(&out_path)
            .stdin(Stdio::null());
        let out = client::run_with_deadline(cmd, CLIENT_DEADLINE);
        assert!(
            out.status.success(),
            "imaplib ({mode}) failed ({}): {}{}\npostern log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            w.proxy.log()
        );
        let body = std::fs::read(&out_path).expect("fetched message");
        assert!(body == w.stored, "imaplib ({mode}) fetched other bytes");
        w.wait_logins(i + 1);
    }
}

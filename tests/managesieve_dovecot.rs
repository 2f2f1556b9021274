//! ManageSieve through the real `postern` binary in front of real Dovecot managesieve
//! (Pigeonhole; passwd-file users, a private instance with TLS), with a raw client and
//! with the real `sieve-connect`.
//!
//! postern answers the pre-authentication dialogue itself (its capability response
//! carries the test's IMPLEMENTATION string, never Dovecot's), routes the account,
//! opens its leg to Dovecot with STARTTLS, replays the login as
//! `AUTHENTICATE "PLAIN" "<b64>"` and relays. Each test proves its claim on the Dovecot
//! side too: its log line for the login (`Login: user=<...>, method=PLAIN, rip=...`),
//! or the script it stored, byte for byte as uploaded through postern.
//!
//! The `fixture_*` test speaks to Dovecot directly with the same client code: when a
//! postern test fails, it tells whether the fixture or postern is at fault. Every
//! external client runs under `run_with_deadline`.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::certs::Ca;
use support::client::{self, ImapClient, ImapLine};
use support::dovecot::{Dovecot, DovecotOpts};
use support::proxy::{Proxy, TestConfig};

const WAIT: Duration = Duration::from_secs(20);
/// Longest a client program may run.
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);

const ALICE: (&str, &str) = ("alice@example.org", "alice-secret");
const BOB: (&str, &str) = ("bob@example.org", "bob-secret");

/// postern's IMPLEMENTATION string; Dovecot's is "Dovecot Pigeonhole".
const IMPLEMENTATION: &str = "postern sieve test";
/// The names on postern's certificate.
const PROXY_NAME: &str = "postern.test";
/// The name on Dovecot's certificate.
const DOVECOT_NAME: &str = "dovecot.test";

/// A script with what a relay could damage: CRLF line ends, quotes, backslashes,
/// 8-bit text in a string, a multi-line `text:` block ending in a dot line.
const SCRIPT: &str = "require [\"fileinto\", \"vacation\"];\r\n\
# \"quoted\" and \\backslashed\\ in a comment\r\n\
if header :contains \"subject\" \"Gr\u{fc}\u{df}e\" {\r\n  fileinto \"INBOX\";\r\n}\r\n\
vacation :days 3 text:\r\nAway until Monday.\r\n..a dot-stuffed line\r\n.\r\n;\r\n";

/// Dovecot (ManageSieve with STARTTLS) and postern in front of it with a STARTTLS
/// listener `sieve`, an implicit-TLS listener `sieves`, and an implicit-TLS listener
/// `sieve-lb` that takes a PROXY header from loopback (a load balancer's). postern's
/// leg to Dovecot is STARTTLS. Fields drop in order: postern, Dovecot, then the directory.
struct World {
    proxy: Proxy,
    dovecot: Dovecot,
    ca: Ca,
    dir: tempfile::TempDir,
}

/// `forwarding` is the leg's; with `xclient`, Dovecot trusts loopback (so it offers
/// XCLIENT).
fn world(test: &str, forwarding: &str) -> Option<World> {
    if !support::skip_unless_root(test) {
        return None;
    }
    let dir = support::shared_tempdir();
    let ca = Ca::new(dir.path(), "sieve");
    let mut opts = dovecot_opts(&ca);
    if forwarding == "xclient" {
        opts = opts.extra("login_trusted_networks = 127.0.0.0/8\n");
    }
    let dovecot = Dovecot::start(test, opts)?;
    let leaf = ca.leaf("postern", &[PROXY_NAME, "localhost"]);
    let listener = |tls: &str| {
        format!("protocol = \"managesieve\"\nbind = [\"127.0.0.1:0\"]\ntls = \"{tls}\"\nmax_auth_attempts = 5")
    };
    let config = TestConfig::new(dir.path())
        .raw(&leaf.certificate_table("main"))
        .raw(&format!(
            "[capabilities.managesieve]\nimplementation = \"{IMPLEMENTATION}\""
        ))
        .listener("sieve", &listener("starttls"))
        .listener("sieves", &listener("implicit"))
        .listener(
            "sieve-lb",
            &format!(
                "{}\nproxy_protocol = \"required\"\nproxy_trusted = [\"127.0.0.0/8\"]",
                listener("implicit")
            ),
        )
        .raw(&format!(
            "[destination.dovecot]\nhost = \"127.0.0.1\"\nproxy_protocol = false\n\
             tls_server_name = \"{DOVECOT_NAME}\"\ntls_allow_invalid_certs = true\n\n\
             [destination.dovecot.protocol.managesieve]\nport = {}\ntls = \"starttls\"\n\
             forwarding = \"{forwarding}\"",
            dovecot.managesieve.expect("managesieve").port()
        ))
        .default_destination("dovecot")
        .render();
    let proxy = Proxy::start(config, &dir);
    Some(World {
        proxy,
        dovecot,
        ca,
        dir,
    })
}

/// Dovecot with ManageSieve, users alice and bob, TLS from `ca`, failed logins
/// answered at once and logged with their reason.
fn dovecot_opts(ca: &Ca) -> DovecotOpts {
    DovecotOpts::default()
        .managesieve()
        .with_user(BOB.0, BOB.1)
        .tls(ca.leaf("dovecot", &[DOVECOT_NAME]))
        .extra("auth_failure_delay = 0\nauth_verbose = yes\n")
}

impl World {
    /// Waits for Dovecot's login line for `user` (the `n`-th, counting from 1).
    fn login_line(&self, user: &str, n: usize) -> String {
        login_line(&self.dovecot, user, n)
    }

    /// A client on the STARTTLS listener `sieve`, after STARTTLS and the capability
    /// response that follows it.
    fn starttls_client(&self) -> Sieve<client::TlsStream> {
        let mut c = Sieve::new(client::connect(self.proxy.addr("sieve")));
        let caps = c.capabilities();
        assert_postern(&caps);
        assert!(has_line(&caps, "\"STARTTLS\""), "{caps:?}");
        assert!(
            sasl(&caps).iter().all(|m| m != "PLAIN"),
            "PLAIN before TLS: {caps:?}"
        );
        let ok = c.command("STARTTLS").status;
        assert_eq!(ok, "OK \"Begin TLS negotiation now.\"");
        let tls = client::tls_upgrade(c.into_inner(), PROXY_NAME, &self.ca.cert_pem)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.proxy.log()));
        let mut c = Sieve::new(tls);
        let caps = c.capabilities();
        assert_postern(&caps);
        assert!(!has_line(&caps, "\"STARTTLS\""), "{caps:?}");
        assert!(sasl(&caps).iter().any(|m| m == "PLAIN"), "{caps:?}");
        c
    }

    /// A client on the implicit-TLS listener `sieves`, past the capability response.
    fn implicit_client(&self) -> Sieve<client::TlsStream> {
        let tls = client::tls_connect(self.proxy.addr("sieves"), PROXY_NAME, &self.ca.cert_pem)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.proxy.log()));
        let mut c = Sieve::new(tls);
        let caps = c.capabilities();
        assert_postern(&caps);
        assert!(sasl(&caps).iter().any(|m| m == "PLAIN"), "{caps:?}");
        c
    }

    /// Asserts no form of `user`'s password is in postern's log.
    fn assert_log_clean(&self, user: &str, password: &str) {
        let log = self.proxy.log();
        for secret in [password.to_owned(), plain_b64(user, password)] {
            assert!(
                !log.contains(&secret),
                "postern logged a credential ({secret:?})"
            );
        }
    }

    /// The script `name` as Dovecot stored it for `user` (`sieve = file:~/sieve`).
    fn stored_script(&self, user: &str, name: &str) -> Vec<u8> {
        let path = self
            .dovecot
            .maildir(user)
            .join("sieve")
            .join(format!("{name}.sieve"));
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}\ndovecot log:\n{}",
                path.display(),
                self.dovecot.log()
            )
        })
    }
}

/// Waits for Dovecot's managesieve login line for `user` (the `n`-th, counting from 1).
fn login_line(dovecot: &Dovecot, user: &str, n: usize) -> String {
    let needle = format!("Login: user=<{user}>");
    let log = support::eventually(WAIT, &format!("dovecot login #{n} of {user}"), || {
        let log = dovecot.log();
        (log.matches(&needle).count() >= n).then_some(log)
    });
    log.lines()
        .filter(|l| l.contains(&needle))
        .nth(n - 1)
        .expect("login line")
        .to_owned()
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

fn has_line(lines: &[String], line: &str) -> bool {
    lines.iter().any(|l| l == line)
}

/// The mechanisms of a capability response's `"SASL"` line.
fn sasl(caps: &[String]) -> Vec<String> {
    caps.iter()
        .find_map(|l| l.strip_prefix("\"SASL\" \""))
        .map(|v| {
            v.trim_end_matches('"')
                .split_whitespace()
                .map(String::from)
                .collect()
        })
        .unwrap_or_else(|| panic!("no SASL line in {caps:?}"))
}

/// Asserts a capability response is postern's, not the backend's.
fn assert_postern(caps: &[String]) {
    assert_eq!(
        caps.first().map(String::as_str),
        Some(format!("\"IMPLEMENTATION\" \"{IMPLEMENTATION}\"").as_str()),
        "not postern's capabilities: {caps:?}"
    );
    assert!(has_line(caps, "\"VERSION\" \"1.0\""), "{caps:?}");
    assert_eq!(
        caps.last().map(String::as_str),
        Some(format!("OK \"{IMPLEMENTATION} ready.\"").as_str())
    );
}

/// A response: the lines before the status line, then the status line.
#[derive(Debug)]
struct Response {
    lines: Vec<ImapLine>,
    status: String,
}

impl Response {
    fn ok(self) -> Response {
        assert!(self.status.starts_with("OK"), "expected OK: {self:?}");
        self
    }
}

fn is_status(line: &str) -> bool {
    ["OK", "NO", "BYE"].iter().any(|s| {
        line.strip_prefix(s)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '(']))
    })
}

/// A small ManageSieve client over any stream, on top of [`ImapClient`]'s line and
/// literal reading (the string syntax is IMAP's).
struct Sieve<S: Read + Write> {
    c: ImapClient<S>,
}

impl Sieve<std::net::TcpStream> {
    fn into_inner(self) -> std::net::TcpStream {
        self.c.into_tcp()
    }
}

impl<S: Read + Write> Sieve<S> {
    fn new(stream: S) -> Sieve<S> {
        Sieve {
            c: ImapClient::new(stream),
        }
    }

    /// Lines up to and including a status line.
    fn response(&mut self) -> Response {
        let mut lines = Vec::new();
        loop {
            let line = self.c.read_response_line();
            if is_status(&line.text) {
                return Response {
                    lines,
                    status: line.text,
                };
            }
            lines.push(line);
        }
    }

    /// A capability response as lines, its `OK` last.
    fn capabilities(&mut self) -> Vec<String> {
        let r = self.response();
        let mut out: Vec<String> = r.lines.into_iter().map(|l| l.text).collect();
        out.push(r.status);
        out
    }

    fn command(&mut self, line: &str) -> Response {
        self.c.send(line);
        self.response()
    }

    fn authenticate_plain(&mut self, user: &str, password: &str) -> String {
        self.command(&format!(
            "AUTHENTICATE \"PLAIN\" \"{}\"",
            plain_b64(user, password)
        ))
        .status
    }

    /// PUTSCRIPT with a non-synchronising literal (RFC 5804 §4 `literal-c2s`).
    fn putscript(&mut self, name: &str, script: &[u8]) -> Response {
        self.c
            .send_raw(format!("PUTSCRIPT \"{name}\" {{{}+}}\r\n", script.len()).as_bytes());
        self.c.send_raw(script);
        self.c.send_raw(b"\r\n");
        self.response()
    }

    /// GETSCRIPT: the script's bytes (a literal before the OK).
    fn getscript(&mut self, name: &str) -> Vec<u8> {
        let r = self.command(&format!("GETSCRIPT \"{name}\"")).ok();
        r.lines
            .into_iter()
            .find_map(|l| l.literals.into_iter().next())
            .unwrap_or_else(|| panic!("no script literal for {name}"))
    }

    fn logout(&mut self) {
        let r = self.command("LOGOUT");
        assert!(r.status.starts_with("OK"), "LOGOUT: {r:?}");
    }
}

// ---- the fixture on its own -----------------------------------------------------------

#[test]
fn fixture_dovecot_managesieve_directly() {
    let name = "fixture_dovecot_managesieve_directly";
    if !support::skip_unless_root(name) {
        return;
    }
    let dir = support::shared_tempdir();
    let ca = Ca::new(dir.path(), "sieve");
    let Some(dovecot) = Dovecot::start(name, dovecot_opts(&ca)) else {
        return;
    };
    let mut c = Sieve::new(client::connect(dovecot.managesieve.expect("managesieve")));
    let caps = c.capabilities();
    assert!(has_line(&caps, "\"STARTTLS\""), "{caps:?}");
    c.command("STARTTLS").ok();
    let tls = client::tls_upgrade(c.into_inner(), DOVECOT_NAME, &ca.cert_pem)
        .unwrap_or_else(|e| panic!("{e}\n{}", dovecot.log()));
    let mut c = Sieve::new(tls);
    c.capabilities();
    let ok = c.authenticate_plain(ALICE.0, ALICE.1);
    assert!(ok.starts_with("OK"), "{ok}\n{}", dovecot.log());
    c.putscript("direct", SCRIPT.as_bytes()).ok();
    assert_eq!(c.getscript("direct"), SCRIPT.as_bytes());
    c.logout();
    login_line(&dovecot, ALICE.0, 1);
}

// ---- postern in front of Dovecot --------------------------------------------------------

#[test]
fn starttls_login_putscript_getscript() {
    let name = "starttls_login_putscript_getscript";
    let Some(w) = world(name, "none") else {
        return;
    };
    let mut c = w.starttls_client();
    let ok = c.authenticate_plain(ALICE.0, ALICE.1);
    assert!(ok.starts_with("OK"), "AUTHENTICATE through postern: {ok}");
    // From here on, Dovecot answers.
    c.putscript("postern", SCRIPT.as_bytes()).ok();
    c.command("SETACTIVE \"postern\"").ok();
    let listed = c.command("LISTSCRIPTS").ok();
    assert!(
        listed.lines.iter().any(|l| l.text == "\"postern\" ACTIVE"),
        "{listed:?}"
    );
    assert_eq!(c.getscript("postern"), SCRIPT.as_bytes());
    c.logout();
    assert_eq!(w.stored_script(ALICE.0, "postern"), SCRIPT.as_bytes());
    let line = w.login_line(ALICE.0, 1);
    assert!(line.contains("method=PLAIN"), "{line}");
    assert!(line.contains(", TLS"), "Dovecot did not see TLS: {line}");
    drop(c);
    w.proxy.wait_log("session closed", WAIT);
    w.assert_log_clean(ALICE.0, ALICE.1);
}

#[test]
fn implicit_tls_login_putscript_getscript() {
    let name = "implicit_tls_login_putscript_getscript";
    let Some(w) = world(name, "none") else {
        return;
    };
    let mut c = w.implicit_client();
    // The initial response as a literal, the way sieve-connect sends it.
    let b64 = plain_b64(BOB.0, BOB.1);
    c.c.send_raw(format!("AUTHENTICATE \"PLAIN\" {{{}+}}\r\n{b64}\r\n", b64.len()).as_bytes());
    let ok = c.response().status;
    assert!(ok.starts_with("OK"), "AUTHENTICATE over implicit TLS: {ok}");
    c.putscript("implicit", SCRIPT.as_bytes()).ok();
    assert_eq!(c.getscript("implicit"), SCRIPT.as_bytes());
    c.logout();
    assert_eq!(w.stored_script(BOB.0, "implicit"), SCRIPT.as_bytes());
    w.login_line(BOB.0, 1);
}

#[test]
fn empty_challenge_then_response_as_a_string() {
    let name = "empty_challenge_then_response_as_a_string";
    let Some(w) = world(name, "none") else {
        return;
    };
    let mut c = w.implicit_client();
    c.c.send("AUTHENTICATE \"PLAIN\"");
    // RFC 5804 §2.1: the challenge is a string (here an empty literal), then CRLF.
    let challenge = c.c.read_response_line();
    assert_eq!(challenge.text, "{0}");
    assert_eq!(challenge.literals, [Vec::<u8>::new()]);
    c.c.send(&format!("\"{}\"", plain_b64(ALICE.0, ALICE.1)));
    let ok = c.response().status;
    assert!(ok.starts_with("OK"), "{ok}");
    c.command("LISTSCRIPTS").ok();
    c.logout();
    w.login_line(ALICE.0, 1);
}

#[test]
fn wrong_password_then_right_one_on_the_same_connection() {
    let name = "wrong_password_then_right_one_on_the_same_connection";
    let Some(w) = world(name, "none") else {
        return;
    };
    // What Dovecot itself answers to a wrong password, for comparison. Asked from
    // 127.0.0.3: Dovecot delays every login from an address with recent failures (its
    // auth penalty), and postern's logins come from 127.0.0.1.
    let direct_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let mut direct = Sieve::new(client::connect_from(
        direct_ip,
        w.dovecot.managesieve.expect("managesieve"),
    ));
    direct.capabilities();
    direct.command("STARTTLS").ok();
    let tls = client::tls_upgrade(direct.into_inner(), DOVECOT_NAME, &w.ca.cert_pem)
        .unwrap_or_else(|e| panic!("{e}\n{}", w.dovecot.log()));
    let mut direct = Sieve::new(tls);
    direct.capabilities();
    let dovecot_no = direct.authenticate_plain(ALICE.0, "not-the-password");
    assert!(dovecot_no.starts_with("NO"), "{dovecot_no}");
    direct.logout();
    let mismatches = || w.dovecot.log().matches("Password mismatch").count();
    let before = support::eventually(WAIT, "dovecot to log the direct failure", || {
        let n = mismatches();
        (n >= 1).then_some(n)
    });

    let mut c = w.starttls_client();
    let no = c.authenticate_plain(ALICE.0, "not-the-password");
    assert_eq!(
        no, dovecot_no,
        "the backend's NO is relayed as Dovecot said it"
    );
    support::eventually(
        WAIT,
        "dovecot to log the failure relayed through postern",
        || (mismatches() > before).then_some(()),
    );
    // postern still answers: the failed backend connection is gone, the client stays.
    assert_eq!(c.command("NOOP").status, "OK \"NOOP completed.\"");
    // Dovecot's auth penalty holds this one for a few seconds; the read timeout
    // allows for it.
    let ok = c.authenticate_plain(ALICE.0, ALICE.1);
    assert!(ok.starts_with("OK"), "second AUTHENTICATE: {ok}");
    c.command("LISTSCRIPTS").ok();
    c.logout();
    w.login_line(ALICE.0, 1);
}

#[test]
fn cleartext_before_starttls_is_refused_without_reaching_dovecot() {
    let name = "cleartext_before_starttls_is_refused_without_reaching_dovecot";
    let Some(w) = world(name, "none") else {
        return;
    };
    let mut c = Sieve::new(client::connect(w.proxy.addr("sieve")));
    assert_postern(&c.capabilities());
    let no = c.authenticate_plain(ALICE.0, ALICE.1);
    assert_eq!(
        no,
        "NO (ENCRYPT-NEEDED) \"Cleartext authentication requires TLS.\""
    );
    assert_eq!(
        c.command("LISTSCRIPTS").status,
        "NO \"Command not allowed in this state.\""
    );
    assert_eq!(
        c.command("NOOP \"sync-1\"").status,
        "OK (TAG \"sync-1\") \"Done\""
    );
    c.c.send("CAPABILITY");
    assert_postern(&c.capabilities());
    c.logout();
    assert!(
        !w.dovecot.log().contains("Login: user="),
        "a refused cleartext login reached Dovecot:\n{}",
        w.dovecot.log()
    );
}

#[test]
fn xclient_carries_the_client_address_to_dovecot() {
    let name = "xclient_carries_the_client_address_to_dovecot";
    let Some(w) = world(name, "xclient") else {
        return;
    };
    // postern reaches Dovecot from 127.0.0.1; the client comes from 127.0.0.2.
    let client_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let tcp = client::connect_from(client_ip, w.proxy.addr("sieves"));
    let tls = client::tls_upgrade(tcp, PROXY_NAME, &w.ca.cert_pem)
        .unwrap_or_else(|e| panic!("{e}\n{}", w.proxy.log()));
    let mut c = Sieve::new(tls);
    assert_postern(&c.capabilities());
    let ok = c.authenticate_plain(ALICE.0, ALICE.1);
    assert!(ok.starts_with("OK"), "AUTHENTICATE with XCLIENT: {ok}");
    c.command("LISTSCRIPTS").ok();
    c.logout();
    let line = w.login_line(ALICE.0, 1);
    assert_eq!(
        rip(&line),
        "127.0.0.2",
        "Dovecot's view of the client: {line}"
    );
}

#[test]
fn xclient_carries_ipv4_and_ipv6_clients_named_by_a_load_balancer() {
    let name = "xclient_carries_ipv4_and_ipv6_clients_named_by_a_load_balancer";
    let Some(w) = world(name, "xclient") else {
        return;
    };
    let addr = w.proxy.addr("sieve-lb");
    for (src, user) in [("192.0.2.7:40007", BOB), ("[2001:db8::7]:40008", ALICE)] {
        let src: std::net::SocketAddr = src.parse().expect("addr");
        // The load balancer's header names a destination of the client's family.
        let dst = std::net::SocketAddr::new(
            if src.is_ipv4() {
                "198.51.100.1".parse().expect("ip")
            } else {
                "2001:db8::1".parse().expect("ip")
            },
            4190,
        );
        let mut sock = client::connect(addr);
        sock.write_all(&support::proxy_v2_header(src, dst))
            .expect("proxy header");
        let tls = client::tls_upgrade(sock, PROXY_NAME, &w.ca.cert_pem)
            .unwrap_or_else(|e| panic!("{e}\n{}", w.proxy.log()));
        let mut c = Sieve::new(tls);
        assert_postern(&c.capabilities());
        let ok = c.authenticate_plain(user.0, user.1);
        assert!(
            ok.starts_with("OK"),
            "login from {src} through postern: {ok}"
        );
        c.logout();
        let line = w.login_line(user.0, 1);
        assert_eq!(
            rip(&line),
            src.ip().to_string(),
            "Dovecot's view of the client: {line}"
        );
    }
}

// ---- the real client ----------------------------------------------------------------------

/// Runs sieve-connect against the `sieve` listener (STARTTLS, the test CA, PLAIN) as
/// alice with `args`; returns stdout, panicking with its output and postern's log when
/// it fails.
fn sieve_connect(w: &World, args: &[&str]) -> Vec<u8> {
    let password = w.dir.path().join(format!("password-{}", client::unique()));
    support::write_file(&password, format!("{}\n", ALICE.1));
    let addr = w.proxy.addr("sieve");
    let mut cmd = Command::new("sieve-connect");
    cmd.args(["--server", &addr.ip().to_string()])
        .args(["--port", &addr.port().to_string()])
        .args(["--nosrv", "--4"])
        .args([
            "--user",
            ALICE.0,
            "--authmech",
            "PLAIN",
            "--passwordfd",
            "0",
        ])
        .args(["--tlshostname", PROXY_NAME])
        .arg("--tlscafile")
        .arg(&w.ca.cert_pem)
        .args(args)
        .stdin(Stdio::from(
            std::fs::File::open(&password).expect("password file"),
        ));
    let out = client::run_with_deadline(cmd, CLIENT_DEADLINE);
    assert!(
        out.status.success(),
        "sieve-connect {args:?} failed ({}):\nstdout: {}\nstderr: {}\npostern log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        w.proxy.log()
    );
    out.stdout
}

#[test]
fn sieve_connect_uploads_lists_and_downloads_through_postern() {
    let name = "sieve_connect_uploads_lists_and_downloads_through_postern";
    if !support::have_program("sieve-connect") {
        support::skip(name, "sieve-connect is not installed");
        return;
    }
    let Some(w) = world(name, "none") else {
        return;
    };
    let local = w.dir.path().join("upload.sieve");
    support::write_file(&local, SCRIPT);
    let local_arg = local.to_string_lossy().into_owned();
    sieve_connect(
        &w,
        &[
            "--upload",
            "--localsieve",
            &local_arg,
            "--remotesieve",
            "from-sieve-connect",
        ],
    );
    assert_eq!(
        w.stored_script(ALICE.0, "from-sieve-connect"),
        SCRIPT.as_bytes()
    );
    let listed = String::from_utf8(sieve_connect(&w, &["--list"])).expect("utf-8");
    assert!(
        // sieve-connect prints the names as the server sent them, quoted.
        listed
            .lines()
            .any(|l| l.trim().trim_matches('"') == "from-sieve-connect"),
        "--list: {listed:?}"
    );
    let back = w.dir.path().join("download.sieve");
    let back_arg = back.to_string_lossy().into_owned();
    sieve_connect(
        &w,
        &[
            "--download",
            "--remotesieve",
            "from-sieve-connect",
            "--localsieve",
            &back_arg,
        ],
    );
    assert_eq!(std::fs::read(&back).expect("downloaded"), SCRIPT.as_bytes());
    let line = w.login_line(ALICE.0, 3);
    assert!(line.contains("method=PLAIN"), "{line}");
    w.proxy.wait_log("session closed", WAIT);
    w.assert_log_clean(ALICE.0, ALICE.1);
}

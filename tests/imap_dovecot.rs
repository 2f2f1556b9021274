//! IMAP through the real `postern` binary in front of real Dovecot imapd (passwd-file
//! users, private instances started by the fixtures).
//!
//! postern answers the pre-authentication dialogue itself (its greeting carries the
//! test's banner, never Dovecot's), routes the account, replays the login on Dovecot and
//! then relays. Each test proves its claim on the Dovecot side too: its log line for the
//! login (`Login: user=<...>, method=..., rip=..., TLS`), or the maildir a message
//! APPENDed through postern landed in.
//!
//! The `fixture_*` tests speak to Dovecot directly with the same client code: when a
//! postern test fails, they tell whether the fixture or postern is at fault.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::certs::{Ca, Leaf};
use support::client::{self, ImapClient, ImapResponse};
use support::dovecot::{Dovecot, DovecotOpts};
use support::proxy::{Proxy, TestConfig};

const WAIT: Duration = Duration::from_secs(20);

const ALICE: (&str, &str) = ("alice@example.org", "alice-secret");
const BOB: (&str, &str) = ("bob@example.org", "bob-secret");

/// postern's greeting text; Dovecot's is "Dovecot ready.".
const BANNER: &str = "postern imap test";
/// The name on postern's certificate.
const PROXY_NAME: &str = "postern.test";
/// The name on Dovecot's certificate.
const DOVECOT_NAME: &str = "dovecot.test";

/// Keys of a destination reached over a plain loopback leg.
const PLAIN_DEST: &str = "proxy_protocol = false\nallow_plaintext_auth = true";

/// A test's world: drop order is postern, then Dovecot(s), then the directory.
struct World {
    proxy: Proxy,
    dovecot: Dovecot,
    ca: Ca,
    _dir: tempfile::TempDir,
}

/// Dovecot with IMAP, users alice and bob, and failed logins answered at once and
/// logged with their reason.
fn dovecot_opts() -> DovecotOpts {
    DovecotOpts::default()
        .imap()
        .with_user(BOB.0, BOB.1)
        .extra("auth_failure_delay = 0\nauth_verbose = yes\n")
}

fn start_dovecot(test: &str, opts: DovecotOpts) -> Option<Dovecot> {
    if !support::skip_unless_root(test) {
        return None;
    }
    Dovecot::start(test, opts)
}

/// `[destination.<name>]` with one IMAP leg on 127.0.0.1:`port`.
fn destination(name: &str, port: u16, tls: &str, keys: &str) -> String {
    format!(
        "[destination.{name}]\nhost = \"127.0.0.1\"\n{keys}\n\n\
         [destination.{name}.protocol.imap]\nport = {port}\ntls = \"{tls}\"\n"
    )
}

/// An IMAP listener on 127.0.0.1:0 with `tls` and extra keys.
fn imap_listener(tls: &str, extra: &str) -> String {
    format!("protocol = \"imap\"\nbind = [\"127.0.0.1:0\"]\ntls = \"{tls}\"\n{extra}")
}

/// `[tls.certificate.main]` for postern and `[capabilities.imap]` with the test banner.
fn common_tables(leaf: &Leaf, allow_plain_without_tls: bool) -> String {
    format!(
        "{}\n[capabilities.imap]\nallow_plain_auth_without_tls = {allow_plain_without_tls}\n\
         banner = \"{BANNER}\"\n",
        leaf.certificate_table("main")
    )
}

/// postern from `cfg` (with any keys the caller set) and the given listeners (name,
/// body) in front of `destinations`, routing unmapped accounts to `default`.
fn start_proxy(
    cfg: TestConfig,
    dir: &tempfile::TempDir,
    ca: &Ca,
    allow_plain_without_tls: bool,
    listeners: &[(&str, String)],
    destinations: &[String],
    default: &str,
) -> Proxy {
    let leaf = ca.leaf("postern", &[PROXY_NAME]);
    let mut cfg = cfg
        .raw(&common_tables(&leaf, allow_plain_without_tls))
        .default_destination(default);
    for (name, body) in listeners {
        cfg = cfg.listener(name, body);
    }
    for d in destinations {
        cfg = cfg.raw(d);
    }
    Proxy::start(cfg.render(), dir)
}

/// Dovecot (plain IMAP) and postern with a plain listener `imap` that allows LOGIN
/// without TLS, in front of it.
fn plain_world(test: &str, opts: DovecotOpts) -> Option<World> {
    world(test, opts, true, "imap", "plain")
}

/// Dovecot (plain IMAP) and postern with one listener `listener` (its `tls` mode) in
/// front of it, over a plain leg.
fn world(
    test: &str,
    opts: DovecotOpts,
    allow_plain_without_tls: bool,
    listener: &str,
    tls: &str,
) -> Option<World> {
    let dovecot = start_dovecot(test, opts)?;
    let dir = support::shared_tempdir();
    let ca = Ca::new(dir.path(), "imap");
    let proxy = start_proxy(
        TestConfig::new(dir.path()),
        &dir,
        &ca,
        allow_plain_without_tls,
        &[(listener, imap_listener(tls, ""))],
        &[destination(
            "backend",
            dovecot.imap.expect("imap port").port(),
            "plain",
            PLAIN_DEST,
        )],
        "backend",
    );
    Some(World {
        proxy,
        dovecot,
        ca,
        _dir: dir,
    })
}

/// Reads postern's greeting and asserts it is postern's, not the backend's.
fn postern_greeting<S: std::io::Read + std::io::Write>(c: &mut ImapClient<S>) -> String {
    let g = c.greeting();
    assert!(g.ends_with(BANNER), "not postern's greeting: {g:?}");
    assert!(g.contains("[CAPABILITY "), "no capability list: {g:?}");
    g
}

/// The capability atoms in a greeting or `* CAPABILITY` line.
fn caps(line: &str) -> Vec<String> {
    let inner = match (line.find("[CAPABILITY "), line.find("* CAPABILITY ")) {
        (Some(i), _) => {
            let rest = &line[i + "[CAPABILITY ".len()..];
            &rest[..rest.find(']').unwrap_or(rest.len())]
        }
        (None, Some(i)) => &line[i + "* CAPABILITY ".len()..],
        _ => panic!("no capability list in {line:?}"),
    };
    inner.split_whitespace().map(str::to_owned).collect()
}

/// Waits for Dovecot's login line for `user` (the `n`-th, counting from 1) and returns it.
fn dovecot_login_line(dovecot: &Dovecot, user: &str, n: usize) -> String {
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

/// The `rip=` field of a Dovecot login line.
fn rip(line: &str) -> &str {
    let start = line
        .find("rip=")
        .unwrap_or_else(|| panic!("no rip= in {line:?}"))
        + 4;
    let rest = &line[start..];
    &rest[..rest.find(',').unwrap_or(rest.len())]
}

/// SELECT INBOX works, so the session really is Dovecot's authenticated state.
fn select_inbox<S: std::io::Read + std::io::Write>(
    c: &mut ImapClient<S>,
    tag: &str,
) -> ImapResponse {
    let r = c.command(tag, "SELECT INBOX").ok();
    assert!(
        r.tagged.contains("[READ-WRITE]"),
        "SELECT did not open INBOX read-write: {:?}",
        r.tagged
    );
    r
}

fn logout<S: std::io::Read + std::io::Write>(c: &mut ImapClient<S>, tag: &str) {
    let r = c.command(tag, "LOGOUT").ok();
    assert!(
        r.has_untagged("* BYE"),
        "no BYE before LOGOUT's OK: {:?}",
        r.texts()
    );
}

/// Waits for the relayed session's `session closed` line (the client must have closed
/// its end: postern relays half-closes, so the session lasts until both ends are done),
/// then asserts that no form of
/// the password (clear, or inside the base64 PLAIN payload) is anywhere in postern's log.
fn assert_log_has_no_credential(proxy: &Proxy, user: &str, password: &str) {
    let log = proxy.wait_log("session closed", WAIT);
    for secret in [password.to_owned(), plain_b64(user, password)] {
        assert!(
            !log.contains(&secret),
            "postern logged a credential ({secret:?}):\n{log}"
        );
    }
}

fn plain_b64(user: &str, password: &str) -> String {
    client::base64(format!("\0{user}\0{password}").as_bytes())
}

// ---- pre-authentication, replayed logins -------------------------------------------

#[test]
fn login_through_postern_reaches_dovecot() {
    let name = "login_through_postern_reaches_dovecot";
    let Some(w) = plain_world(name, dovecot_opts()) else {
        return;
    };
    let mut c = ImapClient::connect(w.proxy.addr("imap"));
    let g = postern_greeting(&mut c);
    assert!(
        caps(&g).iter().any(|c| c == "AUTH=PLAIN")
            && !caps(&g).iter().any(|c| c == "LOGINDISABLED"),
        "plain listener with allow_plain_auth_without_tls: {g:?}"
    );
    let r = c.login("a1", ALICE.0, ALICE.1);
    assert!(r.tagged.starts_with("a1 OK"), "LOGIN: {r:?}");
    select_inbox(&mut c, "a2");
    logout(&mut c, "a3");
    let line = dovecot_login_line(&w.dovecot, ALICE.0, 1);
    assert!(line.contains("method=PLAIN"), "{line}");
    drop(c);
    assert_log_has_no_credential(&w.proxy, ALICE.0, ALICE.1);
}

#[test]
fn login_with_literal_arguments() {
    let name = "login_with_literal_arguments";
    let Some(w) = plain_world(name, dovecot_opts()) else {
        return;
    };
    let mut c = ImapClient::connect(w.proxy.addr("imap"));
    let g = postern_greeting(&mut c);
    assert!(caps(&g).iter().any(|c| c == "LITERAL+"), "{g:?}");
    // The user name as a synchronising literal (postern must say "+"), the password as
    // a non-synchronising one (LITERAL+: no wait).
    c.send(&format!("n1 LOGIN {{{}}}", BOB.0.len()));
    let cont = c.read_line();
    assert!(
        cont.starts_with('+'),
        "no continuation for a literal: {cont:?}"
    );
    c.send(&format!("{} {{{}+}}\r\n{}", BOB.0, BOB.1.len(), BOB.1));
    let r = c.read_tagged("n1");
    assert!(r.tagged.starts_with("n1 OK"), "LOGIN with literals: {r:?}");
    select_inbox(&mut c, "n2");
    logout(&mut c, "n3");
    dovecot_login_line(&w.dovecot, BOB.0, 1);
}

#[test]
fn authenticate_plain_with_sasl_ir() {
    let name = "authenticate_plain_with_sasl_ir";
    let Some(w) = plain_world(name, dovecot_opts()) else {
        return;
    };
    let mut c = ImapClient::connect(w.proxy.addr("imap"));
    let g = postern_greeting(&mut c);
    assert!(caps(&g).iter().any(|c| c == "SASL-IR"), "{g:?}");
    let r = c.command(
        "s1",
        &format!("AUTHENTICATE PLAIN {}", plain_b64(ALICE.0, ALICE.1)),
    );
    assert!(
        r.tagged.starts_with("s1 OK"),
        "AUTHENTICATE PLAIN (SASL-IR): {r:?}"
    );
    select_inbox(&mut c, "s2");
    logout(&mut c, "s3");
    dovecot_login_line(&w.dovecot, ALICE.0, 1);
    drop(c);
    assert_log_has_no_credential(&w.proxy, ALICE.0, ALICE.1);
}

#[test]
fn authenticate_plain_with_a_continuation() {
    let name = "authenticate_plain_with_a_continuation";
    let Some(w) = plain_world(name, dovecot_opts()) else {
        return;
    };
    let mut c = ImapClient::connect(w.proxy.addr("imap"));
    postern_greeting(&mut c);
    c.send("c1 AUTHENTICATE PLAIN");
    let cont = c.read_line();
    assert!(
        cont.starts_with('+'),
        "expected a continuation, got {cont:?}"
    );
    c.send(&plain_b64(BOB.0, BOB.1));
    let r = c.read_tagged("c1");
    assert!(
        r.tagged.starts_with("c1 OK"),
        "AUTHENTICATE PLAIN (continuation): {r:?}"
    );
    select_inbox(&mut c, "c2");
    logout(&mut c, "c3");
    dovecot_login_line(&w.dovecot, BOB.0, 1);
}

#[test]
fn starttls_on_the_postern_listener_then_login() {
    let name = "starttls_on_the_postern_listener_then_login";
    // Cleartext logins are not allowed: only TLS makes LOGIN possible.
    let Some(w) = world(name, dovecot_opts(), false, "imap", "starttls") else {
        return;
    };
    let mut c = ImapClient::connect(w.proxy.addr("imap"));
    let g = postern_greeting(&mut c);
    let before = caps(&g);
    assert!(before.iter().any(|c| c == "STARTTLS"), "{g:?}");
    assert!(before.iter().any(|c| c == "LOGINDISABLED"), "{g:?}");
    c.command("t1", "STARTTLS").ok();
    let tls = client::tls_upgrade(c.into_tcp(), PROXY_NAME, &w.ca.cert_pem)
        .unwrap_or_else(|e| panic!("{e}\n{}", w.proxy.log()));
    let mut c = ImapClient::new(tls);
    let r = c.command("t2", "CAPABILITY").ok();
    let cap_line = r
        .texts()
        .into_iter()
        .find(|l| l.starts_with("* CAPABILITY "))
        .unwrap_or_else(|| panic!("no CAPABILITY after TLS: {r:?}"))
        .to_owned();
    let after = caps(&cap_line);
    assert!(!after.iter().any(|c| c == "STARTTLS"), "{cap_line}");
    assert!(!after.iter().any(|c| c == "LOGINDISABLED"), "{cap_line}");
    assert!(after.iter().any(|c| c == "AUTH=PLAIN"), "{cap_line}");
    let r = c.login("t3", ALICE.0, ALICE.1);
    assert!(r.tagged.starts_with("t3 OK"), "LOGIN after STARTTLS: {r:?}");
    select_inbox(&mut c, "t4");
    logout(&mut c, "t5");
    dovecot_login_line(&w.dovecot, ALICE.0, 1);
}

#[test]
fn implicit_tls_listener_login() {
    let name = "implicit_tls_listener_login";
    let Some(w) = world(name, dovecot_opts(), false, "imaps", "implicit") else {
        return;
    };
    let tls = client::tls_connect(w.proxy.addr("imaps"), PROXY_NAME, &w.ca.cert_pem)
        .unwrap_or_else(|e| panic!("{e}\n{}", w.proxy.log()));
    let mut c = ImapClient::new(tls);
    let g = postern_greeting(&mut c);
    let caps = caps(&g);
    assert!(caps.iter().any(|c| c == "AUTH=PLAIN"), "{g:?}");
    assert!(
        !caps.iter().any(|c| c == "LOGINDISABLED" || c == "STARTTLS"),
        "{g:?}"
    );
    let r = c.login("i1", BOB.0, BOB.1);
    assert!(
        r.tagged.starts_with("i1 OK"),
        "LOGIN over implicit TLS: {r:?}"
    );
    select_inbox(&mut c, "i2");
    logout(&mut c, "i3");
    dovecot_login_line(&w.dovecot, BOB.0, 1);
}

#[test]
fn wrong_password_then_right_one_on_the_same_connection() {
    let name = "wrong_password_then_right_one_on_the_same_connection";
    let Some(w) = plain_world(name, dovecot_opts()) else {
        return;
    };
    // What Dovecot itself answers to a wrong password, for comparison. Asked from
    // 127.0.0.3: Dovecot delays every login from an address with recent failures (its
    // auth penalty), and postern's logins come from 127.0.0.1.
    let direct_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let mut direct = ImapClient::new(client::connect_from(
        direct_ip,
        w.dovecot.imap.expect("imap"),
    ));
    direct.greeting();
    let dovecot_no = direct.login("w1", ALICE.0, "not-the-password").tagged;
    assert!(dovecot_no.starts_with("w1 NO "), "{dovecot_no}");
    logout(&mut direct, "w9");
    let mismatches = || w.dovecot.log().matches("Password mismatch").count();
    let before = support::eventually(WAIT, "dovecot to log the direct failure", || {
        let n = mismatches();
        (n >= 1).then_some(n)
    });

    let mut c = ImapClient::connect(w.proxy.addr("imap"));
    postern_greeting(&mut c);
    let r = c.login("w1", ALICE.0, "not-the-password");
    assert_eq!(
        r.tagged, dovecot_no,
        "the backend's NO is relayed as Dovecot said it"
    );
    // Dovecot, not postern, judged the password.
    support::eventually(
        WAIT,
        "dovecot to log the failure relayed through postern",
        || (mismatches() > before).then_some(()),
    );
    // Dovecot's auth penalty holds this one for a few seconds (a failure from
    // 127.0.0.1 just now); the client's read timeout allows for it.
    let r = c.login("w2", ALICE.0, ALICE.1);
    assert!(
        r.tagged.starts_with("w2 OK"),
        "second LOGIN on the same connection: {r:?}"
    );
    select_inbox(&mut c, "w3");
    logout(&mut c, "w4");
    dovecot_login_line(&w.dovecot, ALICE.0, 1);
}

#[test]
fn logindisabled_on_a_plaintext_listener() {
    let name = "logindisabled_on_a_plaintext_listener";
    let Some(w) = world(name, dovecot_opts(), false, "imap", "plain") else {
        return;
    };
    let mut c = ImapClient::connect(w.proxy.addr("imap"));
    let g = postern_greeting(&mut c);
    let greeting_caps = caps(&g);
    assert!(greeting_caps.iter().any(|c| c == "LOGINDISABLED"), "{g:?}");
    assert!(!greeting_caps.iter().any(|c| c == "AUTH=PLAIN"), "{g:?}");
    assert!(
        !greeting_caps.iter().any(|c| c == "STARTTLS"),
        "plain listener: {g:?}"
    );
    let r = c.command("d1", "CAPABILITY").ok();
    assert!(
        r.texts()
            .iter()
            .any(|l| l.starts_with("* CAPABILITY ") && l.contains("LOGINDISABLED")),
        "{r:?}"
    );
    let r = c.login("d2", ALICE.0, ALICE.1);
    assert!(
        r.tagged.starts_with("d2 NO [PRIVACYREQUIRED]"),
        "LOGIN without TLS: {r:?}"
    );
    let r = c.command(
        "d3",
        &format!("AUTHENTICATE PLAIN {}", plain_b64(ALICE.0, ALICE.1)),
    );
    assert!(
        r.tagged.starts_with("d3 NO [PRIVACYREQUIRED]"),
        "AUTHENTICATE PLAIN without TLS: {r:?}"
    );
    // Refusals are not counted as failures (max_auth_attempts = 3): still usable.
    let r = c.login("d4", ALICE.0, ALICE.1);
    assert!(r.tagged.starts_with("d4 NO [PRIVACYREQUIRED]"), "{r:?}");
    c.command("d5", "NOOP").ok();
    logout(&mut c, "d6");
    assert!(
        !w.dovecot.log().contains("Login: user="),
        "a refused cleartext login reached Dovecot:\n{}",
        w.dovecot.log()
    );
}

// ---- routing ---------------------------------------------------------------------------

#[test]
fn two_destinations_each_user_lands_on_its_own_dovecot() {
    let name = "two_destinations_each_user_lands_on_its_own_dovecot";
    // Both instances know both users, so a wrong route would log in fine and only the
    // maildirs tell.
    let Some(one) = start_dovecot(name, dovecot_opts()) else {
        return;
    };
    let Some(two) = start_dovecot(name, dovecot_opts()) else {
        return;
    };
    let dir = support::shared_tempdir();
    let ca = Ca::new(dir.path(), "imap");
    // Unmapped accounts go to a port nothing listens on: only the mapping gets a user
    // to a Dovecot.
    let dead_port = support::free_port();
    let leaf = ca.leaf("postern", &[PROXY_NAME]);
    let config = TestConfig::new(dir.path())
        .raw(&common_tables(&leaf, true))
        .listener("imap", &imap_listener("plain", ""))
        .raw(&destination(
            "one",
            one.imap.expect("imap").port(),
            "plain",
            PLAIN_DEST,
        ))
        .raw(&destination(
            "two",
            two.imap.expect("imap").port(),
            "plain",
            PLAIN_DEST,
        ))
        .raw(&destination("nowhere", dead_port, "plain", PLAIN_DEST))
        .default_destination("nowhere")
        .mappings(&format!(
            "# test routes\n{}\tone\n{}   two\n",
            ALICE.0, BOB.0
        ))
        .render();
    let proxy = Proxy::start(config, &dir);

    for (user, password, tag) in [
        (ALICE.0, ALICE.1, "routed-alice"),
        (BOB.0, BOB.1, "routed-bob"),
    ] {
        let mut c = ImapClient::connect(proxy.addr("imap"));
        postern_greeting(&mut c);
        let r = c.login("m1", user, password);
        assert!(r.tagged.starts_with("m1 OK"), "LOGIN {user}: {r:?}");
        let msg = support::sample_message(tag);
        let r = c.append("m2", "INBOX", &msg);
        assert!(r.tagged.starts_with("m2 OK"), "APPEND for {user}: {r:?}");
        logout(&mut c, "m3");
    }

    let alice_one = one.wait_for_messages(ALICE.0, 1, WAIT);
    let bob_two = two.wait_for_messages(BOB.0, 1, WAIT);
    assert_eq!(alice_one, vec![support::sample_message("routed-alice")]);
    assert_eq!(bob_two, vec![support::sample_message("routed-bob")]);
    assert!(
        two.messages(ALICE.0).is_empty(),
        "alice's message reached two"
    );
    assert!(one.messages(BOB.0).is_empty(), "bob's message reached one");
    dovecot_login_line(&one, ALICE.0, 1);
    dovecot_login_line(&two, BOB.0, 1);
    assert!(
        !one.log().contains(&format!("Login: user=<{}>", BOB.0)),
        "bob logged in on one"
    );
    assert!(
        !two.log().contains(&format!("Login: user=<{}>", ALICE.0)),
        "alice logged in on two"
    );
}

// ---- client identity -------------------------------------------------------------------

/// Dovecot that requires a PROXY header from loopback, and postern sending one (v2).
fn haproxy_world(test: &str, listener_extra: &str) -> Option<World> {
    let dovecot = start_dovecot(test, dovecot_opts().haproxy("127.0.0.0/8"))?;
    let dir = support::shared_tempdir();
    let ca = Ca::new(dir.path(), "imap");
    let proxy = start_proxy(
        TestConfig::new(dir.path()),
        &dir,
        &ca,
        true,
        &[("imap", imap_listener("plain", listener_extra))],
        &[destination(
            "backend",
            dovecot.imap.expect("imap").port(),
            "plain",
            "proxy_protocol = true\nallow_plaintext_auth = true",
        )],
        "backend",
    );
    Some(World {
        proxy,
        dovecot,
        ca,
        _dir: dir,
    })
}

#[test]
fn proxy_v2_lets_dovecot_see_the_real_client_address() {
    let name = "proxy_v2_lets_dovecot_see_the_real_client_address";
    let Some(w) = haproxy_world(name, "") else {
        return;
    };
    // postern reaches Dovecot from 127.0.0.1; the client comes from 127.0.0.2.
    let client_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut c = ImapClient::new(client::connect_from(client_ip, w.proxy.addr("imap")));
    postern_greeting(&mut c);
    let r = c.login("p1", ALICE.0, ALICE.1);
    assert!(r.tagged.starts_with("p1 OK"), "LOGIN: {r:?}");
    select_inbox(&mut c, "p2");
    logout(&mut c, "p3");
    let line = dovecot_login_line(&w.dovecot, ALICE.0, 1);
    assert_eq!(
        rip(&line),
        "127.0.0.2",
        "Dovecot's view of the client: {line}"
    );
}

#[test]
fn inbound_proxy_header_address_reaches_dovecot() {
    let name = "inbound_proxy_header_address_reaches_dovecot";
    let Some(w) = haproxy_world(
        name,
        "proxy_protocol = \"required\"\nproxy_trusted = [\"127.0.0.1\"]",
    ) else {
        return;
    };
    // A load balancer in front of postern says the client is 192.0.2.7.
    let addr = w.proxy.addr("imap");
    let src: SocketAddr = "192.0.2.7:40007".parse().expect("addr");
    let mut c = ImapClient::connect(addr);
    c.send_raw(&support::proxy_v2_header(src, addr));
    postern_greeting(&mut c);
    let r = c.login("q1", BOB.0, BOB.1);
    assert!(r.tagged.starts_with("q1 OK"), "LOGIN: {r:?}");
    logout(&mut c, "q2");
    let line = dovecot_login_line(&w.dovecot, BOB.0, 1);
    assert_eq!(
        rip(&line),
        "192.0.2.7",
        "Dovecot's view of the client: {line}"
    );
}

// ---- TLS toward Dovecot ----------------------------------------------------------------

/// Dovecot with TLS (certificate for `dovecot.test` from the test CA).
fn tls_dovecot(test: &str, ca: &Ca, imaps: bool) -> Option<Dovecot> {
    let leaf = ca.leaf("dovecot", &[DOVECOT_NAME]);
    let mut opts = dovecot_opts().tls(leaf);
    if imaps {
        opts = opts.imaps();
    }
    start_dovecot(test, opts)
}

#[test]
fn backend_leg_over_starttls() {
    let name = "backend_leg_over_starttls";
    if !support::skip_unless_root(name) {
        return;
    }
    let dir = support::shared_tempdir();
    let ca = Ca::new(dir.path(), "imap");
    let Some(dovecot) = tls_dovecot(name, &ca, false) else {
        return;
    };
    // No allow_plaintext_auth: credentials may cross this leg only inside TLS.
    let dest = destination(
        "backend",
        dovecot.imap.expect("imap").port(),
        "starttls",
        &format!("proxy_protocol = false\ntls_server_name = \"{DOVECOT_NAME}\"\ntls_allow_invalid_certs = true"),
    );
    let proxy = start_proxy(
        TestConfig::new(dir.path()),
        &dir,
        &ca,
        true,
        &[("imap", imap_listener("plain", ""))],
        &[dest],
        "backend",
    );
    let mut c = ImapClient::connect(proxy.addr("imap"));
    postern_greeting(&mut c);
    let r = c.login("x1", ALICE.0, ALICE.1);
    assert!(
        r.tagged.starts_with("x1 OK"),
        "LOGIN over a STARTTLS leg: {r:?}"
    );
    select_inbox(&mut c, "x2");
    logout(&mut c, "x3");
    let line = dovecot_login_line(&dovecot, ALICE.0, 1);
    assert!(line.contains(", TLS"), "Dovecot did not see TLS: {line}");
}

#[test]
fn backend_leg_over_implicit_tls_with_a_pinned_certificate() {
    let name = "backend_leg_over_implicit_tls_with_a_pinned_certificate";
    if !support::skip_unless_root(name) {
        return;
    }
    if !support::have_program("openssl") {
        support::skip(name, "openssl is not installed (it computes the pin)");
        return;
    }
    let dir = support::shared_tempdir();
    let ca = Ca::new(dir.path(), "imap");
    let Some(dovecot) = tls_dovecot(name, &ca, true) else {
        return;
    };
    let pin = sha256_fingerprint(&dir.path().join("dovecot.chain.pem"));
    let dest = destination(
        "backend",
        dovecot.imaps.expect("imaps").port(),
        "implicit",
        &format!("proxy_protocol = false\ntls_server_name = \"{DOVECOT_NAME}\"\ntls_pinned_cert_sha256 = \"{pin}\""),
    );
    let proxy = start_proxy(
        TestConfig::new(dir.path()),
        &dir,
        &ca,
        true,
        &[("imap", imap_listener("plain", ""))],
        &[dest],
        "backend",
    );
    let mut c = ImapClient::connect(proxy.addr("imap"));
    postern_greeting(&mut c);
    let r = c.login("y1", BOB.0, BOB.1);
    assert!(
        r.tagged.starts_with("y1 OK"),
        "LOGIN over an implicit-TLS leg: {r:?}"
    );
    select_inbox(&mut c, "y2");
    logout(&mut c, "y3");
    let line = dovecot_login_line(&dovecot, BOB.0, 1);
    assert!(line.contains(", TLS"), "Dovecot did not see TLS: {line}");
}

/// SHA-256 of the first certificate in `pem` (DER), as `AB:CD:...`, by `openssl x509`.
fn sha256_fingerprint(pem: &std::path::Path) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem)
        .stdin(Stdio::null());
    let out = client::run_with_deadline(cmd, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openssl x509: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.trim()
        .split_once('=')
        .map(|(_, fp)| fp.to_owned())
        .unwrap_or_else(|| panic!("no fingerprint in {text:?}"))
}

// ---- relay -----------------------------------------------------------------------------

/// A message of about `size` bytes: headers, then 76-character lines whose text does
/// not repeat with a short period, so a dropped or reordered chunk shows.
fn big_message(size: usize, seed: u32) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut m = b"From: Bob <bob@example.net>\r\nTo: Alice <alice@example.org>\r\n\
        Subject: ten megabytes\r\nMessage-ID: <big@example.net>\r\nMIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        .to_vec();
    let noise = support::pattern_bytes(size, seed);
    for line in noise.chunks(76) {
        if m.len() + line.len() + 2 > size {
            break;
        }
        m.extend(line.iter().map(|b| ALPHABET[usize::from(b & 63)]));
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// Logs alice in on `c` (greeting already read), APPENDs `msg` and FETCHes message
/// `seq` back; returns the bytes fetched.
fn append_then_fetch<S: std::io::Read + std::io::Write>(
    c: &mut ImapClient<S>,
    msg: &[u8],
    seq: u32,
) -> Vec<u8> {
    let r = c.login("b1", ALICE.0, ALICE.1);
    assert!(r.tagged.starts_with("b1 OK"), "LOGIN: {r:?}");
    let r = c.append("b2", "INBOX", msg);
    assert!(
        r.tagged.starts_with("b2 OK"),
        "APPEND of {} bytes: {r:?}",
        msg.len()
    );
    select_inbox(c, "b3");
    let fetched = c.fetch_body("b4", seq);
    logout(c, "b5");
    fetched
}

#[test]
fn ten_megabyte_message_appended_and_fetched_byte_identical() {
    let name = "ten_megabyte_message_appended_and_fetched_byte_identical";
    let Some(dovecot) = start_dovecot(name, dovecot_opts()) else {
        return;
    };
    let dir = support::shared_tempdir();
    let ca = Ca::new(dir.path(), "imap");
    // Plain on both legs (postern may splice), and TLS toward the client (a copy loop).
    // One runtime thread, as a worker has by default with one worker per CPU: every
    // session of the process, relay included, runs on that thread.
    let proxy = start_proxy(
        TestConfig::new(dir.path()).server("threads = 1"),
        &dir,
        &ca,
        true,
        &[
            ("imap", imap_listener("plain", "")),
            ("imaps", imap_listener("implicit", "")),
        ],
        &[destination(
            "backend",
            dovecot.imap.expect("imap").port(),
            "plain",
            PLAIN_DEST,
        )],
        "backend",
    );
    for worker in proxy.pool("imap")["workers"].as_array().expect("workers") {
        let pid = worker["pid"].as_u64().expect("worker pid");
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
        assert_eq!(threads, 1, "worker {pid} should run on its one thread");
    }
    let size = 10 * 1024 * 1024;
    let first = big_message(size, 10);
    let second = big_message(size, 11);

    let mut c = ImapClient::connect(proxy.addr("imap"));
    postern_greeting(&mut c);
    let fetched = append_then_fetch(&mut c, &first, 1);
    assert_eq!(fetched.len(), first.len(), "fetched length (plain)");
    assert!(
        fetched == first,
        "fetched bytes differ from the APPENDed message (plain)"
    );

    let tls = client::tls_connect(proxy.addr("imaps"), PROXY_NAME, &ca.cert_pem)
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    let mut c = ImapClient::new(tls);
    postern_greeting(&mut c);
    let fetched = append_then_fetch(&mut c, &second, 2);
    assert_eq!(fetched.len(), second.len(), "fetched length (TLS)");
    assert!(
        fetched == second,
        "fetched bytes differ from the APPENDed message (TLS)"
    );

    let stored = dovecot.wait_for_messages(ALICE.0, 2, WAIT);
    assert_eq!(stored.len(), 2);
    for (which, sent) in [("plain", &first), ("TLS", &second)] {
        assert!(
            stored.contains(sent),
            "Dovecot did not store the message APPENDed over {which} as sent (stored sizes {:?})",
            stored.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
}

#[test]
fn backend_final_reply_is_relayed_verbatim() {
    let name = "backend_final_reply_is_relayed_verbatim";
    let Some(w) = plain_world(name, dovecot_opts()) else {
        return;
    };
    // Dovecot's own answer to this LOGIN, asked directly.
    let mut direct = ImapClient::connect(w.dovecot.imap.expect("imap"));
    direct.greeting();
    let want = direct.login("v1", ALICE.0, ALICE.1).ok().tagged;
    assert!(
        want.starts_with("v1 OK [CAPABILITY "),
        "Dovecot's LOGIN reply: {want:?}"
    );
    logout(&mut direct, "v9");

    // The same tag through postern, so the whole line can be compared.
    let login = format!(
        "LOGIN {} {}",
        client::quote(ALICE.0),
        client::quote(ALICE.1)
    );
    let authenticate = format!("AUTHENTICATE PLAIN {}", plain_b64(ALICE.0, ALICE.1));
    for how in [login, authenticate] {
        let mut c = ImapClient::connect(w.proxy.addr("imap"));
        postern_greeting(&mut c);
        let r = c.command("v1", &how);
        assert_eq!(r.tagged, want, "{how}: the backend's final reply, verbatim");
        logout(&mut c, "v2");
    }
}

#[test]
fn commands_pipelined_after_login_reach_dovecot() {
    let name = "commands_pipelined_after_login_reach_dovecot";
    let Some(w) = plain_world(name, dovecot_opts()) else {
        return;
    };
    let pipelined = "l2 SELECT INBOX\r\nl3 NOOP\r\nl4 LOGOUT\r\n";
    let login = format!(
        "l1 LOGIN {} {}\r\n",
        client::quote(ALICE.0),
        client::quote(ALICE.1)
    );
    let sasl_ir = format!("l1 AUTHENTICATE PLAIN {}\r\n", plain_b64(ALICE.0, ALICE.1));
    let continued = format!("{}\r\n", plain_b64(ALICE.0, ALICE.1));
    for (how, auth) in [
        ("LOGIN", login),
        ("AUTHENTICATE with SASL-IR", sasl_ir),
        ("AUTHENTICATE, response after the continuation", continued),
    ] {
        let mut c = ImapClient::connect(w.proxy.addr("imap"));
        postern_greeting(&mut c);
        if how.contains("continuation") {
            c.send("l1 AUTHENTICATE PLAIN");
            let cont = c.read_line();
            assert!(cont.starts_with('+'), "{how}: {cont:?}");
        }
        // One write: the login (or its SASL response) and three more commands behind it.
        c.send_raw(format!("{auth}{pipelined}").as_bytes());
        let r = c.read_tagged("l1");
        assert!(r.tagged.starts_with("l1 OK"), "{how}: {r:?}");
        let r = c.read_tagged("l2").ok();
        assert!(
            r.tagged.contains("[READ-WRITE]"),
            "{how}: pipelined SELECT: {r:?}"
        );
        assert!(
            r.has_untagged(" EXISTS"),
            "{how}: SELECT's untagged data: {r:?}"
        );
        c.read_tagged("l3").ok();
        let r = c.read_tagged("l4").ok();
        assert!(r.has_untagged("* BYE"), "{how}: {r:?}");
        let ending = client::read_until_closed(&mut c.stream, WAIT);
        assert!(
            ending.bytes().is_empty(),
            "{how}: bytes after LOGOUT: {ending:?}"
        );
    }
    dovecot_login_line(&w.dovecot, ALICE.0, 3);
}

// ---- the fixtures on their own -----------------------------------------------------------

#[test]
fn fixture_dovecot_imap_append_fetch_and_tls_directly() {
    let name = "fixture_dovecot_imap_append_fetch_and_tls_directly";
    if !support::skip_unless_root(name) {
        return;
    }
    let dir = support::shared_tempdir();
    let ca = Ca::new(dir.path(), "imap");
    let Some(dovecot) = tls_dovecot(name, &ca, true) else {
        return;
    };
    let msg = big_message(1024 * 1024, 1);
    let mut c = ImapClient::connect(dovecot.imap.expect("imap"));
    c.greeting();
    let fetched = append_then_fetch(&mut c, &msg, 1);
    assert!(fetched == msg, "Dovecot returned other bytes than APPENDed");

    // STARTTLS on the plain port, implicit TLS on imaps, both verified against the CA.
    let mut c = ImapClient::connect(dovecot.imap.expect("imap"));
    let g = c.greeting();
    assert!(caps(&g).iter().any(|c| c == "STARTTLS"), "{g}");
    c.command("f1", "STARTTLS").ok();
    let mut c = ImapClient::new(
        client::tls_upgrade(c.into_tcp(), DOVECOT_NAME, &ca.cert_pem).expect("STARTTLS"),
    );
    let ok = c.login("f2", BOB.0, BOB.1).ok().tagged;
    assert!(ok.starts_with("f2 OK [CAPABILITY "), "{ok}");
    logout(&mut c, "f3");
    let line = dovecot_login_line(&dovecot, BOB.0, 1);
    assert!(line.contains(", TLS"), "{line}");

    let tls = client::tls_connect(dovecot.imaps.expect("imaps"), DOVECOT_NAME, &ca.cert_pem)
        .expect("imaps");
    let mut c = ImapClient::new(tls);
    c.greeting();
    c.login("g1", BOB.0, BOB.1).ok();
    logout(&mut c, "g2");
    let line = dovecot_login_line(&dovecot, BOB.0, 2);
    assert!(line.contains(", TLS"), "{line}");

    // A wrong password is judged and logged by Dovecot at once (auth_failure_delay = 0).
    let mut c = ImapClient::connect(dovecot.imap.expect("imap"));
    c.greeting();
    let no = c.login("h1", ALICE.0, "wrong").tagged;
    assert!(no.starts_with("h1 NO [AUTHENTICATIONFAILED]"), "{no}");
    dovecot.wait_log("Password mismatch", WAIT);
}

#[test]
fn fixture_dovecot_haproxy_logs_the_header_address() {
    let name = "fixture_dovecot_haproxy_logs_the_header_address";
    let Some(dovecot) = start_dovecot(name, dovecot_opts().haproxy("127.0.0.0/8")) else {
        return;
    };
    let addr = dovecot.imap.expect("imap");
    let mut c = ImapClient::connect(addr);
    let src: SocketAddr = "192.0.2.9:40009".parse().expect("addr");
    c.send_raw(&support::proxy_v2_header(src, addr));
    c.greeting();
    c.login("k1", ALICE.0, ALICE.1).ok();
    logout(&mut c, "k2");
    let line = dovecot_login_line(&dovecot, ALICE.0, 1);
    assert_eq!(rip(&line), "192.0.2.9", "{line}");
}

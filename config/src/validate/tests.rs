//! One test per validation rule, each asserting the key path of the issue, plus
//! defaults, forwarding resolution, unknown keys and the shipped example configs.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use super::validate_with_env;
use crate::model::*;
use crate::Issue;

/// A small valid config: one plain IMAP listener, one destination, a file mapping.
pub(super) const BASE: &str = r#"
[listener.imap]
protocol = "imap"
bind = ["127.0.0.1:0"]
tls = "plain"

[destination.old]
host = "old.example.com"

[destination.old.protocol.imap]
port = 143
tls = "starttls"

[routing]
default_destination = "old"

[mapping]
source = "file"

[mapping.file]
path = "/etc/postern/mappings.tsv"
"#;

/// A PEM pair the parser never opens (`parse` reads no file).
pub(super) const CERT: &str = "\n[tls.certificate.main]\ncert = \"/etc/postern/tls/cert.pem\"\nkey = \"/etc/postern/tls/key.pem\"\n";

pub(super) fn parse(text: &str) -> Result<Config, Vec<Issue>> {
    validate_with_env(text, None)
}

pub(super) fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(issues) => panic!("config rejected:\n{}", render(&issues)),
    }
}

pub(super) fn render(issues: &[Issue]) -> String {
    issues.iter().map(|i| format!("  {i}\n")).collect()
}

/// Inserts `lines` right after the `[header]` line of `text`.
pub(super) fn edit(text: &str, header: &str, lines: &str) -> String {
    let marker = format!("[{header}]\n");
    let at = text
        .find(&marker)
        .unwrap_or_else(|| panic!("no [{header}] in config"))
        + marker.len();
    format!("{}{lines}\n{}", &text[..at], &text[at..])
}

/// Asserts that `text` is rejected with an issue at `path` whose message contains `part`.
#[track_caller]
pub(super) fn rejects(text: &str, path: &str, part: &str) -> Vec<Issue> {
    let issues = parse(text).expect_err("config should be rejected");
    assert!(
        issues
            .iter()
            .any(|i| i.path == path && i.message.contains(part)),
        "expected `{path}: ...{part}...` among:\n{}",
        render(&issues)
    );
    issues
}

#[test]
fn base_config_is_valid() {
    ok(BASE);
}

// ---- rules of §2.11 -------------------------------------------------------------

#[test]
fn rule1_default_destination_must_be_declared() {
    let text = BASE.replace(
        "default_destination = \"old\"",
        "default_destination = \"olde\"",
    );
    rejects(
        &text,
        "routing.default_destination",
        "destination \"olde\" is not declared; did you mean old?",
    );
}

#[test]
fn rule2_listener_needs_a_bind() {
    let text = BASE.replace("bind = [\"127.0.0.1:0\"]", "bind = []");
    rejects(&text, "listener.imap.bind", "no address given");
    let text = BASE.replace("bind = [\"127.0.0.1:0\"]\n", "");
    rejects(&text, "listener.imap.bind", "required key is missing");
}

#[test]
fn rule3_proxy_protocol_needs_trusted_peers() {
    let text = edit(BASE, "listener.imap", "proxy_protocol = \"required\"");
    rejects(
        &text,
        "listener.imap.proxy_trusted",
        "list the peers allowed",
    );
    let text = edit(
        BASE,
        "listener.imap",
        "proxy_protocol = \"optional\"\nproxy_trusted = [\"10.0.0.0/8\"]",
    );
    ok(&text);
}

#[test]
fn rule4_passthrough_listener_cannot_starttls() {
    let text = format!(
        "{BASE}{CERT}\n[listener.mx]\nprotocol = \"smtp\"\nbind = [\"127.0.0.1:0\"]\ntls = \"starttls\"\n"
    );
    let text = text.replace(
        "[routing]\n",
        "[routing]\nsmtp_passthrough_destination = \"mx\"\n",
    );
    let text = format!("{text}\n[destination.mx]\nhost = \"mx.example.com\"\n[destination.mx.protocol.smtp]\nport = 25\ntls = \"plain\"\n");
    let issues = rejects(&text, "listener.mx.tls", "opaque byte stream");
    assert_eq!(issues.len(), 1, "{}", render(&issues));
}

#[test]
fn rule5_interactive_listener_needs_a_leg_on_the_default_destination() {
    let text = format!(
        "{BASE}\n[listener.pop]\nprotocol = \"pop3\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"\n"
    );
    rejects(
        &text,
        "listener.pop.protocol",
        "the default destination \"old\" has no pop3 leg",
    );
}

#[test]
fn rule5_http_listener_is_exempt() {
    let text = format!(
        "{BASE}\n[listener.web]\nprotocol = \"http\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"\n"
    );
    ok(&text);
}

const LMTP: &str =
    "\n[listener.lmtp]\nprotocol = \"lmtp\"\nbind = [\"127.0.0.1:24\"]\ntls = \"plain\"\n";

#[test]
fn rule6_passthrough_listener_needs_a_passthrough_destination() {
    let text = format!("{BASE}{LMTP}");
    rejects(
        &text,
        "listener.lmtp.protocol",
        "smtp_passthrough_destination, which is not set",
    );
}

#[test]
fn rule6_passthrough_destination_must_be_declared() {
    let text = format!("{BASE}{LMTP}").replace(
        "[routing]\n",
        "[routing]\nsmtp_passthrough_destination = \"dovecot\"\n",
    );
    rejects(
        &text,
        "routing.smtp_passthrough_destination",
        "destination \"dovecot\" is not declared",
    );
}

#[test]
fn rule6_passthrough_destination_needs_the_listeners_leg() {
    let text = format!("{BASE}{LMTP}").replace(
        "[routing]\n",
        "[routing]\nsmtp_passthrough_destination = \"old\"\n",
    );
    rejects(
        &text,
        "routing.smtp_passthrough_destination",
        "has no lmtp leg, which listener.lmtp relays to",
    );
    let text = format!("{text}\n[destination.old.protocol.lmtp]\nport = 24\ntls = \"plain\"\n");
    let config = ok(&text);
    assert_eq!(
        config.routing.smtp_passthrough_destination.as_deref(),
        Some("old")
    );
}

#[test]
fn rule7_plain_credential_leg_needs_allow_plaintext_auth() {
    let text = BASE.replace(
        "port = 143\ntls = \"starttls\"",
        "port = 143\ntls = \"plain\"",
    );
    rejects(
        &text,
        "destination.old.protocol.imap.tls",
        "would send client credentials unencrypted",
    );
    let text = edit(&text, "destination.old", "allow_plaintext_auth = true");
    ok(&text);
}

#[test]
fn rule7_ip_host_with_tls_needs_a_server_name() {
    let text = BASE.replace("host = \"old.example.com\"", "host = \"192.0.2.10\"");
    rejects(
        &text,
        "destination.old.tls_server_name",
        "host is an IP address",
    );
    let text = edit(
        &text,
        "destination.old",
        "tls_server_name = \"old.example.com\"",
    );
    assert_eq!(
        ok(&text).destinations["old"].server_name(),
        "old.example.com"
    );
}

const ROUTE_DEST: &str = "\n[destination.web]\nhost = \"web.example.com\"\n[destination.web.protocol.http]\nport = 8080\ntls = \"plain\"\nallow_plaintext_auth = true\n";

fn with_route(route: &str) -> String {
    let dest = ROUTE_DEST.replace(
        "tls = \"plain\"\nallow_plaintext_auth = true\n",
        "tls = \"implicit\"\n",
    );
    format!("{BASE}{dest}\n[[http.route]]\nmatch = \"/ok/*\"\n\n[[http.route]]\n{route}\n")
}

#[test]
fn rule8_route_glob_must_compile() {
    rejects(
        &with_route("match = \"/a/[\""),
        "http.route[1].match",
        "is not a valid glob",
    );
}

#[test]
fn rule8_route_destination_must_be_declared_with_an_http_leg() {
    rejects(
        &with_route("match = \"/x\"\ndestination = \"nope\""),
        "http.route[1].destination",
        "is not declared",
    );
    rejects(
        &with_route("match = \"/x\"\ndestination = \"old\""),
        "http.route[1].destination",
        "has no http leg",
    );
    let config = ok(&with_route("match = \"/x\"\ndestination = \"web\""));
    assert_eq!(config.http.routes[1].destination.as_deref(), Some("web"));
}

#[test]
fn rule8_body_extract_needs_a_regex_that_compiles() {
    rejects(
        &with_route("match = \"/x\"\nextract = { from = \"body\" }"),
        "http.route[1].extract.regex",
        "required key is missing",
    );
    rejects(
        &with_route("match = \"/x\"\nextract = { from = \"body\", regex = \"user=(\" }"),
        "http.route[1].extract.regex",
        "does not compile",
    );
    rejects(
        &with_route("match = \"/x\"\nextract = { from = \"body\", regex = \"user=.*\" }"),
        "http.route[1].extract.regex",
        "capture group",
    );
    let config = ok(&with_route(
        "match = \"/x\"\nextract = { from = \"body\", regex = \"user=([^&]+)\" }",
    ));
    assert_eq!(
        config.http.routes[1].extract,
        Some(Extract::Body {
            regex: "user=([^&]+)".into()
        })
    );
}

#[test]
fn rule8_query_extract_needs_param() {
    rejects(
        &with_route("match = \"/x\"\nextract = { from = \"query\" }"),
        "http.route[1].extract.param",
        "required key is missing",
    );
    let config = ok(&with_route(
        "match = \"/x\"\nextract = { from = \"query\", param = \"user\" }",
    ));
    assert_eq!(
        config.http.routes[1].extract,
        Some(Extract::Query {
            param: "user".into()
        })
    );
}

#[test]
fn rule8_header_extract_needs_header() {
    rejects(
        &with_route("match = \"/x\"\nextract = { from = \"header\" }"),
        "http.route[1].extract.header",
        "required key is missing",
    );
    rejects(
        &with_route("match = \"/x\"\nextract = { from = \"header\", header = \"X User\" }"),
        "http.route[1].extract.header",
        "not an HTTP header name",
    );
}

#[test]
fn rule8_extract_keys_for_another_source_are_reported() {
    rejects(
        &with_route("match = \"/x\"\nextract = { from = \"authorization\", param = \"u\" }"),
        "http.route[1].extract.param",
        "only used with from = \"query\"",
    );
}

#[test]
fn rule8_fallback_must_be_declared() {
    rejects(
        &with_route("match = \"/x\"\nextract = { from = \"authorization\" }\nfallback = \"gone\""),
        "http.route[1].fallback",
        "is not declared",
    );
    let config = ok(&with_route(
        "match = \"/x\"\nextract = { from = \"authorization\" }\nfallback = \"web\"",
    ));
    assert_eq!(config.http.routes[1].fallback.as_deref(), Some("web"));
}

#[test]
fn rule9_mapping_source_needs_its_table() {
    let text = BASE.replace("source = \"file\"", "source = \"redis\"");
    rejects(&text, "mapping.redis", "[mapping.redis] is missing");
    let text = format!("{text}\n[mapping.redis]\nurl = \"redis://127.0.0.1\"\n");
    let config = ok(&text);
    assert_eq!(
        config.mapping.source,
        MappingSource::Redis {
            url: "redis://127.0.0.1".into(),
            key_prefix: "route:".into(),
            pool_size: 16
        }
    );
}

pub(super) const ADMIN: &str = "\n[admin]\nbind = \"127.0.0.1:9443\"\n";

#[test]
fn rule10_admin_tls_must_be_implicit() {
    let text = format!(
        "{BASE}{CERT}{ADMIN}tls = \"plain\"\nbearer_token_file = \"/etc/postern/admin.token\"\n"
    );
    rejects(&text, "admin.tls", "served over HTTPS only");
}

#[test]
fn rule10_admin_needs_a_token() {
    let text = format!("{BASE}{CERT}{ADMIN}");
    rejects(
        &text,
        "admin.bearer_token_file",
        "no admin token is configured",
    );
}

#[test]
fn rule10_admin_token_length() {
    let text = format!("{BASE}{CERT}{ADMIN}bearer_token = \"short\"\n");
    rejects(
        &text,
        "admin.bearer_token",
        "is 5 characters long; use at least min_token_len (32)",
    );
    let long = "x".repeat(32);
    let config = ok(&format!("{BASE}{CERT}{ADMIN}bearer_token = \"{long}\"\n"));
    assert_eq!(
        config.admin.unwrap().bearer_token.as_deref(),
        Some(long.as_str())
    );
}

#[test]
fn rule10_environment_token_wins() {
    let text = format!("{BASE}{CERT}{ADMIN}bearer_token_file = \"/etc/postern/admin.token\"\n");
    let issues = validate_with_env(&text, Some("tiny".into())).unwrap_err();
    assert!(
        issues
            .iter()
            .any(|i| i.path == "admin" && i.message.contains("POSTERN_ADMIN_TOKEN")),
        "{issues:?}"
    );
    let token = "t".repeat(40);
    let admin = validate_with_env(&text, Some(token.clone()))
        .unwrap()
        .admin
        .unwrap();
    assert_eq!(admin.bearer_token, Some(token));
    assert_eq!(admin.bearer_token_file, None);
    // Without the environment the file is kept (its length is checked when read).
    let admin = ok(&text).admin.unwrap();
    assert_eq!(
        admin.bearer_token_file.as_deref(),
        Some(std::path::Path::new("/etc/postern/admin.token"))
    );
    assert_eq!(
        admin.bind,
        vec!["127.0.0.1:9443".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!((admin.min_token_len, admin.lockout_threshold), (32, 5));
    assert_eq!(admin.lockout_duration, Duration::from_secs(300));
}

#[test]
fn rule11_min_version() {
    let text = format!("{BASE}\n[tls.protocols]\nmin_version = \"1.1\"\n");
    rejects(
        &text,
        "tls.protocols.min_version",
        "is not one of \"1.2\", \"1.3\"",
    );
    let text = format!("{BASE}\n[tls.protocols]\nmin_version = 1.3\n");
    rejects(&text, "tls.protocols.min_version", "quote it");
    let text = format!("{BASE}\n[tls.protocols]\nmin_version = \"1.3\"\n");
    assert_eq!(ok(&text).tls.protocols.min_version, TlsVersion::Tls13);
}

#[test]
fn rule11_cipher_suite_names_are_checked() {
    let text = format!("{BASE}\n[tls.protocols]\ndisable_cipher_suites = [\"tls13_aes_128_gcm_sha256\", \"TLS13_AES_128_GCM_SHA265\"]\n");
    rejects(
        &text,
        "tls.protocols.disable_cipher_suites[1]",
        "did you mean TLS13_AES_128_GCM_SHA256?",
    );
    let text = format!(
        "{BASE}\n[tls.protocols]\ndisable_cipher_suites = [\"tls13_aes_128_gcm_sha256\"]\n"
    );
    assert_eq!(
        ok(&text).tls.protocols.disable_cipher_suites,
        vec!["TLS13_AES_128_GCM_SHA256".to_owned()]
    );
}

#[test]
fn rule11_cipher_set_must_not_be_empty() {
    let all: Vec<String> = super::sections::CIPHER_SUITES
        .iter()
        .map(|(n, _)| format!("{n:?}"))
        .collect();
    let text = format!(
        "{BASE}\n[tls.protocols]\ndisable_cipher_suites = [{}]\n",
        all.join(", ")
    );
    rejects(
        &text,
        "tls.protocols.disable_cipher_suites",
        "disables every cipher suite",
    );
    let tls13 = "\"TLS13_AES_256_GCM_SHA384\", \"TLS13_AES_128_GCM_SHA256\", \"TLS13_CHACHA20_POLY1305_SHA256\"";
    let text = format!(
        "{BASE}\n[tls.protocols]\nmin_version = \"1.3\"\ndisable_cipher_suites = [{tls13}]\n"
    );
    rejects(
        &text,
        "tls.protocols.disable_cipher_suites",
        "every TLS 1.3 cipher suite",
    );
    // At 1.2, TLS 1.2 suites remain.
    ok(&format!(
        "{BASE}\n[tls.protocols]\ndisable_cipher_suites = [{tls13}]\n"
    ));
}

#[test]
fn rule11_pin_is_64_hex_digits() {
    let text = edit(BASE, "destination.old", "tls_pinned_cert_sha256 = \"abcd\"");
    rejects(
        &text,
        "destination.old.tls_pinned_cert_sha256",
        "found 4 hex digits, expected 64",
    );
    let text = edit(
        BASE,
        "destination.old",
        &format!("tls_pinned_cert_sha256 = \"{}\"", "zz".repeat(32)),
    );
    rejects(
        &text,
        "destination.old.tls_pinned_cert_sha256",
        "'z' is not a hex digit",
    );
    let colons: Vec<String> = (0u8..32).map(|b| format!("{b:02X}")).collect();
    let text = edit(
        BASE,
        "destination.old",
        &format!("tls_pinned_cert_sha256 = \"{}\"", colons.join(":")),
    );
    let pin = ok(&text).destinations["old"]
        .tls_pinned_cert_sha256
        .unwrap();
    assert_eq!(pin, core::array::from_fn::<u8, 32, _>(|i| i as u8));
}

#[test]
fn rule11_client_cert_and_key_come_as_a_pair() {
    let text = edit(
        BASE,
        "destination.old",
        "tls_client_cert = \"/etc/postern/client.pem\"",
    );
    rejects(
        &text,
        "destination.old.tls_client_key",
        "tls_client_cert is set, so tls_client_key is required",
    );
    let text = edit(
        BASE,
        "destination.old",
        "tls_client_key = \"/etc/postern/client.key\"",
    );
    rejects(
        &text,
        "destination.old.tls_client_cert",
        "give both or neither",
    );
}

#[test]
fn rule13_no_listeners_and_no_admin() {
    let text = BASE.replace(
        "[listener.imap]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"\n",
        "",
    );
    let issues = rejects(&text, "listener", "no listeners configured");
    assert_eq!(issues.len(), 1, "{}", render(&issues));
}

// ---- postern's decisions --------------------------------------------------------

#[test]
fn http_listener_cannot_starttls() {
    let text = format!("{BASE}{CERT}\n[listener.web]\nprotocol = \"http\"\nbind = [\"127.0.0.1:0\"]\ntls = \"starttls\"\n");
    rejects(&text, "listener.web.tls", "HTTP has no STARTTLS");
}

#[test]
fn tls_listener_needs_a_certificate() {
    let text = BASE.replace("tls = \"plain\"", "tls = \"starttls\"");
    rejects(
        &text,
        "listener.imap.tls",
        "\"starttls\" needs a certificate, but no [tls.certificate.<name>]",
    );
    let text = BASE.replace("tls = \"plain\"", "tls = \"implicit\"");
    rejects(
        &text,
        "listener.imap.tls",
        "\"implicit\" needs a certificate",
    );
    ok(&format!("{text}{CERT}"));
}

#[test]
fn a_broken_certificate_table_still_counts_as_configured() {
    let text = BASE.replace("tls = \"plain\"", "tls = \"implicit\"")
        + "\n[tls.certificate.main]\ncert = \"/etc/postern/tls/cert.pem\"\n";
    let issues = rejects(&text, "tls.certificate.main.key", "required key is missing");
    assert_eq!(issues.len(), 1, "{}", render(&issues));
}

#[test]
fn admin_needs_a_certificate() {
    let text = format!("{BASE}{ADMIN}bearer_token_file = \"/etc/postern/admin.token\"\n");
    rejects(
        &text,
        "admin.tls",
        "no [tls.certificate.<name>] is configured",
    );
}

#[test]
fn sasl_names_are_checked_and_upper_cased() {
    let text =
        format!("{BASE}\n[capabilities.imap]\nsasl = [\"plain\", \"CRAM-MD5\", \"PLAIN\"]\n");
    let issues = rejects(
        &text,
        "capabilities.imap.sasl[1]",
        "\"CRAM-MD5\" is not a SASL mechanism postern supports",
    );
    assert!(issues
        .iter()
        .any(|i| i.path == "capabilities.imap.sasl[2]" && i.message.contains("listed twice")));
    let text = format!("{BASE}\n[capabilities.pop3]\nsasl = [\"plain\", \"login\"]\n");
    assert_eq!(
        ok(&text).capabilities.pop3.auth.sasl,
        vec!["PLAIN", "LOGIN"]
    );
}

#[test]
fn workers_at_least_one() {
    let text = format!("{BASE}\n[server]\nworkers = 0\n");
    rejects(&text, "server.workers", "0 is out of range");
    assert_eq!(
        ok(&format!("{BASE}\n[server]\nworkers = 3\n")).workers_per_listener(),
        3
    );
}

#[test]
fn threads_share_the_cpus_among_workers() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let threads = |server: &str| ok(&format!("{BASE}\n[server]\n{server}\n")).threads_per_worker();
    // Default: one worker per CPU, one thread each.
    assert_eq!(threads(""), 1);
    // One worker: every CPU's thread in it.
    assert_eq!(threads("workers = 1"), cpus);
    // More workers than CPUs: still one thread each.
    assert_eq!(threads(&format!("workers = {}", cpus * 2)), 1);
    // Set explicitly: taken as is, whatever the workers.
    assert_eq!(threads("threads = 3\nworkers = 1"), 3);
    assert_eq!(threads("threads = 3"), 3);
}

#[test]
fn max_connections_at_least_one() {
    let text = edit(BASE, "listener.imap", "max_connections = 0");
    rejects(
        &text,
        "listener.imap.max_connections",
        "0 is out of range; use a whole number between 1 and",
    );
}

#[test]
fn proxy_ttl_at_least_one() {
    rejects(
        &format!("{BASE}\n[server]\nproxy_ttl = 0\n"),
        "server.proxy_ttl",
        "out of range",
    );
}

#[test]
fn server_user_not_empty() {
    rejects(
        &format!("{BASE}\n[server]\nuser = \"\"\n"),
        "server.user",
        "must not be empty",
    );
}

#[test]
fn duplicate_bind_is_an_error() {
    let text = format!("{BASE}\n[listener.imap2]\nprotocol = \"imap\"\nbind = [\"0.0.0.0:1143\", \"127.0.0.1:1143\"]\ntls = \"plain\"\n")
        .replace("bind = [\"127.0.0.1:0\"]", "bind = [\"127.0.0.1:0\", \"127.0.0.1:0\"]");
    // Port 0 never clashes; a wildcard clashes with a specific address of its family.
    rejects(
        &text,
        "listener.imap2.bind[1]",
        "127.0.0.1:1143 is already bound by listener.imap2",
    );
    let text = format!("{BASE}\n[listener.imap2]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:1143\"]\ntls = \"plain\"\n{CERT}{ADMIN}bearer_token_file = \"/t\"\n")
        .replace("bind = \"127.0.0.1:9443\"", "bind = [\"127.0.0.1:1143\"]");
    rejects(&text, "admin.bind[0]", "already bound by listener.imap2");
}

#[test]
fn destination_pointing_at_a_listener_is_an_error() {
    let text = BASE
        .replace("bind = [\"127.0.0.1:0\"]", "bind = [\"0.0.0.0:143\"]")
        .replace(
            "host = \"old.example.com\"",
            "host = \"127.0.0.1\"\ntls_server_name = \"x\"",
        );
    rejects(
        &text,
        "destination.old.protocol.imap.port",
        "connections would loop back into postern",
    );
}

#[test]
fn names_are_restricted() {
    let text = BASE.replace("[listener.imap]", "[listener.\"imap.tls\"]");
    rejects(
        &text,
        "listener.\"imap.tls\"",
        "listener name \"imap.tls\" is not allowed",
    );
}

#[test]
fn unknown_protocol_leg_is_reported() {
    let text =
        format!("{BASE}\n[destination.old.protocol.imaps]\nport = 993\ntls = \"implicit\"\n");
    rejects(
        &text,
        "destination.old.protocol.imaps",
        "unknown protocol; did you mean imap?",
    );
}

// ---- reporting ------------------------------------------------------------------

#[test]
fn bad_enum_value_lists_the_choices() {
    let text = BASE.replace("tls = \"plain\"", "tls = \"startls\"");
    let issues = parse(&text).unwrap_err();
    assert_eq!(
        issues[0].to_string(),
        "listener.imap.tls: \"startls\" is not one of implicit, starttls, plain"
    );
}

#[test]
fn unknown_key_suggests_the_nearest() {
    let text = edit(BASE, "listener.imap", "max_conections = 10");
    let issues = parse(&text).unwrap_err();
    assert_eq!(
        issues.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["listener.imap.max_conections: unknown key; did you mean max_connections?"]
    );
    let text = format!("{BASE}\n[routng]\n");
    rejects(&text, "routng", "unknown key; did you mean routing?");
    let text = edit(BASE, "mapping", "wibble = 1");
    rejects(&text, "mapping.wibble", "unknown key; known keys here are");
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let text = r#"
[server]
shutdown_grace = "30"
workers = 0
threds = 4

[listener.imap]
protocol = "imap"
bind = ["127.0.0.1:143", "nonsense"]
tls = "startls"
max_connections = "many"

[listener.pop]
protocol = "pop4"
bind = ["127.0.0.1:143"]
tls = "plain"

[destination.old]
host = "old.example.com"
[destination.old.protocol.imap]
port = 70000
tls = "plain"

[routing]
default_destination = "new"
"#;
    let issues = parse(text).unwrap_err();
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    for expected in [
        "server.shutdown_grace",
        "server.workers",
        "server.threds",
        "listener.imap.bind[1]",
        "listener.imap.tls",
        "listener.imap.max_connections",
        "listener.pop.protocol",
        "listener.pop.bind[0]",
        "destination.old.protocol.imap.port",
        "destination.old.protocol.imap.tls",
        "routing.default_destination",
        "mapping",
    ] {
        assert!(
            paths.contains(&expected),
            "missing {expected} in:\n{}",
            render(&issues)
        );
    }
    assert!(
        issues
            .iter()
            .any(|i| i.message.contains("(such as \"30s\")")),
        "{}",
        render(&issues)
    );
}

#[test]
fn type_errors_name_the_expected_type() {
    let text = edit(BASE, "listener.imap", "max_auth_attempts = \"3\"");
    rejects(
        &text,
        "listener.imap.max_auth_attempts",
        "expected a whole number, found string \"3\"",
    );
    let text = edit(BASE, "listener.imap", "preauth_timeout = 30");
    rejects(
        &text,
        "listener.imap.preauth_timeout",
        "a duration needs a unit; write \"30s\"",
    );
    let text = edit(BASE, "destination.old", "proxy_protocol = \"yes\"");
    rejects(
        &text,
        "destination.old.proxy_protocol",
        "expected true or false",
    );
    rejects(
        &format!("{BASE}\n[server]\nbridge_idle = \"5 weeks\"\n"),
        "server.bridge_idle",
        "unknown unit \"weeks\"",
    );
}

#[test]
fn syntax_errors_have_line_and_column() {
    let issues = parse("[server]\nthreads = 4\nhostname = \n").unwrap_err();
    assert_eq!(issues.len(), 1);
    assert!(
        issues[0]
            .message
            .starts_with("TOML syntax error at line 3, column "),
        "{}",
        issues[0]
    );
}

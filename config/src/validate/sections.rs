//! The tables that stand on their own: `[server]`, `[sandbox]`, `[tls]`,
//! `[capabilities.*]`, `[oauth]` and `[admin]`. Each function walks one table, records
//! its problems, and returns the model part with defaults applied (or a draft where a
//! required value may be missing). Rules that span tables live in `rules`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::{
    Admin, Capabilities, Certificate, ImapCapabilities, ManageSieveCapabilities, OAuth,
    Pop3Capabilities, Sandbox, SaslSettings, SeccompMode, Server, SubmissionCapabilities, Tls,
    TlsMode, TlsProtocols, TlsVersion,
};
use crate::schema::{describe, suggest, Obj};

use super::{check_name, DEFAULT_ACCOUNT, DEFAULT_CONTROL_SOCKET};

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `sun_path` in `struct sockaddr_un` holds 108 bytes, NUL included.
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// SASL mechanisms postern implements.
pub(crate) const SASL_MECHANISMS: [&str; 4] = ["PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"];
/// Advertised when `sasl` is not set (the seed: LOGIN is not advertised by default).
pub(crate) const DEFAULT_SASL: [&str; 3] = ["PLAIN", "OAUTHBEARER", "XOAUTH2"];

/// `capabilities.imap.advertise` default (§8).
pub(crate) const DEFAULT_IMAP_ADVERTISE: [&str; 8] = [
    "IMAP4rev2",
    "IMAP4rev1",
    "ENABLE",
    "SASL-IR",
    "LITERAL+",
    "ID",
    "UTF8=ACCEPT",
    "JMAPACCESS",
];
/// `capabilities.submission.ehlo` default (§8).
pub(crate) const DEFAULT_EHLO: [&str; 8] = [
    "ENHANCEDSTATUSCODES",
    "8BITMIME",
    "BINARYMIME",
    "SMTPUTF8",
    "PIPELINING",
    "CHUNKING",
    "REQUIRETLS",
    "SIZE",
];
/// `capabilities.managesieve.sieve` default (§8).
pub(crate) const DEFAULT_SIEVE: [&str; 47] = [
    "body",
    "comparator-elbonia",
    "comparator-i;ascii-casemap",
    "comparator-i;ascii-numeric",
    "comparator-i;octet",
    "convert",
    "copy",
    "date",
    "duplicate",
    "editheader",
    "enclose",
    "encoded-character",
    "enotify",
    "envelope",
    "envelope-deliverby",
    "envelope-dsn",
    "environment",
    "ereject",
    "extlists",
    "extracttext",
    "fcc",
    "fileinto",
    "foreverypart",
    "ihave",
    "imap4flags",
    "imapsieve",
    "include",
    "index",
    "mailbox",
    "mailboxid",
    "mboxmetadata",
    "mime",
    "redirect-deliverby",
    "redirect-dsn",
    "regex",
    "reject",
    "relational",
    "replace",
    "servermetadata",
    "spamtest",
    "spamtestplus",
    "special-use",
    "subaddress",
    "vacation",
    "vacation-seconds",
    "variables",
    "virustest",
];

/// Cipher suites rustls implements, by standard name, with the TLS version they need.
pub(crate) const CIPHER_SUITES: [(&str, TlsVersion); 9] = [
    ("TLS13_AES_256_GCM_SHA384", TlsVersion::Tls13),
    ("TLS13_AES_128_GCM_SHA256", TlsVersion::Tls13),
    ("TLS13_CHACHA20_POLY1305_SHA256", TlsVersion::Tls13),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", TlsVersion::Tls12),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", TlsVersion::Tls12),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        TlsVersion::Tls12,
    ),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", TlsVersion::Tls12),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", TlsVersion::Tls12),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        TlsVersion::Tls12,
    ),
];

/// `[server]`.
pub(crate) fn server(o: &Obj<'_>) -> Server {
    let hostname = o.str("hostname").and_then(|h| {
        let ok = !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            o.push(
                "hostname",
                "must be a host name without spaces, such as \"mail.example.com\"",
            );
        }
        ok.then(|| h.to_owned())
    });
    let log_level = o.str("log_level").unwrap_or("info");
    let levels = ["error", "warn", "info", "debug", "trace", "off"];
    let is_directive = log_level.contains('=') || log_level.contains(',');
    if !is_directive && !levels.contains(&log_level.to_ascii_lowercase().as_str()) {
        o.push(
            "log_level",
            format!(
                "{log_level:?} is not a log level; use one of {} (or a filter directive \
                 such as \"info,postern_worker=debug\")",
                levels.join(", ")
            ),
        );
    }
    let account = |key: &'static str| {
        let name = o.str(key).unwrap_or(DEFAULT_ACCOUNT);
        if name.trim().is_empty() {
            o.push(
                key,
                "must not be empty; name the service account, such as \"postern\"",
            );
        }
        name.to_owned()
    };
    let user = account("user");
    let group = account("group");
    let workers = o.int("workers", 1, i64::from(u32::MAX)).map(|n| n as u32);
    let control_socket = o.str("control_socket").unwrap_or(DEFAULT_CONTROL_SOCKET);
    if absolute_path(o, "control_socket", control_socket)
        && control_socket.len() > MAX_SOCKET_PATH_BYTES
    {
        o.push(
            "control_socket",
            format!(
                "is {} bytes long; a Unix socket path must be at most {MAX_SOCKET_PATH_BYTES}",
                control_socket.len()
            ),
        );
    }
    let max_session_memory = o.bytes("max_session_memory").and_then(|n| {
        if n == 0 {
            o.push(
                "max_session_memory",
                "must be more than 0; remove the key for no limit",
            );
            None
        } else {
            Some(n)
        }
    });
    let server = Server {
        hostname,
        threads: o.u32("threads", 0),
        shutdown_grace: o.duration("shutdown_grace", secs(30)),
        bridge_idle: o.duration_nonzero("bridge_idle", secs(1800)),
        backend_timeout: o.duration_nonzero("backend_timeout", secs(10)),
        backend_connect_retries: o.u32("backend_connect_retries", 1),
        host_down_threshold: o.u32("host_down_threshold", 5),
        host_down_cooldown: o.duration("host_down_cooldown", secs(30)),
        host_down_min_clients: o.u32("host_down_min_clients", 2),
        proxy_ttl: o.u32_min("proxy_ttl", 7, 1),
        log_level: log_level.to_owned(),
        user,
        group,
        workers,
        control_socket: PathBuf::from(control_socket),
        max_session_memory,
    };
    o.finish();
    server
}

/// `[sandbox]`.
pub(crate) fn sandbox(o: &Obj<'_>) -> Sandbox {
    let seccomp = o
        .choice(
            "seccomp",
            &[
                ("enforce", SeccompMode::Enforce),
                ("log", SeccompMode::Log),
                ("off", SeccompMode::Off),
            ],
        )
        .unwrap_or(SeccompMode::Enforce);
    o.finish();
    Sandbox { seccomp }
}

/// `[tls]`: certificates and protocol settings.
pub(crate) fn tls(o: &Obj<'_>) -> Tls {
    let mut certificates = Vec::new();
    let mut default_owner: Option<String> = None;
    for (name, c) in o.named_tables("certificate") {
        check_name(o.ctx(), c.path(), "certificate", name);
        let cert = path_req(&c, "cert", "cert = \"/etc/postern/tls/fullchain.pem\"");
        let key = path_req(&c, "key", "key = \"/etc/postern/tls/privkey.pem\"");
        let subjects = c.str_list("subjects", false).map(|list| {
            let mut out = Vec::new();
            for (path, s) in list {
                let name = s.trim();
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                    o.ctx().push(
                        path,
                        format!(
                            "{s:?} is not a host name; write names such \
                             as \"mail.example.com\" or \"*.example.com\""
                        ),
                    );
                } else {
                    out.push(name.to_owned());
                }
            }
            out
        });
        let default = c.bool("default", false);
        if default {
            match &default_owner {
                Some(first) => c.push(
                    "default",
                    format!(
                        "tls.certificate.{first} is already the default; only one \
                         certificate may set default = true"
                    ),
                ),
                None => default_owner = Some(name.to_owned()),
            }
        }
        c.finish();
        if let (Some(cert), Some(key)) = (cert, key) {
            certificates.push(Certificate {
                name: name.to_owned(),
                cert,
                key,
                subjects,
                default,
            });
        }
    }
    let p = o.table_or_absent("protocols");
    let min_version = match p.get("min_version") {
        None => TlsVersion::Tls12,
        Some(toml::Value::String(s)) if s == "1.2" => TlsVersion::Tls12,
        Some(toml::Value::String(s)) if s == "1.3" => TlsVersion::Tls13,
        Some(toml::Value::Float(f)) => {
            p.push(
                "min_version",
                format!("expected a string, found float {f}; quote it: min_version = \"{f}\""),
            );
            TlsVersion::Tls12
        }
        Some(other) => {
            p.push(
                "min_version",
                format!("{} is not one of \"1.2\", \"1.3\"", describe(other)),
            );
            TlsVersion::Tls12
        }
    };
    let ignore_client_order = p.bool("ignore_client_order", false);
    let mut disabled = Vec::new();
    let names: Vec<&str> = CIPHER_SUITES.iter().map(|(n, _)| *n).collect();
    if let Some(list) = p.str_list("disable_cipher_suites", false) {
        for (path, s) in list {
            let upper = s.trim().to_ascii_uppercase();
            if names.contains(&upper.as_str()) {
                if !disabled.contains(&upper) {
                    disabled.push(upper);
                }
            } else {
                let hint = match suggest(&upper, &names) {
                    Some(near) => format!("did you mean {near}?"),
                    None => format!("known suites are {}", names.join(", ")),
                };
                o.ctx().push(
                    path,
                    format!("{s:?} is not a cipher suite postern supports; {hint}"),
                );
            }
        }
        let usable = CIPHER_SUITES.iter().any(|(n, v)| {
            !disabled.iter().any(|d| d == n)
                && (min_version == TlsVersion::Tls12 || *v == TlsVersion::Tls13)
        });
        if !usable {
            let which = match min_version {
                TlsVersion::Tls12 => "every cipher suite",
                TlsVersion::Tls13 => "every TLS 1.3 cipher suite, and min_version is \"1.3\"",
            };
            p.push(
                "disable_cipher_suites",
                format!(
                    "disables {which}; no connection could be made, so leave at least one enabled"
                ),
            );
        }
    }
    p.finish();
    o.finish();
    Tls {
        certificates,
        protocols: TlsProtocols {
            min_version,
            ignore_client_order,
            disable_cipher_suites: disabled,
        },
    }
}

/// `[capabilities.*]`.
pub(crate) fn capabilities(o: &Obj<'_>) -> Capabilities {
    let imap = o.table_or_absent("imap");
    let imap_caps = ImapCapabilities {
        advertise: words(&imap, "advertise", &DEFAULT_IMAP_ADVERTISE, true),
        auth: sasl_settings(&imap),
        banner: text(&imap, "banner", "Stalwart IMAP4rev2 at your service."),
    };
    imap.finish();
    let pop3 = o.table_or_absent("pop3");
    let pop3_caps = Pop3Capabilities {
        auth: sasl_settings(&pop3),
        banner: text(&pop3, "banner", "Stalwart POP3 at your service."),
    };
    pop3.finish();
    let sub = o.table_or_absent("submission");
    let sub_caps = SubmissionCapabilities {
        // EHLO keywords may carry parameters ("SIZE 52428800"), so spaces are allowed.
        ehlo: words(&sub, "ehlo", &DEFAULT_EHLO, false),
        auth: sasl_settings(&sub),
        banner: text(&sub, "banner", "at your service."),
    };
    sub.finish();
    let sieve = o.table_or_absent("managesieve");
    let sieve_caps = ManageSieveCapabilities {
        sieve: words(&sieve, "sieve", &DEFAULT_SIEVE, true),
        implementation: text(&sieve, "implementation", "Stalwart ManageSieve"),
        auth: sasl_settings(&sieve),
    };
    sieve.finish();
    o.finish();
    Capabilities {
        imap: imap_caps,
        pop3: pop3_caps,
        submission: sub_caps,
        managesieve: sieve_caps,
    }
}

/// `sasl` and `allow_plain_auth_without_tls`, common to every interactive protocol.
fn sasl_settings(o: &Obj<'_>) -> SaslSettings {
    let sasl = match o.str_list("sasl", false) {
        None => DEFAULT_SASL.iter().map(|s| (*s).to_owned()).collect(),
        Some(list) => {
            let mut out: Vec<String> = Vec::new();
            for (path, s) in &list {
                let upper = s.trim().to_ascii_uppercase();
                if !SASL_MECHANISMS.contains(&upper.as_str()) {
                    o.ctx().push(
                        path.clone(),
                        format!(
                            "{s:?} is not a SASL mechanism postern supports; use {}",
                            SASL_MECHANISMS.join(", ")
                        ),
                    );
                } else if out.contains(&upper) {
                    o.ctx()
                        .push(path.clone(), format!("{upper} is listed twice; remove one"));
                } else {
                    out.push(upper);
                }
            }
            if list.is_empty() {
                o.push(
                    "sasl",
                    format!(
                        "is empty, so no client could log in; list some of {}",
                        SASL_MECHANISMS.join(", ")
                    ),
                );
            }
            out
        }
    };
    SaslSettings {
        sasl,
        allow_plain_auth_without_tls: o.bool("allow_plain_auth_without_tls", false),
    }
}

/// A list of protocol words that postern writes to clients verbatim.
fn words(o: &Obj<'_>, key: &'static str, default: &[&str], single_token: bool) -> Vec<String> {
    let Some(list) = o.str_list(key, false) else {
        return default.iter().map(|s| (*s).to_owned()).collect();
    };
    let mut out = Vec::new();
    for (path, s) in list {
        let bad = s.is_empty()
            || s.chars().any(|c| c.is_control() || c == '"')
            || (single_token && s.contains(' '));
        if bad {
            let rule = if single_token { "one word" } else { "text" };
            o.ctx().push(
                path,
                format!(
                    "{s:?} is not valid here; each entry must be {rule} \
                     without quotes or control characters"
                ),
            );
        } else {
            out.push(s.to_owned());
        }
    }
    out
}

/// A single line of text written to clients (banners, implementation name).
fn text(o: &Obj<'_>, key: &'static str, default: &str) -> String {
    match o.str(key) {
        None => default.to_owned(),
        Some(s) if s.chars().any(|c| c.is_control() || c == '"') => {
            o.push(
                key,
                "must be one line of text without quotes or control characters",
            );
            default.to_owned()
        }
        Some(s) => s.to_owned(),
    }
}

/// `[oauth]`.
pub(crate) fn oauth(o: &Obj<'_>) -> OAuth {
    let claim = o.str("jwt_username_claim").unwrap_or("email");
    if claim.trim().is_empty() {
        o.push(
            "jwt_username_claim",
            "must not be empty; the default is \"email\"",
        );
    }
    o.finish();
    OAuth {
        jwt_username_claim: claim.to_owned(),
    }
}

/// `[admin]`, before the cross-table rules (bind clashes, certificate presence).
#[derive(Debug)]
pub(crate) struct DraftAdmin {
    pub(crate) bind: Option<Vec<(String, SocketAddr)>>,
    pub(crate) tls: Option<TlsMode>,
    pub(crate) bearer_token_file: Option<PathBuf>,
    pub(crate) bearer_token: Option<String>,
    pub(crate) min_token_len: u32,
    pub(crate) lockout_threshold: u32,
    pub(crate) lockout_duration: Duration,
}

impl DraftAdmin {
    pub(crate) fn build(self) -> Option<Admin> {
        Some(Admin {
            bind: self.bind?.into_iter().map(|(_, a)| a).collect(),
            bearer_token_file: self.bearer_token_file,
            bearer_token: self.bearer_token,
            min_token_len: self.min_token_len,
            lockout_threshold: self.lockout_threshold,
            lockout_duration: self.lockout_duration,
        })
    }
}

/// `[admin]`. The token sources are resolved here so the model holds exactly one: the
/// environment's token becomes `bearer_token` (and the file is dropped); otherwise a
/// `bearer_token_file` wins over an inline `bearer_token`, which is then dropped.
pub(crate) fn admin(o: &Obj<'_>, env_token: Option<String>) -> DraftAdmin {
    let bind = match o.str_list("bind", true) {
        None => {
            if !o.has("bind") {
                o.missing("bind", "bind = \"127.0.0.1:9443\"");
            }
            None
        }
        Some(list) if list.is_empty() => {
            o.push(
                "bind",
                "no address given; list at least one, such as [\"127.0.0.1:9443\"]",
            );
            None
        }
        Some(list) => socket_addrs(o, list),
    };
    let tls = o.choice(
        "tls",
        &[
            ("implicit", TlsMode::Implicit),
            ("starttls", TlsMode::Starttls),
            ("plain", TlsMode::Plain),
        ],
    );
    let tls = match tls {
        None if !o.has("tls") => Some(TlsMode::Implicit),
        Some(TlsMode::Implicit) => Some(TlsMode::Implicit),
        Some(other) => {
            o.push(
                "tls",
                format!(
                    "{:?} is not allowed; the admin API is served over HTTPS \
                     only, so use tls = \"implicit\"",
                    other.as_str()
                ),
            );
            None
        }
        None => None,
    };
    let file = o
        .str("bearer_token_file")
        .and_then(|p| absolute_path(o, "bearer_token_file", p).then(|| PathBuf::from(p)));
    let file_given = o.has("bearer_token_file");
    let inline = o.str("bearer_token").map(str::to_owned);
    let min_token_len = o.u32_min("min_token_len", 32, 1);
    let lockout_threshold = o.u32("lockout_threshold", 5);
    let lockout_duration = o.duration("lockout_duration", secs(300));
    let too_short = |len: usize| len < min_token_len as usize;
    let (bearer_token_file, bearer_token) = if let Some(token) = env_token {
        if too_short(token.chars().count()) {
            o.ctx().push(
                o.path(),
                format!(
                    "the {} environment variable holds a token of {} characters; use at least \
                     min_token_len ({min_token_len})",
                    super::ADMIN_TOKEN_ENV,
                    token.chars().count()
                ),
            );
        }
        (None, Some(token))
    } else if file.is_some() || file_given {
        // Its length is checked when the file is read (`read_material`).
        (file, None)
    } else if let Some(token) = inline {
        if too_short(token.chars().count()) {
            o.push(
                "bearer_token",
                format!(
                    "is {} characters long; use at least min_token_len ({min_token_len}), \
                     for example the output of `openssl rand -hex 24`",
                    token.chars().count()
                ),
            );
        }
        (None, Some(token))
    } else {
        o.push(
            "bearer_token_file",
            format!(
                "no admin token is configured; set bearer_token_file (preferred), \
                 bearer_token, or the {} environment variable",
                super::ADMIN_TOKEN_ENV
            ),
        );
        (None, None)
    };
    o.finish();
    DraftAdmin {
        bind,
        tls,
        bearer_token_file,
        bearer_token,
        min_token_len,
        lockout_threshold,
        lockout_duration,
    }
}

/// Parses a list of `IP:port` strings, reporting each bad one.
pub(crate) fn socket_addrs(
    o: &Obj<'_>,
    list: Vec<(String, &str)>,
) -> Option<Vec<(String, SocketAddr)>> {
    let mut out = Vec::new();
    for (path, s) in list {
        match s.trim().parse::<SocketAddr>() {
            Ok(addr) => out.push((path, addr)),
            Err(_) => {
                o.ctx().push(
                    path,
                    format!(
                        "{s:?} is not a socket address; write IP:port, \
                         such as \"0.0.0.0:993\" or \"[::]:993\""
                    ),
                );
            }
        }
    }
    // Bad entries were reported, so the config is rejected; the good ones still take
    // part in the bind-clash check.
    Some(out)
}

/// Checks that `value` is an absolute path; reports it otherwise.
pub(crate) fn absolute_path(o: &Obj<'_>, key: &str, value: &str) -> bool {
    if value.starts_with('/') {
        return true;
    }
    if value.is_empty() {
        o.push(key, "must not be empty; give an absolute path");
    } else {
        o.push(
            key,
            format!("{value:?} is not an absolute path; write the full path, starting with /"),
        );
    }
    false
}

/// A required absolute path.
pub(crate) fn path_req(o: &Obj<'_>, key: &'static str, example: &str) -> Option<PathBuf> {
    let value = o.str_req(key, example)?;
    absolute_path(o, key, value).then(|| PathBuf::from(value))
}

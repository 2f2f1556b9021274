//! `[listener.<name>]` and `[destination.<name>]` (with its
//! `[destination.<name>.protocol.<proto>]` legs). Checks that concern one table only are
//! made here; those that compare tables (bind clashes, the default destination, loop
//! guards) are in `rules`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::model::{Destination, Forwarding, Leg, Listener, Protocol, ProxyProtocolIn, TlsMode};
use crate::schema::{join, suggest, Obj};

use super::check_name;
use super::sections::{absolute_path, socket_addrs};

pub(crate) const TLS_MODES: [(&str, TlsMode); 3] = [
    ("implicit", TlsMode::Implicit),
    ("starttls", TlsMode::Starttls),
    ("plain", TlsMode::Plain),
];

const FORWARDING: [(&str, Forwarding); 3] = [
    ("proxy", Forwarding::Proxy),
    ("xclient", Forwarding::Xclient),
    ("none", Forwarding::None),
];

fn protocols() -> Vec<(&'static str, Protocol)> {
    Protocol::ALL.iter().map(|p| (p.as_str(), *p)).collect()
}

/// A listener whose protocol, tls mode or binds may be missing.
#[derive(Debug)]
pub(crate) struct DraftListener {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) protocol: Option<Protocol>,
    pub(crate) tls: Option<TlsMode>,
    /// `(key path, address)` for each valid `bind` entry; `None` if any was bad.
    pub(crate) bind: Option<Vec<(String, SocketAddr)>>,
    proxy_protocol: ProxyProtocolIn,
    proxy_trusted: Vec<IpNet>,
    max_connections: u32,
    preauth_timeout: Duration,
    max_auth_attempts: u32,
    forwarded_trust: bool,
}

impl DraftListener {
    pub(crate) fn build(self) -> Option<Listener> {
        Some(Listener {
            name: self.name,
            protocol: self.protocol?,
            bind: self.bind?.into_iter().map(|(_, a)| a).collect(),
            tls: self.tls?,
            proxy_protocol: self.proxy_protocol,
            proxy_trusted: self.proxy_trusted,
            max_connections: self.max_connections,
            preauth_timeout: self.preauth_timeout,
            max_auth_attempts: self.max_auth_attempts,
            forwarded_trust: self.forwarded_trust,
        })
    }
}

/// Every `[listener.<name>]`, in name order.
pub(crate) fn listeners(root: &Obj<'_>) -> Vec<DraftListener> {
    root.named_tables("listener")
        .into_iter()
        .map(|(name, o)| listener(name, &o))
        .collect()
}

fn listener(name: &str, o: &Obj<'_>) -> DraftListener {
    check_name(o.ctx(), o.path(), "listener", name);
    let protocol = o.choice_req("protocol", &protocols());
    let bind = match o.str_list("bind", true) {
        None => {
            if !o.has("bind") {
                o.missing("bind", "bind = [\"0.0.0.0:993\"]");
            }
            None
        }
        Some(list) if list.is_empty() => {
            // Rule 2: every listener has at least one bind.
            o.push(
                "bind",
                "no address given; list at least one, such as [\"0.0.0.0:993\"]",
            );
            None
        }
        Some(list) => socket_addrs(o, list),
    };
    let tls = o.choice_req("tls", &TLS_MODES);
    let proxy_protocol = o
        .choice(
            "proxy_protocol",
            &[
                ("off", ProxyProtocolIn::Off),
                ("optional", ProxyProtocolIn::Optional),
                ("required", ProxyProtocolIn::Required),
            ],
        )
        .unwrap_or(ProxyProtocolIn::Off);
    let mut proxy_trusted = Vec::new();
    let trusted_list = o.str_list("proxy_trusted", false).unwrap_or_default();
    let trusted_entries = trusted_list.len();
    for (path, s) in trusted_list {
        match parse_net(s) {
            Some(net) => proxy_trusted.push(net),
            None => o.ctx().push(
                path,
                format!("{s:?} is neither an IP address nor a CIDR range such as \"10.0.0.0/8\""),
            ),
        }
    }
    let max_connections = o.u32_min("max_connections", 8192, 1);
    let preauth_timeout = o.duration_nonzero("preauth_timeout", Duration::from_secs(30));
    let max_auth_attempts = o.u32_min("max_auth_attempts", 3, 1);
    let forwarded_trust = o
        .choice("forwarded", &[("off", false), ("trust", true)])
        .unwrap_or(false);
    o.finish();

    // Rule 3: accepting PROXY headers needs a list of who may send them. (Entries that
    // did not parse were reported already.)
    if proxy_protocol != ProxyProtocolIn::Off && trusted_entries == 0 {
        o.push(
            "proxy_trusted",
            "proxy_protocol is enabled, so list the peers allowed to send a PROXY header, \
             such as [\"10.0.0.0/8\"]",
        );
    }
    if let (Some(p), Some(TlsMode::Starttls)) = (protocol, tls) {
        // Rule 4, and postern's decision for HTTP.
        if p.is_passthrough() {
            o.push(
                "tls",
                format!(
                    "{p} is relayed as an opaque byte stream, so postern cannot perform its \
                     STARTTLS; use \"implicit\" or \"plain\""
                ),
            );
        } else if p == Protocol::Http {
            o.push(
                "tls",
                "HTTP has no STARTTLS; use \"implicit\" (HTTPS) or \"plain\"",
            );
        }
    }
    if forwarded_trust && protocol.is_some_and(|p| p != Protocol::Http) {
        o.push("forwarded", "only applies to http listeners; remove it");
    }
    DraftListener {
        name: name.to_owned(),
        path: o.path().to_owned(),
        protocol,
        tls,
        bind,
        proxy_protocol,
        proxy_trusted,
        max_connections,
        preauth_timeout,
        max_auth_attempts,
        forwarded_trust,
    }
}

/// A CIDR, or a bare address meaning that one host.
fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

/// One protocol leg of a destination, forwarding already resolved.
#[derive(Debug)]
pub(crate) struct DraftLeg {
    pub(crate) path: String,
    pub(crate) port: Option<u16>,
    pub(crate) tls: Option<TlsMode>,
    pub(crate) forwarding: Forwarding,
}

/// A destination whose host or legs may be incomplete.
#[derive(Debug)]
pub(crate) struct DraftDestination {
    pub(crate) host: Option<String>,
    pub(crate) legs: BTreeMap<Protocol, DraftLeg>,
    rest: Destination,
}

impl DraftDestination {
    pub(crate) fn build(self) -> Option<Destination> {
        let mut legs = BTreeMap::new();
        for (p, leg) in self.legs {
            legs.insert(
                p,
                Leg {
                    port: leg.port?,
                    tls: leg.tls?,
                    forwarding: leg.forwarding,
                },
            );
        }
        Some(Destination {
            host: self.host?,
            legs,
            ..self.rest
        })
    }
}

/// Every `[destination.<name>]`, by name.
pub(crate) fn destinations(root: &Obj<'_>) -> BTreeMap<String, DraftDestination> {
    root.named_tables("destination")
        .into_iter()
        .map(|(name, o)| (name.to_owned(), destination(name, &o)))
        .collect()
}

fn destination(name: &str, o: &Obj<'_>) -> DraftDestination {
    check_name(o.ctx(), o.path(), "destination", name);
    let host = o
        .str_req("host", "host = \"imap.example.com\"")
        .and_then(|h| check_host(o, h));
    let tls_server_name = o.str("tls_server_name").map(str::to_owned);
    let proxy_protocol = o.bool("proxy_protocol", true);
    let forwarding = o.choice("forwarding", &FORWARDING);
    let forwarded = o.bool("forwarded", false);
    let tls_allow_invalid_certs = o.bool("tls_allow_invalid_certs", false);
    let tls_pinned_cert_sha256 = o
        .str("tls_pinned_cert_sha256")
        .and_then(|s| match parse_pin(s) {
            Ok(pin) => Some(pin),
            Err(why) => {
                o.push(
                    "tls_pinned_cert_sha256",
                    format!(
                        "{why}; give the SHA-256 of the \
                         backend's leaf certificate (DER) as 64 hex digits, colons allowed"
                    ),
                );
                None
            }
        });
    let client_path = |key: &'static str| {
        o.str(key)
            .and_then(|p| absolute_path(o, key, p).then(|| PathBuf::from(p)))
    };
    let tls_client_cert = client_path("tls_client_cert");
    let tls_client_key = client_path("tls_client_key");
    match (o.has("tls_client_cert"), o.has("tls_client_key")) {
        (true, false) => o.push(
            "tls_client_key",
            "tls_client_cert is set, so tls_client_key is required too; give both or neither",
        ),
        (false, true) => o.push(
            "tls_client_cert",
            "tls_client_key is set, so tls_client_cert is required too; give both or neither",
        ),
        _ => {}
    }
    let mut source_ips = Vec::new();
    for (path, s) in o.str_list("source_ips", false).unwrap_or_default() {
        match s.trim().parse::<IpAddr>() {
            Ok(ip) => source_ips.push(ip),
            Err(_) => o.ctx().push(path, format!("{s:?} is not an IP address")),
        }
    }
    let hide_auth_errors = o.bool("hide_auth_errors", false);
    let allow_plaintext_auth = o.bool("allow_plaintext_auth", false);

    let mut legs = BTreeMap::new();
    let names: Vec<&str> = Protocol::ALL.iter().map(|p| p.as_str()).collect();
    for (proto_name, leg_obj) in o.named_tables("protocol") {
        let Some(protocol) = Protocol::from_name(proto_name) else {
            let hint = match suggest(proto_name, &names) {
                Some(near) => format!("did you mean {near}?"),
                None => format!("use one of {}", names.join(", ")),
            };
            o.ctx()
                .push(leg_obj.path(), format!("unknown protocol; {hint}"));
            continue;
        };
        let port = match leg_obj.int("port", 1, 65_535) {
            Some(p) => Some(p as u16),
            None => {
                if !leg_obj.has("port") {
                    leg_obj.missing("port", "port = <backend port>");
                }
                None
            }
        };
        let tls = leg_obj.choice_req("tls", &TLS_MODES);
        let own = leg_obj.choice("forwarding", &FORWARDING);
        leg_obj.finish();
        if own == Some(Forwarding::Xclient) && !protocol.is_interactive() {
            let why = if protocol == Protocol::Http {
                "HTTP forwards the client with Forwarded headers (destination forwarded = true)"
            } else {
                "XCLIENT cannot be sent on a pass-through relay"
            };
            leg_obj.push(
                "forwarding",
                format!("xclient is not possible here: {why}; use \"proxy\" or \"none\""),
            );
        }
        if protocol == Protocol::Http && tls == Some(TlsMode::Starttls) {
            leg_obj.push(
                "tls",
                "HTTP has no STARTTLS; use \"implicit\" (HTTPS) or \"plain\"",
            );
        }
        // Rule 7: credentials never cross the network in clear unless allowed.
        if protocol.carries_credentials() && tls == Some(TlsMode::Plain) && !allow_plaintext_auth {
            leg_obj.push(
                "tls",
                format!(
                    "\"plain\" would send client credentials unencrypted; use \"implicit\" or \
                     \"starttls\", or set {} = true if the path to the backend is trusted",
                    join(o.path(), "allow_plaintext_auth")
                ),
            );
        }
        // The leg's own setting, else the destination's, else inferred from proxy_protocol.
        // HTTP legs get a PROXY header only when the leg itself asks for it (DESIGN.md).
        let forwarding = match (own, protocol) {
            (Some(f), _) => f,
            (None, Protocol::Http) => Forwarding::None,
            (None, _) => forwarding.unwrap_or(if proxy_protocol {
                Forwarding::Proxy
            } else {
                Forwarding::None
            }),
        };
        legs.insert(
            protocol,
            DraftLeg {
                path: leg_obj.path().to_owned(),
                port,
                tls,
                forwarding,
            },
        );
    }
    o.finish();
    if legs.is_empty() && !o.has("protocol") {
        o.ctx().push(
            o.path(),
            format!(
                "declares no protocol; add a [{}.protocol.imap] table (or another \
                 protocol) with port and tls",
                o.path()
            ),
        );
    }
    // Rule 7: an IP host gives no name to check a TLS certificate against.
    let is_ip = host.as_deref().is_some_and(|h| h.parse::<IpAddr>().is_ok());
    let uses_tls = legs
        .values()
        .any(|l| matches!(l.tls, Some(TlsMode::Implicit | TlsMode::Starttls)));
    if is_ip && uses_tls && tls_server_name.is_none() {
        o.push(
            "tls_server_name",
            "host is an IP address and a leg uses TLS; set tls_server_name to the name on \
             the backend's certificate",
        );
    }
    DraftDestination {
        host: host.clone(),
        legs,
        rest: Destination {
            name: name.to_owned(),
            host: String::new(),
            tls_server_name,
            forwarded,
            tls_allow_invalid_certs,
            tls_pinned_cert_sha256,
            tls_client_cert,
            tls_client_key,
            source_ips,
            hide_auth_errors,
            allow_plaintext_auth,
            legs: BTreeMap::new(),
        },
    }
}

/// A host name or IP literal; reports what is wrong with it otherwise.
fn check_host(o: &Obj<'_>, host: &str) -> Option<String> {
    let host = host.trim();
    if host.parse::<IpAddr>().is_ok() {
        return Some(host.to_owned());
    }
    let message = if host.is_empty() {
        "must not be empty; give a host name or IP address".to_owned()
    } else if host.starts_with('[') {
        format!("{host:?}: write an IPv6 address without brackets")
    } else if host.contains(':') {
        format!(
            "{host:?} includes a port; host takes a name or address only, ports go in \
             the protocol tables"
        )
    } else if host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) && host.len() <= 253
    {
        return Some(host.to_owned());
    } else {
        format!("{host:?} is not a host name or IP address")
    };
    o.push("host", message);
    None
}

/// 64 hex digits, colons allowed, to 32 bytes.
pub(crate) fn parse_pin(text: &str) -> Result<[u8; 32], String> {
    let digits: Vec<u8> = text.trim().bytes().filter(|b| *b != b':').collect();
    if let Some(bad) = digits.iter().find(|b| !b.is_ascii_hexdigit()) {
        return Err(format!("{:?} is not a hex digit", char::from(*bad)));
    }
    if digits.len() != 64 {
        return Err(format!("found {} hex digits, expected 64", digits.len()));
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let hex = |b: u8| char::from(b).to_digit(16).unwrap_or(0) as u8;
        out[i] = hex(pair[0]) << 4 | hex(pair[1]);
    }
    Ok(out)
}

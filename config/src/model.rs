//! The validated configuration: what the supervisor and workers act on.
//!
//! Every value here has passed validation and every default has been applied, so code
//! that holds a [`Config`] never re-checks it. The model is also what travels to the
//! workers (bincode, through [`crate::codec`]), so it holds data only: no file handles,
//! no compiled globs or regexes (workers compile those from the validated strings).
//! It must not read files; reading certificates, keys and the mapping file is
//! [`crate::material`]'s job, done by the supervisor before it drops privileges.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub server: Server,
    pub sandbox: Sandbox,
    pub tls: Tls,
    /// Listeners in name order (the order of `[listener.*]` keys, sorted).
    pub listeners: Vec<Listener>,
    pub destinations: BTreeMap<String, Destination>,
    pub routing: Routing,
    pub mapping: Mapping,
    pub capabilities: Capabilities,
    pub oauth: OAuth,
    pub http: Http,
    pub admin: Option<Admin>,
}

impl Config {
    /// The listener called `name`, if declared.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// Worker processes per listener, with the `server.workers` default applied.
    pub fn workers_per_listener(&self) -> u32 {
        self.server.workers.unwrap_or_else(cpus)
    }

    /// Runtime threads in each worker process. `server.threads = 0` means one per CPU
    /// for the listener as a whole: the CPUs shared out among its worker processes
    /// (rounded up), so the default (one worker per CPU) runs one thread per process
    /// and no session ever wakes a second thread.
    pub fn threads_per_worker(&self) -> u32 {
        match self.server.threads {
            0 => cpus().div_ceil(self.workers_per_listener().max(1)).max(1),
            n => n,
        }
    }
}

/// CPUs this process may run on (1 when unknown).
fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// Name used in SMTP greetings and EHLO; unset means the local address.
    pub hostname: Option<String>,
    /// Tokio worker threads per worker process; 0 means one per CPU for each listener,
    /// shared out among its workers ([`Config::threads_per_worker`]).
    pub threads: u32,
    pub shutdown_grace: Duration,
    pub bridge_idle: Duration,
    pub backend_timeout: Duration,
    pub backend_connect_retries: u32,
    pub host_down_threshold: u32,
    pub host_down_cooldown: Duration,
    pub host_down_min_clients: u32,
    pub proxy_ttl: u32,
    pub log_level: String,
    /// Service account the supervisor drops to and the workers run as.
    pub user: String,
    pub group: String,
    /// Worker processes per listener; `None` means one per CPU.
    pub workers: Option<u32>,
    pub control_socket: PathBuf,
    /// A worker whose resident memory passes this many bytes is killed and restarted.
    pub max_session_memory: Option<u64>,
}

/// `[sandbox]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    pub seccomp: SeccompMode,
}

/// What the worker seccomp filter does with a syscall outside the allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompMode {
    /// Kill the worker (the default).
    Enforce,
    /// Allow it and log it through the kernel audit log.
    Log,
    /// Install no filter.
    Off,
}

/// `[tls]`: inbound TLS termination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tls {
    /// `[tls.certificate.<name>]`, in name order.
    pub certificates: Vec<Certificate>,
    pub protocols: TlsProtocols,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Names this certificate serves; `None` means its DNS SANs, else its CN.
    pub subjects: Option<Vec<String>>,
    pub default: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsProtocols {
    pub min_version: TlsVersion,
    pub ignore_client_order: bool,
    /// Standard cipher-suite names (upper-cased) that must not be offered.
    pub disable_cipher_suites: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// The protocol a listener serves or a destination leg speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    Imap,
    Pop3,
    ManageSieve,
    Submission,
    Smtp,
    Lmtp,
    Http,
}

impl Protocol {
    pub const ALL: [Protocol; 7] = [
        Protocol::Imap,
        Protocol::Pop3,
        Protocol::ManageSieve,
        Protocol::Submission,
        Protocol::Smtp,
        Protocol::Lmtp,
        Protocol::Http,
    ];

    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::ManageSieve => "managesieve",
            Protocol::Submission => "submission",
            Protocol::Smtp => "smtp",
            Protocol::Lmtp => "lmtp",
            Protocol::Http => "http",
        }
    }

    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// Protocols whose pre-auth dialogue postern answers itself.
    pub fn is_interactive(self) -> bool {
        matches!(
            self,
            Protocol::Imap | Protocol::Pop3 | Protocol::ManageSieve | Protocol::Submission
        )
    }

    /// Protocols relayed as an opaque byte stream.
    pub fn is_passthrough(self) -> bool {
        matches!(self, Protocol::Smtp | Protocol::Lmtp)
    }

    /// Protocols whose backend leg carries the client's credentials.
    pub fn carries_credentials(self) -> bool {
        self.is_interactive() || self == Protocol::Http
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a connection begins, on a listener or a destination leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsMode {
    Implicit,
    Starttls,
    Plain,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Implicit => "implicit",
            TlsMode::Starttls => "starttls",
            TlsMode::Plain => "plain",
        }
    }
}

/// Inbound PROXY protocol handling on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyProtocolIn {
    Off,
    Optional,
    Required,
}

/// `[listener.<name>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    pub name: String,
    pub protocol: Protocol,
    pub bind: Vec<SocketAddr>,
    pub tls: TlsMode,
    pub proxy_protocol: ProxyProtocolIn,
    /// Peers allowed to send a PROXY header; a bare address is a single host.
    pub proxy_trusted: Vec<IpNet>,
    pub max_connections: u32,
    pub preauth_timeout: Duration,
    pub max_auth_attempts: u32,
    /// HTTP only: trust inbound `Forwarded` / `X-Forwarded-For` (`forwarded = "trust"`).
    pub forwarded_trust: bool,
}

impl Listener {
    /// True when `peer` may send a PROXY header on this listener. IPv4 ranges also
    /// match IPv4-mapped IPv6 peers.
    pub fn trusts_proxy_from(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.proxy_trusted.iter().any(|net| net.contains(&peer))
    }
}

/// How the client's identity reaches a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Forwarding {
    /// A PROXY v2 header right after connect.
    Proxy,
    /// XCLIENT (POP3, ManageSieve, submission) or IMAP ID.
    Xclient,
    None,
}

/// `[destination.<name>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub name: String,
    /// Hostname or IP literal.
    pub host: String,
    pub tls_server_name: Option<String>,
    /// HTTP legs: append `Forwarded` / `X-Forwarded-For`.
    pub forwarded: bool,
    pub tls_allow_invalid_certs: bool,
    pub tls_pinned_cert_sha256: Option<[u8; 32]>,
    pub tls_client_cert: Option<PathBuf>,
    pub tls_client_key: Option<PathBuf>,
    pub source_ips: Vec<IpAddr>,
    pub hide_auth_errors: bool,
    pub allow_plaintext_auth: bool,
    /// `[destination.<name>.protocol.<proto>]`, with forwarding already resolved.
    pub legs: BTreeMap<Protocol, Leg>,
}

impl Destination {
    pub fn leg(&self, protocol: Protocol) -> Option<&Leg> {
        self.legs.get(&protocol)
    }

    /// The name to check the backend certificate against.
    pub fn server_name(&self) -> &str {
        self.tls_server_name.as_deref().unwrap_or(&self.host)
    }
}

/// One protocol endpoint of a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub port: u16,
    pub tls: TlsMode,
    /// Resolved: the leg's own `forwarding`, else the destination's, else inferred from
    /// the destination's `proxy_protocol`.
    pub forwarding: Forwarding,
}

/// `[routing]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routing {
    pub default_destination: String,
    pub smtp_passthrough_destination: Option<String>,
    /// Non-empty separators only.
    pub master_user_separators: Vec<String>,
}

/// `[mapping]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    pub source: MappingSource,
    pub normalize: Normalize,
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    pub cache_max_entries: u64,
    pub lookup_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MappingSource {
    File {
        path: PathBuf,
    },
    Redis {
        url: String,
        key_prefix: String,
        pool_size: u32,
    },
    Sql {
        url: String,
        query: String,
        pool_size: u32,
        upsert_query: Option<String>,
        delete_query: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Normalize {
    None,
    Lowercase,
}

/// `[capabilities.*]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    pub imap: ImapCapabilities,
    pub pop3: Pop3Capabilities,
    pub submission: SubmissionCapabilities,
    pub managesieve: ManageSieveCapabilities,
}

/// Keys every interactive protocol's table has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaslSettings {
    /// Mechanism names, upper-cased, validated against the ones postern implements.
    pub sasl: Vec<String>,
    pub allow_plain_auth_without_tls: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImapCapabilities {
    pub advertise: Vec<String>,
    pub auth: SaslSettings,
    pub banner: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pop3Capabilities {
    pub auth: SaslSettings,
    pub banner: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmissionCapabilities {
    pub ehlo: Vec<String>,
    pub auth: SaslSettings,
    pub banner: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManageSieveCapabilities {
    pub sieve: Vec<String>,
    pub implementation: String,
    pub auth: SaslSettings,
}

/// `[oauth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OAuth {
    pub jwt_username_claim: String,
}

/// `[http]` and `[[http.route]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Http {
    pub body_extract_cap: u64,
    pub max_head_size: u64,
    pub relay_idle: Duration,
    pub keepalive_timeout: Duration,
    /// 0 means unlimited.
    pub max_keepalive_requests: u32,
    pub routes: Vec<HttpRoute>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    /// A globset glob, known to compile.
    pub glob: String,
    pub destination: Option<String>,
    pub extract: Option<Extract>,
    pub fallback: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Extract {
    Authorization,
    Query {
        param: String,
    },
    Header {
        header: String,
    },
    /// A regex known to compile; capture group 1 is the identifier.
    Body {
        regex: String,
    },
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Admin {
    pub bind: Vec<SocketAddr>,
    pub bearer_token_file: Option<PathBuf>,
    pub bearer_token: Option<String>,
    pub min_token_len: u32,
    pub lockout_threshold: u32,
    pub lockout_duration: Duration,
}

impl fmt::Display for SeccompMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SeccompMode::Enforce => "enforce",
            SeccompMode::Log => "log",
            SeccompMode::Off => "off",
        })
    }
}

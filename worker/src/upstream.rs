//! Dialing a destination leg: loop guard, circuit breaker, addresses, source IPs,
//! retries, the outbound PROXY header and TLS (reference §4.1, §4.2, §4.4, §4.6, §4.7).
//!
//! One dial is up to `1 + backend_connect_retries` attempts, 200 ms apart. Each attempt is
//! bounded as a whole by `backend_timeout` and covers: TCP connect (each address in turn),
//! the PROXY header, the TLS handshake of an `implicit` leg, and the protocol's own
//! establishment step ([`Upstreams::dial_with`]: greeting, STARTTLS, capabilities,
//! client-identity forwarding). Only establishment counts for the circuit breaker; the
//! auth replay that follows does not. A `starttls` leg is handed to that step plain,
//! with the [`Upgrade`] that secures it (pass-through does no step, so a client's
//! STARTTLS travels end to end).
//!
//! Addresses come from the supervisor (`Hello::resolved`) or from an IP-literal `host`;
//! this module does no DNS and opens no file. It must not log payload bytes.

use postern_config::ErrorChain;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postern_config::material::Material;
use postern_config::model::{Config, Destination, Forwarding, Leg, Protocol, TlsMode};
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::health::Health;
use crate::side::Side;
use crate::stream::MaybeTls;
use crate::tls::{self, TlsSetupError};

/// Pause between two attempts of one dial.
pub const RETRY_DELAY: Duration = Duration::from_millis(200);

/// Why a backend connection could not be established.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("destination {destination} is not configured")]
    UnknownDestination { destination: String },
    #[error("destination {destination} has no {protocol} leg")]
    NoLeg {
        destination: String,
        protocol: Protocol,
    },
    #[error("destination {destination} at {addr} is postern itself; refusing to loop")]
    Loop {
        destination: String,
        addr: SocketAddr,
    },
    #[error("destination {destination} uses xclient forwarding but proxy_ttl {ttl} would loop")]
    TtlExhausted { destination: String, ttl: u32 },
    #[error("destination {destination} is marked down")]
    Down { destination: String },
    #[error("destination {destination} has no resolved address")]
    NoAddress { destination: String },
    #[error(
        "destination {destination}: no source_ips entry of the family of any of its addresses"
    )]
    NoSourceIp { destination: String },
    #[error("connect to {addr} failed")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("sending the proxy header to {addr} failed")]
    ProxyHeader { addr: SocketAddr, source: io::Error },
    #[error("tls handshake with {addr} failed")]
    Tls { addr: SocketAddr, source: io::Error },
    #[error("no tls configuration for destination {destination}")]
    NoTlsConfig { destination: String },
    #[error("backend attempt timed out after {timeout:?}")]
    Timeout { timeout: Duration },
    /// The backend connection failed or closed during the protocol's establishment.
    #[error("backend {addr} failed during {stage}")]
    Establish {
        addr: SocketAddr,
        stage: &'static str,
        source: io::Error,
    },
    /// The backend answered the establishment dialogue with something unusable (a `BYE`
    /// greeting, STARTTLS not offered or refused, forwarding rejected).
    #[error("backend {addr} refused {stage}: {reply}")]
    Refused {
        addr: SocketAddr,
        stage: &'static str,
        /// The backend's line, printable and shortened; never a credential (nothing
        /// secret has been sent yet).
        reply: String,
    },
}

impl DialError {
    /// Who is to blame.
    pub fn side(&self) -> Side {
        match self {
            DialError::Down { .. }
            | DialError::NoAddress { .. }
            | DialError::Connect { .. }
            | DialError::ProxyHeader { .. }
            | DialError::Tls { .. }
            | DialError::Timeout { .. }
            | DialError::Establish { .. }
            | DialError::Refused { .. } => Side::Upstream,
            DialError::UnknownDestination { .. }
            | DialError::NoLeg { .. }
            | DialError::Loop { .. }
            | DialError::TtlExhausted { .. }
            | DialError::NoSourceIp { .. }
            | DialError::NoTlsConfig { .. } => Side::Local,
        }
    }

    /// Worth another attempt: connect, TLS handshake, backend read and timeout
    /// failures (reference §4.6).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DialError::Connect { .. }
                | DialError::ProxyHeader { .. }
                | DialError::Tls { .. }
                | DialError::Timeout { .. }
                | DialError::Establish { .. }
        )
    }

    /// Logs a dial that failed for `destination`, at the level its [`Side`] calls for.
    pub fn log(&self, destination: &str) {
        let error = ErrorChain(self);
        match self.side() {
            Side::Upstream => tracing::warn!(destination, %error, "backend unavailable"),
            Side::Local => tracing::error!(destination, %error, "cannot dial backend"),
            Side::Client => tracing::debug!(destination, %error, "dial abandoned"),
        }
    }

    /// The backend's reply for [`DialError::Refused`], shortened to printable ASCII.
    pub fn refused(addr: SocketAddr, stage: &'static str, line: &[u8]) -> DialError {
        const MAX: usize = 120;
        let reply = line
            .iter()
            .take(MAX)
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect::<String>()
            .trim_end_matches('.')
            .to_string();
        DialError::Refused { addr, stage, reply }
    }
}

/// A connected backend, plain or TLS.
pub type BackendStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

/// A fresh backend connection, handed to the protocol's establishment step of
/// [`Upstreams::dial_with`].
pub struct Connected {
    /// Plain for `plain` and `starttls` legs, TLS for `implicit` ones.
    pub stream: BackendStream,
    pub addr: SocketAddr,
    /// The leg dialed (port, TLS mode, resolved forwarding).
    pub leg: Leg,
    /// What secures the connection once the protocol's STARTTLS was accepted: `Some`
    /// exactly on a `starttls` leg.
    pub upgrade: Option<Upgrade>,
}

/// The TLS client side of one destination, for a STARTTLS upgrade.
#[derive(Clone)]
pub struct Upgrade {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl Upgrade {
    /// Runs the TLS handshake on `tcp` (after the protocol's STARTTLS was accepted).
    pub async fn secure(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> Result<BackendStream, DialError> {
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|source| DialError::Tls { addr, source })?;
        log_backend_tls(addr, &tls);
        Ok(MaybeTls::Tls(Box::new(tls)))
    }

    /// An upgrade that trusts no certificate, for tests of the STARTTLS dialogue.
    #[cfg(test)]
    pub fn untrusted() -> Upgrade {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(tls::provider(&[])))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Upgrade {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name: ServerName::try_from("backend.test").expect("name"),
        }
    }

    /// STARTTLS, once the protocol's command was accepted: `stream` must still be plain
    /// and nothing may have followed the go-ahead (`leftover`, what the protocol's
    /// reader buffered past it), or a man in the middle could inject plaintext.
    pub async fn starttls(
        &self,
        stream: BackendStream,
        leftover: &[u8],
        addr: SocketAddr,
    ) -> Result<BackendStream, DialError> {
        if !leftover.is_empty() {
            return Err(DialError::refused(
                addr,
                "starttls",
                b"data after the STARTTLS reply",
            ));
        }
        let tcp = stream
            .into_plain()
            .map_err(|_| DialError::refused(addr, "starttls", b"leg is already TLS"))?;
        self.secure(tcp, addr).await
    }
}

fn log_backend_tls(addr: SocketAddr, tls: &tokio_rustls::client::TlsStream<TcpStream>) {
    let (_, session) = tls.get_ref();
    tracing::debug!(
        %addr,
        version = ?session.protocol_version(),
        cipher = ?session.negotiated_cipher_suite().map(|s| s.suite()),
        "backend tls established"
    );
}

/// One destination as this worker dials it.
struct Target {
    destination: Destination,
    /// Candidate IPs: the literal `host`, else what the supervisor resolved.
    ips: Vec<IpAddr>,
    tls: Option<Upgrade>,
    next_source: AtomicUsize,
}

/// Everything needed to dial any destination; built once per worker.
pub struct Upstreams {
    targets: BTreeMap<String, Target>,
    health: Arc<Health>,
    own_addrs: Vec<SocketAddr>,
    backend_timeout: Duration,
    retries: u32,
    proxy_ttl: u32,
}

impl Upstreams {
    /// Builds TLS client configurations for the destinations whose `protocol` leg uses
    /// TLS (the legs this worker can dial), so an unusable one fails at startup.
    pub fn new(
        config: &Config,
        material: &Material,
        protocol: Protocol,
        resolved: &BTreeMap<String, Vec<IpAddr>>,
        own_addrs: &[SocketAddr],
    ) -> Result<Upstreams, TlsSetupError> {
        let mut targets = BTreeMap::new();
        for (name, destination) in &config.destinations {
            let tls = match destination.leg(protocol) {
                Some(leg) if leg.tls != TlsMode::Plain => {
                    let (client, server_name) = tls::client_config(destination, material)?;
                    Some(Upgrade {
                        connector: tokio_rustls::TlsConnector::from(client),
                        server_name,
                    })
                }
                _ => None,
            };
            if destination.tls_allow_invalid_certs && tls.is_some() {
                tracing::warn!(destination = %name, "backend certificates are not verified (tls_allow_invalid_certs)");
            }
            let ips = match host_ip(&destination.host) {
                Some(ip) => vec![ip],
                None => resolved.get(name).cloned().unwrap_or_default(),
            };
            targets.insert(
                name.clone(),
                Target {
                    destination: destination.clone(),
                    ips,
                    tls,
                    next_source: AtomicUsize::new(0),
                },
            );
        }
        let server = &config.server;
        Ok(Upstreams {
            targets,
            health: Arc::new(Health::new(
                server.host_down_threshold,
                server.host_down_cooldown,
            )),
            own_addrs: own_addrs.to_vec(),
            backend_timeout: server.backend_timeout,
            retries: server.backend_connect_retries,
            proxy_ttl: server.proxy_ttl,
        })
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Connects to `destination`'s `protocol` leg on behalf of the client at `client`,
    /// which connected to `local` (both from the inbound PROXY header when there was one),
    /// and runs `establish` on each fresh connection inside the same attempt (same
    /// `backend_timeout`, same retries, same breaker outcome). `establish` returns
    /// [`DialError::Establish`] for a backend that fails or goes quiet (retried) and
    /// [`DialError::Refused`] for one that answers unusably (not retried; still a
    /// breaker failure). Pass-through legs establish nothing: `|c| async { Ok(c) }`.
    pub async fn dial_with<T, F, Fut>(
        &self,
        destination: &str,
        protocol: Protocol,
        client: SocketAddr,
        local: SocketAddr,
        mut establish: F,
    ) -> Result<T, DialError>
    where
        F: FnMut(Connected) -> Fut,
        Fut: Future<Output = Result<T, DialError>>,
    {
        let target =
            self.targets
                .get(destination)
                .ok_or_else(|| DialError::UnknownDestination {
                    destination: destination.to_string(),
                })?;
        let leg = target
            .destination
            .leg(protocol)
            .ok_or_else(|| DialError::NoLeg {
                destination: destination.to_string(),
                protocol,
            })?;
        self.loop_guard(target, leg.port, leg.forwarding)?;
        let admission = self
            .health
            .admit(destination)
            .ok_or_else(|| DialError::Down {
                destination: destination.to_string(),
            })?;
        if target.ips.is_empty() {
            admission.failure();
            return Err(DialError::NoAddress {
                destination: destination.to_string(),
            });
        }
        let header = (leg.forwarding == Forwarding::Proxy).then(|| proxy_header(client, local));
        let attempts = 1 + self.retries;
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(RETRY_DELAY).await;
            }
            let once = async {
                let connected = self.attempt(target, leg, header.as_deref()).await?;
                establish(connected).await
            };
            let result = match tokio::time::timeout(self.backend_timeout, once).await {
                Ok(result) => result,
                Err(_) => Err(DialError::Timeout {
                    timeout: self.backend_timeout,
                }),
            };
            match result {
                Ok(established) => {
                    admission.success();
                    tracing::debug!(destination, attempt, "backend established");
                    return Ok(established);
                }
                Err(e) if e.is_retryable() => {
                    tracing::debug!(destination, attempt, error = %ErrorChain(&e), "backend attempt failed");
                    last = Some(e);
                }
                Err(e) => {
                    // The backend answered, but unusably: a failure of the destination.
                    // Local causes (source IPs, missing TLS config) are not its fault:
                    // no retry, and the breaker is not told.
                    if e.side() == Side::Upstream {
                        admission.failure();
                    }
                    return Err(e);
                }
            }
        }
        admission.failure();
        Err(last.unwrap_or(DialError::Timeout {
            timeout: self.backend_timeout,
        }))
    }

    /// Refuses dials that would come back to postern (reference §4.7).
    fn loop_guard(
        &self,
        target: &Target,
        port: u16,
        forwarding: Forwarding,
    ) -> Result<(), DialError> {
        let name = &target.destination.name;
        if forwarding == Forwarding::Xclient && self.proxy_ttl <= 1 {
            return Err(DialError::TtlExhausted {
                destination: name.clone(),
                ttl: self.proxy_ttl,
            });
        }
        if let Some(ip) = host_ip(&target.destination.host) {
            let addr = SocketAddr::new(ip.to_canonical(), port);
            let is_own = self.own_addrs.iter().any(|own| {
                own.port() == port
                    && (own.ip().is_unspecified() || own.ip().to_canonical() == addr.ip())
            });
            if is_own {
                return Err(DialError::Loop {
                    destination: name.clone(),
                    addr,
                });
            }
        }
        Ok(())
    }

    async fn attempt(
        &self,
        target: &Target,
        leg: &Leg,
        header: Option<&[u8]>,
    ) -> Result<Connected, DialError> {
        let (mut tcp, addr) = self.connect(target, leg.port).await?;
        if let Some(header) = header {
            tcp.write_all(header)
                .await
                .map_err(|source| DialError::ProxyHeader { addr, source })?;
        }
        let upgrade = match leg.tls {
            TlsMode::Plain => None,
            TlsMode::Implicit | TlsMode::Starttls => {
                Some(target.tls.clone().ok_or_else(|| DialError::NoTlsConfig {
                    destination: target.destination.name.clone(),
                })?)
            }
        };
        let (stream, upgrade) = match (leg.tls, upgrade) {
            (TlsMode::Implicit, Some(upgrade)) => (upgrade.secure(tcp, addr).await?, None),
            (_, upgrade) => (MaybeTls::Plain(tcp), upgrade),
        };
        Ok(Connected {
            stream,
            addr,
            leg: *leg,
            upgrade,
        })
    }

    /// TCP connect to each address in turn, from a same-family source IP if any are set.
    async fn connect(
        &self,
        target: &Target,
        port: u16,
    ) -> Result<(TcpStream, SocketAddr), DialError> {
        let sources = &target.destination.source_ips;
        let mut last = None;
        for ip in &target.ips {
            let addr = SocketAddr::new(*ip, port);
            let source = if sources.is_empty() {
                None
            } else {
                let same: Vec<IpAddr> = sources
                    .iter()
                    .copied()
                    .filter(|s| s.is_ipv4() == ip.is_ipv4())
                    .collect();
                if same.is_empty() {
                    continue;
                }
                let n = target.next_source.fetch_add(1, Ordering::Relaxed);
                Some(same[n % same.len()])
            };
            match connect_one(addr, source).await {
                Ok(stream) => return Ok((stream, addr)),
                Err(source) => {
                    tracing::debug!(%addr, error = %source, "connect failed");
                    last = Some(DialError::Connect { addr, source });
                }
            }
        }
        Err(last.unwrap_or_else(|| DialError::NoSourceIp {
            destination: target.destination.name.clone(),
        }))
    }
}

/// The IP of an IP-literal `host` (IPv6 with or without brackets).
fn host_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

async fn connect_one(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}

/// The PROXY header sent to a backend (reference §4.2): v2, command PROXY, TCP, no TLVs;
/// IPv4-mapped IPv6 addresses as IPv4; the v1 `PROXY UNKNOWN` line when the two
/// addresses are of different families.
pub fn proxy_header(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    const VERSION_2_PROXY: u8 = 0x21;
    const TCP_OVER_IPV4: u8 = 0x11;
    const TCP_OVER_IPV6: u8 = 0x21;
    let src = client.ip().to_canonical();
    let dst = local.ip().to_canonical();
    let mut out = Vec::with_capacity(52);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(SIGNATURE);
            out.extend_from_slice(&[VERSION_2_PROXY, TCP_OVER_IPV4, 0, 12]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend_from_slice(SIGNATURE);
            out.extend_from_slice(&[VERSION_2_PROXY, TCP_OVER_IPV6, 0, 36]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => return b"PROXY UNKNOWN\r\n".to_vec(),
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&local.port().to_be_bytes());
    out
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;

//! Test helpers: a validated [`Config`] and a [`Hello`] built directly (not parsed), and
//! self-signed certificates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use postern_config::ipc::Hello;
use postern_config::material::{CertMaterial, Material};
use postern_config::model::*;

/// A self-signed certificate and its key.
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
}

pub fn self_signed(names: &[&str]) -> CertPair {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).expect("rcgen");
    CertPair {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        cert_der: ck.cert.der().to_vec(),
    }
}

pub fn cert_material(
    name: &str,
    pair: &CertPair,
    subjects: &[&str],
    default: bool,
) -> CertMaterial {
    CertMaterial {
        name: name.into(),
        chain_pem: pair.cert_pem.clone().into_bytes(),
        key_pem: pair.key_pem.clone().into_bytes(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        default,
    }
}

pub fn listener(name: &str, protocol: Protocol, tls: TlsMode) -> Listener {
    Listener {
        name: name.into(),
        protocol,
        bind: vec!["127.0.0.1:0".parse().expect("addr")],
        tls,
        proxy_protocol: ProxyProtocolIn::Off,
        proxy_trusted: Vec::new(),
        max_connections: 8192,
        preauth_timeout: Duration::from_secs(5),
        max_auth_attempts: 3,
        forwarded_trust: false,
    }
}

/// A destination at `host` with one leg per `(protocol, port, tls, forwarding)`.
pub fn destination(
    name: &str,
    host: &str,
    legs: &[(Protocol, u16, TlsMode, Forwarding)],
) -> Destination {
    Destination {
        name: name.into(),
        host: host.into(),
        tls_server_name: None,
        forwarded: false,
        tls_allow_invalid_certs: false,
        tls_pinned_cert_sha256: None,
        tls_client_cert: None,
        tls_client_key: None,
        source_ips: Vec::new(),
        hide_auth_errors: false,
        allow_plaintext_auth: false,
        legs: legs
            .iter()
            .map(|&(p, port, tls, forwarding)| {
                (
                    p,
                    Leg {
                        port,
                        tls,
                        forwarding,
                    },
                )
            })
            .collect(),
    }
}

fn sasl() -> SaslSettings {
    SaslSettings {
        sasl: vec!["PLAIN".into()],
        allow_plain_auth_without_tls: false,
    }
}

pub fn config(listeners: Vec<Listener>, destinations: Vec<Destination>) -> Config {
    let default_destination = destinations
        .first()
        .map(|d| d.name.clone())
        .unwrap_or_default();
    Config {
        server: Server {
            hostname: None,
            threads: 1,
            shutdown_grace: Duration::from_secs(30),
            bridge_idle: Duration::from_secs(60),
            backend_timeout: Duration::from_secs(5),
            backend_connect_retries: 1,
            host_down_threshold: 5,
            host_down_cooldown: Duration::from_secs(30),
            host_down_min_clients: 2,
            proxy_ttl: 7,
            log_level: "info".into(),
            user: "postern".into(),
            group: "postern".into(),
            workers: Some(1),
            control_socket: PathBuf::from("/nonexistent/control.sock"),
            max_session_memory: None,
        },
        sandbox: Sandbox {
            seccomp: SeccompMode::Off,
        },
        tls: Tls {
            certificates: Vec::new(),
            protocols: TlsProtocols {
                min_version: TlsVersion::Tls12,
                ignore_client_order: false,
                disable_cipher_suites: Vec::new(),
            },
        },
        listeners,
        routing: Routing {
            default_destination: default_destination.clone(),
            smtp_passthrough_destination: Some(default_destination),
            master_user_separators: Vec::new(),
        },
        destinations: destinations
            .into_iter()
            .map(|d| (d.name.clone(), d))
            .collect(),
        mapping: Mapping {
            source: MappingSource::File {
                path: PathBuf::from("/nonexistent/map"),
            },
            normalize: Normalize::Lowercase,
            positive_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            cache_max_entries: 1000,
            lookup_timeout: Duration::from_secs(1),
        },
        capabilities: Capabilities {
            imap: ImapCapabilities {
                advertise: Vec::new(),
                auth: sasl(),
                banner: "hi".into(),
            },
            pop3: Pop3Capabilities {
                auth: sasl(),
                banner: "hi".into(),
            },
            submission: SubmissionCapabilities {
                ehlo: Vec::new(),
                auth: sasl(),
                banner: "hi".into(),
            },
            managesieve: ManageSieveCapabilities {
                sieve: Vec::new(),
                implementation: "postern".into(),
                auth: sasl(),
            },
        },
        oauth: OAuth {
            jwt_username_claim: "email".into(),
        },
        http: Http {
            body_extract_cap: 1 << 16,
            max_head_size: 1 << 16,
            relay_idle: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(60),
            max_keepalive_requests: 0,
            routes: Vec::new(),
        },
        admin: None,
    }
}

/// A `Hello` for the listener called `listener` of `config`.
pub fn hello(config: Config, material: Material, listener: &str) -> Hello {
    Hello {
        proto: postern_config::ipc::PROTO,
        build_id: "test".into(),
        generation: 1,
        worker_id: format!("{listener}.0"),
        listener: listener.into(),
        sockets: Vec::new(),
        counter_slot: 0,
        threads: 1,
        config,
        material,
        resolved: BTreeMap::new(),
        own_addrs: Vec::new(),
        fault: None,
    }
}

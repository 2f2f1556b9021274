//! TLS configuration: the inbound acceptor (certificate chosen by SNI) and the client
//! configurations used to reach backends.
//!
//! Everything here is built once per worker, before the seccomp filter and before the
//! runtime exists, from PEM bytes the supervisor read for us ([`Material`]); this module
//! opens no file and does no I/O. The ring provider is always passed explicitly: nothing
//! relies on a process-wide default provider.
//!
//! Inbound SNI resolution (reference §2.2): the exact name, then the parent domain (first
//! label stripped, which is how `*.example.com` certificates match), then the certificate
//! marked `default`, then the only certificate if there is just one. When none of these
//! applies the handshake fails (the reference's last resort, a self-signed `localhost`
//! certificate, would be rejected by the client anyway).
//!
//! Backend verification (reference §4.4): a pin compares the SHA-256 of the leaf DER only
//! (no name, chain or expiry check) but handshake signatures are still verified;
//! `tls_allow_invalid_certs` accepts any certificate; otherwise the chain is verified
//! against `Material::backend_roots` for `Destination::server_name()`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use postern_config::material::{CertMaterial, Material};
use postern_config::model::{Destination, TlsProtocols, TlsVersion};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// A TLS configuration that cannot be built from the validated config and material.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate chain or key in the material does not load.
    #[error("tls.certificate.{name}: {reason}")]
    Certificate { name: String, reason: String },
    /// `disable_cipher_suites` removed every suite usable with `min_version`.
    #[error("tls.protocols.disable_cipher_suites leaves no cipher suite for the allowed versions")]
    NoCipherSuite,
    /// rustls refused the combination of provider and versions.
    #[error("cannot build the tls configuration")]
    Build(#[source] rustls::Error),
    /// `tls_server_name` (or `host`) is neither a DNS name nor an IP address.
    #[error("destination.{destination}: {name:?} is not a valid tls server name")]
    ServerName { destination: String, name: String },
    /// No trust anchors to verify a backend certificate with.
    #[error(
        "destination.{destination}: no backend trust roots to verify its certificate: {reason}"
    )]
    BackendRoots { destination: String, reason: String },
    /// The mTLS client certificate or key does not load.
    #[error("destination.{destination}: client certificate: {reason}")]
    ClientCert { destination: String, reason: String },
}

/// The ring provider with `disable` (standard cipher-suite names, any case) removed.
/// Names the provider does not implement have nothing to remove and are ignored.
pub fn provider(disable: &[String]) -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|suite| {
        !disable
            .iter()
            .any(|name| suite_matches(suite.suite(), name))
    });
    provider
}

/// True when `name` designates `suite`: the IANA name (`TLS_AES_128_GCM_SHA256`,
/// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`) or rustls's spelling (`TLS13_...`).
fn suite_matches(suite: rustls::CipherSuite, name: &str) -> bool {
    let Some(rustls_name) = suite.as_str() else {
        return false;
    };
    let name = name.trim();
    if rustls_name.eq_ignore_ascii_case(name) {
        return true;
    }
    match rustls_name.strip_prefix("TLS13_") {
        Some(rest) => {
            name.len() == rest.len() + 4 && name.eq_ignore_ascii_case(&format!("TLS_{rest}"))
        }
        None => false,
    }
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn versions(min: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match min {
        TlsVersion::Tls12 => rustls::ALL_VERSIONS,
        TlsVersion::Tls13 => TLS13_ONLY,
    }
}

/// Checks that some remaining suite serves one of the allowed versions.
fn check_suites(provider: &CryptoProvider, min: TlsVersion) -> Result<(), TlsSetupError> {
    let usable = provider.cipher_suites.iter().any(|s| match min {
        TlsVersion::Tls12 => true,
        TlsVersion::Tls13 => s.version() == &rustls::version::TLS13,
    });
    if usable {
        Ok(())
    } else {
        Err(TlsSetupError::NoCipherSuite)
    }
}

/// The inbound `ServerConfig` for every TLS listener of this worker.
pub fn server_config(
    protocols: &TlsProtocols,
    certificates: &[CertMaterial],
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = provider(&protocols.disable_cipher_suites);
    check_suites(&provider, protocols.min_version)?;
    let resolver = SniResolver::new(certificates, &provider)?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions(protocols.min_version))
        .map_err(TlsSetupError::Build)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.ignore_client_order = protocols.ignore_client_order;
    Ok(Arc::new(config))
}

fn load_certified_key(
    material: &CertMaterial,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(&material.chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("certificate chain holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&material.key_pem)
        .map_err(|e| format!("private key: {e}"))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| format!("private key: {e}"))
}

/// Chooses the inbound certificate from the client's SNI.
pub struct SniResolver {
    /// Lower-cased subject -> (certificate name, key). First certificate wins a name.
    by_name: HashMap<String, (String, Arc<CertifiedKey>)>,
    default: Option<(String, Arc<CertifiedKey>)>,
    only: Option<(String, Arc<CertifiedKey>)>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("names", &self.by_name.len())
            .field("default", &self.default.as_ref().map(|d| &d.0))
            .finish()
    }
}

impl SniResolver {
    pub fn new(
        certificates: &[CertMaterial],
        provider: &CryptoProvider,
    ) -> Result<SniResolver, TlsSetupError> {
        let mut by_name = HashMap::new();
        let mut default = None;
        let mut all = Vec::new();
        for material in certificates {
            let key = load_certified_key(material, provider).map_err(|reason| {
                TlsSetupError::Certificate {
                    name: material.name.clone(),
                    reason,
                }
            })?;
            let entry = (material.name.clone(), Arc::new(key));
            for subject in &material.subjects {
                let subject = normalize_name(subject);
                let subject = subject.strip_prefix("*.").unwrap_or(&subject).to_string();
                by_name.entry(subject).or_insert_with(|| entry.clone());
            }
            if material.default && default.is_none() {
                default = Some(entry.clone());
            }
            all.push(entry);
        }
        let only = if all.len() == 1 { all.pop() } else { None };
        Ok(SniResolver {
            by_name,
            default,
            only,
        })
    }

    /// The certificate for `sni`, as (certificate name, key).
    pub fn pick(&self, sni: Option<&str>) -> Option<&(String, Arc<CertifiedKey>)> {
        if let Some(sni) = sni {
            let name = normalize_name(sni);
            if let Some(hit) = self.by_name.get(&name) {
                return Some(hit);
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(hit) = self.by_name.get(parent) {
                    return Some(hit);
                }
            }
        }
        self.default.as_ref().or(self.only.as_ref())
    }
}

fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = client_hello.server_name();
        let picked = self.pick(sni);
        match picked {
            Some((name, _)) => {
                tracing::debug!(sni = sni.unwrap_or(""), certificate = %name, "certificate chosen")
            }
            None => tracing::debug!(sni = sni.unwrap_or(""), "no certificate for sni"),
        }
        picked.map(|(_, key)| key.clone())
    }
}

/// How a backend certificate is checked when the chain is not verified.
#[derive(Debug, Clone, Copy)]
enum Acceptance {
    /// SHA-256 of the leaf DER must equal this.
    Pin([u8; 32]),
    /// Any certificate (`tls_allow_invalid_certs`).
    Any,
}

/// Verifier for pinned and allow-invalid destinations. Handshake signatures are always
/// verified against the presented leaf, so the peer must hold its key.
#[derive(Debug)]
pub struct RelaxedVerifier {
    acceptance: Acceptance,
    algorithms: WebPkiSupportedAlgorithms,
}

impl RelaxedVerifier {
    /// Accepts exactly the leaf whose DER hashes to `sha256`.
    pub fn pinned(sha256: [u8; 32], provider: &CryptoProvider) -> RelaxedVerifier {
        RelaxedVerifier {
            acceptance: Acceptance::Pin(sha256),
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// Accepts any certificate.
    pub fn any(provider: &CryptoProvider) -> RelaxedVerifier {
        RelaxedVerifier {
            acceptance: Acceptance::Any,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

/// SHA-256 of a certificate's DER encoding.
pub fn cert_sha256(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl ServerCertVerifier for RelaxedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.acceptance {
            Acceptance::Any => Ok(ServerCertVerified::assertion()),
            Acceptance::Pin(pin) => {
                // Not constant-time: the leaf certificate is public data.
                if cert_sha256(end_entity.as_ref()) == pin {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ApplicationVerificationFailure,
                    ))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client configuration for `destination`'s TLS legs, and the name sent as SNI.
pub fn client_config(
    destination: &Destination,
    material: &Material,
) -> Result<(Arc<ClientConfig>, ServerName<'static>), TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let name = destination.server_name();
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|_| TlsSetupError::ServerName {
            destination: destination.name.clone(),
            name: name.to_string(),
        })?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(TlsSetupError::Build)?;
    let builder = if let Some(pin) = destination.tls_pinned_cert_sha256 {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(RelaxedVerifier::pinned(pin, &provider)))
    } else if destination.tls_allow_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(RelaxedVerifier::any(&provider)))
    } else {
        let roots_error = |reason: String| TlsSetupError::BackendRoots {
            destination: destination.name.clone(),
            reason,
        };
        let mut roots = RootCertStore::empty();
        let (_added, _ignored) = roots.add_parsable_certificates(
            material
                .backend_roots
                .iter()
                .map(|der| CertificateDer::from(der.clone())),
        );
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| roots_error(e.to_string()))?;
        builder.with_webpki_verifier(verifier)
    };
    let config = match material.client_certs.get(&destination.name) {
        Some(client) => {
            let client_error = |reason: String| TlsSetupError::ClientCert {
                destination: destination.name.clone(),
                reason,
            };
            let chain = CertificateDer::pem_slice_iter(&client.chain_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| client_error(format!("certificate chain: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(&client.key_pem)
                .map_err(|e| client_error(format!("private key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| client_error(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok((Arc::new(config), server_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{cert_material as material, self_signed};

    fn picked(r: &SniResolver, sni: Option<&str>) -> Option<String> {
        r.pick(sni).map(|(n, _)| n.clone())
    }

    #[test]
    fn sni_selection_order() {
        let p = rustls::crypto::ring::default_provider();
        let a = self_signed(&["mail.example.com"]);
        let b = self_signed(&["example.org"]);
        let c = self_signed(&["fallback.test"]);
        let certs = vec![
            material("a", &a, &["mail.example.com"], false),
            material("b", &b, &["example.org"], false),
            material("c", &c, &["fallback.test"], true),
        ];
        let r = SniResolver::new(&certs, &p).expect("resolver");
        // Exact, case-insensitive, trailing dot ignored.
        assert_eq!(picked(&r, Some("MAIL.example.com.")).as_deref(), Some("a"));
        // Parent domain: first label stripped (how wildcard subjects match).
        assert_eq!(picked(&r, Some("imap.example.org")).as_deref(), Some("b"));
        // Only one label is stripped.
        assert_eq!(picked(&r, Some("a.b.example.org")).as_deref(), Some("c"));
        // Unknown name and no SNI: the default.
        assert_eq!(picked(&r, Some("other.test")).as_deref(), Some("c"));
        assert_eq!(picked(&r, None).as_deref(), Some("c"));

        // No default, several certificates: nothing.
        let r2 = SniResolver::new(&certs[..2], &p).expect("resolver");
        assert_eq!(picked(&r2, Some("other.test")), None);
        // A single certificate serves everything.
        let r3 = SniResolver::new(&certs[1..2], &p).expect("resolver");
        assert_eq!(picked(&r3, Some("other.test")).as_deref(), Some("b"));
        assert_eq!(picked(&r3, None).as_deref(), Some("b"));
    }

    #[test]
    fn wildcard_subject_matches_children() {
        let p = rustls::crypto::ring::default_provider();
        let a = self_signed(&["*.example.net"]);
        let b = self_signed(&["x.test"]);
        let certs = vec![
            material("w", &a, &["*.example.net"], false),
            material("x", &b, &["x.test"], false),
        ];
        let r = SniResolver::new(&certs, &p).expect("resolver");
        assert_eq!(picked(&r, Some("imap.example.net")).as_deref(), Some("w"));
    }

    #[test]
    fn bad_key_is_a_setup_error() {
        let p = rustls::crypto::ring::default_provider();
        let a = self_signed(&["a.test"]);
        let mut m = material("a", &a, &["a.test"], false);
        m.key_pem = b"not a key".to_vec();
        assert!(matches!(
            SniResolver::new(&[m], &p),
            Err(TlsSetupError::Certificate { .. })
        ));
    }

    #[test]
    fn cipher_suites_are_disabled_by_standard_name() {
        let p = provider(&[
            "tls_aes_128_gcm_sha256".into(),
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
        ]);
        let names: Vec<_> = p
            .cipher_suites
            .iter()
            .filter_map(|s| s.suite().as_str())
            .collect();
        assert!(!names.contains(&"TLS13_AES_128_GCM_SHA256"), "{names:?}");
        assert!(!names.contains(&"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"));
        assert!(names.contains(&"TLS13_AES_256_GCM_SHA384"));

        let tls13: Vec<String> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .filter_map(|s| s.suite().as_str().map(String::from))
            .collect();
        let p = provider(&tls13);
        assert!(matches!(
            check_suites(&p, TlsVersion::Tls13),
            Err(TlsSetupError::NoCipherSuite)
        ));
        assert!(check_suites(&p, TlsVersion::Tls12).is_ok());
    }

    #[test]
    fn pinned_verifier_accepts_right_pin_and_rejects_wrong() {
        let p = rustls::crypto::ring::default_provider();
        let a = self_signed(&["backend.test"]);
        let der = CertificateDer::from(a.cert_der.clone());
        let name = ServerName::try_from("anything.invalid").expect("name");
        let right = RelaxedVerifier::pinned(cert_sha256(&a.cert_der), &p);
        assert!(right
            .verify_server_cert(&der, &[], &name, &[], UnixTime::now())
            .is_ok());
        let mut wrong_pin = cert_sha256(&a.cert_der);
        wrong_pin[0] ^= 1;
        let wrong = RelaxedVerifier::pinned(wrong_pin, &p);
        assert!(wrong
            .verify_server_cert(&der, &[], &name, &[], UnixTime::now())
            .is_err());
        assert!(!right.supported_verify_schemes().is_empty());
    }

    #[test]
    fn client_configs_for_pin_invalid_roots_and_mtls() {
        let mut d = crate::testutil::destination("b", "10.1.2.3", &[]);
        let backend = self_signed(&["b.test"]);
        // Default verification needs roots.
        assert!(matches!(
            client_config(&d, &Material::default()),
            Err(TlsSetupError::BackendRoots { .. })
        ));
        let roots = Material {
            backend_roots: vec![backend.cert_der.clone()],
            ..Material::default()
        };
        let (_, name) = client_config(&d, &roots).expect("roots");
        assert_eq!(name, ServerName::try_from("10.1.2.3").expect("ip name"));
        d.tls_server_name = Some("b.test".into());
        let (_, name) = client_config(&d, &roots).expect("roots");
        assert_eq!(name, ServerName::try_from("b.test").expect("dns name"));
        // A pin or allow-invalid needs no roots.
        d.tls_pinned_cert_sha256 = Some([7; 32]);
        assert!(client_config(&d, &Material::default()).is_ok());
        d.tls_pinned_cert_sha256 = None;
        d.tls_allow_invalid_certs = true;
        assert!(client_config(&d, &Material::default()).is_ok());
        // mTLS: a loadable client certificate is used, a broken one is a setup error.
        let client = self_signed(&["client.test"]);
        let mut m = Material::default();
        m.client_certs
            .insert("b".into(), material("b", &client, &[], false));
        let (config, _) = client_config(&d, &m).expect("mtls");
        assert!(config.client_auth_cert_resolver.has_certs());
        m.client_certs.get_mut("b").expect("b").key_pem = b"junk".to_vec();
        assert!(matches!(
            client_config(&d, &m),
            Err(TlsSetupError::ClientCert { .. })
        ));
    }

    #[test]
    fn server_config_honours_protocol_settings() {
        let a = self_signed(&["a.test"]);
        let certs = vec![material("a", &a, &["a.test"], true)];
        let protocols = TlsProtocols {
            min_version: TlsVersion::Tls13,
            ignore_client_order: true,
            disable_cipher_suites: Vec::new(),
        };
        let config = server_config(&protocols, &certs).expect("config");
        assert!(config.ignore_client_order);
        assert!(config
            .crypto_provider()
            .cipher_suites
            .iter()
            .any(|s| s.version() == &rustls::version::TLS13));
        let all13: Vec<String> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .filter_map(|s| s.suite().as_str().map(String::from))
            .collect();
        let protocols = TlsProtocols {
            disable_cipher_suites: all13,
            ..protocols
        };
        assert!(matches!(
            server_config(&protocols, &certs),
            Err(TlsSetupError::NoCipherSuite)
        ));
    }
}

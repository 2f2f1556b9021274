//! Secrets and files the configuration points at, read into memory by the supervisor
//! before it drops privileges, and shipped to the workers (which open no file).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::Config;
use crate::Issue;

/// Everything read from disk on behalf of the workers.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Material {
    /// `[tls.certificate.*]`, in the config's order.
    pub certificates: Vec<CertMaterial>,
    /// Client certificates for mTLS to a destination, by destination name.
    pub client_certs: BTreeMap<String, CertMaterial>,
    /// DER trust anchors for verifying backend certificates (the platform store),
    /// read only when some destination leg uses TLS without a pin.
    pub backend_roots: Vec<Vec<u8>>,
}

/// A certificate chain and its private key, both PEM, known to parse.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CertMaterial {
    pub name: String,
    /// PEM chain, leaf first.
    pub chain_pem: Vec<u8>,
    /// PEM private key. Never logged: `Debug` redacts it.
    pub key_pem: Vec<u8>,
    /// Lower-cased names this certificate serves, `*.` stripped: the configured
    /// `subjects`, else the leaf's DNS SANs, else its CN.
    pub subjects: Vec<String>,
    pub default: bool,
}

impl fmt::Debug for CertMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertMaterial")
            .field("name", &self.name)
            .field("chain_pem", &format_args!("{} bytes", self.chain_pem.len()))
            .field("key_pem", &"<redacted>")
            .field("subjects", &self.subjects)
            .field("default", &self.default)
            .finish()
    }
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("certificates", &self.certificates)
            .field("client_certs", &self.client_certs)
            .field("backend_roots", &self.backend_roots.len())
            .finish()
    }
}

/// Reads every certificate and key the config names, checking that each parses, and
/// reports every problem with the key path that named the file.
pub fn read(config: &Config) -> Result<Material, Vec<Issue>> {
    crate::validate::read_material(config)
}

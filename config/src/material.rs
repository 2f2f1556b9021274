//! Secrets and files the configuration points at, read into memory by the supervisor
//! before it drops privileges, and shipped to the workers (which open no file).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{Config, Normalize};
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
    /// The mapping file's table when `mapping.source = "file"`, keys normalized per
    /// `mapping.normalize`; present only when the whole file validated.
    pub mapping: Option<MappingTable>,
}

/// Identifier -> destination, as read from the mapping file: one row per line, keys
/// normalized. Its `Debug` prints the number of rows, never the rows.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MappingTable(BTreeMap<String, String>);

impl MappingTable {
    pub fn new() -> MappingTable {
        MappingTable::default()
    }

    /// The destination mapped to `identifier` (already normalized).
    pub fn get(&self, identifier: &str) -> Option<&str> {
        self.0.get(identifier).map(String::as_str)
    }

    /// Adds a row; returns the destination it replaced, if any.
    pub fn insert(&mut self, identifier: String, destination: String) -> Option<String> {
        self.0.insert(identifier, destination)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Rows in identifier order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn into_inner(self) -> BTreeMap<String, String> {
        self.0
    }
}

impl FromIterator<(String, String)> for MappingTable {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> MappingTable {
        MappingTable(iter.into_iter().collect())
    }
}

impl fmt::Debug for MappingTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MappingTable({} rows)", self.0.len())
    }
}

/// Applies `mapping.normalize` to an identifier. The one definition, used for the
/// mapping file's keys on load and for identifiers before lookup, so both agree.
pub fn normalize_identifier(mode: Normalize, identifier: &str) -> String {
    match mode {
        Normalize::None => identifier.to_owned(),
        Normalize::Lowercase => identifier.to_lowercase(),
    }
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
            .field("mapping", &self.mapping)
            .finish()
    }
}

/// Reads every certificate and key the config names, checking that each parses, and the
/// mapping file (`source = "file"`), parsed into [`Material::mapping`]; reports every
/// problem with the key path that named the file (and line numbers for the mapping file).
pub fn read(config: &Config) -> Result<Material, Vec<Issue>> {
    crate::validate::read_material(config)
}

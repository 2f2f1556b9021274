//! The files a validated config points at: certificates and keys (read into
//! [`Material`]), the platform trust store, the admin token file and the mapping file.
//! Called by the supervisor while it still may read them; every problem is reported with
//! the key that named the file. Nothing here parses TOML.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::material::{normalize_identifier, CertMaterial, MappingTable, Material};
use crate::model::{Config, Protocol, TlsMode};
use crate::schema::join;
use crate::Issue;

use super::routes::mapping_file;

pub(crate) fn read_material(config: &Config) -> Result<Material, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut material = Material::default();
    let user = config.server.user.as_str();

    for c in &config.tls.certificates {
        let base = join("tls.certificate", &c.name);
        let paths = (join(&base, "cert"), join(&base, "key"));
        if let Some(mut m) = read_pair(&mut issues, user, &paths, &c.cert, &c.key) {
            m.name = c.name.clone();
            m.default = c.default;
            if let Some(configured) = &c.subjects {
                m.subjects = normalize_names(configured.iter().map(String::as_str));
            }
            material.certificates.push(m);
        }
    }

    for (name, d) in &config.destinations {
        let (Some(cert), Some(key)) = (&d.tls_client_cert, &d.tls_client_key) else {
            continue;
        };
        let base = join("destination", name);
        let paths = (
            join(&base, "tls_client_cert"),
            join(&base, "tls_client_key"),
        );
        if let Some(mut m) = read_pair(&mut issues, user, &paths, cert, key) {
            m.name = name.clone();
            m.subjects = Vec::new();
            material.client_certs.insert(name.clone(), m);
        }
    }

    // The platform store is needed only when some backend certificate is verified by it.
    let verified_leg = config.destinations.iter().find_map(|(name, d)| {
        if d.tls_pinned_cert_sha256.is_some() || d.tls_allow_invalid_certs {
            return None;
        }
        d.legs
            .iter()
            .find(|(_, leg)| leg.tls != TlsMode::Plain)
            .map(|(p, _)| format!("{}.protocol.{p}.tls", join("destination", name)))
    });
    if let Some(path) = verified_leg {
        let loaded = rustls_native_certs::load_native_certs();
        if loaded.certs.is_empty() {
            let why: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
            let why = if why.is_empty() {
                "the store is empty".to_owned()
            } else {
                why.join("; ")
            };
            issues.push(Issue::new(
                path,
                format!(
                    "no trusted root certificates could be loaded from the platform store \
                     ({why}); install the ca-certificates package, or set \
                     tls_pinned_cert_sha256 on the destination"
                ),
            ));
        } else {
            for e in &loaded.errors {
                tracing::warn!(error = %e, "some platform root certificates could not be loaded");
            }
            material.backend_roots = loaded
                .certs
                .into_iter()
                .map(|c| c.as_ref().to_vec())
                .collect();
        }
    }

    if let Some(admin) = &config.admin {
        if let Some(path) = &admin.bearer_token_file {
            let key = "admin.bearer_token_file";
            if let Some(bytes) = read(&mut issues, user, key, path) {
                match String::from_utf8(bytes) {
                    Err(_) => issues.push(Issue::new(
                        key,
                        format!(
                            "{} is not UTF-8 text; write the token on one line",
                            path.display()
                        ),
                    )),
                    Ok(text) => {
                        let len = text.trim().chars().count();
                        if len < admin.min_token_len as usize {
                            issues.push(Issue::new(
                                key,
                                format!(
                                    "the token in {} is {len} characters long; use at least \
                                     min_token_len ({}), for example `openssl rand -hex 24`",
                                    path.display(),
                                    admin.min_token_len
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }

    if let Some(path) = mapping_file(&config.mapping) {
        let key = "mapping.file.path";
        if let Some(bytes) = read(&mut issues, user, key, path) {
            match String::from_utf8(bytes) {
                Ok(text) => match parse_mapping_file(config, &text) {
                    Ok(table) => material.mapping = Some(table),
                    Err(found) => issues.extend(found),
                },
                Err(_) => issues.push(Issue::new(
                    key,
                    format!("{} is not UTF-8 text", path.display()),
                )),
            }
        }
    }

    if issues.is_empty() {
        Ok(material)
    } else {
        Err(issues)
    }
}

/// Reads a file, or records why it could not be read.
fn read(issues: &mut Vec<Issue>, user: &str, key: &str, path: &Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            issues.push(Issue::new(
                key,
                format!(
                    "cannot read {}: {e}; check the path and that the {user} account can read it",
                    path.display()
                ),
            ));
            None
        }
    }
}

/// Reads and checks a certificate chain and its key. Subjects come from the leaf.
fn read_pair(
    issues: &mut Vec<Issue>,
    user: &str,
    (cert_key, key_key): &(String, String),
    cert_path: &Path,
    key_path: &Path,
) -> Option<CertMaterial> {
    let chain_pem = read(issues, user, cert_key, cert_path);
    let key_pem = read(issues, user, key_key, key_path);
    if let Ok(meta) = std::fs::metadata(key_path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(
                key = %key_key,
                path = %key_path.display(),
                "private key file is readable by every account; chmod o-r it"
            );
        }
    }
    let chain = chain_pem
        .as_deref()
        .and_then(|pem| check_chain(issues, cert_key, cert_path, pem));
    let key = key_pem
        .as_deref()
        .and_then(|pem| check_key(issues, key_key, key_path, pem));
    let (Some((chain, subjects)), Some(key)) = (chain, key) else {
        return None;
    };
    // A key of a type rustls cannot sign with, or one that belongs to another
    // certificate, would only show up as failed handshakes in the workers.
    let signing_key = match rustls::crypto::ring::sign::any_supported_type(&key) {
        Ok(k) => k,
        Err(_) => {
            issues.push(Issue::new(
                key_key.as_str(),
                format!(
                    "{} is a key type postern cannot use; use RSA (2048 bits or more), \
                     ECDSA P-256 or P-384, or Ed25519",
                    key_path.display()
                ),
            ));
            return None;
        }
    };
    let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
        certified.keys_match()
    {
        issues.push(Issue::new(
            key_key.as_str(),
            format!(
                "{} is not the private key of the certificate in {}; give the key that \
                 belongs to the leaf certificate",
                key_path.display(),
                cert_path.display()
            ),
        ));
        return None;
    }
    Some(CertMaterial {
        name: String::new(),
        chain_pem: chain_pem?,
        key_pem: key_pem?,
        subjects,
        default: false,
    })
}

/// Checks that `pem` holds a non-empty chain whose leaf parses, and returns the chain
/// with the leaf's names: DNS SANs, else the CN.
fn check_chain(
    issues: &mut Vec<Issue>,
    key: &str,
    path: &Path,
    pem: &[u8],
) -> Option<(Vec<CertificateDer<'static>>, Vec<String>)> {
    let chain: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_slice_iter(pem).collect();
    let chain = match chain {
        Ok(chain) => chain,
        Err(e) => {
            issues.push(Issue::new(
                key,
                format!(
                    "{} is not valid PEM: {e}; give a PEM certificate chain, leaf first",
                    path.display()
                ),
            ));
            return None;
        }
    };
    let Some(leaf) = chain.first() else {
        issues.push(Issue::new(
            key,
            format!(
                "{} contains no certificate; give a PEM file with \"BEGIN CERTIFICATE\" \
                 blocks, leaf first",
                path.display()
            ),
        ));
        return None;
    };
    match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, cert)) => {
            let names = leaf_names(&cert);
            Some((chain, names))
        }
        Err(e) => {
            issues.push(Issue::new(
                key,
                format!(
                    "the first certificate in {} is not valid X.509: {e}",
                    path.display()
                ),
            ));
            None
        }
    }
}

fn leaf_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let sans: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(s) => Some(*s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if !sans.is_empty() {
        return normalize_names(sans);
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok());
    normalize_names(cn)
}

/// Lower-cases names, strips a leading `*.`, drops blanks and duplicates (order kept).
fn normalize_names<'n>(names: impl IntoIterator<Item = &'n str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let name = name.trim().to_ascii_lowercase();
        let name = name.strip_prefix("*.").unwrap_or(&name).to_owned();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

fn check_key(
    issues: &mut Vec<Issue>,
    key: &str,
    path: &Path,
    pem: &[u8],
) -> Option<PrivateKeyDer<'static>> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(k) => Some(k),
        Err(e) => {
            let why = match e {
                rustls_pki_types::pem::Error::NoItemsFound => "contains no private key".to_owned(),
                other => format!("is not a valid PEM private key ({other})"),
            };
            issues.push(Issue::new(
                key,
                format!(
                    "{} {why}; give a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC \
                     PRIVATE KEY\"",
                    path.display()
                ),
            ));
            None
        }
    }
}

/// Checks the text of the mapping file (rule 12); see [`parse_mapping_file`].
pub fn check_mapping_file(config: &Config, text: &str) -> Vec<Issue> {
    parse_mapping_file(config, text).err().unwrap_or_default()
}

/// Parses the text of the mapping file into its table (rule 12): every line is
/// `<identifier> <destination>` (blank lines and `#` comments skipped, as is a trailing
/// `# comment`), names a declared destination, maps an identifier only once after
/// normalizing, and each mapped destination declares every interactive protocol some
/// listener serves. Keys are normalized per `mapping.normalize`. Any problem rejects the
/// whole file; issues are at `mapping.file.path`, with line numbers.
pub fn parse_mapping_file(config: &Config, text: &str) -> Result<MappingTable, Vec<Issue>> {
    const KEY: &str = "mapping.file.path";
    let mut issues = Vec::new();
    let mut table = MappingTable::new();
    let served: BTreeMap<Protocol, &str> = config
        .listeners
        .iter()
        .filter(|l| l.protocol.is_interactive())
        .map(|l| (l.protocol, l.name.as_str()))
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut checked: BTreeSet<&str> = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (id, dest) = match (fields.next(), fields.next(), fields.next()) {
            (Some(id), Some(dest), None) => (id, dest),
            (Some(id), Some(dest), Some(comment)) if comment.starts_with('#') => (id, dest),
            _ => {
                issues.push(Issue::new(
                    KEY,
                    format!(
                        "line {n}: expected \"<identifier> <destination>\", found {} fields",
                        line.split_whitespace().count()
                    ),
                ));
                continue;
            }
        };
        let id = normalize_identifier(config.mapping.normalize, id);
        if let Some(first) = seen.get(&id) {
            issues.push(Issue::new(
                KEY,
                format!("line {n}: {id:?} is already mapped on line {first}; keep one line"),
            ));
            continue;
        }
        seen.insert(id.clone(), n);
        let Some((dest_name, destination)) = config.destinations.get_key_value(dest) else {
            issues.push(Issue::new(
                KEY,
                format!(
                    "line {n}: destination {dest:?} is not declared; add \
                     [destination.{dest}] or fix the line"
                ),
            ));
            continue;
        };
        table.insert(id, dest_name.clone());
        if !checked.insert(dest_name.as_str()) {
            continue;
        }
        for (p, listener) in &served {
            if destination.leg(*p).is_none() {
                issues.push(Issue::new(
                    KEY,
                    format!(
                        "line {n}: destination {dest:?} has no {p} leg, but listener.{listener} \
                         serves {p}; add [destination.{dest}.protocol.{p}]"
                    ),
                ));
            }
        }
    }
    let bytes = shipped_size(&table);
    if issues.is_empty() && bytes > MAPPING_SHIP_MAX {
        issues.push(Issue::new(
            KEY,
            format!(
                "the mapping file holds {} rows ({} KiB), more than the {} KiB postern \
                 ships to its workers; use mapping.source = \"redis\" or \"sql\" for a \
                 table this large",
                table.len(),
                bytes >> 10,
                MAPPING_SHIP_MAX >> 10
            ),
        ));
    }
    if issues.is_empty() {
        Ok(table)
    } else {
        Err(issues)
    }
}

/// The most a mapping table may take in a worker's `Hello`: its record limit less 2 MiB
/// for the config and the TLS material.
const MAPPING_SHIP_MAX: usize = crate::ipc::MAX_RECORD_BYTES - (2 << 20);

/// What `table` weighs on the wire, near enough: the strings plus their length prefixes.
fn shipped_size(table: &MappingTable) -> usize {
    table
        .iter()
        .map(|(id, dest)| id.len() + dest.len() + 6)
        .sum()
}

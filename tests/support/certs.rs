//! Test PKI: a throwaway CA and leaf certificates signed by it, written as PEM files.
//!
//! Leaves carry their names as DNS SANs and the first name as CN, so postern's SNI
//! selection (exact name, SANs by default) and a client's hostname check both apply.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA that can sign leaves; its certificate is at [`Ca::cert_pem`].
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: PathBuf,
    dir: PathBuf,
}

/// A leaf's PEM files: `chain` holds the leaf then the CA, `key` the PKCS#8 key.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub names: Vec<String>,
    pub chain: PathBuf,
    pub key: PathBuf,
}

impl Leaf {
    /// `[tls.certificate.<name>]` serving this leaf, for a postern config.
    pub fn certificate_table(&self, name: &str) -> String {
        format!(
            "[tls.certificate.{name}]\ncert = \"{}\"\nkey = \"{}\"\n",
            self.chain.display(),
            self.key.display()
        )
    }
}

impl Ca {
    /// Creates a CA named `name` and writes `<name>-ca.pem` into `dir`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("self-sign ca");
        let cert_pem = dir.join(format!("{name}-ca.pem"));
        super::write_file(&cert_pem, cert.pem());
        Ca {
            issuer: Issuer::new(params, key),
            cert_pem,
            dir: dir.to_path_buf(),
        }
    }

    /// Issues a server certificate for `names` (first is the CN) and writes
    /// `<file_stem>.chain.pem` and `<file_stem>.key.pem`.
    pub fn leaf(&self, file_stem: &str, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.clone());
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let ca_pem = std::fs::read_to_string(&self.cert_pem).expect("read ca pem");
        let chain = self.dir.join(format!("{file_stem}.chain.pem"));
        let key_path = self.dir.join(format!("{file_stem}.key.pem"));
        super::write_file(&chain, format!("{}{}", cert.pem(), ca_pem));
        super::write_file(&key_path, key.serialize_pem());
        Leaf {
            names,
            chain,
            key: key_path,
        }
    }
}

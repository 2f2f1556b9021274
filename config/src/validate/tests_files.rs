//! `read_material` and `check_mapping_file` against real files: PEM made by `rcgen` in a
//! temporary directory, missing and garbage files, SAN and CN extraction, the admin
//! token file and the mapping file.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DnType, KeyPair};

use super::tests::{edit, ok, BASE};
use super::{check_mapping_file, parse_mapping_file};
use crate::model::Config;
use crate::Issue;

struct Pem {
    cert: PathBuf,
    key: PathBuf,
}

/// Writes a self-signed certificate for `sans` (and CN `cn`, if given) under `dir`.
fn make_cert(dir: &Path, name: &str, sans: &[&str], cn: Option<&str>) -> Pem {
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = Pem {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&pem.cert, cert.pem()).unwrap();
    std::fs::write(&pem.key, key.serialize_pem()).unwrap();
    pem
}

fn cert_table(name: &str, pem: &Pem, extra: &str) -> String {
    format!(
        "\n[tls.certificate.{name}]\ncert = {:?}\nkey = {:?}\n{extra}\n",
        pem.cert.display().to_string(),
        pem.key.display().to_string()
    )
}

fn material_err(config: &Config) -> Vec<Issue> {
    crate::material::read(config).expect_err("material should be rejected")
}

#[track_caller]
fn has(issues: &[Issue], path: &str, part: &str) {
    assert!(
        issues
            .iter()
            .any(|i| i.path == path && i.message.contains(part)),
        "expected `{path}: ...{part}...` among {issues:#?}"
    );
}

/// BASE with a mapping file that exists and is valid.
fn base_with_mapping(dir: &Path) -> String {
    let map = dir.join("mappings.tsv");
    std::fs::write(&map, "# id dest\nalice@example.com old\n\n").unwrap();
    BASE.replace("/etc/postern/mappings.tsv", &map.display().to_string())
}

#[test]
fn certificates_are_read_with_their_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let san = make_cert(
        dir.path(),
        "san",
        &["Mail.Example.com", "*.example.org"],
        Some("ignored.example"),
    );
    let cn = make_cert(dir.path(), "cn", &[], Some("CN.Example.NET"));
    let set = make_cert(dir.path(), "set", &["a.example"], None);
    let text = format!(
        "{}{}{}{}",
        base_with_mapping(dir.path()),
        cert_table("san", &san, "default = true"),
        cert_table("cn", &cn, ""),
        cert_table(
            "set",
            &set,
            "subjects = [\"*.Configured.example\", \"b.example\"]"
        )
    );
    let m = crate::material::read(&ok(&text)).unwrap();
    let got: Vec<(&str, Vec<&str>, bool)> = m
        .certificates
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.subjects.iter().map(String::as_str).collect(),
                c.default,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("cn", vec!["cn.example.net"], false),
            ("san", vec!["mail.example.com", "example.org"], true),
            ("set", vec!["configured.example", "b.example"], false),
        ]
    );
    let san_pem = std::fs::read(&san.cert).unwrap();
    assert_eq!(m.certificates[1].chain_pem, san_pem);
    assert!(String::from_utf8_lossy(&m.certificates[1].key_pem).contains("PRIVATE KEY"));
    assert!(
        !format!("{m:?}").contains("PRIVATE KEY"),
        "Debug must redact keys"
    );
}

#[test]
fn missing_files_are_reported_with_the_key_that_named_them() {
    let dir = tempfile::tempdir().unwrap();
    let gone = Pem {
        cert: dir.path().join("nope.pem"),
        key: dir.path().join("nope.key"),
    };
    let text = format!(
        "{}{}",
        base_with_mapping(dir.path()),
        cert_table("main", &gone, "")
    );
    let issues = material_err(&ok(&text));
    let msg = format!(
        "cannot read {}: No such file or directory (os error 2); check the path and that the postern account can read it",
        gone.cert.display()
    );
    has(&issues, "tls.certificate.main.cert", &msg);
    has(&issues, "tls.certificate.main.key", "cannot read");
    assert_eq!(issues.len(), 2, "{issues:#?}");
}

#[test]
fn garbage_pem_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let good = make_cert(dir.path(), "good", &["mail.example.com"], None);
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "this is not PEM\n").unwrap();
    let junk_pair = Pem {
        cert: junk.clone(),
        key: junk.clone(),
    };
    // A certificate where a key is expected, and the other way round.
    let swapped = Pem {
        cert: good.key.clone(),
        key: good.cert.clone(),
    };
    let text = format!(
        "{}{}{}",
        base_with_mapping(dir.path()),
        cert_table("junk", &junk_pair, ""),
        cert_table("swapped", &swapped, "")
    );
    let issues = material_err(&ok(&text));
    has(
        &issues,
        "tls.certificate.junk.cert",
        "contains no certificate",
    );
    has(
        &issues,
        "tls.certificate.junk.key",
        "contains no private key",
    );
    has(
        &issues,
        "tls.certificate.swapped.cert",
        "contains no certificate",
    );
    has(
        &issues,
        "tls.certificate.swapped.key",
        "contains no private key",
    );
    assert_eq!(issues.len(), 4, "{issues:#?}");
}

#[test]
fn a_broken_certificate_block_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let good = make_cert(dir.path(), "good", &["mail.example.com"], None);
    let bad = dir.path().join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let pair = Pem {
        cert: bad,
        key: good.key,
    };
    let text = format!(
        "{}{}",
        base_with_mapping(dir.path()),
        cert_table("main", &pair, "")
    );
    has(
        &material_err(&ok(&text)),
        "tls.certificate.main.cert",
        "is not valid X.509",
    );
}

#[test]
fn a_key_of_another_certificate_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let one = make_cert(dir.path(), "one", &["one.example"], None);
    let two = make_cert(dir.path(), "two", &["two.example"], None);
    let mixed = Pem {
        cert: one.cert,
        key: two.key,
    };
    let text = format!(
        "{}{}",
        base_with_mapping(dir.path()),
        cert_table("main", &mixed, "")
    );
    let issues = material_err(&ok(&text));
    has(
        &issues,
        "tls.certificate.main.key",
        "is not the private key of the certificate in",
    );
    assert_eq!(issues.len(), 1, "{issues:#?}");
}

#[test]
fn client_certificates_are_read_per_destination() {
    let dir = tempfile::tempdir().unwrap();
    let client = make_cert(dir.path(), "client", &["proxy.example"], None);
    let pin = "ab".repeat(32);
    let text = edit(
        &base_with_mapping(dir.path()),
        "destination.old",
        &format!(
            "tls_client_cert = {:?}\ntls_client_key = {:?}\ntls_pinned_cert_sha256 = \"{pin}\"",
            client.cert.display().to_string(),
            client.key.display().to_string()
        ),
    );
    let m = crate::material::read(&ok(&text)).unwrap();
    assert_eq!(m.client_certs["old"].name, "old");
    // Pinned: the platform store is not needed.
    assert!(m.backend_roots.is_empty());

    let text = edit(
        &base_with_mapping(dir.path()),
        "destination.old",
        "tls_client_cert = \"/nonexistent/c.pem\"\ntls_client_key = \"/nonexistent/c.key\"",
    );
    let issues = material_err(&ok(&text));
    has(
        &issues,
        "destination.old.tls_client_cert",
        "cannot read /nonexistent/c.pem",
    );
    has(
        &issues,
        "destination.old.tls_client_key",
        "cannot read /nonexistent/c.key",
    );
}

#[test]
fn backend_roots_are_loaded_only_when_verification_needs_them() {
    let dir = tempfile::tempdir().unwrap();
    let text = base_with_mapping(dir.path());
    match crate::material::read(&ok(&text)) {
        Ok(m) => assert!(
            !m.backend_roots.is_empty(),
            "a starttls leg without a pin needs roots"
        ),
        // A machine without a CA bundle: the error names the leg that needs it.
        Err(issues) => has(
            &issues,
            "destination.old.protocol.imap.tls",
            "no trusted root certificates",
        ),
    }
    let text = edit(&text, "destination.old", "tls_allow_invalid_certs = true");
    assert!(crate::material::read(&ok(&text))
        .unwrap()
        .backend_roots
        .is_empty());
    let text = base_with_mapping(dir.path()).replace("tls = \"starttls\"", "tls = \"plain\"");
    let text = edit(&text, "destination.old", "allow_plaintext_auth = true");
    assert!(crate::material::read(&ok(&text))
        .unwrap()
        .backend_roots
        .is_empty());
}

#[test]
fn admin_token_file_length_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "main", &["mail.example.com"], None);
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "too-short\n").unwrap();
    let text = format!(
        "{}{}\n[admin]\nbind = \"127.0.0.1:9443\"\nbearer_token_file = {:?}\n",
        base_with_mapping(dir.path()),
        cert_table("main", &cert, ""),
        token.display().to_string()
    );
    let config = ok(&text);
    has(
        &material_err(&config),
        "admin.bearer_token_file",
        "is 9 characters long; use at least min_token_len (32)",
    );
    std::fs::write(&token, format!("{}\n", "k".repeat(48))).unwrap();
    crate::material::read(&config).unwrap();
}

#[test]
fn mapping_file_is_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let text = base_with_mapping(dir.path());
    let config = ok(&text);
    std::fs::write(
        dir.path().join("mappings.tsv"),
        "alice@example.com nowhere\n",
    )
    .unwrap();
    has(
        &material_err(&config),
        "mapping.file.path",
        "line 1: destination \"nowhere\" is not declared",
    );
    std::fs::remove_file(dir.path().join("mappings.tsv")).unwrap();
    has(&material_err(&config), "mapping.file.path", "cannot read");
}

// ---- rule 12: the mapping file ---------------------------------------------------

fn mapping_config() -> Config {
    let text = format!(
        "{BASE}\n[destination.new]\nhost = \"new.example.com\"\n[destination.new.protocol.imap]\nport = 993\ntls = \"implicit\"\n\
         [destination.web]\nhost = \"web.example.com\"\n[destination.web.protocol.http]\nport = 443\ntls = \"implicit\"\n"
    )
    .replace("source = \"file\"", "source = \"file\"\nnormalize = \"lowercase\"");
    ok(&text)
}

#[test]
fn rule12_mapping_lines_are_checked_with_line_numbers() {
    let config = mapping_config();
    let text = "# comment\n\nalice@example.com new\nbob@example.com\nBob@Example.com new extra\ncarol@example.com   old   # moved\n";
    let issues = check_mapping_file(&config, text);
    let rendered: Vec<String> = issues.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        vec![
            "mapping.file.path: line 4: expected \"<identifier> <destination>\", found 1 fields",
            "mapping.file.path: line 5: expected \"<identifier> <destination>\", found 3 fields",
        ]
    );
    assert!(check_mapping_file(&config, "").is_empty());
}

#[test]
fn rule12_mapped_destination_must_be_declared() {
    let issues = check_mapping_file(&mapping_config(), "alice@example.com neww\n");
    has(
        &issues,
        "mapping.file.path",
        "line 1: destination \"neww\" is not declared",
    );
}

#[test]
fn rule12_identifiers_are_mapped_once_after_normalizing() {
    let issues = check_mapping_file(
        &mapping_config(),
        "alice@example.com new\nALICE@example.com old\n",
    );
    has(
        &issues,
        "mapping.file.path",
        "line 2: \"alice@example.com\" is already mapped on line 1",
    );
}

#[test]
fn rule12_mapped_destination_serves_every_listened_protocol() {
    let issues = check_mapping_file(&mapping_config(), "a@x web\nb@x web\n");
    assert_eq!(
        issues.len(),
        1,
        "reported once per destination: {issues:#?}"
    );
    has(
        &issues,
        "mapping.file.path",
        "line 1: destination \"web\" has no imap leg, but listener.imap serves imap",
    );
}

#[test]
fn mapping_file_parses_into_a_normalized_table() {
    let config = mapping_config();
    let text = "# who goes where\n\n  Alice@Example.COM\tnew  \n\t# indented comment\nbob@example.com old # moved back\n\nCAROL@x   new\n";
    let table = parse_mapping_file(&config, text).unwrap();
    let rows: Vec<(&str, &str)> = table.iter().collect();
    assert_eq!(
        rows,
        vec![
            ("alice@example.com", "new"),
            ("bob@example.com", "old"),
            ("carol@x", "new"),
        ]
    );
    assert_eq!(table.get("carol@x"), Some("new"));
    assert_eq!(table.get("CAROL@x"), None, "keys are stored normalized");

    // Without `normalize`, keys are kept as written.
    let config = ok(&format!(
        "{BASE}\n[destination.new]\nhost = \"new.example.com\"\n[destination.new.protocol.imap]\nport = 993\ntls = \"implicit\"\n"
    ));
    let table =
        parse_mapping_file(&config, "Alice@Example.COM new\nalice@example.com old\n").unwrap();
    assert_eq!(table.get("Alice@Example.COM"), Some("new"));
    assert_eq!(table.get("alice@example.com"), Some("old"));
}

#[test]
fn mapping_file_with_any_bad_line_yields_no_table() {
    let err = parse_mapping_file(&mapping_config(), "a@x new\nb@x nowhere\n").unwrap_err();
    has(&err, "mapping.file.path", "line 2: destination \"nowhere\"");
}

#[test]
fn mapping_file_too_large_to_ship_is_refused() {
    let mut text = String::new();
    for i in 0..200_000 {
        text.push_str(&format!(
            "user{i:06}@a-rather-long-domain.example.com new\n"
        ));
    }
    let err = parse_mapping_file(&mapping_config(), &text).unwrap_err();
    has(
        &err,
        "mapping.file.path",
        "use mapping.source = \"redis\" or \"sql\"",
    );
    // 100k ordinary rows fit.
    text.truncate(text.len() / 2);
    assert_eq!(
        parse_mapping_file(&mapping_config(), &text).unwrap().len(),
        100_000
    );
}

#[test]
fn material_carries_the_mapping_table_and_debug_prints_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let text = base_with_mapping(dir.path()).replace(
        "source = \"file\"",
        "source = \"file\"\nnormalize = \"lowercase\"",
    );
    std::fs::write(
        dir.path().join("mappings.tsv"),
        "# id dest\nAlice@Example.com old\n\nbob@example.com old\n",
    )
    .unwrap();
    let m = crate::material::read(&ok(&text)).unwrap();
    let table = m.mapping.as_ref().expect("mapping table");
    assert_eq!(table.len(), 2);
    assert_eq!(table.get("alice@example.com"), Some("old"));
    let debug = format!("{m:?}");
    assert!(debug.contains("MappingTable(2 rows)"), "{debug}");
    assert!(!debug.contains("alice"), "{debug}");

    // It survives the trip to a worker.
    let bytes = crate::codec::encode(&m).unwrap();
    let back: crate::material::Material = crate::codec::decode(&bytes).unwrap();
    assert_eq!(back, m);
}

//! Tests of the manual pages: the example config and the validator agree, key for key.

use super::*;

/// The example with every commented-out table and key switched on.
fn uncommented() -> String {
    let mut out = String::new();
    for line in EXAMPLE.lines() {
        let on = line
            .strip_prefix('#')
            .filter(|rest| header_line(rest).is_some() || key_line(rest).is_some());
        out.push_str(on.unwrap_or(line));
        out.push('\n');
    }
    out
}

fn documented(doc: &Doc) -> Vec<(String, Vec<String>)> {
    doc.groups
        .iter()
        .flat_map(|g| &g.tables)
        .map(|t| {
            let keys = t.keys.iter().flat_map(|k| k.names.clone()).collect();
            (t.name.clone(), keys)
        })
        .collect()
}

#[test]
fn generic_names() {
    assert_eq!(generic("listener.imaps"), "listener.<name>");
    assert_eq!(
        generic("destination.new.protocol.http"),
        "destination.<name>.protocol.<protocol>"
    );
    assert_eq!(generic("tls.certificate.main"), "tls.certificate.<name>");
    assert_eq!(generic("tls.protocols"), "tls.protocols");
    assert_eq!(generic("http.route[3].extract"), "http.route.extract");
}

#[test]
fn notes_and_strings() {
    assert_eq!(
        split_note(r#""a # b"   # note"#),
        (r#""a # b""#.to_owned(), Some("note".to_owned()))
    );
    assert_eq!(split_note("[]"), ("[]".to_owned(), None));
}

/// Every key and table the example documents, switched on, is one the validator
/// accepts (no unknown key, no syntax error).
#[test]
fn documented_keys_are_known() {
    let issues = match postern_config::parse(&uncommented()) {
        Ok(_) => Vec::new(),
        Err(issues) => issues,
    };
    let unknown: Vec<String> = issues
        .iter()
        .filter(|i| i.message.contains("unknown key") || i.message.contains("syntax"))
        .map(ToString::to_string)
        .collect();
    assert!(unknown.is_empty(), "{unknown:#?}");
}

/// Every key the validator knows is in the manual page: a key no getter knows is
/// inserted into each table, and the validator's "known keys here are ..." answer is
/// compared with the documented keys of that table.
#[test]
fn known_keys_are_documented() {
    const PROBE: &str = "zz_documentation_probe_key";
    let doc = parse_doc(EXAMPLE);
    let documented = documented(&doc);
    let mut root: toml::Table = uncommented().parse().unwrap();
    let mut paths = Vec::new();
    probe(&mut root, "", PROBE, &mut paths);
    let text = toml::to_string(&root).unwrap();
    let issues = postern_config::parse(&text).err().unwrap_or_default();
    let mut problems = Vec::new();
    for path in &paths {
        let at = if path.is_empty() {
            PROBE.to_owned()
        } else {
            format!("{path}.{PROBE}")
        };
        let Some(issue) = issues.iter().find(|i| i.path == at) else {
            problems.push(format!(
                "{path}: the validator did not report the probe key"
            ));
            continue;
        };
        let Some(known) = issue
            .message
            .strip_prefix("unknown key; known keys here are ")
        else {
            problems.push(format!("{path}: unexpected answer {:?}", issue.message));
            continue;
        };
        let table = generic(path);
        let keys = documented.iter().find(|(t, _)| *t == table).map(|(_, k)| k);
        for key in known.split(", ") {
            let sub = if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            };
            let as_key = keys.is_some_and(|k| k.iter().any(|n| n == key));
            let as_table = documented
                .iter()
                .any(|(t, _)| *t == generic(&sub) || t.starts_with(&format!("{}.", generic(&sub))));
            // Inline tables (`extract = { from = ... }`) are documented by the values
            // of their parent key.
            let in_value = keys.is_none() && {
                let (parent, last) = table.rsplit_once('.').unwrap_or(("", &table));
                doc.groups
                    .iter()
                    .flat_map(|g| &g.tables)
                    .filter(|t| t.name == parent)
                    .flat_map(|t| &t.keys)
                    .filter(|k| k.names.iter().any(|n| n == last))
                    .flat_map(|k| &k.forms)
                    .any(|(_, v, _)| v.contains(&format!("{key} =")))
            };
            if !(as_key || as_table || in_value) {
                problems.push(format!("{sub}: known to the validator, not documented"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

fn probe(table: &mut toml::Table, path: &str, key: &str, paths: &mut Vec<String>) {
    for (name, value) in table.iter_mut() {
        let sub = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        match value {
            toml::Value::Table(t) => probe(t, &sub, key, paths),
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let toml::Value::Table(t) = item {
                        probe(t, &format!("{sub}[{i}]"), key, paths);
                    }
                }
            }
            _ => {}
        }
    }
    // Tables of named tables (`[listener]` holds `[listener.<name>]`) take no keys.
    if !NAMED.iter().any(|(t, _)| *t == generic(path)) {
        table.insert(key.to_owned(), toml::Value::Integer(1));
        paths.push(path.to_owned());
    }
}

/// Every key has a description, and the pages render.
#[test]
fn every_key_is_described() {
    let doc = parse_doc(EXAMPLE);
    let bare: Vec<String> = doc
        .groups
        .iter()
        .flat_map(|g| &g.tables)
        .flat_map(|t| {
            t.keys
                .iter()
                .filter(|k| k.doc.iter().all(|d| d.trim().is_empty()))
                .map(move |k| format!("{}.{}", t.name, k.names.join("/")))
        })
        .collect();
    assert!(bare.is_empty(), "keys without a description: {bare:#?}");
    let page = String::from_utf8(postern_toml_5()).unwrap();
    assert!(page.contains("listener.<name>"));
    let page = String::from_utf8(postern_8().unwrap()).unwrap();
    assert!(page.contains("check\\-config"), "{page}");
}

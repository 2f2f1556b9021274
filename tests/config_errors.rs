//! `postern check-config` and `postern run` on bad configuration: every problem with
//! its key path, exit 78, nothing started. The shipped examples validate.

mod support;

use std::process::Command;

fn postern(args: &[&str]) -> std::process::Output {
    Command::new(support::postern_bin())
        .args(args)
        .output()
        .expect("run postern")
}

#[test]
fn check_config_lists_every_problem_and_exits_78() {
    let dir = support::shared_tempdir();
    let path = dir.path().join("bad.toml");
    support::write_file(
        &path,
        "[server]\nworkerz = 2\n\n[listener.imap]\nprotocol = \"imap\"\nbind = []\ntls = \"startls\"\n\n\
         [routing]\ndefault_destination = \"nowhere\"\n\n[mapping]\nsource = \"file\"\n",
    );
    let out = postern(&["check-config", path.to_str().expect("path")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    for needle in [
        "server.workerz: unknown key; did you mean workers?",
        "listener.imap.tls: \"startls\" is not one of implicit, starttls, plain",
        "listener.imap.bind",
        "routing.default_destination",
        "mapping.file",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!err.contains("panicked"));
}

#[test]
fn run_refuses_a_bad_config_with_78_before_binding() {
    let dir = support::shared_tempdir();
    let path = dir.path().join("bad.toml");
    support::write_file(&path, "[server]\nshutdown_grace = \"ten\"\n");
    let out = postern(&["run", "--config", path.to_str().expect("path")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("server.shutdown_grace"), "{err}");
}

#[test]
fn the_shipped_examples_validate() {
    let root = env!("CARGO_MANIFEST_DIR");
    for example in [
        "packaging/postern.minimal.toml",
        "packaging/postern.example.toml",
    ] {
        let path = format!("{root}/{example}");
        let out = postern(&["check-config", &path]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The examples point at /etc/postern/mappings.tsv, which only the package
        // installs; every other problem is a real failure.
        let only_missing_mapping = text
            .lines()
            .filter(|l| l.contains("problem") || l.contains(": "))
            .all(|l| {
                l.contains("mapping") || l.contains("problem found") || l.contains("problems found")
            });
        assert!(
            out.status.success() || only_missing_mapping,
            "{example}:\n{text}"
        );
    }
}

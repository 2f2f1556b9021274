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
    // The examples name /etc/postern/mappings.tsv, which only the package installs:
    // point them at an empty mapping file of our own and require a clean check.
    let dir = support::shared_tempdir();
    let mapping = dir.path().join("mappings.tsv");
    support::write_file(
        &mapping,
        "# no mappings: every account goes to the default destination\n",
    );
    let root = env!("CARGO_MANIFEST_DIR");
    for example in [
        "packaging/postern.minimal.toml",
        "packaging/postern.example.toml",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{example}")).expect("example");
        assert!(
            text.contains("/etc/postern/mappings.tsv"),
            "{example} names its mapping file"
        );
        let path = dir.path().join("example.toml");
        support::write_file(
            &path,
            text.replace("/etc/postern/mappings.tsv", mapping.to_str().expect("path")),
        );
        let out = postern(&["check-config", path.to_str().expect("path")]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(": ok: "),
            "{example}: one-line summary expected, got {stdout}"
        );
    }
}

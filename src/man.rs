//! Manual pages, generated so that they cannot drift from the code: `postern(8)` from the
//! clap definition in `cli.rs` (with `clap_mangen`), `postern.toml(5)` from the complete,
//! commented example configuration `packaging/postern.example.toml`, which is what the
//! packages install as `/etc/postern/postern.toml`.
//!
//! The config crate describes its keys as code (getters in `validate/`), not as data, so
//! the key reference comes from the example's comments. The tests below tie the two
//! together: every key the example documents is accepted by the validator, and every key
//! the validator knows (asked table by table through its unknown-key message) is
//! documented. `postern man --out DIR` (hidden) writes both pages.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use clap::CommandFactory;
use roff::{bold, italic, roman, Roff};

use crate::cli::Cli;

/// The example configuration, installed as `/etc/postern/postern.toml`.
pub const EXAMPLE: &str = include_str!("../packaging/postern.example.toml");
/// The smallest useful configuration, shown in EXAMPLES.
const MINIMAL: &str = include_str!("../packaging/postern.minimal.toml");

/// `postern man --out DIR`: writes `postern.8` and `postern.toml.5` into `dir`.
pub fn write_pages(dir: &Path) -> i32 {
    let result = (|| -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("postern.8"), postern_8()?)?;
        std::fs::write(dir.join("postern.toml.5"), postern_toml_5())?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            println!("wrote {0}/postern.8 and {0}/postern.toml.5", dir.display());
            0
        }
        Err(e) => {
            eprintln!("cannot write the manual pages to {}: {e}", dir.display());
            1
        }
    }
}

const SOURCE: &str = concat!("postern ", env!("CARGO_PKG_VERSION"));

/// `postern(8)`: NAME, SYNOPSIS, DESCRIPTION and OPTIONS from clap_mangen, then one
/// subsection per visible subcommand built from the same clap definition, then the
/// sections clap knows nothing about.
pub fn postern_8() -> io::Result<Vec<u8>> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .title("POSTERN")
        .source(SOURCE)
        .manual("System Administration");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;

    let mut roff = Roff::new();
    roff.control("SH", ["DESCRIPTION"]);
    roff.text([roman(
        "postern is a privilege-separated mail proxy. The supervisor, started as root, \
         binds the listening sockets (or takes them from systemd socket activation), reads \
         certificates and keys, opens the control socket, then drops to the service \
         account (server.user, default postern) with no capability left. One pool of \
         sandboxed worker processes per listener runs the protocol dialogues; a worker \
         that crashes is restarted on its own.",
    )]);
    roff.control("PP", []);
    roff.text([roman(
        "The configuration is described in postern.toml(5). Under systemd, postern.service \
         runs the supervisor as root (self-bind); postern.socket with \
         postern-activated.service runs it unprivileged from the start (socket \
         activation).",
    )]);
    roff.to_writer(&mut out)?;
    man.render_options_section(&mut out)?;

    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    let mut built = cmd;
    built.build();
    for sub in visible(&built) {
        render_command(&mut roff, sub, "postern");
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        ("0", "success; for status, every pool is running"),
        (
            "3",
            "status: a pool is starting, throttled, failed or draining",
        ),
        ("4", "status and reload: the supervisor cannot be reached"),
        (
            "71",
            "run: a listener cannot be bound, or the privilege drop failed (EX_OSERR)",
        ),
        (
            "78",
            "run and check-config: the configuration is invalid; every problem is listed \
             with its key path (EX_CONFIG)",
        ),
    ] {
        roff.control("TP", []);
        roff.text([bold(code)]);
        roff.text([roman(meaning)]);
    }
    roff.control("SH", ["SIGNALS"]);
    for (signal, meaning) in [
        (
            "SIGTERM",
            "stop accepting, let open sessions finish for server.shutdown_grace, then exit 0",
        ),
        (
            "SIGHUP",
            "reload: validate the file again; when it is valid, roll a new generation of \
             workers onto the same sockets and drain the old one, else keep running the \
             old configuration and log why",
        ),
    ] {
        roff.control("TP", []);
        roff.text([bold(signal)]);
        roff.text([roman(meaning)]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (var, meaning) in [
        (
            "POSTERN_LOG",
            "log filter (error, warn, info, debug, trace or a tracing directive such as \
             info,postern=debug); overrides server.log_level",
        ),
        ("POSTERN_LOG_FORMAT", "json: log JSON lines instead of text"),
        (
            "POSTERN_ADMIN_TOKEN",
            "bearer token of the admin API; wins over admin.bearer_token_file and \
             admin.bearer_token",
        ),
        (
            "LISTEN_FDS, LISTEN_FDNAMES",
            "set by systemd socket activation; each socket is matched to the listener \
             whose name equals its FileDescriptorName=",
        ),
        (
            "NOTIFY_SOCKET, WATCHDOG_USEC",
            "set by systemd for Type=notify: postern reports READY=1 once every pool is \
             up, a STATUS= line with the number of ready workers, and answers the watchdog",
        ),
    ] {
        roff.control("TP", []);
        roff.text([bold(var)]);
        roff.text([roman(meaning)]);
    }
    roff.control("SH", ["FILES"]);
    for (file, meaning) in [
        (
            "/etc/postern/postern.toml",
            "the configuration, see postern.toml(5)",
        ),
        (
            "/etc/postern/mappings.tsv",
            "account to destination mappings of the file mapping store",
        ),
        (
            "/run/postern/control.sock",
            "control socket of status and reload (server.control_socket)",
        ),
        (
            "/usr/lib/systemd/system/postern.service",
            "self-bind unit: root supervisor that drops privileges",
        ),
        (
            "/usr/lib/systemd/system/postern.socket, postern-activated.service",
            "socket activation: the supervisor never runs as root",
        ),
    ] {
        roff.control("TP", []);
        roff.text([italic(file)]);
        roff.text([roman(meaning)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "postern.toml(5), systemd.exec(5), systemd.socket(5), systemd-analyze(1)",
    )]);
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// Subcommands worth a section: not hidden, not clap's own `help`.
fn visible(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// One `.SS` per visible subcommand (recursively): usage line, long help, arguments.
fn render_command(roff: &mut Roff, cmd: &clap::Command, parent: &str) {
    let name = format!("{parent} {}", cmd.get_name());
    if cmd.has_subcommands() {
        for sub in visible(cmd) {
            render_command(roff, sub, &name);
        }
        return;
    }
    let mut usage = name.clone();
    let args: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
        .collect();
    for arg in &args {
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
        let text = match (arg.get_long(), arg.is_positional()) {
            (_, true) => value,
            (Some(long), false) if arg.get_action().takes_values() => {
                format!("--{long} {value}")
            }
            (Some(long), false) => format!("--{long}"),
            (None, false) => continue,
        };
        if arg.is_required_set() {
            let _ = write!(usage, " {text}");
        } else {
            let _ = write!(usage, " [{text}]");
        }
    }
    roff.control("SS", [usage.as_str()]);
    if let Some(about) = cmd.get_long_about().or_else(|| cmd.get_about()) {
        roff.text([roman(about.to_string())]);
    }
    for arg in args {
        roff.control("TP", []);
        let mut head = Vec::new();
        if let Some(short) = arg.get_short() {
            head.push(bold(format!("-{short}")));
            head.push(roman(", "));
        }
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
        match arg.get_long() {
            Some(long) if !arg.is_positional() => {
                head.push(bold(format!("--{long}")));
                if arg.get_action().takes_values() {
                    head.push(roman(" "));
                    head.push(italic(value));
                }
            }
            _ => head.push(italic(value)),
        }
        roff.text(head);
        let mut help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() && arg.get_action().takes_values() {
            let _ = write!(help, " (default: {})", defaults.join(", "));
        }
        roff.text([roman(help)]);
    }
}

// ---- postern.toml(5) --------------------------------------------------------------------

/// The example configuration, read back as documentation.
#[derive(Debug, Default)]
struct Doc {
    groups: Vec<Group>,
}

/// A `# ---- Title ----` part of the example.
#[derive(Debug, Default)]
struct Group {
    title: String,
    tables: Vec<Table>,
}

#[derive(Debug, Default)]
struct Table {
    /// Generic name: `listener.<name>`, `http.route` (array of tables).
    name: String,
    array: bool,
    /// Comment lines that introduce the table.
    intro: Vec<String>,
    keys: Vec<Key>,
    /// Comment paragraphs after the keys.
    notes: Vec<String>,
}

#[derive(Debug, Default)]
struct Key {
    /// One or more names sharing one description (`user`, `group`).
    names: Vec<String>,
    /// `(name, value, note)`: values as shown in the example, with trailing comments.
    forms: Vec<(String, String, Option<String>)>,
    doc: Vec<String>,
    /// Commented out in the example: the value is an example, not a default.
    unset: bool,
    /// No comment of its own, on the line right after another key.
    joins_previous: bool,
}

/// Tables whose next path segment is a name chosen by the operator.
const NAMED: [(&str, &str); 4] = [
    ("listener", "<name>"),
    ("destination", "<name>"),
    ("destination.<name>.protocol", "<protocol>"),
    ("tls.certificate", "<name>"),
];

/// `listener.imaps` -> `listener.<name>`; `http.route[2]` -> `http.route`.
fn generic(path: &str) -> String {
    let mut out = String::new();
    let mut placeholder: Option<&str> = None;
    for segment in path.split('.') {
        let segment = segment.split('[').next().unwrap_or(segment);
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(placeholder.take().unwrap_or(segment));
        placeholder = NAMED.iter().find(|(t, _)| *t == out).map(|(_, p)| *p);
    }
    out
}

/// Splits `value   # note` at the first `#` outside a string.
fn split_note(text: &str) -> (String, Option<String>) {
    let mut in_str: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match in_str {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    in_str = None;
                }
            }
            None if c == '"' || c == '\'' => in_str = Some(c),
            None if c == '#' => {
                let note = text[i + 1..].trim();
                return (
                    text[..i].trim_end().to_owned(),
                    (!note.is_empty()).then(|| note.to_owned()),
                );
            }
            None => {}
        }
    }
    (text.trim_end().to_owned(), None)
}

fn bracket_depth(text: &str) -> i32 {
    let (value, _) = split_note(text);
    let mut in_str = false;
    let mut depth = 0;
    for c in value.chars() {
        match c {
            '"' => in_str = !in_str,
            '[' | '{' if !in_str => depth += 1,
            ']' | '}' if !in_str => depth -= 1,
            _ => {}
        }
    }
    depth
}

/// A line that is a key, active or commented out: `(commented, key, rest)`.
fn key_line(line: &str) -> Option<(bool, &str, &str)> {
    let (commented, body) = match line.strip_prefix('#') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let (key, rest) = body.split_once(" = ")?;
    let ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some((commented, key, rest))
}

/// A line that is a table header, active or commented out: `(name, array)`.
fn header_line(line: &str) -> Option<(String, bool)> {
    let body = line.strip_prefix('#').unwrap_or(line).trim_end();
    let (inner, array) = if let Some(b) = body.strip_prefix("[[") {
        (b.strip_suffix("]]")?, true)
    } else {
        (body.strip_prefix('[')?.strip_suffix(']')?, false)
    };
    let ok = !inner.is_empty()
        && inner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    ok.then(|| (inner.to_owned(), array))
}

fn group_line(line: &str) -> Option<String> {
    let title = line
        .strip_prefix("# ----")?
        .trim()
        .trim_end_matches('-')
        .trim();
    (!title.is_empty()).then(|| title.to_owned())
}

fn parse_doc(text: &str) -> Doc {
    let mut doc = Doc::default();
    // (group index, table index) of the table being read.
    let mut current: Option<(usize, usize)> = None;
    let mut pending: Vec<String> = Vec::new();
    // The previous line was a key of the current table (for keys that share a comment).
    let mut after_key = false;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim_end();
        if let Some(title) = group_line(line) {
            doc.groups.push(Group {
                title,
                tables: Vec::new(),
            });
            pending.clear();
            after_key = false;
        } else if let Some((name, array)) = header_line(line) {
            let name = generic(&name);
            let found = doc.groups.iter().enumerate().find_map(|(g, group)| {
                group
                    .tables
                    .iter()
                    .position(|t| t.name == name)
                    .map(|t| (g, t))
            });
            current = Some(match found {
                // Seen before: this is an example; its comments describe the example.
                Some(at) => at,
                None => {
                    if doc.groups.is_empty() {
                        doc.groups.push(Group::default());
                    }
                    let g = doc.groups.len() - 1;
                    doc.groups[g].tables.push(Table {
                        name,
                        array,
                        intro: std::mem::take(&mut pending),
                        ..Table::default()
                    });
                    (g, doc.groups[g].tables.len() - 1)
                }
            });
            pending.clear();
            after_key = false;
        } else if let Some((commented, key, rest)) = key_line(line) {
            let mut value = rest.to_owned();
            let mut depth = bracket_depth(rest);
            while depth > 0 {
                let Some(next) = lines.next() else { break };
                let next = next.trim();
                let next = if commented {
                    next.strip_prefix('#').unwrap_or(next).trim()
                } else {
                    next
                };
                value.push(' ');
                value.push_str(next);
                depth += bracket_depth(next);
            }
            let (value, note) = split_note(&value);
            let Some((g, t)) = current else {
                pending.clear();
                continue;
            };
            let table = &mut doc.groups[g].tables[t];
            let doc_lines = std::mem::take(&mut pending);
            if let Some(existing) = table
                .keys
                .iter_mut()
                .find(|k| k.names.iter().any(|n| n == key))
            {
                // A repeated key (an example table): keep other forms worth showing.
                if note.is_some() || value.starts_with('{') {
                    existing.forms.push((key.to_owned(), value, note));
                }
            } else {
                table.keys.push(Key {
                    names: vec![key.to_owned()],
                    joins_previous: doc_lines.is_empty() && note.is_none() && after_key,
                    forms: vec![(key.to_owned(), value, note)],
                    doc: doc_lines,
                    unset: commented,
                });
            }
            after_key = true;
        } else if line == "#" || line.is_empty() {
            // A paragraph ends: comments nobody claimed are notes of the current table.
            if !pending.is_empty() {
                if let Some((g, t)) = current {
                    let note = pending.join(" ");
                    doc.groups[g].tables[t].notes.push(note);
                }
                pending.clear();
            }
            after_key = false;
        } else if let Some(comment) = line.strip_prefix('#') {
            pending.push(comment.trim().to_owned());
            after_key = false;
        }
    }
    // Keys without a comment of their own take, in this order: the same key's description
    // in a sibling table (`capabilities.pop3.sasl` as `capabilities.imap.sasl`); the
    // entry of the key right above them (`user` and `group`); their trailing comment.
    let described: Vec<(String, String)> = doc
        .groups
        .iter()
        .flat_map(|g| &g.tables)
        .flat_map(|t| {
            t.keys
                .iter()
                .filter(|k| !k.doc.is_empty())
                .flat_map(move |k| k.names.iter().map(move |n| (t.name.clone(), n.clone())))
        })
        .collect();
    for table in doc.groups.iter_mut().flat_map(|g| &mut g.tables) {
        let parent = table
            .name
            .rsplit_once('.')
            .map_or("", |(p, _)| p)
            .to_owned();
        let mut keys: Vec<Key> = Vec::new();
        for mut key in std::mem::take(&mut table.keys) {
            if key.doc.is_empty() {
                let sibling = described.iter().find(|(t, n)| {
                    *t != table.name
                        && t.rsplit_once('.').map_or("", |(p, _)| p) == parent
                        && key.names.contains(n)
                });
                if let Some((t, _)) = sibling {
                    key.doc.push(format!("As in [{t}]."));
                } else if let Some(last) = keys.last_mut().filter(|_| key.joins_previous) {
                    last.names.append(&mut key.names);
                    last.forms.append(&mut key.forms);
                    continue;
                } else if key.forms.len() == 1 {
                    if let Some(note) = key.forms[0].2.take() {
                        key.doc.push(note);
                    }
                }
            }
            keys.push(key);
        }
        table.keys = keys;
    }
    doc
}

/// `postern.toml(5)`.
pub fn postern_toml_5() -> Vec<u8> {
    let doc = parse_doc(EXAMPLE);
    let mut roff = Roff::new();
    roff.control(
        "TH",
        [
            "POSTERN.TOML",
            "5",
            "",
            SOURCE,
            "File Formats and Configuration",
        ],
    );
    roff.control("SH", ["NAME"]);
    roff.text([roman(
        "postern.toml - configuration file of the postern mail proxy",
    )]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([italic("/etc/postern/postern.toml")]);
    roff.control("SH", ["DESCRIPTION"]);
    roff.text([roman(
        "postern(8) reads one TOML file. Its tables are listed below with every key. A key \
         shown with a value (key = value) has that value as its default, except where it \
         is marked required: those values are the ones the packaged file ships with. A key \
         marked (example) is not set in the packaged file and the value shown is only an \
         example; its description says what applies when it is not set.",
    )]);
    roff.control("PP", []);
    roff.text([roman(
        "Durations are a whole number and a unit: ms, s, m, h or d (\"30s\", \"5m\"). \
         Sizes are a number of bytes or a string such as \"512MiB\". Unknown keys are \
         errors. postern check-config FILE validates a file and everything it points at \
         (certificates, keys, the mapping file) and lists every problem with its key \
         path; it exits 0 when the file is valid and 78 otherwise. postern run does the \
         same checks before it starts, and postern reload (or SIGHUP) before it applies a \
         changed file.",
    )]);
    roff.control("PP", []);
    roff.text([roman(
        "Names in angle brackets, as in [listener.<name>], are chosen by the operator: \
         each [listener.<name>] is one listener, each [destination.<name>] one backend.",
    )]);
    for group in &doc.groups {
        let title = if group.title.is_empty() {
            "GENERAL".to_owned()
        } else {
            group.title.to_uppercase()
        };
        roff.control("SH", [title.as_str()]);
        for table in &group.tables {
            let header = if table.array {
                format!("[[{}]]", table.name)
            } else {
                format!("[{}]", table.name)
            };
            roff.control("SS", [header.as_str()]);
            if !table.intro.is_empty() {
                roff.text([roman(table.intro.join(" "))]);
            }
            for key in &table.keys {
                roff.control("TP", []);
                for (i, (name, value, note)) in key.forms.iter().enumerate() {
                    if i > 0 {
                        roff.control("TQ", []);
                    }
                    let mut head = vec![bold(name.clone()), roman(" = "), roman(value.clone())];
                    if key.unset && i == 0 {
                        head.push(italic(" (example)"));
                    }
                    if let Some(note) = note {
                        head.push(roman(format!(": {note}")));
                    }
                    roff.text(head);
                }
                roff.text([roman(key.doc.join(" "))]);
            }
            for note in &table.notes {
                roff.control("PP", []);
                roff.text([roman(note.clone())]);
            }
        }
    }
    roff.control("SH", ["EXAMPLES"]);
    roff.text([roman(
        "The smallest useful file: an LMTP pass-through listener in front of a local \
         Dovecot.",
    )]);
    roff.control("PP", []);
    roff.control("nf", []);
    roff.control("RS", ["4"]);
    for line in MINIMAL.lines() {
        roff.text([roman(line)]);
    }
    roff.control("RE", []);
    roff.control("fi", []);
    roff.control("SH", ["FILES"]);
    roff.control("TP", []);
    roff.text([italic("/etc/postern/postern.toml")]);
    roff.text([roman(
        "the configuration (root:postern, mode 0640: the supervisor re-reads it as the \
         service account on reload)",
    )]);
    roff.control("TP", []);
    roff.text([italic("/etc/postern/mappings.tsv")]);
    roff.text([roman(
        "mapping.file.path as shipped: one \"<identifier> <destination>\" per line",
    )]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman("postern(8)")]);
    roff.to_roff().into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "man_tests.rs"]
mod tests;

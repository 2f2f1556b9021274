//! Validation: TOML text to the [`Config`] model, collecting every problem.
//!
//! The text is parsed into a plain [`toml::Table`], then walked table by table with the
//! `schema` helper, which records type errors, bad enum values, missing and
//! unknown keys without stopping. Each table becomes a *draft* (the model with `Option`s
//! where a required value may be missing), so the cross-table rules of
//! `reference/stalwart-proxy.md` §2.11 and postern's own decisions can still run on
//! whatever was valid, without cascading errors from what was not. Only when no issue
//! was found are the drafts turned into the model.
//!
//! [`crate::parse`] reads no file (it only looks at the `POSTERN_ADMIN_TOKEN`
//! environment variable). Files named by the config are read by [`crate::material::read`], and
//! the mapping file is checked by [`check_mapping_file`].

mod files;
mod net;
mod routes;
mod rules;
mod sections;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_files;
#[cfg(test)]
mod tests_model;

use std::collections::BTreeMap;

use crate::material::Material;
use crate::model::{Config, Http, Routing};
use crate::schema::Ctx;
use crate::Issue;

pub use files::{check_mapping_file, parse_mapping_file};

/// Environment variable that supplies the admin bearer token; it wins over
/// `admin.bearer_token_file` and `admin.bearer_token`.
pub const ADMIN_TOKEN_ENV: &str = "POSTERN_ADMIN_TOKEN";

/// Service-account name used when `server.user` or `server.group` is not set.
pub const DEFAULT_ACCOUNT: &str = "postern";

/// Control socket path used when `server.control_socket` is not set.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/postern/control.sock";

pub(crate) fn validate_text(text: &str) -> Result<Config, Vec<Issue>> {
    let env_token = std::env::var(ADMIN_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty());
    validate_with_env(text, env_token)
}

pub(crate) fn read_material(config: &Config) -> Result<Material, Vec<Issue>> {
    files::read_material(config)
}

/// [`validate_text`] with the admin token from the environment passed in, so tests need
/// not touch the process environment.
pub(crate) fn validate_with_env(
    text: &str,
    env_token: Option<String>,
) -> Result<Config, Vec<Issue>> {
    let table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(e) => return Err(vec![syntax_issue(text, &e)]),
    };
    let ctx = Ctx::default();
    let root = ctx.obj("", &table);

    let server = sections::server(&root.table_or_absent("server"));
    let sandbox = sections::sandbox(&root.table_or_absent("sandbox"));
    let tls = sections::tls(&root.table_or_absent("tls"));
    let listeners = net::listeners(&root);
    let destinations = net::destinations(&root);
    let routing = match root.table("routing") {
        Some(o) => routes::routing(&o),
        None => {
            if !root.has("routing") {
                ctx.push(
                    "routing",
                    "required table is missing; add [routing] with \
                     default_destination = \"<destination name>\"",
                );
            }
            None
        }
    };
    let mapping = match root.table("mapping") {
        Some(o) => routes::mapping(&o),
        None => {
            if !root.has("mapping") {
                ctx.push(
                    "mapping",
                    "required table is missing; add [mapping] with source = \"file\" \
                     and a [mapping.file] table with path = \"/etc/postern/mappings.tsv\"",
                );
            }
            None
        }
    };
    let capabilities = sections::capabilities(&root.table_or_absent("capabilities"));
    let oauth = sections::oauth(&root.table_or_absent("oauth"));
    let (http, http_routes) = routes::http(&root.table_or_absent("http"));
    let admin = root.table("admin").map(|o| sections::admin(&o, env_token));
    root.finish();

    // Certificate tables with mistakes of their own still count as configured, so a TLS
    // listener is not also reported for lacking one.
    let certificates_declared = table
        .get("tls")
        .and_then(|t| t.get("certificate"))
        .and_then(toml::Value::as_table)
        .is_some_and(|t| !t.is_empty());
    let draft = Draft {
        certificates_declared,
        listeners: &listeners,
        destinations: &destinations,
        routing: routing.as_ref(),
        routes: &http_routes,
        admin: admin.as_ref(),
    };
    rules::check(&ctx, &draft);

    if ctx.count() > 0 {
        return Err(ctx.into_issues());
    }
    let built = (|| {
        Some(Config {
            server,
            sandbox,
            tls,
            listeners: listeners
                .into_iter()
                .map(net::DraftListener::build)
                .collect::<Option<_>>()?,
            destinations: destinations
                .into_iter()
                .map(|(name, d)| Some((name, d.build()?)))
                .collect::<Option<BTreeMap<_, _>>>()?,
            routing: routing?,
            mapping: mapping?,
            capabilities,
            oauth,
            http: Http {
                routes: http_routes
                    .into_iter()
                    .map(routes::DraftRoute::build)
                    .collect::<Option<_>>()?,
                ..http
            },
            admin: match admin {
                Some(a) => Some(a.build()?),
                None => None,
            },
        })
    })();
    // Every draft field that can be empty is reported when it is, so this is a bug.
    built.ok_or_else(|| {
        vec![Issue::new(
            "",
            "internal error: a value was missing after validation passed",
        )]
    })
}

/// What the cross-table rules look at.
pub(crate) struct Draft<'a> {
    /// Whether any `[tls.certificate.<name>]` table is present, valid or not.
    pub(crate) certificates_declared: bool,
    pub(crate) listeners: &'a [net::DraftListener],
    pub(crate) destinations: &'a BTreeMap<String, net::DraftDestination>,
    pub(crate) routing: Option<&'a Routing>,
    pub(crate) routes: &'a [routes::DraftRoute],
    pub(crate) admin: Option<&'a sections::DraftAdmin>,
}

/// A TOML syntax error, with its line and column.
fn syntax_issue(text: &str, err: &toml::de::Error) -> Issue {
    let message = err.message().trim().to_owned();
    match err.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            Issue::new(
                "",
                format!("TOML syntax error at line {line}, column {column}: {message}"),
            )
        }
        None => Issue::new("", format!("TOML syntax error: {message}")),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Names of listeners, destinations and certificates: they appear in worker ids, logs
/// and the whitespace-separated mapping file.
pub(crate) fn check_name(ctx: &Ctx, path: &str, kind: &str, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        ctx.push(
            path,
            format!("{kind} name {name:?} is not allowed; use 1 to 64 letters, digits, '-' or '_'"),
        );
    }
}

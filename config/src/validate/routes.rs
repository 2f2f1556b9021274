//! Where connections go: `[routing]`, `[mapping]` (with `[mapping.file|redis|sql]`) and
//! `[http]` with its `[[http.route]]` rules. References to destinations are checked
//! later, in `rules`, once every destination is known.

use std::path::PathBuf;
use std::time::Duration;

use crate::model::{Extract, Http, HttpRoute, Mapping, MappingSource, Normalize, Routing};
use crate::schema::Obj;

use super::sections::path_req;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `[routing]`; `None` when `default_destination` is missing.
pub(crate) fn routing(o: &Obj<'_>) -> Option<Routing> {
    let default = o.str_req(
        "default_destination",
        "default_destination = \"<destination name>\"",
    );
    let passthrough = o.str("smtp_passthrough_destination");
    let separators = match o.str_list("master_user_separators", false) {
        None => vec!["%".to_owned()],
        // Empty separators would match everywhere; they are dropped, as documented.
        Some(list) => list
            .into_iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(_, s)| s.to_owned())
            .collect(),
    };
    o.finish();
    Some(Routing {
        default_destination: default?.to_owned(),
        smtp_passthrough_destination: passthrough.map(str::to_owned),
        master_user_separators: separators,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum SourceKind {
    File,
    Redis,
    Sql,
}

/// `[mapping]`; `None` when its source is missing or unusable.
pub(crate) fn mapping(o: &Obj<'_>) -> Option<Mapping> {
    let kind = o.choice_req(
        "source",
        &[
            ("file", SourceKind::File),
            ("redis", SourceKind::Redis),
            ("sql", SourceKind::Sql),
        ],
    );
    let normalize = o
        .choice(
            "normalize",
            &[
                ("none", Normalize::None),
                ("lowercase", Normalize::Lowercase),
            ],
        )
        .unwrap_or(Normalize::None);
    let positive_ttl = o.duration("positive_ttl", secs(600));
    let negative_ttl = o.duration("negative_ttl", secs(30));
    let cache_max_entries = o
        .int("cache_max_entries", 0, i64::MAX)
        .map_or(1_000_000, |n| n as u64);
    let lookup_timeout = o.duration_nonzero("lookup_timeout", secs(5));

    // Every store table present is checked, even one the source does not select.
    let file = o.table("file").map(|t| {
        let path = path_req(&t, "path", "path = \"/etc/postern/mappings.tsv\"");
        t.finish();
        path.map(|path| MappingSource::File { path })
    });
    let redis = o.table("redis").map(|t| {
        let url = t.str_req("url", "url = \"redis://127.0.0.1:6379\"");
        if let Some(url) = url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                t.push(
                    "url",
                    format!("{url:?} is not a redis URL; it must start with redis:// or rediss://"),
                );
            }
        }
        let key_prefix = t.str("key_prefix").unwrap_or("route:").to_owned();
        let pool_size = t.u32_min("pool_size", 16, 1);
        t.finish();
        url.map(|url| MappingSource::Redis {
            url: url.to_owned(),
            key_prefix,
            pool_size,
        })
    });
    let sql = o.table("sql").map(|t| {
        let url = t.str_req("url", "url = \"postgres://postern@localhost/mail\"");
        if let Some(url) = url {
            let schemes = ["postgres://", "postgresql://", "mysql://", "sqlite://"];
            if !schemes.iter().any(|s| url.starts_with(s)) {
                t.push(
                    "url",
                    format!(
                        "{url:?} is not a supported SQL URL; it must start \
                         with postgres://, mysql:// or sqlite://"
                    ),
                );
            }
        }
        let query = t.str_req(
            "query",
            "query = \"SELECT destination FROM routes WHERE \
             identifier = $1\"",
        );
        if let Some(q) = query {
            if !(q.contains("$1") || q.contains('?')) {
                t.push(
                    "query",
                    "does not bind the identifier; use $1 (PostgreSQL, SQLite) \
                     or ? (MySQL, SQLite)",
                );
            }
        }
        let pool_size = t.u32_min("pool_size", 16, 1);
        let upsert_query = t.str("upsert_query").map(str::to_owned);
        let delete_query = t.str("delete_query").map(str::to_owned);
        t.finish();
        Some(MappingSource::Sql {
            url: url?.to_owned(),
            query: query?.to_owned(),
            pool_size,
            upsert_query,
            delete_query,
        })
    });
    o.finish();

    let kind = kind?;
    let (chosen, name, example) = match kind {
        SourceKind::File => (file, "file", "path = \"/etc/postern/mappings.tsv\""),
        SourceKind::Redis => (redis, "redis", "url = \"redis://127.0.0.1:6379\""),
        SourceKind::Sql => (sql, "sql", "url and query"),
    };
    let source = match chosen {
        Some(source) => source?,
        None => {
            if !o.has(name) {
                o.push(
                    name,
                    format!(
                        "mapping.source is {name:?} but [mapping.{name}] is missing; \
                         add it with {example}"
                    ),
                );
            }
            return None;
        }
    };
    Some(Mapping {
        source,
        normalize,
        positive_ttl,
        negative_ttl,
        cache_max_entries,
        lookup_timeout,
    })
}

/// One `[[http.route]]`, before destinations are checked.
#[derive(Debug)]
pub(crate) struct DraftRoute {
    pub(crate) path: String,
    pub(crate) glob: Option<String>,
    pub(crate) destination: Option<String>,
    pub(crate) extract: Option<Extract>,
    pub(crate) fallback: Option<String>,
}

impl DraftRoute {
    pub(crate) fn build(self) -> Option<HttpRoute> {
        Some(HttpRoute {
            glob: self.glob?,
            destination: self.destination,
            extract: self.extract,
            fallback: self.fallback,
        })
    }
}

/// `[http]`; the routes come back as drafts, the rest as the model (with no routes).
pub(crate) fn http(o: &Obj<'_>) -> (Http, Vec<DraftRoute>) {
    let body_extract_cap = o.bytes("body_extract_cap").unwrap_or(65_536);
    let max_head_size = o.bytes("max_head_size").unwrap_or(65_536);
    if max_head_size < 1024 {
        o.push(
            "max_head_size",
            format!("{max_head_size} bytes is too small for any real request; use at least 1024"),
        );
    }
    let http = Http {
        body_extract_cap,
        max_head_size,
        relay_idle: o.duration_nonzero("relay_idle", secs(60)),
        keepalive_timeout: o.duration("keepalive_timeout", secs(75)),
        max_keepalive_requests: o.u32("max_keepalive_requests", 1000),
        routes: Vec::new(),
    };
    let routes = o
        .table_array("route")
        .into_iter()
        .map(|(_, r)| route(&r))
        .collect();
    o.finish();
    (http, routes)
}

fn route(r: &Obj<'_>) -> DraftRoute {
    let glob =
        r.str_req("match", "match = \"/jmap/*\"")
            .and_then(|g| match globset::Glob::new(g) {
                Ok(_) => Some(g.to_owned()),
                Err(e) => {
                    r.push(
                        "match",
                        format!(
                            "{g:?} is not a valid glob: {}; see the globset syntax",
                            e.kind()
                        ),
                    );
                    None
                }
            });
    let destination = r.str("destination").map(str::to_owned);
    let extract = r.table("extract").and_then(|e| extract(&e));
    let fallback = r.str("fallback").map(str::to_owned);
    if destination.is_some() && r.has("extract") {
        r.push(
            "extract",
            "cannot be combined with destination, which pins the route; remove one",
        );
    }
    if destination.is_some() && fallback.is_some() {
        r.push(
            "fallback",
            "is never used when destination pins the route; remove it",
        );
    }
    r.finish();
    DraftRoute {
        path: r.path().to_owned(),
        glob,
        destination,
        extract,
        fallback,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum From {
    Authorization,
    Query,
    Header,
    Body,
}

fn extract(e: &Obj<'_>) -> Option<Extract> {
    let from = e.choice_req(
        "from",
        &[
            ("authorization", From::Authorization),
            ("query", From::Query),
            ("header", From::Header),
            ("body", From::Body),
        ],
    );
    let param = e.str("param");
    let header = e.str("header");
    let regex = e.str("regex");
    e.finish();
    let from = from?;
    // A key for another source is a likely mistake: say so rather than ignore it.
    for (key, present, wanted) in [
        ("param", param.is_some(), From::Query),
        ("header", header.is_some(), From::Header),
        ("regex", regex.is_some(), From::Body),
    ] {
        if present && from != wanted {
            let source = match wanted {
                From::Query => "query",
                From::Header => "header",
                _ => "body",
            };
            e.push(
                key,
                format!("is only used with from = \"{source}\"; remove it"),
            );
        }
    }
    match from {
        From::Authorization => Some(Extract::Authorization),
        From::Query => match param {
            Some(p) if !p.is_empty() => Some(Extract::Query {
                param: p.to_owned(),
            }),
            Some(_) => {
                e.push(
                    "param",
                    "must not be empty; name the query parameter that holds the account",
                );
                None
            }
            None => {
                e.missing(
                    "param",
                    "param = \"<query parameter>\" (from = \"query\" needs it)",
                );
                None
            }
        },
        From::Header => match header {
            Some(h) if is_header_name(h) => Some(Extract::Header {
                header: h.to_owned(),
            }),
            Some(h) => {
                e.push(
                    "header",
                    format!(
                        "{h:?} is not an HTTP header name; use letters, \
                         digits and '-', such as \"X-Account\""
                    ),
                );
                None
            }
            None => {
                e.missing(
                    "header",
                    "header = \"<header name>\" (from = \"header\" needs it)",
                );
                None
            }
        },
        From::Body => match regex {
            Some(re) => match regex::Regex::new(re) {
                Ok(compiled) if compiled.captures_len() >= 2 => Some(Extract::Body {
                    regex: re.to_owned(),
                }),
                Ok(_) => {
                    e.push(
                        "regex",
                        "has no capture group; wrap the identifier in ( ), \
                         since group 1 is used",
                    );
                    None
                }
                Err(err) => {
                    let detail = err.to_string().replace('\n', " ");
                    e.push(
                        "regex",
                        format!(
                            "does not compile: {}",
                            detail.split_whitespace().collect::<Vec<_>>().join(" ")
                        ),
                    );
                    None
                }
            },
            None => {
                e.missing(
                    "regex",
                    "regex = \"username=([^&]+)\" (from = \"body\" needs it)",
                );
                None
            }
        },
    }
}

/// RFC 9110 §5.1: a field name is a token.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Where the mapping file is, if the file store is used.
pub(crate) fn mapping_file(mapping: &Mapping) -> Option<&PathBuf> {
    match &mapping.source {
        MappingSource::File { path } => Some(path),
        _ => None,
    }
}

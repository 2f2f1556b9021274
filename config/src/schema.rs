//! A small schema walker over a parsed [`toml::Table`]: typed getters that record every
//! problem instead of stopping at the first, and an unknown-key check that suggests the
//! nearest known key.
//!
//! Each getter registers its key as known whether or not the key is present, so calling
//! every getter of a table and then [`Obj::finish`] reports exactly the keys nobody asked
//! for. The walker knows nothing about postern's tables; `validate` describes them.

use std::cell::RefCell;
use std::time::Duration;

use toml::{Table, Value};

use crate::Issue;

/// Collects issues while a config is walked.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    issues: RefCell<Vec<Issue>>,
}

impl Ctx {
    /// Records a problem at `path`.
    pub(crate) fn push(&self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.borrow_mut().push(Issue::new(path, message));
    }

    /// How many problems have been recorded so far.
    pub(crate) fn count(&self) -> usize {
        self.issues.borrow().len()
    }

    /// The recorded problems, in the order they were found.
    pub(crate) fn into_issues(self) -> Vec<Issue> {
        self.issues.into_inner()
    }

    /// A view of `table` at `path`.
    pub(crate) fn obj<'a>(&'a self, path: impl Into<String>, table: &'a Table) -> Obj<'a> {
        Obj {
            ctx: self,
            path: path.into(),
            table: Some(table),
            known: RefCell::new(Vec::new()),
        }
    }
}

/// Joins a key onto a dotted path, quoting keys that are not bare TOML keys.
pub(crate) fn join(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// The TOML type name of `value`, with an article, for "expected X, found Y".
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(i) => format!("integer {i}"),
        Value::Float(f) => format!("float {f}"),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Datetime(d) => format!("date-time {d}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Table(_) => "a table".to_owned(),
    }
}

/// One table of the config, at a dotted path. Absent tables are walked too (every getter
/// then returns its default), so defaults live in one place.
#[derive(Debug)]
pub(crate) struct Obj<'a> {
    ctx: &'a Ctx,
    path: String,
    table: Option<&'a Table>,
    known: RefCell<Vec<&'static str>>,
}

impl<'a> Obj<'a> {
    /// A table that is not in the file: every getter returns its default.
    pub(crate) fn absent(ctx: &'a Ctx, path: impl Into<String>) -> Obj<'a> {
        Obj {
            ctx,
            path: path.into(),
            table: None,
            known: RefCell::new(Vec::new()),
        }
    }

    /// The issue collector.
    pub(crate) fn ctx(&self) -> &'a Ctx {
        self.ctx
    }

    /// This table's dotted path.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The dotted path of `key` in this table.
    pub(crate) fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Records a problem with `key` of this table.
    pub(crate) fn push(&self, key: &str, message: impl Into<String>) {
        self.ctx.push(self.at(key), message);
    }

    /// The raw value of `key`, registering the key as known.
    pub(crate) fn get(&self, key: &'static str) -> Option<&'a Value> {
        self.known.borrow_mut().push(key);
        self.table.and_then(|t| t.get(key))
    }

    /// Whether `key` is present (registers it as known).
    pub(crate) fn has(&self, key: &'static str) -> bool {
        self.get(key).is_some()
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &Value) {
        self.push(
            key,
            format!("expected {expected}, found {}", describe(found)),
        );
    }

    /// Reports `key` as missing, with `example` showing what to write.
    pub(crate) fn missing(&self, key: &str, example: &str) {
        self.push(key, format!("required key is missing; add {example}"));
    }

    /// An optional string.
    pub(crate) fn str(&self, key: &'static str) -> Option<&'a str> {
        match self.get(key)? {
            Value::String(s) => Some(s),
            other => {
                self.wrong_type(key, "a string", other);
                None
            }
        }
    }

    /// A required string; `example` is shown when it is missing.
    pub(crate) fn str_req(&self, key: &'static str, example: &str) -> Option<&'a str> {
        if self.table.is_none_or(|t| !t.contains_key(key)) {
            self.known.borrow_mut().push(key);
            self.missing(key, example);
            return None;
        }
        self.str(key)
    }

    /// A boolean with a default.
    pub(crate) fn bool(&self, key: &'static str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(Value::Boolean(b)) => *b,
            Some(other) => {
                self.wrong_type(key, "true or false", other);
                default
            }
        }
    }

    /// An optional integer within `min..=max`.
    pub(crate) fn int(&self, key: &'static str, min: i64, max: i64) -> Option<i64> {
        match self.get(key)? {
            Value::Integer(i) if (min..=max).contains(i) => Some(*i),
            Value::Integer(i) => {
                let range = if max == i64::MAX {
                    format!("at least {min}")
                } else {
                    format!("between {min} and {max}")
                };
                self.push(
                    key,
                    format!("{i} is out of range; use a whole number {range}"),
                );
                None
            }
            other => {
                self.wrong_type(key, "a whole number", other);
                None
            }
        }
    }

    /// A `u32` within `min..=u32::MAX`, with a default.
    pub(crate) fn u32_min(&self, key: &'static str, default: u32, min: u32) -> u32 {
        self.int(key, i64::from(min), i64::from(u32::MAX))
            .map_or(default, |i| i as u32)
    }

    /// A `u32` with a default.
    pub(crate) fn u32(&self, key: &'static str, default: u32) -> u32 {
        self.u32_min(key, default, 0)
    }

    /// A byte count: a non-negative integer, or a size string such as `"64KiB"`.
    pub(crate) fn bytes(&self, key: &'static str) -> Option<u64> {
        match self.get(key)? {
            Value::Integer(i) if *i >= 0 => Some(*i as u64),
            Value::Integer(i) => {
                self.push(key, format!("{i} is negative; give a number of bytes"));
                None
            }
            Value::String(s) => match crate::size::parse(s) {
                Ok(n) => Some(n),
                Err(e) => {
                    self.push(key, e.to_string());
                    None
                }
            },
            other => {
                self.wrong_type(key, "a number of bytes or a size such as \"512MiB\"", other);
                None
            }
        }
    }

    /// An optional duration string.
    pub(crate) fn duration_opt(&self, key: &'static str) -> Option<Duration> {
        match self.get(key)? {
            Value::String(s) => match crate::duration::parse(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.push(key, e.to_string());
                    None
                }
            },
            Value::Integer(i) => {
                self.push(
                    key,
                    format!("a duration needs a unit; write \"{i}s\" (units: ms, s, m, h, d)"),
                );
                None
            }
            other => {
                self.wrong_type(key, "a duration string such as \"30s\"", other);
                None
            }
        }
    }

    /// A duration with a default.
    pub(crate) fn duration(&self, key: &'static str, default: Duration) -> Duration {
        self.duration_opt(key).unwrap_or(default)
    }

    /// A duration with a default that must not be zero.
    pub(crate) fn duration_nonzero(&self, key: &'static str, default: Duration) -> Duration {
        match self.duration_opt(key) {
            Some(d) if d.is_zero() => {
                self.push(
                    key,
                    format!(
                        "must be longer than zero; the default is {}",
                        crate::duration::format(default)
                    ),
                );
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    /// One of a fixed set of strings, mapped to a value. `None` when absent or invalid
    /// (an invalid value is reported).
    pub(crate) fn choice<T: Copy>(&self, key: &'static str, options: &[(&str, T)]) -> Option<T> {
        let names = || {
            options
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.get(key)? {
            Value::String(s) => match options.iter().find(|(n, _)| *n == s.as_str()) {
                Some((_, v)) => Some(*v),
                None => {
                    self.push(key, format!("{s:?} is not one of {}", names()));
                    None
                }
            },
            other => {
                self.wrong_type(key, &format!("one of {}", names()), other);
                None
            }
        }
    }

    /// Like [`Obj::choice`], and reports a missing key.
    pub(crate) fn choice_req<T: Copy>(
        &self,
        key: &'static str,
        options: &[(&str, T)],
    ) -> Option<T> {
        if self.table.is_none_or(|t| !t.contains_key(key)) {
            self.known.borrow_mut().push(key);
            let example = format!("{key} = {:?}", options.first().map_or("", |(n, _)| *n));
            let names = options
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ");
            self.push(
                key,
                format!("required key is missing; add {example} (one of {names})"),
            );
            return None;
        }
        self.choice(key, options)
    }

    /// An optional list of strings, as `(path of the entry, value)`. A single string is
    /// accepted as a one-entry list when `allow_single` is set.
    pub(crate) fn str_list(
        &self,
        key: &'static str,
        allow_single: bool,
    ) -> Option<Vec<(String, &'a str)>> {
        match self.get(key)? {
            Value::String(s) if allow_single => Some(vec![(self.at(key), s.as_str())]),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{}[{i}]", self.at(key));
                    match item {
                        Value::String(s) => out.push((path, s.as_str())),
                        other => self.ctx.push(
                            path,
                            format!("expected a string, found {}", describe(other)),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                self.wrong_type(key, "a list of strings", other);
                None
            }
        }
    }

    /// An optional sub-table.
    pub(crate) fn table(&self, key: &'static str) -> Option<Obj<'a>> {
        match self.get(key)? {
            Value::Table(t) => Some(self.ctx.obj(self.at(key), t)),
            other => {
                self.wrong_type(key, &format!("a table ([{}])", self.at(key)), other);
                None
            }
        }
    }

    /// A sub-table, or an absent view of it when it is not in the file.
    pub(crate) fn table_or_absent(&self, key: &'static str) -> Obj<'a> {
        self.table(key)
            .unwrap_or_else(|| Obj::absent(self.ctx, self.at(key)))
    }

    /// A table whose keys are names chosen by the operator (`[listener.<name>]`): each
    /// entry that is itself a table, in name order. Other entries are reported.
    pub(crate) fn named_tables(&self, key: &'static str) -> Vec<(&'a str, Obj<'a>)> {
        let Some(value) = self.get(key) else {
            return Vec::new();
        };
        let Value::Table(map) = value else {
            self.wrong_type(
                key,
                &format!("a table of named tables ([{}.<name>])", self.at(key)),
                value,
            );
            return Vec::new();
        };
        let path = self.at(key);
        let mut out: Vec<(&'a str, Obj<'a>)> = Vec::new();
        for (name, entry) in map {
            match entry {
                Value::Table(t) => out.push((name.as_str(), self.ctx.obj(join(&path, name), t))),
                Value::Array(_) => self.ctx.push(
                    join(&path, name),
                    format!(
                        "expected one table, found an array of tables; write [{0}], not [[{0}]]",
                        join(&path, name)
                    ),
                ),
                other => self.ctx.push(
                    join(&path, name),
                    format!(
                        "expected a table ([{}]), found {}; if this was meant as a key, \
                         put it inside a named table",
                        join(&path, name),
                        describe(other)
                    ),
                ),
            }
        }
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// An array of tables (`[[http.route]]`), as `(index, table)`.
    pub(crate) fn table_array(&self, key: &'static str) -> Vec<(usize, Obj<'a>)> {
        let Some(value) = self.get(key) else {
            return Vec::new();
        };
        let Value::Array(items) = value else {
            self.wrong_type(
                key,
                &format!("an array of tables ([[{}]])", self.at(key)),
                value,
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", self.at(key));
            match item {
                Value::Table(t) => out.push((i, self.ctx.obj(path, t))),
                other => self
                    .ctx
                    .push(path, format!("expected a table, found {}", describe(other))),
            }
        }
        out
    }

    /// Reports every key of the table that no getter asked for, suggesting the nearest
    /// known key.
    pub(crate) fn finish(&self) {
        let Some(table) = self.table else { return };
        let known = self.known.borrow().clone();
        for key in table.keys() {
            if known.iter().any(|k| k == key) {
                continue;
            }
            let message = match suggest(key, &known) {
                Some(near) => format!("unknown key; did you mean {near}?"),
                None if known.is_empty() => "unknown key; this table takes no keys".to_owned(),
                None => {
                    let mut names = known.clone();
                    names.sort_unstable();
                    names.dedup();
                    format!("unknown key; known keys here are {}", names.join(", "))
                }
            };
            self.ctx.push(join(&self.path, key), message);
        }
    }
}

/// The candidate nearest to `word`, if it is close enough to be a likely typo.
pub(crate) fn suggest<'k>(word: &str, candidates: &[&'k str]) -> Option<&'k str> {
    let word_lc = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(&word_lc, &c.to_ascii_lowercase()), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and
/// transpositions of adjacent characters each cost one.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("max_conections", "max_connections"), 1);
        assert_eq!(edit_distance("tsl", "tls"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions() {
        let known = [
            "protocol",
            "bind",
            "tls",
            "max_connections",
            "preauth_timeout",
        ];
        assert_eq!(suggest("max_conections", &known), Some("max_connections"));
        assert_eq!(suggest("tsl", &known), Some("tls"));
        assert_eq!(suggest("Bind", &known), Some("bind"));
        assert_eq!(suggest("completely_different", &known), None);
    }

    #[test]
    fn quoted_path_segments() {
        assert_eq!(join("listener", "imap"), "listener.imap");
        assert_eq!(join("listener", "a.b"), "listener.\"a.b\"");
        assert_eq!(join("", "server"), "server");
    }
}

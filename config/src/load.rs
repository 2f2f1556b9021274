//! TOML text to a validated [`Config`].
use std::path::Path;

use crate::model::Config;
use crate::Issue;

/// Parses and validates config text. Reads no file.
pub fn parse(text: &str) -> Result<Config, Vec<Issue>> {
    crate::validate::validate_text(text)
}

/// Reads the file at `path`, then [`parse`]s it.
pub fn load_file(path: &Path) -> Result<Config, Vec<Issue>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Issue::new(
            "",
            format!("cannot read {}: {e}", path.display()),
        )]
    })?;
    parse(&text)
}

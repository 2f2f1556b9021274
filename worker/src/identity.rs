//! The routing identifier: which account a login is for, read from its
//! [`Credentials`] (reference §3.1, §9, DESIGN.md's decisions), then cut, checked and
//! normalized (§3.2). Pure functions; nothing here is logged.
//!
//! - PLAIN: the authzid when non-empty, else the authcid. LOGIN: the username.
//! - OAUTHBEARER `a=` and XOAUTH2 `user=`: when they contain `@`; otherwise the token.
//! - Tokens: `sw1.<body>.<footer>` yields the base64url-decoded footer (no footer, no
//!   identifier); anything else is read as a JWT, whose payload claims are tried in
//!   order (`jwt_username_claim`, `email`, `preferred_username`, `upn`, `unique_name`,
//!   `sub`) for the first string containing `@`. The signature is not checked: the
//!   token is forwarded unchanged for the backend to validate.
//!
//! No identifier means the default destination.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use postern_config::material::normalize_identifier;
use postern_config::model::{Config, Normalize};

use crate::sasl::Credentials;
use crate::side::Side;

/// Longest identifier routed, in bytes, after the master-user cut. Addresses are at
/// most 254; the limit keeps junk out of the cache.
pub const MAX_IDENTIFIER_LEN: usize = 512;

/// JWT claims tried after the configured one, in order.
pub const JWT_FALLBACK_CLAIMS: [&str; 5] =
    ["email", "preferred_username", "upn", "unique_name", "sub"];

/// What turns credentials into an identifier: `[oauth]`, `[routing]` and `[mapping]`
/// settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRules {
    pub jwt_username_claim: String,
    /// Non-empty strings.
    pub master_user_separators: Vec<String>,
    pub normalize: Normalize,
}

impl IdentityRules {
    pub fn from_config(config: &Config) -> IdentityRules {
        IdentityRules {
            jwt_username_claim: config.oauth.jwt_username_claim.clone(),
            master_user_separators: config
                .routing
                .master_user_separators
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            normalize: config.mapping.normalize,
        }
    }
}

/// An identifier the safety check refuses: the client gets the protocol's "backend
/// unavailable" reply and the connection closes (§3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identifier contains a control character, a space or a double quote")]
    Unsafe,
    #[error("identifier is longer than {MAX_IDENTIFIER_LEN} bytes")]
    TooLong,
}

impl IdentityError {
    pub fn side(&self) -> Side {
        Side::Client
    }
}

/// The identifier to route `credentials` by, post-processed; `Ok(None)` routes to the
/// default destination.
pub fn routing_identifier(
    credentials: &Credentials,
    rules: &IdentityRules,
) -> Result<Option<String>, IdentityError> {
    match raw_identifier(credentials, &rules.jwt_username_claim) {
        Some(raw) => post_process(&raw, rules),
        None => Ok(None),
    }
}

/// The identifier as the credentials carry it, before post-processing.
pub fn raw_identifier(credentials: &Credentials, jwt_username_claim: &str) -> Option<String> {
    if let Some(token) = credentials.token() {
        return match credentials.username() {
            Some(user) if user.contains('@') => Some(user.to_owned()),
            _ => token_identifier(token.expose(), jwt_username_claim),
        };
    }
    credentials
        .authzid()
        .or(credentials.username())
        .map(str::to_owned)
}

/// The account a bearer token names: an `sw1.` footer, else a JWT claim.
pub fn token_identifier(token: &[u8], jwt_username_claim: &str) -> Option<String> {
    let token = std::str::from_utf8(token).ok()?;
    match token.strip_prefix("sw1.") {
        Some(rest) => sw1_footer(rest),
        None => jwt_identifier(token, jwt_username_claim),
    }
}

/// Lenient base64url: padding optional.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The account name in a Stalwart `sw1.` token, given what follows `sw1.`:
/// `<body>.<footer>`, the footer base64url of the name in clear text.
fn sw1_footer(rest: &str) -> Option<String> {
    let (_, footer) = rest.rsplit_once('.')?;
    let name = URL_SAFE_LENIENT.decode(footer).ok()?;
    let name = String::from_utf8(name).ok()?;
    (!name.is_empty()).then_some(name)
}

/// The first claim, in order, whose value is a string containing `@`, from an
/// unverified JWS `header.payload.signature`.
fn jwt_identifier(token: &str, jwt_username_claim: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let json = URL_SAFE_LENIENT.decode(payload).ok()?;
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&json).ok()?;
    std::iter::once(jwt_username_claim)
        .chain(JWT_FALLBACK_CLAIMS)
        .filter_map(|name| claims.get(name)?.as_str())
        .find(|value| value.contains('@'))
        .map(str::to_owned)
}

/// §3.2: cut at the earliest master-user separator, refuse unsafe bytes, normalize.
/// An identifier left empty by the cut is no identifier.
pub fn post_process(raw: &str, rules: &IdentityRules) -> Result<Option<String>, IdentityError> {
    let cut = rules
        .master_user_separators
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| raw.find(s.as_str()))
        .min()
        .unwrap_or(raw.len());
    let id = &raw[..cut];
    if id.is_empty() {
        return Ok(None);
    }
    if id
        .bytes()
        .any(|b| b < 0x20 || b == 0x7f || b == b' ' || b == b'"')
    {
        return Err(IdentityError::Unsafe);
    }
    if id.len() > MAX_IDENTIFIER_LEN {
        return Err(IdentityError::TooLong);
    }
    Ok(Some(normalize_identifier(rules.normalize, id)))
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;

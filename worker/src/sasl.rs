//! SASL credentials: the client's decoded responses turned into typed [`Credentials`],
//! and the bytes a replay sends to the backend.
//!
//! The protocol dialogues base64-decode what the client sent and call one of the
//! `decode_*` functions; everything they return has passed the checks of
//! DESIGN.md: no CR, LF or NUL inside any field, no empty username or password. A
//! [`Credentials`] value is therefore safe to replay, in base64 or as IMAP `LOGIN`
//! arguments, without anything being sent first.
//!
//! Secrets live in [`Secret`], whose `Debug` prints `<redacted>`; the `Debug` of
//! [`Credentials`] shows the mechanism and usernames only. Errors never carry a byte of
//! what the client sent.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use crate::side::Side;

/// The SASL mechanisms postern accepts from clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    /// SASL `LOGIN`; also what IMAP `LOGIN` and POP3 `USER`/`PASS` are recorded as.
    Login,
    OAuthBearer,
    XOAuth2,
}

impl Mechanism {
    /// The IANA name, as on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::XOAuth2 => "XOAUTH2",
        }
    }

    /// The mechanism called `name`, case-insensitively.
    /// True when the mechanism sends a password in the clear (RFC 9051 §11.1).
    pub fn is_cleartext(self) -> bool {
        matches!(self, Mechanism::Plain | Mechanism::Login)
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        [
            Mechanism::Plain,
            Mechanism::Login,
            Mechanism::OAuthBearer,
            Mechanism::XOAuth2,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which part of a response an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// PLAIN's authorization identity.
    Authzid,
    /// PLAIN's authentication identity, LOGIN's username.
    Username,
    Password,
    /// OAUTHBEARER's GS2 `a=` or XOAUTH2's `user=`.
    User,
    /// The bearer token.
    Token,
    /// Elsewhere in an OAuth response (another key/value pair).
    Payload,
}

impl Field {
    fn as_str(self) -> &'static str {
        match self {
            Field::Authzid => "authorization identity",
            Field::Username => "username",
            Field::Password => "password",
            Field::User => "user",
            Field::Token => "token",
            Field::Payload => "response",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client response that cannot become [`Credentials`]. Always the client's fault.
/// Messages name the mechanism and field, never their content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("malformed {mechanism} response: {reason}")]
    Malformed {
        mechanism: Mechanism,
        reason: &'static str,
    },
    /// A CR, LF or NUL inside a field: refused before anything reaches a backend.
    #[error("{mechanism} {field} contains a CR, LF or NUL byte")]
    ForbiddenByte { mechanism: Mechanism, field: Field },
    #[error("{mechanism} {field} is not UTF-8")]
    NotUtf8 { mechanism: Mechanism, field: Field },
    #[error("response is not valid base64")]
    Base64,
}

impl SaslError {
    pub fn side(&self) -> Side {
        Side::Client
    }
}

/// Bytes that must never be logged: a password, a token, a whole SASL payload.
/// `Debug` prints `<redacted>`; there is no `Display`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The secret bytes, for writing to a backend.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What a client authenticated with, checked. Built only by the `decode_*` functions.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    mechanism: Mechanism,
    kind: Kind,
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    Password {
        /// Empty when the client sent none.
        authzid: String,
        authcid: String,
        password: Secret,
    },
    Bearer {
        /// OAUTHBEARER `a=`, XOAUTH2 `user=`; `None` when absent or empty.
        user: Option<String>,
        token: Secret,
        /// The whole decoded response, replayed unchanged.
        payload: Secret,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Credentials");
        d.field("mechanism", &self.mechanism);
        match &self.kind {
            Kind::Password {
                authzid,
                authcid,
                password,
            } => d
                .field("authzid", authzid)
                .field("authcid", authcid)
                .field("password", password),
            Kind::Bearer { user, token, .. } => d.field("user", user).field("token", token),
        };
        d.finish()
    }
}

impl Credentials {
    /// The mechanism the client used.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// PLAIN's authorization identity, when the client sent a non-empty one.
    pub fn authzid(&self) -> Option<&str> {
        match &self.kind {
            Kind::Password { authzid, .. } if !authzid.is_empty() => Some(authzid),
            _ => None,
        }
    }

    /// The login name: PLAIN's authcid, LOGIN's username, the OAuth `a=` / `user=`.
    pub fn username(&self) -> Option<&str> {
        match &self.kind {
            Kind::Password { authcid, .. } => Some(authcid),
            Kind::Bearer { user, .. } => user.as_deref(),
        }
    }

    /// The password of a password login.
    pub fn password(&self) -> Option<&Secret> {
        match &self.kind {
            Kind::Password { password, .. } => Some(password),
            Kind::Bearer { .. } => None,
        }
    }

    /// The bearer token of an OAuth login.
    pub fn token(&self) -> Option<&Secret> {
        match &self.kind {
            Kind::Bearer { token, .. } => Some(token),
            Kind::Password { .. } => None,
        }
    }

    /// The mechanism to replay with: PLAIN for every password login (SASL LOGIN, IMAP
    /// LOGIN and POP3 USER/PASS included), the client's own for OAuth.
    pub fn replay_mechanism(&self) -> Mechanism {
        match self.kind {
            Kind::Password { .. } => Mechanism::Plain,
            Kind::Bearer { .. } => self.mechanism,
        }
    }

    /// The decoded response to replay: `authzid NUL authcid NUL password` for a password
    /// login (byte for byte what a PLAIN client sent), the client's exact response for
    /// OAuth.
    pub fn replay_payload(&self) -> Secret {
        match &self.kind {
            Kind::Password {
                authzid,
                authcid,
                password,
            } => plain_payload(authzid, authcid, password.expose()),
            Kind::Bearer { payload, .. } => payload.clone(),
        }
    }

    /// [`Self::replay_payload`] in base64, ready for `AUTHENTICATE <MECH> <b64>` or a
    /// continuation line (no CRLF).
    pub fn replay_base64(&self) -> Secret {
        Secret(encode_base64(self.replay_payload().expose()).into_bytes())
    }

    /// Username and password for an IMAP `LOGIN` replay (a backend without
    /// `AUTH=PLAIN`). `None` for OAuth, and for PLAIN with an authzid, which `LOGIN`
    /// cannot express.
    pub fn login_args(&self) -> Option<(&str, &Secret)> {
        match &self.kind {
            Kind::Password {
                authzid,
                authcid,
                password,
            } if authzid.is_empty() => Some((authcid, password)),
            _ => None,
        }
    }
}

/// The answer to a backend's OAuth error challenge (RFC 7628 §3.2.3): a single 0x01,
/// base64.
pub const OAUTH_ERROR_ACK_BASE64: &str = "AQ==";

/// A PLAIN response: `authzid NUL authcid NUL password`.
pub fn plain_payload(authzid: &str, authcid: &str, password: &[u8]) -> Secret {
    let mut out = Vec::with_capacity(authzid.len() + authcid.len() + password.len() + 2);
    out.extend_from_slice(authzid.as_bytes());
    out.push(0);
    out.extend_from_slice(authcid.as_bytes());
    out.push(0);
    out.extend_from_slice(password);
    Secret(out)
}

/// Decodes a single-step response: PLAIN, OAUTHBEARER or XOAUTH2. LOGIN takes two
/// steps: use [`decode_login`].
pub fn decode(mechanism: Mechanism, payload: &[u8]) -> Result<Credentials, SaslError> {
    match mechanism {
        Mechanism::Plain => decode_plain(payload),
        Mechanism::OAuthBearer => decode_oauthbearer(payload),
        Mechanism::XOAuth2 => decode_xoauth2(payload),
        Mechanism::Login => Err(malformed(Mechanism::Login, "LOGIN takes two steps")),
    }
}

/// PLAIN (RFC 4616): `[authzid] NUL authcid NUL password`. An empty authcid or password
/// is malformed; a NUL inside the password is refused like CR and LF.
pub fn decode_plain(payload: &[u8]) -> Result<Credentials, SaslError> {
    const M: Mechanism = Mechanism::Plain;
    let mut parts = payload.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(M, "expected authzid NUL authcid NUL password"));
    };
    let authzid = text(M, Field::Authzid, authzid)?;
    password_credentials(M, authzid.to_owned(), authcid, password)
}

/// A username and a password given separately: the two steps of SASL LOGIN, IMAP
/// `LOGIN u p`, POP3 `USER u` + `PASS p`. Replayed as PLAIN `NUL u NUL p`.
pub fn decode_login(username: &[u8], password: &[u8]) -> Result<Credentials, SaslError> {
    password_credentials(Mechanism::Login, String::new(), username, password)
}

/// Password credentials, checked: a clean, non-empty username and password.
fn password_credentials(
    m: Mechanism,
    authzid: String,
    username: &[u8],
    password: &[u8],
) -> Result<Credentials, SaslError> {
    let authcid = text(m, Field::Username, username)?;
    clean(m, Field::Password, password)?;
    if authcid.is_empty() {
        return Err(malformed(m, "empty username"));
    }
    if password.is_empty() {
        return Err(malformed(m, "empty password"));
    }
    Ok(Credentials {
        mechanism: m,
        kind: Kind::Password {
            authzid,
            authcid: authcid.to_owned(),
            password: Secret(password.to_vec()),
        },
    })
}

/// OAUTHBEARER (RFC 7628): a GS2 header `n,a=user,` (or `n,,`; `y` also accepted,
/// channel binding `p=` refused), then 0x01-separated `key=value` pairs, one of them
/// `auth=Bearer <token>` (key and scheme case-insensitive; the first one counts).
pub fn decode_oauthbearer(payload: &[u8]) -> Result<Credentials, SaslError> {
    const M: Mechanism = Mechanism::OAuthBearer;
    let mut parts = payload.split(|&b| b == 0x01);
    let header = parts.next().unwrap_or_default();
    let rest = match header {
        [b'n' | b'y', b',', rest @ ..] => rest,
        [b'p', b'=', ..] => return Err(malformed(M, "channel binding is not supported")),
        _ => return Err(malformed(M, "bad GS2 header")),
    };
    let (user, rest) = match rest.strip_prefix(b"a=") {
        Some(a) => {
            let end = a
                .iter()
                .position(|&b| b == b',')
                .ok_or_else(|| malformed(M, "unterminated GS2 authzid"))?;
            (Some(saslname(&a[..end])?), &a[end..])
        }
        None => (None, rest),
    };
    if rest.first() != Some(&b',') {
        return Err(malformed(M, "bad GS2 header"));
    }
    let token = bearer_token(M, parts)?;
    bearer(M, user, token, payload)
}

/// XOAUTH2: `user=<u> 0x01 auth=Bearer <token> 0x01 0x01`. `user=` may be missing or
/// empty (the identifier then comes from the token).
pub fn decode_xoauth2(payload: &[u8]) -> Result<Credentials, SaslError> {
    const M: Mechanism = Mechanism::XOAuth2;
    let parts = payload.split(|&b| b == 0x01);
    let user = parts
        .clone()
        .filter_map(key_value)
        .find(|(k, _)| k.eq_ignore_ascii_case(b"user"))
        .map(|(_, v)| v.to_vec());
    let token = bearer_token(M, parts)?;
    bearer(M, user, token, payload)
}

/// Base64 as clients send it: standard alphabet, padding optional. A lone `=` is the
/// empty response of SASL-IR (RFC 4959).
pub fn decode_base64(text: &[u8]) -> Result<Vec<u8>, SaslError> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    if text == b"=" {
        return Ok(Vec::new());
    }
    LENIENT.decode(text).map_err(|_| SaslError::Base64)
}

/// Standard, padded base64.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn malformed(mechanism: Mechanism, reason: &'static str) -> SaslError {
    SaslError::Malformed { mechanism, reason }
}

/// Refuses CR, LF and NUL.
fn clean(mechanism: Mechanism, field: Field, bytes: &[u8]) -> Result<(), SaslError> {
    if bytes.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
        Err(SaslError::ForbiddenByte { mechanism, field })
    } else {
        Ok(())
    }
}

/// A clean, UTF-8 field.
fn text(mechanism: Mechanism, field: Field, bytes: &[u8]) -> Result<&str, SaslError> {
    clean(mechanism, field, bytes)?;
    std::str::from_utf8(bytes).map_err(|_| SaslError::NotUtf8 { mechanism, field })
}

/// A GS2 `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is malformed.
fn saslname(bytes: &[u8]) -> Result<Vec<u8>, SaslError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'=', Some(b"2C" | b"2c")) => out.push(b','),
            (b'=', Some(b"3D" | b"3d")) => out.push(b'='),
            (b'=', _) => {
                return Err(malformed(
                    Mechanism::OAuthBearer,
                    "bad escape in GS2 authzid",
                ))
            }
            (b, _) => {
                out.push(b);
                i += 1;
                continue;
            }
        }
        i += 3;
    }
    Ok(out)
}

/// `key=value`, split at the first `=`.
fn key_value(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = pair.iter().position(|&b| b == b'=')?;
    Some((&pair[..eq], &pair[eq + 1..]))
}

/// The token of the first `auth=Bearer <token>` pair.
fn bearer_token<'p>(
    mechanism: Mechanism,
    pairs: impl Iterator<Item = &'p [u8]>,
) -> Result<&'p [u8], SaslError> {
    pairs
        .filter_map(key_value)
        .filter(|(k, _)| k.eq_ignore_ascii_case(b"auth"))
        .find_map(|(_, v)| {
            let (scheme, rest) = v.split_at_checked(6)?;
            if !scheme.eq_ignore_ascii_case(b"Bearer") || rest.first() != Some(&b' ') {
                return None;
            }
            let token = trim_spaces(rest);
            (!token.is_empty()).then_some(token)
        })
        .ok_or_else(|| malformed(mechanism, "no auth=Bearer <token> field"))
}

/// Strips spaces only: a CR or LF at either end stays, to be refused.
fn trim_spaces(mut bytes: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' '] = bytes {
        bytes = rest;
    }
    bytes
}

/// Checks and assembles OAuth credentials.
fn bearer(
    mechanism: Mechanism,
    user: Option<Vec<u8>>,
    token: &[u8],
    payload: &[u8],
) -> Result<Credentials, SaslError> {
    let user = match user {
        Some(u) => {
            let u = text(mechanism, Field::User, &u)?;
            (!u.is_empty()).then(|| u.to_owned())
        }
        None => None,
    };
    clean(mechanism, Field::Token, token)?;
    clean(mechanism, Field::Payload, payload)?;
    Ok(Credentials {
        mechanism,
        kind: Kind::Bearer {
            user,
            token: Secret(token.to_vec()),
            payload: Secret(payload.to_vec()),
        },
    })
}

#[cfg(test)]
#[path = "sasl_tests.rs"]
mod tests;

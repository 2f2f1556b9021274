//! Every IMAP string postern writes before authentication (reference §5 "IMAP", §8),
//! as complete CRLF-terminated lines.

use super::command::{ErrorKind, Tag};
use crate::proto::auth;

/// The capability list, in the order of reference §5: the `advertise` list; `AUTH=<m>`
/// for each configured mechanism, without PLAIN and LOGIN when cleartext is not allowed
/// (LOGIN is advertised when listed, DESIGN.md); `LOGINDISABLED` when cleartext is not
/// allowed; `STARTTLS` while an upgrade is still possible.
pub fn capabilities(
    advertise: &[String],
    sasl: &[String],
    cleartext_allowed: bool,
    offer_starttls: bool,
) -> String {
    let mut caps: Vec<String> = advertise.to_vec();
    for mechanism in auth::mechanisms(sasl, cleartext_allowed) {
        caps.push(format!("AUTH={mechanism}"));
    }
    if !cleartext_allowed {
        caps.push("LOGINDISABLED".into());
    }
    if offer_starttls {
        caps.push("STARTTLS".into());
    }
    caps.join(" ")
}

fn line(text: String) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(b"\r\n");
    bytes
}

fn tagged(tag: &Tag, text: &str) -> Vec<u8> {
    line(format!("{tag} {text}"))
}

/// `* OK [CAPABILITY <caps>] <banner>`.
pub fn greeting(capabilities: &str, banner: &str) -> Vec<u8> {
    line(format!("* OK [CAPABILITY {capabilities}] {banner}"))
}

pub fn capability(tag: &Tag, capabilities: &str) -> Vec<u8> {
    let mut out = line(format!("* CAPABILITY {capabilities}"));
    out.extend(tagged(tag, "OK CAPABILITY completed."));
    out
}

pub fn noop(tag: &Tag) -> Vec<u8> {
    tagged(tag, "OK NOOP completed.")
}

/// RFC 2971: postern sends no identification of its own.
pub fn id(tag: &Tag) -> Vec<u8> {
    let mut out = line("* ID NIL".into());
    out.extend(tagged(tag, "OK ID completed."));
    out
}

pub fn logout(tag: &Tag) -> Vec<u8> {
    let mut out = line("* BYE Logging out.".into());
    out.extend(tagged(tag, "OK LOGOUT completed."));
    out
}

pub fn starttls(tag: &Tag) -> Vec<u8> {
    tagged(tag, "OK Begin TLS negotiation now.")
}

/// STARTTLS on a listener that offers none, or after the upgrade.
pub fn starttls_unavailable(tag: &Tag) -> Vec<u8> {
    tagged(tag, "BAD STARTTLS is not available.")
}

/// STARTTLS followed by pipelined plaintext (RFC 9051 §6.2.1 forbids it; STYLE §3
/// refuses it): the connection then closes.
pub fn starttls_pipelined(tag: &Tag) -> Vec<u8> {
    let mut out = tagged(tag, "BAD Data pipelined after STARTTLS.");
    out.extend(line("* BYE Closing connection.".into()));
    out
}

pub fn not_allowed(tag: &Tag) -> Vec<u8> {
    tagged(tag, "BAD Command not allowed in this state.")
}

/// Cleartext credentials without TLS while they are not allowed.
pub fn privacy_required(tag: &Tag) -> Vec<u8> {
    tagged(
        tag,
        "NO [PRIVACYREQUIRED] Cleartext authentication requires TLS.",
    )
}

/// No backend could be had, or the identifier failed the safety check (reference §4.5).
pub fn unavailable(tag: &Tag) -> Vec<u8> {
    tagged(tag, "NO [UNAVAILABLE] backend unavailable")
}

/// The generic failure of `hide_auth_errors` (reference §4.8).
pub fn authentication_failed(tag: &Tag) -> Vec<u8> {
    tagged(tag, "NO [AUTHENTICATIONFAILED] Authentication failed.")
}

/// A mechanism that is not configured, or not known at all.
pub fn mechanism_unsupported(tag: &Tag, mechanism: &str) -> Vec<u8> {
    if mechanism.eq_ignore_ascii_case("LOGIN") {
        return tagged(tag, "NO AUTH LOGIN is not supported.");
    }
    tagged(tag, "NO Unsupported authentication mechanism.")
}

pub fn invalid_base64(tag: &Tag) -> Vec<u8> {
    tagged(tag, "NO Invalid base64 data.")
}

/// Credentials the SASL decoder refused (missing fields, CR/LF/NUL, not UTF-8).
pub fn malformed_credentials(tag: &Tag) -> Vec<u8> {
    tagged(tag, "NO [AUTHENTICATIONFAILED] Malformed credentials.")
}

/// RFC 9051 §6.2.2: `*` cancels the exchange with a tagged BAD.
pub fn authentication_cancelled(tag: &Tag) -> Vec<u8> {
    tagged(tag, "BAD Authentication cancelled.")
}

/// An empty continuation request, asking for a SASL response.
pub fn continuation() -> Vec<u8> {
    b"+ \r\n".to_vec()
}

/// A continuation carrying a base64 challenge (SASL LOGIN's prompts).
pub fn challenge(base64: &str) -> Vec<u8> {
    line(format!("+ {base64}"))
}

/// The go-ahead for a synchronising literal.
pub fn literal_ready(size: u32) -> Vec<u8> {
    line(format!("+ Ready for {size} bytes."))
}

/// Sent before closing once `max_auth_attempts` is reached.
pub fn too_many_failures() -> Vec<u8> {
    line("* BYE Too many authentication failures.".into())
}

/// A parse error: `<tag> BAD ...`, or `* BAD ...` when the tag could not be read.
pub fn parse_error(tag: Option<&Tag>, kind: ErrorKind) -> Vec<u8> {
    let text = match kind {
        ErrorKind::LineTooLong => "[TOOBIG] Line too long.",
        ErrorKind::LiteralTooLarge => "[TOOBIG] Literal too large.",
        ErrorKind::InvalidTag => "Missing or invalid tag.",
        ErrorKind::MissingCommand => "Missing command.",
        ErrorKind::Syntax(_) => "Syntax error.",
        ErrorKind::MissingArgument => "Missing argument.",
        ErrorKind::InvalidArgument => "Invalid argument.",
        ErrorKind::UnexpectedArgument => "Unexpected argument.",
    };
    match tag {
        Some(tag) => tagged(tag, &format!("BAD {text}")),
        None => line(format!("* BAD {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn capability_order_and_filtering() {
        let adv = words("IMAP4rev2 IMAP4rev1 SASL-IR");
        let sasl = words("PLAIN LOGIN OAUTHBEARER XOAUTH2");
        assert_eq!(
            capabilities(&adv, &sasl, false, true),
            "IMAP4rev2 IMAP4rev1 SASL-IR AUTH=OAUTHBEARER AUTH=XOAUTH2 LOGINDISABLED STARTTLS"
        );
        assert_eq!(
            capabilities(&adv, &sasl, true, false),
            "IMAP4rev2 IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=LOGIN AUTH=OAUTHBEARER AUTH=XOAUTH2"
        );
    }

    #[test]
    fn replies_are_crlf_lines() {
        let tag = Tag::parse(b"A1").expect("tag");
        assert_eq!(
            greeting("IMAP4rev2", "hi"),
            b"* OK [CAPABILITY IMAP4rev2] hi\r\n"
        );
        assert_eq!(
            parse_error(None, ErrorKind::LineTooLong),
            b"* BAD [TOOBIG] Line too long.\r\n"
        );
        assert_eq!(
            parse_error(Some(&tag), ErrorKind::MissingCommand),
            b"A1 BAD Missing command.\r\n"
        );
        assert_eq!(
            unavailable(&tag),
            b"A1 NO [UNAVAILABLE] backend unavailable\r\n"
        );
        assert_eq!(continuation(), b"+ \r\n");
        assert_eq!(literal_ready(7), b"+ Ready for 7 bytes.\r\n");
    }
}

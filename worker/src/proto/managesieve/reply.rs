//! Every ManageSieve string postern writes before authentication (reference §5
//! "ManageSieve", §8; RFC 5804), as complete CRLF-terminated responses.

use super::command::ErrorKind;

pub use crate::proto::auth::mechanisms as sasl_mechanisms;

/// The capability response (RFC 5804 §1.7), in the order of reference §5:
/// `IMPLEMENTATION`, `VERSION`, `SASL`, `SIEVE`, `STARTTLS` while an upgrade is still
/// possible, then `OK`. Sent as the greeting, for CAPABILITY and after STARTTLS.
///
/// RFC 5804 §1.7 requires `NOTIFY` whenever `enotify` is among the extensions; the
/// configuration has no key for it, so `"NOTIFY" "mailto"` (RFC 5436, the one method
/// every enotify server offers) follows `SIEVE` then.
pub fn capabilities(
    implementation: &str,
    mechanisms: &[String],
    sieve: &[String],
    offer_starttls: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + sieve.len() * 16);
    let mut pair = |name: &str, value: Option<&str>| {
        out.extend_from_slice(&quoted(name.as_bytes()));
        if let Some(value) = value {
            out.push(b' ');
            out.extend_from_slice(&string(value.as_bytes()));
        }
        out.extend_from_slice(b"\r\n");
    };
    pair("IMPLEMENTATION", Some(implementation));
    pair("VERSION", Some("1.0"));
    pair("SASL", Some(&mechanisms.join(" ")));
    pair("SIEVE", Some(&sieve.join(" ")));
    if sieve.iter().any(|e| e.eq_ignore_ascii_case("enotify")) {
        pair("NOTIFY", Some("mailto"));
    }
    if offer_starttls {
        pair("STARTTLS", None);
    }
    out.extend(ok(&format!("{implementation} ready.")));
    out
}

/// `OK "<text>"`.
fn ok(text: &str) -> Vec<u8> {
    response(b"OK", None, text)
}

/// `NO "<text>"`.
fn no(text: &str) -> Vec<u8> {
    response(b"NO", None, text)
}

/// `<status> [(<code>)] "<text>"` (RFC 5804 §1.3, §4 `response-oknobye`).
fn response(status: &[u8], code: Option<&[u8]>, text: &str) -> Vec<u8> {
    let mut out = status.to_vec();
    if let Some(code) = code {
        out.extend_from_slice(b" (");
        out.extend_from_slice(code);
        out.push(b')');
    }
    out.push(b' ');
    out.extend_from_slice(&string(text.as_bytes()));
    out.extend_from_slice(b"\r\n");
    out
}

/// RFC 5804 §2.13: a bare NOOP is acknowledged; `NOOP "<tag>"` gets its string back in a
/// `TAG` response code.
pub fn noop(tag: Option<&[u8]>) -> Vec<u8> {
    match tag {
        None => ok("NOOP completed."),
        Some(tag) => {
            let mut code = b"TAG ".to_vec();
            code.extend_from_slice(&string(tag));
            response(b"OK", Some(&code), "Done")
        }
    }
}

pub fn logout() -> Vec<u8> {
    ok("Logout completed.")
}

pub fn starttls() -> Vec<u8> {
    ok("Begin TLS negotiation now.")
}

/// STARTTLS on a listener that offers none, or after the upgrade.
pub fn starttls_unavailable() -> Vec<u8> {
    no("STARTTLS not available")
}

/// STARTTLS followed by pipelined plaintext (STYLE §3 refuses it): the connection then
/// closes.
pub fn starttls_pipelined() -> Vec<u8> {
    let mut out = no("Data pipelined after STARTTLS.");
    out.extend(response(b"BYE", None, "Closing connection."));
    out
}

pub fn not_allowed() -> Vec<u8> {
    no("Command not allowed in this state.")
}

/// Cleartext credentials without TLS while they are not allowed (RFC 5804 §1.3
/// `ENCRYPT-NEEDED`).
pub fn encrypt_needed() -> Vec<u8> {
    response(
        b"NO",
        Some(b"ENCRYPT-NEEDED"),
        "Cleartext authentication requires TLS.",
    )
}

/// No backend could be had, or the identifier failed the safety check (reference §4.5).
pub fn unavailable() -> Vec<u8> {
    no("backend unavailable")
}

/// The generic failure of `hide_auth_errors` (reference §4.8).
pub fn authentication_failed() -> Vec<u8> {
    no("Authentication failed.")
}

/// A mechanism that is not configured, or not known at all.
pub fn mechanism_unsupported() -> Vec<u8> {
    no("Unsupported authentication mechanism.")
}

pub fn invalid_base64() -> Vec<u8> {
    no("Invalid base64 data.")
}

/// Credentials the SASL decoder refused (missing fields, CR/LF/NUL, not UTF-8).
pub fn malformed_credentials() -> Vec<u8> {
    no("Malformed credentials.")
}

/// RFC 5804 §2.1: `"*"` cancels the exchange with a NO.
pub fn authentication_cancelled() -> Vec<u8> {
    no("Authentication cancelled.")
}

/// The empty server challenge (reference §5): an empty literal, then the CRLF that
/// ends every challenge (RFC 5804 §2.1, `continue-req`).
pub fn continuation() -> Vec<u8> {
    b"{0}\r\n\r\n".to_vec()
}

/// A challenge carrying base64 data (SASL LOGIN's prompts), as a quoted string.
pub fn challenge(base64: &str) -> Vec<u8> {
    let mut out = quoted(base64.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// Sent before closing once `max_auth_attempts` is reached.
pub fn too_many_failures() -> Vec<u8> {
    response(b"BYE", None, "Too many authentication failures.")
}

/// A command postern could not parse.
pub fn parse_error(kind: ErrorKind) -> Vec<u8> {
    no(match kind {
        ErrorKind::LineTooLong => "Line too long.",
        ErrorKind::LiteralTooLarge => "Literal too large.",
        ErrorKind::MissingCommand => "Missing command.",
        ErrorKind::Syntax(_) => "Syntax error.",
        ErrorKind::MissingArgument => "Missing argument.",
        ErrorKind::InvalidArgument => "Invalid argument.",
        ErrorKind::UnexpectedArgument => "Unexpected argument.",
    })
}

/// `bytes` as a quoted string when it can be one (UTF-8 without CR, LF or NUL; `"` and
/// `\` escaped), else as a literal `{n}\r\n...` (RFC 5804 §4 `string`).
pub fn string(bytes: &[u8]) -> Vec<u8> {
    let quotable = std::str::from_utf8(bytes).is_ok()
        && !bytes.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0);
    if quotable {
        return quoted(bytes);
    }
    let mut out = format!("{{{}}}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out
}

/// `bytes` in double quotes, `"` and `\` escaped; the caller knows it is quotable.
fn quoted(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(b'"');
    for &b in bytes {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn capability_block_order_and_filtering() {
        let sasl = words("plain LOGIN OAUTHBEARER XOAUTH2");
        assert_eq!(sasl_mechanisms(&sasl, false), words("OAUTHBEARER XOAUTH2"));
        assert_eq!(
            sasl_mechanisms(&sasl, true),
            words("PLAIN LOGIN OAUTHBEARER XOAUTH2")
        );
        let block = capabilities(
            "postern \"test\"",
            &words("OAUTHBEARER"),
            &words("fileinto vacation"),
            true,
        );
        assert_eq!(
            String::from_utf8(block).expect("utf-8"),
            "\"IMPLEMENTATION\" \"postern \\\"test\\\"\"\r\n\
             \"VERSION\" \"1.0\"\r\n\
             \"SASL\" \"OAUTHBEARER\"\r\n\
             \"SIEVE\" \"fileinto vacation\"\r\n\
             \"STARTTLS\"\r\n\
             OK \"postern \\\"test\\\" ready.\"\r\n"
        );
        let block = capabilities("x", &[], &words("fileinto enotify"), false);
        assert_eq!(
            String::from_utf8(block).expect("utf-8"),
            "\"IMPLEMENTATION\" \"x\"\r\n\"VERSION\" \"1.0\"\r\n\"SASL\" \"\"\r\n\
             \"SIEVE\" \"fileinto enotify\"\r\n\"NOTIFY\" \"mailto\"\r\nOK \"x ready.\"\r\n"
        );
    }

    #[test]
    fn responses_are_crlf_terminated() {
        assert_eq!(noop(None), b"OK \"NOOP completed.\"\r\n");
        assert_eq!(
            noop(Some(b"STARTTLS-SYNC-42")),
            b"OK (TAG \"STARTTLS-SYNC-42\") \"Done\"\r\n"
        );
        assert_eq!(
            noop(Some(b"a\r\nb")),
            b"OK (TAG {4}\r\na\r\nb) \"Done\"\r\n"
        );
        assert_eq!(unavailable(), b"NO \"backend unavailable\"\r\n");
        assert_eq!(
            authentication_failed(),
            b"NO \"Authentication failed.\"\r\n"
        );
        assert_eq!(
            encrypt_needed(),
            b"NO (ENCRYPT-NEEDED) \"Cleartext authentication requires TLS.\"\r\n"
        );
        assert_eq!(continuation(), b"{0}\r\n\r\n");
        assert_eq!(challenge("VXNlcm5hbWU6"), b"\"VXNlcm5hbWU6\"\r\n");
        assert_eq!(string(b"\xff"), b"{1}\r\n\xff");
    }
}

//! Every POP3 string postern writes before authentication (reference §5 "POP3", §4.5,
//! §4.8, §8), as complete CRLF-terminated lines.

/// The fixed CAPA lines after USER, SASL and STLS (reference §5).
const FIXED_CAPABILITIES: [&str; 7] = [
    "TOP",
    "RESP-CODES",
    "PIPELINING",
    "EXPIRE NEVER",
    "UIDL",
    "UTF8",
    "IMPLEMENTATION Stalwart Server",
];

fn line(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len() + 2);
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    bytes
}

pub use crate::proto::auth::mechanisms;

/// `+OK <banner>`.
pub fn greeting(banner: &str) -> Vec<u8> {
    line(&format!("+OK {banner}"))
}

/// RFC 2449 §5, in the order of reference §5: `USER` while cleartext is allowed,
/// `SASL <mechs>` when any, `STLS` while an upgrade is possible, then the fixed lines.
pub fn capa(mechanisms: &[String], cleartext_allowed: bool, offer_stls: bool) -> Vec<u8> {
    let mut out = line("+OK Capability list follows");
    if cleartext_allowed {
        out.extend(line("USER"));
    }
    if !mechanisms.is_empty() {
        out.extend(line(&format!("SASL {}", mechanisms.join(" "))));
    }
    if offer_stls {
        out.extend(line("STLS"));
    }
    for capability in FIXED_CAPABILITIES {
        out.extend(line(capability));
    }
    out.extend(line("."));
    out
}

/// `AUTH` without an argument: the mechanisms, one per line (RFC 1734 practice).
pub fn mechanism_list(mechanisms: &[String]) -> Vec<u8> {
    let mut out = line("+OK");
    for mechanism in mechanisms {
        out.extend(line(mechanism));
    }
    out.extend(line("."));
    out
}

/// NOOP, UTF8 and an accepted USER.
pub fn ok() -> Vec<u8> {
    line("+OK")
}

pub fn bye() -> Vec<u8> {
    line("+OK Bye")
}

pub fn stls() -> Vec<u8> {
    line("+OK Begin TLS negotiation")
}

/// STLS on a listener without STARTTLS, or after the upgrade.
pub fn stls_unavailable() -> Vec<u8> {
    line("-ERR STLS not available")
}

/// STLS followed by pipelined plaintext (RFC 2595 §4, STYLE §3): the connection then
/// closes.
pub fn stls_pipelined() -> Vec<u8> {
    line("-ERR data pipelined after STLS")
}

pub fn apop_unsupported() -> Vec<u8> {
    line("-ERR APOP not supported")
}

pub fn unknown_command() -> Vec<u8> {
    line("-ERR unknown command")
}

/// USER, PASS, AUTH PLAIN or AUTH LOGIN without TLS while cleartext is not allowed.
pub fn cleartext_requires_tls() -> Vec<u8> {
    line("-ERR cleartext authentication requires TLS")
}

pub fn user_argument_required() -> Vec<u8> {
    line("-ERR USER requires an argument")
}

pub fn user_required() -> Vec<u8> {
    line("-ERR USER required before PASS")
}

/// A mechanism that is not configured, or not known at all.
pub fn mechanism_unsupported() -> Vec<u8> {
    line("-ERR unsupported mechanism")
}

pub fn auth_syntax() -> Vec<u8> {
    line("-ERR invalid AUTH arguments")
}

pub fn invalid_base64() -> Vec<u8> {
    line("-ERR invalid base64")
}

/// Credentials the SASL decoder refused (missing fields, CR/LF/NUL, not UTF-8).
pub fn malformed_credentials() -> Vec<u8> {
    line("-ERR malformed credentials")
}

/// RFC 5034 §4: `*` cancels the exchange with `-ERR`.
pub fn authentication_cancelled() -> Vec<u8> {
    line("-ERR authentication cancelled")
}

/// No backend could be had, or the identifier failed the safety check (reference §4.5).
pub fn unavailable() -> Vec<u8> {
    line("-ERR backend unavailable")
}

/// The generic failure of `hide_auth_errors` (reference §4.8).
pub fn authentication_failed() -> Vec<u8> {
    line("-ERR Authentication failed.")
}

pub fn line_too_long() -> Vec<u8> {
    line("-ERR line too long")
}

/// An empty server challenge (RFC 5034 §4: `+` and one space).
pub fn continuation() -> Vec<u8> {
    b"+ \r\n".to_vec()
}

/// A challenge carrying base64 (SASL LOGIN's prompts).
pub fn challenge(base64: &str) -> Vec<u8> {
    line(&format!("+ {base64}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn mechanisms_drop_cleartext_ones_without_tls() {
        let sasl = words("PLAIN LOGIN OAUTHBEARER XOAUTH2");
        assert_eq!(mechanisms(&sasl, false), words("OAUTHBEARER XOAUTH2"));
        assert_eq!(mechanisms(&sasl, true), sasl);
        assert!(mechanisms(&words("PLAIN"), false).is_empty());
    }

    #[test]
    fn capa_order() {
        let text = |b: Vec<u8>| String::from_utf8(b).expect("utf8");
        assert_eq!(
            text(capa(&words("OAUTHBEARER XOAUTH2"), false, true)),
            "+OK Capability list follows\r\nSASL OAUTHBEARER XOAUTH2\r\nSTLS\r\nTOP\r\n\
             RESP-CODES\r\nPIPELINING\r\nEXPIRE NEVER\r\nUIDL\r\nUTF8\r\n\
             IMPLEMENTATION Stalwart Server\r\n.\r\n"
        );
        assert_eq!(
            text(capa(&[], true, false)),
            "+OK Capability list follows\r\nUSER\r\nTOP\r\nRESP-CODES\r\nPIPELINING\r\n\
             EXPIRE NEVER\r\nUIDL\r\nUTF8\r\nIMPLEMENTATION Stalwart Server\r\n.\r\n"
        );
        assert_eq!(
            text(mechanism_list(&words("PLAIN XOAUTH2"))),
            "+OK\r\nPLAIN\r\nXOAUTH2\r\n.\r\n"
        );
    }

    #[test]
    fn replies_are_crlf_lines() {
        assert_eq!(greeting("hi there"), b"+OK hi there\r\n");
        assert_eq!(unavailable(), b"-ERR backend unavailable\r\n");
        assert_eq!(authentication_failed(), b"-ERR Authentication failed.\r\n");
        assert_eq!(continuation(), b"+ \r\n");
        assert_eq!(challenge("VXNlcm5hbWU6"), b"+ VXNlcm5hbWU6\r\n");
    }
}

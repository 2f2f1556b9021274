//! Every SMTP string postern writes before authentication (reference §5 "Submission",
//! §4.5, §4.8), as complete CRLF-terminated replies with RFC 3463 enhanced status
//! codes.

pub use crate::proto::auth::mechanisms;

fn line(text: String) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(b"\r\n");
    bytes
}

/// `220 <hostname> ESMTP <banner>` (RFC 5321 §4.2, §3.1).
pub fn greeting(hostname: &str, banner: &str) -> Vec<u8> {
    line(format!("220 {hostname} ESMTP {banner}"))
}

/// The `EHLO`/`LHLO` reply (RFC 5321 §4.1.1.1): `250-<hostname> at your service,
/// [<client helo>]`, the `ehlo` keywords, `STARTTLS` while an upgrade is possible, and
/// `AUTH <mechs>` last (when any mechanism is left).
pub fn ehlo(
    hostname: &str,
    client_helo: &str,
    keywords: &[String],
    offer_starttls: bool,
    mechanisms: &[String],
) -> Vec<u8> {
    let mut lines = vec![format!("{hostname} at your service, [{client_helo}]")];
    lines.extend(keywords.iter().cloned());
    if offer_starttls {
        lines.push("STARTTLS".into());
    }
    if !mechanisms.is_empty() {
        lines.push(format!("AUTH {}", mechanisms.join(" ")));
    }
    let last = lines.len() - 1;
    let mut out = Vec::new();
    for (i, text) in lines.iter().enumerate() {
        let sep = if i == last { ' ' } else { '-' };
        out.extend(line(format!("250{sep}{text}")));
    }
    out
}

/// `HELO` (RFC 5321 §4.1.1.1): no extensions.
pub fn helo(hostname: &str) -> Vec<u8> {
    line(format!("250 {hostname}"))
}

/// `NOOP`, `RSET`.
pub fn ok() -> Vec<u8> {
    line("250 2.0.0 OK".into())
}

/// `QUIT` (RFC 5321 §4.1.1.10); the connection then closes.
pub fn bye() -> Vec<u8> {
    line("221 2.0.0 Bye".into())
}

/// RFC 3207 §4: go ahead with the TLS handshake.
pub fn starttls() -> Vec<u8> {
    line("220 2.0.0 Ready to start TLS".into())
}

/// STARTTLS on a connection that is already TLS (implicit, or upgraded).
pub fn starttls_unavailable() -> Vec<u8> {
    line("503 5.5.1 TLS already active".into())
}

/// STARTTLS on a listener without TLS (RFC 3207 §4: 454).
pub fn starttls_not_configured() -> Vec<u8> {
    line("454 4.7.0 TLS not available".into())
}

/// STARTTLS followed by pipelined plaintext (RFC 3207 §4.2: the plaintext must not be
/// taken for protected input; STYLE §3): refused, then the connection closes.
pub fn starttls_pipelined() -> Vec<u8> {
    line("421 4.7.0 Data pipelined after STARTTLS, closing connection".into())
}

/// Any command that is not answered before authentication (`MAIL`, `RCPT`, ...).
pub fn not_allowed() -> Vec<u8> {
    line("503 5.5.1 Command not allowed here".into())
}

/// A line that is not a command (RFC 5321 §4.2.4).
pub fn syntax_error() -> Vec<u8> {
    line("500 5.5.2 Syntax error".into())
}

/// A command line longer than postern accepts (RFC 5321 §4.5.3.1.4).
pub fn line_too_long() -> Vec<u8> {
    line("500 5.5.2 Line too long".into())
}

/// An `AUTH` exchange line longer than postern accepts (RFC 4954 §6).
pub fn auth_line_too_long() -> Vec<u8> {
    line("500 5.5.6 Authentication Exchange line is too long".into())
}

/// PLAIN or LOGIN before TLS while cleartext is not allowed (RFC 4954 §6).
pub fn encryption_required() -> Vec<u8> {
    line("538 5.7.11 Encryption required for requested authentication mechanism".into())
}

/// A mechanism that is not configured, or not known at all (RFC 4954 §4).
pub fn mechanism_unsupported() -> Vec<u8> {
    line("504 5.5.4 Unrecognized authentication type".into())
}

/// A response that is not base64 (RFC 4954 §4: 501 with 5.5.2).
pub fn invalid_base64() -> Vec<u8> {
    line("501 5.5.2 Cannot decode response".into())
}

/// Credentials the SASL decoder refused (missing fields, CR/LF/NUL, not UTF-8).
pub fn malformed_credentials() -> Vec<u8> {
    line("535 5.7.8 Authentication credentials invalid".into())
}

/// The generic failure of `hide_auth_errors` (reference §4.8).
pub fn authentication_failed() -> Vec<u8> {
    line("535 5.7.8 Authentication failed.".into())
}

/// RFC 4954 §4: `*` cancels the exchange.
pub fn authentication_cancelled() -> Vec<u8> {
    line("501 5.0.0 Authentication cancelled".into())
}

/// A server challenge (RFC 4954 §4): `334 <base64>`, `334 ` when empty.
pub fn challenge(base64: &str) -> Vec<u8> {
    line(format!("334 {base64}"))
}

/// No backend could be had, or the identifier failed the safety check (reference
/// §4.5). RFC 5321 §3.8: a 421 reply closes the connection.
pub fn unavailable() -> Vec<u8> {
    line("421 4.3.0 backend unavailable".into())
}

/// Sent before closing once `max_auth_attempts` is reached.
pub fn too_many_failures() -> Vec<u8> {
    line("421 4.7.0 Too many authentication failures, closing connection".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn mechanisms_are_filtered_like_imap() {
        let sasl = words("PLAIN LOGIN OAUTHBEARER XOAUTH2");
        assert_eq!(mechanisms(&sasl, false), words("OAUTHBEARER XOAUTH2"));
        assert_eq!(mechanisms(&sasl, true), sasl);
    }

    #[test]
    fn ehlo_layout() {
        let got = ehlo(
            "mx.test",
            "client",
            &words("PIPELINING SIZE"),
            true,
            &words("PLAIN XOAUTH2"),
        );
        assert_eq!(
            String::from_utf8(got).expect("utf8"),
            "250-mx.test at your service, [client]\r\n250-PIPELINING\r\n250-SIZE\r\n\
             250-STARTTLS\r\n250 AUTH PLAIN XOAUTH2\r\n"
        );
        assert_eq!(
            ehlo("mx.test", "c", &[], false, &[]),
            b"250 mx.test at your service, [c]\r\n"
        );
    }

    #[test]
    fn fixed_replies() {
        assert_eq!(
            greeting("mx.test", "at your service."),
            b"220 mx.test ESMTP at your service.\r\n"
        );
        assert_eq!(challenge(""), b"334 \r\n");
        assert_eq!(unavailable(), b"421 4.3.0 backend unavailable\r\n");
    }
}

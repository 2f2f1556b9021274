//! SMTP command lines before authentication (RFC 5321 §4.1, RFC 4954 §4, RFC 3207 §4):
//! line framing with a length limit, and the commands postern answers itself.
//!
//! Verbs are matched case-insensitively on bytes. Nothing here logs or prints a SASL
//! payload: initial responses sit in [`Redacted`].

use crate::proto::dialogue::Redacted;

/// Longest line accepted before authentication, CRLF included. RFC 4954 §4 lets an
/// `AUTH` line with an initial response reach 12288 octets (OAuth tokens are long);
/// every other command is far shorter (RFC 5321 §4.5.3.1.4: 512).
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Longest verb postern looks at (`STARTTLS`, `XCLIENT`, `MAIL`...).
const MAX_VERB_BYTES: usize = 16;
/// Verbs of the mail transaction and other sessions (RFC 5321, 3030, 4468, 1985, XCLIENT,
/// XFORWARD): named in logs when refused. Any other word stays unnamed, since it may be a
/// credential (a base64 SASL line sent after its AUTH was refused).
const OTHER_VERBS: [&str; 12] = [
    "MAIL", "RCPT", "DATA", "BDAT", "VRFY", "EXPN", "HELP", "ETRN", "ATRN", "BURL", "XCLIENT",
    "XFORWARD",
];
/// Longest SASL mechanism name (RFC 4422 §3.1: 20 characters).
const MAX_MECHANISM_BYTES: usize = 20;

/// One command postern answers before authentication.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `EHLO <domain>` (RFC 5321 §4.1.1.1), or `LHLO` (RFC 2033).
    Ehlo { domain: String },
    /// `HELO <domain>`.
    Helo { domain: String },
    /// `AUTH <mechanism> [<initial-response>]` (RFC 4954 §4).
    Auth {
        mechanism: String,
        initial_response: Option<Redacted<Vec<u8>>>,
    },
    /// `STARTTLS` (RFC 3207 §4).
    StartTls,
    /// `NOOP [<string>]`.
    Noop,
    /// `RSET`.
    Rset,
    /// `QUIT`.
    Quit,
    /// Any other well-formed verb: not allowed before authentication. Named (upper-cased)
    /// only when it is one of the known verbs (`MAIL`, `RCPT`, `DATA`, `VRFY`, ...).
    Other(Option<&'static str>),
}

impl Command {
    /// The verb, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ehlo { .. } => "EHLO",
            Command::Helo { .. } => "HELO",
            Command::Auth { .. } => "AUTH",
            Command::StartTls => "STARTTLS",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Quit => "QUIT",
            Command::Other(Some(verb)) => verb,
            Command::Other(None) => "<unknown>",
        }
    }
}

/// A line that is not a command postern can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntaxError {
    /// No verb, a verb that is not letters, or arguments a command does not take.
    Syntax,
    /// The line passed [`MAX_LINE_BYTES`].
    LineTooLong,
}

/// One framed line, without its CRLF (or bare LF).
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Text(&'a [u8]),
    /// An overlong line, now skipped up to and including its LF.
    TooLong,
}

/// Splits client input into lines, skipping the rest of an overlong line (STYLE §3
/// "Discarding") so the stream stays in sync.
#[derive(Debug, Default)]
pub struct Framer {
    /// Inside an overlong line: bytes are dropped until its LF.
    discarding: bool,
}

impl Framer {
    pub fn new() -> Framer {
        Framer::default()
    }

    /// Forgets a partial overlong line (after STARTTLS).
    pub fn reset(&mut self) {
        self.discarding = false;
    }

    /// The next line at the front of `input` and how many bytes it used, or `None` with
    /// the bytes consumed so far (an overlong partial line is dropped as it comes).
    pub fn next_line<'a>(&mut self, input: &'a [u8]) -> (Option<Line<'a>>, usize) {
        match input.iter().position(|&b| b == b'\n') {
            Some(lf) if self.discarding => {
                self.discarding = false;
                (Some(Line::TooLong), lf + 1)
            }
            Some(lf) if lf + 1 > MAX_LINE_BYTES => (Some(Line::TooLong), lf + 1),
            Some(lf) => {
                let line = &input[..lf];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                (Some(Line::Text(line)), lf + 1)
            }
            None if self.discarding || input.len() >= MAX_LINE_BYTES => {
                self.discarding = true;
                (None, input.len())
            }
            None => (None, 0),
        }
    }
}

/// Parses one command line (without its line end).
pub fn parse(line: &[u8]) -> Result<Command, SyntaxError> {
    let (verb, args) = match line.iter().position(|&b| b == b' ') {
        Some(sp) => (&line[..sp], trim(&line[sp + 1..])),
        None => (line, &line[line.len()..]),
    };
    if verb.is_empty() || verb.len() > MAX_VERB_BYTES || !verb.iter().all(u8::is_ascii_alphabetic) {
        return Err(SyntaxError::Syntax);
    }
    let verb = verb.to_ascii_uppercase();
    let no_args = |command: Command| {
        if args.is_empty() {
            Ok(command)
        } else {
            Err(SyntaxError::Syntax)
        }
    };
    match verb.as_slice() {
        b"EHLO" | b"LHLO" => Ok(Command::Ehlo {
            domain: domain(args)?,
        }),
        b"HELO" => Ok(Command::Helo {
            domain: domain(args)?,
        }),
        b"AUTH" => auth(args),
        b"STARTTLS" => no_args(Command::StartTls),
        b"RSET" => no_args(Command::Rset),
        b"QUIT" => no_args(Command::Quit),
        // RFC 5321 §4.1.1.9: NOOP may carry a string, which is ignored.
        b"NOOP" => Ok(Command::Noop),
        _ => Ok(Command::Other(
            OTHER_VERBS
                .into_iter()
                .find(|v| v.as_bytes() == verb.as_slice()),
        )),
    }
}

/// The first word of `EHLO`/`HELO`'s argument: required, printable, UTF-8 (RFC 6531
/// clients may send U-labels).
fn domain(args: &[u8]) -> Result<String, SyntaxError> {
    let word = args.split(|&b| b == b' ').next().unwrap_or_default();
    if word.is_empty() || word.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(SyntaxError::Syntax);
    }
    String::from_utf8(word.to_vec()).map_err(|_| SyntaxError::Syntax)
}

/// `AUTH <mechanism> [<initial-response>]`.
fn auth(args: &[u8]) -> Result<Command, SyntaxError> {
    let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let mechanism = words.next().ok_or(SyntaxError::Syntax)?;
    let initial_response = words.next();
    if words.next().is_some()
        || mechanism.len() > MAX_MECHANISM_BYTES
        || !mechanism
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(SyntaxError::Syntax);
    }
    Ok(Command::Auth {
        mechanism: String::from_utf8_lossy(mechanism).to_ascii_uppercase(),
        initial_response: initial_response.map(|r| Redacted::new(r.to_vec())),
    })
}

/// A client's answer inside an `AUTH` exchange (RFC 4954 §4).
#[derive(Debug, PartialEq, Eq)]
pub enum SaslResponse {
    /// `*`: the client cancels.
    Cancel,
    /// Base64 text (possibly empty), still encoded.
    Data(Redacted<Vec<u8>>),
}

/// Parses an `AUTH` continuation answer (without its line end).
pub fn parse_sasl_response(line: &[u8]) -> SaslResponse {
    let line = trim(line);
    if line == b"*" {
        return SaslResponse::Cancel;
    }
    SaslResponse::Data(Redacted::new(line.to_vec()))
}

/// `bytes` without leading and trailing spaces and tabs.
fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// True when `name` may be sent to a backend as the client's EHLO name (backend `EHLO`,
/// XCLIENT `HELO=`): a domain (letters, digits, `-`, `_`, `.`) or an address literal
/// (`[192.0.2.1]`, `[IPv6:2001:db8::1]`), at most 255 octets. Nothing that would need
/// xtext encoding (RFC 3461 §4: `+`, `=`) or could break a command line.
pub fn is_safe_helo(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 {
        return false;
    }
    if let Some(inner) = bytes.strip_prefix(b"[").and_then(|b| b.strip_suffix(b"]")) {
        return !inner.is_empty()
            && inner
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'-'));
    }
    bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_and_arguments() {
        assert_eq!(
            parse(b"ehlo client.example"),
            Ok(Command::Ehlo {
                domain: "client.example".into()
            })
        );
        assert_eq!(
            parse(b"LHLO  [192.0.2.1] extra"),
            Ok(Command::Ehlo {
                domain: "[192.0.2.1]".into()
            })
        );
        assert_eq!(parse(b"HELO x"), Ok(Command::Helo { domain: "x".into() }));
        assert_eq!(parse(b"EHLO"), Err(SyntaxError::Syntax));
        assert_eq!(parse(b"EHLO a\x01b"), Err(SyntaxError::Syntax));
        assert_eq!(parse(b"StartTLS"), Ok(Command::StartTls));
        assert_eq!(parse(b"STARTTLS now"), Err(SyntaxError::Syntax));
        assert_eq!(parse(b"NOOP anything"), Ok(Command::Noop));
        assert_eq!(parse(b"RSET "), Ok(Command::Rset));
        assert_eq!(parse(b"quit"), Ok(Command::Quit));
        assert_eq!(parse(b"mail FROM:<a@b>"), Ok(Command::Other(Some("MAIL"))));
        // A base64 SASL line sent as a command is not named in logs.
        assert_eq!(parse(b"cHc"), Ok(Command::Other(None)));
        assert_eq!(parse(b""), Err(SyntaxError::Syntax));
        assert_eq!(parse(b" EHLO x"), Err(SyntaxError::Syntax));
        assert_eq!(parse(b"EH1O x"), Err(SyntaxError::Syntax));
    }

    #[test]
    fn auth_arguments() {
        assert_eq!(
            parse(b"auth plain AGEAYg=="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: Some(Redacted::new(b"AGEAYg==".to_vec())),
            })
        );
        assert_eq!(
            parse(b"AUTH XOAUTH2"),
            Ok(Command::Auth {
                mechanism: "XOAUTH2".into(),
                initial_response: None,
            })
        );
        assert_eq!(parse(b"AUTH"), Err(SyntaxError::Syntax));
        assert_eq!(parse(b"AUTH PLAIN a b"), Err(SyntaxError::Syntax));
        assert_eq!(parse(b"AUTH PL@IN"), Err(SyntaxError::Syntax));
    }

    #[test]
    fn framing_and_overlong_lines() {
        let mut f = Framer::new();
        assert_eq!(f.next_line(b"NOOP\r\nQUIT"), (Some(Line::Text(b"NOOP")), 6));
        assert_eq!(f.next_line(b"QUIT"), (None, 0));
        assert_eq!(f.next_line(b"QUIT\n"), (Some(Line::Text(b"QUIT")), 5));
        let long = vec![b'x'; MAX_LINE_BYTES];
        assert_eq!(f.next_line(&long), (None, MAX_LINE_BYTES));
        assert_eq!(f.next_line(b"xx"), (None, 2));
        assert_eq!(f.next_line(b"x\r\nNOOP\r\n"), (Some(Line::TooLong), 3));
        assert_eq!(f.next_line(b"NOOP\r\n"), (Some(Line::Text(b"NOOP")), 6));
    }

    #[test]
    fn sasl_responses() {
        assert_eq!(parse_sasl_response(b" * "), SaslResponse::Cancel);
        assert_eq!(
            parse_sasl_response(b"AGEAYg=="),
            SaslResponse::Data(Redacted::new(b"AGEAYg==".to_vec()))
        );
    }

    #[test]
    fn safe_helo_names() {
        for ok in [
            "mail.example",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "my_pc",
            "a",
        ] {
            assert!(is_safe_helo(ok), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            "a b",
            "a+b",
            "x=y",
            "[]",
            "[a b]",
            "caf\u{e9}",
            long.as_str(),
            "a\tb",
        ] {
            assert!(!is_safe_helo(bad), "{bad:?}");
        }
    }
}

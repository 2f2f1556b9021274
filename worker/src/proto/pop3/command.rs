//! POP3 commands of the AUTHORIZATION state and their resumable parser.
//!
//! [`Decoder`] frames the byte stream with the shared [`Framer`] in line mode (POP3 has
//! no literals: a password ending in `{5}` is just text) and parses each complete line
//! into a [`Command`] (RFC 1939 §3, §7; RFC 2449 §5 CAPA; RFC 2595 §4 STLS; RFC 5034 §4
//! AUTH; RFC 6856 §2 UTF8). Lines are bounded: a command by [`MAX_LINE_BYTES`], a SASL
//! response (base64 tokens can be long) by [`MAX_LITERAL_BYTES`]; a longer line is
//! skipped to its end and reported as [`LineTooLong`], so the stream stays in sync.
//! Credentials sit in [`Redacted`], so no `Debug` output can show them.

use crate::proto::grammar::{Framed, Framer, Limits, Mode, MAX_LINE_BYTES, MAX_LITERAL_BYTES};

pub use crate::proto::dialogue::Redacted;
pub use crate::sasl::Mechanism;

/// Bounds of one command line (CRLF included).
const COMMAND_LIMITS: Limits = Limits {
    line_bytes: MAX_LINE_BYTES,
    literal_bytes: MAX_LINE_BYTES,
};
/// Bounds of one SASL response line (CRLF included).
const RESPONSE_LIMITS: Limits = Limits {
    line_bytes: MAX_LINE_BYTES,
    literal_bytes: MAX_LITERAL_BYTES,
};
/// Longest mechanism name kept for lookups and logs (RFC 4422 §3.1 allows 20).
const MAX_MECHANISM_NAME: usize = 20;

/// Verbs of the TRANSACTION state (RFC 1939 §5, §7): named in logs when sent too
/// early. Any other unknown verb is logged without its text, which could be a
/// password a confused client sent on its own line.
const TRANSACTION_VERBS: [&str; 8] = [
    "STAT", "LIST", "RETR", "DELE", "RSET", "TOP", "UIDL", "LAST",
];

/// A command of the AUTHORIZATION state, with typed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capa,
    Noop,
    /// RFC 6856.
    Utf8,
    Quit,
    Stls,
    /// Always refused (reference §3.1).
    Apop,
    /// `USER <name>`: everything after the first space, as sent (may be empty).
    User(Redacted<Vec<u8>>),
    /// `PASS <password>`: everything after the first space, spaces included
    /// (RFC 1939 §7: the argument may contain spaces).
    Pass(Redacted<Vec<u8>>),
    /// `AUTH [<mechanism> [<initial response>]]`. The mechanism is upper-cased; the
    /// initial response is the base64 text as sent (`=` for an empty one).
    Auth {
        mechanism: Option<String>,
        initial_response: Option<Redacted<Vec<u8>>>,
    },
    /// `AUTH` with more than two arguments.
    AuthSyntax,
    /// Anything else. `Some` names a TRANSACTION verb sent before authentication.
    Unknown(Option<&'static str>),
}

impl Command {
    /// Parses one line, line end removed.
    pub fn parse(line: &[u8]) -> Command {
        let (verb, args) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        let is = |name: &str| verb.eq_ignore_ascii_case(name.as_bytes());
        if is("CAPA") {
            Command::Capa
        } else if is("NOOP") {
            Command::Noop
        } else if is("UTF8") {
            Command::Utf8
        } else if is("QUIT") {
            Command::Quit
        } else if is("STLS") {
            Command::Stls
        } else if is("APOP") {
            Command::Apop
        } else if is("USER") {
            Command::User(Redacted::new(args.to_vec()))
        } else if is("PASS") {
            Command::Pass(Redacted::new(args.to_vec()))
        } else if is("AUTH") {
            parse_auth(args)
        } else {
            Command::Unknown(TRANSACTION_VERBS.into_iter().find(|v| is(v)))
        }
    }

    /// The verb, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Capa => "CAPA",
            Command::Noop => "NOOP",
            Command::Utf8 => "UTF8",
            Command::Quit => "QUIT",
            Command::Stls => "STLS",
            Command::Apop => "APOP",
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Auth { .. } | Command::AuthSyntax => "AUTH",
            Command::Unknown(Some(verb)) => verb,
            Command::Unknown(None) => "<unknown>",
        }
    }
}

fn parse_auth(args: &[u8]) -> Command {
    let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let mechanism = words.next().map(mechanism_name);
    let initial_response = words.next().map(|w| Redacted::new(w.to_vec()));
    if words.next().is_some() {
        return Command::AuthSyntax;
    }
    Command::Auth {
        mechanism,
        initial_response,
    }
}

/// The mechanism name upper-cased; anything that cannot be one becomes `<invalid>`, so
/// it matches nothing and logs nothing the client typed.
fn mechanism_name(word: &[u8]) -> String {
    let valid = word.len() <= MAX_MECHANISM_NAME
        && word
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match std::str::from_utf8(word) {
        Ok(name) if valid => name.to_ascii_uppercase(),
        _ => "<invalid>".into(),
    }
}

/// The client's line inside an `AUTH` exchange (RFC 5034 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslResponse {
    /// `*`: the client cancels the exchange.
    Abort,
    /// Base64 text as sent.
    Data(Redacted<Vec<u8>>),
}

/// A line longer than its limit; it has been skipped up to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

/// Resumable decoder of the client's lines.
pub struct Decoder {
    commands: Framer,
    responses: Framer,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            commands: Framer::new(COMMAND_LIMITS),
            responses: Framer::new(RESPONSE_LIMITS),
        }
    }

    /// The next command from the front of `input`; `Ok(None)` when more bytes are
    /// needed (all of `input` was taken).
    pub fn decode_command(&mut self, input: &mut &[u8]) -> Result<Option<Command>, LineTooLong> {
        Ok(next_line(&mut self.commands, input)?.map(|line| Command::parse(&line)))
    }

    /// The next SASL response line from the front of `input`.
    pub fn decode_response(
        &mut self,
        input: &mut &[u8],
    ) -> Result<Option<SaslResponse>, LineTooLong> {
        Ok(next_line(&mut self.responses, input)?.map(|line| {
            if line == b"*" {
                SaslResponse::Abort
            } else {
                SaslResponse::Data(Redacted::new(line))
            }
        }))
    }

    /// Forgets any partial line (after the TLS upgrade).
    pub fn reset(&mut self) {
        self.commands.reset();
        self.responses.reset();
    }
}

/// One line from `framer`. Both framers are idle at every state change, because the
/// machine changes state only right after a complete line.
fn next_line(framer: &mut Framer, input: &mut &[u8]) -> Result<Option<Vec<u8>>, LineTooLong> {
    match framer.decode(input, Mode::Line) {
        Ok(Some(Framed::Line(line))) => Ok(Some(line)),
        // Line mode never announces a literal.
        Ok(Some(Framed::NeedContinuation { .. })) | Ok(None) => Ok(None),
        Err(_) => Err(LineTooLong),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Command {
        Command::parse(line.as_bytes())
    }

    fn secret(s: &str) -> Redacted<Vec<u8>> {
        Redacted::new(s.as_bytes().to_vec())
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(parse("capa"), Command::Capa);
        assert_eq!(parse("NoOp"), Command::Noop);
        assert_eq!(parse("utf8"), Command::Utf8);
        assert_eq!(parse("QUIT"), Command::Quit);
        assert_eq!(parse("stls"), Command::Stls);
        assert_eq!(parse("apop alice 0123abc"), Command::Apop);
        assert_eq!(parse("STAT"), Command::Unknown(Some("STAT")));
        assert_eq!(parse("retr 1"), Command::Unknown(Some("RETR")));
        assert_eq!(parse("hunter2"), Command::Unknown(None));
        assert_eq!(parse(""), Command::Unknown(None));
        assert_eq!(parse("hunter2").name(), "<unknown>");
    }

    #[test]
    fn user_and_pass_keep_their_argument_verbatim() {
        assert_eq!(parse("USER alice"), Command::User(secret("alice")));
        assert_eq!(parse("user"), Command::User(secret("")));
        assert_eq!(parse("PASS a b  c "), Command::Pass(secret("a b  c ")));
        assert_eq!(parse("PASS  lead"), Command::Pass(secret(" lead")));
        assert_eq!(parse("pass {5}"), Command::Pass(secret("{5}")));
    }

    #[test]
    fn auth_arguments() {
        assert_eq!(
            parse("AUTH"),
            Command::Auth {
                mechanism: None,
                initial_response: None
            }
        );
        assert_eq!(
            parse("auth plain"),
            Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial_response: None
            }
        );
        assert_eq!(
            parse("AUTH xoauth2  dXNlcj0="),
            Command::Auth {
                mechanism: Some("XOAUTH2".into()),
                initial_response: Some(secret("dXNlcj0="))
            }
        );
        assert_eq!(parse("AUTH PLAIN a b"), Command::AuthSyntax);
        assert_eq!(
            parse("AUTH pl\u{e4}in"),
            Command::Auth {
                mechanism: Some("<invalid>".into()),
                initial_response: None
            }
        );
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Vec<Result<Command, LineTooLong>> {
        let mut out = Vec::new();
        let mut input = bytes;
        loop {
            match decoder.decode_command(&mut input) {
                Ok(Some(c)) => out.push(Ok(c)),
                Ok(None) => break,
                Err(e) => out.push(Err(e)),
            }
        }
        out
    }

    #[test]
    fn overlong_lines_are_skipped_whole_and_byte_by_byte() {
        let mut stream = b"NOOP\r\n".to_vec();
        stream.extend(b"USER ");
        stream.extend(vec![b'x'; MAX_LINE_BYTES]);
        stream.extend(b"\r\nQUIT\n");
        let want = vec![Ok(Command::Noop), Err(LineTooLong), Ok(Command::Quit)];
        assert_eq!(decode_all(&mut Decoder::new(), &stream), want);
        let mut decoder = Decoder::new();
        let bytewise: Vec<_> = stream
            .iter()
            .flat_map(|b| decode_all(&mut decoder, std::slice::from_ref(b)))
            .collect();
        assert_eq!(bytewise, want);
    }

    #[test]
    fn longest_command_line_fits() {
        let mut line = b"USER ".to_vec();
        line.extend(vec![b'y'; MAX_LINE_BYTES - 7]);
        line.extend(b"\r\n");
        assert_eq!(line.len(), MAX_LINE_BYTES);
        let got = decode_all(&mut Decoder::new(), &line);
        assert!(matches!(got.as_slice(), [Ok(Command::User(_))]));
    }

    #[test]
    fn sasl_responses_may_be_longer_than_commands() {
        let mut line = vec![b'A'; MAX_LINE_BYTES * 2];
        line.extend(b"\r\n*\r\n");
        let mut decoder = Decoder::new();
        let mut input = &line[..];
        assert!(matches!(
            decoder.decode_response(&mut input),
            Ok(Some(SaslResponse::Data(_)))
        ));
        assert_eq!(
            decoder.decode_response(&mut input),
            Ok(Some(SaslResponse::Abort))
        );
    }
}

//! ManageSieve commands before authentication and their resumable parser (RFC 5804 §2,
//! §4).
//!
//! [`Decoder`] frames the byte stream with the shared [`Framer`] and parses each
//! complete line into a [`Command`]. ManageSieve commands carry no tag; arguments are
//! quoted strings or literals. Only the commands postern answers itself get typed
//! arguments; any other verb becomes [`Command::Unknown`] without its arguments being
//! read. Credentials sit in [`Redacted`], so no `Debug` output can show them.
//!
//! Literals: RFC 5804 §4 lets clients send only non-synchronising literals
//! (`literal-c2s = "{" number "+}" CRLF *OCTET`) and gives the server no way to ask for
//! the data, so a client's `{n}` is read like `{n+}`: the data follows at once. When such
//! a literal breaks the size limit, its data is skipped here, so the stream stays in
//! sync.

use std::fmt;

use crate::proto::grammar::{
    Framed, Framer, Grammar, Limits, Mode, Overflow, SyntaxError, Token, Tokens,
};

pub use crate::proto::dialogue::Redacted;
pub use crate::sasl::Mechanism;

/// The ManageSieve grammar for the shared tokenizer.
pub struct ManageSieve;

impl Grammar for ManageSieve {
    /// RFC 5804 `ATOM-CHAR`: any CHAR but SP, CTL, `"`, `(`, `)`, `\` and `{`. Bytes
    /// above 0x7f are tolerated (UTF-8 in unquoted words).
    fn is_atom_char(b: u8) -> bool {
        b > b' ' && b != 0x7f && !matches!(b, b'"' | b'(' | b')' | b'\\' | b'{')
    }
    const LISTS: bool = false;
}

/// A command of the not-authenticated state, with typed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capability,
    /// RFC 5804 §2.13: `NOOP [string]`; the string comes back in a `TAG` response code.
    Noop(Option<Vec<u8>>),
    Logout,
    StartTls,
    /// `AUTHENTICATE <mechanism> [<initial response>]`. The mechanism name is
    /// upper-cased; the initial response is the base64 text as sent.
    Authenticate {
        mechanism: String,
        initial_response: Option<Redacted<Vec<u8>>>,
    },
    /// Any other verb, upper-cased; its arguments are not parsed.
    Unknown(String),
}

impl Command {
    /// The verb, for logs.
    pub fn name(&self) -> &str {
        match self {
            Command::Capability => "CAPABILITY",
            Command::Noop(_) => "NOOP",
            Command::Logout => "LOGOUT",
            Command::StartTls => "STARTTLS",
            Command::Authenticate { .. } => "AUTHENTICATE",
            Command::Unknown(name) => name,
        }
    }
}

/// The client's answer during an `AUTHENTICATE` exchange (RFC 5804 §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslResponse {
    /// `"*"`: the client cancels.
    Abort,
    /// The base64 text as sent (possibly empty).
    Data(Redacted<Vec<u8>>),
}

/// Why a line is not a valid command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("line too long")]
    LineTooLong,
    #[error("literal too large")]
    LiteralTooLarge,
    #[error("missing command")]
    MissingCommand,
    #[error("{0}")]
    Syntax(#[from] SyntaxError),
    #[error("missing argument")]
    MissingArgument,
    #[error("invalid argument")]
    InvalidArgument,
    #[error("unexpected argument")]
    UnexpectedArgument,
}

/// Bytes of a refused literal still to be skipped, then the rest of its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    None,
    Literal(u64),
    ToEndOfLine,
}

/// Resumable ManageSieve command decoder: feed it the unread input; it consumes what it
/// uses.
pub struct Decoder {
    /// Frames commands: lines up to the pre-auth line limit.
    commands: Framer,
    /// Frames SASL responses: a quoted base64 token may be as long as a literal, as an
    /// IMAP continuation line may (a large OAuth token).
    responses: Framer,
    skip: Skip,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("skip", &self.skip)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            commands: Framer::new(limits),
            responses: Framer::new(Limits {
                line_bytes: limits.literal_bytes,
                literal_bytes: limits.literal_bytes,
            }),
            skip: Skip::None,
        }
    }

    /// The next command. `Ok(None)`: all of `input` was taken and more is needed.
    /// Empty lines are skipped.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Command>, ErrorKind> {
        loop {
            match self.frame(input, false)? {
                None => return Ok(None),
                Some(line) if line.iter().all(|&b| b == b' ') => continue,
                Some(line) => return parse(&line).map(Some),
            }
        }
    }

    /// The client's next answer inside an `AUTHENTICATE` exchange: a quoted string or a
    /// literal (RFC 5804 §2.1); a bare word or an empty line is taken as well.
    pub fn decode_response(
        &mut self,
        input: &mut &[u8],
    ) -> Result<Option<SaslResponse>, ErrorKind> {
        let Some(line) = self.frame(input, true)? else {
            return Ok(None);
        };
        let mut tokens = Tokens::<ManageSieve>::new(&line);
        let data = match tokens.next() {
            None => Vec::new(),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(token)) => token
                .as_astring()
                .map(<[u8]>::to_vec)
                .ok_or(ErrorKind::InvalidArgument)?,
        };
        match tokens.next() {
            None => {}
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(_)) => return Err(ErrorKind::UnexpectedArgument),
        }
        if data == b"*" {
            return Ok(Some(SaslResponse::Abort));
        }
        Ok(Some(SaslResponse::Data(Redacted::new(data))))
    }

    /// Forgets any partial command (after STARTTLS).
    pub fn reset(&mut self) {
        self.commands.reset();
        self.responses.reset();
        self.skip = Skip::None;
    }

    /// True when no command is partly read.
    pub fn is_idle(&self) -> bool {
        self.skip == Skip::None && self.commands.is_idle() && self.responses.is_idle()
    }

    /// The next complete command (or SASL response), literal data included.
    fn frame(&mut self, input: &mut &[u8], response: bool) -> Result<Option<Vec<u8>>, ErrorKind> {
        let framer = if response {
            &mut self.responses
        } else {
            &mut self.commands
        };
        loop {
            if !self.skip.advance(input) {
                return Ok(None);
            }
            match framer.decode(input, Mode::Command) {
                Ok(None) => return Ok(None),
                // No continuation exists in ManageSieve: the data follows at once.
                Ok(Some(Framed::NeedContinuation { .. })) => continue,
                Ok(Some(Framed::Line(line))) => return Ok(Some(line)),
                Err(oversized) => {
                    if let Some(size) = oversized.refused_sync_literal() {
                        self.skip = Skip::Literal(size);
                    }
                    return Err(match oversized.overflow {
                        Overflow::Line => ErrorKind::LineTooLong,
                        Overflow::Literal => ErrorKind::LiteralTooLarge,
                    });
                }
            }
        }
    }
}

impl Skip {
    /// Skips what is left of a refused literal; true once nothing is left to skip.
    fn advance(&mut self, input: &mut &[u8]) -> bool {
        if let Skip::Literal(remaining) = self {
            let n = usize::try_from(*remaining)
                .unwrap_or(usize::MAX)
                .min(input.len());
            *input = &input[n..];
            *remaining -= n as u64;
            if *remaining > 0 {
                return false;
            }
            *self = Skip::ToEndOfLine;
        }
        if *self == Skip::ToEndOfLine {
            let Some(lf) = input.iter().position(|&b| b == b'\n') else {
                *input = &[];
                return false;
            };
            *input = &input[lf + 1..];
            *self = Skip::None;
        }
        true
    }
}

/// Parses one complete command line (its final CRLF removed).
pub fn parse(line: &[u8]) -> Result<Command, ErrorKind> {
    let mut tokens = Tokens::<ManageSieve>::new(line);
    let verb = match tokens.next() {
        Some(Ok(Token::Atom(verb))) => verb,
        Some(Err(e)) => return Err(e.into()),
        _ => return Err(ErrorKind::MissingCommand),
    };
    let command = match verb.to_ascii_uppercase().as_slice() {
        b"CAPABILITY" => Command::Capability,
        b"LOGOUT" => Command::Logout,
        b"STARTTLS" => Command::StartTls,
        b"NOOP" => match tokens.next() {
            None => return Ok(Command::Noop(None)),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(token)) => Command::Noop(Some(
                token
                    .as_string()
                    .map(<[u8]>::to_vec)
                    .ok_or(ErrorKind::InvalidArgument)?,
            )),
        },
        b"AUTHENTICATE" => {
            let mechanism = match tokens.next() {
                None => return Err(ErrorKind::MissingArgument),
                Some(Err(e)) => return Err(e.into()),
                // RFC 5804 wants a string; a bare atom is tolerated.
                Some(Ok(token)) => token
                    .as_astring()
                    .map(|m| String::from_utf8_lossy(m).to_ascii_uppercase())
                    .ok_or(ErrorKind::InvalidArgument)?,
            };
            let initial_response = match tokens.next() {
                None => None,
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(token)) => Some(Redacted::new(
                    token
                        .as_astring()
                        .map(<[u8]>::to_vec)
                        .ok_or(ErrorKind::InvalidArgument)?,
                )),
            };
            Command::Authenticate {
                mechanism,
                initial_response,
            }
        }
        other => {
            return Ok(Command::Unknown(
                String::from_utf8_lossy(other).into_owned(),
            ))
        }
    };
    match tokens.next() {
        None => Ok(command),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(_)) => Err(ErrorKind::UnexpectedArgument),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Out = Result<Command, ErrorKind>;

    /// Decodes `input` fed in chunks of `chunk` bytes.
    fn decode_chunks(input: &[u8], chunk: usize) -> Vec<Out> {
        let mut decoder = Decoder::new(Limits::PRE_AUTH);
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            let mut rest = piece;
            loop {
                match decoder.decode(&mut rest) {
                    Ok(None) => break,
                    Ok(Some(c)) => out.push(Ok(c)),
                    Err(e) => out.push(Err(e)),
                }
            }
            assert!(rest.is_empty());
        }
        out
    }

    /// Every vector runs whole, then one byte at a time; both must agree.
    fn decode_all(input: &[u8]) -> Vec<Out> {
        let whole = decode_chunks(input, input.len().max(1));
        assert_eq!(
            whole,
            decode_chunks(input, 1),
            "whole and byte-by-byte differ"
        );
        whole
    }

    fn one(input: &[u8]) -> Out {
        let mut out = decode_all(input);
        assert_eq!(out.len(), 1, "{out:?}");
        out.remove(0)
    }

    fn auth(mechanism: &str, ir: Option<&[u8]>) -> Out {
        Ok(Command::Authenticate {
            mechanism: mechanism.into(),
            initial_response: ir.map(|r| Redacted::new(r.to_vec())),
        })
    }

    #[test]
    fn simple_commands_any_case() {
        let out = decode_all(b"capability\r\nNoOp\r\n\r\nLOGOUT\r\nStartTls\n");
        assert_eq!(
            out,
            vec![
                Ok(Command::Capability),
                Ok(Command::Noop(None)),
                Ok(Command::Logout),
                Ok(Command::StartTls),
            ]
        );
    }

    #[test]
    fn noop_with_a_tag_string() {
        assert_eq!(
            one(b"NOOP \"STARTTLS-SYNC-42\"\r\n"),
            Ok(Command::Noop(Some(b"STARTTLS-SYNC-42".to_vec())))
        );
        assert_eq!(
            one(b"NOOP {3+}\r\na\"b\r\n"),
            Ok(Command::Noop(Some(b"a\"b".to_vec())))
        );
        assert_eq!(one(b"NOOP bare\r\n"), Err(ErrorKind::InvalidArgument));
        assert_eq!(
            one(b"NOOP \"a\" \"b\"\r\n"),
            Err(ErrorKind::UnexpectedArgument)
        );
    }

    #[test]
    fn authenticate_quoted_literal_and_atom() {
        assert_eq!(one(b"AUTHENTICATE \"plain\"\r\n"), auth("PLAIN", None));
        assert_eq!(
            one(b"Authenticate \"PLAIN\" \"AGEAYg==\"\r\n"),
            auth("PLAIN", Some(b"AGEAYg=="))
        );
        // sieve-connect sends the initial response as a non-synchronising literal.
        assert_eq!(
            one(b"AUTHENTICATE \"PLAIN\" {8+}\r\nAGEAYg==\r\n"),
            auth("PLAIN", Some(b"AGEAYg=="))
        );
        // A synchronising literal is read the same way: no continuation exists.
        assert_eq!(
            one(b"AUTHENTICATE {11}\r\nOAUTHBEARER {4}\r\nbiws\r\n"),
            auth("OAUTHBEARER", Some(b"biws"))
        );
        assert_eq!(
            one(b"AUTHENTICATE xoauth2 eA==\r\n"),
            auth("XOAUTH2", Some(b"eA=="))
        );
    }

    #[test]
    fn errors() {
        assert_eq!(one(b"AUTHENTICATE\r\n"), Err(ErrorKind::MissingArgument));
        assert_eq!(
            one(b"AUTHENTICATE \"PLAIN\" \"x\" \"y\"\r\n"),
            Err(ErrorKind::UnexpectedArgument)
        );
        assert_eq!(
            one(b"AUTHENTICATE \"PLAIN\r\n"),
            Err(ErrorKind::Syntax(SyntaxError::UnterminatedQuoted))
        );
        assert_eq!(one(b"\"NOOP\"\r\n"), Err(ErrorKind::MissingCommand));
        assert_eq!(
            one(b"(NOOP)\r\n"),
            Err(ErrorKind::Syntax(SyntaxError::UnexpectedByte(b'(')))
        );
        assert_eq!(one(b"CAPABILITY x\r\n"), Err(ErrorKind::UnexpectedArgument));
    }

    #[test]
    fn unknown_commands_keep_their_arguments_unread() {
        assert_eq!(
            one(b"putscript \"x\" {5+}\r\nkeep;\r\n"),
            Ok(Command::Unknown("PUTSCRIPT".into()))
        );
        assert_eq!(
            one(b"HAVESPACE \"unterminated\r\n"),
            Ok(Command::Unknown("HAVESPACE".into()))
        );
    }

    #[test]
    fn oversized_lines_and_literals_keep_the_stream_in_sync() {
        let mut input = b"AUTHENTICATE \"PLAIN\" \"".to_vec();
        input.extend(std::iter::repeat_n(b'a', 70_000));
        input.extend(b"\"\r\nNOOP\r\n");
        assert_eq!(
            decode_all(&input),
            vec![Err(ErrorKind::LineTooLong), Ok(Command::Noop(None))]
        );
        for header in [&b"{70000+}"[..], b"{70000}"] {
            let mut input = b"AUTHENTICATE \"PLAIN\" ".to_vec();
            input.extend(header);
            input.extend(b"\r\n");
            // Lines of their own if the data were not skipped.
            input.extend(b"x\n".repeat(35_000));
            input.extend(b"\r\nLOGOUT\r\n");
            assert_eq!(
                decode_all(&input),
                vec![Err(ErrorKind::LiteralTooLarge), Ok(Command::Logout)],
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn sasl_responses() {
        let mut d = Decoder::new(Limits::PRE_AUTH);
        let mut input: &[u8] =
            b"\"*\"\r\n*\r\n\"AGEAYg==\"\r\n{4+}\r\nAGEA\r\n{0+}\r\n\r\nAGEAYg\r\n\r\n\"a\" \"b\"\r\n";
        let data = |b: &[u8]| Ok(Some(SaslResponse::Data(Redacted::new(b.to_vec()))));
        assert_eq!(d.decode_response(&mut input), Ok(Some(SaslResponse::Abort)));
        assert_eq!(d.decode_response(&mut input), Ok(Some(SaslResponse::Abort)));
        assert_eq!(d.decode_response(&mut input), data(b"AGEAYg=="));
        assert_eq!(d.decode_response(&mut input), data(b"AGEA"));
        assert_eq!(d.decode_response(&mut input), data(b""));
        assert_eq!(d.decode_response(&mut input), data(b"AGEAYg"));
        assert_eq!(d.decode_response(&mut input), data(b""));
        assert_eq!(
            d.decode_response(&mut input),
            Err(ErrorKind::UnexpectedArgument)
        );
        assert_eq!(d.decode_response(&mut input), Ok(None));
        assert!(d.is_idle());
    }

    #[test]
    fn sasl_responses_may_be_as_long_as_a_literal() {
        let mut d = Decoder::new(Limits::PRE_AUTH);
        let token = "A".repeat(20_000);
        let input = format!("\"{token}\"\r\nNOOP\r\n");
        let mut rest = input.as_bytes();
        assert_eq!(
            d.decode_response(&mut rest),
            Ok(Some(SaslResponse::Data(Redacted::new(token.into_bytes()))))
        );
        // Commands keep the line limit.
        assert_eq!(d.decode(&mut rest), Ok(Some(Command::Noop(None))));
        let long = format!("AUTHENTICATE \"PLAIN\" \"{}\"\r\n", "A".repeat(20_000));
        let mut rest = long.as_bytes();
        assert_eq!(d.decode(&mut rest), Err(ErrorKind::LineTooLong));
        let mut over = b"\"".to_vec();
        over.extend(std::iter::repeat_n(b'A', 70_000));
        over.extend(b"\"\r\n");
        let mut rest = &over[..];
        assert_eq!(d.decode_response(&mut rest), Err(ErrorKind::LineTooLong));
        assert!(d.is_idle());
    }

    #[test]
    fn debug_never_shows_credentials() {
        let out = one(b"AUTHENTICATE \"PLAIN\" \"AGFsaWNlAGh1bnRlcjI=\"\r\n");
        assert!(!format!("{out:?}").contains("AGFsaWNl"));
    }
}

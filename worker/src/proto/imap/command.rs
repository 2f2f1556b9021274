//! IMAP commands before authentication and their resumable parser.
//!
//! [`Decoder`] frames the byte stream with the shared [`Framer`] and parses each
//! complete line into a [`Tagged`] [`Command`] (RFC 9051 §6.1, §6.2; RFC 2971 ID;
//! RFC 4959 SASL-IR). Only the commands postern answers itself get typed arguments;
//! any other verb becomes [`Command::Unknown`] without its arguments being read.
//! Credentials sit in [`Redacted`], so no `Debug` output can show them.

use std::fmt;

use crate::proto::grammar::{
    Framed, Framer, Grammar, Limits, Mode, Overflow, Oversized, SyntaxError, Token, Tokens,
};

/// The IMAP grammar for the shared tokenizer.
pub struct Imap;

impl Grammar for Imap {
    /// RFC 9051 `ASTRING-CHAR` (atom chars plus `]`). Bytes above 0x7f are tolerated in
    /// atoms: some clients send UTF-8 user names unquoted.
    fn is_atom_char(b: u8) -> bool {
        b > b' ' && b != 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\')
    }
    const LISTS: bool = true;
}

pub use crate::proto::dialogue::Redacted;

/// A command tag: RFC 9051 `tag`, 1*<ASTRING-CHAR except "+">, ASCII only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    /// `bytes` as a tag, if it is one.
    pub fn parse(bytes: &[u8]) -> Option<Tag> {
        let valid = !bytes.is_empty()
            && bytes
                .iter()
                .all(|&b| b.is_ascii() && Imap::is_atom_char(b) && b != b'+');
        // All ASCII, so the conversion cannot fail.
        let text = std::str::from_utf8(bytes).ok().filter(|_| valid)?;
        Some(Tag(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub use crate::sasl::Mechanism;

/// RFC 2971 ID parameters: field/value pairs, a value may be NIL.
pub type IdParams = Vec<(String, Option<String>)>;

/// A command of the not-authenticated state, with typed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capability,
    Noop,
    Logout,
    /// RFC 2971: `ID NIL` is `None`; otherwise the field/value pairs.
    Id(Option<IdParams>),
    StartTls,
    Login {
        user: Redacted<Vec<u8>>,
        password: Redacted<Vec<u8>>,
    },
    /// `AUTHENTICATE <mechanism> [<initial response>]`. The mechanism name is
    /// upper-cased; the initial response is the base64 text as sent (`=` for empty).
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
            Command::Noop => "NOOP",
            Command::Logout => "LOGOUT",
            Command::Id(_) => "ID",
            Command::StartTls => "STARTTLS",
            Command::Login { .. } => "LOGIN",
            Command::Authenticate { .. } => "AUTHENTICATE",
            Command::Unknown(name) => name,
        }
    }
}

/// A command with its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub tag: Tag,
    pub command: Command,
}

/// What [`Decoder::decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Command(Tagged),
    /// A synchronising literal `{size}` was announced. The client waits: answer with a
    /// continuation and decode again, or refuse with [`Decoder::reject_literal`] and a
    /// tagged reply. `tag` and `verb` (upper-cased, empty if unknown) come from the
    /// command's start.
    NeedContinuation {
        tag: Option<Tag>,
        verb: String,
        size: u32,
    },
}

/// The client's line during an `AUTHENTICATE` exchange (RFC 9051 §6.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslResponse {
    /// `*`: the client cancels.
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
    #[error("missing or invalid tag")]
    InvalidTag,
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

/// A parse error, with the command's tag when it could be read, so the reply can be
/// `<tag> BAD ...` rather than `* BAD ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct Error {
    pub tag: Option<Tag>,
    pub kind: ErrorKind,
}

/// Resumable IMAP command decoder: feed it the unread input; it consumes what it uses.
pub struct Decoder {
    framer: Framer,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            framer: Framer::new(limits),
        }
    }

    /// The next command. `Ok(None)`: all of `input` was taken and more is needed.
    /// Empty lines are skipped.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, Error> {
        loop {
            match self.framer.decode(input, Mode::Command) {
                Ok(None) => return Ok(None),
                Ok(Some(Framed::NeedContinuation { size })) => {
                    let (tag, verb) = head(self.framer.partial());
                    let verb = verb.map(|v| String::from_utf8_lossy(v).to_ascii_uppercase());
                    return Ok(Some(Frame::NeedContinuation {
                        tag,
                        verb: verb.unwrap_or_default(),
                        size,
                    }));
                }
                Ok(Some(Framed::Line(line))) => {
                    if line.iter().all(|&b| b == b' ') {
                        continue;
                    }
                    return parse(&line).map(|c| Some(Frame::Command(c)));
                }
                Err(oversized) => return Err(oversized_error(&oversized)),
            }
        }
    }

    /// The client's next line inside an `AUTHENTICATE` exchange: no literals, and as
    /// long as a literal may be (it carries a base64 token). Errors carry no tag: the
    /// caller knows it.
    pub fn decode_response(&mut self, input: &mut &[u8]) -> Result<Option<SaslResponse>, Error> {
        let error = |kind| Error { tag: None, kind };
        match self.framer.decode(input, Mode::Line) {
            Ok(None) => Ok(None),
            Ok(Some(Framed::Line(line))) if line == b"*" => Ok(Some(SaslResponse::Abort)),
            Ok(Some(Framed::Line(line))) => Ok(Some(SaslResponse::Data(Redacted::new(line)))),
            // `Mode::Line` never announces literals.
            Ok(Some(Framed::NeedContinuation { .. })) => Err(error(ErrorKind::InvalidArgument)),
            Err(_) => Err(error(ErrorKind::LineTooLong)),
        }
    }

    /// Refuses the literal of the last [`Frame::NeedContinuation`]; the command is dropped.
    pub fn reject_literal(&mut self) {
        self.framer.reject_literal();
    }

    /// Forgets any partial command (after STARTTLS).
    pub fn reset(&mut self) {
        self.framer.reset();
    }
}

fn oversized_error(oversized: &Oversized) -> Error {
    Error {
        tag: head(&oversized.head).0,
        kind: match oversized.overflow {
            Overflow::Line => ErrorKind::LineTooLong,
            Overflow::Literal => ErrorKind::LiteralTooLarge,
        },
    }
}

/// The tag and verb at the start of a partial command, as far as they can be read.
fn head(bytes: &[u8]) -> (Option<Tag>, Option<&[u8]>) {
    let Some(sp) = bytes.iter().position(|&b| b == b' ') else {
        return (None, None);
    };
    let Some(tag) = Tag::parse(&bytes[..sp]) else {
        return (None, None);
    };
    let rest = &bytes[sp + 1..];
    let verb_len = rest.iter().take_while(|&&b| Imap::is_atom_char(b)).count();
    let verb = Some(&rest[..verb_len]).filter(|v| !v.is_empty());
    (Some(tag), verb)
}

/// Parses one complete command line (its final CRLF removed).
pub fn parse(line: &[u8]) -> Result<Tagged, Error> {
    let mut tokens = Tokens::<Imap>::new(line);
    let tag = match tokens.next() {
        Some(Ok(Token::Atom(t))) => Tag::parse(t),
        _ => None,
    };
    let Some(tag) = tag else {
        return Err(Error {
            tag: None,
            kind: ErrorKind::InvalidTag,
        });
    };
    match parse_command(&mut tokens) {
        Ok(command) => Ok(Tagged { tag, command }),
        Err(kind) => Err(Error {
            tag: Some(tag),
            kind,
        }),
    }
}

fn parse_command(tokens: &mut Tokens<'_, Imap>) -> Result<Command, ErrorKind> {
    let verb = match tokens.next() {
        Some(Ok(Token::Atom(verb))) => verb,
        Some(Err(e)) => return Err(e.into()),
        _ => return Err(ErrorKind::MissingCommand),
    };
    let command = match verb.to_ascii_uppercase().as_slice() {
        b"CAPABILITY" => Command::Capability,
        b"NOOP" => Command::Noop,
        b"LOGOUT" => Command::Logout,
        b"STARTTLS" => Command::StartTls,
        b"ID" => Command::Id(parse_id(tokens)?),
        b"LOGIN" => {
            let user = astring(tokens)?;
            let password = astring(tokens)?;
            Command::Login {
                user: Redacted::new(user),
                password: Redacted::new(password),
            }
        }
        b"AUTHENTICATE" => {
            let mechanism = astring(tokens)?;
            let mechanism = String::from_utf8_lossy(&mechanism).to_ascii_uppercase();
            // RFC 4959: initial-response = base64 / "="; its validity is checked later.
            let initial_response = match tokens.next() {
                None => None,
                Some(Ok(Token::Atom(ir))) => Some(Redacted::new(ir.to_vec())),
                Some(Ok(_)) => return Err(ErrorKind::InvalidArgument),
                Some(Err(e)) => return Err(e.into()),
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

fn astring(tokens: &mut Tokens<'_, Imap>) -> Result<Vec<u8>, ErrorKind> {
    match tokens.next() {
        None => Err(ErrorKind::MissingArgument),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(token)) => token
            .as_astring()
            .map(<[u8]>::to_vec)
            .ok_or(ErrorKind::InvalidArgument),
    }
}

/// RFC 2971: `id-params-list = "(" *(string SP nstring) ")" / nil`.
fn parse_id(tokens: &mut Tokens<'_, Imap>) -> Result<Option<IdParams>, ErrorKind> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match tokens.next() {
        None => return Err(ErrorKind::MissingArgument),
        Some(Err(e)) => return Err(e.into()),
        Some(Ok(t)) if t.is_nil() => return Ok(None),
        Some(Ok(Token::ListStart)) => {}
        Some(Ok(_)) => return Err(ErrorKind::InvalidArgument),
    }
    let mut fields = Vec::new();
    loop {
        let field = match tokens.next() {
            Some(Ok(Token::ListEnd)) => return Ok(Some(fields)),
            Some(Ok(t)) => t.as_string().map(text).ok_or(ErrorKind::InvalidArgument)?,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ErrorKind::MissingArgument),
        };
        let value = match tokens.next() {
            Some(Ok(t)) if t.is_nil() => None,
            Some(Ok(t)) => Some(t.as_string().map(text).ok_or(ErrorKind::InvalidArgument)?),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ErrorKind::MissingArgument),
        };
        fields.push((field, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Out = Result<Frame, Error>;

    /// Decodes `input` fed in chunks of `chunk` bytes, answering every continuation.
    fn decode_chunks(input: &[u8], chunk: usize) -> Vec<Out> {
        let mut decoder = Decoder::new(Limits::PRE_AUTH);
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            let mut rest = piece;
            loop {
                match decoder.decode(&mut rest) {
                    Ok(None) => break,
                    Ok(Some(frame)) => out.push(Ok(frame)),
                    Err(e) => out.push(Err(e)),
                }
            }
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

    fn tag(t: &str) -> Tag {
        Tag(t.to_owned())
    }

    fn cmd(t: &str, command: Command) -> Out {
        Ok(Frame::Command(Tagged {
            tag: tag(t),
            command,
        }))
    }

    fn err(t: Option<&str>, kind: ErrorKind) -> Out {
        Err(Error {
            tag: t.map(tag),
            kind,
        })
    }

    fn login(user: &[u8], password: &[u8]) -> Command {
        Command::Login {
            user: Redacted::new(user.to_vec()),
            password: Redacted::new(password.to_vec()),
        }
    }

    #[test]
    fn simple_commands_any_case() {
        let out = decode_all(b"a1 capability\r\nA2 NoOp\r\n\r\nx.3 LOGOUT\r\nz STARTTLS\r\n");
        assert_eq!(
            out,
            vec![
                cmd("a1", Command::Capability),
                cmd("A2", Command::Noop),
                cmd("x.3", Command::Logout),
                cmd("z", Command::StartTls),
            ]
        );
    }

    #[test]
    fn login_quoted_atom_and_literals() {
        assert_eq!(
            one(b"a LOGIN alice \"p w\\\"\\\\\"\r\n"),
            cmd("a", login(b"alice", b"p w\"\\"))
        );
        let out = decode_all(b"b LOGIN {5}\r\nalice {4+}\r\n\"{}\\\r\n");
        assert_eq!(
            out,
            vec![
                Ok(Frame::NeedContinuation {
                    tag: Some(tag("b")),
                    verb: "LOGIN".into(),
                    size: 5
                }),
                cmd("b", login(b"alice", b"\"{}\\")),
            ]
        );
        assert_eq!(one(b"c login NIL \"\"\r\n"), cmd("c", login(b"NIL", b"")));
    }

    #[test]
    fn authenticate_with_and_without_initial_response() {
        assert_eq!(
            one(b"a authenticate plain\r\n"),
            cmd(
                "a",
                Command::Authenticate {
                    mechanism: "PLAIN".into(),
                    initial_response: None
                }
            )
        );
        assert_eq!(
            one(b"a AUTHENTICATE XOAUTH2 dXNlcg==\r\n"),
            cmd(
                "a",
                Command::Authenticate {
                    mechanism: "XOAUTH2".into(),
                    initial_response: Some(Redacted::new(b"dXNlcg==".to_vec()))
                }
            )
        );
        assert_eq!(
            one(b"a AUTHENTICATE PLAIN =\r\n"),
            cmd(
                "a",
                Command::Authenticate {
                    mechanism: "PLAIN".into(),
                    initial_response: Some(Redacted::new(b"=".to_vec()))
                }
            )
        );
    }

    #[test]
    fn id_nil_and_list() {
        assert_eq!(one(b"a ID NIL\r\n"), cmd("a", Command::Id(None)));
        assert_eq!(
            one(b"a ID (\"name\" \"mutt\" \"version\" NIL \"os\" {5+}\r\nLinux)\r\n"),
            cmd(
                "a",
                Command::Id(Some(vec![
                    ("name".into(), Some("mutt".into())),
                    ("version".into(), None),
                    ("os".into(), Some("Linux".into())),
                ]))
            )
        );
        assert_eq!(one(b"a ID ()\r\n"), cmd("a", Command::Id(Some(vec![]))));
        assert_eq!(
            one(b"a ID (\"name\")\r\n"),
            err(Some("a"), ErrorKind::InvalidArgument)
        );
        assert_eq!(
            one(b"a ID (\"name\" \"x\"\r\n"),
            err(Some("a"), ErrorKind::MissingArgument)
        );
    }

    #[test]
    fn unknown_commands_keep_their_arguments_unread() {
        assert_eq!(
            one(b"a select \"unterminated\r\n"),
            cmd("a", Command::Unknown("SELECT".into()))
        );
    }

    #[test]
    fn errors_carry_the_tag_when_known() {
        assert_eq!(one(b"a\r\n"), err(Some("a"), ErrorKind::MissingCommand));
        assert_eq!(one(b"+a NOOP\r\n"), err(None, ErrorKind::InvalidTag));
        assert_eq!(one(b"\"a\" NOOP\r\n"), err(None, ErrorKind::InvalidTag));
        assert_eq!(
            one(b"a NOOP x\r\n"),
            err(Some("a"), ErrorKind::UnexpectedArgument)
        );
        assert_eq!(
            one(b"a LOGIN x\r\n"),
            err(Some("a"), ErrorKind::MissingArgument)
        );
        assert_eq!(
            one(b"a LOGIN (x) y\r\n"),
            err(Some("a"), ErrorKind::InvalidArgument)
        );
        assert_eq!(
            one(b"a LOGIN \"x y\r\n"),
            err(
                Some("a"),
                ErrorKind::Syntax(SyntaxError::UnterminatedQuoted)
            )
        );
    }

    #[test]
    fn oversized_line_and_literal_then_next_command() {
        let mut input = b"big LOGIN ".to_vec();
        input.extend(std::iter::repeat_n(b'a', 9000));
        input.extend(b" x\r\nok NOOP\r\n");
        assert_eq!(
            decode_all(&input),
            vec![
                err(Some("big"), ErrorKind::LineTooLong),
                cmd("ok", Command::Noop)
            ]
        );
        let mut input = b"lit LOGIN {70000+}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'a', 70000));
        input.extend(b" x\r\nok NOOP\r\n");
        assert_eq!(
            decode_all(&input),
            vec![
                err(Some("lit"), ErrorKind::LiteralTooLarge),
                cmd("ok", Command::Noop)
            ]
        );
        assert_eq!(
            decode_all(b"s LOGIN {70000}\r\nok NOOP\r\n"),
            vec![
                err(Some("s"), ErrorKind::LiteralTooLarge),
                cmd("ok", Command::Noop)
            ]
        );
    }

    #[test]
    fn sasl_responses() {
        let mut d = Decoder::new(Limits::PRE_AUTH);
        let mut input: &[u8] = b"*\r\nAGEAYg==\r\n\r\n{3}\r\n";
        assert_eq!(d.decode_response(&mut input), Ok(Some(SaslResponse::Abort)));
        let data = |b: &[u8]| Ok(Some(SaslResponse::Data(Redacted::new(b.to_vec()))));
        assert_eq!(d.decode_response(&mut input), data(b"AGEAYg=="));
        assert_eq!(d.decode_response(&mut input), data(b""));
        assert_eq!(d.decode_response(&mut input), data(b"{3}"));
        assert_eq!(d.decode_response(&mut input), Ok(None));
    }

    #[test]
    fn debug_never_shows_credentials() {
        let out = one(b"a LOGIN alice hunter2\r\n");
        let shown = format!("{out:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("alice"),
            "{shown}"
        );
        let out = one(b"a AUTHENTICATE PLAIN AGFsaWNlAGh1bnRlcjI=\r\n");
        assert!(!format!("{out:?}").contains("AGFsaWNl"));
    }
}

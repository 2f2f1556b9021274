//! The tokenizer IMAP and ManageSieve share (STYLE §3): atoms, quoted strings,
//! `{n}` / `{n+}` literals, NIL and parenthesised lists, one CRLF-terminated command at
//! a time.
//!
//! It works in two layers, both sans-IO and free of panics on peer data:
//!
//! - [`Framer`] is resumable. Fed any split of the byte stream, it finds where one
//!   command ends, literals included (RFC 9051 §4.3, RFC 7888 for `{n+}`), enforces the
//!   pre-auth [`Limits`], and says when a synchronising literal waits for a continuation.
//!   Oversized input is skipped in a `Discarding` state up to the end of its command and
//!   then reported, so the next command parses normally.
//! - [`Tokens`] splits one complete command into [`Token`]s. A [`Grammar`] supplies what
//!   differs between the protocols: which bytes make an atom, whether lists exist. Tags
//!   (IMAP only) and the meaning of each argument are the protocol parser's business.
//!
//! This module knows nothing about commands, credentials or replies, and never logs.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use crate::proto::lines::trim_eol;

/// Longest command line before authentication, literal data excluded (STYLE §3).
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// Most literal data one command may carry before authentication (STYLE §3).
pub const MAX_LITERAL_BYTES: usize = 64 * 1024;
/// Bytes kept from the start of an oversized command, enough to find its tag.
const HEAD_BYTES: usize = 64;
/// Longest literal header that can end a segment: `{4294967295+}` plus a CR.
const LITERAL_HEADER_BYTES: usize = 16;
/// Digits allowed in a literal size (RFC 9051 `number` is 32-bit).
const MAX_LITERAL_DIGITS: usize = 10;

/// What differs between the IMAP-family grammars.
pub trait Grammar {
    /// True when `byte` may appear in an atom (a bare word).
    fn is_atom_char(byte: u8) -> bool;
    /// True when `(` and `)` delimit lists.
    const LISTS: bool;
}

/// Size limits for one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of command text, CRLFs and literal headers included, literal data excluded.
    pub line_bytes: usize,
    /// Bytes of literal data, summed over the command's literals. A [`Mode::Line`] line
    /// carries data too (a base64 SASL response), so it is bounded by this limit.
    pub literal_bytes: usize,
}

impl Limits {
    /// The limits before authentication.
    pub const PRE_AUTH: Limits = Limits {
        line_bytes: MAX_LINE_BYTES,
        literal_bytes: MAX_LITERAL_BYTES,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::PRE_AUTH
    }
}

/// How the next line is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A command: a line whose segments may end in a literal header.
    Command,
    /// One bare line with no literals, such as a SASL continuation response.
    Line,
}

/// A complete unit found by the [`Framer`].
#[derive(PartialEq, Eq)]
pub enum Framed {
    /// A whole command, literal data included, without its final line end.
    Line(Vec<u8>),
    /// A segment ended in a synchronising literal `{size}`: the peer waits for a
    /// continuation before sending the data. The command so far is in
    /// [`Framer::partial`]; decode again after answering, or call
    /// [`Framer::reject_literal`] to refuse it.
    NeedContinuation { size: u32 },
}

impl fmt::Debug for Framed {
    // The bytes may hold credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Framed::Line(line) => write!(f, "Line({} bytes)", line.len()),
            Framed::NeedContinuation { size } => write!(f, "NeedContinuation({size})"),
        }
    }
}

/// Which limit a command broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Line,
    Literal,
}

/// A command that broke a limit. It has been skipped up to its end, so the stream is in
/// sync again and the next command starts with the next byte.
#[derive(Clone, PartialEq, Eq)]
pub struct Oversized {
    pub overflow: Overflow,
    /// The first bytes of the command (up to 64), to recover an IMAP tag.
    pub head: Vec<u8>,
}

impl Oversized {
    /// The size of the synchronising literal `{n}` whose header ended the command, when
    /// the head holds the whole command so far. The framer expects the peer to wait for
    /// a continuation (IMAP); a ManageSieve client sends the data anyway, and the caller
    /// has to skip it.
    pub fn refused_sync_literal(&self) -> Option<u64> {
        if self.overflow != Overflow::Literal || self.head.len() >= HEAD_BYTES {
            return None;
        }
        let line = self.head.strip_suffix(b"\n")?;
        match literal_header(line.strip_suffix(b"\r").unwrap_or(line)) {
            Some((size, true)) => Some(size),
            _ => None,
        }
    }
}

impl fmt::Debug for Oversized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oversized")
            .field("overflow", &self.overflow)
            .finish_non_exhaustive()
    }
}

enum Scan {
    /// Reading command text up to the next LF.
    Line,
    /// Copying literal data.
    Literal { remaining: usize },
    /// Skipping an oversized command: first `skip` bytes of a non-synchronising literal,
    /// then up to the end of line, following any further literal headers.
    Discarding {
        skip: u64,
        overflow: Overflow,
        head: Vec<u8>,
        /// The last bytes of the current segment, to spot a literal header at its end.
        tail: Vec<u8>,
    },
}

/// Resumable command framer. Feed it the unread input with [`Framer::decode`]; it takes
/// what it can and leaves the rest, so whatever remains after a frame is the bytes the
/// peer pipelined behind it.
pub struct Framer {
    limits: Limits,
    scan: Scan,
    /// The command so far (text and literal data).
    cmd: Vec<u8>,
    /// Where the current line segment starts in `cmd`.
    segment: usize,
    line_bytes: usize,
    literal_bytes: usize,
}

impl Framer {
    pub fn new(limits: Limits) -> Framer {
        Framer {
            limits,
            scan: Scan::Line,
            cmd: Vec::new(),
            segment: 0,
            line_bytes: 0,
            literal_bytes: 0,
        }
    }

    /// Consumes bytes from the front of `input` and returns a frame once one is
    /// complete. `Ok(None)`: everything was taken and more is needed. `Err`: a command
    /// broke a limit and has been skipped to its end.
    pub fn decode(&mut self, input: &mut &[u8], mode: Mode) -> Result<Option<Framed>, Oversized> {
        loop {
            match &mut self.scan {
                Scan::Literal { remaining } => {
                    let n = (*remaining).min(input.len());
                    self.cmd.extend_from_slice(&input[..n]);
                    *input = &input[n..];
                    *remaining -= n;
                    if *remaining > 0 {
                        return Ok(None);
                    }
                    self.scan = Scan::Line;
                    self.segment = self.cmd.len();
                }
                Scan::Line => {
                    if let Some(frame) = self.scan_line(input, mode)? {
                        return Ok(Some(frame));
                    }
                    if input.is_empty() && matches!(self.scan, Scan::Line) {
                        return Ok(None);
                    }
                }
                Scan::Discarding {
                    skip,
                    overflow,
                    head,
                    tail,
                } => {
                    if *skip > 0 {
                        let n = usize::try_from(*skip)
                            .unwrap_or(usize::MAX)
                            .min(input.len());
                        grow_head(head, &input[..n]);
                        *input = &input[n..];
                        *skip -= n as u64;
                        if *skip > 0 {
                            return Ok(None);
                        }
                        tail.clear();
                    }
                    let Some(lf) = input.iter().position(|&b| b == b'\n') else {
                        grow_head(head, input);
                        keep_tail(tail, input);
                        *input = &[];
                        return Ok(None);
                    };
                    grow_head(head, &input[..=lf]);
                    keep_tail(tail, &input[..lf]);
                    *input = &input[lf + 1..];
                    let segment: &[u8] = tail.strip_suffix(b"\r").unwrap_or(&tail[..]);
                    if mode == Mode::Command {
                        // A synchronising literal ends the command too: the peer waits
                        // for a continuation that will not come.
                        if let Some((size, false)) = literal_header(segment) {
                            *skip = size;
                            tail.clear();
                            continue;
                        }
                    }
                    let err = Oversized {
                        overflow: *overflow,
                        head: std::mem::take(head),
                    };
                    self.reset();
                    return Err(err);
                }
            }
        }
    }

    /// One step in `Scan::Line`: a frame, or `None` after taking bytes or changing state.
    fn scan_line(&mut self, input: &mut &[u8], mode: Mode) -> Result<Option<Framed>, Oversized> {
        let max = match mode {
            Mode::Command => self.limits.line_bytes,
            Mode::Line => self.limits.literal_bytes,
        };
        let lf = input.iter().position(|&b| b == b'\n');
        let take = lf.map_or(input.len(), |i| i + 1);
        if self.line_bytes.saturating_add(take) > max {
            self.start_discarding(Overflow::Line);
            return Ok(None);
        }
        self.cmd.extend_from_slice(&input[..take]);
        self.line_bytes += take;
        *input = &input[take..];
        if lf.is_none() {
            return Ok(None);
        }
        // The segment ends in LF; CR before it is optional (lenient with bare LF).
        let mut end = self.cmd.len() - 1;
        if end > self.segment && self.cmd[end - 1] == b'\r' {
            end -= 1;
        }
        let header = match mode {
            Mode::Command => literal_header(&self.cmd[self.segment..end]),
            Mode::Line => None,
        };
        let Some((size, sync)) = header else {
            self.cmd.truncate(end);
            let line = std::mem::take(&mut self.cmd);
            self.reset();
            return Ok(Some(Framed::Line(line)));
        };
        let total = (self.literal_bytes as u64).saturating_add(size);
        if total > self.limits.literal_bytes as u64 {
            let head = self.head();
            if sync {
                // RFC 9051 §7.5: refusing instead of sending "+" ends the command.
                self.reset();
                return Err(Oversized {
                    overflow: Overflow::Literal,
                    head,
                });
            }
            self.reset();
            self.scan = Scan::Discarding {
                skip: size,
                overflow: Overflow::Literal,
                head,
                tail: Vec::new(),
            };
            return Ok(None);
        }
        // `total` fits in a usize: it is at most `literal_bytes`.
        let size = size as usize;
        self.literal_bytes += size;
        self.scan = Scan::Literal { remaining: size };
        self.segment = self.cmd.len();
        if sync {
            // `size` ≤ literal_bytes; a limit above 4 GiB would be a config bug.
            let size = u32::try_from(size).unwrap_or(u32::MAX);
            return Ok(Some(Framed::NeedContinuation { size }));
        }
        Ok(None)
    }

    /// Enters `Discarding`; the bytes of `input` are left for it to skip.
    fn start_discarding(&mut self, overflow: Overflow) {
        let head = self.head();
        let from = self
            .cmd
            .len()
            .saturating_sub(LITERAL_HEADER_BYTES)
            .max(self.segment);
        let tail = self.cmd.get(from..).unwrap_or_default().to_vec();
        self.reset();
        self.scan = Scan::Discarding {
            skip: 0,
            overflow,
            head,
            tail,
        };
    }

    /// The first bytes of the command so far; `Discarding` adds to them as it skips, so
    /// the head does not depend on how the input was split.
    fn head(&self) -> Vec<u8> {
        self.cmd.iter().take(HEAD_BYTES).copied().collect()
    }

    /// The command received so far, while a literal is pending.
    pub fn partial(&self) -> &[u8] {
        &self.cmd
    }

    /// Refuses the synchronising literal just announced: the command is dropped, and the
    /// next byte starts a new one (the peer must not send the data, RFC 9051 §7.5).
    pub fn reject_literal(&mut self) {
        if matches!(self.scan, Scan::Literal { .. }) {
            self.reset();
        }
    }

    /// Forgets any partial command (after a TLS upgrade).
    pub fn reset(&mut self) {
        self.scan = Scan::Line;
        self.cmd = Vec::new();
        self.segment = 0;
        self.line_bytes = 0;
        self.literal_bytes = 0;
    }

    /// True when no command is partly read.
    pub fn is_idle(&self) -> bool {
        matches!(self.scan, Scan::Line) && self.cmd.is_empty()
    }
}

fn grow_head(head: &mut Vec<u8>, bytes: &[u8]) {
    let room = HEAD_BYTES.saturating_sub(head.len());
    head.extend(bytes.iter().take(room));
}

/// Appends `bytes` to `tail`, keeping only the last `LITERAL_HEADER_BYTES`.
fn keep_tail(tail: &mut Vec<u8>, bytes: &[u8]) {
    let keep_new = &bytes[bytes.len().saturating_sub(LITERAL_HEADER_BYTES)..];
    tail.extend_from_slice(keep_new);
    let excess = tail.len().saturating_sub(LITERAL_HEADER_BYTES);
    tail.drain(..excess);
}

/// The size of the literal announced at the end of a backend's response line (`{n}` or
/// `{n+}` before the line end): the reply holds that many more bytes and another line.
pub fn trailing_literal(line: &[u8]) -> Option<usize> {
    let (size, _) = literal_header(trim_eol(line))?;
    usize::try_from(size).ok()
}

/// `{n}` (synchronising: `true`) or `{n+}` at the end of a segment.
fn literal_header(segment: &[u8]) -> Option<(u64, bool)> {
    let body = segment.strip_suffix(b"}")?;
    let (body, sync) = match body.strip_suffix(b"+") {
        Some(body) => (body, false),
        None => (body, true),
    };
    let digits = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > MAX_LITERAL_DIGITS {
        return None;
    }
    let open = body.len().checked_sub(digits + 1)?;
    if body.get(open) != Some(&b'{') {
        return None;
    }
    Some((parse_number(&body[open + 1..])?, sync))
}

fn parse_number(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?
            .checked_add(u64::from(d.checked_sub(b'0')?))
    })
}

/// One argument of a command.
#[derive(Clone, PartialEq, Eq)]
pub enum Token<'a> {
    /// A bare word; `NIL` is an atom too (see [`Token::is_nil`]).
    Atom(&'a [u8]),
    /// A quoted string, escapes resolved.
    Quoted(Cow<'a, [u8]>),
    /// Literal data.
    Literal(&'a [u8]),
    ListStart,
    ListEnd,
}

impl<'a> Token<'a> {
    /// The atom `NIL`, in any case. A quoted `"NIL"` is a string.
    pub fn is_nil(&self) -> bool {
        matches!(self, Token::Atom(a) if a.eq_ignore_ascii_case(b"NIL"))
    }

    /// The bytes of a quoted string or literal.
    pub fn as_string(&self) -> Option<&[u8]> {
        match self {
            Token::Quoted(q) => Some(q),
            Token::Literal(l) => Some(l),
            _ => None,
        }
    }

    /// An atom, quoted string or literal (RFC 9051 `astring`).
    pub fn as_astring(&self) -> Option<&[u8]> {
        match self {
            Token::Atom(a) => Some(a),
            other => other.as_string(),
        }
    }
}

impl fmt::Debug for Token<'_> {
    // Arguments may be credentials: show the kind and length only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Atom(a) => write!(f, "Atom({} bytes)", a.len()),
            Token::Quoted(q) => write!(f, "Quoted({} bytes)", q.len()),
            Token::Literal(l) => write!(f, "Literal({} bytes)", l.len()),
            Token::ListStart => f.write_str("ListStart"),
            Token::ListEnd => f.write_str("ListEnd"),
        }
    }
}

/// Why a complete command could not be split into tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error("unterminated quoted string")]
    UnterminatedQuoted,
    #[error("invalid escape in quoted string")]
    InvalidEscape,
    #[error("CR, LF or NUL in quoted string")]
    ForbiddenByte,
    #[error("malformed literal")]
    InvalidLiteral,
    #[error("unexpected byte 0x{0:02x}")]
    UnexpectedByte(u8),
    #[error("missing space between arguments")]
    MissingSpace,
}

/// Splits a complete command (as framed by [`Framer`]) into tokens. Spaces separate
/// tokens (runs of spaces are tolerated); after the first error it yields nothing more.
pub struct Tokens<'a, G> {
    rest: &'a [u8],
    failed: bool,
    grammar: PhantomData<G>,
}

impl<'a, G: Grammar> Tokens<'a, G> {
    pub fn new(line: &'a [u8]) -> Self {
        Tokens {
            rest: line,
            failed: false,
            grammar: PhantomData,
        }
    }

    /// The bytes not yet tokenized.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    fn token(&mut self) -> Result<Token<'a>, SyntaxError> {
        let rest = self.rest;
        let (token, used) = match rest.first().copied().unwrap_or(b' ') {
            b'"' => quoted(rest)?,
            b'{' => literal(rest)?,
            b'(' if G::LISTS => (Token::ListStart, 1),
            b')' if G::LISTS => (Token::ListEnd, 1),
            b if G::is_atom_char(b) => {
                let n = rest.iter().take_while(|&&b| G::is_atom_char(b)).count();
                (Token::Atom(&rest[..n]), n)
            }
            b => return Err(SyntaxError::UnexpectedByte(b)),
        };
        self.rest = &rest[used..];
        if token != Token::ListStart {
            match self.rest.first() {
                None | Some(b' ') => {}
                Some(b')') if G::LISTS => {}
                Some(_) => return Err(SyntaxError::MissingSpace),
            }
        }
        Ok(token)
    }
}

impl<'a, G: Grammar> Iterator for Tokens<'a, G> {
    type Item = Result<Token<'a>, SyntaxError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let spaces = self.rest.iter().take_while(|&&b| b == b' ').count();
        self.rest = &self.rest[spaces..];
        if self.rest.is_empty() {
            return None;
        }
        let token = self.token();
        self.failed = token.is_err();
        Some(token)
    }
}

/// A quoted string at the start of `s` (RFC 9051 `quoted`: `\"` and `\\` escapes).
/// 8-bit bytes are accepted (IMAP4rev2 allows UTF-8 there).
fn quoted(s: &[u8]) -> Result<(Token<'_>, usize), SyntaxError> {
    let body = &s[1..];
    let mut owned: Option<Vec<u8>> = None;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => {
                let token = match owned {
                    Some(v) => Cow::Owned(v),
                    None => Cow::Borrowed(&body[..i]),
                };
                return Ok((Token::Quoted(token), i + 2));
            }
            b'\\' => {
                let escaped = match body.get(i + 1) {
                    Some(&e @ (b'"' | b'\\')) => e,
                    Some(_) => return Err(SyntaxError::InvalidEscape),
                    None => return Err(SyntaxError::UnterminatedQuoted),
                };
                owned
                    .get_or_insert_with(|| body[..i].to_vec())
                    .push(escaped);
                i += 2;
            }
            b'\r' | b'\n' | 0 => return Err(SyntaxError::ForbiddenByte),
            b => {
                if let Some(v) = owned.as_mut() {
                    v.push(b);
                }
                i += 1;
            }
        }
    }
    Err(SyntaxError::UnterminatedQuoted)
}

/// A literal at the start of `s`: `{n}` or `{n+}`, a line end, then `n` bytes.
fn literal(s: &[u8]) -> Result<(Token<'_>, usize), SyntaxError> {
    let close = s
        .iter()
        .take(MAX_LITERAL_DIGITS + 3)
        .position(|&b| b == b'}')
        .ok_or(SyntaxError::InvalidLiteral)?;
    literal_header(&s[..=close]).ok_or(SyntaxError::InvalidLiteral)?;
    let digits = s[1..close].strip_suffix(b"+").unwrap_or(&s[1..close]);
    let size = parse_number(digits).ok_or(SyntaxError::InvalidLiteral)?;
    let after = &s[close + 1..];
    let eol = if after.starts_with(b"\r\n") {
        2
    } else if after.starts_with(b"\n") {
        1
    } else {
        return Err(SyntaxError::InvalidLiteral);
    };
    let start = close + 1 + eol;
    let size = usize::try_from(size).map_err(|_| SyntaxError::InvalidLiteral)?;
    let end = start.checked_add(size).ok_or(SyntaxError::InvalidLiteral)?;
    let data = s.get(start..end).ok_or(SyntaxError::InvalidLiteral)?;
    Ok((Token::Literal(data), end))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IMAP-like grammar for these tests.
    struct Test;

    impl Grammar for Test {
        fn is_atom_char(b: u8) -> bool {
            b > b' ' && b != 0x7f && !b"(){%*\"\\".contains(&b)
        }
        const LISTS: bool = true;
    }

    type Out = Result<Framed, Oversized>;

    /// Feeds `input` in chunks of `chunk` bytes, answering every continuation, and
    /// returns every frame, in order, with the bytes left unread at the end.
    fn frames(limits: Limits, input: &[u8], chunk: usize) -> Vec<Out> {
        let mut framer = Framer::new(limits);
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            let mut rest = piece;
            loop {
                match framer.decode(&mut rest, Mode::Command) {
                    Ok(None) => break,
                    Ok(Some(f)) => out.push(Ok(f)),
                    Err(e) => out.push(Err(e)),
                }
            }
            assert!(rest.is_empty());
        }
        out
    }

    /// Whole, then byte by byte: both must agree.
    fn frames_both(limits: Limits, input: &[u8]) -> Vec<Out> {
        let whole = frames(limits, input, input.len().max(1));
        let bytewise = frames(limits, input, 1);
        assert_eq!(whole, bytewise, "whole and byte-by-byte differ");
        whole
    }

    fn line(s: &[u8]) -> Out {
        Ok(Framed::Line(s.to_vec()))
    }

    fn tokens(line: &[u8]) -> Result<Vec<Token<'_>>, SyntaxError> {
        Tokens::<Test>::new(line).collect()
    }

    #[test]
    fn frames_lines_and_pipelining() {
        let out = frames_both(Limits::PRE_AUTH, b"a NOOP\r\nb CAPABILITY\nc LOGOUT\r\n");
        assert_eq!(
            out,
            vec![line(b"a NOOP"), line(b"b CAPABILITY"), line(b"c LOGOUT")]
        );
    }

    #[test]
    fn frames_sync_and_non_sync_literals() {
        let out = frames_both(Limits::PRE_AUTH, b"a LOGIN {5}\r\nalice {3+}\r\npw!\r\n");
        assert_eq!(
            out,
            vec![
                Ok(Framed::NeedContinuation { size: 5 }),
                line(b"a LOGIN {5}\r\nalice {3+}\r\npw!")
            ]
        );
        // The literal data may itself contain CRLF and braces.
        let out = frames_both(Limits::PRE_AUTH, b"a X {4+}\r\n\r\n{1}\r\n");
        assert_eq!(out, vec![line(b"a X {4+}\r\n\r\n{1}")]);
    }

    #[test]
    fn partial_and_reject_literal() {
        let mut framer = Framer::new(Limits::PRE_AUTH);
        let mut input: &[u8] = b"a APPEND x {10}\r\nb NOOP\r\n";
        let f = framer.decode(&mut input, Mode::Command);
        assert_eq!(f, Ok(Some(Framed::NeedContinuation { size: 10 })));
        assert_eq!(framer.partial(), b"a APPEND x {10}\r\n");
        framer.reject_literal();
        assert!(framer.is_idle());
        assert_eq!(
            framer.decode(&mut input, Mode::Command),
            Ok(Some(Framed::Line(b"b NOOP".to_vec())))
        );
    }

    #[test]
    fn line_mode_ignores_literal_headers() {
        let mut framer = Framer::new(Limits::PRE_AUTH);
        let mut input: &[u8] = b"{5}\r\nrest";
        let f = framer.decode(&mut input, Mode::Line);
        assert_eq!(f, Ok(Some(Framed::Line(b"{5}".to_vec()))));
        assert_eq!(input, b"rest");
    }

    #[test]
    fn oversized_line_is_skipped_then_reported() {
        let limits = Limits {
            line_bytes: 16,
            literal_bytes: 32,
        };
        let mut input = b"tag1 NOOP ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100));
        input.extend(b"\r\nb NOOP\r\n");
        let out = frames_both(limits, &input);
        assert_eq!(out.len(), 2);
        let Err(e) = &out[0] else {
            panic!("expected an overflow, got {:?}", out[0])
        };
        assert_eq!(e.overflow, Overflow::Line);
        assert!(e.head.starts_with(b"tag1 NOOP xxx"));
        assert_eq!(out[1], line(b"b NOOP"));
    }

    #[test]
    fn oversized_line_follows_literals_while_discarding() {
        let limits = Limits {
            line_bytes: 16,
            literal_bytes: 32,
        };
        // The literal's data holds a CRLF that must not end the discarded command.
        let input = b"a X yyyyyyyyyyyyyyyyyyyy {4+}\r\n\r\n\r\n tail\r\nb NOOP\r\n";
        let out = frames_both(limits, input);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(&out[0], Err(e) if e.overflow == Overflow::Line));
        assert_eq!(out[1], line(b"b NOOP"));
        // A synchronising literal ends a discarded command at once.
        let input = b"a X yyyyyyyyyyyyyyyyyyyy {4}\r\nb NOOP\r\n";
        let out = frames_both(limits, input);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[1], line(b"b NOOP"));
    }

    #[test]
    fn oversized_literals() {
        let limits = Limits {
            line_bytes: 64,
            literal_bytes: 8,
        };
        // Synchronising: refused at its header, no data follows.
        let out = frames_both(limits, b"a LOGIN {9}\r\nb NOOP\r\n");
        assert!(
            matches!(&out[0], Err(e) if e.overflow == Overflow::Literal && e.head == b"a LOGIN {9}\r\n")
        );
        assert_eq!(out[1], line(b"b NOOP"));
        // Non-synchronising: the data is skipped, then the rest of the line.
        let out = frames_both(
            limits,
            b"a LOGIN {9+}\r\n123456789 {2+}\r\nxy\r\nb NOOP\r\n",
        );
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(&out[0], Err(e) if e.overflow == Overflow::Literal));
        assert_eq!(out[1], line(b"b NOOP"));
        // The limit is per command: two literals of 5 exceed 8.
        let out = frames_both(limits, b"a LOGIN {5+}\r\n12345 {5+}\r\n12345\r\nb NOOP\r\n");
        assert!(matches!(&out[0], Err(e) if e.overflow == Overflow::Literal));
        assert_eq!(out[1], line(b"b NOOP"));
    }

    #[test]
    fn huge_literal_size_does_not_overflow() {
        let out = frames_both(Limits::PRE_AUTH, b"a X {9999999999}\r\nb NOOP\r\n");
        assert!(matches!(&out[0], Err(e) if e.overflow == Overflow::Literal));
        // Eleven digits are not a literal header: the line ends there.
        let out = frames_both(Limits::PRE_AUTH, b"a X {99999999999}\r\n");
        assert_eq!(out, vec![line(b"a X {99999999999}")]);
        // Neither are digits without an opening brace.
        let out = frames_both(Limits::PRE_AUTH, b"123}\r\n5+}\r\n");
        assert_eq!(out, vec![line(b"123}"), line(b"5+}")]);
    }

    #[test]
    fn tokenizes_atoms_strings_literals_lists() {
        let t = tokens(b"a ID (\"name\" \"x\\\"y\\\\\" \"v\" NIL) {3}\r\nab\" ").expect("tokens");
        assert_eq!(
            t,
            vec![
                Token::Atom(b"a"),
                Token::Atom(b"ID"),
                Token::ListStart,
                Token::Quoted(Cow::Borrowed(b"name")),
                Token::Quoted(Cow::Owned(b"x\"y\\".to_vec())),
                Token::Quoted(Cow::Borrowed(b"v")),
                Token::Atom(b"NIL"),
                Token::ListEnd,
                Token::Literal(b"ab\""),
            ]
        );
        assert!(t[6].is_nil());
        assert!(!Token::Quoted(Cow::Borrowed(b"NIL")).is_nil());
        assert_eq!(t[8].as_astring(), Some(&b"ab\""[..]));
        assert_eq!(
            tokens(b"x {0+}\r\n").expect("empty literal"),
            vec![Token::Atom(b"x"), Token::Literal(b"")]
        );
    }

    #[test]
    fn tokenizer_errors() {
        assert_eq!(tokens(b"a \"open"), Err(SyntaxError::UnterminatedQuoted));
        assert_eq!(tokens(b"a \"\\x\""), Err(SyntaxError::InvalidEscape));
        assert_eq!(tokens(b"a \"x\0\""), Err(SyntaxError::ForbiddenByte));
        assert_eq!(tokens(b"a {5}\r\nab"), Err(SyntaxError::InvalidLiteral));
        assert_eq!(tokens(b"a {5}x"), Err(SyntaxError::InvalidLiteral));
        assert_eq!(tokens(b"a {}\r\n"), Err(SyntaxError::InvalidLiteral));
        assert_eq!(tokens(b"a \"x\"y"), Err(SyntaxError::MissingSpace));
        assert_eq!(tokens(b"a *"), Err(SyntaxError::UnexpectedByte(b'*')));
        let mut it = Tokens::<Test>::new(b"a \"x");
        assert!(matches!(it.next(), Some(Ok(_))));
        assert!(matches!(it.next(), Some(Err(_))));
        assert!(it.next().is_none(), "fused after an error");
    }

    #[test]
    fn token_debug_hides_content() {
        let t = Token::Quoted(Cow::Borrowed(b"hunter2"));
        assert_eq!(format!("{t:?}"), "Quoted(7 bytes)");
        let f = Framed::Line(b"a LOGIN u hunter2".to_vec());
        assert!(!format!("{f:?}").contains("hunter2"));
    }
}

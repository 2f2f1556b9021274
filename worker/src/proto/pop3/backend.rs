//! The backend side of a POP3 session: establishment, then the replay of the client's
//! authentication (reference §4.3, §4.4, §4.8; RFC 2449 CAPA, RFC 2595 STLS, RFC 5034
//! AUTH).
//!
//! ```text
//!   connected ─▶ +OK greeting ─starttls leg─▶ CAPA (STLS?) ─▶ STLS ─▶ TLS ─┐
//!                    │                                                    ▼
//!                    └────────────▶ forwarding = xclient: XCLIENT in the greeting,
//!                                   else in CAPA? ─▶ XCLIENT ADDR=... ─▶ +OK
//!                                                          ═ establishment ends
//!                                   AUTH <MECH> <b64>  (AUTH <MECH>, "+ ", <b64> when the
//!                                          │            line would pass 255 octets)
//!                                          ▼
//!                        +OK ─▶ Accepted (relay)    -ERR ─▶ Rejected (connection dropped)
//! ```
//!
//! Establishment runs inside [`crate::upstream::Upstreams::dial_with`], so it shares the
//! attempt's `backend_timeout`, retries and breaker outcome. Replay is the caller's to
//! bound. Nothing here logs a payload: the replay lines carry credentials.

use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;

use crate::proto::dialogue::{Backend, ClientIdentity, LoginRequest, Replay};
use crate::proto::lines::{trim_eol, Lines};
use crate::proto::xclient;
use crate::sasl::{self, Credentials};
use crate::upstream::{BackendStream, Connected, DialError};
use postern_config::model::{Forwarding, Protocol};

/// Continuations answered during one replay before the backend is given up on.
const MAX_CONTINUATIONS: u32 = 4;
/// Lines read from one CAPA answer before the backend is given up on.
const MAX_CAPA_LINES: usize = 256;
/// RFC 2449 §4: a command line, CRLF included, is at most 255 octets. RFC 5034 §4: an
/// initial response that would make `AUTH` longer must go in a continuation instead.
const MAX_COMMAND_LINE: usize = 255;

/// An established POP3 backend connection, ready for the replay.
pub struct Pop3Backend {
    stream: BackendStream,
    lines: Lines,
    addr: SocketAddr,
}

impl Backend for Pop3Backend {
    const PROTOCOL: Protocol = Protocol::Pop3;

    /// Establishment: the `+OK` greeting, STLS on a `starttls` leg, and XCLIENT when the
    /// leg forwards by `xclient` and the backend offers it.
    async fn establish(
        connected: Connected,
        identity: &ClientIdentity,
    ) -> Result<Pop3Backend, DialError> {
        let Connected {
            stream,
            addr,
            leg,
            upgrade,
        } = connected;
        let mut backend = Pop3Backend {
            stream,
            lines: Lines::new(),
            addr,
        };
        let greeting = backend.read_line("greeting").await?;
        if !is_ok(&greeting) {
            return Err(DialError::refused(addr, "greeting", trim_eol(&greeting)));
        }
        // Reference §4.3: a backend announcing XCLIENT in its greeting takes it.
        let mut xclient = has_word(trim_eol(&greeting), b"XCLIENT");
        // What CAPA said on the current (plain or TLS) channel, once asked.
        let mut capabilities: Option<Vec<Vec<u8>>> = None;

        if let Some(upgrade) = upgrade {
            let capa = backend.capa("starttls").await?;
            if !capa.as_ref().is_some_and(|c| has_capability(c, b"STLS")) {
                return Err(DialError::refused(addr, "starttls", b"STLS not advertised"));
            }
            backend.send("starttls", b"STLS\r\n").await?;
            let reply = backend.read_line("starttls").await?;
            if !is_ok(&reply) {
                return Err(DialError::refused(addr, "starttls", trim_eol(&reply)));
            }
            let Pop3Backend { stream, lines, .. } = backend;
            let stream = upgrade.starttls(stream, &lines.into_rest(), addr).await?;
            backend = Pop3Backend {
                stream,
                lines: Lines::new(),
                addr,
            };
            // RFC 2595 §4: what CAPA said before TLS is void.
            capabilities = None;
        }

        if leg.forwarding == Forwarding::Xclient {
            if !xclient {
                if capabilities.is_none() {
                    capabilities = backend.capa("capa").await?;
                }
                xclient = capabilities
                    .as_ref()
                    .is_some_and(|c| has_capability(c, b"XCLIENT"));
            }
            if xclient {
                backend
                    .send("xclient", xclient::command(identity).as_bytes())
                    .await?;
                let reply = backend.read_line("xclient").await?;
                // Reference §4.3: a rejected XCLIENT fails the backend connection.
                if !is_ok(&reply) {
                    return Err(DialError::refused(addr, "xclient", trim_eol(&reply)));
                }
            } else {
                tracing::debug!(%addr, "backend does not offer xclient");
            }
        }
        Ok(backend)
    }

    fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Replays the client's login as `AUTH <MECH> <base64>` (password logins as PLAIN)
    /// and relays the final `+OK` / `-ERR` line. An I/O error means the backend failed
    /// mid-replay (the client is told it is unavailable).
    async fn replay(
        mut self,
        _request: &LoginRequest,
        credentials: &Credentials,
    ) -> io::Result<Replay> {
        let mechanism = credentials.replay_mechanism();
        let response = credentials.replay_base64();
        // RFC 5034 §4: an empty initial response is sent as `=`.
        let response: &[u8] = match response.expose() {
            b"" => b"=",
            bytes => bytes,
        };
        let mut line = Vec::with_capacity(16 + response.len());
        line.extend_from_slice(b"AUTH ");
        line.extend_from_slice(mechanism.name().as_bytes());
        let mut response_sent = false;
        if line.len() + 1 + response.len() + 2 <= MAX_COMMAND_LINE {
            line.push(b' ');
            line.extend_from_slice(response);
            response_sent = true;
        }
        line.extend_from_slice(b"\r\n");
        self.stream.write_all(&line).await?;
        let mut continuations = 0;
        loop {
            let line = self.lines.read_line(&mut self.stream).await?;
            if is_ok(&line) {
                return Ok(Replay::Accepted {
                    reply: line,
                    stream: self.stream,
                    rest: self.lines.into_rest(),
                });
            }
            if is_err(&line) {
                return Ok(Replay::Rejected { reply: line });
            }
            if line.first() != Some(&b'+') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "backend sent neither +OK, -ERR nor a continuation",
                ));
            }
            continuations += 1;
            if continuations > MAX_CONTINUATIONS {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "backend keeps sending continuations",
                ));
            }
            let answer = if response_sent {
                // An error challenge (RFC 7628 §3.2.3): acknowledge, the final -ERR follows.
                sasl::OAUTH_ERROR_ACK_BASE64.as_bytes()
            } else {
                response_sent = true;
                response
            };
            let mut out = Vec::with_capacity(answer.len() + 2);
            out.extend_from_slice(answer);
            out.extend_from_slice(b"\r\n");
            self.stream.write_all(&out).await?;
        }
    }
}

impl Pop3Backend {
    /// `CAPA`: the capability lines (`None` when the backend answers `-ERR`).
    async fn capa(&mut self, stage: &'static str) -> Result<Option<Vec<Vec<u8>>>, DialError> {
        self.send(stage, b"CAPA\r\n").await?;
        let first = self.read_line(stage).await?;
        if !is_ok(&first) {
            return Ok(None);
        }
        let mut capabilities = Vec::new();
        for _ in 0..MAX_CAPA_LINES {
            let line = self.read_line(stage).await?;
            let line = trim_eol(&line);
            if line == b"." {
                return Ok(Some(capabilities));
            }
            // RFC 1939 §3: a line of a multi-line answer starting with "." is stuffed.
            let line = line.strip_prefix(b".").unwrap_or(line);
            capabilities.push(line.to_vec());
        }
        Err(DialError::refused(
            self.addr,
            stage,
            b"CAPA answer has too many lines",
        ))
    }

    async fn send(&mut self, stage: &'static str, line: &[u8]) -> Result<(), DialError> {
        let addr = self.addr;
        self.stream
            .write_all(line)
            .await
            .map_err(|source| DialError::Establish {
                addr,
                stage,
                source,
            })
    }

    async fn read_line(&mut self, stage: &'static str) -> Result<Vec<u8>, DialError> {
        let addr = self.addr;
        self.lines
            .read_line(&mut self.stream)
            .await
            .map_err(|source| DialError::Establish {
                addr,
                stage,
                source,
            })
    }
}

/// `+OK`, alone or followed by a space and text.
fn is_ok(line: &[u8]) -> bool {
    status_is(line, b"+OK")
}

fn is_err(line: &[u8]) -> bool {
    status_is(line, b"-ERR")
}

fn status_is(line: &[u8], status: &[u8]) -> bool {
    let line = trim_eol(line);
    line.len() >= status.len()
        && line[..status.len()].eq_ignore_ascii_case(status)
        && matches!(line.get(status.len()), None | Some(b' '))
}

/// True when a CAPA line's first word is `name` (RFC 2449 §5: `capa-tag *(SP param)`).
fn has_capability(lines: &[Vec<u8>], name: &[u8]) -> bool {
    lines.iter().any(|line| {
        line.split(|&b| b == b' ')
            .next()
            .is_some_and(|tag| tag.eq_ignore_ascii_case(name))
    })
}

/// True when `word` is one of the words of `line`, alone or as a response code
/// (Dovecot greets with `+OK [XCLIENT] Dovecot ready.`).
fn has_word(line: &[u8], word: &[u8]) -> bool {
    line.split(|&b| matches!(b, b' ' | b'[' | b']' | b'(' | b')'))
        .any(|w| w.eq_ignore_ascii_case(word))
}

#[cfg(test)]
#[path = "backend_tests.rs"]
mod tests;

//! The backend side of a ManageSieve session: establishment, then the replay of the
//! client's authentication (reference §4.3, §4.4, §4.8; RFC 5804).
//!
//! ```text
//!   connected ─▶ capability response (to its OK)
//!                  │ starttls leg: STARTTLS ─▶ OK ─▶ TLS ─▶ capability response again
//!                  ▼
//!        forwarding = xclient and XCLIENT advertised:
//!          XCLIENT ADDR=.. PORT=.. DESTADDR=.. DESTPORT=.. SESSION=.. TTL=.. CLIENT-TRANSPORT=..
//!          (IPv6 bare, as Dovecot's managesieve-login parses it)
//!                  │ OK                                  ═ establishment ends
//!                  ▼
//!        AUTHENTICATE "<MECH>" "<b64>"   (a challenge after it is answered "AQ==")
//!                  ▼
//!        final response: OK ─▶ Accepted (relay)
//!                        NO/BYE ─▶ Rejected (connection dropped)
//! ```
//!
//! RFC 5804 §2.1 makes the initial response part of every server's AUTHENTICATE, so the
//! replay always carries it (reference §4.8). Establishment runs inside
//! [`crate::upstream::Upstreams::dial_with`], so it shares the attempt's
//! `backend_timeout`, retries and breaker outcome. Nothing here logs a payload: the
//! replay line carries credentials.

use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;

use super::command::ManageSieve;
use crate::proto::dialogue::{Backend, ClientIdentity, LoginRequest, Replay};
use crate::proto::grammar::Tokens;
use crate::proto::lines::{trim_eol, Lines};
use crate::proto::xclient;
use crate::sasl::{self, Credentials};
use crate::upstream::{BackendStream, Connected, DialError};
use postern_config::model::{Forwarding, Protocol};

/// Challenges answered during one replay before the backend is given up on.
const MAX_CONTINUATIONS: u32 = 4;
/// Capability lines read before the backend is given up on.
const MAX_CAPABILITY_LINES: usize = 256;

/// The capability names a backend advertised, upper-cased, with their values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities(Vec<(String, Option<String>)>);

impl Capabilities {
    /// Adds the capability on `line` (`"NAME" ["value"]`, strings quoted or literal,
    /// literal data inline); lines that do not parse are ignored.
    fn add_line(&mut self, line: &[u8]) {
        let mut tokens = Tokens::<ManageSieve>::new(trim_eol(line));
        let text = |token: &crate::proto::grammar::Token<'_>| {
            token
                .as_astring()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        let Some(Ok(name)) = tokens.next() else {
            return;
        };
        let Some(name) = text(&name) else {
            return;
        };
        let value = match tokens.next() {
            Some(Ok(value)) => text(&value),
            _ => None,
        };
        self.0.push((name.to_ascii_uppercase(), value));
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The value of capability `name`, if it has one.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_deref())
    }
}

/// An established ManageSieve backend connection, ready for the replay.
pub struct ManageSieveBackend {
    stream: BackendStream,
    lines: Lines,
    capabilities: Capabilities,
    addr: SocketAddr,
}

impl Backend for ManageSieveBackend {
    const PROTOCOL: Protocol = Protocol::ManageSieve;

    /// Establishment: the capability response, STARTTLS on a `starttls` leg, and XCLIENT
    /// when the leg forwards by `xclient` and the backend offers it.
    async fn establish(
        connected: Connected,
        identity: &ClientIdentity,
    ) -> Result<ManageSieveBackend, DialError> {
        let Connected {
            stream,
            addr,
            leg,
            upgrade,
        } = connected;
        let mut backend = ManageSieveBackend {
            stream,
            lines: Lines::new(),
            capabilities: Capabilities::default(),
            addr,
        };
        backend.read_capabilities("greeting").await?;

        if let Some(upgrade) = upgrade {
            if !backend.capabilities.has("STARTTLS") {
                return Err(DialError::refused(
                    addr,
                    "starttls",
                    b"STARTTLS not advertised",
                ));
            }
            let done = backend.command("starttls", b"STARTTLS\r\n").await?;
            if !is_status(&done, b"OK") {
                return Err(DialError::refused(addr, "starttls", trim_eol(&done)));
            }
            let ManageSieveBackend { stream, lines, .. } = backend;
            let stream = upgrade.starttls(stream, &lines.into_rest(), addr).await?;
            backend = ManageSieveBackend {
                stream,
                lines: Lines::new(),
                capabilities: Capabilities::default(),
                addr,
            };
            // RFC 5804 §2.2: the server sends its capabilities again after the handshake.
            backend.read_capabilities("capability").await?;
        }

        if leg.forwarding == Forwarding::Xclient && backend.capabilities.has("XCLIENT") {
            let command = xclient::command(identity);
            let done = backend.command("xclient", command.as_bytes()).await?;
            // A rejected XCLIENT fails the backend connection (reference §4.3).
            if !is_status(&done, b"OK") {
                return Err(DialError::refused(addr, "xclient", trim_eol(&done)));
            }
        }
        Ok(backend)
    }

    fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Replays the client's login as `AUTHENTICATE "<MECH>" "<b64>"` and reads the final
    /// response. An I/O error means the backend failed mid-replay (the client is told it
    /// is unavailable).
    async fn replay(
        mut self,
        _request: &LoginRequest,
        credentials: &Credentials,
    ) -> io::Result<Replay> {
        let mechanism = credentials.replay_mechanism();
        let payload = credentials.replay_base64();
        let mut line = Vec::with_capacity(32 + payload.len());
        line.extend_from_slice(b"AUTHENTICATE \"");
        line.extend_from_slice(mechanism.name().as_bytes());
        line.extend_from_slice(b"\" \"");
        line.extend_from_slice(payload.expose());
        line.extend_from_slice(b"\"\r\n");
        self.stream.write_all(&line).await?;
        let mut continuations = 0;
        loop {
            let response = self.lines.read_response(&mut self.stream).await?;
            if is_continuation(&response) {
                continuations += 1;
                if continuations > MAX_CONTINUATIONS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "backend keeps sending challenges",
                    ));
                }
                // An error challenge (RFC 7628 §3.2.3): acknowledge, the final NO follows.
                let ack = format!("\"{}\"\r\n", sasl::OAUTH_ERROR_ACK_BASE64);
                self.stream.write_all(ack.as_bytes()).await?;
                continue;
            }
            if is_status(&response, b"OK") {
                return Ok(Replay::Accepted {
                    reply: response,
                    stream: self.stream,
                    rest: self.lines.into_rest(),
                });
            }
            if is_status(&response, b"NO") || is_status(&response, b"BYE") {
                return Ok(Replay::Rejected { reply: response });
            }
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected backend response to AUTHENTICATE",
            ));
        }
    }
}

impl ManageSieveBackend {
    /// The backend's capabilities after establishment.
    #[cfg(test)]
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Reads a capability response up to its `OK`; `NO`, `BYE` or too many lines refuse
    /// the backend.
    async fn read_capabilities(&mut self, stage: &'static str) -> Result<(), DialError> {
        let addr = self.addr;
        let mut capabilities = Capabilities::default();
        for _ in 0..MAX_CAPABILITY_LINES {
            let line = self.read(stage).await?;
            if is_status(&line, b"OK") {
                self.capabilities = capabilities;
                return Ok(());
            }
            if is_status(&line, b"NO") || is_status(&line, b"BYE") {
                return Err(DialError::refused(addr, stage, trim_eol(&line)));
            }
            capabilities.add_line(&line);
        }
        Err(DialError::refused(
            addr,
            stage,
            b"too many capability lines",
        ))
    }

    /// Sends an establishment command and reads its response.
    async fn command(&mut self, stage: &'static str, line: &[u8]) -> Result<Vec<u8>, DialError> {
        let addr = self.addr;
        self.stream
            .write_all(line)
            .await
            .map_err(|source| DialError::Establish {
                addr,
                stage,
                source,
            })?;
        self.read(stage).await
    }

    async fn read(&mut self, stage: &'static str) -> Result<Vec<u8>, DialError> {
        let addr = self.addr;
        self.lines
            .read_response(&mut self.stream)
            .await
            .map_err(|source| DialError::Establish {
                addr,
                stage,
                source,
            })
    }
}

/// A response starting with `status` (`OK`, `NO`, `BYE`), in any case, followed by a
/// space, a response code, or the line end.
fn is_status(line: &[u8], status: &[u8]) -> bool {
    line.len() >= status.len()
        && line[..status.len()].eq_ignore_ascii_case(status)
        && matches!(
            line.get(status.len()),
            None | Some(b' ' | b'(' | b'\r' | b'\n')
        )
}

/// A server challenge: a quoted string or a literal (RFC 5804 §2.1).
fn is_continuation(line: &[u8]) -> bool {
    matches!(line.first(), Some(b'"' | b'{'))
}

#[cfg(test)]
#[path = "backend_tests.rs"]
mod tests;

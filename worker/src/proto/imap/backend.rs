//! The backend side of an IMAP session: establishment, then the replay of the client's
//! authentication (reference §4.3, §4.4, §4.8; DESIGN.md "Replay to the backend").
//!
//! ```text
//!   connected ─▶ greeting ─starttls leg─▶ P1 STARTTLS ─▶ TLS ─┐
//!                  │                                          ▼
//!                  └──────────────▶ (capabilities unknown? P2 CAPABILITY)
//!                                          │ forwarding = xclient and ID offered
//!                                          ▼
//!                                   F1 ID (x-originating-ip ...)   ═ establishment ends
//!                                          │
//!                         <tag> AUTHENTICATE <MECH> [<b64>] │ <tag> LOGIN
//!                                          ▼
//!                          final tagged reply: OK ─▶ Accepted (relay)
//!                                              NO/BAD ─▶ Rejected (connection dropped)
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
use crate::sasl::{self, Credentials, Mechanism};
use crate::upstream::{BackendStream, Connected, DialError};
use postern_config::model::{Forwarding, Protocol};

/// Continuations answered during one replay before the backend is given up on.
const MAX_CONTINUATIONS: u32 = 4;

/// What the backend advertised, upper-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities(Vec<String>);

impl Capabilities {
    /// From the atoms of a capability list (`IMAP4rev1 SASL-IR AUTH=PLAIN ...`).
    pub fn parse(list: &[u8]) -> Capabilities {
        Capabilities(
            String::from_utf8_lossy(list)
                .split_ascii_whitespace()
                .map(str::to_ascii_uppercase)
                .collect(),
        )
    }

    /// The `[CAPABILITY ...]` response code of a status line, if it has one.
    pub fn from_response_code(line: &[u8]) -> Option<Capabilities> {
        const CODE: &[u8] = b"[CAPABILITY ";
        let start = line
            .windows(CODE.len())
            .position(|w| w.eq_ignore_ascii_case(CODE))?
            + CODE.len();
        let len = line[start..].iter().position(|&b| b == b']')?;
        Some(Capabilities::parse(&line[start..start + len]))
    }

    pub fn has(&self, capability: &str) -> bool {
        self.0.iter().any(|c| c.eq_ignore_ascii_case(capability))
    }
}

/// An established IMAP backend connection, ready for the replay.
pub struct ImapBackend {
    stream: BackendStream,
    lines: Lines,
    capabilities: Capabilities,
    addr: SocketAddr,
}

impl Backend for ImapBackend {
    const PROTOCOL: Protocol = Protocol::Imap;

    /// Establishment: greeting, STARTTLS on a `starttls` leg, capabilities, and the ID
    /// command when the leg forwards by `xclient` and the backend offers ID.
    async fn establish(
        connected: Connected,
        identity: &ClientIdentity,
    ) -> Result<ImapBackend, DialError> {
        let Connected {
            stream,
            addr,
            leg,
            upgrade,
        } = connected;
        let mut backend = ImapBackend {
            stream,
            lines: Lines::new(),
            capabilities: Capabilities::default(),
            addr,
        };
        let greeting = backend.read_line("greeting").await?;
        if !starts_with_ci(&greeting, b"* OK") {
            return Err(DialError::refused(addr, "greeting", trim_eol(&greeting)));
        }
        let mut known = Capabilities::from_response_code(&greeting);

        if let Some(upgrade) = upgrade {
            if known.as_ref().is_some_and(|c| !c.has("STARTTLS")) {
                return Err(DialError::refused(
                    addr,
                    "starttls",
                    b"STARTTLS not advertised",
                ));
            }
            let (_, done) = backend
                .command("starttls", b"P1", b"P1 STARTTLS\r\n")
                .await?;
            if !is_ok(&done, b"P1") {
                return Err(DialError::refused(addr, "starttls", trim_eol(&done)));
            }
            let ImapBackend { stream, lines, .. } = backend;
            let stream = upgrade.starttls(stream, &lines.into_rest(), addr).await?;
            backend = ImapBackend {
                stream,
                lines: Lines::new(),
                capabilities: Capabilities::default(),
                addr,
            };
            // RFC 9051 §6.2.1: capabilities from before TLS are void.
            known = None;
        }

        backend.capabilities = match known {
            Some(capabilities) => capabilities,
            None => {
                let (untagged, done) = backend
                    .command("capability", b"P2", b"P2 CAPABILITY\r\n")
                    .await?;
                if !is_ok(&done, b"P2") {
                    return Err(DialError::refused(addr, "capability", trim_eol(&done)));
                }
                untagged
                    .iter()
                    .find_map(|line| {
                        strip_prefix_ci(trim_eol(line), b"* CAPABILITY ").map(Capabilities::parse)
                    })
                    .unwrap_or_default()
            }
        };

        if leg.forwarding == Forwarding::Xclient && backend.capabilities.has("ID") {
            let command = id_command(identity);
            // Any tagged reply will do (reference §4.3): a backend that ignores the
            // fields still serves the client.
            let (_, done) = backend.command("id", b"F1", command.as_bytes()).await?;
            if !is_ok(&done, b"F1") {
                tracing::debug!(%addr, "backend did not accept the ID forwarding");
            }
        }
        Ok(backend)
    }

    fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Replays the client's login under the client's tag, adapted to the backend's
    /// capabilities, and reads the final reply. An I/O error means the backend failed
    /// mid-replay (the client is told it is unavailable).
    async fn replay(
        mut self,
        request: &LoginRequest,
        credentials: &Credentials,
    ) -> io::Result<Replay> {
        let tag = if request.tag.is_empty() {
            "A1"
        } else {
            request.tag.as_str()
        }
        .as_bytes();
        let mechanism = credentials.replay_mechanism();
        let use_login = mechanism == Mechanism::Plain
            && !self.capabilities.has("AUTH=PLAIN")
            && !self.capabilities.has("LOGINDISABLED")
            && credentials.login_args().is_some();
        let mut reply = Vec::new();
        let mut continuations = 0;
        let mut response_sent = false;
        if use_login {
            self.send_login(tag, credentials).await?;
            response_sent = true;
        } else {
            let mut line = Vec::with_capacity(128);
            line.extend_from_slice(tag);
            line.extend_from_slice(b" AUTHENTICATE ");
            line.extend_from_slice(mechanism.name().as_bytes());
            if self.capabilities.has("SASL-IR") {
                line.push(b' ');
                line.extend_from_slice(credentials.replay_base64().expose());
                response_sent = true;
            }
            line.extend_from_slice(b"\r\n");
            self.stream.write_all(&line).await?;
        }
        loop {
            let line = self.lines.read_response(&mut self.stream).await?;
            if line.first() == Some(&b'+') {
                continuations += 1;
                if continuations > MAX_CONTINUATIONS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "backend keeps sending continuations",
                    ));
                }
                let answer = if response_sent {
                    // An error challenge (RFC 7628 §3.2.3): acknowledge, the final NO follows.
                    sasl::OAUTH_ERROR_ACK_BASE64.as_bytes().to_vec()
                } else {
                    response_sent = true;
                    credentials.replay_base64().expose().to_vec()
                };
                let mut out = answer;
                out.extend_from_slice(b"\r\n");
                self.stream.write_all(&out).await?;
                continue;
            }
            if is_tagged(&line, tag) {
                let accepted = is_ok(&line, tag);
                reply.extend_from_slice(&line);
                return Ok(if accepted {
                    Replay::Accepted {
                        reply,
                        stream: self.stream,
                        rest: self.lines.into_rest(),
                    }
                } else {
                    Replay::Rejected { reply }
                });
            }
            // Untagged data before the final reply (CAPABILITY, alerts) is relayed.
            reply.extend_from_slice(&line);
        }
    }
}

impl ImapBackend {
    /// The backend's capabilities after establishment.
    #[cfg(test)]
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// `<tag> LOGIN <user> <password>`, each as a quoted string, or as a literal when
    /// it cannot be quoted (8-bit): `{n+}` with LITERAL+, else `{n}` and a wait for `+`.
    async fn send_login(&mut self, tag: &[u8], credentials: &Credentials) -> io::Result<()> {
        let Some((user, password)) = credentials.login_args() else {
            return Err(io::Error::other("no LOGIN arguments"));
        };
        let non_sync = self.capabilities.has("LITERAL+") || self.capabilities.has("LITERAL-");
        let mut out = Vec::with_capacity(64 + user.len() + password.len());
        out.extend_from_slice(tag);
        out.extend_from_slice(b" LOGIN ");
        for (i, arg) in [user.as_bytes(), password.expose()].into_iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            if let Some(quoted) = quote(arg) {
                out.extend_from_slice(&quoted);
                continue;
            }
            out.extend_from_slice(
                format!("{{{}{}}}\r\n", arg.len(), if non_sync { "+" } else { "" }).as_bytes(),
            );
            if !non_sync {
                self.stream.write_all(&out).await?;
                out.clear();
                let line = self.lines.read_response(&mut self.stream).await?;
                if line.first() != Some(&b'+') {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "backend refused a LOGIN literal",
                    ));
                }
            }
            out.extend_from_slice(arg);
        }
        out.extend_from_slice(b"\r\n");
        self.stream.write_all(&out).await
    }

    /// Sends an establishment command and reads up to its tagged reply.
    async fn command(
        &mut self,
        stage: &'static str,
        tag: &[u8],
        line: &[u8],
    ) -> Result<(Vec<Vec<u8>>, Vec<u8>), DialError> {
        let addr = self.addr;
        let io_error = |source| DialError::Establish {
            addr,
            stage,
            source,
        };
        self.stream.write_all(line).await.map_err(io_error)?;
        let mut untagged = Vec::new();
        loop {
            let line = self
                .lines
                .read_response(&mut self.stream)
                .await
                .map_err(io_error)?;
            if is_tagged(&line, tag) {
                return Ok((untagged, line));
            }
            if starts_with_ci(&line, b"* BYE") {
                return Err(DialError::refused(addr, stage, trim_eol(&line)));
            }
            untagged.push(line);
        }
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

/// `F1 ID (...)` with the client's addresses (reference §4.3).
pub fn id_command(identity: &ClientIdentity) -> String {
    let client = identity.client;
    let local = identity.local;
    let fields = [
        ("x-originating-ip", client.ip().to_canonical().to_string()),
        ("x-originating-port", client.port().to_string()),
        ("x-connected-ip", local.ip().to_canonical().to_string()),
        ("x-connected-port", local.port().to_string()),
        ("x-proxy-ttl", identity.ttl().to_string()),
        ("x-session-id", identity.session_id()),
        (
            "x-client-transport",
            if identity.client_tls {
                "TLS"
            } else {
                "insecure"
            }
            .to_string(),
        ),
    ];
    let list = fields
        .iter()
        .map(|(name, value)| format!("\"{name}\" \"{value}\""))
        .collect::<Vec<_>>()
        .join(" ");
    format!("F1 ID ({list})\r\n")
}

/// `bytes` as an IMAP quoted string, if it can be one (7-bit, no CR, LF or NUL).
fn quote(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes
        .iter()
        .any(|&b| !b.is_ascii() || b == b'\r' || b == b'\n' || b == 0)
    {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(b'"');
    for &b in bytes {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    Some(out)
}

fn is_tagged(line: &[u8], tag: &[u8]) -> bool {
    line.len() > tag.len() && line.starts_with(tag) && line[tag.len()] == b' '
}

/// `<tag> OK ...`.
fn is_ok(line: &[u8], tag: &[u8]) -> bool {
    is_tagged(line, tag) && starts_with_ci(&line[tag.len() + 1..], b"OK")
}

fn starts_with_ci(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn strip_prefix_ci<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    starts_with_ci(line, prefix).then(|| &line[prefix.len()..])
}

#[cfg(test)]
#[path = "backend_tests.rs"]
mod tests;

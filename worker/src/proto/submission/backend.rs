//! The backend side of a submission session: establishment, then the replay of the
//! client's authentication (reference §4.3, §4.4, §4.8, §5 "Submission").
//!
//! ```text
//!   connected ─▶ 220 greeting ─▶ EHLO <name> ─starttls leg─▶ STARTTLS ─▶ 220 ─▶ TLS ─▶ EHLO
//!                                    │                                               │
//!                                    ◀───────────────────────────────────────────────┘
//!                                    │ forwarding = xclient and XCLIENT in the EHLO reply
//!                                    ▼
//!                   XCLIENT ADDR=... (only the attributes the backend lists) ─▶ 2xx ─▶ EHLO
//!                                    │                              ═ establishment ends
//!                                    ▼
//!                          AUTH <MECH> <b64>   (a 334 after it is answered with AQ==)
//!                                    │
//!                       final reply: 2xx ─▶ Accepted (relay: MAIL, RCPT, DATA flow)
//!                                    4xx/5xx ─▶ Rejected (QUIT, connection dropped)
//! ```
//!
//! `<name>` is the client's EHLO name when it is safe to repeat, else `proxy`
//! (reference §5). Replies are read whole, `ddd-` continuation lines included
//! (RFC 5321 §4.2.1). Establishment runs inside
//! [`crate::upstream::Upstreams::dial_with`], so it shares the attempt's
//! `backend_timeout`, retries and breaker outcome; the replay is the caller's to bound.
//! Nothing here logs a payload: the `AUTH` line carries credentials.

use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;

use super::command::is_safe_helo;
use crate::proto::dialogue::{Backend, ClientIdentity, LoginRequest, Replay};
use crate::proto::lines::{trim_eol, Lines};
use crate::proto::xclient::{self, Ipv6Form};
use crate::sasl::{self, Credentials};
use crate::upstream::{BackendStream, Connected, DialError};
use postern_config::model::{Forwarding, Protocol};

/// The backend EHLO name when the client gave none that is safe and `server.hostname`
/// is unset (reference §5).
pub const DEFAULT_EHLO_NAME: &str = "proxy";
/// Continuations answered during one replay before the backend is given up on.
const MAX_CONTINUATIONS: u32 = 4;
/// Largest multi-line reply accepted before authentication.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// One SMTP reply, all its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The code of the last line.
    pub code: u16,
    /// Every line as received, line ends included.
    pub raw: Vec<u8>,
    /// Each line's text after `ddd-`/`ddd `, without its line end.
    pub texts: Vec<Vec<u8>>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The first line's text, for error messages (never a credential: only
    /// establishment replies and the backend's own words).
    fn first_line(&self) -> &[u8] {
        self.texts.first().map_or(&[][..], |t| t.as_slice())
    }
}

/// The `ddd` code and text of one reply line, and whether more lines follow.
fn parse_reply_line(line: &[u8]) -> Option<(u16, bool, &[u8])> {
    let text = trim_eol(line);
    let digits = text.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    match text.get(3) {
        None => Some((code, false, &[])),
        Some(b' ') => Some((code, false, &text[4..])),
        Some(b'-') => Some((code, true, &text[4..])),
        Some(_) => None,
    }
}

/// The keywords of an EHLO reply (RFC 5321 §4.1.1.1): every line after the first,
/// upper-cased and split into words (`["AUTH", "PLAIN", "LOGIN"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions(Vec<Vec<String>>);

impl Extensions {
    pub fn from_ehlo(reply: &Reply) -> Extensions {
        Extensions(
            reply
                .texts
                .iter()
                .skip(1)
                .map(|t| {
                    String::from_utf8_lossy(t)
                        .split_ascii_whitespace()
                        .map(str::to_ascii_uppercase)
                        .collect::<Vec<_>>()
                })
                .filter(|words| !words.is_empty())
                .collect(),
        )
    }

    /// The parameters of `keyword`, if the backend advertises it.
    pub fn get(&self, keyword: &str) -> Option<&[String]> {
        self.0
            .iter()
            .find(|words| words[0].eq_ignore_ascii_case(keyword))
            .map(|words| &words[1..])
    }

    pub fn has(&self, keyword: &str) -> bool {
        self.get(keyword).is_some()
    }
}

/// An established submission backend connection, ready for the replay.
pub struct SubmissionBackend {
    stream: BackendStream,
    lines: Lines,
    extensions: Extensions,
    addr: SocketAddr,
}

impl Backend for SubmissionBackend {
    const PROTOCOL: Protocol = Protocol::Submission;

    /// Establishment: the greeting, EHLO, STARTTLS on a `starttls` leg, and XCLIENT
    /// when the leg forwards by `xclient` and the backend offers it.
    async fn establish(
        connected: Connected,
        identity: &ClientIdentity,
    ) -> Result<SubmissionBackend, DialError> {
        let Connected {
            stream,
            addr,
            leg,
            upgrade,
        } = connected;
        let mut backend = SubmissionBackend {
            stream,
            lines: Lines::new(),
            extensions: Extensions::default(),
            addr,
        };
        let ehlo = ehlo_command(identity);
        let greeting = backend.read_reply("greeting").await?;
        if greeting.code != 220 {
            return Err(DialError::refused(addr, "greeting", greeting.first_line()));
        }
        backend.ehlo(&ehlo).await?;

        if let Some(upgrade) = upgrade {
            if !backend.extensions.has("STARTTLS") {
                return Err(DialError::refused(
                    addr,
                    "starttls",
                    b"STARTTLS not advertised",
                ));
            }
            let reply = backend.command("starttls", b"STARTTLS\r\n").await?;
            if reply.code != 220 {
                return Err(DialError::refused(addr, "starttls", reply.first_line()));
            }
            let SubmissionBackend { stream, lines, .. } = backend;
            let stream = upgrade.starttls(stream, &lines.into_rest(), addr).await?;
            backend = SubmissionBackend {
                stream,
                lines: Lines::new(),
                extensions: Extensions::default(),
                addr,
            };
            // RFC 3207 §4.2: what the server said before TLS is void.
            backend.ehlo(&ehlo).await?;
        }

        if leg.forwarding == Forwarding::Xclient {
            let offered = backend.extensions.get("XCLIENT");
            if offered.is_none() {
                // Like IMAP ID: forwarding is best effort, the login still goes ahead.
                tracing::debug!(%addr, "backend does not offer XCLIENT");
            }
            if let Some(offered) = offered {
                match xclient_command(identity, offered) {
                    Some(command) => {
                        let reply = backend.command("xclient", command.as_bytes()).await?;
                        // Reference §4.3: a rejected XCLIENT fails the backend connection.
                        // Postfix answers with a fresh 220 greeting, others with 250.
                        if !reply.is_positive() {
                            return Err(DialError::refused(addr, "xclient", reply.first_line()));
                        }
                        // The backend reset its session: greet it again.
                        backend.ehlo(&ehlo).await?;
                    }
                    None => tracing::debug!(%addr, "backend lists no XCLIENT attribute we send"),
                }
            }
        }
        Ok(backend)
    }

    fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Replays the client's login as `AUTH <MECH> <b64>` (reference §4.8; RFC 4954 §4
    /// lets every SMTP mechanism carry an initial response) and reads the final reply.
    /// An I/O error means the backend failed mid-replay (the client is told it is
    /// unavailable).
    async fn replay(
        mut self,
        _request: &LoginRequest,
        credentials: &Credentials,
    ) -> io::Result<Replay> {
        let mechanism = credentials.replay_mechanism();
        let encoded = credentials.replay_base64();
        let mut line = Vec::with_capacity(encoded.len() + 32);
        line.extend_from_slice(b"AUTH ");
        line.extend_from_slice(mechanism.name().as_bytes());
        line.push(b' ');
        if encoded.is_empty() {
            // RFC 4954 §4: an empty initial response is a single `=`.
            line.push(b'=');
        } else {
            line.extend_from_slice(encoded.expose());
        }
        line.extend_from_slice(b"\r\n");
        self.stream.write_all(&line).await?;
        let mut continuations = 0;
        loop {
            let reply = self.read_reply_io().await?;
            match reply.code {
                334 => {
                    // An error challenge (RFC 7628 §3.2.3): acknowledge, the final
                    // reply follows.
                    continuations += 1;
                    if continuations > MAX_CONTINUATIONS {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "backend keeps sending continuations",
                        ));
                    }
                    let mut ack = sasl::OAUTH_ERROR_ACK_BASE64.as_bytes().to_vec();
                    ack.extend_from_slice(b"\r\n");
                    self.stream.write_all(&ack).await?;
                }
                code if (200..300).contains(&code) => {
                    return Ok(Replay::Accepted {
                        reply: reply.raw,
                        stream: self.stream,
                        rest: self.lines.into_rest(),
                    });
                }
                code if code >= 400 => {
                    // The connection is dropped; a polite QUIT first, not waited for.
                    let _ = self.stream.write_all(b"QUIT\r\n").await;
                    return Ok(Replay::Rejected { reply: reply.raw });
                }
                _ => {
                    // A 1xx or another 3xx would make the client wait for something
                    // that never comes.
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "backend answered AUTH with an unexpected reply code",
                    ));
                }
            }
        }
    }
}

impl SubmissionBackend {
    /// What the backend's last EHLO reply advertised.
    #[cfg(test)]
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Sends `EHLO` and records the extensions; anything but 250 fails the attempt.
    async fn ehlo(&mut self, command: &str) -> Result<(), DialError> {
        let reply = self.command("ehlo", command.as_bytes()).await?;
        if reply.code != 250 {
            return Err(DialError::refused(self.addr, "ehlo", reply.first_line()));
        }
        self.extensions = Extensions::from_ehlo(&reply);
        Ok(())
    }

    /// Sends an establishment command and reads its reply.
    async fn command(&mut self, stage: &'static str, line: &[u8]) -> Result<Reply, DialError> {
        let addr = self.addr;
        self.stream
            .write_all(line)
            .await
            .map_err(|source| DialError::Establish {
                addr,
                stage,
                source,
            })?;
        self.read_reply(stage).await
    }

    async fn read_reply(&mut self, stage: &'static str) -> Result<Reply, DialError> {
        let addr = self.addr;
        self.read_reply_io()
            .await
            .map_err(|source| DialError::Establish {
                addr,
                stage,
                source,
            })
    }

    /// One whole reply: `ddd-` lines up to the `ddd ` one.
    async fn read_reply_io(&mut self) -> io::Result<Reply> {
        let mut raw = Vec::new();
        let mut texts = Vec::new();
        loop {
            let line = self.lines.read_line(&mut self.stream).await?;
            let Some((code, more, text)) = parse_reply_line(&line) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "backend sent a line that is not an SMTP reply",
                ));
            };
            texts.push(text.to_vec());
            raw.extend_from_slice(&line);
            if raw.len() > MAX_REPLY_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "backend reply too long",
                ));
            }
            if !more {
                return Ok(Reply { code, raw, texts });
            }
        }
    }
}

/// `EHLO <name>`: the client's EHLO name when it is safe, else `server.hostname`, else
/// [`DEFAULT_EHLO_NAME`].
pub fn ehlo_command(identity: &ClientIdentity) -> String {
    let name = identity
        .helo
        .as_deref()
        .filter(|h| is_safe_helo(h))
        .or(identity.hostname.as_deref())
        .unwrap_or(DEFAULT_EHLO_NAME);
    format!("EHLO {name}\r\n")
}

/// `XCLIENT ADDR= PORT= DESTADDR= DESTPORT= SESSION= TTL= CLIENT-TRANSPORT= HELO=
/// PROTO=ESMTP` (reference §4.3), with only the attributes in `offered` (the backend's
/// XCLIENT line), `HELO=` only for a safe name and never `LOGIN=`. `None` when no
/// attribute is left. Every value is plain xtext (RFC 3461 §4) as written.
pub fn xclient_command(identity: &ClientIdentity, offered: &[String]) -> Option<String> {
    let helo = identity.helo.as_deref().filter(|h| is_safe_helo(h));
    let sent: Vec<(&'static str, String)> = xclient::attributes(identity, Ipv6Form::Prefixed)
        .into_iter()
        .chain(helo.map(|h| ("HELO", h.to_owned())))
        .chain([("PROTO", "ESMTP".to_owned())])
        .filter(|(name, _)| offered.iter().any(|o| o.eq_ignore_ascii_case(name)))
        .collect();
    if sent.is_empty() {
        return None;
    }
    Some(xclient::line(sent))
}

#[cfg(test)]
#[path = "backend_tests.rs"]
mod tests;

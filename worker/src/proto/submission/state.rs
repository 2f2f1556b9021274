//! The sans-IO submission pre-authentication machine: bytes in, [`Action`]s out. It
//! never touches a socket, a clock or randomness; the session drives it and carries out
//! the actions. See the module doc of [`super`] for the state diagram.

use std::mem;
use std::net::IpAddr;
use std::sync::Arc;

use postern_config::model::{Config, Listener, TlsMode};

use super::command::{self, Command, Framer, Line, SaslResponse, SyntaxError};
use super::reply;
use crate::proto::auth::{self, Attempts, AwaitsLogin, SaslLogin};
use crate::proto::dialogue::{Action, Dialogue, Outcome, Rejection};
use crate::proto::sasl_exchange::Exchange;

/// Most bytes held while a login is with the caller (what the client pipelined behind
/// its `AUTH`, RFC 2920). A client that sends more is closed.
pub const MAX_HELD_BYTES: usize = 128 * 1024;

/// The name used when neither `server.hostname` nor a specific listener address is
/// known (a wildcard bind).
pub const FALLBACK_HOSTNAME: &str = "localhost";

/// What one listener's submission dialogue needs; built once per listener and shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The name in the greeting and the EHLO reply: `server.hostname`, else the
    /// listener's address as an address literal, else [`FALLBACK_HOSTNAME`].
    pub hostname: String,
    /// `[capabilities.submission] ehlo`: the EHLO keywords advertised.
    pub ehlo: Vec<String>,
    /// `[capabilities.submission] sasl`: the mechanisms advertised and accepted.
    pub sasl: Vec<String>,
    pub allow_plain_auth_without_tls: bool,
    pub banner: String,
    pub tls: TlsMode,
    /// Failures before `421` and close (at least 1).
    pub max_auth_attempts: u32,
}

impl Settings {
    pub fn new(config: &Config, listener: &Listener) -> Settings {
        let capabilities = &config.capabilities.submission;
        Settings {
            hostname: config
                .server
                .hostname
                .clone()
                .unwrap_or_else(|| listener_name(listener)),
            ehlo: capabilities.ehlo.clone(),
            sasl: capabilities.auth.sasl.clone(),
            allow_plain_auth_without_tls: capabilities.auth.allow_plain_auth_without_tls,
            banner: capabilities.banner.clone(),
            tls: listener.tls,
            max_auth_attempts: listener.max_auth_attempts.max(1),
        }
    }
}

/// The listener's own address as an RFC 5321 §4.1.3 address literal, when it is bound
/// to one specific address; the greeting is written before the dialogue knows which
/// local address a connection reached.
fn listener_name(listener: &Listener) -> String {
    match listener
        .bind
        .iter()
        .map(|a| a.ip())
        .find(|ip| !ip.is_unspecified())
    {
        Some(IpAddr::V4(ip)) => format!("[{ip}]"),
        Some(IpAddr::V6(ip)) => match ip.to_ipv4_mapped() {
            Some(v4) => format!("[{v4}]"),
            None => format!("[IPv6:{ip}]"),
        },
        None => FALLBACK_HOSTNAME.to_string(),
    }
}

enum State {
    /// Reading commands.
    Ready,
    /// Inside `AUTH`: a `334` challenge was sent, the client's line is awaited.
    ExpectSaslResponse(Exchange),
    /// `220 Ready to start TLS` was sent; the handshake is the caller's.
    AwaitingTls,
    /// A [`LoginRequest`] is with the caller.
    AwaitingOutcome(AwaitingOutcome),
    /// The login succeeded; the caller relays from now on.
    Authenticated,
    Closed,
}

struct AwaitingOutcome {
    /// How many bytes at the front of `Machine::input` went out as `pipelined`.
    pipelined: usize,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::ExpectSaslResponse(_) => "sasl_exchange",
            State::AwaitingTls => "awaiting_tls",
            State::AwaitingOutcome(_) => "awaiting_outcome",
            State::Authenticated => "authenticated",
            State::Closed => "closed",
        }
    }
}

/// One client connection's dialogue up to authentication.
pub struct Machine {
    settings: Arc<Settings>,
    state: State,
    framer: Framer,
    /// Bytes received and not yet framed (or held while a login is out).
    input: Vec<u8>,
    tls: bool,
    /// The argument of the client's last `EHLO`/`LHLO`/`HELO` on this channel.
    helo: Option<String>,
    attempts: Attempts,
}

impl Machine {
    /// A new connection. On an implicit-TLS listener the handshake is already done.
    pub fn new(settings: Arc<Settings>) -> Machine {
        Machine {
            tls: settings.tls == TlsMode::Implicit,
            settings,
            state: State::Ready,
            framer: Framer::new(),
            input: Vec::new(),
            helo: None,
            attempts: Attempts::default(),
        }
    }

    /// Failures counted toward `max_auth_attempts` so far.
    #[cfg(test)]
    pub fn failures(&self) -> u32 {
        self.attempts.failures()
    }

    /// Client bytes held: unframed input, or what was pipelined behind a login.
    #[cfg(test)]
    pub fn buffered_bytes(&self) -> usize {
        self.input.len()
    }

    fn cleartext_allowed(&self) -> bool {
        auth::cleartext_allowed(self.settings.allow_plain_auth_without_tls, self.tls)
    }

    fn offers_starttls(&self) -> bool {
        self.settings.tls == TlsMode::Starttls && !self.tls
    }

    /// Frames and answers buffered input until more is needed or the state stops
    /// reading (a login is out, STARTTLS, closed).
    fn process(&mut self, out: &mut Vec<Action>) {
        let buf = mem::take(&mut self.input);
        let mut pos = 0;
        while matches!(self.state, State::Ready | State::ExpectSaslResponse(_)) {
            let (line, used) = self.framer.next_line(&buf[pos..]);
            pos += used;
            let Some(line) = line else {
                break;
            };
            let rest = &buf[pos..];
            if matches!(self.state, State::Ready) {
                self.on_line(line, rest, out);
            } else {
                self.on_sasl_line(line, rest, out);
            }
        }
        if !self.is_closed() {
            self.input = buf;
            self.input.drain(..pos);
        }
    }

    fn on_line(&mut self, line: Line<'_>, rest: &[u8], out: &mut Vec<Action>) {
        let parsed = match line {
            Line::Text(text) => command::parse(text),
            Line::TooLong => Err(SyntaxError::LineTooLong),
        };
        let command = match parsed {
            Ok(command) => command,
            Err(e) => {
                tracing::debug!(error = ?e, "syntax error");
                out.push(Action::Reply(match e {
                    SyntaxError::Syntax => reply::syntax_error(),
                    SyntaxError::LineTooLong => reply::line_too_long(),
                }));
                self.count_failure(out);
                return;
            }
        };
        tracing::debug!(command = command.name(), "command");
        match command {
            Command::Ehlo { domain } => {
                let mechanisms = reply::mechanisms(&self.settings.sasl, self.cleartext_allowed());
                out.push(Action::Reply(reply::ehlo(
                    &self.settings.hostname,
                    &domain,
                    &self.settings.ehlo,
                    self.offers_starttls(),
                    &mechanisms,
                )));
                self.helo = Some(domain);
            }
            Command::Helo { domain } => {
                out.push(Action::Reply(reply::helo(&self.settings.hostname)));
                self.helo = Some(domain);
            }
            // Accepted before EHLO too (reference §5).
            Command::Auth {
                mechanism,
                initial_response,
            } => self.start_auth(
                &mechanism,
                initial_response.as_ref().map(|r| r.expose().as_slice()),
                rest,
                out,
            ),
            Command::StartTls if self.tls => {
                self.not_allowed("STARTTLS");
                out.push(Action::Reply(reply::starttls_unavailable()));
            }
            Command::StartTls if self.settings.tls != TlsMode::Starttls => {
                self.not_allowed("STARTTLS");
                out.push(Action::Reply(reply::starttls_not_configured()));
            }
            Command::StartTls if !rest.is_empty() => {
                // Plaintext pipelined behind STARTTLS could be taken for protected
                // input after the upgrade (RFC 3207 §4.2, STYLE §3): refuse and close.
                tracing::debug!("data pipelined after starttls");
                out.push(Action::Reply(reply::starttls_pipelined()));
                self.close(out);
            }
            Command::StartTls => {
                out.push(Action::Reply(reply::starttls()));
                out.push(Action::StartTls);
                self.state = State::AwaitingTls;
            }
            Command::Noop | Command::Rset => out.push(Action::Reply(reply::ok())),
            Command::Quit => {
                out.push(Action::Reply(reply::bye()));
                self.close(out);
            }
            Command::Other(verb) => {
                self.not_allowed(verb.unwrap_or("<unknown>"));
                out.push(Action::Reply(reply::not_allowed()));
            }
        }
    }

    fn not_allowed(&self, command: &str) {
        tracing::debug!(command, state = self.state.name(), "command not allowed");
    }
    fn on_sasl_line(&mut self, line: Line<'_>, rest: &[u8], out: &mut Vec<Action>) {
        let State::ExpectSaslResponse(exchange) = mem::replace(&mut self.state, State::Ready)
        else {
            return;
        };
        let text = match line {
            Line::Text(text) => text,
            Line::TooLong => {
                out.push(Action::Reply(reply::auth_line_too_long()));
                self.count_failure(out);
                return;
            }
        };
        match command::parse_sasl_response(text) {
            // RFC 4954 §4: 501; a cancel is not a failed attempt.
            SaslResponse::Cancel => out.push(Action::Reply(reply::authentication_cancelled())),
            SaslResponse::Data(data) => self.sasl_step(exchange.respond(data.expose()), rest, out),
        }
    }
}

impl SaslLogin for Machine {
    fn offered(&self) -> (&[String], bool) {
        (&self.settings.sasl, self.cleartext_allowed())
    }
    fn mechanism_unsupported() -> Vec<u8> {
        reply::mechanism_unsupported()
    }
    fn needs_tls() -> Vec<u8> {
        reply::encryption_required()
    }
    fn challenge(prompt: &str) -> Vec<u8> {
        reply::challenge(prompt)
    }
    fn invalid_base64() -> Vec<u8> {
        reply::invalid_base64()
    }
    fn expect_response(&mut self, exchange: Exchange) {
        self.state = State::ExpectSaslResponse(exchange);
    }
    fn await_outcome(&mut self, pipelined: usize) {
        self.state = State::AwaitingOutcome(AwaitingOutcome { pipelined });
    }
}

impl AwaitsLogin for Machine {
    type Pending = ();
    const MAX_HELD_BYTES: usize = MAX_HELD_BYTES;
    /// A backend-less submission session has nothing left to offer.
    const CLOSE_WHEN_UNAVAILABLE: bool = true;

    fn input(&mut self) -> &mut Vec<u8> {
        &mut self.input
    }
    fn attempts(&mut self) -> &mut Attempts {
        &mut self.attempts
    }
    fn max_auth_attempts(&self) -> u32 {
        self.settings.max_auth_attempts
    }

    fn take_awaiting(&mut self) -> Option<((), usize)> {
        match mem::replace(&mut self.state, State::Ready) {
            State::AwaitingOutcome(awaiting) => Some(((), awaiting.pipelined)),
            other => {
                tracing::error!(state = other.name(), "login result without a pending login");
                self.state = other;
                None
            }
        }
    }

    fn set_authenticated(&mut self) {
        self.state = State::Authenticated;
    }

    fn process(&mut self, out: &mut Vec<Action>) {
        Machine::process(self, out)
    }

    fn close(&mut self, out: &mut Vec<Action>) {
        self.state = State::Closed;
        self.input = Vec::new();
        out.push(Action::Close);
    }

    fn authentication_failed(_: &()) -> Vec<u8> {
        reply::authentication_failed()
    }
    fn unavailable(_: &()) -> Vec<u8> {
        reply::unavailable()
    }
    fn malformed_credentials(_: &()) -> Vec<u8> {
        reply::malformed_credentials()
    }
    /// `421` before closing.
    fn too_many_failures() -> Option<Vec<u8>> {
        Some(reply::too_many_failures())
    }
}

impl Dialogue for Machine {
    /// `220 <hostname> ESMTP <banner>`.
    fn greeting(&self) -> Vec<u8> {
        reply::greeting(&self.settings.hostname, &self.settings.banner)
    }
    /// Bytes from the client, split anywhere.
    fn on_bytes(&mut self, bytes: &[u8]) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::Ready | State::ExpectSaslResponse(_) => {
                self.input.extend_from_slice(bytes);
                self.process(&mut out);
            }
            State::AwaitingOutcome(_) => self.hold(bytes, &mut out),
            State::AwaitingTls if !bytes.is_empty() => {
                // RFC 3207 §4.2: nothing may follow STARTTLS before the handshake.
                tracing::debug!("plaintext received after STARTTLS");
                self.close(&mut out);
            }
            State::AwaitingTls | State::Authenticated | State::Closed => {}
        }
        out
    }
    /// The TLS handshake after STARTTLS completed. RFC 3207 §4.2: everything learnt
    /// from the client before it is discarded (its EHLO name too), and no new greeting
    /// is sent; the client starts again with EHLO.
    fn on_tls_established(&mut self) -> Vec<Action> {
        if !matches!(self.state, State::AwaitingTls) {
            tracing::error!(
                state = self.state.name(),
                "tls established outside starttls"
            );
            return Vec::new();
        }
        self.tls = true;
        self.helo = None;
        self.framer.reset();
        self.input.clear();
        self.state = State::Ready;
        Vec::new()
    }
    /// How the [`Action::Login`] ended.
    fn on_login_result(&mut self, outcome: Outcome) -> Vec<Action> {
        self.login_result(outcome)
    }
    /// The caller refused the credentials of the [`Action::Login`] itself.
    fn on_rejected(&mut self, rejection: Rejection) -> Vec<Action> {
        self.rejected(rejection)
    }
    /// True once the client leg is encrypted.
    fn is_tls(&self) -> bool {
        self.tls
    }
    fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }
    /// The state's name, for logs.
    fn state_name(&self) -> &'static str {
        self.state.name()
    }
    /// The client's EHLO name when it is safe to repeat to a backend (a domain or an
    /// address literal: [`command::is_safe_helo`]).
    fn helo(&self) -> Option<&str> {
        self.helo.as_deref().filter(|h| command::is_safe_helo(h))
    }
}

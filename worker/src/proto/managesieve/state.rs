//! The sans-IO ManageSieve pre-authentication machine: bytes in, [`Action`]s out. It
//! never touches a socket, a clock or randomness; the session drives it and carries out
//! the actions. See the module doc of [`super`] for the state diagram.

use std::mem;
use std::sync::Arc;

use postern_config::model::{Config, Listener, TlsMode};

use super::command::{Command, Decoder, ErrorKind, SaslResponse};
use super::reply;
use crate::proto::auth::{self, Attempts, AwaitsLogin, SaslLogin};
use crate::proto::dialogue::{Action, Dialogue, Outcome, Rejection};
use crate::proto::grammar::{Limits, MAX_LINE_BYTES, MAX_LITERAL_BYTES};
use crate::proto::sasl_exchange::Exchange;

/// Most bytes held while a login is with the caller (what the client pipelined behind
/// its auth command). A client that sends more is closed.
pub const MAX_HELD_BYTES: usize = MAX_LINE_BYTES + MAX_LITERAL_BYTES;

/// What one listener's ManageSieve dialogue needs; built once per listener and shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `[capabilities.managesieve] implementation`.
    pub implementation: String,
    /// `[capabilities.managesieve] sieve`: the extensions advertised.
    pub sieve: Vec<String>,
    /// `[capabilities.managesieve] sasl`: the mechanisms advertised and accepted.
    pub sasl: Vec<String>,
    pub allow_plain_auth_without_tls: bool,
    pub tls: TlsMode,
    /// Failures before `BYE` (at least 1).
    pub max_auth_attempts: u32,
    pub limits: Limits,
}

impl Settings {
    pub fn new(config: &Config, listener: &Listener) -> Settings {
        let capabilities = &config.capabilities.managesieve;
        Settings {
            implementation: capabilities.implementation.clone(),
            sieve: capabilities.sieve.clone(),
            sasl: capabilities.auth.sasl.clone(),
            allow_plain_auth_without_tls: capabilities.auth.allow_plain_auth_without_tls,
            tls: listener.tls,
            max_auth_attempts: listener.max_auth_attempts,
            limits: Limits::PRE_AUTH,
        }
    }
}

enum State {
    /// Reading commands.
    NotAuthenticated,
    /// Inside `AUTHENTICATE`: a challenge was sent, the client's answer is awaited.
    ExpectSaslResponse(Exchange),
    /// `OK "Begin TLS negotiation now."` was sent; the handshake is the caller's.
    AwaitingTls,
    /// A [`LoginRequest`] is with the caller; this many bytes at the front of
    /// `Machine::input` went out as its `pipelined`.
    AwaitingOutcome {
        pipelined: usize,
    },
    /// The login succeeded; the caller relays from now on.
    Authenticated,
    Closed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::NotAuthenticated => "not_authenticated",
            State::ExpectSaslResponse(_) => "sasl_exchange",
            State::AwaitingTls => "awaiting_tls",
            State::AwaitingOutcome { .. } => "awaiting_outcome",
            State::Authenticated => "authenticated",
            State::Closed => "closed",
        }
    }
}

/// One client connection's dialogue up to authentication.
pub struct Machine {
    settings: Arc<Settings>,
    state: State,
    decoder: Decoder,
    /// Bytes received and not yet framed (or held while a login is out).
    input: Vec<u8>,
    tls: bool,
    /// The capability response for the current TLS state.
    capabilities: Vec<u8>,
    attempts: Attempts,
}

impl Machine {
    /// A new connection. On an implicit-TLS listener the handshake is already done.
    pub fn new(settings: Arc<Settings>) -> Machine {
        let mut machine = Machine {
            decoder: Decoder::new(settings.limits),
            tls: settings.tls == TlsMode::Implicit,
            settings,
            state: State::NotAuthenticated,
            input: Vec::new(),
            capabilities: Vec::new(),
            attempts: Attempts::default(),
        };
        machine.capabilities = machine.compute_capabilities();
        machine
    }

    /// The SASL mechanisms advertised now.
    pub fn mechanisms(&self) -> Vec<String> {
        reply::sasl_mechanisms(&self.settings.sasl, self.cleartext_allowed())
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

    fn compute_capabilities(&self) -> Vec<u8> {
        reply::capabilities(
            &self.settings.implementation,
            &self.mechanisms(),
            &self.settings.sieve,
            self.offers_starttls(),
        )
    }

    /// Frames and answers buffered input until more is needed or the state stops
    /// reading (a login is out, STARTTLS, closed).
    fn process(&mut self, out: &mut Vec<Action>) {
        let buf = mem::take(&mut self.input);
        let mut pos = 0;
        loop {
            let mut input = &buf[pos..];
            match self.state {
                State::NotAuthenticated => {
                    let decoded = self.decoder.decode(&mut input);
                    pos = buf.len() - input.len();
                    match decoded {
                        Ok(None) => break,
                        Ok(Some(command)) => self.on_command(command, &buf[pos..], out),
                        Err(kind) => {
                            out.push(Action::Reply(reply::parse_error(kind)));
                            self.count_failure(out);
                        }
                    }
                }
                State::ExpectSaslResponse(_) => {
                    let decoded = self.decoder.decode_response(&mut input);
                    pos = buf.len() - input.len();
                    match decoded {
                        Ok(None) => break,
                        Ok(Some(response)) => self.on_sasl_response(response, &buf[pos..], out),
                        Err(kind) => self.on_sasl_error(kind, out),
                    }
                }
                State::AwaitingTls
                | State::AwaitingOutcome { .. }
                | State::Authenticated
                | State::Closed => break,
            }
        }
        if !self.is_closed() {
            self.input = buf;
            self.input.drain(..pos);
        }
    }

    fn on_command(&mut self, command: Command, rest: &[u8], out: &mut Vec<Action>) {
        tracing::debug!(command = command.name(), "command");
        match command {
            Command::Capability => out.push(Action::Reply(self.capabilities.clone())),
            Command::Noop(tag) => out.push(Action::Reply(reply::noop(tag.as_deref()))),
            Command::Logout => {
                out.push(Action::Reply(reply::logout()));
                self.close(out);
            }
            Command::StartTls if !self.offers_starttls() => {
                self.not_allowed("STARTTLS");
                out.push(Action::Reply(reply::starttls_unavailable()));
            }
            Command::StartTls if !rest.is_empty() || !self.decoder.is_idle() => {
                // Plaintext pipelined behind STARTTLS could be taken for protected
                // input after the upgrade (STYLE §3): refuse and close.
                tracing::debug!("data pipelined after starttls");
                out.push(Action::Reply(reply::starttls_pipelined()));
                self.close(out);
            }
            Command::StartTls => {
                out.push(Action::Reply(reply::starttls()));
                out.push(Action::StartTls);
                self.state = State::AwaitingTls;
            }
            Command::Authenticate {
                mechanism,
                initial_response,
            } => self.start_auth(
                &mechanism,
                initial_response.as_ref().map(|r| r.expose().as_slice()),
                rest,
                out,
            ),
            Command::Unknown(name) => {
                self.not_allowed(&name);
                out.push(Action::Reply(reply::not_allowed()));
            }
        }
    }

    fn not_allowed(&self, command: &str) {
        tracing::debug!(command, state = self.state.name(), "command not allowed");
    }
    fn on_sasl_response(&mut self, response: SaslResponse, rest: &[u8], out: &mut Vec<Action>) {
        let State::ExpectSaslResponse(exchange) =
            mem::replace(&mut self.state, State::NotAuthenticated)
        else {
            return;
        };
        match response {
            // RFC 5804 §2.1: a NO; a cancel is not a failed attempt.
            SaslResponse::Abort => out.push(Action::Reply(reply::authentication_cancelled())),
            SaslResponse::Data(text) => self.sasl_step(exchange.respond(text.expose()), rest, out),
        }
    }

    fn on_sasl_error(&mut self, kind: ErrorKind, out: &mut Vec<Action>) {
        if let State::ExpectSaslResponse(_) = mem::replace(&mut self.state, State::NotAuthenticated)
        {
            out.push(Action::Reply(reply::parse_error(kind)));
            self.count_failure(out);
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
        reply::encrypt_needed()
    }
    fn challenge(prompt: &str) -> Vec<u8> {
        if prompt.is_empty() {
            reply::continuation()
        } else {
            reply::challenge(prompt)
        }
    }
    fn invalid_base64() -> Vec<u8> {
        reply::invalid_base64()
    }
    fn expect_response(&mut self, exchange: Exchange) {
        self.state = State::ExpectSaslResponse(exchange);
    }
    fn await_outcome(&mut self, pipelined: usize) {
        self.state = State::AwaitingOutcome { pipelined };
    }
}

impl AwaitsLogin for Machine {
    type Pending = ();
    const MAX_HELD_BYTES: usize = MAX_HELD_BYTES;

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
        match mem::replace(&mut self.state, State::NotAuthenticated) {
            State::AwaitingOutcome { pipelined } => Some(((), pipelined)),
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
    /// `BYE` before closing.
    fn too_many_failures() -> Option<Vec<u8>> {
        Some(reply::too_many_failures())
    }
}

impl Dialogue for Machine {
    /// The capability response (RFC 5804 §1.7): the greeting.
    fn greeting(&self) -> Vec<u8> {
        self.capabilities.clone()
    }
    /// Bytes from the client, split anywhere.
    fn on_bytes(&mut self, bytes: &[u8]) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::NotAuthenticated | State::ExpectSaslResponse(_) => {
                self.input.extend_from_slice(bytes);
                self.process(&mut out);
            }
            State::AwaitingOutcome { .. } => self.hold(bytes, &mut out),
            State::AwaitingTls if !bytes.is_empty() => {
                // RFC 5804 §2.2: the client sends nothing before the handshake.
                tracing::debug!("plaintext received after STARTTLS");
                self.close(&mut out);
            }
            State::AwaitingTls | State::Authenticated | State::Closed => {}
        }
        out
    }
    /// The TLS handshake after STARTTLS completed: the parser starts afresh and the
    /// capability response is recomputed and sent again (RFC 5804 §2.2).
    fn on_tls_established(&mut self) -> Vec<Action> {
        if !matches!(self.state, State::AwaitingTls) {
            tracing::error!(
                state = self.state.name(),
                "tls established outside starttls"
            );
            return Vec::new();
        }
        self.tls = true;
        self.capabilities = self.compute_capabilities();
        self.decoder.reset();
        self.input.clear();
        self.state = State::NotAuthenticated;
        vec![Action::Reply(self.capabilities.clone())]
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
}

//! The sans-IO POP3 AUTHORIZATION-state machine: bytes in, [`Action`]s out. It never
//! touches a socket, a clock or randomness; the session drives it and carries out the
//! actions. See the module doc of [`super`] for the state diagram.

use std::mem;
use std::sync::Arc;

use postern_config::model::{Config, Listener, TlsMode};

use super::command::{Command, Decoder, LineTooLong, Mechanism, Redacted, SaslResponse};
use super::reply;
use crate::proto::auth::{self, Attempts, AwaitsLogin, SaslLogin};
use crate::proto::dialogue::{Action, Credentials, Dialogue, Outcome, Rejection};
use crate::proto::grammar::{MAX_LINE_BYTES, MAX_LITERAL_BYTES};
use crate::proto::sasl_exchange::Exchange;

/// Most bytes held while a login is with the caller (what the client pipelined behind
/// its auth command). A client that sends more is closed.
pub const MAX_HELD_BYTES: usize = MAX_LINE_BYTES + MAX_LITERAL_BYTES;

/// What one listener's POP3 dialogue needs; built once per listener and shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `[capabilities.pop3] sasl`: the mechanisms advertised and accepted.
    pub sasl: Vec<String>,
    pub allow_plain_auth_without_tls: bool,
    pub banner: String,
    pub tls: TlsMode,
    /// Counted failures before the connection closes (at least 1).
    pub max_auth_attempts: u32,
}

impl Settings {
    pub fn new(config: &Config, listener: &Listener) -> Settings {
        let capabilities = &config.capabilities.pop3;
        Settings {
            sasl: capabilities.auth.sasl.clone(),
            allow_plain_auth_without_tls: capabilities.auth.allow_plain_auth_without_tls,
            banner: capabilities.banner.clone(),
            tls: listener.tls,
            max_auth_attempts: listener.max_auth_attempts,
        }
    }
}

enum State {
    /// Reading commands (RFC 1939 AUTHORIZATION state).
    Authorization,
    /// Inside `AUTH`: a challenge was sent, the client's line is awaited.
    ExpectSaslResponse(Exchange),
    /// `+OK Begin TLS negotiation` was sent; the handshake is the caller's.
    AwaitingTls,
    /// A [`LoginRequest`] is with the caller; `pipelined` bytes at the front of
    /// `Machine::input` went out with it.
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
            State::Authorization => "authorization",
            State::ExpectSaslResponse(_) => "sasl_exchange",
            State::AwaitingTls => "awaiting_tls",
            State::AwaitingOutcome { .. } => "awaiting_outcome",
            State::Authenticated => "authenticated",
            State::Closed => "closed",
        }
    }
}

/// One client connection's POP3 dialogue up to authentication.
pub struct Machine {
    settings: Arc<Settings>,
    state: State,
    decoder: Decoder,
    /// Bytes received and not yet framed (or held while a login is out).
    input: Vec<u8>,
    tls: bool,
    /// The name of an accepted `USER`, waiting for `PASS`.
    user: Option<Redacted<Vec<u8>>>,
    attempts: Attempts,
}

impl Machine {
    /// A new connection. On an implicit-TLS listener the handshake is already done.
    pub fn new(settings: Arc<Settings>) -> Machine {
        Machine {
            tls: settings.tls == TlsMode::Implicit,
            settings,
            state: State::Authorization,
            decoder: Decoder::new(),
            input: Vec::new(),
            user: None,
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

    /// The mechanisms advertised and accepted right now.
    pub fn mechanisms(&self) -> Vec<String> {
        reply::mechanisms(&self.settings.sasl, self.cleartext_allowed())
    }

    fn cleartext_allowed(&self) -> bool {
        auth::cleartext_allowed(self.settings.allow_plain_auth_without_tls, self.tls)
    }

    fn offers_stls(&self) -> bool {
        self.settings.tls == TlsMode::Starttls && !self.tls
    }

    /// Frames and answers buffered input until more is needed or the state stops
    /// reading (a login is out, STLS, closed).
    fn process(&mut self, out: &mut Vec<Action>) {
        let buf = mem::take(&mut self.input);
        let mut pos = 0;
        loop {
            let mut input = &buf[pos..];
            match self.state {
                State::Authorization => {
                    let decoded = self.decoder.decode_command(&mut input);
                    pos = buf.len() - input.len();
                    match decoded {
                        Ok(None) => break,
                        Ok(Some(command)) => self.on_command(command, &buf[pos..], out),
                        Err(LineTooLong) => {
                            out.push(Action::Reply(reply::line_too_long()));
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
                        Err(LineTooLong) => {
                            self.state = State::Authorization;
                            out.push(Action::Reply(reply::line_too_long()));
                            self.count_failure(out);
                        }
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
            Command::Capa => out.push(Action::Reply(reply::capa(
                &self.mechanisms(),
                self.cleartext_allowed(),
                self.offers_stls(),
            ))),
            Command::Noop | Command::Utf8 => out.push(Action::Reply(reply::ok())),
            Command::Quit => {
                out.push(Action::Reply(reply::bye()));
                self.close(out);
            }
            Command::Apop => out.push(Action::Reply(reply::apop_unsupported())),
            Command::Stls if !self.offers_stls() => {
                self.not_allowed("STLS");
                out.push(Action::Reply(reply::stls_unavailable()));
            }
            Command::Stls if !rest.is_empty() => {
                // Plaintext pipelined behind STLS could be taken for protected input
                // after the upgrade (STYLE §3): refuse and close.
                tracing::debug!("data pipelined after stls");
                out.push(Action::Reply(reply::stls_pipelined()));
                self.close(out);
            }
            Command::Stls => {
                out.push(Action::Reply(reply::stls()));
                out.push(Action::StartTls);
                self.state = State::AwaitingTls;
            }
            Command::User(_) | Command::Pass(_) if !self.cleartext_allowed() => {
                // Not counted (reference §5).
                out.push(Action::Reply(reply::cleartext_requires_tls()));
            }
            Command::User(user) if user.expose().is_empty() => {
                out.push(Action::Reply(reply::user_argument_required()));
            }
            Command::User(user) => {
                self.user = Some(user);
                out.push(Action::Reply(reply::ok()));
            }
            Command::Pass(password) => match self.user.take() {
                None => out.push(Action::Reply(reply::user_required())),
                Some(user) => {
                    let credentials = Credentials::UserPassword { user, password };
                    self.login(Mechanism::Login, credentials, true, rest, out);
                }
            },
            Command::Auth {
                mechanism: None, ..
            } => out.push(Action::Reply(reply::mechanism_list(&self.mechanisms()))),
            Command::Auth {
                mechanism: Some(name),
                initial_response,
            } => self.start_auth(
                &name,
                initial_response.as_ref().map(|r| r.expose().as_slice()),
                rest,
                out,
            ),
            Command::AuthSyntax => out.push(Action::Reply(reply::auth_syntax())),
            Command::Unknown(verb) => {
                self.not_allowed(verb.unwrap_or("<unknown>"));
                out.push(Action::Reply(reply::unknown_command()));
            }
        }
    }

    fn not_allowed(&self, command: &str) {
        tracing::debug!(command, state = self.state.name(), "command not allowed");
    }
    fn on_sasl_response(&mut self, response: SaslResponse, rest: &[u8], out: &mut Vec<Action>) {
        let State::ExpectSaslResponse(exchange) =
            mem::replace(&mut self.state, State::Authorization)
        else {
            return;
        };
        match response {
            SaslResponse::Abort => {
                // RFC 5034 §4: `-ERR`; a cancel is not a failed attempt.
                out.push(Action::Reply(reply::authentication_cancelled()));
            }
            SaslResponse::Data(text) => self.sasl_step(exchange.respond(text.expose()), rest, out),
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
        reply::cleartext_requires_tls()
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
        match mem::replace(&mut self.state, State::Authorization) {
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
        self.user = None;
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
    /// None: the failure's own `-ERR` is the last line the client gets.
    fn too_many_failures() -> Option<Vec<u8>> {
        None
    }
}

impl Dialogue for Machine {
    /// `+OK <banner>`.
    fn greeting(&self) -> Vec<u8> {
        reply::greeting(&self.settings.banner)
    }
    /// Bytes from the client, split anywhere.
    fn on_bytes(&mut self, bytes: &[u8]) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::Authorization | State::ExpectSaslResponse(_) => {
                self.input.extend_from_slice(bytes);
                self.process(&mut out);
            }
            State::AwaitingOutcome { .. } => self.hold(bytes, &mut out),
            State::AwaitingTls if !bytes.is_empty() => {
                // RFC 2595 §4: nothing may follow STLS before the handshake.
                tracing::debug!("plaintext received after STLS");
                self.close(&mut out);
            }
            State::AwaitingTls | State::Authenticated | State::Closed => {}
        }
        out
    }
    /// The TLS handshake after STLS completed. RFC 2595 §4: no new greeting; whatever
    /// was learnt before (a `USER`, a partial line) is forgotten.
    fn on_tls_established(&mut self) -> Vec<Action> {
        if !matches!(self.state, State::AwaitingTls) {
            tracing::error!(state = self.state.name(), "tls established outside stls");
            return Vec::new();
        }
        self.tls = true;
        self.decoder.reset();
        self.input.clear();
        self.user = None;
        self.state = State::Authorization;
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
}

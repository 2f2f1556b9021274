//! The sans-IO IMAP pre-authentication machine: bytes in, [`Action`]s out. It never
//! touches a socket, a clock or randomness; the session drives it and carries out the
//! actions. See the module doc of [`super`] for the state diagram.

use std::mem;
use std::sync::Arc;

use postern_config::model::{ImapCapabilities, Listener, TlsMode};

use super::command::{
    Command, Decoder, ErrorKind, Frame, Mechanism, Redacted, SaslResponse, Tag, Tagged,
};
use super::reply;
use crate::proto::auth::{self, Attempts, AwaitsLogin};
use crate::proto::dialogue::{Action, Credentials, Dialogue, LoginRequest, Outcome, Rejection};
use crate::proto::grammar::{Limits, MAX_LINE_BYTES, MAX_LITERAL_BYTES};
use crate::proto::sasl_exchange::{Exchange, Next};

/// Most bytes held while a login is with the caller (what the client pipelined behind
/// its auth command). A client that sends more is closed.
pub const MAX_HELD_BYTES: usize = MAX_LINE_BYTES + MAX_LITERAL_BYTES;

/// What one listener's IMAP dialogue needs; built once per listener and shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `[capabilities.imap] advertise`.
    pub advertise: Vec<String>,
    /// `[capabilities.imap] sasl`: the mechanisms advertised and accepted.
    pub sasl: Vec<String>,
    pub allow_plain_auth_without_tls: bool,
    pub banner: String,
    pub tls: TlsMode,
    /// Failures before `* BYE` (at least 1).
    pub max_auth_attempts: u32,
    pub limits: Limits,
}

impl Settings {
    pub fn new(capabilities: &ImapCapabilities, listener: &Listener) -> Settings {
        Settings {
            advertise: capabilities.advertise.clone(),
            sasl: capabilities.auth.sasl.clone(),
            allow_plain_auth_without_tls: capabilities.auth.allow_plain_auth_without_tls,
            banner: capabilities.banner.clone(),
            tls: listener.tls,
            max_auth_attempts: listener.max_auth_attempts,
            limits: Limits::PRE_AUTH,
        }
    }
}

enum State {
    /// Reading commands.
    NotAuthenticated,
    /// Inside `AUTHENTICATE`: a continuation was sent, the client's line is awaited.
    ExpectSaslResponse(ExpectSaslResponse),
    /// `OK Begin TLS negotiation now.` was sent; the handshake is the caller's.
    AwaitingTls,
    /// A [`LoginRequest`] is with the caller.
    AwaitingOutcome(AwaitingOutcome),
    /// The login succeeded; the caller relays from now on.
    Authenticated,
    Closed,
}

struct ExpectSaslResponse {
    tag: Tag,
    exchange: Exchange,
}

struct AwaitingOutcome {
    tag: Tag,
    /// How many bytes at the front of `Machine::input` went out as `pipelined`.
    pipelined: usize,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::NotAuthenticated => "not_authenticated",
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
    decoder: Decoder,
    /// Bytes received and not yet framed (or held while a login is out).
    input: Vec<u8>,
    tls: bool,
    capabilities: String,
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
            capabilities: String::new(),
            attempts: Attempts::default(),
        };
        machine.capabilities = machine.compute_capabilities();
        machine
    }

    /// The current capability list.
    #[cfg(test)]
    pub fn capabilities(&self) -> &str {
        &self.capabilities
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

    fn compute_capabilities(&self) -> String {
        reply::capabilities(
            &self.settings.advertise,
            &self.settings.sasl,
            self.cleartext_allowed(),
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
                        Ok(Some(Frame::Command(command))) => {
                            self.on_command(command, &buf[pos..], out)
                        }
                        Ok(Some(Frame::NeedContinuation { tag, verb, size })) => {
                            self.on_literal(tag, &verb, size, out)
                        }
                        Err(e) => {
                            out.push(Action::Reply(reply::parse_error(e.tag.as_ref(), e.kind)));
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
                        Err(e) => self.on_sasl_error(e.kind, out),
                    }
                }
                State::AwaitingTls
                | State::AwaitingOutcome(_)
                | State::Authenticated
                | State::Closed => break,
            }
        }
        if !self.is_closed() {
            self.input = buf;
            self.input.drain(..pos);
        }
    }

    fn on_command(&mut self, tagged: Tagged, rest: &[u8], out: &mut Vec<Action>) {
        let Tagged { tag, command } = tagged;
        tracing::debug!(command = command.name(), "command");
        match command {
            Command::Capability => {
                out.push(Action::Reply(reply::capability(&tag, &self.capabilities)))
            }
            Command::Noop => out.push(Action::Reply(reply::noop(&tag))),
            // The client's own ID fields are not used: the backend learns about the
            // client from the proxy's ID (backend.rs).
            Command::Id(_) => out.push(Action::Reply(reply::id(&tag))),
            Command::Logout => {
                out.push(Action::Reply(reply::logout(&tag)));
                self.close(out);
            }
            Command::StartTls if !self.offers_starttls() => {
                self.not_allowed("STARTTLS");
                out.push(Action::Reply(reply::starttls_unavailable(&tag)));
            }
            Command::StartTls if !rest.is_empty() => {
                // Plaintext pipelined behind STARTTLS could be taken for protected
                // input after the upgrade (STYLE §3): refuse and close.
                tracing::debug!("data pipelined after starttls");
                out.push(Action::Reply(reply::starttls_pipelined(&tag)));
                self.close(out);
            }
            Command::StartTls => {
                out.push(Action::Reply(reply::starttls(&tag)));
                out.push(Action::StartTls);
                self.state = State::AwaitingTls;
            }
            Command::Login { .. } if !self.cleartext_allowed() => {
                // RFC 9051 §6.2.3 (LOGINDISABLED); not counted (reference §5).
                out.push(Action::Reply(reply::privacy_required(&tag)));
            }
            Command::Login { user, password } => {
                let credentials = Credentials::UserPassword { user, password };
                self.login(tag, Mechanism::Login, credentials, true, rest, out);
            }
            Command::Authenticate {
                mechanism,
                initial_response,
            } => self.on_authenticate(tag, &mechanism, initial_response, rest, out),
            Command::Unknown(name) => {
                self.not_allowed(&name);
                out.push(Action::Reply(reply::not_allowed(&tag)));
            }
        }
    }

    fn not_allowed(&self, command: &str) {
        tracing::debug!(command, state = self.state.name(), "command not allowed");
    }

    /// A synchronising literal was announced: go ahead only for the commands that take
    /// strings here, so no client sends a password that would be refused anyway.
    fn on_literal(&mut self, tag: Option<Tag>, verb: &str, size: u32, out: &mut Vec<Action>) {
        let Some(tag) = tag else {
            self.decoder.reject_literal();
            out.push(Action::Reply(reply::parse_error(
                None,
                ErrorKind::InvalidTag,
            )));
            self.count_failure(out);
            return;
        };
        match verb {
            "LOGIN" if !self.cleartext_allowed() => {
                self.decoder.reject_literal();
                out.push(Action::Reply(reply::privacy_required(&tag)));
            }
            "LOGIN" | "ID" => out.push(Action::Reply(reply::literal_ready(size))),
            "" | "CAPABILITY" | "NOOP" | "LOGOUT" | "STARTTLS" | "AUTHENTICATE" => {
                self.decoder.reject_literal();
                let kind = if verb.is_empty() {
                    ErrorKind::MissingCommand
                } else {
                    ErrorKind::InvalidArgument
                };
                out.push(Action::Reply(reply::parse_error(Some(&tag), kind)));
                self.count_failure(out);
            }
            other => {
                self.decoder.reject_literal();
                self.not_allowed(other);
                out.push(Action::Reply(reply::not_allowed(&tag)));
            }
        }
    }

    fn on_authenticate(
        &mut self,
        tag: Tag,
        name: &str,
        initial_response: Option<Redacted<Vec<u8>>>,
        rest: &[u8],
        out: &mut Vec<Action>,
    ) {
        let mechanism = match auth::choose(&self.settings.sasl, name, self.cleartext_allowed()) {
            Ok(mechanism) => mechanism,
            Err(auth::Refusal::NotOffered) => {
                out.push(Action::Reply(reply::mechanism_unsupported(&tag, name)));
                self.count_failure(out);
                return;
            }
            Err(auth::Refusal::NeedsTls) => {
                out.push(Action::Reply(reply::privacy_required(&tag)));
                return;
            }
        };
        let initial = initial_response.as_ref().map(|r| r.expose().as_slice());
        self.on_exchange(tag, Exchange::start(mechanism, initial), rest, out);
    }

    /// The next step of an `AUTHENTICATE` exchange.
    fn on_exchange(&mut self, tag: Tag, next: Next, rest: &[u8], out: &mut Vec<Action>) {
        match next {
            Next::Challenge(exchange, prompt) => {
                out.push(Action::Reply(if prompt.is_empty() {
                    reply::continuation()
                } else {
                    reply::challenge(prompt)
                }));
                self.state = State::ExpectSaslResponse(ExpectSaslResponse { tag, exchange });
            }
            Next::Done {
                mechanism,
                credentials,
            } => self.login(tag, mechanism, credentials, false, rest, out),
            Next::InvalidBase64 => {
                out.push(Action::Reply(reply::invalid_base64(&tag)));
                self.count_failure(out);
            }
        }
    }

    fn on_sasl_response(&mut self, response: SaslResponse, rest: &[u8], out: &mut Vec<Action>) {
        let State::ExpectSaslResponse(expect) =
            mem::replace(&mut self.state, State::NotAuthenticated)
        else {
            return;
        };
        let ExpectSaslResponse { tag, exchange } = expect;
        match response {
            SaslResponse::Abort => {
                // RFC 9051 §6.2.2: a tagged BAD; a cancel is not a failed attempt.
                out.push(Action::Reply(reply::authentication_cancelled(&tag)));
            }
            SaslResponse::Data(text) => {
                self.on_exchange(tag, exchange.respond(text.expose()), rest, out)
            }
        }
    }

    fn on_sasl_error(&mut self, kind: ErrorKind, out: &mut Vec<Action>) {
        if let State::ExpectSaslResponse(expect) =
            mem::replace(&mut self.state, State::NotAuthenticated)
        {
            out.push(Action::Reply(reply::parse_error(Some(&expect.tag), kind)));
            self.count_failure(out);
        }
    }

    /// Hands the credentials to the caller; `rest` is what the client pipelined.
    fn login(
        &mut self,
        tag: Tag,
        mechanism: Mechanism,
        credentials: Credentials,
        is_login_command: bool,
        rest: &[u8],
        out: &mut Vec<Action>,
    ) {
        tracing::debug!(
            mechanism = mechanism.name(),
            pipelined = rest.len(),
            "login"
        );
        self.state = State::AwaitingOutcome(AwaitingOutcome {
            tag: tag.clone(),
            pipelined: rest.len(),
        });
        out.push(Action::Login(LoginRequest {
            tag: tag.to_string(),
            mechanism,
            credentials,
            is_login_command,
            pipelined: Redacted::new(rest.to_vec()),
        }));
    }
}

impl AwaitsLogin for Machine {
    type Pending = Tag;
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

    fn take_awaiting(&mut self) -> Option<(Tag, usize)> {
        match mem::replace(&mut self.state, State::NotAuthenticated) {
            State::AwaitingOutcome(awaiting) => Some((awaiting.tag, awaiting.pipelined)),
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

    fn authentication_failed(tag: &Tag) -> Vec<u8> {
        reply::authentication_failed(tag)
    }
    fn unavailable(tag: &Tag) -> Vec<u8> {
        reply::unavailable(tag)
    }
    fn malformed_credentials(tag: &Tag) -> Vec<u8> {
        reply::malformed_credentials(tag)
    }
    /// `* BYE` before closing.
    fn too_many_failures() -> Option<Vec<u8>> {
        Some(reply::too_many_failures())
    }
}

impl Dialogue for Machine {
    /// `* OK [CAPABILITY ...] <banner>`.
    fn greeting(&self) -> Vec<u8> {
        reply::greeting(&self.capabilities, &self.settings.banner)
    }
    /// Bytes from the client, split anywhere.
    fn on_bytes(&mut self, bytes: &[u8]) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::NotAuthenticated | State::ExpectSaslResponse(_) => {
                self.input.extend_from_slice(bytes);
                self.process(&mut out);
            }
            State::AwaitingOutcome(_) => self.hold(bytes, &mut out),
            State::AwaitingTls if !bytes.is_empty() => {
                // RFC 9051 §6.2.1: nothing may follow STARTTLS before the handshake.
                tracing::debug!("plaintext received after STARTTLS");
                self.close(&mut out);
            }
            State::AwaitingTls | State::Authenticated | State::Closed => {}
        }
        out
    }
    /// The TLS handshake after STARTTLS completed: the parser starts afresh and the
    /// capabilities are recomputed. IMAP sends no new greeting (RFC 9051 §6.2.1).
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

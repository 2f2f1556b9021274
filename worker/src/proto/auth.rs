//! The login bookkeeping every interactive machine (IMAP, POP3, ManageSieve,
//! submission) shares, written once: the SASL policy (which mechanisms are offered and
//! accepted), the count of failed attempts, the input held while a login is with the
//! caller, and what happens when the login's result comes back.
//!
//! A machine implements [`AwaitsLogin`] with its own state moves and its protocol's
//! replies; the rules themselves (reference §4.8, §5, DESIGN.md) live here. The
//! untagged protocols (POP3 `AUTH`, ManageSieve `AUTHENTICATE`, SMTP `AUTH`) also share
//! their SASL steps through [`SaslLogin`]; IMAP's carry a tag and stay its own.

use std::mem;

use crate::proto::dialogue::{Action, Credentials, LoginRequest, Outcome, Redacted, Rejection};
use crate::proto::sasl_exchange::{Exchange, Next};
use crate::sasl::Mechanism;

fn is_cleartext(name: &str) -> bool {
    name.eq_ignore_ascii_case("PLAIN") || name.eq_ignore_ascii_case("LOGIN")
}

/// The SASL mechanisms to advertise: the configured list, upper-cased, without PLAIN
/// and LOGIN while cleartext is not allowed (LOGIN appears only when listed, DESIGN.md).
pub fn mechanisms(sasl: &[String], cleartext_allowed: bool) -> Vec<String> {
    sasl.iter()
        .filter(|m| cleartext_allowed || !is_cleartext(m))
        .map(|m| m.to_ascii_uppercase())
        .collect()
}

/// True when `mechanism` is in the configured SASL list (any case).
fn is_listed(sasl: &[String], mechanism: Mechanism) -> bool {
    sasl.iter()
        .any(|m| m.eq_ignore_ascii_case(mechanism.name()))
}

/// Why the mechanism a client named cannot start an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown or not in the configured list: a failure that counts toward
    /// `max_auth_attempts`.
    NotOffered,
    /// A cleartext mechanism (PLAIN, LOGIN) before TLS while cleartext is not allowed:
    /// refused without counting (reference §5).
    NeedsTls,
}

/// The mechanism the client named in its auth command, if it may start an exchange on
/// this leg.
pub fn choose(sasl: &[String], name: &str, cleartext_allowed: bool) -> Result<Mechanism, Refusal> {
    let Some(mechanism) = Mechanism::from_name(name).filter(|&m| is_listed(sasl, m)) else {
        tracing::debug!(mechanism = name, "mechanism not offered");
        return Err(Refusal::NotOffered);
    };
    if mechanism.is_cleartext() && !cleartext_allowed {
        return Err(Refusal::NeedsTls);
    }
    Ok(mechanism)
}

/// Cleartext credentials (PLAIN, LOGIN, password commands) are accepted on an
/// encrypted leg, or anywhere when the configuration allows it.
pub fn cleartext_allowed(allow_plain_auth_without_tls: bool, tls: bool) -> bool {
    allow_plain_auth_without_tls || tls
}

/// Failures counted toward `max_auth_attempts`.
#[derive(Debug, Default)]
pub struct Attempts {
    failures: u32,
}

impl Attempts {
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Counts one failure; true when `max` is reached (logged).
    fn count(&mut self, max: u32) -> bool {
        self.failures = self.failures.saturating_add(1);
        let exhausted = self.failures >= max;
        if exhausted {
            tracing::debug!(failures = self.failures, "too many authentication failures");
        }
        exhausted
    }
}

/// A machine's side of a login that went out as [`Action::Login`]. The provided methods
/// are the shared rules; the required ones are the machine's state moves and replies.
pub(crate) trait AwaitsLogin {
    /// What the machine kept of the pending login besides the pipelined count (IMAP:
    /// the command tag).
    type Pending;
    /// Most bytes held while a login is with the caller; a client that sends more is
    /// closed.
    const MAX_HELD_BYTES: usize;
    /// After [`Outcome::Unavailable`]: close (true) or read on, the client may retry.
    const CLOSE_WHEN_UNAVAILABLE: bool = false;

    /// Bytes received and not yet framed, or held while a login is out.
    fn input(&mut self) -> &mut Vec<u8>;
    fn attempts(&mut self) -> &mut Attempts;
    fn max_auth_attempts(&self) -> u32;
    /// Leaves `AwaitingOutcome` for the reading state, returning the pending login and
    /// how many bytes at the front of the input went out as its `pipelined`. A result
    /// without a pending login is a caller bug, logged and ignored (`None`).
    fn take_awaiting(&mut self) -> Option<(Self::Pending, usize)>;
    /// The login succeeded: from now on the caller relays.
    fn set_authenticated(&mut self);
    /// Frames and answers the input until more is needed or the state stops reading.
    fn process(&mut self, out: &mut Vec<Action>);
    fn close(&mut self, out: &mut Vec<Action>);

    /// The generic "authentication failed" (`hide_auth_errors`).
    fn authentication_failed(pending: &Self::Pending) -> Vec<u8>;
    fn unavailable(pending: &Self::Pending) -> Vec<u8>;
    fn malformed_credentials(pending: &Self::Pending) -> Vec<u8>;
    /// The last words before closing at `max_auth_attempts`, if the protocol has any
    /// beyond the failure's own reply.
    fn too_many_failures() -> Option<Vec<u8>>;

    /// Client bytes while the login is out: held, up to [`Self::MAX_HELD_BYTES`].
    fn hold(&mut self, bytes: &[u8], out: &mut Vec<Action>) {
        let input = self.input();
        input.extend_from_slice(bytes);
        if input.len() > Self::MAX_HELD_BYTES {
            tracing::debug!(held = input.len(), "too much data during login");
            self.close(out);
        }
    }

    /// A failure that counts toward `max_auth_attempts`; at the limit, close.
    fn count_failure(&mut self, out: &mut Vec<Action>) {
        let max = self.max_auth_attempts();
        if self.attempts().count(max) {
            if let Some(reply) = Self::too_many_failures() {
                out.push(Action::Reply(reply));
            }
            self.close(out);
        }
    }

    /// How the [`Action::Login`] ended. On success the bytes held past the login's
    /// `pipelined` go to the backend; otherwise the machine answers the held input.
    fn login_result(&mut self, outcome: Outcome) -> Vec<Action> {
        let mut out = Vec::new();
        let Some((pending, pipelined)) = self.take_awaiting() else {
            return out;
        };
        match outcome {
            Outcome::Success => {
                let input = mem::take(self.input());
                let leftovers = input.get(pipelined..).unwrap_or_default().to_vec();
                self.set_authenticated();
                out.push(Action::Splice {
                    leftovers: Redacted::new(leftovers),
                });
            }
            Outcome::Failure { reply } => {
                let reply = reply.unwrap_or_else(|| Self::authentication_failed(&pending));
                out.push(Action::Reply(reply));
                self.count_failure(&mut out);
                self.process(&mut out);
            }
            Outcome::Unavailable => {
                out.push(Action::Reply(Self::unavailable(&pending)));
                if Self::CLOSE_WHEN_UNAVAILABLE {
                    self.close(&mut out);
                } else {
                    self.process(&mut out);
                }
            }
        }
        out
    }

    /// The caller refused the credentials of the [`Action::Login`] itself.
    fn rejected(&mut self, rejection: Rejection) -> Vec<Action> {
        let mut out = Vec::new();
        let Some((pending, _)) = self.take_awaiting() else {
            return out;
        };
        match rejection {
            Rejection::Malformed => {
                out.push(Action::Reply(Self::malformed_credentials(&pending)));
                self.count_failure(&mut out);
                self.process(&mut out);
            }
            Rejection::UnsafeIdentifier => {
                out.push(Action::Reply(Self::unavailable(&pending)));
                self.close(&mut out);
            }
        }
        out
    }
}

/// The SASL steps of an untagged protocol: choosing the mechanism, the challenges, and
/// handing the credentials to the caller. The required methods are the protocol's
/// replies and state moves.
pub(crate) trait SaslLogin: AwaitsLogin {
    /// The mechanisms the listener offers, and whether cleartext ones are allowed now.
    fn offered(&self) -> (&[String], bool);
    /// A mechanism not offered (a counted failure).
    fn mechanism_unsupported() -> Vec<u8>;
    /// A cleartext mechanism without TLS (not counted, reference §5).
    fn needs_tls() -> Vec<u8>;
    /// A continuation carrying the base64 `prompt` (empty: none).
    fn challenge(prompt: &str) -> Vec<u8>;
    /// Client data that was not base64 (a counted failure).
    fn invalid_base64() -> Vec<u8>;
    /// Waits for the client's answer to a challenge, to feed to `exchange`.
    fn expect_response(&mut self, exchange: Exchange);
    /// Enters `AwaitingOutcome` for a login whose first `pipelined` input bytes went out
    /// with it.
    fn await_outcome(&mut self, pipelined: usize);

    /// The client named a mechanism, with or without an initial response.
    fn start_auth(
        &mut self,
        name: &str,
        initial_response: Option<&[u8]>,
        rest: &[u8],
        out: &mut Vec<Action>,
    ) {
        let (sasl, cleartext_allowed) = self.offered();
        match choose(sasl, name, cleartext_allowed) {
            Ok(mechanism) => {
                self.sasl_step(Exchange::start(mechanism, initial_response), rest, out)
            }
            Err(Refusal::NotOffered) => {
                out.push(Action::Reply(Self::mechanism_unsupported()));
                self.count_failure(out);
            }
            Err(Refusal::NeedsTls) => out.push(Action::Reply(Self::needs_tls())),
        }
    }

    /// The next step of the exchange.
    fn sasl_step(&mut self, next: Next, rest: &[u8], out: &mut Vec<Action>) {
        match next {
            Next::Challenge(exchange, prompt) => {
                out.push(Action::Reply(Self::challenge(prompt)));
                self.expect_response(exchange);
            }
            Next::Done {
                mechanism,
                credentials,
            } => self.login(mechanism, credentials, false, rest, out),
            Next::InvalidBase64 => {
                out.push(Action::Reply(Self::invalid_base64()));
                self.count_failure(out);
            }
        }
    }

    /// Hands the credentials to the caller; `rest` is what the client pipelined.
    fn login(
        &mut self,
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
        self.await_outcome(rest.len());
        out.push(Action::Login(LoginRequest {
            tag: String::new(),
            mechanism,
            credentials,
            is_login_command,
            pipelined: Redacted::new(rest.to_vec()),
        }));
    }
}

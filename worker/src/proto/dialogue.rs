//! What every interactive front door (IMAP, POP3, ManageSieve, submission) shares.
//!
//! Each protocol brings two halves, and [`crate::proto::session`] drives them:
//!
//! - a sans-IO [`Dialogue`]: bytes in, [`Action`]s out, up to the moment it hands the
//!   client's credentials out as an [`Action::Login`];
//! - a [`Backend`]: the establishment dialogue on a fresh backend connection
//!   (greeting, STARTTLS, capabilities, client-identity forwarding) and the replay of
//!   the login, ending in a [`Replay`].
//!
//! Routing, dialing, TLS, timeouts, `hide_auth_errors`, the credentials-over-TLS rule and
//! the relay are the session's, written once for all of them.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;

use postern_config::model::Protocol;

use crate::sasl::{Credentials as SaslCredentials, Mechanism};
use crate::upstream::{BackendStream, Connected, DialError};

/// A value that must never be logged: `Debug` prints `<redacted>` and there is no
/// `Display`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    pub fn new(value: T) -> Redacted<T> {
        Redacted(value)
    }

    /// The secret value, for handing to the SASL decoder or a backend.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What the session must do, in order.
#[derive(Debug)]
pub enum Action {
    /// Write these bytes to the client.
    Reply(Vec<u8>),
    /// Flush the replies, then run the TLS handshake and call
    /// [`Dialogue::on_tls_established`]. The dialogue has checked that no plaintext
    /// followed the command.
    StartTls,
    /// Authenticate at a backend, then call [`Dialogue::on_login_result`] (or
    /// [`Dialogue::on_rejected`] if the credentials are refused before any backend).
    Login(LoginRequest),
    /// The login succeeded: the dialogue is over. Forward the login's `pipelined` bytes,
    /// then these (received while the login was with the caller), then relay.
    Splice { leftovers: Redacted<Vec<u8>> },
    /// Close the connection (after writing the replies before it).
    Close,
}

/// A client's credentials, ready for the SASL decoder and the replay.
#[derive(Debug)]
pub struct LoginRequest {
    /// The command tag the backend replay uses (IMAP); empty for untagged protocols.
    pub tag: String,
    /// `Login` for password logins without SASL (IMAP `LOGIN`, POP3 `USER`/`PASS`) and
    /// for SASL LOGIN.
    pub mechanism: Mechanism,
    pub credentials: Credentials,
    /// True for a protocol's own password command (IMAP `LOGIN`, POP3 `USER`/`PASS`),
    /// false for SASL.
    pub is_login_command: bool,
    /// Bytes the client sent after its auth command, in order; they belong to the
    /// backend if the login succeeds (reference §4.8). On failure the dialogue keeps
    /// them and answers them itself.
    pub pipelined: Redacted<Vec<u8>>,
}

/// The client's credentials, base64-decoded but otherwise as sent: the payload's
/// meaning (PLAIN fields, bearer tokens, identifiers) is the SASL decoder's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// The client's (first and only) SASL response: PLAIN, OAUTHBEARER, XOAUTH2.
    Response(Redacted<Vec<u8>>),
    /// A password command, or the two answers of SASL LOGIN.
    UserPassword {
        user: Redacted<Vec<u8>>,
        password: Redacted<Vec<u8>>,
    },
}

/// How a [`LoginRequest`] ended at the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The backend accepted. The session relays the backend's reply itself.
    Success,
    /// The backend refused: its reply goes to the client, or the protocol's generic
    /// "authentication failed" when `reply` is `None` (`hide_auth_errors`). Counts
    /// toward `max_auth_attempts` (DESIGN.md).
    Failure { reply: Option<Vec<u8>> },
    /// No backend could be had: the protocol's "backend unavailable", not counted; the
    /// client may retry.
    Unavailable,
}

/// Credentials refused by the session before any backend was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The SASL decoder refused the payload: missing or empty fields, CR/LF/NUL inside a
    /// field, not UTF-8. Counted.
    Malformed,
    /// The identifier failed the safety check (reference §3.2): "backend unavailable",
    /// then close.
    UnsafeIdentifier,
}

/// A protocol's client-facing dialogue up to authentication, sans IO.
pub trait Dialogue: Send {
    /// The first bytes sent to the client.
    fn greeting(&self) -> Vec<u8>;
    /// Bytes from the client, split anywhere.
    fn on_bytes(&mut self, bytes: &[u8]) -> Vec<Action>;
    /// The TLS handshake after [`Action::StartTls`] completed.
    fn on_tls_established(&mut self) -> Vec<Action>;
    /// How the [`Action::Login`] ended.
    fn on_login_result(&mut self, outcome: Outcome) -> Vec<Action>;
    /// The session refused the credentials of the [`Action::Login`] itself.
    fn on_rejected(&mut self, rejection: Rejection) -> Vec<Action>;
    /// True once the client leg is encrypted.
    fn is_tls(&self) -> bool;
    fn is_closed(&self) -> bool;
    /// The state's name, for logs.
    fn state_name(&self) -> &'static str;
    /// The client's `EHLO` name (submission), for the backend's EHLO and XCLIENT.
    fn helo(&self) -> Option<&str> {
        None
    }
}

/// Who the client is, for client-identity forwarding (reference §4.3).
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The client's address (from the inbound PROXY header when there was one).
    pub client: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// This connection's number in the worker; sent as `P<hex>`.
    pub session: u64,
    /// The client leg is TLS (implicit, or after STARTTLS).
    pub client_tls: bool,
    /// `server.proxy_ttl`; `proxy_ttl - 1` is sent.
    pub proxy_ttl: u32,
    /// The client's `EHLO` name, when the dialogue has one.
    pub helo: Option<String>,
    /// `server.hostname`: postern's own name toward backends (the submission EHLO
    /// when the client's name is unusable).
    pub hostname: Option<String>,
}

impl ClientIdentity {
    /// `P<hex>`, the session id sent to backends.
    pub fn session_id(&self) -> String {
        format!("P{:x}", self.session)
    }

    /// The TTL sent to backends: always `proxy_ttl - 1` (reference §4.7).
    pub fn ttl(&self) -> u32 {
        self.proxy_ttl.saturating_sub(1)
    }
}

/// How a replay ended.
pub enum Replay {
    /// The backend accepted: `reply` (its non-final lines and final reply, verbatim)
    /// goes to the client, then `rest` (backend bytes read past the reply), then the
    /// relay starts on `stream`.
    Accepted {
        reply: Vec<u8>,
        stream: BackendStream,
        rest: Vec<u8>,
    },
    /// The backend refused: `reply` is what it said, non-final lines included.
    Rejected { reply: Vec<u8> },
}

/// A protocol's backend side.
pub trait Backend: Sized + Send {
    /// The destination leg this backend speaks.
    const PROTOCOL: Protocol;

    /// Establishment on a fresh connection, inside the dial attempt
    /// ([`crate::upstream::Upstreams::dial_with`]).
    fn establish(
        connected: Connected,
        identity: &ClientIdentity,
    ) -> impl Future<Output = Result<Self, DialError>> + Send;

    /// True when the leg is encrypted (credentials may be sent).
    fn is_tls(&self) -> bool;

    /// Replays the login, adapted to what the backend advertised; an I/O error means the
    /// backend failed mid-replay.
    fn replay(
        self,
        request: &LoginRequest,
        credentials: &SaslCredentials,
    ) -> impl Future<Output = io::Result<Replay>> + Send;
}

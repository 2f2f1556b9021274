//! IMAP front door up to authentication (reference §5 "IMAP", §8; DESIGN.md decisions).
//!
//! postern answers the not-authenticated state itself: greeting, CAPABILITY, NOOP, ID,
//! LOGOUT, STARTTLS, LOGIN and AUTHENTICATE (PLAIN, OAUTHBEARER, XOAUTH2, and LOGIN when
//! listed in `sasl`), then routes the login, replays it on the account's backend and
//! relays. The parts:
//!
//! - [`command`] (grammar), [`reply`] (every wire string) and the sans-IO
//!   [`state::Machine`]: no I/O, no clocks, no SASL decoding (identifiers and tokens are
//!   `sasl`'s). The machine hands out the client's credentials as an `Action::Login`.
//! - [`backend`]: the backend's side, establishment (greeting, STARTTLS, capabilities,
//!   ID) and the replay adapted to what the backend advertises.
//!
//! [`crate::proto::session`] drives both: sockets, `preauth_timeout`, the STARTTLS
//! upgrade, routing, and the hand-off to the relay.
//!
//! None of them logs a credential.
//!
//! ```text
//!   greeting ──▶ NotAuthenticated ◀────────────────────────────────────┐
//!                 │  │  │  CAPABILITY, NOOP, ID, refusals (BAD/NO) ⟲   │
//!     STARTTLS    │  │  │                                              │ failure (counted),
//!   ┌─────────────┘  │  └─ AUTHENTICATE without IR, SASL LOGIN         │ unavailable,
//!   ▼                │          │ "+ " / prompt                        │ cancel "*"
//! AwaitingTls        │          ▼                                      │
//!   │ on_tls_        │    ExpectSaslResponse ──"*", bad base64────────▶┤
//!   │ established    │          │ base64 line                          │
//!   └──▶ NotAuth.    │ LOGIN,   ▼                                      │
//!                    └─ AUTH+IR ─▶ AwaitingOutcome ──Failure/Rejected──┘
//!                                   │ (Action::Login)
//!                                   │ Success
//!                                   ▼
//!                             Authenticated (Action::Splice: the caller relays)
//!
//!   LOGOUT, max_auth_attempts reached (* BYE), data after STARTTLS,
//!   unsafe identifier ───────────────────────────────────────────▶ Closed
//! ```
//!
//! RFCs: RFC 9051 (IMAP4rev2) §2.2 (tags, continuations), §4.3 (strings and literals),
//! §6.1 (any state), §6.2 (STARTTLS, AUTHENTICATE, LOGIN), §7.1 (response codes
//! PRIVACYREQUIRED, UNAVAILABLE, AUTHENTICATIONFAILED, TOOBIG); RFC 3501 §6.2 for
//! IMAP4rev1 clients; RFC 4959 (SASL-IR); RFC 7888 (LITERAL+ `{n+}`); RFC 2971 (ID).

pub mod backend;
pub mod command;
pub mod reply;
pub mod state;
#[cfg(test)]
mod tests;

pub use backend::ImapBackend;
pub use command::{Command, Mechanism, Redacted, Tag};
pub use state::{Machine, Settings};

//! Submission front door up to authentication (reference §5 "Submission", §8;
//! DESIGN.md decisions).
//!
//! postern answers the pre-authentication SMTP dialogue itself: greeting, EHLO/LHLO,
//! HELO, NOOP, RSET, QUIT, STARTTLS and AUTH (PLAIN, OAUTHBEARER, XOAUTH2, and LOGIN
//! when listed in `sasl`), then routes the login, replays it on the account's backend
//! and relays: MAIL, RCPT and DATA flow straight between client and backend. The parts:
//!
//! - [`command`] (framing and grammar), [`reply`] (every wire string) and the sans-IO
//!   [`state::Machine`]: no I/O, no clocks, no SASL decoding (identifiers and tokens
//!   are `sasl`'s). The machine hands out the client's credentials as an
//!   `Action::Login`, and its EHLO name (when safe) through `Dialogue::helo`.
//! - [`backend`]: the backend's side, establishment (greeting, EHLO, STARTTLS, XCLIENT)
//!   and the `AUTH <MECH> <b64>` replay.
//!
//! [`crate::proto::session`] drives both: sockets, `preauth_timeout`, the STARTTLS
//! upgrade, routing, and the hand-off to the relay. None of them logs a credential.
//!
//! ```text
//!   220 greeting ──▶ Ready ◀──────────────────────────────────────────────┐
//!                     │  │  │  EHLO/LHLO, HELO, NOOP, RSET, refusals (5xx) ⟲  │
//!       STARTTLS      │  │  │                                              │ backend 5xx
//!   ┌─────────────────┘  │  └─ AUTH without initial response, AUTH LOGIN   │ (counted),
//!   ▼                    │          │ 334 <challenge>                      │ "*" (501)
//! AwaitingTls            │          ▼                                      │
//!   │ on_tls_            │    ExpectSaslResponse ──"*", bad base64─────────▶┤
//!   │ established        │          │ base64 line                          │
//!   └─▶ Ready (EHLO      │          ▼                                      │
//!       name forgotten)  └─ AUTH + IR ─▶ AwaitingOutcome ──Failure/Malformed┘
//!                                          │ (Action::Login)
//!                                          │ Success
//!                                          ▼
//!                                    Authenticated (Action::Splice: the caller relays)
//!
//!   QUIT (221), backend unavailable / unsafe identifier (421 4.3.0),
//!   max_auth_attempts reached (421 4.7.0), data after STARTTLS ─────────▶ Closed
//! ```
//!
//! RFCs: RFC 6409 (message submission), RFC 5321 §3.1 (greeting), §4.1.1 (EHLO, HELO,
//! RSET, NOOP, QUIT), §4.1.3 (address literals), §4.2 (replies, multi-line), §3.8 (421
//! closes); RFC 4954 (AUTH: initial response, `334`, `*`, 235/535/538/504/501); RFC 3207
//! (STARTTLS, discarding state after the upgrade); RFC 2920 (PIPELINING); RFC 3463
//! (enhanced status codes); XCLIENT as Postfix documents it (`IPV6:` addresses).

pub mod backend;
pub mod command;
pub mod reply;
pub mod state;
#[cfg(test)]
mod tests;

pub use backend::SubmissionBackend;
pub use command::Command;
pub use state::{Machine, Settings};

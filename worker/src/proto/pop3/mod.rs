//! POP3 front door up to authentication (reference §5 "POP3", §8; DESIGN.md decisions).
//!
//! postern answers the AUTHORIZATION state itself: greeting, CAPA, NOOP, UTF8, QUIT,
//! STLS, USER/PASS and AUTH (PLAIN, OAUTHBEARER, XOAUTH2, and LOGIN when listed in
//! `sasl`; APOP is refused), then routes the login, replays it on the account's backend
//! and relays. The parts:
//!
//! - [`command`] (line framing and parsing), [`reply`] (every wire string) and the
//!   sans-IO [`state::Machine`]: no I/O, no clocks, no SASL decoding (identifiers and
//!   tokens are `sasl`'s). The machine hands out the client's credentials as an
//!   `Action::Login`; `USER`/`PASS` goes out as a password login, replayed as PLAIN.
//! - [`backend`]: the backend's side, establishment (greeting, STLS, XCLIENT) and the
//!   replay as `AUTH <MECH> <base64>`.
//!
//! [`crate::proto::session`] drives both: sockets, `preauth_timeout`, the STLS upgrade,
//! routing, and the hand-off to the relay.
//!
//! None of them logs a credential.
//!
//! ```text
//!   greeting ──▶ Authorization ◀───────────────────────────────────────┐
//!                 │  │  │  CAPA, NOOP, UTF8, USER, AUTH (list),        │
//!       STLS      │  │  │  refusals (-ERR) ⟲                           │ failure (counted),
//!   ┌─────────────┘  │  └─ AUTH without initial response,              │ unavailable,
//!   ▼                │     SASL LOGIN                                  │ cancel "*"
//! AwaitingTls        │          │ "+ " / "+ <prompt>"                  │
//!   │ on_tls_        │          ▼                                      │
//!   │ established    │    ExpectSaslResponse ──"*", bad base64────────▶┤
//!   └──▶ Author.     │          │ base64 line                          │
//!   (USER forgotten) │ PASS,    ▼                                      │
//!                    └─ AUTH+IR ─▶ AwaitingOutcome ──Failure/Rejected──┘
//!                                   │ (Action::Login)
//!                                   │ Success
//!                                   ▼
//!                             Authenticated (Action::Splice: the caller relays)
//!
//!   QUIT, max_auth_attempts reached, data after STLS,
//!   unsafe identifier ───────────────────────────────────────────▶ Closed
//! ```
//!
//! RFCs: RFC 1939 (POP3) §3 (commands, multi-line answers), §4 (AUTHORIZATION state),
//! §7 (USER, PASS, APOP); RFC 2449 (CAPA, RESP-CODES, PIPELINING, 255-octet command
//! lines); RFC 2595 §4 (STLS); RFC 5034 (SASL AUTH, `+ ` challenges, `*` cancel, `=`);
//! RFC 6856 (UTF8).

pub mod backend;
pub mod command;
pub mod reply;
pub mod state;
#[cfg(test)]
mod tests;

pub use backend::Pop3Backend;
pub use command::{Command, Mechanism, Redacted};
pub use state::{Machine, Settings};

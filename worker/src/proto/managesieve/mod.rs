//! ManageSieve front door up to authentication (reference §5 "ManageSieve", §8;
//! DESIGN.md decisions).
//!
//! postern answers the not-authenticated state itself: the capability response (as the
//! greeting, for CAPABILITY and again after STARTTLS), NOOP (tagged too), LOGOUT,
//! STARTTLS and AUTHENTICATE (PLAIN, OAUTHBEARER, XOAUTH2, and LOGIN when listed in
//! `sasl`), then routes the login, replays it on the account's backend and relays. The
//! parts:
//!
//! - [`command`] (grammar), [`reply`] (every wire string) and the sans-IO
//!   [`state::Machine`]: no I/O, no clocks, no SASL decoding (identifiers and tokens are
//!   `sasl`'s). The machine hands out the client's credentials as an `Action::Login`.
//! - [`backend`]: the backend's side, establishment (capability response, STARTTLS,
//!   XCLIENT) and the replay as `AUTHENTICATE "<MECH>" "<b64>"`.
//!
//! [`crate::proto::session`] drives both: sockets, `preauth_timeout`, the STARTTLS
//! upgrade, routing, and the hand-off to the relay.
//!
//! None of them logs a credential.
//!
//! ```text
//!   capabilities ──▶ NotAuthenticated ◀─────────────────────────────────┐
//!                     │  │  │  CAPABILITY, NOOP, refusals (NO) ⟲        │
//!     STARTTLS        │  │  │                                           │ failure (counted),
//!   ┌─────────────────┘  │  └─ AUTHENTICATE without IR, SASL LOGIN      │ unavailable,
//!   ▼                    │          │ {0} / "<prompt>"                  │ cancel "*"
//! AwaitingTls            │          ▼                                   │
//!   │ on_tls_            │    ExpectSaslResponse ──"*", bad base64─────▶┤
//!   │ established:       │          │ string                            │
//!   │ capabilities again │          ▼                                   │
//!   └──▶ NotAuth.        └─ AUTHENTICATE+IR ─▶ AwaitingOutcome ─Failure─┘
//!                                               │ (Action::Login)
//!                                               │ Success
//!                                               ▼
//!                                         Authenticated (Action::Splice: the caller relays)
//!
//!   LOGOUT, max_auth_attempts reached (BYE), data after STARTTLS,
//!   unsafe identifier ──────────────────────────────────────────▶ Closed
//! ```
//!
//! RFC 5804: §1.3 (response codes ENCRYPT-NEEDED, TAG), §1.7 (capabilities), §2.1
//! (AUTHENTICATE: strings, challenges, `"*"`), §2.2 (STARTTLS, capabilities after the
//! handshake), §2.3 (LOGOUT), §2.13 (NOOP), §4 (formal syntax: client literals are
//! `{n+}`).

pub mod backend;
pub mod command;
pub mod reply;
pub mod state;
#[cfg(test)]
mod tests;

pub use backend::ManageSieveBackend;
pub use command::{Command, Mechanism, Redacted};
pub use state::{Machine, Settings};

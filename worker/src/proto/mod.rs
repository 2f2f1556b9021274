//! Per-protocol connection handling. Each protocol owns what happens between accept and
//! the hand-off to [`crate::pipe`].

pub mod auth;
pub mod dialogue;
pub mod grammar;
pub mod imap;
pub mod lines;
pub mod managesieve;
pub mod passthrough;
pub mod pop3;
pub mod sasl_exchange;
pub mod session;
pub mod submission;
#[cfg(test)]
mod testkit;
pub mod xclient;

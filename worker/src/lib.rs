//! postern's worker: a process exec'd by the supervisor that serves one listener.
//! It was never privileged, is not dumpable, and runs its sessions under seccomp; it
//! opens no file and resolves no name: everything arrives in its `Hello`.
#![deny(unsafe_code)]

pub mod handshake;
pub mod health;
pub mod identity;
pub mod listener;
pub mod main_loop;
pub mod pipe;
pub mod proto;
pub mod proxy_in;
pub mod route;
pub mod sandbox;
pub mod sasl;
pub mod services;
pub mod side;
pub mod splice;
pub mod stream;
#[allow(unsafe_code)]
mod sys;
#[cfg(test)]
mod testutil;
pub mod tls;
pub mod upstream;

pub use main_loop::run;

//! postern's contract crate: everything the supervisor, the workers and the CLI must
//! agree on, and nothing that acts on the network.
//!
//! - [`model`]: the validated configuration;
//! - [`load`] and [`validate`]: TOML text to [`model::Config`], every problem reported;
//! - [`material`]: certificates, keys and the mapping file, read into memory by the
//!   supervisor before it drops privileges;
//! - [`ipc`] and [`control`]: the supervisor <-> worker and CLI <-> supervisor messages,
//!   encoded by [`codec`];
//! - [`fdpass`]: SCM_RIGHTS over `SOCK_SEQPACKET`, on top of the small unsafe `sys`.
//!
//! It depends on no crate of ours.
#![deny(unsafe_code)]

pub mod codec;
pub mod control;
pub mod counter;
pub mod duration;
pub mod fdpass;
pub mod ipc;
pub mod issue;
pub mod load;
pub mod material;
pub mod model;
mod schema;
pub mod size;
#[allow(unsafe_code)]
mod sys;
pub mod validate;

pub use issue::Issue;
pub use load::{load_file, parse};
pub use model::Config;
pub use sys::adopt_inherited;

/// Exit code for an invalid configuration (`EX_CONFIG` from sysexits.h).
pub const EX_CONFIG: i32 = 78;
/// Exit code for bind or privilege failures (`EX_OSERR`).
pub const EX_OSERR: i32 = 71;

/// Identifies the build, so a worker exec'd from another binary is caught at handshake.
pub const BUILD_ID: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("POSTERN_BUILD_ID"));

/// Displays an error and its sources on one line, `outer: inner: root`, for logs and
/// replies, without allocating.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

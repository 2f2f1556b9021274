//! Who failed: the client, the upstream (backend), or postern itself.
//!
//! Every proxy error carries a [`Side`] (STYLE §5). The side decides the log level:
//! a client mistake is routine (debug), an upstream fault is something an operator may
//! want to see (warn), and a local failure is a bug or a configuration an operator must
//! fix (error).

use std::fmt;

/// The party responsible for a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The connecting client (or the load balancer in front of it).
    Client,
    /// The backend destination.
    Upstream,
    /// postern itself: a configuration it cannot act on, or a bug.
    Local,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
            Side::Local => "local",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

//! What every connection of a worker shares, built once from the `Hello`, and the
//! per-connection entry point [`serve`].
//!
//! [`Services::new`] runs before the seccomp filter and before the tokio runtime exists:
//! it parses the TLS material, builds the inbound acceptor and the backend client
//! configurations, and sets up the breaker table. It does no I/O and nothing async.
//! After it, [`Services`] is immutable (the breaker table and counters have their own
//! interior synchronisation) and shared by all connections through an `Arc`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use postern_config::ipc::Hello;
use postern_config::model::{Config, Listener, Protocol, TlsMode};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::proto::{imap, passthrough, session};
use crate::route::{RouteError, Router};
use crate::tls::{self, TlsSetupError};
use crate::upstream::Upstreams;

/// A configuration-level failure: the worker cannot serve with this config and
/// material, and restarting it will not help until reload.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `Hello::listener` names no listener of the config.
    #[error("listener {listener} is not in the configuration")]
    UnknownListener { listener: String },
    /// A TLS listener with no `[tls.certificate.*]` to serve.
    #[error("listener.{listener}: tls is {mode} but no [tls.certificate.*] is configured")]
    NoCertificate {
        listener: String,
        mode: &'static str,
    },
    /// Inbound or backend TLS cannot be set up.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The mapping store of an interactive listener cannot be set up.
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// Shared, immutable state of one worker process.
pub struct Services {
    config: Config,
    listener: Listener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    upstreams: Upstreams,
    /// Routes logins; interactive listeners (IMAP, POP3, ManageSieve, submission) only.
    router: Option<Router>,
    /// The IMAP dialogue's settings, on IMAP listeners.
    imap: Option<Arc<imap::Settings>>,
    next_conn: AtomicU64,
}

impl Services {
    /// Builds TLS acceptor, backend TLS client configs, the circuit-breaker table, etc.
    /// Runs before the seccomp filter and before the tokio runtime exists: no async here.
    pub fn new(hello: &Hello) -> Result<Services, SetupError> {
        let config = hello.config.clone();
        let listener = config.listener(&hello.listener).cloned().ok_or_else(|| {
            SetupError::UnknownListener {
                listener: hello.listener.clone(),
            }
        })?;
        let acceptor = match listener.tls {
            TlsMode::Plain => None,
            mode => {
                if hello.material.certificates.is_empty() {
                    return Err(SetupError::NoCertificate {
                        listener: listener.name.clone(),
                        mode: mode.as_str(),
                    });
                }
                let server =
                    tls::server_config(&config.tls.protocols, &hello.material.certificates)?;
                Some(tokio_rustls::TlsAcceptor::from(server))
            }
        };
        let upstreams = Upstreams::new(
            &config,
            &hello.material,
            listener.protocol,
            &hello.resolved,
            &hello.own_addrs,
        )?;
        let router = match listener.protocol {
            Protocol::Imap | Protocol::Pop3 | Protocol::ManageSieve | Protocol::Submission => {
                Some(Router::from_hello(hello)?)
            }
            Protocol::Smtp | Protocol::Lmtp | Protocol::Http => None,
        };
        let imap = (listener.protocol == Protocol::Imap)
            .then(|| Arc::new(imap::Settings::new(&config.capabilities.imap, &listener)));
        Ok(Services {
            config,
            listener,
            acceptor,
            upstreams,
            router,
            imap,
            next_conn: AtomicU64::new(1),
        })
    }

    /// The listener this worker serves.
    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The inbound TLS acceptor; `None` on a plain listener.
    pub fn acceptor(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.acceptor.as_ref()
    }

    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// The login router; `None` on pass-through listeners.
    pub fn router(&self) -> Option<&Router> {
        self.router.as_ref()
    }
}

/// Serves one accepted connection for its whole life; never panics on peer input; logs
/// its own lines (one `session closed` info line per relayed session).
pub async fn serve(svc: Arc<Services>, stream: TcpStream, peer: SocketAddr, local: SocketAddr) {
    let id = svc.next_conn.fetch_add(1, Ordering::Relaxed);
    let protocol = svc.listener.protocol;
    let span = tracing::info_span!(
        "conn",
        id,
        proto = %protocol,
        listener = %svc.listener.name,
        peer = %peer,
        client = tracing::field::Empty,
    );
    async move {
        // Small writes (SMTP commands) must not wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        match protocol {
            Protocol::Smtp | Protocol::Lmtp => passthrough::serve(&svc, stream, peer, local).await,
            Protocol::Imap => match &svc.imap {
                Some(settings) => {
                    let dialogue = imap::Machine::new(Arc::clone(settings));
                    session::serve::<_, imap::ImapBackend>(&svc, dialogue, stream, peer, local, id)
                        .await
                }
                None => tracing::error!("imap listener without imap settings"),
            },
            Protocol::Pop3 | Protocol::ManageSieve | Protocol::Submission | Protocol::Http => {
                tracing::error!(protocol = %protocol, "protocol not implemented");
            }
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
#[path = "services_tests.rs"]
mod tests;

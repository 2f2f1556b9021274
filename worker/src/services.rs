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

use crate::proto::{imap, managesieve, passthrough, pop3, session, submission};
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

/// Per-listener settings of an interactive protocol's dialogue.
enum DialogueSettings {
    Imap(Arc<imap::Settings>),
    Pop3(Arc<pop3::Settings>),
    ManageSieve(Arc<managesieve::Settings>),
    Submission(Arc<submission::Settings>),
}

/// Shared, immutable state of one worker process.
pub struct Services {
    config: Config,
    listener: Listener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    upstreams: Upstreams,
    /// Routes logins; interactive listeners (IMAP, POP3, ManageSieve, submission) only.
    router: Option<Router>,
    /// The dialogue's settings, on interactive listeners.
    dialogue: Option<DialogueSettings>,
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
        let dialogue = match listener.protocol {
            Protocol::Imap => Some(DialogueSettings::Imap(Arc::new(imap::Settings::new(
                &config.capabilities.imap,
                &listener,
            )))),
            Protocol::Pop3 => Some(DialogueSettings::Pop3(Arc::new(pop3::Settings::new(
                &config, &listener,
            )))),
            Protocol::ManageSieve => Some(DialogueSettings::ManageSieve(Arc::new(
                managesieve::Settings::new(&config, &listener),
            ))),
            Protocol::Submission => Some(DialogueSettings::Submission(Arc::new(
                submission::Settings::new(&config, &listener),
            ))),
            Protocol::Smtp | Protocol::Lmtp | Protocol::Http => None,
        };
        Ok(Services {
            config,
            listener,
            acceptor,
            upstreams,
            router,
            dialogue,
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
        match (&svc.dialogue, protocol) {
            (_, Protocol::Smtp | Protocol::Lmtp) => {
                passthrough::serve(&svc, stream, peer, local).await
            }
            (Some(DialogueSettings::Imap(s)), _) => {
                let dialogue = imap::Machine::new(Arc::clone(s));
                session::serve::<_, imap::ImapBackend>(&svc, dialogue, stream, peer, local, id)
                    .await
            }
            (Some(DialogueSettings::Pop3(s)), _) => {
                let dialogue = pop3::Machine::new(Arc::clone(s));
                session::serve::<_, pop3::Pop3Backend>(&svc, dialogue, stream, peer, local, id)
                    .await
            }
            (Some(DialogueSettings::ManageSieve(s)), _) => {
                let dialogue = managesieve::Machine::new(Arc::clone(s));
                session::serve::<_, managesieve::ManageSieveBackend>(
                    &svc, dialogue, stream, peer, local, id,
                )
                .await
            }
            (Some(DialogueSettings::Submission(s)), _) => {
                let dialogue = submission::Machine::new(Arc::clone(s));
                session::serve::<_, submission::SubmissionBackend>(
                    &svc, dialogue, stream, peer, local, id,
                )
                .await
            }
            (None, _) => {
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

//! SMTP and LMTP pass-through (reference §6): postern speaks no protocol here.
//!
//! ```text
//!   accepted ──PROXY in──▶ addressed ──TLS (implicit only)──▶ secured ──dial──▶ relaying ──▶ closed
//!       │ refused              │ timeout / handshake error          │ dial failed
//!       └──────────────────────┴────────────────────────────────────┴──▶ closed, no reply
//! ```
//!
//! Every connection goes to `routing.smtp_passthrough_destination`, its `smtp` leg (or
//! `lmtp` for LMTP listeners). The PROXY header read and the implicit-TLS handshake are
//! each bounded by `preauth_timeout`; the relay by `bridge_idle`. A failed dial closes
//! the connection without a reply (no `421`). A backend leg with `tls = starttls` is
//! dialed plain and not upgraded, so a client's STARTTLS reaches the backend as is.
//! XCLIENT cannot be injected into a raw relay; with `forwarding = xclient` only the TTL
//! guard applies.

use std::net::SocketAddr;

use postern_config::model::{Protocol, TlsMode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::pipe;
use crate::proxy_in::{self, Rewound};
use crate::services::Services;
use crate::side::Side;
use postern_config::ErrorChain;

/// Serves one pass-through connection (`smtp` or `lmtp` listener).
pub async fn serve(svc: &Services, mut stream: TcpStream, peer: SocketAddr, local: SocketAddr) {
    let started = Instant::now();
    let listener = svc.listener();
    let inbound = match proxy_in::accept(&mut stream, listener, peer, local).await {
        Ok(inbound) => inbound,
        Err(e) => {
            tracing::debug!(side = %Side::Client, error = %ErrorChain(&e), "connection refused");
            return;
        }
    };
    if inbound.from_header {
        tracing::Span::current().record("client", tracing::field::display(inbound.client));
    }
    let Some(destination) = svc.config().routing.smtp_passthrough_destination.as_deref() else {
        tracing::error!("routing.smtp_passthrough_destination is not set; closing");
        return;
    };
    let leg = if listener.protocol == Protocol::Lmtp {
        Protocol::Lmtp
    } else {
        Protocol::Smtp
    };
    let session = Session {
        svc,
        destination,
        leg,
        client: inbound.client,
        local: inbound.local,
        started,
    };
    match listener.tls {
        TlsMode::Plain => session.bridge(stream, inbound.leftover).await,
        TlsMode::Implicit => {
            let Some(acceptor) = svc.acceptor() else {
                tracing::error!("implicit tls listener without an acceptor; closing");
                return;
            };
            let handshake = acceptor.accept(Rewound::new(inbound.leftover, stream));
            let tls = match tokio::time::timeout(listener.preauth_timeout, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(side = %Side::Client, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(side = %Side::Client, "tls handshake timed out");
                    return;
                }
            };
            let (_, conn) = tls.get_ref();
            tracing::debug!(
                version = ?conn.protocol_version(),
                cipher = ?conn.negotiated_cipher_suite().map(|s| s.suite()),
                sni = conn.server_name().unwrap_or(""),
                "tls established"
            );
            session.bridge(tls, Vec::new()).await
        }
        TlsMode::Starttls => {
            // Config validation rejects this; a pass-through cannot see STARTTLS.
            tracing::error!("starttls is not possible on a pass-through listener; closing");
        }
    }
}

struct Session<'a> {
    svc: &'a Services,
    destination: &'a str,
    leg: Protocol,
    client: SocketAddr,
    local: SocketAddr,
    started: Instant,
}

impl Session<'_> {
    async fn bridge<C>(self, client: C, leftover: Vec<u8>)
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let upstreams = self.svc.upstreams();
        let dialed = match upstreams
            .dial(self.destination, self.leg, self.client, self.local)
            .await
        {
            Ok(dialed) => dialed,
            Err(e) => {
                let error = ErrorChain(&e);
                match e.side() {
                    Side::Upstream => {
                        tracing::warn!(destination = self.destination, %error, "backend unavailable")
                    }
                    Side::Local => {
                        tracing::error!(destination = self.destination, %error, "cannot dial backend")
                    }
                    Side::Client => {
                        tracing::debug!(destination = self.destination, %error, "dial abandoned")
                    }
                }
                return;
            }
        };
        let starttls_leg = self
            .svc
            .config()
            .destinations
            .get(self.destination)
            .and_then(|d| d.leg(self.leg))
            .is_some_and(|leg| leg.tls == TlsMode::Starttls);
        if starttls_leg {
            tracing::debug!(
                "backend leg is starttls: relayed without upgrade, STARTTLS passes end to end"
            );
        }
        let idle = self.svc.config().server.bridge_idle;
        let relayed = pipe::relay(client, dialed.stream, leftover, idle).await;
        relayed.log_closed(self.destination, None, self.started, idle);
    }
}

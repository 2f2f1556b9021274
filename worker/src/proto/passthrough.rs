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
//! each bounded by `preauth_timeout`; the relay by `bridge_idle`, with `splice(2)` when
//! both legs are plain TCP. A failed dial closes
//! the connection without a reply (no `421`). A backend leg with `tls = starttls` is
//! dialed plain and not upgraded, so a client's STARTTLS reaches the backend as is.
//! XCLIENT cannot be injected into a raw relay; with `forwarding = xclient` only the TTL
//! guard applies.

use std::net::SocketAddr;

use postern_config::model::{Protocol, TlsMode};
use tokio::net::TcpStream;
use tokio::time::Instant;

use postern_config::ErrorChain;

use super::session::{self, accept_tls, ClientStream};
use crate::pipe::MAX_TIMER;
use crate::proxy_in::{self, Rewound};
use crate::services::Services;
use crate::side::Side;
use crate::stream::MaybeTls;

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
    let (client, leftover) = match listener.tls {
        TlsMode::Plain => (MaybeTls::Plain(stream), inbound.leftover),
        TlsMode::Implicit => {
            let deadline = Instant::now() + listener.preauth_timeout.min(MAX_TIMER);
            let stream = Rewound::new(inbound.leftover, stream);
            // Boxed, and the TLS stream boxed before the relay's await: neither the
            // handshake nor an unboxed stream sizes the session's task.
            let Some(tls) = Box::pin(accept_tls(svc, stream, deadline)).await else {
                return;
            };
            (MaybeTls::Tls(Box::new(tls)), Vec::new())
        }
        TlsMode::Starttls => {
            // Config validation rejects this; a pass-through cannot see STARTTLS.
            tracing::error!("starttls is not possible on a pass-through listener; closing");
            return;
        }
    };
    session.bridge(client, leftover).await
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
    async fn bridge(self, client: ClientStream, leftover: Vec<u8>) {
        let upstreams = self.svc.upstreams();
        // Boxed: the dial's future is freed before the relay, not kept in the session's
        // task (see `session::serve`).
        let connected = Box::pin(upstreams.dial_with(
            self.destination,
            self.leg,
            self.client,
            self.local,
            |c| async { Ok(c) },
        ))
        .await;
        let backend = match connected {
            Ok(connected) => connected.stream,
            Err(e) => {
                e.log(self.destination);
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
        let relayed = session::relay(client, backend, leftover, idle).await;
        relayed.log_closed(self.destination, None, self.started, idle);
    }
}

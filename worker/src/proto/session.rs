//! One client connection of an interactive protocol, from accept to close: the I/O
//! around the protocol's sans-IO [`Dialogue`], routing, its [`Backend`] and the relay.
//! Written once for IMAP, POP3, ManageSieve and submission (see [`super::dialogue`]).
//!
//! ```text
//!   accepted ─PROXY in─▶ (implicit TLS) ─▶ greeting ─▶ dialogue ⟲ (STARTTLS upgrade)
//!                                                       │ Action::Login
//!                              decode ─▶ route ─▶ dial + establish ─▶ replay
//!                                │ refused   │ unsafe    │ unavailable   │ rejected
//!                                └───────────┴───────────┴───────────────┴─▶ back to the dialogue
//!                                                                        │ accepted
//!                                                                        ▼
//!                                              relay (splice when both legs are plain TCP)
//! ```
//!
//! `preauth_timeout` bounds the PROXY header, the implicit-TLS handshake and the whole
//! dialogue up to the relay; on expiry the socket is closed without a reply (reference
//! §2.3). Relayed sessions log one `session closed` line. No credential is logged.

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_config::model::TlsMode;
use postern_config::ErrorChain;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::dialogue::{
    Action, Backend, ClientIdentity, Credentials as RawCredentials, Dialogue, LoginRequest,
    Outcome, Rejection, Replay,
};
use crate::pipe::{self, Relayed, MAX_TIMER};
use crate::proxy_in::{self, Rewound};
use crate::sasl::{self, Credentials};
use crate::services::Services;
use crate::side::Side;
use crate::splice;
use crate::stream::MaybeTls;
use crate::upstream::BackendStream;

/// The client leg: plain TCP, or TLS (implicit, or after STARTTLS).
pub(crate) type ClientStream = MaybeTls<tokio_rustls::server::TlsStream<Rewound<TcpStream>>>;

/// Bytes read from the client per read before authentication.
const READ_BYTES: usize = 4096;

/// Serves one connection: `dialogue` with the client, `B` toward the backend.
///
/// The task spawned per connection lives as long as the session. Everything before the
/// hand-off (PROXY header, TLS handshake, the dialogue with its machine, the dial and
/// the replay: a few KiB of future state) runs in its own allocation, freed when the
/// relay starts, so an idle relayed session's task holds only the relay. (A plain `fn`:
/// an `async fn` would keep its arguments, the machine among them, in that task.)
pub fn serve<'a, D: Dialogue + 'a, B: Backend + 'a>(
    svc: &'a Services,
    dialogue: D,
    tcp: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    session: u64,
) -> impl Future<Output = ()> + 'a {
    let started = Instant::now();
    let authenticated = Box::pin(authenticate::<D, B>(
        svc, dialogue, tcp, peer, local, session, started,
    ));
    async move {
        if let Some(handoff) = authenticated.await {
            handoff.relay(svc, started).await;
        }
    }
}

/// The connection up to the hand-off: the relay to start, or `None` when the session
/// ended before it (each ending already logged).
async fn authenticate<D: Dialogue, B: Backend>(
    svc: &Services,
    dialogue: D,
    mut tcp: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    session: u64,
    started: Instant,
) -> Option<Handoff> {
    let listener = svc.listener();
    let deadline = started + listener.preauth_timeout.min(MAX_TIMER);
    let inbound = match proxy_in::accept(&mut tcp, listener, peer, local).await {
        Ok(inbound) => inbound,
        Err(e) => {
            tracing::debug!(side = %Side::Client, error = %ErrorChain(&e), "connection refused");
            return None;
        }
    };
    if inbound.from_header {
        tracing::Span::current().record("client", tracing::field::display(inbound.client));
    }
    let (client, leftover) = match listener.tls {
        TlsMode::Plain | TlsMode::Starttls => (MaybeTls::Plain(tcp), inbound.leftover),
        TlsMode::Implicit => {
            let tls = accept_tls(svc, Rewound::new(inbound.leftover, tcp), deadline).await?;
            (MaybeTls::Tls(Box::new(tls)), Vec::new())
        }
    };
    let session = Session::<D, B> {
        svc,
        client,
        machine: dialogue,
        identity: ClientIdentity {
            client: inbound.client,
            local: inbound.local,
            session,
            client_tls: false,
            proxy_ttl: svc.config().server.proxy_ttl,
            helo: None,
            hostname: svc.config().server.hostname.clone(),
        },
        deadline,
        out: Vec::new(),
        logged_in: None,
        backend: PhantomData,
    };
    // The dialogue's state (parser, buffers) is gone before the relay starts: an idle
    // relayed session holds only its two sockets.
    session.run(leftover).await
}

/// The TLS handshake on the client leg, bounded by the pre-auth deadline (shared with
/// the pass-through's implicit TLS).
pub(crate) async fn accept_tls(
    svc: &Services,
    stream: Rewound<TcpStream>,
    deadline: Instant,
) -> Option<tokio_rustls::server::TlsStream<Rewound<TcpStream>>> {
    let Some(acceptor) = svc.acceptor() else {
        tracing::error!("tls listener without an acceptor; closing");
        return None;
    };
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let (_, conn) = tls.get_ref();
            tracing::debug!(
                version = ?conn.protocol_version(),
                cipher = ?conn.negotiated_cipher_suite().map(|s| s.suite()),
                sni = conn.server_name().unwrap_or(""),
                "tls established"
            );
            Some(tls)
        }
        Ok(Err(e)) => {
            tracing::debug!(side = %Side::Client, error = %e, "tls handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(side = %Side::Client, "tls handshake timed out");
            None
        }
    }
}

/// A backend that accepted the login, waiting for [`Action::Splice`].
struct LoggedIn {
    stream: BackendStream,
    destination: Arc<str>,
    user: Option<String>,
    /// Client bytes pipelined behind the auth command.
    pipelined: Vec<u8>,
}

struct Session<'a, D, B> {
    svc: &'a Services,
    client: ClientStream,
    machine: D,
    identity: ClientIdentity,
    deadline: Instant,
    /// Replies not yet written to the client.
    out: Vec<u8>,
    logged_in: Option<LoggedIn>,
    backend: PhantomData<fn() -> B>,
}

/// Why the dialogue stopped early: the connection is closed without more ado.
struct Stop;

/// A logged-in session, ready to relay.
struct Handoff {
    client: ClientStream,
    backend: LoggedIn,
    /// Client bytes already read that belong to the backend.
    to_backend: Vec<u8>,
}

impl<D: Dialogue, B: Backend> Session<'_, D, B> {
    /// The dialogue up to a successful login (`Some`) or the end of the connection.
    async fn run(mut self, leftover: Vec<u8>) -> Option<Handoff> {
        self.out = self.machine.greeting();
        let mut actions: VecDeque<Action> = self.machine.on_bytes(&leftover).into();
        // On the heap, so it does not size every session's task.
        let mut buf = vec![0u8; READ_BYTES];
        loop {
            while let Some(action) = actions.pop_front() {
                let next = match action {
                    Action::Reply(bytes) => {
                        self.out.extend_from_slice(&bytes);
                        continue;
                    }
                    Action::StartTls => match self.start_tls().await {
                        Ok((upgraded, more)) => {
                            self = upgraded;
                            Ok(more)
                        }
                        Err(Stop) => return None,
                    },
                    Action::Login(request) => self.login(request).await,
                    Action::Splice { leftovers } => {
                        self.flush().await.ok()?;
                        return self.handoff(leftovers.into_inner());
                    }
                    Action::Close => {
                        if self.flush().await.is_ok() {
                            let _ = self.client.shutdown().await;
                        }
                        return None;
                    }
                };
                match next {
                    Ok(more) => actions.extend(more),
                    Err(Stop) => return None,
                }
            }
            if self.flush().await.is_err() || self.machine.is_closed() {
                return None;
            }
            let n = match tokio::time::timeout_at(self.deadline, self.client.read(&mut buf)).await {
                Ok(Ok(0)) => {
                    tracing::debug!(
                        state = self.machine.state_name(),
                        "client closed before login"
                    );
                    return None;
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    tracing::debug!(side = %Side::Client, error = %e, "client read failed");
                    return None;
                }
                Err(_) => {
                    tracing::debug!(
                        state = self.machine.state_name(),
                        "preauth_timeout reached; closing"
                    );
                    return None;
                }
            };
            actions.extend(self.machine.on_bytes(&buf[..n]));
        }
    }

    /// Writes the pending replies, within the pre-auth deadline.
    async fn flush(&mut self) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let write = async {
            self.client.write_all(&out).await?;
            self.client.flush().await
        };
        match tokio::time::timeout_at(self.deadline, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(side = %Side::Client, error = %e, "client write failed");
                Err(Stop)
            }
            Err(_) => {
                tracing::debug!("preauth_timeout reached while writing; closing");
                Err(Stop)
            }
        }
    }

    /// STARTTLS: the `OK` is flushed, then the handshake on the same TCP stream.
    async fn start_tls(mut self) -> Result<(Self, Vec<Action>), Stop> {
        self.flush().await?;
        let Session { client, .. } = self;
        let tcp = match client {
            MaybeTls::Plain(tcp) => tcp,
            MaybeTls::Tls(_) => {
                tracing::error!("starttls on a connection that is already tls");
                return Err(Stop);
            }
        };
        let tls = accept_tls(self.svc, Rewound::new(Vec::new(), tcp), self.deadline)
            .await
            .ok_or(Stop)?;
        self.client = MaybeTls::Tls(Box::new(tls));
        self.identity.client_tls = true;
        let more = self.machine.on_tls_established();
        Ok((self, more))
    }

    /// Carries out one [`Action::Login`]: decode, route, dial, replay.
    async fn login(&mut self, request: LoginRequest) -> Result<Vec<Action>, Stop> {
        self.flush().await?;
        self.identity.client_tls = self.machine.is_tls();
        self.identity.helo = self.machine.helo().map(str::to_owned);
        let credentials = match decode(&request) {
            Ok(credentials) => credentials,
            Err(e) => {
                tracing::debug!(side = %Side::Client, error = %e, "credentials refused");
                return Ok(self.machine.on_rejected(Rejection::Malformed));
            }
        };
        let Some(router) = self.svc.router() else {
            tracing::error!("no router for an interactive listener");
            return Ok(self.machine.on_login_result(Outcome::Unavailable));
        };
        let (user, route) = match router.route(&credentials).await {
            Ok(routed) => routed,
            Err(e) => {
                tracing::info!(side = %Side::Client, error = %e, "identifier refused");
                return Ok(self.machine.on_rejected(Rejection::UnsafeIdentifier));
            }
        };
        let destination = route.destination;
        let upstreams = self.svc.upstreams();
        let identity = &self.identity;
        let dialed = upstreams
            .dial_with(
                &destination,
                B::PROTOCOL,
                identity.client,
                identity.local,
                |connected| B::establish(connected, identity),
            )
            .await;
        let backend = match dialed {
            Ok(backend) => backend,
            Err(e) => {
                e.log(&destination);
                return Ok(self.machine.on_login_result(Outcome::Unavailable));
            }
        };
        let Some(dest) = self.svc.config().destinations.get(&*destination) else {
            return Ok(self.machine.on_login_result(Outcome::Unavailable));
        };
        if !backend.is_tls() && !dest.allow_plaintext_auth {
            tracing::error!(
                destination = %destination,
                "refusing to send credentials over a plain backend leg \
                 (set destination.{destination}.allow_plaintext_auth = true or use tls)"
            );
            return Ok(self.machine.on_login_result(Outcome::Unavailable));
        }
        let timeout = self.svc.config().server.backend_timeout.min(MAX_TIMER);
        let replayed = tokio::time::timeout(timeout, backend.replay(&request, &credentials));
        match replayed.await {
            Ok(Ok(Replay::Accepted {
                reply,
                stream,
                rest,
            })) => {
                self.out.extend_from_slice(&reply);
                self.out.extend_from_slice(&rest);
                tracing::debug!(destination = %destination, user = user.as_deref(), "login accepted by backend");
                self.logged_in = Some(LoggedIn {
                    stream,
                    destination,
                    user,
                    pipelined: request.pipelined.into_inner(),
                });
                Ok(self.machine.on_login_result(Outcome::Success))
            }
            Ok(Ok(Replay::Rejected { reply })) => {
                tracing::info!(destination = %destination, user = user.as_deref(), "login rejected by backend");
                let reply = (!dest.hide_auth_errors).then_some(reply);
                Ok(self.machine.on_login_result(Outcome::Failure { reply }))
            }
            Ok(Err(e)) => {
                tracing::warn!(destination = %destination, side = %Side::Upstream, error = %e, "backend failed during login");
                Ok(self.machine.on_login_result(Outcome::Unavailable))
            }
            Err(_) => {
                tracing::warn!(destination = %destination, side = %Side::Upstream, ?timeout, "backend login timed out");
                Ok(self.machine.on_login_result(Outcome::Unavailable))
            }
        }
    }

    /// The login succeeded: what the relay needs, and nothing of the dialogue.
    fn handoff(self, leftovers: Vec<u8>) -> Option<Handoff> {
        let Some(mut backend) = self.logged_in else {
            tracing::error!("splice without a logged-in backend");
            return None;
        };
        let mut to_backend = std::mem::take(&mut backend.pipelined);
        to_backend.extend_from_slice(&leftovers);
        Some(Handoff {
            client: self.client,
            backend,
            to_backend,
        })
    }
}

impl Handoff {
    /// Pipelined bytes to the backend, then bytes both ways; `splice(2)` when both legs
    /// are plain TCP.
    async fn relay(self, svc: &Services, started: Instant) {
        let Handoff {
            client,
            backend,
            to_backend,
        } = self;
        let LoggedIn {
            stream,
            destination,
            user,
            ..
        } = backend;
        let idle = svc.config().server.bridge_idle;
        let relayed = relay(client, stream, to_backend, idle).await;
        relayed.log_closed(&destination, user.as_deref(), started, idle);
    }
}

/// `to_backend` to the backend, then bytes both ways until both ends close or `idle`
/// passes without traffic: `splice(2)` when both legs are plain TCP, the copy loop
/// otherwise (shared with the pass-through).
pub(crate) async fn relay(
    client: ClientStream,
    backend: BackendStream,
    to_backend: Vec<u8>,
    idle: Duration,
) -> Relayed {
    match (client, backend) {
        (MaybeTls::Plain(client), MaybeTls::Plain(backend)) => {
            splice::relay_tcp(client, backend, to_backend, idle).await
        }
        (client, backend) => pipe::relay(client, backend, to_backend, idle).await,
    }
}

/// The SASL decoder's view of the machine's credentials.
fn decode(request: &LoginRequest) -> Result<Credentials, sasl::SaslError> {
    match &request.credentials {
        RawCredentials::Response(payload) => sasl::decode(request.mechanism, payload.expose()),
        RawCredentials::UserPassword { user, password } => {
            sasl::decode_login(user.expose(), password.expose())
        }
    }
}

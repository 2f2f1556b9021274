//! The harness the machines' script-driven unit tests share: a script of [`Step`]s runs
//! twice, with each `Send` delivered whole and then one byte at a time, and both runs
//! must produce the same [`Transcript`].

use crate::proto::dialogue::{Action, Credentials, Dialogue, LoginRequest, Outcome, Rejection};

#[derive(Clone)]
pub enum Step {
    Send(Vec<u8>),
    Tls,
    Result(Outcome),
    Reject(Rejection),
}

pub fn send(bytes: impl AsRef<[u8]>) -> Step {
    Step::Send(bytes.as_ref().to_vec())
}

pub fn fail(reply: &str) -> Step {
    Step::Result(Outcome::Failure {
        reply: Some(reply.as_bytes().to_vec()),
    })
}

/// How a protocol's events read in a transcript.
pub trait Scripted: Dialogue {
    /// The event for [`Action::StartTls`].
    const STARTTLS: &'static str = "<starttls>";
    /// The event for [`Action::Login`]; `credentials` is the request's, shown; `self`
    /// is the machine after the step that produced it.
    fn login_event(&self, request: &LoginRequest, credentials: &str) -> String;
}

/// What a script produced: reply lines and events (`<...>`), in order, and the bytes
/// that reach the backend after a successful login.
#[derive(Debug, Default, PartialEq)]
pub struct Transcript {
    pub lines: Vec<String>,
    pub forwarded: Vec<u8>,
    /// `pipelined` of the last login, forwarded only if it succeeds.
    pending: Vec<u8>,
}

impl Transcript {
    fn record<M: Scripted>(&mut self, actions: Vec<Action>, machine: &M) {
        for action in actions {
            match action {
                Action::Reply(bytes) => {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    assert!(text.ends_with("\r\n"), "reply without CRLF: {text:?}");
                    self.lines
                        .extend(text.split_terminator("\r\n").map(String::from));
                }
                Action::StartTls => self.lines.push(M::STARTTLS.into()),
                Action::Login(req) => {
                    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    let credentials = match &req.credentials {
                        Credentials::Response(r) => show(r.expose()),
                        Credentials::UserPassword { user, password } => {
                            format!("{}:{}", show(user.expose()), show(password.expose()))
                        }
                    };
                    self.lines
                        .push(machine.login_event(&req, &format!("{credentials:?}")));
                    self.pending = req.pipelined.into_inner();
                }
                Action::Splice { leftovers } => {
                    self.lines.push("<splice>".into());
                    let mut pending = std::mem::take(&mut self.pending);
                    pending.extend(leftovers.expose());
                    self.forwarded.extend(pending);
                }
                Action::Close => self.lines.push("<close>".into()),
            }
        }
    }

    pub fn lines(&self) -> Vec<&str> {
        self.lines.iter().map(String::as_str).collect()
    }
}

/// Runs `steps` on `machine`, each `Send` whole or one byte at a time.
pub fn drive<M: Scripted>(mut machine: M, steps: &[Step], bytewise: bool) -> (Transcript, M) {
    let mut t = Transcript::default();
    for step in steps {
        let actions = match step {
            Step::Send(bytes) if bytewise => bytes
                .iter()
                .flat_map(|b| machine.on_bytes(std::slice::from_ref(b)))
                .collect(),
            Step::Send(bytes) => machine.on_bytes(bytes),
            Step::Tls => machine.on_tls_established(),
            Step::Result(outcome) => machine.on_login_result(outcome.clone()),
            Step::Reject(rejection) => machine.on_rejected(*rejection),
        };
        t.record(actions, &machine);
    }
    t.pending.clear();
    (t, machine)
}

/// Runs `steps` on two fresh machines, whole and byte by byte, asserts both agree,
/// returns the transcript.
pub fn run<M: Scripted>(new: impl Fn() -> M, steps: &[Step]) -> Transcript {
    let (whole, _) = drive(new(), steps, false);
    let (bytewise, _) = drive(new(), steps, true);
    assert_eq!(whole, bytewise, "whole and byte-by-byte runs differ");
    whole
}

/// The backend unit tests' scripted loopback server and the pieces of a replay they all
/// build the same way.
pub mod loopback {
    use std::net::SocketAddr;
    use std::time::Duration;

    use postern_config::model::{Forwarding, Leg, TlsMode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    use crate::proto::dialogue::{ClientIdentity, Credentials, LoginRequest};
    use crate::sasl::{self, Mechanism};
    use crate::stream::MaybeTls;
    use crate::upstream::{Connected, Upgrade};

    /// How long any one scripted exchange may take.
    pub const BOUND: Duration = Duration::from_secs(5);

    /// One step of a scripted backend.
    pub enum Step {
        Send(&'static [u8]),
        /// Sends bytes split into single-byte writes (a reply arriving piecemeal).
        Trickle(&'static [u8]),
        /// Reads one line.
        ReadLine,
    }

    /// A backend bound to `bind` running `script` on one connection; returns what it
    /// received. With `drain`, it then reads on until postern closes (within
    /// [`BOUND`]), so a QUIT after a refusal is seen too.
    pub async fn scripted(
        bind: &str,
        script: Vec<Step>,
        drain: bool,
    ) -> (SocketAddr, JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind(bind).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut received = Vec::new();
            for step in script {
                match step {
                    Step::Send(bytes) => s.write_all(bytes).await.expect("send"),
                    Step::Trickle(bytes) => {
                        for b in bytes {
                            s.write_all(std::slice::from_ref(b)).await.expect("send");
                            s.flush().await.expect("flush");
                        }
                    }
                    Step::ReadLine => loop {
                        let mut byte = [0u8; 1];
                        if s.read(&mut byte).await.expect("read") == 0 {
                            return received;
                        }
                        received.push(byte[0]);
                        if byte[0] == b'\n' {
                            break;
                        }
                    },
                }
            }
            if drain {
                let mut rest = Vec::new();
                let _ = tokio::time::timeout(BOUND, s.read_to_end(&mut rest)).await;
                received.extend(rest);
            }
            received
        });
        (addr, task)
    }

    /// A client identity with session `P2a` and TTL 7, no EHLO name, no hostname.
    pub fn identity(client: &str, local: &str, client_tls: bool) -> ClientIdentity {
        ClientIdentity {
            client: client.parse().expect("addr"),
            local: local.parse().expect("addr"),
            session: 0x2a,
            client_tls,
            proxy_ttl: 7,
            helo: None,
            hostname: None,
        }
    }

    /// A plaintext connection to `addr`, as the dialer hands it over.
    pub async fn connect(addr: SocketAddr, forwarding: Forwarding) -> Connected {
        Connected {
            stream: MaybeTls::Plain(TcpStream::connect(addr).await.expect("connect")),
            addr,
            leg: Leg {
                port: addr.port(),
                tls: TlsMode::Plain,
                forwarding,
            },
            upgrade: None,
        }
    }

    /// Makes `connected` a `starttls` leg, as the dialer hands one over: plain, with the
    /// [`Upgrade`] that would secure it (trusting no certificate: a handshake fails).
    pub fn starttls_leg(connected: &mut Connected) {
        connected.leg.tls = TlsMode::Starttls;
        connected.upgrade = Some(Upgrade::untrusted());
    }

    pub fn plain(user: &str, password: &str) -> sasl::Credentials {
        sasl::decode_plain(format!("\0{user}\0{password}").as_bytes()).expect("plain")
    }

    /// A SASL PLAIN login request with `tag`; the replay takes the decoded credentials
    /// separately.
    pub fn request(tag: &str) -> LoginRequest {
        LoginRequest {
            tag: tag.into(),
            mechanism: Mechanism::Plain,
            credentials: Credentials::Response(Default::default()),
            is_login_command: false,
            pipelined: Default::default(),
        }
    }
}

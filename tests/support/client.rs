//! Clients the tests drive postern with: a line client with per-read timeouts and typed
//! asserts, an IMAP client over plain TCP or TLS ([`ImapClient`]: tags, literals both
//! ways, STARTTLS upgrades), and wrappers around real client programs (Python's
//! `smtplib.LMTP`, `openssl s_client`).
//!
//! Every socket read here has a timeout, so no test can hang on a silent peer.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Read timeout on every client socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects with a deadline and sets read and write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// How a connection ended when the test expected it to end.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// Orderly close (read returned 0), after `bytes` bytes of data.
    Eof { bytes: Vec<u8> },
    /// Connection reset, after `bytes` bytes of data.
    Reset { bytes: Vec<u8> },
}

impl Ending {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Ending::Eof { bytes } | Ending::Reset { bytes } => bytes,
        }
    }
}

/// Reads until the peer closes (or resets), within `deadline`; panics on timeout.
pub fn read_until_closed(stream: &mut TcpStream, deadline: Duration) -> Ending {
    let end = Instant::now() + deadline;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!(
                "peer did not close within {deadline:?}; got {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut chunk) {
            Ok(0) => return Ending::Eof { bytes },
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ending::Reset { bytes },
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// A line-oriented protocol client (SMTP, LMTP, later IMAP/POP3).
pub struct LineClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl LineClient {
    pub fn connect(addr: SocketAddr) -> LineClient {
        LineClient {
            stream: connect(addr),
            buf: Vec::new(),
        }
    }

    pub fn from_stream(stream: TcpStream) -> LineClient {
        LineClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads one line, CRLF stripped. Panics on timeout or close.
    pub fn read_line(&mut self) -> String {
        match self.try_read_line() {
            Ok(Some(line)) => line,
            Ok(None) => panic!(
                "connection closed before a full line; partial {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => panic!("read line: {e}"),
        }
    }

    /// One line, `Ok(None)` at EOF.
    pub fn try_read_line(&mut self) -> std::io::Result<Option<String>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).take(pos).collect();
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads a line and asserts it starts with `prefix`; returns it.
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        let line = self.read_line();
        assert!(
            line.starts_with(prefix),
            "expected a line starting {prefix:?}, got {line:?}"
        );
        line
    }

    /// Reads an SMTP/LMTP multi-line reply (`250-...` lines then `250 ...`), asserting
    /// its code; returns every line.
    pub fn expect_reply(&mut self, code: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line();
            assert!(
                line.starts_with(code),
                "expected reply {code}, got {line:?}"
            );
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    /// Sends `line` followed by CRLF.
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
        self.stream.flush().expect("flush");
    }

    /// Asserts the peer closes without sending anything more, within `deadline`.
    pub fn expect_closed_silently(&mut self, deadline: Duration) {
        assert!(
            self.buf.is_empty(),
            "unexpected data {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let ending = read_until_closed(&mut self.stream, deadline);
        assert!(
            ending.bytes().is_empty(),
            "expected a close without reply, got {:?}",
            String::from_utf8_lossy(ending.bytes())
        );
    }

    pub fn shutdown_write(&self) {
        self.stream
            .shutdown(Shutdown::Write)
            .expect("shutdown write");
    }
}

/// Python `smtplib.LMTP` delivery: LHLO, MAIL FROM, RCPT TO each recipient, DATA with
/// `message` read from a file, QUIT. Exits non-zero with the server's answer when any
/// recipient is refused.
const PY_LMTP_SEND: &str = r#"
import smtplib, sys
host, port, sender, msg_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rcpts = sys.argv[5:]
with open(msg_path, "rb") as f:
    msg = f.read()
c = smtplib.LMTP(host, port, timeout=20)
try:
    code, _ = c.ehlo("client.test")  # LMTP sends LHLO here
    if code != 250:
        sys.exit("LHLO refused: %d" % code)
    refused = c.sendmail(sender, rcpts, msg)
    if refused:
        sys.exit("refused: %r" % (refused,))
finally:
    try:
        c.quit()
    except Exception:
        pass
print("delivered")
"#;

/// The Python interpreter the tests use.
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Delivers `message` (raw bytes, CRLF line ends) to `addr` over LMTP with Python's
/// `smtplib.LMTP`, a real client. `scratch` is a directory for the message file.
pub fn lmtp_deliver(
    addr: SocketAddr,
    from: &str,
    rcpts: &[&str],
    message: &[u8],
    scratch: &Path,
) -> Result<(), String> {
    let msg_path = scratch.join(format!("message-{}.eml", unique()));
    std::fs::write(&msg_path, message).expect("write message file");
    let mut cmd = Command::new(python());
    cmd.arg("-c")
        .arg(PY_LMTP_SEND)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(from)
        .arg(&msg_path)
        .args(rcpts)
        .stdin(Stdio::null());
    let out = run_with_deadline(cmd, Duration::from_secs(40));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "python smtplib.LMTP failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// What `openssl s_client` saw of a TLS server.
#[derive(Debug)]
pub struct TlsProbe {
    /// The handshake completed and the chain verified for the name asked.
    pub verified: bool,
    /// The leaf's subject line as openssl prints it (`subject=CN = a.test`).
    pub subject: String,
    pub stdout: String,
    pub stderr: String,
}

/// Connects with `openssl s_client`, SNI `server_name`, trusting only `ca_pem`, and
/// checking the certificate is valid for `server_name`.
pub fn openssl_probe(addr: SocketAddr, server_name: &str, ca_pem: &Path) -> TlsProbe {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &addr.to_string(),
        "-servername",
        server_name,
    ])
    .arg("-CAfile")
    .arg(ca_pem)
    .args([
        "-verify_hostname",
        server_name,
        "-verify_return_error",
        "-brief",
    ])
    .stdin(Stdio::null());
    // `-brief` prints the handshake summary on stderr; stdin at EOF ends the session.
    let out = run_with_deadline(cmd, Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let subject = stderr
        .lines()
        .chain(stdout.lines())
        .find_map(|l| {
            l.trim()
                .strip_prefix("Peer certificate:")
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let verified = stderr.contains("Verification: OK") && out.status.success();
    TlsProbe {
        verified,
        subject,
        stdout,
        stderr,
    }
}

/// Runs `cmd` to completion, killing it (by its PID) if it outlives `deadline`.
pub fn run_with_deadline(mut cmd: Command, deadline: Duration) -> std::process::Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id();
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} (pid {pid}) did not finish within {deadline:?}");
        }
        std::thread::sleep(super::POLL_INTERVAL);
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

/// A process-unique counter, for file names.
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A TLS client stream (rustls, ring provider) over a blocking TCP socket.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects to `addr` with TLS, sending SNI `server_name`, trusting only `ca_pem` and
/// verifying the certificate for `server_name`. Completes the handshake, so an error
/// here means the server presented no acceptable certificate for that name.
pub fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &Path,
) -> Result<TlsStream, String> {
    tls_upgrade(connect(addr), server_name, ca_pem).map_err(|e| format!("{addr}: {e}"))
}

/// Starts TLS on an already connected socket (after a STARTTLS exchange), verifying the
/// server's certificate for `server_name` against `ca_pem` only.
pub fn tls_upgrade(sock: TcpStream, server_name: &str, ca_pem: &Path) -> Result<TlsStream, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).map_err(|e| format!("read CA: {e}"))? {
        roots
            .add(cert.map_err(|e| format!("parse CA: {e}"))?)
            .map_err(|e| format!("add CA: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("tls versions: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name =
        ServerName::try_from(server_name.to_string()).map_err(|e| format!("server name: {e}"))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| format!("client: {e}"))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("TLS handshake for {server_name}: {e}"))?;
    }
    Ok(tls)
}

/// Connects to `addr` from the local address `source` (port picked by the kernel), with
/// the same timeouts as [`connect`]. On Linux every 127.0.0.0/8 address is local, so a
/// test can appear to come from 127.0.0.2.
pub fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    // std cannot bind before connecting; tokio's TcpSocket can, then hands the socket back.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let s = rt
        .block_on(async {
            let sock = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            sock.bind(SocketAddr::new(source, 0))?;
            let stream = tokio::time::timeout(IO_TIMEOUT, sock.connect(addr))
                .await
                .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "connect timed out"))??;
            let std = stream.into_std()?;
            std.set_nonblocking(false)?;
            Ok::<_, std::io::Error>(std)
        })
        .unwrap_or_else(|e| panic!("connect {addr} from {source}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// One IMAP response line as [`ImapClient`] read it: the text with each literal's
/// `{n}` marker kept and its bytes taken out into `literals`, in order.
#[derive(Debug, Clone)]
pub struct ImapLine {
    pub text: String,
    pub literals: Vec<Vec<u8>>,
}

/// Everything the server sent for one tagged command: untagged and continuation lines,
/// then the tagged completion (CRLF stripped).
#[derive(Debug, Clone)]
pub struct ImapResponse {
    pub untagged: Vec<ImapLine>,
    pub tagged: String,
}

impl ImapResponse {
    /// Asserts the completion is `<tag> OK`; returns self.
    pub fn ok(self) -> Self {
        let status = self.tagged.split(' ').nth(1).unwrap_or("");
        assert!(
            status == "OK",
            "expected OK, got {:?} after {:?}",
            self.tagged,
            self.texts()
        );
        self
    }
    /// The untagged lines' texts.
    pub fn texts(&self) -> Vec<&str> {
        self.untagged.iter().map(|l| l.text.as_str()).collect()
    }
    /// Whether some untagged line contains `needle`.
    pub fn has_untagged(&self, needle: &str) -> bool {
        self.untagged.iter().any(|l| l.text.contains(needle))
    }
}

/// A small IMAP client over any stream (plain TCP or TLS): tagged commands, literals in
/// both directions, raw writes for pipelining. Reads are bounded by the socket's
/// timeouts, so a silent server fails the test instead of hanging it.
pub struct ImapClient<S: Read + Write> {
    pub stream: S,
    buf: Vec<u8>,
}

impl ImapClient<TcpStream> {
    /// Connects over plain TCP (timeouts as [`connect`]).
    pub fn connect(addr: SocketAddr) -> ImapClient<TcpStream> {
        ImapClient::new(connect(addr))
    }

    /// Hands back the socket for a TLS upgrade; panics if the server sent bytes the
    /// client has not read (they would be lost across the upgrade).
    pub fn into_tcp(self) -> TcpStream {
        assert!(
            self.buf.is_empty(),
            "unread bytes before the TLS upgrade: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.stream
    }
}

impl<S: Read + Write> ImapClient<S> {
    pub fn new(stream: S) -> ImapClient<S> {
        ImapClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads the greeting line and asserts it is `* OK`.
    pub fn greeting(&mut self) -> String {
        let line = self.read_line();
        assert!(line.starts_with("* OK"), "greeting: {line:?}");
        line
    }

    fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// One raw line with its CRLF stripped, `Ok(None)` at EOF.
    pub fn try_read_raw_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut from = 0;
        loop {
            if let Some(pos) = self.buf[from..].windows(2).position(|w| w == b"\r\n") {
                let end = from + pos;
                let line: Vec<u8> = self.buf.drain(..end + 2).take(end).collect();
                return Ok(Some(line));
            }
            from = self.buf.len().saturating_sub(1);
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// One line (lossy UTF-8, CRLF stripped); panics on EOF or timeout.
    pub fn read_line(&mut self) -> String {
        match self.try_read_raw_line() {
            Ok(Some(l)) => String::from_utf8_lossy(&l).into_owned(),
            Ok(None) => panic!(
                "IMAP server closed before a full line; partial {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => panic!("IMAP read: {e}"),
        }
    }

    /// Exactly `n` bytes.
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => panic!("IMAP server closed inside a {n}-byte literal"),
                Err(e) => panic!("IMAP read inside a {n}-byte literal: {e}"),
            }
        }
        self.buf.drain(..n).collect()
    }

    /// One response line, literals included (`{n}` at a line's end is followed by n
    /// bytes, then the line goes on).
    pub fn read_response_line(&mut self) -> ImapLine {
        let mut text = String::new();
        let mut literals = Vec::new();
        loop {
            let part = self.read_line();
            text.push_str(&part);
            match literal_len(&part) {
                Some(n) => literals.push(self.read_exact_bytes(n)),
                None => return ImapLine { text, literals },
            }
        }
    }

    /// Reads response lines up to the one tagged `tag`.
    pub fn read_tagged(&mut self, tag: &str) -> ImapResponse {
        let prefix = format!("{tag} ");
        let mut untagged = Vec::new();
        loop {
            let line = self.read_response_line();
            if line.text.starts_with(&prefix) {
                return ImapResponse {
                    untagged,
                    tagged: line.text,
                };
            }
            untagged.push(line);
        }
    }

    /// Sends `<tag> <command>` and reads its response.
    pub fn command(&mut self, tag: &str, command: &str) -> ImapResponse {
        self.send(&format!("{tag} {command}"));
        self.read_tagged(tag)
    }

    /// Sends `line` and CRLF.
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("IMAP write");
        self.stream.flush().expect("IMAP flush");
    }

    /// `LOGIN` with quoted strings; returns the response without judging it.
    pub fn login(&mut self, tag: &str, user: &str, password: &str) -> ImapResponse {
        self.command(tag, &format!("LOGIN {} {}", quote(user), quote(password)))
    }

    /// APPENDs `message` to `mailbox` with a synchronising literal (waits for `+`).
    pub fn append(&mut self, tag: &str, mailbox: &str, message: &[u8]) -> ImapResponse {
        self.send(&format!(
            "{tag} APPEND {} {{{}}}",
            quote(mailbox),
            message.len()
        ));
        let cont = self.read_line();
        assert!(
            cont.starts_with('+'),
            "expected a continuation for the APPEND literal, got {cont:?}"
        );
        self.send_raw(message);
        self.send_raw(b"\r\n");
        self.read_tagged(tag)
    }

    /// `FETCH <seq> BODY.PEEK[]` and the message's bytes.
    pub fn fetch_body(&mut self, tag: &str, seq: u32) -> Vec<u8> {
        let r = self.command(tag, &format!("FETCH {seq} BODY.PEEK[]")).ok();
        let line = r
            .untagged
            .iter()
            .find(|l| l.text.starts_with(&format!("* {seq} FETCH")) && !l.literals.is_empty())
            .unwrap_or_else(|| panic!("no FETCH literal in {:?}", r.texts()));
        line.literals[0].clone()
    }
}

/// The length of the literal `{n}` or `{n+}` ending `line`, if any.
pub fn literal_len(line: &str) -> Option<usize> {
    let inner = line.strip_suffix('}')?;
    let open = inner.rfind('{')?;
    let digits = inner[open + 1..].trim_end_matches('+');
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An IMAP quoted string.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Base64 (standard alphabet, padded), for SASL payloads.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The DER of the leaf certificate the server presented.
pub fn peer_leaf_der(tls: &TlsStream) -> Vec<u8> {
    tls.conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default()
}

/// The DER of the first certificate in a PEM file.
pub fn first_cert_der(pem: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_file_iter(pem)
        .expect("read pem")
        .next()
        .expect("a certificate")
        .expect("parse pem")
        .as_ref()
        .to_vec()
}

//! A minimal raw IMAP client over tokio: connect (plain or TLS), read the greeting,
//! send a command, read responses up to its tagged reply. Literals inside responses
//! are skipped in large reads (or captured) and never parsed; on a plain TCP
//! connection a skipped literal can be discarded in the kernel (`recv(MSG_TRUNC)`,
//! no copy at all), so the client's CPU stays out of the relay measurement.

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, Interest};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Longest response line accepted (literals excluded).
const MAX_LINE: usize = 1 << 20;
/// Read size while skipping a literal.
const LITERAL_CHUNK: usize = 256 * 1024;
/// Discard size while dropping a literal in the kernel (never touched, so never resident).
const DISCARD_CHUNK: usize = 4 << 20;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where to connect, and how.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Target {
    pub fn plain(addr: SocketAddr) -> Target {
        Target { addr, tls: None }
    }

    /// Implicit TLS, verifying the server's certificate against the PEM file `ca`
    /// (a self-signed leaf works as its own anchor) for `server_name`.
    pub fn tls(addr: SocketAddr, ca: &Path, server_name: &str) -> Result<Target> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            roots
                .add(cert.with_context(|| format!("parsing {}", ca.display()))?)
                .context("adding the CA certificate")?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| anyhow!("server name {server_name:?}: {e}"))?;
        Ok(Target {
            addr,
            tls: Some((TlsConnector::from(Arc::new(config)), name)),
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects and reads the IMAP greeting.
    pub async fn connect(&self, buf_size: usize) -> Result<Conn> {
        let mut conn = self.open(buf_size).await?;
        let greeting = conn.read_line().await.context("greeting")?;
        if !greeting.starts_with(b"* OK") {
            bail!("greeting: {}", String::from_utf8_lossy(&greeting));
        }
        Ok(conn)
    }

    /// Connects (and completes TLS) without reading anything: the line protocols
    /// (POP3, submission) read their own greetings.
    pub async fn open(&self, buf_size: usize) -> Result<Conn> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let io = match &self.tls {
            None => Stream::Tcp(tcp),
            Some((connector, name)) => Stream::Other(Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {}", self.addr))?,
            )),
        };
        Ok(Conn::new(io, buf_size))
    }
}

enum Stream {
    Tcp(TcpStream),
    Other(Box<dyn Io>),
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Other(s) => s.read(buf).await,
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(buf).await,
            Stream::Other(s) => s.write_all(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush().await,
            Stream::Other(s) => s.flush().await,
        }
    }
}

/// One IMAP connection with its read buffer.
pub struct Conn {
    io: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    scratch: Vec<u8>,
    /// Drop uncaptured literals in the kernel when the connection is plain TCP.
    discard: bool,
    trunc: Vec<MaybeUninit<u8>>,
}

/// What [`Conn::command`] read.
pub struct Reply {
    /// The tagged line, without CRLF.
    pub tagged: Vec<u8>,
    /// Untagged lines (literal contents left out), without CRLF.
    pub untagged: Vec<Vec<u8>>,
    /// Bytes of literal data in the response.
    pub literal_bytes: u64,
}

impl Reply {
    pub fn exists(&self) -> Option<u64> {
        self.untagged.iter().find_map(|l| {
            let s = std::str::from_utf8(l).ok()?;
            let rest = s.strip_prefix("* ")?;
            let (n, what) = rest.split_once(' ')?;
            what.eq_ignore_ascii_case("EXISTS")
                .then(|| n.parse().ok())
                .flatten()
        })
    }
}

impl Conn {
    fn new(io: Stream, buf_size: usize) -> Conn {
        Conn {
            io,
            buf: vec![0; buf_size.max(512)],
            start: 0,
            end: 0,
            scratch: Vec::new(),
            discard: false,
            trunc: Vec::new(),
        }
    }

    /// From now on, literals not captured are discarded by the kernel without being
    /// copied to the client (plain TCP only; a TLS connection still reads them).
    pub fn discard_literals(&mut self, on: bool) {
        self.discard = on;
    }

    /// Drops `n` bytes the kernel has for this socket with `recv(MSG_TRUNC)`.
    async fn discard(&mut self, mut left: u64) -> Result<()> {
        let Stream::Tcp(tcp) = &self.io else {
            bail!("kernel discard needs a plain TCP connection");
        };
        if self.trunc.is_empty() {
            self.trunc = vec![MaybeUninit::uninit(); DISCARD_CHUNK];
        }
        while left > 0 {
            let want = (left as usize).min(self.trunc.len());
            let buf = &mut self.trunc[..want];
            tcp.readable().await?;
            match tcp.try_io(Interest::READABLE, || {
                socket2::SockRef::from(tcp).recv_with_flags(buf, libc::MSG_TRUNC)
            }) {
                Ok(0) => bail!("connection closed inside a literal ({left} bytes missing)"),
                Ok(n) => left -= n.min(want) as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reads more bytes into the buffer, making room first.
    async fn fill(&mut self) -> Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_LINE {
                bail!("response line longer than {MAX_LINE} bytes");
            }
            let len = self.buf.len() * 2;
            self.buf.resize(len, 0);
        }
        let n = self.io.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        self.end += n;
        Ok(())
    }

    /// One line, without its CRLF.
    pub async fn read_line(&mut self) -> Result<Vec<u8>> {
        let mut scanned = self.start;
        loop {
            if let Some(i) = self.buf[scanned..self.end].iter().position(|&b| b == b'\n') {
                let nl = scanned + i;
                let mut line_end = nl;
                if line_end > self.start && self.buf[line_end - 1] == b'\r' {
                    line_end -= 1;
                }
                let line = self.buf[self.start..line_end].to_vec();
                self.start = nl + 1;
                return Ok(line);
            }
            let consumed = self.start;
            scanned = self.end;
            self.fill().await?;
            // fill() may have moved the unread bytes to the front.
            scanned -= consumed - self.start;
        }
    }

    /// Reads `n` literal bytes, appending them to `capture` when given.
    async fn literal(&mut self, n: u64, mut capture: Option<&mut Vec<u8>>) -> Result<()> {
        let mut left = n;
        let buffered = ((self.end - self.start) as u64).min(left) as usize;
        if let Some(c) = capture.as_deref_mut() {
            c.extend_from_slice(&self.buf[self.start..self.start + buffered]);
        }
        self.start += buffered;
        left -= buffered as u64;
        if left == 0 {
            return Ok(());
        }
        if capture.is_none() && self.discard && matches!(self.io, Stream::Tcp(_)) {
            return self.discard(left).await;
        }
        if self.scratch.is_empty() {
            self.scratch = vec![0; LITERAL_CHUNK];
        }
        while left > 0 {
            let want = (left as usize).min(self.scratch.len());
            let got = self.io.read(&mut self.scratch[..want]).await?;
            if got == 0 {
                bail!("connection closed inside a literal ({left} bytes missing)");
            }
            if let Some(c) = capture.as_deref_mut() {
                c.extend_from_slice(&self.scratch[..got]);
            }
            left -= got as u64;
        }
        Ok(())
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Reads responses up to the line tagged `tag`; fails unless it is `OK`.
    pub async fn response(
        &mut self,
        tag: &str,
        mut capture: Option<&mut Vec<u8>>,
    ) -> Result<Reply> {
        let mut reply = Reply {
            tagged: Vec::new(),
            untagged: Vec::new(),
            literal_bytes: 0,
        };
        loop {
            let line = self.read_line().await?;
            if let Some(n) = literal_len(&line) {
                self.literal(n, capture.as_deref_mut()).await?;
                reply.literal_bytes += n;
                reply.untagged.push(line);
                continue;
            }
            let tagged = line.len() > tag.len()
                && line.starts_with(tag.as_bytes())
                && line[tag.len()] == b' ';
            if !tagged {
                reply.untagged.push(line);
                continue;
            }
            let status = &line[tag.len() + 1..];
            if !(status.len() >= 2 && status[..2].eq_ignore_ascii_case(b"OK")) {
                bail!("{}", String::from_utf8_lossy(&line));
            }
            reply.tagged = line;
            return Ok(reply);
        }
    }

    /// Sends `<tag> <command>\r\n` and reads its response.
    pub async fn command(&mut self, tag: &str, command: &str) -> Result<Reply> {
        self.send(format!("{tag} {command}\r\n").as_bytes()).await?;
        self.response(tag, None)
            .await
            .with_context(|| command.split(' ').next().unwrap_or(command).to_string())
    }

    /// `LOGIN` with quoted strings.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<()> {
        self.command("a", &format!("LOGIN {} {}", quote(user), quote(password)))
            .await
            .map(drop)
    }

    /// `APPEND` of `message` into `mailbox` with a synchronising literal.
    pub async fn append(&mut self, mailbox: &str, message: &[u8]) -> Result<()> {
        self.send(format!("p APPEND {} {{{}}}\r\n", quote(mailbox), message.len()).as_bytes())
            .await?;
        let cont = self.read_line().await?;
        if !cont.starts_with(b"+") {
            bail!("APPEND: {}", String::from_utf8_lossy(&cont));
        }
        self.io.write_all(message).await?;
        self.send(b"\r\n").await?;
        self.response("p", None).await.context("APPEND").map(drop)
    }
}

/// `{123}` or `{123+}` at the end of a line.
fn literal_len(line: &[u8]) -> Option<u64> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = &body[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// Runs `fut` with a deadline.
pub async fn within<T>(
    d: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(d, fut)
        .await
        .map_err(|_| anyhow!("{what}: no answer within {d:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_lengths() {
        assert_eq!(literal_len(b"* 1 FETCH (BODY[] {10485760}"), Some(10485760));
        assert_eq!(literal_len(b"a APPEND INBOX {5+}"), Some(5));
        assert_eq!(literal_len(b"* OK {x}"), None);
        assert_eq!(literal_len(b"* OK [ALERT] hi"), None);
        assert_eq!(literal_len(b"{}"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[tokio::test]
    async fn reads_lines_literals_and_tagged_replies() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut conn = Conn::new(Stream::Other(Box::new(client)), 16);
        let body = vec![b'x'; 1000];
        let mut wire = b"* OK hello there, this is a long greeting\r\n".to_vec();
        wire.extend_from_slice(b"* 1 FETCH (BODY[] {1000}\r\n");
        wire.extend_from_slice(&body);
        wire.extend_from_slice(b")\r\n* 2 EXISTS\r\nt OK done\r\n");
        let writer = tokio::spawn(async move {
            server.write_all(&wire).await.ok();
            server
        });
        assert_eq!(
            conn.read_line().await.ok(),
            Some(b"* OK hello there, this is a long greeting".to_vec())
        );
        let mut got = Vec::new();
        let reply = conn.response("t", Some(&mut got)).await.ok();
        let reply = reply.as_ref();
        assert_eq!(reply.map(|r| r.literal_bytes), Some(1000));
        assert_eq!(reply.and_then(Reply::exists), Some(2));
        assert_eq!(got, body);
        drop(writer.await);
    }
}

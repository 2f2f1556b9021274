//! Inbound PROXY protocol (v1 and v2) on a listener: decides which addresses a connection
//! is served with.
//!
//! Rules (Listeners seed, reference §2.3):
//!
//! | mode       | peer      | header          | outcome                                  |
//! |------------|-----------|-----------------|------------------------------------------|
//! | `off`      | any       | not read        | socket addresses                         |
//! | `optional` | untrusted | not read        | socket addresses; its bytes are data     |
//! | `optional` | trusted   | valid           | the header's addresses                   |
//! | `optional` | trusted   | none / invalid  | socket addresses; bytes read are data    |
//! | `required` | untrusted | not read        | closed, no reply                         |
//! | `required` | trusted   | none / invalid  | closed, no reply                         |
//!
//! A `LOCAL` command (v2), `UNKNOWN` (v1) or a non-TCP family means "use the socket
//! addresses". Reading is bounded in bytes (v1: 107, v2: 16 + at most
//! [`MAX_V2_PAYLOAD`]) and in time (`preauth_timeout`). The header is read in pieces that
//! never go past its end when the prefix shows it is v2; a v1 line may be followed by
//! client bytes in the same read. Every byte read that is not part of a valid header is
//! returned as [`Inbound::leftover`], to be relayed first: nothing the client sent is lost.
//!
//! This module must not reply anything to the peer.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use postern_config::model::{Listener, ProxyProtocolIn};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// Longest v1 line, CRLF included (the PROXY protocol spec's limit).
pub const MAX_V1_BYTES: usize = 107;
/// Largest v2 address-and-TLV block accepted. IPv6 addresses take 36 bytes; the rest
/// leaves room for TLVs a load balancer may add.
pub const MAX_V2_PAYLOAD: usize = 2048;
/// In `optional` mode, how long a trusted peer may stay silent before it is taken for a
/// client that sent no header. Load balancers send the header at once, while an SMTP
/// client waits for the server's greeting, so waiting the whole `preauth_timeout` would
/// hold such clients for nothing.
pub const OPTIONAL_FIRST_BYTE_WAIT: Duration = Duration::from_secs(2);

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8; 6] = b"PROXY ";
const V2_FIXED: usize = 16;

/// The addresses a connection is served with, and client bytes already read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The client's address: the header's source, else the socket peer.
    pub client: SocketAddr,
    /// The address the client connected to: the header's destination, else our socket.
    pub local: SocketAddr,
    /// Client bytes read that were not a PROXY header; relay them first.
    pub leftover: Vec<u8>,
    /// True when the addresses came from a PROXY header.
    pub from_header: bool,
}

/// Why a connection is closed before it is served. Always [`crate::side::Side::Client`].
#[derive(Debug, thiserror::Error)]
pub enum ProxyInError {
    #[error("peer {peer} is not trusted to send a proxy header")]
    Untrusted { peer: SocketAddr },
    #[error("no proxy header from trusted peer")]
    Missing,
    #[error("invalid proxy header: {reason}")]
    Invalid { reason: String },
    #[error("timed out reading the proxy header")]
    Timeout,
    #[error("reading the proxy header")]
    Io(#[source] io::Error),
}

/// What the bytes read so far are.
#[derive(Debug, PartialEq, Eq)]
enum Sniff {
    /// Could still become a header: read up to this many more bytes.
    NeedMore(usize),
    /// Not a header: serve the bytes as data.
    NotHeader,
    /// A complete header of this length sits at the start of the buffer.
    Complete(usize),
    /// Starts like a header but cannot be one.
    Invalid(String),
}

fn sniff(buf: &[u8]) -> Sniff {
    let v2_prefix = buf.len().min(V2_SIGNATURE.len());
    let v1_prefix = buf.len().min(V1_PREFIX.len());
    if buf[..v2_prefix] == V2_SIGNATURE[..v2_prefix] {
        if buf.len() < V2_FIXED {
            return Sniff::NeedMore(V2_FIXED - buf.len());
        }
        let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if payload > MAX_V2_PAYLOAD {
            return Sniff::Invalid(format!("v2 payload of {payload} bytes is over the limit"));
        }
        let total = V2_FIXED + payload;
        if buf.len() < total {
            return Sniff::NeedMore(total - buf.len());
        }
        return Sniff::Complete(total);
    }
    if buf[..v1_prefix] == V1_PREFIX[..v1_prefix] {
        let scan = &buf[..buf.len().min(MAX_V1_BYTES)];
        if let Some(pos) = scan.windows(2).position(|w| w == b"\r\n") {
            return Sniff::Complete(pos + 2);
        }
        if buf.len() >= MAX_V1_BYTES {
            return Sniff::Invalid("v1 line longer than 107 bytes".into());
        }
        return Sniff::NeedMore(MAX_V1_BYTES - buf.len());
    }
    Sniff::NotHeader
}

/// A parsed header: `Some` addresses for PROXY over TCP, `None` for LOCAL/UNKNOWN.
fn parse(header: &[u8]) -> Result<Option<(SocketAddr, SocketAddr)>, String> {
    if header.starts_with(V2_SIGNATURE) {
        let parsed = ppp::v2::Header::try_from(header).map_err(|e| e.to_string())?;
        if parsed.command == ppp::v2::Command::Local {
            return Ok(None);
        }
        if parsed.protocol != ppp::v2::Protocol::Stream {
            return Ok(None);
        }
        return Ok(match parsed.addresses {
            ppp::v2::Addresses::IPv4(a) => Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            ppp::v2::Addresses::IPv6(a) => Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
        });
    }
    let parsed = ppp::v1::Header::try_from(header).map_err(|e| e.to_string())?;
    Ok(match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        ppp::v1::Addresses::Tcp6(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        ppp::v1::Addresses::Unknown => None,
    })
}

/// How reading the header ended.
enum Read {
    /// A header of this length, then leftover.
    Header(usize),
    /// No header: everything read is data.
    NoHeader,
    Invalid(String),
    /// The peer closed or stayed silent before a decision; everything read is data.
    Eof,
    Timeout,
}

async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    first_byte_wait: Duration,
    deadline: Instant,
) -> Result<Read, io::Error> {
    loop {
        let want = match sniff(buf) {
            Sniff::NeedMore(n) => n,
            Sniff::NotHeader => return Ok(Read::NoHeader),
            Sniff::Complete(len) => return Ok(Read::Header(len)),
            Sniff::Invalid(reason) => return Ok(Read::Invalid(reason)),
        };
        let until = if buf.is_empty() {
            deadline.min(Instant::now() + first_byte_wait)
        } else {
            deadline
        };
        let start = buf.len();
        buf.resize(start + want, 0);
        let read = tokio::time::timeout_at(until, stream.read(&mut buf[start..])).await;
        match read {
            Err(_) => {
                buf.truncate(start);
                return Ok(Read::Timeout);
            }
            Ok(Err(e)) => {
                buf.truncate(start);
                return Err(e);
            }
            Ok(Ok(0)) => {
                buf.truncate(start);
                return Ok(Read::Eof);
            }
            Ok(Ok(n)) => buf.truncate(start + n),
        }
    }
}

/// Applies the listener's PROXY rules to a freshly accepted connection.
pub async fn accept<S: AsyncRead + Unpin>(
    stream: &mut S,
    listener: &Listener,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Inbound, ProxyInError> {
    let socket = Inbound {
        client: peer,
        local,
        leftover: Vec::new(),
        from_header: false,
    };
    let required = match listener.proxy_protocol {
        ProxyProtocolIn::Off => return Ok(socket),
        ProxyProtocolIn::Optional => false,
        ProxyProtocolIn::Required => true,
    };
    if !listener.trusts_proxy_from(peer.ip()) {
        if required {
            return Err(ProxyInError::Untrusted { peer });
        }
        tracing::debug!(%peer, "peer not trusted for proxy header, using socket address");
        return Ok(socket);
    }
    let deadline = Instant::now() + listener.preauth_timeout.min(crate::pipe::MAX_TIMER);
    let first_byte_wait = if required {
        listener.preauth_timeout
    } else {
        OPTIONAL_FIRST_BYTE_WAIT
    };
    let mut buf = Vec::with_capacity(V2_FIXED);
    let outcome = read_header(stream, &mut buf, first_byte_wait, deadline)
        .await
        .map_err(ProxyInError::Io)?;
    let failure = match outcome {
        Read::Header(len) => match parse(&buf[..len]) {
            Ok(Some((client, dest))) => {
                tracing::debug!(%peer, client = %client, destination = %dest, "proxy header accepted");
                return Ok(Inbound {
                    client,
                    local: dest,
                    leftover: buf[len..].to_vec(),
                    from_header: true,
                });
            }
            Ok(None) => {
                tracing::debug!(%peer, "proxy header without addresses, using socket address");
                return Ok(Inbound {
                    leftover: buf[len..].to_vec(),
                    ..socket
                });
            }
            Err(reason) => ProxyInError::Invalid { reason },
        },
        Read::Invalid(reason) => ProxyInError::Invalid { reason },
        Read::NoHeader | Read::Eof => ProxyInError::Missing,
        Read::Timeout if buf.is_empty() && !required => ProxyInError::Missing,
        Read::Timeout => ProxyInError::Timeout,
    };
    if required {
        return Err(failure);
    }
    tracing::debug!(%peer, reason = %failure, "no valid proxy header, using socket address");
    Ok(Inbound {
        leftover: buf,
        ..socket
    })
}

/// A stream that yields `prefix` before reading from `inner`: how bytes read while
/// sniffing for a PROXY header reach a TLS handshake or a protocol codec.
pub struct Rewound<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewound<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Rewound<S> {
        Rewound {
            prefix,
            pos: 0,
            inner,
        }
    }

    /// The inner stream and the prefix bytes not read yet.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        let mut prefix = self.prefix;
        prefix.drain(..self.pos);
        (self.inner, prefix)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Rewound<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;
    use postern_config::model::{Protocol, TlsMode};
    use tokio::io::AsyncWriteExt;

    const PEER: &str = "10.0.0.5:40000";
    const LOCAL: &str = "192.0.2.1:25";

    fn listener(mode: ProxyProtocolIn) -> Listener {
        let mut l = testutil::listener("smtp", Protocol::Smtp, TlsMode::Plain);
        l.proxy_protocol = mode;
        l.proxy_trusted = vec!["10.0.0.0/8".parse().expect("net")];
        l.preauth_timeout = Duration::from_secs(5);
        l
    }

    fn v2_ipv4() -> Vec<u8> {
        crate::upstream::proxy_header(
            "198.51.100.7:5555".parse().expect("a"),
            "203.0.113.9:25".parse().expect("a"),
        )
    }

    /// Runs `accept` against a peer that writes `chunks` (then keeps the socket open
    /// unless `close`), from `peer`.
    async fn run(
        mode: ProxyProtocolIn,
        peer: &str,
        chunks: &[&[u8]],
        close: bool,
    ) -> (Result<Inbound, ProxyInError>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(4096);
        for c in chunks {
            client.write_all(c).await.expect("write");
        }
        if close {
            client.shutdown().await.expect("shutdown");
        }
        let l = listener(mode);
        let res = tokio::time::timeout(
            Duration::from_secs(20),
            accept(
                &mut server,
                &l,
                peer.parse().expect("peer"),
                LOCAL.parse().expect("local"),
            ),
        )
        .await
        .expect("accept bounded");
        // What the stream still holds (not consumed by accept).
        drop(client);
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut rest)).await;
        (res, rest)
    }

    #[tokio::test]
    async fn optional_trusted_v2_is_adopted_and_data_kept() {
        let mut bytes = v2_ipv4();
        bytes.extend_from_slice(b"EHLO x\r\n");
        let (res, rest) = run(ProxyProtocolIn::Optional, PEER, &[&bytes], false).await;
        let inbound = res.expect("ok");
        assert!(inbound.from_header);
        assert_eq!(inbound.client, "198.51.100.7:5555".parse().expect("a"));
        assert_eq!(inbound.local, "203.0.113.9:25".parse().expect("a"));
        // The v2 header is read exactly: the data stays in the stream.
        let mut all = inbound.leftover.clone();
        all.extend_from_slice(&rest);
        assert_eq!(all, b"EHLO x\r\n");
    }

    #[tokio::test]
    async fn optional_trusted_v1_with_trailing_data() {
        let line: &[u8] = b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 25\r\nEHLO x\r\n";
        let (res, rest) = run(ProxyProtocolIn::Optional, PEER, &[line], false).await;
        let inbound = res.expect("ok");
        assert_eq!(inbound.client, "[2001:db8::1]:1234".parse().expect("a"));
        assert_eq!(inbound.local, "[2001:db8::2]:25".parse().expect("a"));
        let mut all = inbound.leftover.clone();
        all.extend_from_slice(&rest);
        assert_eq!(all, b"EHLO x\r\n");
    }

    #[tokio::test]
    async fn header_split_across_reads() {
        let bytes = v2_ipv4();
        let (a, b) = bytes.split_at(5);
        let (res, _) = run(ProxyProtocolIn::Required, PEER, &[a, b], false).await;
        assert!(res.expect("ok").from_header);
    }

    #[tokio::test]
    async fn optional_trusted_without_header_is_served_as_data() {
        let (res, _) = run(
            ProxyProtocolIn::Optional,
            PEER,
            &[b"\x16\x03\x01hello"],
            false,
        )
        .await;
        let inbound = res.expect("ok");
        assert!(!inbound.from_header);
        assert_eq!(inbound.client, PEER.parse().expect("a"));
        assert_eq!(inbound.leftover, b"\x16\x03\x01hello");
    }

    #[tokio::test(start_paused = true)]
    async fn optional_trusted_silent_peer_is_served_after_short_wait() {
        let start = Instant::now();
        let (res, _) = run(ProxyProtocolIn::Optional, PEER, &[], false).await;
        let inbound = res.expect("ok");
        assert!(!inbound.from_header);
        assert!(inbound.leftover.is_empty());
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn optional_trusted_invalid_header_is_served_as_data() {
        let bad: &[u8] = b"PROXY TCP4 not-an-ip 1.2.3.4 1 2\r\nrest";
        let (res, rest) = run(ProxyProtocolIn::Optional, PEER, &[bad], true).await;
        let inbound = res.expect("ok");
        assert!(!inbound.from_header);
        let mut all = inbound.leftover.clone();
        all.extend_from_slice(&rest);
        assert_eq!(all, bad);
    }

    #[tokio::test]
    async fn optional_untrusted_header_bytes_are_data() {
        let bytes = v2_ipv4();
        let (res, rest) = run(
            ProxyProtocolIn::Optional,
            "192.0.2.77:1000",
            &[&bytes],
            false,
        )
        .await;
        let inbound = res.expect("ok");
        assert!(!inbound.from_header);
        assert_eq!(inbound.client, "192.0.2.77:1000".parse().expect("a"));
        // Not even read: all of it is still in the stream.
        assert!(inbound.leftover.is_empty());
        assert_eq!(rest, bytes);
    }

    #[tokio::test]
    async fn required_untrusted_is_refused() {
        let bytes = v2_ipv4();
        let (res, _) = run(
            ProxyProtocolIn::Required,
            "192.0.2.77:1000",
            &[&bytes],
            false,
        )
        .await;
        assert!(matches!(res, Err(ProxyInError::Untrusted { .. })));
    }

    #[tokio::test]
    async fn required_trusted_without_header_is_refused() {
        let (res, _) = run(ProxyProtocolIn::Required, PEER, &[b"EHLO x\r\n"], false).await;
        assert!(matches!(res, Err(ProxyInError::Missing)));
        let (res, _) = run(
            ProxyProtocolIn::Required,
            PEER,
            &[b"PROXY TCP4 x\r\n"],
            false,
        )
        .await;
        assert!(matches!(res, Err(ProxyInError::Invalid { .. })));
        let (res, _) = run(ProxyProtocolIn::Required, PEER, &[], true).await;
        assert!(matches!(res, Err(ProxyInError::Missing)));
        let long = [b'A'; 200];
        let mut line = b"PROXY ".to_vec();
        line.extend_from_slice(&long);
        let (res, _) = run(ProxyProtocolIn::Required, PEER, &[&line], false).await;
        assert!(matches!(res, Err(ProxyInError::Invalid { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn required_trusted_silent_peer_times_out() {
        let (res, _) = run(ProxyProtocolIn::Required, PEER, &[b"\r\n\r\n"], false).await;
        assert!(matches!(res, Err(ProxyInError::Timeout)));
    }

    #[tokio::test]
    async fn oversized_v2_is_invalid() {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let (res, _) = run(ProxyProtocolIn::Required, PEER, &[&bytes], false).await;
        assert!(matches!(res, Err(ProxyInError::Invalid { .. })));
    }

    #[tokio::test]
    async fn local_command_and_unknown_use_socket_addresses() {
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        let (res, _) = run(ProxyProtocolIn::Required, PEER, &[&local], false).await;
        let inbound = res.expect("ok");
        assert_eq!(inbound.client, PEER.parse().expect("a"));
        assert!(!inbound.from_header);
        let (res, _) = run(
            ProxyProtocolIn::Required,
            PEER,
            &[b"PROXY UNKNOWN\r\n"],
            false,
        )
        .await;
        assert_eq!(res.expect("ok").client, PEER.parse().expect("a"));
    }

    #[tokio::test]
    async fn off_reads_nothing() {
        let bytes = v2_ipv4();
        let (res, rest) = run(ProxyProtocolIn::Off, PEER, &[&bytes], false).await;
        assert!(res.expect("ok").leftover.is_empty());
        assert_eq!(rest, bytes);
    }

    #[test]
    fn sniff_decisions() {
        assert_eq!(sniff(b""), Sniff::NeedMore(16));
        assert_eq!(sniff(b"PRO"), Sniff::NeedMore(104));
        assert_eq!(sniff(b"EHLO"), Sniff::NotHeader);
        assert_eq!(sniff(b"PROXY UNKNOWN\r\nx"), Sniff::Complete(15));
        assert_eq!(sniff(b"\r\n\r\nX"), Sniff::NotHeader);
    }
}

//! The byte relay between a client and its backend, once no protocol is spoken any more.
//!
//! - Byte-exact, both directions at once; bytes the protocol layer already read from
//!   the client (`leftover`) go to the backend first.
//! - Half-close: EOF in one direction shuts down the write side of the other stream;
//!   the other direction keeps running until it ends too.
//! - Idle limit: traffic in either direction resets it; on expiry the relay stops.
//! - Memory: no buffer is held while a session is idle. Reads go into a scratch buffer
//!   on the polling thread's stack and are written straight on; only bytes a
//!   backpressured writer did not take are copied to the heap, and that copy is freed
//!   once written.
//!
//! The two streams are any `AsyncRead + AsyncWrite`, so TLS on either side works. Two
//! plain TCP sockets go through [`crate::splice::relay_tcp`] instead (zero-copy, same
//! [`Relayed`] result). This module never logs payload bytes.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::side::Side;

/// Size of the per-poll scratch buffer (one TLS record's worth).
pub const SCRATCH_BYTES: usize = 16 * 1024;
/// Reads per direction in one poll before yielding, so one busy direction cannot
/// starve the other or the runtime.
const READS_PER_POLL: u32 = 32;

/// Longest timer this crate arms. Configured durations are clamped to it, so adding one
/// to an `Instant` can never overflow.
pub const MAX_TIMER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How a relay ended.
#[derive(Debug)]
pub enum End {
    /// Both directions reached EOF and were shut down.
    Closed,
    /// No byte moved in either direction for the idle limit.
    Idle,
    /// A read or write failed; `side` is the stream it failed on.
    Error { side: Side, error: io::Error },
}

/// What a relay moved, and how it ended.
#[derive(Debug)]
pub struct Relayed {
    pub to_backend: u64,
    pub to_client: u64,
    pub end: End,
}

impl Relayed {
    /// The session's one `session closed` line (and a debug line on how the relay
    /// ended). `user` is the routing identifier of an authenticated session.
    pub fn log_closed(
        &self,
        destination: &str,
        user: Option<&str>,
        started: Instant,
        idle: Duration,
    ) {
        match &self.end {
            End::Closed => {}
            End::Idle => tracing::debug!(idle_secs = idle.as_secs(), "relay idle limit reached"),
            End::Error { side, error } => match side {
                Side::Upstream => {
                    tracing::debug!(side = %side, %error, "relay ended by backend error")
                }
                _ => tracing::debug!(side = %side, %error, "relay ended by client error"),
            },
        }
        let secs = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        tracing::info!(
            destination,
            user,
            bytes_to_backend = self.to_backend,
            bytes_to_client = self.to_client,
            secs,
            "session closed"
        );
    }
}

/// One direction of the copy.
struct Direction {
    /// Bytes read but not yet accepted by the writer.
    pending: Vec<u8>,
    pos: usize,
    read_eof: bool,
    done: bool,
    need_flush: bool,
    bytes: u64,
    reader_side: Side,
    writer_side: Side,
}

type Failure = (Side, io::Error);

impl Direction {
    fn new(pending: Vec<u8>, reader_side: Side, writer_side: Side) -> Direction {
        Direction {
            pending,
            pos: 0,
            read_eof: false,
            done: false,
            need_flush: false,
            bytes: 0,
            reader_side,
            writer_side,
        }
    }

    /// Writes `data` until done or the writer is full; returns how much it took.
    fn write_some<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut W,
        data: &[u8],
        progressed: &mut bool,
    ) -> Result<usize, Failure> {
        let mut off = 0;
        while off < data.len() {
            match Pin::new(&mut *writer).poll_write(cx, &data[off..]) {
                Poll::Ready(Ok(0)) => {
                    return Err((self.writer_side, io::Error::from(io::ErrorKind::WriteZero)));
                }
                Poll::Ready(Ok(n)) => {
                    off += n;
                    self.bytes += n as u64;
                    self.need_flush = true;
                    *progressed = true;
                }
                Poll::Ready(Err(e)) => return Err((self.writer_side, e)),
                Poll::Pending => break,
            }
        }
        Ok(off)
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        scratch: &mut [MaybeUninit<u8>],
        progressed: &mut bool,
    ) -> Poll<Result<(), Failure>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut reads = 0;
        loop {
            if self.pos < self.pending.len() {
                let pending = std::mem::take(&mut self.pending);
                let taken = self.write_some(cx, writer, &pending[self.pos..], progressed)?;
                self.pos += taken;
                self.pending = pending;
                if self.pos < self.pending.len() {
                    return Poll::Pending;
                }
                // Written out: give the memory back.
                self.pending = Vec::new();
                self.pos = 0;
            }
            if self.read_eof {
                return match Pin::new(&mut *writer).poll_shutdown(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Ok(())) => {
                        self.done = true;
                        Poll::Ready(Ok(()))
                    }
                    // The peer is already gone both ways: nothing left to shut.
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::NotConnected => {
                        self.done = true;
                        Poll::Ready(Ok(()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err((self.writer_side, e))),
                };
            }
            if reads >= READS_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            reads += 1;
            let mut buf = ReadBuf::uninit(scratch);
            match Pin::new(&mut *reader).poll_read(cx, &mut buf) {
                Poll::Pending => {
                    if self.need_flush {
                        match Pin::new(&mut *writer).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.need_flush = false,
                            Poll::Ready(Err(e)) => return Poll::Ready(Err((self.writer_side, e))),
                            Poll::Pending => {}
                        }
                    }
                    return Poll::Pending;
                }
                // A TLS peer that closes without close_notify: an ordinary end here.
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.read_eof = true
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err((self.reader_side, e))),
                Poll::Ready(Ok(())) => {
                    let data = buf.filled();
                    if data.is_empty() {
                        self.read_eof = true;
                        continue;
                    }
                    *progressed = true;
                    let taken = self.write_some(cx, writer, data, progressed)?;
                    if taken < data.len() {
                        self.pending = data[taken..].to_vec();
                        self.pos = 0;
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

/// Relays between `client` and `backend` until both directions end, an error, or
/// `idle` without traffic. `leftover` (client bytes already read) is sent to the
/// backend first.
pub async fn relay<C, B>(
    mut client: C,
    mut backend: B,
    leftover: Vec<u8>,
    idle: Duration,
) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = Direction::new(leftover, Side::Client, Side::Upstream);
    let mut down = Direction::new(Vec::new(), Side::Upstream, Side::Client);
    let idle = idle.min(MAX_TIMER);
    let mut last_activity = Instant::now();
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);

    let end = std::future::poll_fn(|cx| {
        let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH_BYTES];
        let mut progressed = false;
        if !up.done {
            if let Poll::Ready(Err((side, error))) =
                up.poll_copy(cx, &mut client, &mut backend, &mut scratch, &mut progressed)
            {
                return Poll::Ready(End::Error { side, error });
            }
        }
        if !down.done {
            if let Poll::Ready(Err((side, error))) =
                down.poll_copy(cx, &mut backend, &mut client, &mut scratch, &mut progressed)
            {
                return Poll::Ready(End::Error { side, error });
            }
        }
        if up.done && down.done {
            return Poll::Ready(End::Closed);
        }
        let now = Instant::now();
        if progressed {
            last_activity = now;
        }
        // The timer is only re-armed when it fires, not on every byte.
        while sleep.as_mut().poll(cx).is_ready() {
            let deadline = last_activity + idle;
            if Instant::now() >= deadline {
                return Poll::Ready(End::Idle);
            }
            sleep.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await;
    Relayed {
        to_backend: up.bytes,
        to_client: down.bytes,
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const BOUND: Duration = Duration::from_secs(20);

    /// Two connected TCP pairs: (client_end, proxy_client_side), (proxy_backend_side, backend_end).
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[tokio::test]
    async fn byte_exact_with_leftover_and_client_half_close() {
        let (mut client, proxy_c) = tcp_pair().await;
        let (proxy_b, mut backend) = tcp_pair().await;
        let relay = tokio::spawn(relay(
            proxy_c,
            proxy_b,
            b"LEFT".to_vec(),
            Duration::from_secs(60),
        ));

        let up = pattern(300_000, 1);
        let down = pattern(500_000, 7);
        let up2 = up.clone();
        let client_task = tokio::spawn(async move {
            client.write_all(&up2).await.expect("write");
            client.shutdown().await.expect("half-close");
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.expect("read");
            got
        });
        // Backend reads everything until the client's EOF arrives, then answers.
        let mut got_up = Vec::new();
        tokio::time::timeout(BOUND, backend.read_to_end(&mut got_up))
            .await
            .expect("bounded")
            .expect("read");
        let mut expected = b"LEFT".to_vec();
        expected.extend_from_slice(&up);
        assert_eq!(got_up, expected);
        backend.write_all(&down).await.expect("write");
        backend.shutdown().await.expect("shutdown");

        let got_down = tokio::time::timeout(BOUND, client_task)
            .await
            .expect("bounded")
            .expect("join");
        assert_eq!(got_down, down);
        let r = tokio::time::timeout(BOUND, relay)
            .await
            .expect("bounded")
            .expect("join");
        assert!(matches!(r.end, End::Closed), "{:?}", r.end);
        assert_eq!(r.to_backend, expected.len() as u64);
        assert_eq!(r.to_client, down.len() as u64);
    }

    #[tokio::test]
    async fn backend_half_close_keeps_client_direction() {
        let (mut client, proxy_c) = tcp_pair().await;
        let (proxy_b, mut backend) = tcp_pair().await;
        let relay = tokio::spawn(relay(proxy_c, proxy_b, Vec::new(), Duration::from_secs(60)));

        backend.write_all(b"220 hello\r\n").await.expect("write");
        backend.shutdown().await.expect("backend half-close");
        let mut got = Vec::new();
        tokio::time::timeout(BOUND, client.read_to_end(&mut got))
            .await
            .expect("bounded")
            .expect("read");
        assert_eq!(got, b"220 hello\r\n");
        // The client can still talk to the backend after the backend's EOF.
        client.write_all(b"QUIT\r\n").await.expect("write");
        let mut buf = [0u8; 6];
        tokio::time::timeout(BOUND, backend.read_exact(&mut buf))
            .await
            .expect("bounded")
            .expect("read");
        assert_eq!(&buf, b"QUIT\r\n");
        client.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        tokio::time::timeout(BOUND, backend.read_to_end(&mut rest))
            .await
            .expect("bounded")
            .expect("read");
        assert!(rest.is_empty());
        let r = tokio::time::timeout(BOUND, relay)
            .await
            .expect("bounded")
            .expect("join");
        assert!(matches!(r.end, End::Closed));
        assert_eq!((r.to_backend, r.to_client), (6, 11));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_limit_ends_the_relay_and_traffic_resets_it() {
        let (client, proxy_c) = tokio::io::duplex(1024);
        let (proxy_b, mut backend) = tokio::io::duplex(1024);
        let mut client = client;
        let start = Instant::now();
        let relay = tokio::spawn(relay(proxy_c, proxy_b, Vec::new(), Duration::from_secs(10)));
        tokio::time::sleep(Duration::from_secs(7)).await;
        client.write_all(b"x").await.expect("write");
        let mut one = [0u8; 1];
        backend.read_exact(&mut one).await.expect("read");
        let r = relay.await.expect("join");
        assert!(matches!(r.end, End::Idle), "{:?}", r.end);
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_secs(17) && elapsed < Duration::from_secs(18),
            "{elapsed:?}"
        );
        assert_eq!(r.to_backend, 1);
    }

    #[tokio::test]
    async fn backpressure_keeps_bytes_exact() {
        // Tiny duplex buffers force partial writes and the pending path.
        let (mut client, proxy_c) = tokio::io::duplex(7);
        let (proxy_b, mut backend) = tokio::io::duplex(5);
        let relay = tokio::spawn(relay(
            proxy_c,
            proxy_b,
            pattern(1000, 3),
            Duration::from_secs(60),
        ));
        let data = pattern(100_000, 9);
        let d2 = data.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&d2).await.expect("write");
            client.shutdown().await.expect("shutdown");
            client
        });
        let mut got = Vec::new();
        tokio::time::timeout(BOUND, backend.read_to_end(&mut got))
            .await
            .expect("bounded")
            .expect("read");
        let mut expected = pattern(1000, 3);
        expected.extend_from_slice(&data);
        assert_eq!(got, expected);
        drop(backend);
        let _client = writer.await.expect("join");
        let r = tokio::time::timeout(BOUND, relay)
            .await
            .expect("bounded")
            .expect("join");
        assert_eq!(r.to_backend, expected.len() as u64);
    }

    #[tokio::test]
    async fn idle_session_holds_no_copy_buffer() {
        let (client, proxy_c) = tcp_pair().await;
        let (proxy_b, backend) = tcp_pair().await;
        let fut = relay(proxy_c, proxy_b, Vec::new(), Duration::from_secs(60));
        // The scratch buffer lives on the stack of each poll, not in the future.
        let size = std::mem::size_of_val(&fut);
        assert!(size < SCRATCH_BYTES / 8, "relay future is {size} bytes");
        drop((fut, client, backend));
    }

    #[tokio::test]
    async fn reset_reports_the_side() {
        let (client, proxy_c) = tcp_pair().await;
        let (proxy_b, _backend) = tcp_pair().await;
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(client);
        let r = tokio::time::timeout(
            BOUND,
            relay(proxy_c, proxy_b, Vec::new(), Duration::from_secs(60)),
        )
        .await
        .expect("bounded");
        match r.end {
            End::Error { side, .. } => assert_eq!(side, Side::Client),
            other => panic!("expected a client error, got {other:?}"),
        }
    }
}

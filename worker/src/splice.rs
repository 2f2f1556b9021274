//! Zero-copy relay between two plain TCP sockets with `splice(2)`: the sibling of
//! [`pipe::relay`](crate::pipe::relay) for when neither leg speaks TLS, with the same
//! semantics and the same [`Relayed`] result.
//!
//! - Payload goes socket → kernel pipe → socket and never enters user space, except
//!   `leftover` (client bytes the protocol layer already read), which is written to the
//!   backend first with an ordinary write and then freed.
//! - Half-close, the idle limit, error sides and byte counts are those of `pipe::relay`.
//! - Memory: a session holds no buffer while idle. A direction leases a pipe from a small
//!   process-wide pool only once its source is readable, and gives it back, empty, as
//!   soon as the source would block. The pool keeps at most [`MAX_IDLE_PIPES`] and
//!   closes the rest; a pipe whose splice failed, or that still holds bytes when the
//!   relay ends, is closed, never pooled.
//! - A direction only splices into an *empty* pipe, so EAGAIN on socket → pipe always
//!   means "socket empty", never "pipe full"; and it only splices out of a non-empty
//!   pipe, so EAGAIN on pipe → socket always means "socket full". That keeps the
//!   readiness tokio clears in `try_io` true to the socket.
//!
//! Needs `pipe2`, `splice`, `shutdown` (and `fcntl` only through libc) in the seccomp
//! allowlist. Like any write to a socket, a splice to a reset peer may raise SIGPIPE,
//! which the Rust runtime ignores. This module never logs payload bytes.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::pipe::{End, Relayed, MAX_TIMER};
use crate::side::Side;

/// Most idle pipes the process-wide pool keeps; pipes given back beyond it are closed
/// (few: idle pipes count against the pipe-page quota, see [`PIPE_BYTES`]).
pub const MAX_IDLE_PIPES: usize = 8;
/// Capacity asked for each pipe (`F_SETPIPE_SZ`): bulk transfers (a large FETCH) then
/// take a quarter of the splice calls and wakeups of the 64 KiB default (measured with
/// `scripts/bench.sh`: relay throughput up from about 83 % to 89 % of direct with
/// larger pipes). Kept moderate because the kernel counts pipe capacity against the
/// service account's `pipe-user-pages-soft` quota (16384 pages by default, shared by
/// every worker), pooled pipes included; past it, new pipes get one page. A refused
/// resize leaves the default size.
pub const PIPE_BYTES: usize = 256 * 1024;
/// Most bytes one splice moves from a socket into a pipe.
pub const CHUNK_BYTES: usize = PIPE_BYTES;
/// Chunks per direction in one poll before yielding, so one busy direction cannot
/// starve the other or the runtime.
const CHUNKS_PER_POLL: u32 = 32;
/// `SPLICE_F_NONBLOCK` makes the pipe end non-blocking; the sockets already are.
const SPLICE_FLAGS: SpliceFFlags =
    SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

/// The process-wide pool [`relay_tcp`] leases from.
static POOL: Pool = Pool::new();

/// Both ends of one kernel pipe, non-blocking and close-on-exec.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let size = i32::try_from(PIPE_BYTES).unwrap_or(i32::MAX);
        if let Err(e) = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size)) {
            tracing::trace!(error = %e, "pipe keeps its default size");
        }
        Ok(Pipe { read, write })
    }
}

/// Empty pipes waiting for a direction with data in flight.
struct Pool {
    idle: Mutex<Vec<Pipe>>,
    /// Pipes currently held by a direction.
    leased: AtomicUsize,
}

impl Pool {
    const fn new() -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            leased: AtomicUsize::new(0),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Pipe>> {
        // A Vec of fds cannot be left half-updated by a panic: poisoning is harmless.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> io::Result<Pipe> {
        let pooled = self.idle().pop();
        let pipe = match pooled {
            Some(pipe) => pipe,
            None => Pipe::new()?,
        };
        self.leased.fetch_add(1, Ordering::Relaxed);
        Ok(pipe)
    }

    /// Takes back an empty pipe, or closes it if the pool is full.
    fn give(&self, pipe: Pipe) {
        self.leased.fetch_sub(1, Ordering::Relaxed);
        let surplus = {
            let mut idle = self.idle();
            if idle.len() < MAX_IDLE_PIPES {
                idle.push(pipe);
                None
            } else {
                Some(pipe)
            }
        };
        // Closed here, outside the lock.
        drop(surplus);
    }

    /// Closes a pipe that failed or still holds bytes.
    fn discard(&self, pipe: Pipe) {
        self.leased.fetch_sub(1, Ordering::Relaxed);
        drop(pipe);
    }

    #[cfg(test)]
    fn idle_len(&self) -> usize {
        self.idle().len()
    }

    #[cfg(test)]
    fn leased(&self) -> usize {
        self.leased.load(Ordering::Relaxed)
    }
}

/// A leased pipe and how many bytes sit in it.
struct Lease {
    pipe: Pipe,
    queued: usize,
}

type Failure = (Side, io::Error);

/// One direction of the relay.
struct Direction<'p> {
    pool: &'p Pool,
    leftover: Vec<u8>,
    pos: usize,
    lease: Option<Lease>,
    read_eof: bool,
    done: bool,
    bytes: u64,
    reader_side: Side,
    writer_side: Side,
}

fn splice_io(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    Ok(splice(from, None, to, None, len, SPLICE_FLAGS)?)
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl<'p> Direction<'p> {
    fn new(pool: &'p Pool, leftover: Vec<u8>, reader_side: Side, writer_side: Side) -> Self {
        Direction {
            pool,
            leftover,
            pos: 0,
            lease: None,
            read_eof: false,
            done: false,
            bytes: 0,
            reader_side,
            writer_side,
        }
    }

    /// Gives the pipe back if it is empty, closes it otherwise.
    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            if lease.queued == 0 {
                self.pool.give(lease.pipe);
            } else {
                self.pool.discard(lease.pipe);
            }
        }
    }

    /// Closes the pipe after a failed splice: its contents are unknown.
    fn fail(&mut self, side: Side, error: io::Error) -> Poll<Result<(), Failure>> {
        if let Some(lease) = self.lease.take() {
            self.pool.discard(lease.pipe);
        }
        Poll::Ready(Err((side, error)))
    }

    fn poll_leftover(
        &mut self,
        cx: &mut Context<'_>,
        dst: &TcpStream,
        progressed: &mut bool,
    ) -> Poll<Result<(), Failure>> {
        while self.pos < self.leftover.len() {
            if let Err(e) = ready!(dst.poll_write_ready(cx)) {
                return Poll::Ready(Err((self.writer_side, e)));
            }
            match dst.try_write(&self.leftover[self.pos..]) {
                Ok(0) => {
                    let e = io::Error::from(io::ErrorKind::WriteZero);
                    return Poll::Ready(Err((self.writer_side, e)));
                }
                Ok(n) => {
                    self.pos += n;
                    self.bytes += n as u64;
                    *progressed = true;
                }
                Err(e) if is_retry(&e) => {}
                Err(e) => return Poll::Ready(Err((self.writer_side, e))),
            }
        }
        if self.leftover.capacity() > 0 {
            // Written out: give the memory back.
            self.leftover = Vec::new();
            self.pos = 0;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
        progressed: &mut bool,
    ) -> Poll<Result<(), Failure>> {
        ready!(self.poll_leftover(cx, dst, progressed))?;
        let mut chunks = 0;
        loop {
            // Drain what is queued. Pending keeps the lease: it holds bytes.
            if let Some(lease) = self.lease.as_mut().filter(|l| l.queued > 0) {
                if let Err(e) = ready!(dst.poll_write_ready(cx)) {
                    return self.fail(self.writer_side, e);
                }
                let out = dst.try_io(Interest::WRITABLE, || {
                    splice_io(&lease.pipe.read, dst, lease.queued)
                });
                match out {
                    // The pipe claims to be empty although bytes were queued.
                    Ok(0) => {
                        let e = io::Error::from(io::ErrorKind::WriteZero);
                        return self.fail(Side::Local, e);
                    }
                    Ok(n) => {
                        lease.queued -= n;
                        self.bytes += n as u64;
                        *progressed = true;
                    }
                    Err(e) if is_retry(&e) => {}
                    Err(e) => return self.fail(self.writer_side, e),
                }
                continue;
            }
            // The pipe, if any, is empty from here on.
            if self.read_eof {
                self.release();
                return match socket2::SockRef::from(dst).shutdown(Shutdown::Write) {
                    Ok(()) => {
                        self.done = true;
                        Poll::Ready(Ok(()))
                    }
                    // The peer is already gone both ways: nothing left to shut.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                        self.done = true;
                        Poll::Ready(Ok(()))
                    }
                    Err(e) => Poll::Ready(Err((self.writer_side, e))),
                };
            }
            if chunks >= CHUNKS_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            chunks += 1;
            match src.poll_read_ready(cx) {
                Poll::Pending => {
                    // The source would block: the session holds no pipe while idle.
                    self.release();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return self.fail(self.reader_side, e),
                Poll::Ready(Ok(())) => {}
            }
            let lease = match self.lease {
                Some(ref mut lease) => lease,
                None => match self.pool.take() {
                    Ok(pipe) => self.lease.insert(Lease { pipe, queued: 0 }),
                    Err(e) => return Poll::Ready(Err((Side::Local, e))),
                },
            };
            let into = src.try_io(Interest::READABLE, || {
                splice_io(src, &lease.pipe.write, CHUNK_BYTES)
            });
            match into {
                Ok(0) => self.read_eof = true,
                Ok(n) => {
                    lease.queued = n;
                    *progressed = true;
                }
                // Readiness was cleared; the next poll_read_ready registers the waker.
                Err(e) if is_retry(&e) => {}
                Err(e) => return self.fail(self.reader_side, e),
            }
        }
    }
}

impl Drop for Direction<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Relays between two plain TCP sockets until both directions end, an error, or `idle`
/// without traffic, exactly like [`pipe::relay`](crate::pipe::relay) but without copying
/// payload through user space. `leftover` (client bytes already read) is sent to the
/// backend first.
pub async fn relay_tcp(
    client: TcpStream,
    backend: TcpStream,
    leftover: Vec<u8>,
    idle: Duration,
) -> Relayed {
    relay_with(&POOL, client, backend, leftover, idle).await
}

async fn relay_with(
    pool: &Pool,
    client: TcpStream,
    backend: TcpStream,
    leftover: Vec<u8>,
    idle: Duration,
) -> Relayed {
    let mut up = Direction::new(pool, leftover, Side::Client, Side::Upstream);
    let mut down = Direction::new(pool, Vec::new(), Side::Upstream, Side::Client);
    let idle = idle.min(MAX_TIMER);
    let mut last_activity = Instant::now();
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);

    let end = std::future::poll_fn(|cx| {
        let mut progressed = false;
        if !up.done {
            if let Poll::Ready(Err((side, error))) =
                up.poll_copy(cx, &client, &backend, &mut progressed)
            {
                return Poll::Ready(End::Error { side, error });
            }
        }
        if !down.done {
            if let Poll::Ready(Err((side, error))) =
                down.poll_copy(cx, &backend, &client, &mut progressed)
            {
                return Poll::Ready(End::Error { side, error });
            }
        }
        if up.done && down.done {
            return Poll::Ready(End::Closed);
        }
        if progressed {
            last_activity = Instant::now();
        }
        // The timer is only re-armed when it fires, not on every chunk.
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
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket};

    const BOUND: Duration = Duration::from_secs(20);
    const LONG: Duration = Duration::from_secs(60);

    /// A connected TCP pair over loopback: (connecting end, accepted end).
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    /// Like [`tcp_pair`], with small kernel buffers so that a writer stalls early.
    async fn small_tcp_pair() -> (TcpStream, TcpStream) {
        let ls = TcpSocket::new_v4().expect("socket");
        ls.set_recv_buffer_size(4096).expect("rcvbuf");
        ls.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let l = ls.listen(8).expect("listen");
        let addr = l.local_addr().expect("addr");
        let cs = TcpSocket::new_v4().expect("socket");
        cs.set_send_buffer_size(4096).expect("sndbuf");
        let (a, b) = tokio::join!(cs.connect(addr), l.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    async fn bounded<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(BOUND, f).await.expect("bounded")
    }

    /// Polls `cond` until it holds, failing after [`BOUND`].
    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + BOUND;
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            tokio::task::yield_now().await;
        }
    }

    fn spawn_relay(
        pool: &Arc<Pool>,
        client: TcpStream,
        backend: TcpStream,
        leftover: &[u8],
        idle: Duration,
    ) -> tokio::task::JoinHandle<Relayed> {
        let pool = Arc::clone(pool);
        let leftover = leftover.to_vec();
        tokio::spawn(async move { relay_with(&pool, client, backend, leftover, idle).await })
    }

    #[tokio::test]
    async fn byte_exact_both_ways_at_once_with_leftover() {
        let pool = Arc::new(Pool::new());
        let (mut client, proxy_c) = tcp_pair().await;
        let (proxy_b, mut backend) = tcp_pair().await;
        let relay = spawn_relay(&pool, proxy_c, proxy_b, b"LEFT", LONG);

        let up = pattern(4_000_000, 1);
        let down = pattern(3_000_000, 7);
        let (up2, down2) = (up.clone(), down.clone());
        let client_task = tokio::spawn(async move {
            let (mut r, mut w) = client.split();
            let write = async {
                w.write_all(&up2).await.expect("write");
                w.shutdown().await.expect("half-close");
            };
            let mut got = Vec::new();
            tokio::join!(write, async {
                r.read_to_end(&mut got).await.expect("read")
            });
            got
        });
        let backend_task = tokio::spawn(async move {
            let (mut r, mut w) = backend.split();
            let write = async {
                w.write_all(&down2).await.expect("write");
                w.shutdown().await.expect("half-close");
            };
            let mut got = Vec::new();
            tokio::join!(write, async {
                r.read_to_end(&mut got).await.expect("read")
            });
            got
        });
        let got_down = bounded(client_task).await.expect("join");
        let got_up = bounded(backend_task).await.expect("join");
        let mut expected = b"LEFT".to_vec();
        expected.extend_from_slice(&up);
        assert!(got_up == expected, "upstream bytes differ");
        assert!(got_down == down, "client bytes differ");

        let r = bounded(relay).await.expect("join");
        assert!(matches!(r.end, End::Closed), "{:?}", r.end);
        assert_eq!(r.to_backend, expected.len() as u64);
        assert_eq!(r.to_client, down.len() as u64);
        assert_eq!(pool.leased(), 0);
        assert!(pool.idle_len() <= 2, "{} idle pipes", pool.idle_len());
    }

    #[tokio::test]
    async fn client_half_close_keeps_backend_direction() {
        let pool = Arc::new(Pool::new());
        let (mut client, proxy_c) = tcp_pair().await;
        let (proxy_b, mut backend) = tcp_pair().await;
        let relay = spawn_relay(&pool, proxy_c, proxy_b, b"LEFT", LONG);

        client.write_all(b"DATA\r\n").await.expect("write");
        client.shutdown().await.expect("client half-close");
        // The backend sees the client's EOF, then can still answer.
        let mut got = Vec::new();
        bounded(backend.read_to_end(&mut got)).await.expect("read");
        assert_eq!(got, b"LEFTDATA\r\n");
        backend.write_all(b"250 ok\r\n").await.expect("write");
        backend.shutdown().await.expect("shutdown");
        let mut answer = Vec::new();
        bounded(client.read_to_end(&mut answer))
            .await
            .expect("read");
        assert_eq!(answer, b"250 ok\r\n");

        let r = bounded(relay).await.expect("join");
        assert!(matches!(r.end, End::Closed), "{:?}", r.end);
        assert_eq!((r.to_backend, r.to_client), (10, 8));
    }

    #[tokio::test]
    async fn backend_half_close_keeps_client_direction() {
        let pool = Arc::new(Pool::new());
        let (mut client, proxy_c) = tcp_pair().await;
        let (proxy_b, mut backend) = tcp_pair().await;
        let relay = spawn_relay(&pool, proxy_c, proxy_b, b"", LONG);

        backend.write_all(b"220 hello\r\n").await.expect("write");
        backend.shutdown().await.expect("backend half-close");
        let mut got = Vec::new();
        bounded(client.read_to_end(&mut got)).await.expect("read");
        assert_eq!(got, b"220 hello\r\n");
        // The client can still talk to the backend after the backend's EOF.
        client.write_all(b"QUIT\r\n").await.expect("write");
        let mut buf = [0u8; 6];
        bounded(backend.read_exact(&mut buf)).await.expect("read");
        assert_eq!(&buf, b"QUIT\r\n");
        client.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        bounded(backend.read_to_end(&mut rest)).await.expect("read");
        assert!(rest.is_empty());

        let r = bounded(relay).await.expect("join");
        assert!(matches!(r.end, End::Closed), "{:?}", r.end);
        assert_eq!((r.to_backend, r.to_client), (6, 11));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_limit_ends_the_relay_and_traffic_resets_it() {
        let pool = Arc::new(Pool::new());
        let (mut client, proxy_c) = tcp_pair().await;
        let (proxy_b, mut backend) = tcp_pair().await;
        let start = Instant::now();
        let relay = spawn_relay(&pool, proxy_c, proxy_b, b"", Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(7)).await;
        client.write_all(b"x").await.expect("write");
        let mut one = [0u8; 1];
        bounded(backend.read_exact(&mut one)).await.expect("read");
        let r = bounded(relay).await.expect("join");
        assert!(matches!(r.end, End::Idle), "{:?}", r.end);
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_secs(17) && elapsed < Duration::from_secs(18),
            "{elapsed:?}"
        );
        assert_eq!((r.to_backend, r.to_client), (1, 0));
        assert_eq!(pool.leased(), 0);
    }

    #[tokio::test]
    async fn client_reset_reports_the_client_side() {
        let pool = Pool::new();
        let (client, proxy_c) = tcp_pair().await;
        let (proxy_b, _backend) = tcp_pair().await;
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(client);
        let r = bounded(relay_with(&pool, proxy_c, proxy_b, Vec::new(), LONG)).await;
        match r.end {
            End::Error { side, .. } => assert_eq!(side, Side::Client),
            other => panic!("expected a client error, got {other:?}"),
        }
        assert_eq!(pool.leased(), 0);
        // The pipe that saw the failed splice was closed, not pooled.
        assert_eq!(pool.idle_len(), 0);
    }

    #[tokio::test]
    async fn backend_reset_with_bytes_in_flight_reports_upstream_and_closes_the_pipe() {
        let pool = Arc::new(Pool::new());
        let (mut client, proxy_c) = tcp_pair().await;
        let (proxy_b, backend) = small_tcp_pair().await;
        let relay = spawn_relay(&pool, proxy_c, proxy_b, b"", LONG);
        // The backend never reads, so the relay ends up holding a full pipe.
        let writer = tokio::spawn(async move {
            let chunk = pattern(64 * 1024, 3);
            while client.write_all(&chunk).await.is_ok() {}
        });
        eventually("the relay holds a pipe", || pool.leased() == 1).await;
        socket2::SockRef::from(&backend)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(backend);
        let r = bounded(relay).await.expect("join");
        match r.end {
            End::Error { side, .. } => assert_eq!(side, Side::Upstream),
            other => panic!("expected an upstream error, got {other:?}"),
        }
        assert!(r.to_backend > 0);
        assert_eq!(pool.leased(), 0);
        assert_eq!(pool.idle_len(), 0, "a pipe with bytes in it was pooled");
        // The relay dropped the client socket, so the writer fails and stops.
        bounded(writer).await.expect("join");
    }

    #[test]
    fn pool_keeps_at_most_max_idle_pipes() {
        let pool = Pool::new();
        let pipes: Vec<Pipe> = (0..MAX_IDLE_PIPES + 8)
            .map(|_| pool.take().expect("pipe"))
            .collect();
        assert_eq!(pool.leased(), MAX_IDLE_PIPES + 8);
        for pipe in pipes {
            pool.give(pipe);
        }
        assert_eq!(pool.leased(), 0);
        assert_eq!(pool.idle_len(), MAX_IDLE_PIPES);
        // Pooled pipes are reused before new ones are made.
        let pipe = pool.take().expect("pipe");
        assert_eq!(pool.idle_len(), MAX_IDLE_PIPES - 1);
        pool.discard(pipe);
        assert_eq!((pool.leased(), pool.idle_len()), (0, MAX_IDLE_PIPES - 1));
    }

    #[tokio::test]
    async fn many_idle_relays_hold_no_pipes() {
        const SESSIONS: usize = 200;
        let pool = Arc::new(Pool::new());
        let mut sessions = Vec::with_capacity(SESSIONS);
        for _ in 0..SESSIONS {
            let (client, proxy_c) = tcp_pair().await;
            let (proxy_b, backend) = tcp_pair().await;
            let relay = spawn_relay(&pool, proxy_c, proxy_b, b"", LONG);
            sessions.push((client, backend, relay));
        }
        // Each session moves a byte each way, so each has leased and returned pipes.
        for (client, backend, _) in &mut sessions {
            client.write_all(b"c").await.expect("write");
            let mut one = [0u8; 1];
            bounded(backend.read_exact(&mut one)).await.expect("read");
            backend.write_all(b"b").await.expect("write");
            bounded(client.read_exact(&mut one)).await.expect("read");
        }
        eventually("idle relays give their pipes back", || pool.leased() == 0).await;
        assert!(pool.idle_len() <= MAX_IDLE_PIPES);
        assert!(sessions.iter().all(|(_, _, relay)| !relay.is_finished()));

        for (mut client, mut backend, relay) in sessions {
            client.shutdown().await.expect("shutdown");
            backend.shutdown().await.expect("shutdown");
            let r = bounded(relay).await.expect("join");
            assert!(matches!(r.end, End::Closed), "{:?}", r.end);
            assert_eq!((r.to_backend, r.to_client), (1, 1));
        }
        assert_eq!(pool.leased(), 0);
        assert!(pool.idle_len() <= MAX_IDLE_PIPES);
    }

    #[tokio::test]
    async fn relay_future_is_small() {
        let (client, proxy_c) = tcp_pair().await;
        let (proxy_b, backend) = tcp_pair().await;
        let fut = relay_tcp(proxy_c, proxy_b, Vec::new(), LONG);
        let size = std::mem::size_of_val(&fut);
        assert!(size < 1024, "relay future is {size} bytes");
        drop((fut, client, backend));
    }

    /// CPU time the calling thread has used.
    fn thread_cpu() -> Duration {
        use nix::sys::resource::{getrusage, UsageWho};
        use nix::sys::time::TimeValLike;
        let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
        let micros = u.user_time().num_microseconds() + u.system_time().num_microseconds();
        Duration::from_micros(micros as u64)
    }

    /// Pushes 1 GiB client → backend through `relay`, run on a thread of its own, and
    /// returns MB/s and the CPU time of that thread.
    async fn throughput<F, Fut>(relay: F) -> (f64, Duration)
    where
        F: FnOnce(TcpStream, TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = Relayed>,
    {
        const TOTAL: usize = 1 << 30;
        const BUF: usize = 256 * 1024;
        let (mut client, proxy_c) = tcp_pair().await;
        let (proxy_b, mut backend) = tcp_pair().await;
        let (proxy_c, proxy_b) = (
            proxy_c.into_std().expect("std"),
            proxy_b.into_std().expect("std"),
        );
        let relay = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let c = TcpStream::from_std(proxy_c).expect("tokio");
                let b = TcpStream::from_std(proxy_b).expect("tokio");
                let before = thread_cpu();
                let r = relay(c, b).await;
                (r, thread_cpu() - before)
            })
        });
        let start = std::time::Instant::now();
        let source = tokio::spawn(async move {
            let chunk = pattern(BUF, 5);
            for _ in 0..TOTAL / BUF {
                client.write_all(&chunk).await.expect("write");
            }
            client.shutdown().await.expect("shutdown");
            client
        });
        let sink = tokio::spawn(async move {
            let mut buf = vec![0u8; BUF];
            let mut total = 0;
            loop {
                match backend.read(&mut buf).await.expect("read") {
                    0 => break total,
                    n => total += n,
                }
            }
        });
        let got = tokio::time::timeout(Duration::from_secs(300), sink)
            .await
            .expect("bounded")
            .expect("join");
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(got, TOTAL);
        drop(bounded(source).await.expect("join"));
        // The relay ends once the sink's socket closes; the sink has returned.
        let (r, cpu) = tokio::task::spawn_blocking(move || relay.join().expect("relay thread"))
            .await
            .expect("join");
        assert_eq!(r.to_backend, TOTAL as u64);
        (TOTAL as f64 / 1e6 / secs, cpu)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "throughput comparison; run with --release -- --ignored --nocapture"]
    async fn throughput_pipe_vs_splice() {
        for _ in 0..3 {
            let (copy, copy_cpu) =
                throughput(|c, b| crate::pipe::relay(c, b, Vec::new(), LONG)).await;
            let (zero, zero_cpu) = throughput(|c, b| relay_tcp(c, b, Vec::new(), LONG)).await;
            println!(
                "1 GiB over loopback: pipe::relay {copy:.0} MB/s, relay CPU {copy_cpu:.2?}; \
                 splice::relay_tcp {zero:.0} MB/s, relay CPU {zero_cpu:.2?}"
            );
        }
    }
}

//! A scripted TCP backend on `127.0.0.1:0` for what a real server cannot do on demand:
//! record exactly which bytes postern sent (PROXY headers included), close mid-dialogue,
//! or hold a half-closed stream.
//!
//! Each accepted connection runs the same script, step by step, on its own thread
//! (or, with [`MockBuilder::then_connection`], connection `i` runs the `i`-th script and
//! later connections the last one).
//! Every byte read from a connection is appended to that connection's record as soon as
//! it arrives, so tests can poll a record while the connection is still open.
//!
//! ```ignore
//! let backend = MockUpstream::new().send(b"220 mock LMTP\r\n").echo().start();
//! // ... drive postern at it ...
//! let got = backend.wait_received(0, 16, Duration::from_secs(5));
//! ```

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A silent peer cannot hold a connection thread longer than this.
const CONN_IDLE_LIMIT: Duration = Duration::from_secs(60);

/// One step of the per-connection script.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Read (and record) until at least this many bytes arrived on the connection
    /// in total, counting earlier steps.
    ReadTotal(usize),
    /// Read (and record) until the record ends with this byte string.
    ReadUntil(Vec<u8>),
    /// Write back everything read, until the peer half-closes; then half-close too.
    Echo,
    /// Read (and record) until the peer half-closes.
    ReadToEof,
    /// Half-close: `shutdown(SHUT_WR)`; reading goes on in later steps.
    ShutdownWrite,
    /// Close the connection now (the script ends here).
    Close,
    /// Read (and record) until one more CRLF-terminated line arrived after what earlier
    /// `ReadLine`, `ReadUntil` and `ReadTotal` steps consumed (or until EOF).
    ReadLine,
}

/// What one accepted connection looked like.
#[derive(Debug, Clone, Default)]
pub struct ConnRecord {
    pub peer: Option<SocketAddr>,
    /// Every byte received, in order.
    pub received: Vec<u8>,
    /// The peer half-closed (read returned 0).
    pub saw_eof: bool,
    /// The script ran to its end (or to `Close`).
    pub finished: bool,
    /// An I/O error that ended the script early.
    pub error: Option<String>,
}

/// Builder for a [`MockUpstream`].
#[derive(Debug, Default, Clone)]
pub struct MockBuilder {
    steps: Vec<Step>,
    v6: bool,
    /// Scripts of earlier connections, set aside by [`MockBuilder::then_connection`].
    earlier: Vec<Vec<Step>>,
    /// Port to bind instead of 0.
    port: u16,
}

impl MockBuilder {
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }
    pub fn send(self, bytes: &[u8]) -> Self {
        self.step(Step::Send(bytes.to_vec()))
    }
    pub fn read_total(self, n: usize) -> Self {
        self.step(Step::ReadTotal(n))
    }
    pub fn read_until(self, marker: &[u8]) -> Self {
        self.step(Step::ReadUntil(marker.to_vec()))
    }
    pub fn echo(self) -> Self {
        self.step(Step::Echo)
    }
    pub fn read_to_eof(self) -> Self {
        self.step(Step::ReadToEof)
    }
    pub fn shutdown_write(self) -> Self {
        self.step(Step::ShutdownWrite)
    }
    pub fn close(self) -> Self {
        self.step(Step::Close)
    }
    pub fn read_line(self) -> Self {
        self.step(Step::ReadLine)
    }

    /// Ends the script of the current connection: the steps added after this call are
    /// the next connection's. Connections past the last script run the last one.
    pub fn then_connection(mut self) -> Self {
        self.earlier.push(std::mem::take(&mut self.steps));
        self
    }

    /// Binds this port instead of a free one (for a backend that must appear at an
    /// address postern already knows).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Listens on `[::1]:0` instead of `127.0.0.1:0`.
    pub fn ipv6(mut self) -> Self {
        self.v6 = true;
        self
    }

    /// Binds, starts the accept thread and returns the running backend.
    pub fn start(self) -> MockUpstream {
        let bind = if self.v6 {
            format!("[::1]:{}", self.port)
        } else {
            format!("127.0.0.1:{}", self.port)
        };
        let listener = TcpListener::bind(&bind)
            .unwrap_or_else(|e| panic!("bind mock upstream on {bind}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("mock addr");
        let shared = Arc::new(Shared::default());
        let mut scripts = self.earlier;
        scripts.push(self.steps);
        let steps = Arc::new(scripts);
        let accept_shared = shared.clone();
        let accept = std::thread::spawn(move || accept_loop(listener, steps, accept_shared));
        MockUpstream {
            addr,
            shared,
            accept: Some(accept),
        }
    }
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    conns: Mutex<Vec<ConnRecord>>,
    /// Clones of the open connections' sockets, by connection index, so `Drop` can
    /// unblock their threads. A finished script takes its clone out, or the connection
    /// would stay open.
    sockets: Mutex<Vec<Option<TcpStream>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A running scripted backend; stops (and closes every connection) on drop.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl MockUpstream {
    /// Starts building a backend; without steps it accepts and closes at once.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> MockBuilder {
        MockBuilder::default()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// A snapshot of connection `i`'s record.
    pub fn record(&self, i: usize) -> Option<ConnRecord> {
        lock(&self.shared.conns).get(i).cloned()
    }

    /// Bytes received so far on connection `i` (empty if it does not exist yet).
    pub fn received(&self, i: usize) -> Vec<u8> {
        self.record(i).map(|r| r.received).unwrap_or_default()
    }

    /// Waits until `n` connections were accepted.
    pub fn wait_connections(&self, n: usize, deadline: Duration) {
        super::eventually(
            deadline,
            &format!("{n} connections to the mock backend"),
            || (self.connections() >= n).then_some(()),
        );
    }

    /// Waits until connection `i` received at least `len` bytes; returns them all.
    pub fn wait_received(&self, i: usize, len: usize, deadline: Duration) -> Vec<u8> {
        super::eventually(
            deadline,
            &format!("{len} bytes on mock connection {i}"),
            || {
                let got = self.received(i);
                (got.len() >= len).then_some(got)
            },
        )
    }

    /// Waits until connection `i` saw the peer's EOF; returns its record.
    pub fn wait_eof(&self, i: usize, deadline: Duration) -> ConnRecord {
        super::eventually(deadline, &format!("EOF on mock connection {i}"), || {
            self.record(i).filter(|r| r.saw_eof)
        })
    }

    /// Waits until connection `i`'s script finished; returns its record.
    pub fn wait_finished(&self, i: usize, deadline: Duration) -> ConnRecord {
        super::eventually(
            deadline,
            &format!("mock connection {i} to finish its script"),
            || self.record(i).filter(|r| r.finished || r.error.is_some()),
        )
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in lock(&self.shared.sockets).iter().flatten() {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let threads: Vec<_> = lock(&self.shared.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking connection thread must not hide the records from the test.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn accept_loop(listener: TcpListener, steps: Arc<Vec<Vec<Step>>>, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(CONN_IDLE_LIMIT));
                let _ = stream.set_write_timeout(Some(CONN_IDLE_LIMIT));
                let idx = {
                    let mut conns = lock(&shared.conns);
                    conns.push(ConnRecord {
                        peer: Some(peer),
                        ..ConnRecord::default()
                    });
                    conns.len() - 1
                };
                lock(&shared.sockets).push(stream.try_clone().ok());
                let steps = steps.clone();
                let conn_shared = shared.clone();
                let t = std::thread::spawn(move || {
                    let script = &steps[idx.min(steps.len() - 1)];
                    run_script(stream, idx, script, &conn_shared)
                });
                lock(&shared.threads).push(t);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn run_script(mut stream: TcpStream, idx: usize, steps: &[Step], shared: &Shared) {
    let result = (|| -> std::io::Result<()> {
        // How far ReadLine (and the steps that read to a known point) consumed.
        let mut consumed = 0usize;
        for step in steps {
            match step {
                Step::Send(bytes) => stream.write_all(bytes)?,
                Step::ReadTotal(n) => {
                    while lock(&shared.conns)[idx].received.len() < *n {
                        if read_some(&mut stream, idx, shared)?.is_none() {
                            break;
                        }
                    }
                    consumed = consumed.max(*n);
                }
                Step::ReadLine => loop {
                    let end = {
                        let conns = lock(&shared.conns);
                        let got = &conns[idx].received;
                        got.get(consumed..)
                            .and_then(|rest| rest.windows(2).position(|w| w == b"\r\n"))
                            .map(|pos| consumed + pos + 2)
                    };
                    if let Some(end) = end {
                        consumed = end;
                        break;
                    }
                    if read_some(&mut stream, idx, shared)?.is_none() {
                        break;
                    }
                },
                Step::ReadUntil(marker) => loop {
                    {
                        let conns = lock(&shared.conns);
                        if conns[idx].received.ends_with(marker) {
                            consumed = conns[idx].received.len();
                            break;
                        }
                    }
                    if read_some(&mut stream, idx, shared)?.is_none() {
                        break;
                    }
                },
                Step::Echo => {
                    while let Some(chunk) = read_some(&mut stream, idx, shared)? {
                        stream.write_all(&chunk)?;
                    }
                    stream.shutdown(Shutdown::Write)?;
                }
                Step::ReadToEof => while read_some(&mut stream, idx, shared)?.is_some() {},
                Step::ShutdownWrite => stream.shutdown(Shutdown::Write)?,
                Step::Close => break,
            }
        }
        Ok(())
    })();
    drop(lock(&shared.sockets)[idx].take());
    drop(stream);
    let mut conns = lock(&shared.conns);
    match result {
        Ok(()) => conns[idx].finished = true,
        Err(e) => conns[idx].error = Some(e.to_string()),
    }
}

/// Reads one chunk and records it; `None` at EOF.
fn read_some(
    stream: &mut TcpStream,
    idx: usize,
    shared: &Shared,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => {
                lock(&shared.conns)[idx].saw_eof = true;
                return Ok(None);
            }
            Ok(n) => {
                lock(&shared.conns)[idx]
                    .received
                    .extend_from_slice(&buf[..n]);
                return Ok(Some(buf[..n].to_vec()));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

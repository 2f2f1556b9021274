//! A tiny SMTP server on `127.0.0.1:0` that accepts every message and records it: the
//! relay host behind Dovecot's submission service in the submission tests.
//!
//! Each connection runs on its own thread with read timeouts. It speaks just enough
//! ESMTP for a relaying MTA: greeting, EHLO/HELO (PIPELINING, 8BITMIME,
//! ENHANCEDSTATUSCODES, SMTPUTF8), MAIL, RCPT, DATA (dot-unstuffed), RSET, NOOP, QUIT.
//! Every finished DATA becomes a [`SinkMessage`]; tests poll
//! [`SmtpSink::wait_messages`] with a deadline.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A silent peer cannot hold a connection thread longer than this.
const CONN_IDLE_LIMIT: Duration = Duration::from_secs(60);
/// Largest message accepted (the tests send small ones).
const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;

/// One message as the sink received it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkMessage {
    /// The client's EHLO/HELO argument.
    pub helo: String,
    /// `MAIL FROM:` argument text, as sent (`<a@b> BODY=8BITMIME`).
    pub mail_from: String,
    /// Each `RCPT TO:` argument text, as sent.
    pub rcpt_to: Vec<String>,
    /// The DATA content, dot-unstuffed, without the final `.` line.
    pub data: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    messages: Mutex<Vec<SinkMessage>>,
    /// Every command line received, across connections, in order.
    commands: Mutex<Vec<String>>,
    sockets: Mutex<Vec<TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A running sink; stops (and closes every connection) on drop.
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl SmtpSink {
    /// Binds `127.0.0.1:0` and starts accepting.
    pub fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind smtp sink");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("sink addr");
        let shared = Arc::new(Shared::default());
        let accept_shared = shared.clone();
        let accept = std::thread::spawn(move || accept_loop(listener, accept_shared));
        SmtpSink {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The messages received so far.
    pub fn messages(&self) -> Vec<SinkMessage> {
        lock(&self.shared.messages).clone()
    }

    /// Every command line received so far (DATA content excluded).
    pub fn commands(&self) -> Vec<String> {
        lock(&self.shared.commands).clone()
    }

    /// Waits until at least `n` messages arrived; returns them all.
    pub fn wait_messages(&self, n: usize, deadline: Duration) -> Vec<SinkMessage> {
        super::eventually(
            deadline,
            &format!("{n} message(s) at the SMTP sink"),
            || {
                let got = self.messages();
                (got.len() >= n).then_some(got)
            },
        )
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in lock(&self.shared.sockets).iter() {
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
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(CONN_IDLE_LIMIT));
                let _ = stream.set_write_timeout(Some(CONN_IDLE_LIMIT));
                if let Ok(clone) = stream.try_clone() {
                    lock(&shared.sockets).push(clone);
                }
                let conn_shared = shared.clone();
                let t = std::thread::spawn(move || {
                    let _ = serve(stream, &conn_shared);
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

/// The text after `prefix` (case-insensitive), if `line` starts with it.
fn after<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let head = line.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| line[prefix.len()..].trim())
}

fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    out.write_all(b"220 sink.test ESMTP postern test sink\r\n")?;
    let mut current = SinkMessage::default();
    let mut helo = String::new();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            return Ok(());
        }
        let line = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        lock(&shared.commands).push(line.clone());
        let verb = line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "LHLO" => {
                helo = line[4..].trim().to_string();
                b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
                  250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n"
            }
            "HELO" => {
                helo = line[4..].trim().to_string();
                b"250 sink.test\r\n"
            }
            "MAIL" => match after(&line, "MAIL FROM:") {
                Some(from) => {
                    current = SinkMessage {
                        helo: helo.clone(),
                        mail_from: from.to_string(),
                        ..SinkMessage::default()
                    };
                    b"250 2.1.0 Ok\r\n"
                }
                None => b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n",
            },
            "RCPT" => match after(&line, "RCPT TO:") {
                Some(to) => {
                    current.rcpt_to.push(to.to_string());
                    b"250 2.1.5 Ok\r\n"
                }
                None => b"501 5.5.4 Syntax: RCPT TO:<address>\r\n",
            },
            "DATA" if current.rcpt_to.is_empty() => b"503 5.5.1 RCPT first\r\n",
            "DATA" => {
                out.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                current.data = read_data(&mut reader)?;
                lock(&shared.messages).push(std::mem::take(&mut current));
                b"250 2.0.0 Ok: queued\r\n"
            }
            "RSET" => {
                current = SinkMessage::default();
                b"250 2.0.0 Ok\r\n"
            }
            "NOOP" => b"250 2.0.0 Ok\r\n",
            "QUIT" => {
                out.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => b"502 5.5.2 Command not recognized\r\n",
        };
        out.write_all(reply)?;
    }
}

/// DATA lines up to the lone `.`, dot-unstuffed (RFC 5321 §4.5.2).
fn read_data(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "EOF inside DATA",
            ));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(data);
        }
        let content = line.strip_prefix(b".").unwrap_or(&line);
        data.extend_from_slice(content);
        if data.len() > MAX_MESSAGE_BYTES {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                "message too large",
            ));
        }
    }
}

//! Accept loops on the listening sockets received from the supervisor, admission
//! against the listener-wide `max_connections`, and the busy reply when it is reached.

use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postern_config::counter::Counter;
use postern_config::model::{Protocol, TlsMode};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::services::{self, Services};

/// Connection counts shared by the accept loops and the IPC client.
pub struct Load {
    pub counter: Counter,
    pub slot: usize,
    pub total: AtomicU64,
}

impl Load {
    /// Live connections of this worker.
    pub fn active(&self) -> u32 {
        self.counter.get(self.slot)
    }
}

/// Uncounts a connection when its task ends, however it ends.
struct Admitted(Arc<Load>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.counter.release(self.0.slot);
    }
}

/// Accepts on `listener` until `stop` turns true, then closes it.
pub async fn accept_loop(
    listener: StdListener,
    svc: Arc<Services>,
    load: Arc<Load>,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register listening socket");
            return;
        }
    };
    let max = svc.listener().max_connections;
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if !load.counter.try_admit(load.slot, max) {
            tracing::warn!(%peer, max_connections = max, "max_connections reached; refusing connection");
            tokio::spawn(refuse_busy(
                stream,
                svc.listener().protocol,
                svc.listener().tls,
            ));
            continue;
        }
        // Counted from here on: every path below releases the slot.
        let guard = Admitted(load.clone());
        load.total.fetch_add(1, Ordering::Relaxed);
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "accepted socket has no local address");
                continue;
            }
        };
        let svc = svc.clone();
        tokio::spawn(async move {
            let _guard = guard;
            services::serve(svc, stream, peer, local).await;
        });
    }
    tracing::debug!("stopped accepting");
}

/// The protocol's "too busy" reply; implicit-TLS listeners just close.
pub fn busy_reply(protocol: Protocol, tls: TlsMode) -> Option<&'static [u8]> {
    if tls == TlsMode::Implicit {
        return None;
    }
    Some(match protocol {
        Protocol::Imap => b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
        Protocol::Pop3 => b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
        Protocol::ManageSieve => b"BYE \"Too many connections, try again later\"\r\n",
        Protocol::Submission | Protocol::Smtp | Protocol::Lmtp => {
            b"421 4.7.0 Too many connections, try again later\r\n"
        }
        Protocol::Http => {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 23\r\nconnection: close\r\n\r\n503 Service Unavailable"
        }
    })
}

async fn refuse_busy(mut stream: TcpStream, protocol: Protocol, tls: TlsMode) {
    if let Some(reply) = busy_reply(protocol, tls) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(reply).await?;
            stream.shutdown().await
        })
        .await;
    }
}

//! The control socket: `postern status` and `postern reload` talk to the supervisor
//! here. Mode 0660, group of the service account; every peer is checked with
//! `SO_PEERCRED` (root or the supervisor's own uid only) and logged.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use postern_config::control::{self, Answer, ControlRequest, ControlResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::main_loop::Event;

/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the control socket at `path`, replacing a stale socket file, with mode 0660
/// and (when running as root) group `gid`.
pub fn bind(
    path: &Path,
    gid: Option<nix::unistd::Gid>,
) -> io::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use: another postern supervisor is running",
                    path.display()
                ),
            ))
        }
        Err(_) if path.exists() => std::fs::remove_file(path)?,
        Err(_) => {}
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(gid))
            .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Accepts control connections until the process exits.
pub async fn serve(listener: UnixListener, own_uid: u32, events: mpsc::UnboundedSender<Event>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let events = events.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, own_uid, events).await {
                tracing::debug!(error = %e, "control request failed");
            }
        });
    }
}

async fn handle(
    mut stream: UnixStream,
    own_uid: u32,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(), control::FrameError> {
    let cred =
        getsockopt(&stream, PeerCredentials).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    let (uid, pid) = (cred.uid(), cred.pid());
    let request = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request"))??;
    let answer = if uid != 0 && uid != own_uid {
        tracing::warn!(
            uid,
            pid,
            "control request rejected: peer is neither root nor the service account"
        );
        Answer::Denied {
            reason: format!("uid {uid} may not use the control socket"),
        }
    } else {
        tracing::info!(uid, pid, command = ?request.command, "control request");
        let (tx, rx) = oneshot::channel();
        if events
            .send(Event::Control {
                command: request.command,
                reply: tx,
            })
            .is_err()
        {
            Answer::Failed {
                reason: "supervisor is shutting down".into(),
            }
        } else {
            rx.await.unwrap_or(Answer::Failed {
                reason: "supervisor is shutting down".into(),
            })
        }
    };
    let response = ControlResponse {
        proto: control::PROTO,
        id: request.id,
        answer,
    };
    stream.write_all(&control::frame(&response)?).await?;
    stream.shutdown().await?;
    Ok(())
}

async fn read_request(stream: &mut UnixStream) -> Result<ControlRequest, control::FrameError> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await?;
    let mut body = vec![0u8; control::body_len(header)?];
    stream.read_exact(&mut body).await?;
    control::decode_body(&body)
}

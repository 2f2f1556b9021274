//! CLI <-> supervisor messages on the control socket.
//!
//! Framing: a little-endian `u32` length, then one [`crate::codec`] message, never
//! longer than [`MAX_FRAME_BYTES`]. Both messages start with `proto`, so a CLI from
//! another package version can tell the operator so instead of failing to decode.

use std::io::{Read, Write};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};

/// Version of the control protocol; bump it on any change below.
pub const PROTO: u32 = 1;
/// Largest control frame either side accepts.
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRequest {
    pub proto: u32,
    pub id: u64,
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Status,
    /// Re-read and validate the config file; on success roll a new generation.
    Reload,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlResponse {
    pub proto: u32,
    pub id: u64,
    pub answer: Answer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    Status(StatusReport),
    /// The reload validated and generation `generation` is being rolled out.
    Reloaded {
        generation: u64,
    },
    /// The request was understood but failed; the running state is unchanged.
    Failed {
        reason: String,
    },
    /// The peer may not make this request.
    Denied {
        reason: String,
    },
}

/// What `postern status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub build_id: String,
    pub supervisor_pid: u32,
    /// Name of the account the supervisor runs as.
    pub user: String,
    pub uptime_secs: u64,
    pub generation: u64,
    /// Seconds since the last successful reload, if any.
    pub reloaded_secs_ago: Option<u64>,
    pub pools: Vec<PoolStatus>,
}

impl StatusReport {
    /// True when every pool is running.
    pub fn all_running(&self) -> bool {
        self.pools.iter().all(|p| p.state == PoolState::Running)
    }
}

/// One listener's pool of workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub listener: String,
    pub protocol: String,
    pub addrs: Vec<SocketAddr>,
    pub state: PoolState,
    /// Workers restarted after an unexpected exit, since the supervisor started.
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// While throttled: seconds until the next attempt.
    pub next_try_secs: Option<u64>,
    pub active: u64,
    pub total: u64,
    pub workers: Vec<WorkerStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolState {
    /// Every worker is ready.
    Running,
    /// Some worker is spawned but not yet ready.
    Starting,
    /// Waiting out a restart backoff.
    Throttled,
    /// A worker reported a configuration-level failure; waits for reload.
    Failed,
    /// Finishing sessions before exit.
    Draining,
}

impl PoolState {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Running => "running",
            PoolState::Starting => "starting",
            PoolState::Throttled => "throttled",
            PoolState::Failed => "failed",
            PoolState::Draining => "draining",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: String,
    pub pid: u32,
    pub generation: u64,
    pub phase: WorkerPhase,
    pub uptime_secs: u64,
    pub active: u32,
    pub total: u64,
}

/// A worker's lifecycle, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerPhase {
    Spawned,
    Ready,
    Draining,
}

/// A control frame that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("control socket i/o")]
    Io(#[from] std::io::Error),
    #[error("control frame of {0} bytes is over the limit")]
    TooLarge(u32),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("peer speaks control protocol {peer}, this build {ours}; run the CLI from the same package version")]
    Version { peer: u32, ours: u32 },
}

/// Encodes `msg` as one length-prefixed frame.
pub fn frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = codec::encode(msg)?;
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge(u32::MAX))?;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Checks a frame header and returns the body length.
pub fn body_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header);
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len as usize)
}

/// Decodes a frame body, reporting a protocol-version mismatch before anything else.
pub fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    // Both messages start with `proto`; read it alone first.
    let peer: u32 = bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| FrameError::Codec(CodecError::Decode(e)))?;
    if peer != PROTO {
        return Err(FrameError::Version { peer, ours: PROTO });
    }
    Ok(codec::decode(body)?)
}

/// Blocking write of one frame (the CLI side).
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    w.write_all(&frame(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Blocking read of one frame (the CLI side).
pub fn read_frame<T: serde::de::DeserializeOwned>(r: &mut impl Read) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header)?;
    let mut body = vec![0u8; body_len(header)?];
    r.read_exact(&mut body)?;
    decode_body(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_versions_are_checked() {
        let req = ControlRequest {
            proto: PROTO,
            id: 9,
            command: Command::Reload,
        };
        let bytes = frame(&req).expect("frame");
        let got: ControlRequest = read_frame(&mut &bytes[..]).expect("read");
        assert_eq!(got, req);

        let old = ControlRequest {
            proto: PROTO + 1,
            id: 1,
            command: Command::Status,
        };
        let bytes = frame(&old).expect("frame");
        let err = read_frame::<ControlRequest>(&mut &bytes[..]).expect_err("version");
        assert!(matches!(err, FrameError::Version { .. }), "{err}");
    }

    #[test]
    fn oversized_header_is_refused_before_reading() {
        let header = (MAX_FRAME_BYTES + 1).to_le_bytes();
        assert!(matches!(body_len(header), Err(FrameError::TooLarge(_))));
    }
}

//! `postern status`: ask the supervisor over the control socket and render the answer.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_config::control::{self, Answer, Command, ControlRequest, StatusReport};

use crate::cli::ControlArgs;

/// Exit codes of `status` and `reload` (LSB "not running" for degraded).
pub const EXIT_DEGRADED: i32 = 3;
pub const EXIT_UNREACHABLE: i32 = 4;

/// Where the control socket is: `--socket`, else the config's, else the default.
pub fn socket_path(args: &ControlArgs) -> PathBuf {
    if let Some(s) = &args.socket {
        return s.clone();
    }
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::cli::DEFAULT_CONFIG));
    match postern_config::load_file(&config) {
        Ok(c) => c.server.control_socket,
        Err(_) => PathBuf::from("/run/postern/control.sock"),
    }
}

/// Sends one request and returns the answer, or a message and exit code.
pub fn request(socket: &Path, command: Command) -> Result<Answer, (String, i32)> {
    let unreachable = |e: &dyn std::fmt::Display| {
        (
            format!("cannot reach the postern supervisor at {}: {e}; is it running? (systemctl status postern)", socket.display()),
            EXIT_UNREACHABLE,
        )
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| unreachable(&e))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let req = ControlRequest {
        proto: control::PROTO,
        id: u64::from(std::process::id()),
        command,
    };
    control::write_frame(&mut stream, &req).map_err(|e| unreachable(&e))?;
    let resp: control::ControlResponse = control::read_frame(&mut stream).map_err(|e| match e {
        control::FrameError::Version { .. } => (e.to_string(), EXIT_UNREACHABLE),
        other => unreachable(&other),
    })?;
    match resp.answer {
        Answer::Denied { reason } => Err((
            format!("refused by the supervisor: {reason}"),
            EXIT_UNREACHABLE,
        )),
        other => Ok(other),
    }
}

pub fn status(args: &crate::cli::StatusArgs) -> i32 {
    let socket = socket_path(&args.control);
    let report = match request(&socket, Command::Status) {
        Ok(Answer::Status(r)) => r,
        Ok(other) => {
            eprintln!("unexpected answer from the supervisor: {other:?}");
            return EXIT_UNREACHABLE;
        }
        Err((msg, code)) => {
            eprintln!("{msg}");
            return code;
        }
    };
    let out = if args.json {
        serde_json::to_string_pretty(&report)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .unwrap_or_default()
    } else {
        render(&report)
    };
    let _ = std::io::stdout().write_all(out.as_bytes());
    if report.all_running() {
        0
    } else {
        EXIT_DEGRADED
    }
}

pub fn reload(args: &ControlArgs) -> i32 {
    let socket = socket_path(args);
    match request(&socket, Command::Reload) {
        Ok(Answer::Reloaded { generation }) => {
            println!("reloaded: configuration generation {generation} is starting");
            0
        }
        Ok(Answer::Failed { reason }) => {
            eprintln!("reload refused, the running configuration stays: {reason}");
            1
        }
        Ok(other) => {
            eprintln!("unexpected answer from the supervisor: {other:?}");
            1
        }
        Err((msg, code)) => {
            eprintln!("{msg}");
            code
        }
    }
}

/// `3d04h`, `3m10s`, `42s`.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// The human table of reference/privsep.md §2.9, one row per worker.
pub fn render(r: &StatusReport) -> String {
    let mut out = format!(
        "postern {} (build {})  supervisor pid {} user {}  up {}  config gen {}{}\n",
        r.version,
        r.build_id,
        r.supervisor_pid,
        r.user,
        human_duration(r.uptime_secs),
        r.generation,
        r.reloaded_secs_ago
            .map(|s| format!(" (reloaded {} ago)", human_duration(s)))
            .unwrap_or_default(),
    );
    let mut rows = vec![[
        "LISTENER",
        "PROTO",
        "LISTEN",
        "PID",
        "STATE",
        "UP",
        "RESTARTS",
        "LAST EXIT",
        "CONNS",
        "TOTAL",
    ]
    .map(String::from)
    .to_vec()];
    for p in &r.pools {
        let listen = p
            .addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let last = p.last_exit.clone().unwrap_or_else(|| "-".into());
        let mut state = p.state.as_str().to_owned();
        if let Some(n) = p.next_try_secs {
            state = format!("{state} (next try {n}s)");
        }
        if p.workers.is_empty() {
            rows.push(vec![
                p.listener.clone(),
                p.protocol.clone(),
                listen.clone(),
                "-".into(),
                state.clone(),
                "-".into(),
                p.restarts.to_string(),
                last.clone(),
                p.active.to_string(),
                p.total.to_string(),
            ]);
        }
        for w in &p.workers {
            let wstate = if w.phase == postern_config::control::WorkerPhase::Ready {
                state.clone()
            } else {
                format!("{:?}", w.phase).to_lowercase()
            };
            rows.push(vec![
                w.id.clone(),
                p.protocol.clone(),
                listen.clone(),
                w.pid.to_string(),
                wstate,
                human_duration(w.uptime_secs),
                p.restarts.to_string(),
                last.clone(),
                w.active.to_string(),
                w.total.to_string(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_uptime() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(190), "3m10s");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d04h");
    }
}

//! Mode B: listening sockets from systemd socket activation (`LISTEN_FDS`,
//! `LISTEN_FDNAMES`), matched to listeners by name, served without any bind of our
//! own. Uses systemd's own activator, `systemd-socket-activate`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::mock_upstream::MockUpstream;
use support::proxy::TestConfig;

struct Activated(std::process::Child);

impl Drop for Activated {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if support::poll_until(Duration::from_secs(5), || self.0.try_wait().ok().flatten())
            .is_none()
        {
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

#[test]
fn listeners_come_from_systemd_by_name() {
    if !support::have_program("systemd-socket-activate") {
        support::skip(
            "listeners_come_from_systemd_by_name",
            "systemd-socket-activate is not installed",
        );
        return;
    }
    let backend = MockUpstream::new().echo().start();
    let dir = support::shared_tempdir();
    let port = support::free_port();
    // The config's own bind address differs: the systemd socket must win.
    let cfg = TestConfig::new(dir.path())
        .listener(
            "lmtp",
            "protocol = \"lmtp\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"",
        )
        .passthrough_destination("backend", backend.addr().port(), false);
    let socket = cfg.control_socket();
    let config_path = dir.path().join("postern.toml");
    support::write_file(&config_path, cfg.render());
    if support::is_root() {
        support::test_user();
    }
    let log = std::fs::File::create(dir.path().join("postern.log")).expect("log");
    let child = Command::new("systemd-socket-activate")
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg("--fdname=lmtp")
        .arg(support::postern_bin())
        .args(["run", "--config"])
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("systemd-socket-activate");
    let _guard = Activated(child);

    // The activator starts postern on the first connection; that connection waits in
    // the backlog and is then served by a worker.
    let mut s = support::eventually(
        Duration::from_secs(10),
        "the activated socket to accept",
        || TcpStream::connect(("127.0.0.1", port)).ok(),
    );
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"via systemd\r\n").expect("write");
    let mut got = [0u8; 13];
    s.read_exact(&mut got).expect("echo");
    assert_eq!(&got, b"via systemd\r\n");

    let out = Command::new(support::postern_bin())
        .args(["status", "--json", "--socket"])
        .arg(&socket)
        .output()
        .expect("status");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        json["pools"][0]["addrs"][0],
        format!("127.0.0.1:{port}"),
        "{json}"
    );
    // A reload cannot move an activated listener.
    let moved = std::fs::read_to_string(&config_path)
        .expect("cfg")
        .replace("127.0.0.1:0", "127.0.0.1:1");
    support::write_file(&config_path, moved);
    let out = Command::new(support::postern_bin())
        .args(["reload", "--socket"])
        .arg(&socket)
        .output()
        .expect("reload");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("socket activation"));
}

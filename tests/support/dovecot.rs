//! A real Dovecot (Debian's packages) with a private configuration, as a backend.
//!
//! [`Dovecot::start`] writes a self-contained `dovecot.conf` into a temporary
//! directory (its own `base_dir`, `state_dir`, log file, passwd-file users with
//! `{PLAIN}` passwords, maildirs under the directory), picks free loopback ports for
//! every service asked for, runs `dovecot -F -c <conf>` as a child and waits until each
//! port answers. Dropping it sends SIGTERM to that child's PID and waits for it.
//! With a certificate ([`DovecotOpts::tls`]) the plain ports offer STARTTLS, and
//! [`DovecotOpts::imaps`] adds an implicit-TLS IMAP port.
//!
//! It never touches the system Dovecot: no file under `/etc/dovecot` is read and no
//! default port is used. It needs root (Dovecot switches to the mail account itself);
//! without root, or without Dovecot installed, `start` prints a skip line and returns
//! `None`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::certs::Leaf;

/// Time Dovecot gets to open its ports.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Fresh port picks when Dovecot finds one taken.
const START_ATTEMPTS: u32 = 3;
/// Time Dovecot gets to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Where `dovecot` lives on Debian.
pub const DOVECOT_BIN: &str = "/usr/sbin/dovecot";

/// What to run.
#[derive(Debug, Clone)]
pub struct DovecotOpts {
    /// `(user, password)`; users are full addresses or bare names, as clients log in.
    pub users: Vec<(String, String)>,
    pub imap: bool,
    pub pop3: bool,
    pub managesieve: bool,
    /// Submission, relaying to this SMTP address (Dovecot refuses submission without one).
    pub submission_relay: Option<SocketAddr>,
    /// Accept a PROXY header (`haproxy = yes`) on every listener, from these networks.
    pub haproxy_trusted: Option<String>,
    /// Enable TLS with this certificate (STARTTLS on the plain ports).
    pub tls: Option<Leaf>,
    /// Also an implicit-TLS IMAP listener (`imaps`); needs `tls`.
    pub imaps: bool,
    /// Extra lines appended to `dovecot.conf`.
    pub extra_conf: String,
}

impl Default for DovecotOpts {
    fn default() -> Self {
        DovecotOpts {
            users: vec![("alice@example.org".into(), "alice-secret".into())],
            imap: false,
            pop3: false,
            managesieve: false,
            submission_relay: None,
            haproxy_trusted: None,
            tls: None,
            imaps: false,
            extra_conf: String::new(),
        }
    }
}

impl DovecotOpts {
    pub fn with_user(mut self, user: &str, password: &str) -> Self {
        self.users.push((user.into(), password.into()));
        self
    }
    pub fn imap(mut self) -> Self {
        self.imap = true;
        self
    }
    pub fn pop3(mut self) -> Self {
        self.pop3 = true;
        self
    }
    pub fn managesieve(mut self) -> Self {
        self.managesieve = true;
        self
    }
    pub fn haproxy(mut self, trusted: &str) -> Self {
        self.haproxy_trusted = Some(trusted.into());
        self
    }
    /// TLS with `leaf`: STARTTLS on the plain ports.
    pub fn tls(mut self, leaf: Leaf) -> Self {
        self.tls = Some(leaf);
        self
    }
    /// An implicit-TLS IMAP port as well ([`Dovecot::imaps`]); set [`DovecotOpts::tls`] too.
    pub fn imaps(mut self) -> Self {
        self.imaps = true;
        self
    }
    /// Appends `lines` to `dovecot.conf`.
    pub fn extra(mut self, lines: &str) -> Self {
        self.extra_conf.push_str(lines);
        if !self.extra_conf.ends_with('\n') {
            self.extra_conf.push('\n');
        }
        self
    }
}

/// A running private Dovecot.
pub struct Dovecot {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub conf: PathBuf,
    pub lmtp: SocketAddr,
    pub imap: Option<SocketAddr>,
    /// The implicit-TLS IMAP port, when [`DovecotOpts::imaps`] asked for one.
    pub imaps: Option<SocketAddr>,
    pub pop3: Option<SocketAddr>,
    pub managesieve: Option<SocketAddr>,
    pub submission: Option<SocketAddr>,
}

impl Dovecot {
    /// Starts Dovecot, or prints why it cannot and returns `None`.
    pub fn start(test: &str, opts: DovecotOpts) -> Option<Dovecot> {
        if !super::is_root() {
            super::skip(test, "a private Dovecot needs root");
            return None;
        }
        assert!(
            !opts.imaps || opts.tls.is_some(),
            "DovecotOpts::imaps needs a certificate (DovecotOpts::tls)"
        );
        if !Path::new(DOVECOT_BIN).exists() {
            super::skip(
                test,
                "dovecot is not installed (run scripts/install-deps.sh)",
            );
            return None;
        }
        let (mail_uid, mail_gid) = super::account_ids(super::mail_user()).expect("mail account");
        let dir = super::shared_tempdir();
        let root = dir.path().to_path_buf();
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir(root.join(sub)).expect("mkdir");
        }
        super::chmod(&root.join("state"), 0o700);
        nix::unistd::chown(
            &root.join("mail"),
            Some(nix::unistd::Uid::from_raw(mail_uid)),
            Some(nix::unistd::Gid::from_raw(mail_gid)),
        )
        .expect("chown mail dir");

        let passwd = root.join("passwd");
        let mut users = String::new();
        for (user, password) in &opts.users {
            assert!(
                !user.contains(':') && !password.contains(':') && !password.contains('\n'),
                "passwd-file fields cannot hold ':' or newlines"
            );
            // user:password:uid:gid:gecos:home:shell:extra
            let _ = writeln!(
                users,
                "{user}:{{PLAIN}}{password}:{mail_uid}:{mail_gid}::{}::",
                root.join("mail").join(user).display()
            );
        }
        super::write_file(&passwd, users);

        // Ports are picked free, then bound by Dovecot a moment later; another test may
        // take one in between. Dovecot then exits with EADDRINUSE: pick again.
        let mut dir = Some(dir);
        for attempt in 1..=START_ATTEMPTS {
            let lmtp = loopback(super::free_port());
            let imap = opts.imap.then(|| loopback(super::free_port()));
            let imaps = opts.imaps.then(|| loopback(super::free_port()));
            let pop3 = opts.pop3.then(|| loopback(super::free_port()));
            let managesieve = opts.managesieve.then(|| loopback(super::free_port()));
            let submission = opts.submission_relay.map(|_| loopback(super::free_port()));

            let conf = root.join("dovecot.conf");
            let text = render_conf(
                &root,
                &opts,
                mail_uid,
                mail_gid,
                lmtp,
                imap,
                imaps,
                pop3,
                managesieve,
                submission,
            );
            super::write_file(&conf, text);
            let _ = std::fs::remove_file(root.join("dovecot.log"));

            let stderr = std::fs::File::create(root.join("dovecot.stderr")).expect("stderr file");
            let child = Command::new(DOVECOT_BIN)
                .arg("-F")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(stderr.try_clone().expect("dup"))
                .stderr(stderr)
                .spawn()
                .expect("spawn dovecot");
            let mut d = Dovecot {
                dir: dir.take().expect("tempdir"),
                child: Some(child),
                conf,
                lmtp,
                imap,
                imaps,
                pop3,
                managesieve,
                submission,
            };

            let ports: Vec<SocketAddr> = [Some(lmtp), imap, imaps, pop3, managesieve, submission]
                .into_iter()
                .flatten()
                .collect();
            let mut exited = None;
            let ready = super::poll_until(START_DEADLINE, || {
                if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    exited = Some(status);
                    return Some(false);
                }
                ports
                    .iter()
                    .all(|a| {
                        std::net::TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok()
                    })
                    .then_some(true)
            });
            match (ready, exited) {
                (Some(true), _) => return Some(d),
                (_, Some(status)) => {
                    let log = d.log();
                    if attempt < START_ATTEMPTS && log.contains("Address already in use") {
                        d.child = None;
                        dir = Some(std::mem::replace(
                            &mut d.dir,
                            tempfile::tempdir().expect("tempdir"),
                        ));
                        continue;
                    }
                    panic!("dovecot exited during startup ({status}):\n{log}");
                }
                _ => panic!(
                    "dovecot did not open its ports within {START_DEADLINE:?}:\n{}",
                    d.log()
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PID of the Dovecot master process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The maildir of `user`.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    /// Everything Dovecot logged (its log file, then its stderr).
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("dovecot.log"), read("dovecot.stderr"))
    }

    /// Waits until Dovecot's log contains `needle`; returns the whole log.
    pub fn wait_log(&self, needle: &str, deadline: Duration) -> String {
        super::wait_text("dovecot", needle, deadline, || self.log())
    }

    /// Messages delivered to `user`'s INBOX (`new/` and `cur/`), oldest name first.
    pub fn messages(&self, user: &str) -> Vec<Vec<u8>> {
        let base = self.maildir(user);
        let mut files: Vec<PathBuf> = ["new", "cur"]
            .iter()
            .filter_map(|d| std::fs::read_dir(base.join(d)).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
    }

    /// Waits until `user` has at least `count` messages; returns them all.
    pub fn wait_for_messages(&self, user: &str, count: usize, deadline: Duration) -> Vec<Vec<u8>> {
        match super::poll_until(deadline, || {
            let msgs = self.messages(user);
            (msgs.len() >= count).then_some(msgs)
        }) {
            Some(m) => m,
            None => panic!(
                "{user} did not get {count} message(s) within {deadline:?}; dovecot log:\n{}",
                self.log()
            ),
        }
    }

    /// Delivers [`super::sample_message`]`(tag)` to `user`'s INBOX over LMTP (into an
    /// empty mailbox; the LMTP client's scratch files go in `scratch`) and returns it as
    /// Dovecot stored it: its trace headers, then the message unchanged.
    pub fn deliver_sample(&self, user: &str, tag: &str, scratch: &Path) -> Vec<u8> {
        let msg = super::sample_message(tag);
        super::client::lmtp_deliver(self.lmtp, "bob@example.net", &[user], &msg, scratch)
            .unwrap_or_else(|e| panic!("{e}\ndovecot log:\n{}", self.log()));
        let stored = self
            .wait_for_messages(user, 1, super::proxy::READY_DEADLINE)
            .remove(0);
        assert!(stored.ends_with(&msg), "Dovecot stored something else");
        stored
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let exited = super::poll_until(STOP_DEADLINE, || child.try_wait().ok().flatten());
        if exited.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- dovecot log ({}) ----\n{}",
                self.conf.display(),
                self.log()
            );
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[allow(clippy::too_many_arguments)]
fn render_conf(
    root: &Path,
    opts: &DovecotOpts,
    mail_uid: u32,
    mail_gid: u32,
    lmtp: SocketAddr,
    imap: Option<SocketAddr>,
    imaps: Option<SocketAddr>,
    pop3: Option<SocketAddr>,
    managesieve: Option<SocketAddr>,
    submission: Option<SocketAddr>,
) -> String {
    let r = root.display();
    let mut protocols = vec!["lmtp"];
    if imap.is_some() || imaps.is_some() {
        protocols.push("imap");
    }
    if pop3.is_some() {
        protocols.push("pop3");
    }
    if managesieve.is_some() {
        protocols.push("sieve");
    }
    if submission.is_some() {
        protocols.push("submission");
    }
    let haproxy = if opts.haproxy_trusted.is_some() {
        "\n    haproxy = yes"
    } else {
        ""
    };
    let instance = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut c = String::new();
    let _ = write!(
        c,
        r#"# Private Dovecot for one postern test; nothing here is shared with the system one.
instance_name = {instance}
protocols = {protocols}
listen = 127.0.0.1
base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
info_log_path = {r}/dovecot.log
debug_log_path = {r}/dovecot.log
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = {mail_uid}
last_valid_uid = 0
first_valid_gid = {mail_gid}
mail_uid = {mail_uid}
mail_gid = {mail_gid}
mail_location = maildir:{r}/mail/%u
# Keep the CRLF line ends a client sent, so a stored message can be compared byte for byte.
mail_save_crlf = yes
mail_fsync = never
auth_mechanisms = plain login
disable_plaintext_auth = no
login_trusted_networks =
shutdown_clients = yes
postmaster_address = postmaster@example.org
hostname = dovecot.test
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {r}/passwd
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}{haproxy}
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {imap_port}{haproxy}
  }}
  inet_listener imaps {{
    port = {imaps_port}{imaps_ssl}{haproxy}
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3_port}{haproxy}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service managesieve-login {{
  inet_listener sieve {{
    port = {sieve_port}{haproxy}
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = {submission_port}{haproxy}
  }}
}}
"#,
        protocols = protocols.join(" "),
        lmtp_port = lmtp.port(),
        imap_port = imap.map_or(0, |a| a.port()),
        imaps_port = imaps.map_or(0, |a| a.port()),
        imaps_ssl = if imaps.is_some() {
            "\n    ssl = yes"
        } else {
            ""
        },
        pop3_port = pop3.map_or(0, |a| a.port()),
        sieve_port = managesieve.map_or(0, |a| a.port()),
        submission_port = submission.map_or(0, |a| a.port()),
    );
    if let Some(trusted) = &opts.haproxy_trusted {
        let _ = writeln!(c, "haproxy_trusted_networks = {trusted}");
    }
    if let Some(relay) = opts.submission_relay {
        let _ = writeln!(
            c,
            "submission_relay_host = {}\nsubmission_relay_port = {}\nsubmission_relay_trusted = yes",
            relay.ip(),
            relay.port()
        );
    }
    match &opts.tls {
        Some(leaf) => {
            let _ = writeln!(
                c,
                "ssl = yes\nssl_cert = <{}\nssl_key = <{}",
                leaf.chain.display(),
                leaf.key.display()
            );
        }
        None => c.push_str("ssl = no\n"),
    }
    if managesieve.is_some() {
        c.push_str("plugin {\n  sieve = file:~/sieve;active=~/.dovecot.sieve\n}\n");
    }
    c.push_str(&opts.extra_conf);
    c
}

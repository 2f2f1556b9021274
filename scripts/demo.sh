#!/usr/bin/env bash
# postern demo: a real Dovecot backend on loopback, postern in front of it, shown working.
#
#   sudo scripts/demo.sh
#
# 1. installs the dependencies (scripts/install-deps.sh) and builds postern (release);
# 2. starts a private Dovecot (LMTP and IMAP on free loopback ports, its own config and
#    maildirs in a temporary directory; the system Dovecot is not used or touched);
# 3. starts `postern run` as root: it binds, drops to the postern-test account, and
#    serves an LMTP pass-through listener in front of Dovecot; shows `postern status`;
# 4. delivers a message through postern with Python's smtplib.LMTP, shows the file
#    Dovecot wrote into the maildir, and reads it back over IMAP;
# 5. stops everything it started (by PID) and removes the directory
#    (KEEP=1 keeps it, and prints where).
#
# Each step is a function; main() at the bottom lists them, so a new protocol is one
# more function and one more line there.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)

if [[ $(id -u) -ne 0 ]]; then
    echo "demo: run as root (it installs packages, binds, and drops privileges): sudo $0" >&2
    exit 1
fi

SERVICE_USER=postern-test
MAIL_USER=postern-mail
MAIL_ADDR=alice@example.org
MAIL_PASS=alice-secret
PIDS=()
WORK=""

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
note() { printf '    %s\n' "$*"; }

cleanup() {
    local rc=$?
    local i pid
    # Stop in reverse start order, each by its PID: SIGTERM, then SIGKILL after 10 s.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "$WORK" ]]; then
        if [[ "${KEEP:-0}" == 1 || $rc -ne 0 ]]; then
            echo "demo: files kept in $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND every 0.1 s until it succeeds.
wait_for() {
    local what=$1 secs=$2
    shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= end)); then
            echo "demo: timed out after ${secs}s waiting for $what" >&2
            return 1
        fi
        sleep 0.1
    done
}

port_open() { python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1"; }

install_and_build() {
    step "Installing dependencies (scripts/install-deps.sh)"
    scripts/install-deps.sh
    if ! command -v cargo >/dev/null && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
        export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    fi
    step "Building postern (cargo build --release)"
    local locked=()
    [[ -f Cargo.lock ]] && locked=(--locked)
    cargo build --release "${locked[@]}" --bin postern
    POSTERN="${CARGO_TARGET_DIR:-$REPO/target}/release/postern"
    note "binary: $POSTERN"
}

make_workdir() {
    WORK=$(mktemp -d /tmp/postern-demo.XXXXXX)
    # postern re-reads its config as $SERVICE_USER after dropping root.
    chmod 0755 "$WORK"
    mkdir -p "$WORK/dovecot/run" "$WORK/dovecot/state" "$WORK/mail" "$WORK/postern"
    chown "$MAIL_USER:$MAIL_USER" "$WORK/mail"
    note "working directory: $WORK"
}

start_dovecot() {
    step "Starting a private Dovecot (LMTP + IMAP on free loopback ports)"
    DOVECOT_LMTP_PORT=$(free_port)
    DOVECOT_IMAP_PORT=$(free_port)
    local uid gid d=$WORK/dovecot
    uid=$(id -u "$MAIL_USER")
    gid=$(id -g "$MAIL_USER")
    printf '%s:{PLAIN}%s:%s:%s::%s::\n' "$MAIL_ADDR" "$MAIL_PASS" "$uid" "$gid" "$WORK/mail/$MAIL_ADDR" >"$d/passwd"
    cat >"$d/dovecot.conf" <<EOF
# private Dovecot for the postern demo
instance_name = postern-demo
protocols = lmtp imap
listen = 127.0.0.1
base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = $uid
last_valid_uid = 0
mail_uid = $uid
mail_gid = $gid
mail_location = maildir:$WORK/mail/%u
auth_mechanisms = plain
disable_plaintext_auth = no
ssl = no
postmaster_address = postmaster@example.org
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $d/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%u $d/passwd
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $DOVECOT_LMTP_PORT
  }
}
service imap-login {
  inet_listener imap {
    port = $DOVECOT_IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
EOF
    dovecot -F -c "$d/dovecot.conf" >"$d/stderr.log" 2>&1 &
    PIDS+=($!)
    wait_for "Dovecot LMTP on port $DOVECOT_LMTP_PORT" 30 port_open "$DOVECOT_LMTP_PORT"
    wait_for "Dovecot IMAP on port $DOVECOT_IMAP_PORT" 30 port_open "$DOVECOT_IMAP_PORT"
    note "Dovecot (pid ${PIDS[-1]}): LMTP 127.0.0.1:$DOVECOT_LMTP_PORT, IMAP 127.0.0.1:$DOVECOT_IMAP_PORT, user $MAIL_ADDR"
}

start_postern() {
    step "Starting postern in front of it"
    local p=$WORK/postern
    : >"$p/mappings.txt"
    cat >"$p/postern.toml" <<EOF
[server]
user = "$SERVICE_USER"
group = "$SERVICE_USER"
workers = 2
control_socket = "$p/control.sock"
shutdown_grace = "10s"

[sandbox]
seccomp = "enforce"

# LMTP pass-through: bytes relayed unchanged to the destination's lmtp leg.
[listener.lmtp]
protocol = "lmtp"
bind = ["127.0.0.1:0"]
tls = "plain"

[destination.dovecot]
host = "127.0.0.1"
proxy_protocol = false

[destination.dovecot.protocol.lmtp]
port = $DOVECOT_LMTP_PORT
tls = "plain"

[destination.dovecot.protocol.smtp]
port = $DOVECOT_LMTP_PORT
tls = "plain"

[routing]
default_destination = "dovecot"
smtp_passthrough_destination = "dovecot"

[mapping]
source = "file"

[mapping.file]
path = "$p/mappings.txt"
EOF
    chmod 0755 "$p"
    chmod 0644 "$p/postern.toml" "$p/mappings.txt"
    note "config: $p/postern.toml"
    "$POSTERN" check-config "$p/postern.toml"
    POSTERN_LOG=${POSTERN_LOG:-info} "$POSTERN" run --config "$p/postern.toml" 2>"$p/postern.log" &
    PIDS+=($!)
    SOCK=$p/control.sock
    if ! wait_for "every postern pool to be running" 30 "$POSTERN" status --socket "$SOCK"; then
        cat "$p/postern.log" >&2
        return 1
    fi
    "$POSTERN" status --socket "$SOCK"
    POSTERN_LMTP=$("$POSTERN" status --json --socket "$SOCK" |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print(next(p["addrs"][0] for p in r["pools"] if p["listener"]=="lmtp"))')
    local sup=${PIDS[-1]}
    note "supervisor pid $sup runs as: $(ps -o user= -p "$sup")"
    note "its processes: $(ps -o pid=,user=,args= --ppid "$sup" | sed 's/^ *//' | paste -sd';' -)"
    note "postern LMTP listener: $POSTERN_LMTP"
}

deliver_lmtp() {
    step "Delivering a message through postern with Python's smtplib.LMTP"
    local host=${POSTERN_LMTP%:*} port=${POSTERN_LMTP##*:}
    python3 - "$host" "$port" "$MAIL_ADDR" <<'EOF'
import smtplib, sys, time
host, port, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
msg = (
    "From: Bob <bob@example.net>\r\n"
    f"To: Alice <{rcpt}>\r\n"
    "Subject: Hello through postern\r\n"
    f"Message-ID: <demo-{int(time.time())}@example.net>\r\n"
    "\r\n"
    "This message went client -> postern (LMTP pass-through) -> Dovecot LMTP.\r\n"
)
with smtplib.LMTP(host, port, timeout=20) as c:
    c.set_debuglevel(1)
    refused = c.sendmail("bob@example.net", [rcpt], msg.encode())
if refused:
    sys.exit(f"refused: {refused}")
EOF
}

show_maildir() {
    step "The message as Dovecot stored it"
    local new=$WORK/mail/$MAIL_ADDR/new file=""
    wait_for "the message in $new" 20 bash -c "ls -A '$new' | grep -q ."
    file=$(ls -1 "$new" | head -n1)
    note "$new/$file:"
    sed 's/^/    | /' "$new/$file"
}

read_back_imap() {
    step "Reading it back over IMAP (directly from Dovecot)"
    python3 - "$DOVECOT_IMAP_PORT" "$MAIL_ADDR" "$MAIL_PASS" <<'EOF'
import imaplib, sys
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with imaplib.IMAP4("127.0.0.1", port, timeout=20) as m:
    m.login(user, password)
    m.select("INBOX")
    _, data = m.search(None, "ALL")
    ids = data[0].split()
    _, msg = m.fetch(ids[-1], "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
    print(f"    INBOX holds {len(ids)} message(s); newest:")
    for line in msg[0][1].decode().strip().splitlines():
        print("    | " + line)
    m.logout()
EOF
}

stop_postern() {
    step "Stopping postern (SIGTERM: drain, then exit)"
    # postern was started after Dovecot, so it is the last PID.
    local sup=${PIDS[-1]} rc=0
    kill -TERM "$sup"
    wait "$sup" || rc=$?
    unset 'PIDS[-1]'
    note "postern exited with status $rc"
    note "its log:"
    sed 's/^/    | /' "$WORK/postern/postern.log" | tail -n 20
}

main() {
    install_and_build
    make_workdir
    start_dovecot
    start_postern
    deliver_lmtp
    show_maildir
    read_back_imap
    stop_postern
    step "Done"
}

main "$@"

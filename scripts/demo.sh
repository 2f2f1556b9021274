#!/usr/bin/env bash
# postern demo: a real Dovecot backend on loopback, postern in front of it, shown working.
#
#   sudo scripts/demo.sh
#
# 1. installs the dependencies (scripts/install-deps.sh) and builds postern (release);
# 2. makes a throwaway self-signed certificate with openssl in a temporary directory;
# 3. starts a private Dovecot (LMTP and plain IMAP on free loopback ports, its own
#    config and maildirs in that directory; the system Dovecot is not used or touched);
# 4. starts `postern run` as root: it binds, drops to the postern-test account, and
#    serves an LMTP pass-through listener and two IMAP listeners (STARTTLS and implicit
#    TLS, with that certificate) in front of Dovecot; shows `postern status`;
# 5. delivers a message through postern with Python's smtplib.LMTP and shows the file
#    Dovecot wrote into the maildir;
# 6. logs in to Dovecot *through postern* over IMAP and reads that message back, once
#    per client-side TLS mode: curl (its dialogue) and Python's imaplib (greeting, login
#    reply, Subject) on the STARTTLS listener, then the same on the implicit-TLS one;
#    shows postern's `session closed` lines and `postern status`;
# 7. stops everything it started (by PID) and removes the directory
#    (KEEP=1 keeps it, and prints where; a failed run keeps it too).
#
# It exits 0 when all of that worked, and non-zero with a `demo: FAILED` message (and
# the tails of postern's and Dovecot's logs) otherwise. Every wait has a deadline.
#
# Each step is a function; main() at the bottom lists them, so a new protocol is one
# more function and one more line there.
set -eEuo pipefail

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
fail() { echo "demo: FAILED: $*" >&2; exit 1; }

# tail_log NAME FILE: the end of a log, for a failed run.
tail_log() {
    [[ -s $2 ]] || return 0
    echo "demo: last lines of $1 ($2):" >&2
    tail -n 25 "$2" | sed 's/^/    | /' >&2
}

cleanup() {
    local rc=$?
    local i pid
    trap - ERR
    if [[ $rc -ne 0 && -n "$WORK" ]]; then
        echo "demo: FAILED (exit status $rc)" >&2
        tail_log "postern's log" "$WORK/postern/postern.log"
        tail_log "Dovecot's log" "$WORK/dovecot/dovecot.log"
        tail_log "Dovecot's stderr" "$WORK/dovecot/stderr.log"
    fi
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
# Names the command that failed (a function's `return` needs no name: it said why).
on_err() { [[ $2 == return* ]] || echo "demo: FAILED: line $1: $2" >&2; }
trap 'on_err "$LINENO" "$BASH_COMMAND"' ERR

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

# bounded SECONDS DESCRIPTION COMMAND...: runs COMMAND, killed after SECONDS.
bounded() {
    local secs=$1 what=$2 rc=0
    shift 2
    timeout --kill-after=5 "$secs" "$@" || rc=$?
    if ((rc == 124 || rc == 137)); then
        echo "demo: $what did not finish within ${secs}s" >&2
    elif ((rc != 0)); then
        echo "demo: $what failed (exit status $rc)" >&2
    fi
    return "$rc"
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
    mkdir -p "$WORK/dovecot/run" "$WORK/dovecot/state" "$WORK/mail" "$WORK/postern" "$WORK/tls"
    chown "$MAIL_USER:$MAIL_USER" "$WORK/mail"
    note "working directory: $WORK"
}

make_certificate() {
    step "A throwaway self-signed certificate for postern's TLS listeners (openssl)"
    local t=$WORK/tls
    CERT=$t/cert.pem
    KEY=$t/key.pem
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj "/CN=postern demo" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$KEY" -out "$CERT" 2>"$t/openssl.log" ||
        fail "openssl could not make the certificate: $(cat "$t/openssl.log")"
    # The supervisor reads the key as root, before it drops privileges.
    chmod 0600 "$KEY"
    chmod 0644 "$CERT"
    note "$CERT: $(openssl x509 -in "$CERT" -noout -subject -nameopt oneline |
        sed 's/^subject= *//'), $(openssl x509 -in "$CERT" -noout -ext subjectAltName |
        tail -n +2 | sed 's/^ *//'), valid one day; the clients below take it as their CA file"
}

start_dovecot() {
    step "Starting a private Dovecot (LMTP + plain IMAP on free loopback ports)"
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
    note "Dovecot (pid ${PIDS[-1]}): LMTP 127.0.0.1:$DOVECOT_LMTP_PORT, IMAP 127.0.0.1:$DOVECOT_IMAP_PORT (no TLS), user $MAIL_ADDR"
}

# pool_addr LISTENER: the address postern actually bound for that listener.
pool_addr() {
    "$POSTERN" status --json --socket "$SOCK" |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print(next(p["addrs"][0] for p in r["pools"] if p["listener"]==sys.argv[1]))' "$1"
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

# The certificate of the TLS listeners (the only one, so every client gets it).
[tls.certificate.demo]
cert = "$CERT"
key = "$KEY"

# LMTP pass-through: bytes relayed unchanged to the destination's lmtp leg.
[listener.lmtp]
protocol = "lmtp"
bind = ["127.0.0.1:0"]
tls = "plain"

# IMAP: postern answers the dialogue up to the login, then replays it to Dovecot.
[listener.imap]
protocol = "imap"
bind = ["127.0.0.1:0"]
tls = "starttls"

[listener.imaps]
protocol = "imap"
bind = ["127.0.0.1:0"]
tls = "implicit"

[capabilities.imap]
banner = "postern demo ready."

[destination.dovecot]
host = "127.0.0.1"
proxy_protocol = false
# The leg to Dovecot is plain TCP on loopback: credentials may cross it.
allow_plaintext_auth = true

[destination.dovecot.protocol.imap]
port = $DOVECOT_IMAP_PORT
tls = "plain"

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
    bounded 30 "postern check-config" "$POSTERN" check-config "$p/postern.toml"
    POSTERN_LOG=${POSTERN_LOG:-info} "$POSTERN" run --config "$p/postern.toml" 2>"$p/postern.log" &
    PIDS+=($!)
    SOCK=$p/control.sock
    wait_for "every postern pool to be running" 30 "$POSTERN" status --socket "$SOCK" ||
        fail "postern did not start"
    bounded 10 "postern status" "$POSTERN" status --socket "$SOCK"
    POSTERN_LMTP=$(pool_addr lmtp)
    POSTERN_IMAP=$(pool_addr imap)
    POSTERN_IMAPS=$(pool_addr imaps)
    local sup=${PIDS[-1]}
    note "supervisor pid $sup runs as: $(ps -o user= -p "$sup")"
    note "its processes: $(ps -o pid=,user=,args= --ppid "$sup" | sed 's/^ *//' | paste -sd';' -)"
    note "postern listeners: LMTP $POSTERN_LMTP, IMAP+STARTTLS $POSTERN_IMAP, IMAPS $POSTERN_IMAPS"
}

deliver_lmtp() {
    step "Delivering a message through postern with Python's smtplib.LMTP"
    local host=${POSTERN_LMTP%:*} port=${POSTERN_LMTP##*:}
    bounded 60 "the LMTP delivery" python3 - "$host" "$port" "$MAIL_ADDR" <<'EOF'
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
    # A copy to compare with what the IMAP clients fetch (the first one moves it to cur/).
    STORED=$WORK/stored.eml
    cp "$new/$file" "$STORED"
}

# curl_dialogue TRACE: the IMAP dialogue in a curl --verbose trace: client lines (>),
# server lines (<), the TLS handshake's outcome and curl's errors; credentials masked.
curl_dialogue() {
    tr -d '\r' <"$1" | sed -n -E \
        -e 's/^(> [A-Z][0-9]+ (AUTHENTICATE [A-Z0-9-]+|LOGIN)) .+/\1 ***/p' -e t \
        -e 's/^> [A-Za-z0-9+\/]{8,}=*$/> ***/p' -e t \
        -e '/^[<>] /p' -e '/^curl: /p' \
        -e 's/^\* (SSL connection using .*)/  [TLS: \1]/p' \
        -e 's/^\*  subject: (.*)/  [TLS: server certificate \1]/p' \
        -e 's/^\*  (SSL certificate verify .*)/  [TLS: \1]/p' |
        sed 's/^/    | /'
}

# curl_imap MODE LISTEN: curl logs in through postern's listener at LISTEN (MODE:
# starttls or implicit), lists the mailboxes and fetches the delivered message on one
# connection. Prints the IMAP dialogue from curl's trace (credentials masked), the
# listing, and checks that the message is byte for byte the one in the maildir.
curl_imap() {
    local mode=$1 addr=$2 out=$WORK/curl-$1.out trace=$WORK/curl-$1.trace scheme=imap
    local opts=(--cacert "$CERT") shown="--cacert cert.pem"
    if [[ $mode == starttls ]]; then
        opts+=(--ssl-reqd)
        shown+=" --ssl-reqd"
    else
        scheme=imaps
    fi
    local urls=("$scheme://$addr/" "$scheme://$addr/INBOX;UID=1")
    note "\$ curl $shown --user $MAIL_ADDR:*** ${urls[*]}"
    if ! bounded 40 "curl ($mode)" curl --silent --show-error --verbose --fail-early \
        --connect-timeout 15 --max-time 30 "${opts[@]}" --user "$MAIL_ADDR:$MAIL_PASS" \
        "${urls[@]}" >"$out" 2>"$trace"; then
        curl_dialogue "$trace" >&2
        fail "curl could not log in and fetch through postern's $mode listener"
    fi
    curl_dialogue "$trace"
    note "curl's output: the listing, then the message ($(grep -vc '^\* LIST ' "$out") lines):"
    tr -d '\r' <"$out" | grep '^\* LIST ' | sed 's/^/    | /'
    tr -d '\r' <"$out" | grep '^Subject: ' | sed 's/^/    | /'
    # Dovecot stores LF line ends and serves CRLF; otherwise the bytes must be the same.
    tr -d '\r' <"$out" | grep -v '^\* LIST ' | cmp -s - "$STORED" ||
        fail "curl ($mode) fetched other bytes than Dovecot stored (compare $out with $STORED)"
    note "the fetched message is byte for byte the file Dovecot stored (CRLF aside)"
}

# py_imap MODE PORT: Python's imaplib logs in through postern (MODE: starttls or
# implicit), verifying postern's certificate, and reads the Subject back.
py_imap() {
    note "\$ python3 (imaplib, $1)"
    bounded 60 "python3 imaplib ($1)" python3 - "$1" "$2" "$CERT" "$MAIL_ADDR" "$MAIL_PASS" <<'EOF'
import email, imaplib, ssl, sys
mode, port, cafile, user, password = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
ctx = ssl.create_default_context(cafile=cafile)


def show(what, text):
    print(f"    | {what:<9} {text}", flush=True)


def text(data):
    return b" ".join(d if isinstance(d, bytes) else b"" for d in data).decode()


def session():
    if mode == "starttls":
        m = imaplib.IMAP4("127.0.0.1", port, timeout=20)
        show("greeting", m.welcome.decode())
        typ, _ = m.starttls(ssl_context=ctx)
        show("STARTTLS", f"{typ}, then the TLS handshake")
    else:
        m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=20)
        show("greeting", m.welcome.decode())
    show("TLS", f"{m.sock.version()} {m.sock.cipher()[0]}, certificate verified for 127.0.0.1")
    show("CAPA", " ".join(m.capabilities))
    typ, data = m.login(user, password)
    # Dovecot's reply, relayed verbatim; shortened here (curl's trace shows it whole).
    reply = text(data)
    if reply.startswith("[CAPABILITY ") and "]" in reply:
        capa, rest = reply[len("[CAPABILITY "):].split("]", 1)
        capa = capa.split()
        reply = f"[CAPABILITY {' '.join(capa[:4])} ...({len(capa) - 4} more)]{rest}"
    show("LOGIN", f"{typ} {reply}")
    typ, data = m.select("INBOX", readonly=True)
    show("SELECT", f"{typ}, {text(data)} message(s) in INBOX")
    typ, data = m.fetch(data[0].split()[-1], "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subject = email.message_from_bytes(data[0][1])["Subject"]
    show("FETCH", f"{typ}, Subject: {subject}")
    if subject != "Hello through postern":
        raise RuntimeError(f"unexpected Subject: {subject!r}")
    typ, data = m.logout()
    show("LOGOUT", f"{typ} {text(data)}")


try:
    session()
except Exception as e:  # one line saying what went wrong, not a traceback
    sys.exit(f"    imaplib ({mode}): {type(e).__name__}: {e}")
EOF
}

closed_lines() { grep -c 'session closed' "$WORK/postern/postern.log" || true; }
closed_at_least() { (($(closed_lines) >= $1)); }

# show_sessions_closed FROM N: waits (bounded) for N more `session closed` lines in
# postern's log after the FROM first ones, and prints them.
show_sessions_closed() {
    local from=$1 n=$2
    wait_for "$n more 'session closed' lines in postern's log" 20 closed_at_least $((from + n)) ||
        fail "postern did not log the end of the sessions"
    note "postern's log:"
    grep 'session closed' "$WORK/postern/postern.log" | tail -n +$((from + 1)) | sed 's/^/    | /'
}

imap_starttls() {
    step "IMAP with STARTTLS through postern ($POSTERN_IMAP) to Dovecot's plain IMAP"
    local before
    before=$(closed_lines)
    curl_imap starttls "$POSTERN_IMAP"
    py_imap starttls "${POSTERN_IMAP##*:}"
    show_sessions_closed "$before" 2
}

imap_implicit_tls() {
    step "IMAP over implicit TLS through postern ($POSTERN_IMAPS) to Dovecot's plain IMAP"
    local before
    before=$(closed_lines)
    curl_imap implicit "$POSTERN_IMAPS"
    py_imap implicit "${POSTERN_IMAPS##*:}"
    show_sessions_closed "$before" 2
}

# sessions_counted: true once `postern status` counts every session of the demo (workers
# report their counters to the supervisor once a second).
sessions_counted() {
    "$POSTERN" status --json --socket "$SOCK" | python3 -c '
import json, sys
want = {"lmtp": 1, "imap": 2, "imaps": 2}
pools = {p["listener"]: p for p in json.load(sys.stdin)["pools"]}
sys.exit(any(pools[l]["total"] < n or pools[l]["active"] for l, n in want.items()))'
}

show_status() {
    step "postern status"
    wait_for "postern status to count the sessions" 10 sessions_counted ||
        note "(the counters below are not up to date yet)"
    bounded 10 "postern status" "$POSTERN" status --socket "$SOCK"
    note "Dovecot's log of the logins (its client is postern, on 127.0.0.1):"
    grep -E 'imap-login: (Info: )?Login:' "$WORK/dovecot/dovecot.log" | sed 's/^/    | /'
}

# exited PID: true once PID is gone (or a zombie not yet reaped).
exited() { [[ ! -e /proc/$1 ]] || [[ $(ps -o stat= -p "$1" 2>/dev/null) == Z* ]]; }

stop_postern() {
    step "Stopping postern (SIGTERM: drain, then exit)"
    # postern was started after Dovecot, so it is the last PID.
    local sup=${PIDS[-1]} rc=0
    kill -TERM "$sup"
    wait_for "postern (pid $sup) to exit after SIGTERM" 20 exited "$sup" ||
        fail "postern did not exit"
    wait "$sup" || rc=$?
    unset 'PIDS[-1]'
    note "postern exited with status $rc"
    note "its log:"
    sed 's/^/    | /' "$WORK/postern/postern.log" | tail -n 20
    ((rc == 0)) || fail "postern exited with status $rc"
}

main() {
    install_and_build
    make_workdir
    make_certificate
    start_dovecot
    start_postern
    deliver_lmtp
    show_maildir
    imap_starttls
    imap_implicit_tls
    show_status
    stop_postern
    step "Done"
}

main "$@"

#!/usr/bin/env bash
# postern demo: a real Dovecot backend on loopback, postern in front of it, shown working.
#
#   sudo scripts/demo.sh
#
# 1. installs the dependencies (scripts/install-deps.sh) and builds postern (release);
# 2. makes a throwaway self-signed certificate with openssl in a temporary directory;
# 3. starts a small SMTP sink (python3) and a private Dovecot (LMTP, IMAP, POP3,
#    submission relaying to the sink, ManageSieve; all without TLS on free loopback
#    ports, its own config and maildirs in that directory; the system Dovecot is not
#    used or touched);
# 4. starts `postern run` as root: it binds, drops to the postern-test account, and
#    serves an LMTP pass-through listener, two IMAP listeners (STARTTLS and implicit
#    TLS, with that certificate) and STARTTLS listeners for POP3, submission and
#    ManageSieve in front of Dovecot; shows `postern status`;
# 5. delivers a message through postern with Python's smtplib.LMTP and shows the file
#    Dovecot wrote into the maildir;
# 6. logs in to Dovecot *through postern* over IMAP and reads that message back, once
#    per client-side TLS mode: curl (its dialogue) and Python's imaplib (greeting, login
#    reply, Subject) on the STARTTLS listener, then the same on the implicit-TLS one;
# 7. does the same over POP3 (curl `pop3://` --ssl-reqd, Python's poplib with STLS);
#    submits a message with Python's smtplib (STARTTLS, AUTH) that Dovecot's submission
#    service relays to the sink, and shows it there; uploads and lists a Sieve script
#    with sieve-connect; after each protocol shows postern's `session closed` lines,
#    and at the end `postern status` and Dovecot's login lines;
# 8. stops everything it started (by PID) and removes the directory
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
PROG=demo
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

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
    trap - ERR
    if [[ $rc -ne 0 && -n "$WORK" ]]; then
        echo "demo: FAILED (exit status $rc)" >&2
        tail_log "postern's log" "$WORK/postern/postern.log"
        tail_log "Dovecot's log" "$WORK/dovecot/dovecot.log"
        tail_log "Dovecot's stderr" "$WORK/dovecot/stderr.log"
        tail_log "the SMTP sink's stderr" "$WORK/sink/stderr.log"
    fi
    stop_pids 10
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

# start_smtp_sink: a tiny SMTP server (Python, standard library only) on a free loopback
# port: the relay host behind Dovecot's submission service. It accepts every message and
# writes it to $WORK/sink/msg-N.eml (the DATA, dot-unstuffed) and every command line it
# receives to $WORK/sink/commands.log.
start_smtp_sink() {
    step "Starting an SMTP sink for Dovecot's submission service to relay to"
    SINK=$WORK/sink
    mkdir -p "$SINK"
    cat >"$SINK/sink.py" <<'EOF'
import os, socketserver, sys

out = sys.argv[1]
count = 0


def log(line):
    with open(os.path.join(out, "commands.log"), "a") as f:
        f.write(line + "\n")


class Session(socketserver.StreamRequestHandler):
    timeout = 60

    def reply(self, text):
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        global count
        self.reply("220 sink.demo ESMTP sink")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd.split(" ", 1)[0].upper()
            log(cmd)
            if verb in ("EHLO", "HELO"):
                self.reply("250-sink.demo\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES" if verb == "EHLO" else "250 sink.demo")
            elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                self.reply("250 2.0.0 OK")
            elif verb == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                data = bytearray()
                while True:
                    l = self.rfile.readline()
                    if not l:
                        return
                    if l in (b".\r\n", b".\n"):
                        break
                    data += l[1:] if l.startswith(b".") else l
                count += 1
                name = os.path.join(out, f"msg-{count}.eml")
                with open(name + ".tmp", "wb") as f:
                    f.write(data)
                os.rename(name + ".tmp", name)
                self.reply(f"250 2.0.0 OK: stored as msg-{count}.eml")
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("502 5.5.2 Command not implemented")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True


with Server(("127.0.0.1", 0), Session) as server:
    port = os.path.join(out, "port")
    with open(port + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port + ".tmp", port)
    server.serve_forever()
EOF
    python3 "$SINK/sink.py" "$SINK" 2>"$SINK/stderr.log" &
    PIDS+=($!)
    wait_for "the SMTP sink to listen" 20 test -s "$SINK/port" || fail "the SMTP sink did not start"
    SINK_PORT=$(cat "$SINK/port")
    note "sink (pid ${PIDS[-1]}, python3): 127.0.0.1:$SINK_PORT, writes what it receives to $SINK/"
}

start_dovecot() {
    step "Starting a private Dovecot (LMTP, IMAP, POP3, submission, ManageSieve; no TLS)"
    DOVECOT_LMTP_PORT=$(free_port)
    DOVECOT_IMAP_PORT=$(free_port)
    DOVECOT_POP3_PORT=$(free_port)
    DOVECOT_SUBMISSION_PORT=$(free_port)
    DOVECOT_SIEVE_PORT=$(free_port)
    local uid gid d=$WORK/dovecot
    uid=$(id -u "$MAIL_USER")
    gid=$(id -g "$MAIL_USER")
    printf '%s:{PLAIN}%s:%s:%s::%s::\n' "$MAIL_ADDR" "$MAIL_PASS" "$uid" "$gid" "$WORK/mail/$MAIL_ADDR" >"$d/passwd"
    cat >"$d/dovecot.conf" <<EOF
# private Dovecot for the postern demo
instance_name = postern-demo
protocols = lmtp imap pop3 submission sieve
listen = 127.0.0.1
hostname = dovecot.demo
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
service pop3-login {
  inet_listener pop3 {
    port = $DOVECOT_POP3_PORT
  }
  inet_listener pop3s {
    port = 0
  }
}
service submission-login {
  inet_listener submission {
    port = $DOVECOT_SUBMISSION_PORT
  }
}
service managesieve-login {
  inet_listener sieve {
    port = $DOVECOT_SIEVE_PORT
  }
}
# Dovecot's submission service hands every message to an SMTP relay: the demo's sink.
submission_relay_host = 127.0.0.1
submission_relay_port = $SINK_PORT
# Sieve scripts (uploaded over ManageSieve) live in the user's home.
plugin {
  sieve = file:~/sieve;active=~/.dovecot.sieve
}
EOF
    dovecot -F -c "$d/dovecot.conf" >"$d/stderr.log" 2>&1 &
    PIDS+=($!)
    wait_for "Dovecot LMTP on port $DOVECOT_LMTP_PORT" 30 port_open "$DOVECOT_LMTP_PORT"
    local port
    for port in "$DOVECOT_IMAP_PORT" "$DOVECOT_POP3_PORT" "$DOVECOT_SUBMISSION_PORT" "$DOVECOT_SIEVE_PORT"; do
        wait_for "Dovecot on port $port" 30 port_open "$port"
    done
    note "Dovecot (pid ${PIDS[-1]}), user $MAIL_ADDR, all on 127.0.0.1 without TLS: LMTP :$DOVECOT_LMTP_PORT,"
    note "IMAP :$DOVECOT_IMAP_PORT, POP3 :$DOVECOT_POP3_PORT, submission :$DOVECOT_SUBMISSION_PORT (relaying to the sink), ManageSieve :$DOVECOT_SIEVE_PORT"
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
# The name in postern's SMTP greeting and EHLO reply (submission).
hostname = "localhost"
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

# POP3, submission and ManageSieve: the same, each with its own pre-login dialogue.
[listener.pop3]
protocol = "pop3"
bind = ["127.0.0.1:0"]
tls = "starttls"

[listener.submission]
protocol = "submission"
bind = ["127.0.0.1:0"]
tls = "starttls"

[listener.sieve]
protocol = "managesieve"
bind = ["127.0.0.1:0"]
tls = "starttls"

[capabilities.imap]
banner = "postern demo ready."

[capabilities.pop3]
banner = "postern demo ready."

[capabilities.submission]
banner = "postern demo ready."

[capabilities.managesieve]
implementation = "postern demo"

[destination.dovecot]
host = "127.0.0.1"
proxy_protocol = false
# The leg to Dovecot is plain TCP on loopback: credentials may cross it.
allow_plaintext_auth = true

[destination.dovecot.protocol.imap]
port = $DOVECOT_IMAP_PORT
tls = "plain"

[destination.dovecot.protocol.pop3]
port = $DOVECOT_POP3_PORT
tls = "plain"

[destination.dovecot.protocol.submission]
port = $DOVECOT_SUBMISSION_PORT
tls = "plain"

[destination.dovecot.protocol.managesieve]
port = $DOVECOT_SIEVE_PORT
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
    POSTERN_POP3=$(pool_addr pop3)
    POSTERN_SUBMISSION=$(pool_addr submission)
    POSTERN_SIEVE=$(pool_addr sieve)
    local sup=${PIDS[-1]}
    note "supervisor pid $sup runs as: $(ps -o user= -p "$sup")"
    note "its processes: $(ps -o pid=,user=,args= --ppid "$sup" | sed 's/^ *//' | paste -sd';' -)"
    note "postern listeners: LMTP $POSTERN_LMTP, IMAP+STARTTLS $POSTERN_IMAP, IMAPS $POSTERN_IMAPS,"
    note "POP3+STLS $POSTERN_POP3, submission+STARTTLS $POSTERN_SUBMISSION, ManageSieve+STARTTLS $POSTERN_SIEVE"
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

# curl_dialogue TRACE: the IMAP or POP3 dialogue in a curl --verbose trace: client lines
# (>), server lines (<), the TLS handshake's outcome and curl's errors; credentials masked.
curl_dialogue() {
    tr -d '\r' <"$1" | sed -n -E \
        -e 's/^(> [A-Z][0-9]+ (AUTHENTICATE [A-Z0-9-]+|LOGIN)) .+/\1 ***/p' -e t \
        -e 's/^(> (AUTH [A-Z0-9-]+|PASS)) .+/\1 ***/p' -e t \
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

# curl_pop3 LISTEN: curl logs in through postern's POP3 listener at LISTEN (STLS,
# --ssl-reqd), lists the messages and retrieves the first on one connection. Prints the
# dialogue from curl's trace (credentials masked) and checks the message is the one
# Dovecot stored, byte for byte.
curl_pop3() {
    local addr=$1 list=$WORK/curl-pop3.list msg=$WORK/curl-pop3.msg trace=$WORK/curl-pop3.trace
    local urls=("pop3://$addr/" "pop3://$addr/1")
    note "\$ curl --cacert cert.pem --ssl-reqd --user $MAIL_ADDR:*** ${urls[*]}"
    if ! bounded 40 "curl (pop3)" curl --silent --show-error --verbose --fail-early \
        --connect-timeout 15 --max-time 30 --cacert "$CERT" --ssl-reqd \
        --user "$MAIL_ADDR:$MAIL_PASS" --output "$list" "${urls[0]}" \
        --output "$msg" "${urls[1]}" 2>"$trace"; then
        curl_dialogue "$trace" >&2
        fail "curl could not log in and retrieve through postern's POP3 listener"
    fi
    curl_dialogue "$trace"
    note "curl's output: the listing ($(tr -d '\r' <"$list" | paste -sd' ' -)), then the message:"
    tr -d '\r' <"$msg" | grep '^Subject: ' | sed 's/^/    | /'
    tr -d '\r' <"$msg" | cmp -s - "$STORED" ||
        fail "curl (pop3) retrieved other bytes than Dovecot stored (compare $msg with $STORED)"
    note "the retrieved message is byte for byte the file Dovecot stored (CRLF aside)"
}

# py_pop3 PORT: Python's poplib on postern's POP3 listener: STLS (certificate verified),
# USER/PASS (postern replays them to Dovecot as AUTH PLAIN), STAT, RETR 1, QUIT.
py_pop3() {
    note "\$ python3 (poplib, stls)"
    bounded 60 "python3 poplib" python3 - "$1" "$CERT" "$MAIL_ADDR" "$MAIL_PASS" <<'EOF'
import email, poplib, ssl, sys
port, cafile, user, password = int(sys.argv[1]), *sys.argv[2:]


def show(what, text):
    print(f"    | {what:<9} {text}", flush=True)


def session():
    p = poplib.POP3("127.0.0.1", port, timeout=20)
    show("greeting", p.getwelcome().decode())
    show("CAPA", " ".join(sorted(p.capa())))
    show("STLS", p.stls(context=ssl.create_default_context(cafile=cafile)).decode())
    show("TLS", f"{p.sock.version()} {p.sock.cipher()[0]}, certificate verified for 127.0.0.1")
    show("USER", p.user(user).decode())
    show("PASS", p.pass_(password).decode())
    count, size = p.stat()
    show("STAT", f"{count} message(s), {size} octets")
    reply, lines, _ = p.retr(count)
    subject = email.message_from_bytes(b"\r\n".join(lines))["Subject"]
    show("RETR", f"{reply.decode()}, Subject: {subject}")
    if subject != "Hello through postern":
        raise RuntimeError(f"unexpected Subject: {subject!r}")
    show("QUIT", p.quit().decode())


try:
    session()
except Exception as e:  # one line saying what went wrong, not a traceback
    sys.exit(f"    poplib: {type(e).__name__}: {e}")
EOF
}

# py_submission PORT SENT: Python's smtplib on postern's submission listener: EHLO,
# STARTTLS (certificate verified), EHLO, AUTH PLAIN (smtplib's login()), then MAIL, RCPT
# and DATA, which postern relays to Dovecot's submission service. Writes the message it
# sent to SENT.
py_submission() {
    note "\$ python3 (smtplib, starttls + login)"
    bounded 60 "python3 smtplib" python3 - "$1" "$2" "$CERT" "$MAIL_ADDR" "$MAIL_PASS" <<'EOF'
import smtplib, ssl, sys, time
port, sent, cafile, user, password = int(sys.argv[1]), *sys.argv[2:]
rcpt = "carol@example.net"
msg = (
    f"From: Alice <{user}>\r\n"
    f"To: Carol <{rcpt}>\r\n"
    "Subject: Submitted through postern\r\n"
    f"Message-ID: <demo-{int(time.time())}@example.org>\r\n"
    "\r\n"
    "This message went client -> postern (submission) -> Dovecot submission -> the sink.\r\n"
).encode()


def show(what, reply):
    # A multi-line reply (EHLO) on one line: its first line, then the others.
    code, text = reply
    lines = (text.decode() if isinstance(text, bytes) else text).splitlines()
    rest = f" ({'; '.join(lines[1:])})" if lines[1:] else ""
    print(f"    | {what:<9} {code} {lines[0]}{rest}", flush=True)


class Client(smtplib.SMTP):
    """smtplib.SMTP, keeping the greeting (smtplib checks it, then drops it)."""

    def connect(self, host="localhost", port=0, source_address=None):
        self.greeting = super().connect(host, port, source_address)
        return self.greeting


def expect(code, reply):
    if reply[0] != code:
        raise RuntimeError(f"expected {code}, got {reply[0]} {reply[1]!r}")
    return reply


def session():
    s = Client("127.0.0.1", port, local_hostname="client.demo", timeout=20)
    show("greeting", s.greeting)
    show("EHLO", expect(250, s.ehlo()))
    show("STARTTLS", expect(220, s.starttls(context=ssl.create_default_context(cafile=cafile))))
    print(f"    | {'TLS':<9} {s.sock.version()} {s.sock.cipher()[0]}, certificate verified for 127.0.0.1")
    show("EHLO", expect(250, s.ehlo()))
    show("AUTH", s.login(user, password))
    show("MAIL", expect(250, s.mail(user)))
    show("RCPT", expect(250, s.rcpt(rcpt)))
    with open(sent, "wb") as f:
        f.write(msg)
    show("DATA", expect(250, s.data(msg)))
    show("QUIT", s.quit())


try:
    session()
except Exception as e:  # one line saying what went wrong, not a traceback
    sys.exit(f"    smtplib: {type(e).__name__}: {e}")
EOF
}

# show_relayed SENT: waits for the sink's message and prints what Dovecot's submission
# service said to the sink and the message as the sink received it; checks that it ends
# with the bytes the client sent (Dovecot puts its Received: header on top).
show_relayed() {
    local sent=$1 got=$SINK/msg-1.eml
    wait_for "the relayed message in $got" 20 test -e "$got" ||
        fail "the sink received no message from Dovecot's submission service"
    note "what Dovecot's submission service sent the sink (its SMTP commands up to DATA):"
    sed '/^DATA$/q' "$SINK/commands.log" | sed 's/^/    | /'
    note "$got:"
    sed 's/^/    | /' "$got" | tr -d '\r'
    python3 -c 'import sys; sys.exit(not open(sys.argv[1], "rb").read().endswith(open(sys.argv[2], "rb").read()))' \
        "$got" "$sent" || fail "the sink received other bytes than the client sent (compare $got with $sent)"
    note "the sink received exactly what smtplib sent, below Dovecot's Received: header"
}

# sieve_connect LISTEN: sieve-connect (STARTTLS, certificate verified, AUTHENTICATE
# PLAIN) uploads a Sieve script through postern's ManageSieve listener at LISTEN and
# lists the scripts, on one connection; checks that Dovecot stored the script as sent.
sieve_connect() {
    local addr=$1 s=$WORK/sieve
    mkdir -p "$s"
    cat >"$s/demo.sieve" <<'EOF'
# uploaded through postern
require ["fileinto", "mailbox"];
if header :contains "Subject" "postern" {
    fileinto :create "postern";
}
EOF
    printf 'put %s demo\nlist\n' "$s/demo.sieve" >"$s/commands"
    printf '%s\n' "$MAIL_PASS" >"$s/password"
    chmod 0600 "$s/password"
    note "\$ sieve-connect --server ${addr%:*} --port ${addr##*:} --tlshostname localhost --tlscafile cert.pem --user $MAIL_ADDR --authmech PLAIN --exec commands"
    sed 's/^/    | /' "$s/commands"
    if ! bounded 60 "sieve-connect" sieve-connect --server "${addr%:*}" --port "${addr##*:}" \
        --nosrv --4 --tlshostname localhost --tlscafile "$CERT" --user "$MAIL_ADDR" \
        --authmech PLAIN --passwordfd 0 --exec "$s/commands" \
        <"$s/password" >"$s/out" 2>&1; then
        sed 's/^/    | /' "$s/out" >&2
        fail "sieve-connect could not upload and list through postern's ManageSieve listener"
    fi
    note "its output (the listing):"
    grep . "$s/out" | sed 's/^/    | /'
    grep -qx '"demo".*' "$s/out" || fail "sieve-connect's listing has no script \"demo\""
    local stored=$WORK/mail/$MAIL_ADDR/sieve/demo.sieve
    cmp -s "$stored" "$s/demo.sieve" ||
        fail "Dovecot stored another script than sieve-connect uploaded (compare $stored with $s/demo.sieve)"
    note "Dovecot stored the script byte for byte as uploaded: $stored"
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

pop3_stls() {
    step "POP3 with STLS through postern ($POSTERN_POP3) to Dovecot's plain POP3"
    local before
    before=$(closed_lines)
    curl_pop3 "$POSTERN_POP3"
    py_pop3 "${POSTERN_POP3##*:}"
    show_sessions_closed "$before" 2
}

submission_starttls() {
    step "Submission with STARTTLS through postern ($POSTERN_SUBMISSION) to Dovecot's submission"
    local before
    before=$(closed_lines)
    py_submission "${POSTERN_SUBMISSION##*:}" "$WORK/submitted.eml"
    show_sessions_closed "$before" 1
    show_relayed "$WORK/submitted.eml"
}

managesieve_starttls() {
    step "ManageSieve with STARTTLS through postern ($POSTERN_SIEVE) to Dovecot's ManageSieve"
    local before
    before=$(closed_lines)
    sieve_connect "$POSTERN_SIEVE"
    show_sessions_closed "$before" 1
}

# sessions_counted: true once `postern status` counts every session of the demo (workers
# report their counters to the supervisor once a second).
sessions_counted() {
    "$POSTERN" status --json --socket "$SOCK" | python3 -c '
import json, sys
want = {"lmtp": 1, "imap": 2, "imaps": 2, "pop3": 2, "submission": 1, "sieve": 1}
pools = {p["listener"]: p for p in json.load(sys.stdin)["pools"]}
sys.exit(any(pools[l]["total"] < n or pools[l]["active"] for l, n in want.items()))'
}

show_status() {
    step "postern status"
    wait_for "postern status to count the sessions" 10 sessions_counted ||
        note "(the counters below are not up to date yet)"
    bounded 10 "postern status" "$POSTERN" status --socket "$SOCK"
    note "Dovecot's log of the logins (its client is postern, on 127.0.0.1):"
    grep -E '[a-z0-9]+-login: (Info: )?Login:' "$WORK/dovecot/dovecot.log" | sed 's/^/    | /'
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
    start_smtp_sink
    start_dovecot
    start_postern
    deliver_lmtp
    show_maildir
    imap_starttls
    imap_implicit_tls
    pop3_stls
    submission_starttls
    managesieve_starttls
    show_status
    stop_postern
    step "Done"
}

main "$@"

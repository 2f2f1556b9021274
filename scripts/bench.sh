#!/usr/bin/env bash
# postern benchmark: the same private Dovecot, measured directly and through postern in
# one run, printed as a Markdown table of ratios against the targets of issue 3.
#
#   sudo scripts/bench.sh                # everything (a few minutes)
#   sudo scripts/bench.sh --direct-only  # Dovecot alone: checks the harness itself
#
# 1. builds postern and the load generator (bench/, postern-bench) in release mode;
# 2. starts a private Dovecot (IMAP, POP3 and submission on free loopback ports,
#    passwd-file users bench1..bench32 and fetch, maildirs and config in a temporary
#    directory) sized to hold thousands of idle sessions, and APPENDs one 10 MiB
#    message for `fetch`; Dovecot's submission service needs a relay host: a minimal
#    SMTP responder (python3, no mail is ever sent) stands in for it;
# 3. starts `postern run` as root (it drops to postern-test, seccomp enforced) with
#    two IMAP listeners in front of Dovecot: plain, and implicit TLS with a self-signed
#    certificate made here with openssl; and a plain POP3 and a plain submission one;
# 4. measures, alternating direct and proxied in ABBA rounds:
#    - IMAP logins/s at 32 concurrent clients (connect, LOGIN, SELECT INBOX, LOGOUT),
#    - POP3 logins/s at 32 concurrent clients (connect, USER, PASS, STAT, QUIT),
#    - submission logins/s at 32 concurrent clients (connect, EHLO, AUTH PLAIN, QUIT),
#    - relay throughput of FETCH 1 BODY.PEEK[] of the 10 MiB message over one
#      connection per side,
#    - worker RSS per idle authenticated session (5,000 sessions, plain and TLS
#      client legs; the listener's worker PIDs come from `postern status --json`);
# 5. prints the table and stops everything it started, by PID.
#
# Knobs (environment):
#   ROUNDS (8)        ABBA rounds: each runs both sides back to back; a ratio is the
#                     median of the rounds' ratios, so a machine whose load changes
#                     during the run moves both sides of each ratio alike
#   LOGIN_SECS (2)    seconds of logins per side per round (each protocol)
#   FETCH_COUNT (150) 10 MiB fetches per side per round
#   IDLE_SESSIONS (5000)
#   MEASURE (all)     a comma-separated subset of imap,pop3,submission,fetch,idle:
#                     only those are measured and reported
#   PEER              a comma-separated list of relays measured beside postern in front
#                     of the same Dovecot, each right after postern's measurement and
#                     printed before postern's table:
#                     haproxy  Debian's HAProxy (installed if missing) as a blind TCP
#                              relay (mode tcp, splice-auto): IMAP logins and relay
#                     splice   `postern-bench splice-relay`, the least a relay can do
#                              (blocking splice, a thread per direction): relay only,
#                              the floor set by the second TCP connection itself
#   POSTERN_LOG       postern's log filter (default: the config's "info")
#   POSTERN_WORKERS   server.workers (default: unset, one worker per CPU)
#   POSTERN_THREADS   server.threads (default 0: the CPUs shared out among the workers)
#   POSTERN_SECCOMP   sandbox.seccomp (default enforce; off measures the filter's cost)
#   NICE (-20)        priority of everything measured (Dovecot, postern, the client)
#   SKIP_BUILD=1      use the release binaries already built
#   STRICT=1          exit 1 when a target is missed
#   KEEP=1            keep the working directory
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
PROG=bench
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

DIRECT_ONLY=0
for arg in "$@"; do
    case $arg in
    --direct-only) DIRECT_ONLY=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "bench: unknown argument $arg (try --help)" >&2
        exit 2
        ;;
    esac
done

if [[ $(id -u) -ne 0 ]]; then
    echo "bench: run as root (Dovecot and postern's privilege drop need it): sudo $0" >&2
    exit 1
fi

LOGIN_SECS=${LOGIN_SECS:-2}
ROUNDS=${ROUNDS:-8}
FETCH_COUNT=${FETCH_COUNT:-150}
IDLE_SESSIONS=${IDLE_SESSIONS:-5000}
CLIENTS=32
MESSAGE_BYTES=$((10 * 1024 * 1024))
SERVICE_USER=postern-test
MAIL_USER=postern-mail
PASSWORD=bench-secret
NICE=${NICE:--20}
MEASURE=${MEASURE:-imap,pop3,submission,fetch,idle}
PIDS=()
WORK=""
AUTOGROUP_NICE=""
PEER=${PEER:-}
for peer in ${PEER//,/ }; do
    if [[ $peer != haproxy && $peer != splice ]]; then
        echo "bench: unknown PEER $peer (known: haproxy, splice)" >&2
        exit 2
    fi
done
# name → address of each peer that started
declare -A PEER_ADDRS=()

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }

cleanup() {
    local rc=$?
    stop_pids 15
    if [[ -n "$AUTOGROUP_NICE" ]]; then
        echo "$AUTOGROUP_NICE" >/proc/self/autogroup 2>/dev/null || true
    fi
    if [[ -n "$WORK" ]]; then
        if [[ "${KEEP:-0}" == 1 || $rc -ne 0 ]]; then
            echo "bench: files kept in $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM




install_and_build() {
    local target=${CARGO_TARGET_DIR:-$REPO/target}
    POSTERN=$target/release/postern
    BENCH=$target/release/postern-bench
    if [[ "${SKIP_BUILD:-0}" == 1 && -x "$POSTERN" && -x "$BENCH" ]]; then
        step "Using the existing release build (SKIP_BUILD=1)"
    else
        step "Dependencies and release build"
        scripts/install-deps.sh
        if ! command -v cargo >/dev/null && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
            export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
        fi
        local locked=()
        [[ -f Cargo.lock ]] && locked=(--locked)
        cargo build --release "${locked[@]}" -p postern -p postern-bench
    fi
    note "postern: $POSTERN"
    note "load generator: $BENCH"
}

prioritize() {
    # Dovecot, postern and the load generator inherit this priority, so unrelated work
    # on the machine (a compiler) disturbs the measurement less; both sides alike.
    # With autogroup scheduling, nice only ranks processes within their session: the
    # session's own weight is raised too, and restored on exit.
    renice -n "$NICE" -p $$ >/dev/null
    if [[ -w /proc/self/autogroup ]]; then
        AUTOGROUP_NICE=$(awk '{print $NF}' /proc/self/autogroup)
        echo "$NICE" >/proc/self/autogroup || AUTOGROUP_NICE=""
    fi
    note "priority: nice $(ps -o ni= -p $$ | tr -d ' ')${AUTOGROUP_NICE:+, session autogroup nice $NICE}"
}

raise_limits() {
    # 5,000 sessions are 5,000 descriptors in the client, 10,000 in postern and 5,000
    # in Dovecot; everything started below inherits this. Without CAP_SYS_RESOURCE
    # (some containers) the hard limit caps it; one process needs ~2 per session.
    ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    local need=$((2 * IDLE_SESSIONS + 1024))
    if [[ $(ulimit -n) != unlimited ]] && (($(ulimit -n) < need)); then
        echo "bench: RLIMIT_NOFILE is $(ulimit -n), $IDLE_SESSIONS sessions need $need" >&2
        return 1
    fi
    note "RLIMIT_NOFILE: $(ulimit -n)"
}

make_workdir() {
    WORK=$(mktemp -d /tmp/postern-bench.XXXXXX)
    # postern re-reads its config as $SERVICE_USER after dropping root.
    chmod 0755 "$WORK"
    mkdir -p "$WORK/dovecot/run" "$WORK/dovecot/state" "$WORK/mail" "$WORK/postern" "$WORK/tls" "$WORK/results"
    chmod 0700 "$WORK/dovecot/state"
    chown "$MAIL_USER:$MAIL_USER" "$WORK/mail"
    note "working directory: $WORK"
}

start_relay_sink() {
    # Dovecot's submission service opens a connection to its relay host for every
    # session; this answers greeting, EHLO and QUIT (250 to anything else) and is all
    # the bench needs, since it never sends mail.
    SINK_PORT=$(free_port)
    cat >"$WORK/relay-sink.py" <<'EOF'
import asyncio, sys

async def session(reader, writer):
    try:
        writer.write(b"220 sink.bench ESMTP\r\n")
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb in (b"EHLO", b"LHLO"):
                writer.write(b"250-sink.bench\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 2.0.0 ok\r\n")
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(session, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with server:
        await server.serve_forever()

asyncio.run(main())
EOF
    python3 "$WORK/relay-sink.py" "$SINK_PORT" 2>"$WORK/relay-sink.log" &
    PIDS+=($!)
    wait_for "the relay sink on port $SINK_PORT" 10 port_open "$SINK_PORT"
    note "relay sink for Dovecot submission (pid ${PIDS[-1]}): 127.0.0.1:$SINK_PORT"
}

start_dovecot() {
    step "Private Dovecot $(dovecot --version | cut -d' ' -f1) on free loopback ports"
    start_relay_sink
    DOVECOT_IMAP_PORT=$(free_port)
    DOVECOT_POP3_PORT=$(free_port)
    DOVECOT_SUBMISSION_PORT=$(free_port)
    # As high as the descriptor limit lets Dovecot go (it warns above it).
    local DOVECOT_CLIENT_LIMIT=100000
    if [[ $(ulimit -n) != unlimited ]] && (($(ulimit -n) - 1024 < DOVECOT_CLIENT_LIMIT)); then
        DOVECOT_CLIENT_LIMIT=$(($(ulimit -n) - 1024))
    fi
    local uid gid i d=$WORK/dovecot
    uid=$(id -u "$MAIL_USER")
    gid=$(id -g "$MAIL_USER")
    : >"$d/passwd"
    for user in $(seq -f 'bench%g' 1 "$CLIENTS") fetch; do
        printf '%s:{PLAIN}%s:%s:%s::%s::\n' "$user" "$PASSWORD" "$uid" "$gid" "$WORK/mail/$user" >>"$d/passwd"
    done
    cat >"$d/dovecot.conf" <<EOF
# Private Dovecot for the postern benchmark; nothing is shared with the system one.
instance_name = $(basename "$WORK")
protocols = imap pop3 submission
# Two addresses: postern dials 127.0.0.1, the direct measurements use 127.0.0.2, so
# the TIME_WAIT connections one side leaves behind (thousands per second) never share a
# destination with the other side's new connections.
listen = 127.0.0.1, 127.0.0.2
base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
info_log_path = $d/dovecot.log
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = $uid
last_valid_uid = 0
first_valid_gid = $gid
mail_uid = $uid
mail_gid = $gid
mail_location = maildir:$WORK/mail/%u
# FETCH returns the CRLF bytes APPEND stored: the first fetch is compared byte for byte.
mail_save_crlf = yes
mail_fsync = never
auth_mechanisms = plain login
disable_plaintext_auth = no
login_trusted_networks =
shutdown_clients = yes
postmaster_address = postmaster@example.org
hostname = dovecot.bench
ssl = no
# Submission needs a relay host; the sink above answers it (no mail is sent).
submission_relay_host = 127.0.0.1
submission_relay_port = $SINK_PORT
submission_relay_trusted = yes
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $d/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%u $d/passwd
}

# Room for thousands of idle sessions from one address (every session comes from
# 127.0.0.1, direct or through postern; 32 users share them).
mail_max_userip_connections = 100000
default_client_limit = $DOVECOT_CLIENT_LIMIT
default_vsz_limit = 2G
# Login processes are reused (high-performance mode) and hold many clients each;
# the pre-login dialogue then costs no fork.
service imap-login {
  inet_listener imap {
    port = $DOVECOT_IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
  service_count = 0
  client_limit = 8000
  process_min_avail = 2
  process_limit = 8
}
# Each imap process serves up to 100 sessions (all users share one mail uid), so
# 5,000 idle sessions are about 50 processes rather than 5,000.
service imap {
  service_count = 0
  client_limit = 100
  process_limit = 400
}
# POP3 and submission logins: the same reused login processes as for IMAP.
service pop3-login {
  inet_listener pop3 {
    port = $DOVECOT_POP3_PORT
  }
  inet_listener pop3s {
    port = 0
  }
  service_count = 0
  client_limit = 8000
  process_min_avail = 2
  process_limit = 8
}
service submission-login {
  inet_listener submission {
    port = $DOVECOT_SUBMISSION_PORT
  }
  service_count = 0
  client_limit = 8000
  process_min_avail = 2
  process_limit = 8
}
EOF
    dovecot -F -c "$d/dovecot.conf" >"$d/stderr.log" 2>&1 &
    PIDS+=($!)
    if ! wait_for "Dovecot IMAP on port $DOVECOT_IMAP_PORT" 30 port_open "$DOVECOT_IMAP_PORT"; then
        cat "$d/stderr.log" "$d/dovecot.log" >&2 || true
        return 1
    fi
    for port in "$DOVECOT_POP3_PORT" "$DOVECOT_SUBMISSION_PORT"; do
        if ! wait_for "Dovecot on port $port" 30 port_open "$port"; then
            cat "$d/stderr.log" "$d/dovecot.log" >&2 || true
            return 1
        fi
    done
    DIRECT=127.0.0.2:$DOVECOT_IMAP_PORT
    DIRECT_POP3=127.0.0.2:$DOVECOT_POP3_PORT
    DIRECT_SUBMISSION=127.0.0.2:$DOVECOT_SUBMISSION_PORT
    note "Dovecot (pid ${PIDS[-1]}): IMAP $DIRECT, POP3 $DIRECT_POP3, submission $DIRECT_SUBMISSION"
    note "users bench1..bench$CLIENTS and fetch"
    "$BENCH" append --addr "$DIRECT" --user fetch --password "$PASSWORD" --size "$MESSAGE_BYTES" >/dev/null
    note "appended one $MESSAGE_BYTES-byte message to fetch's INBOX"
}

make_cert() {
    # Self-signed ECDSA P-256 leaf for localhost; the load generator trusts it as is.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -addext basicConstraints=critical,CA:FALSE \
        -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null
    chmod 0644 "$WORK/tls/cert.pem"
    chmod 0600 "$WORK/tls/key.pem"
}

start_postern() {
    step "postern in front of it (plain and implicit-TLS IMAP, plain POP3 and submission listeners)"
    make_cert
    local p=$WORK/postern
    : >"$p/mappings.txt"
    cat >"$p/postern.toml" <<EOF
[server]
user = "$SERVICE_USER"
group = "$SERVICE_USER"
control_socket = "$p/control.sock"
shutdown_grace = "5s"
threads = ${POSTERN_THREADS:-0}
${POSTERN_WORKERS:+workers = $POSTERN_WORKERS}

[sandbox]
seccomp = "${POSTERN_SECCOMP:-enforce}"

[tls.certificate.bench]
cert = "$WORK/tls/cert.pem"
key = "$WORK/tls/key.pem"
default = true

[listener.imap]
protocol = "imap"
bind = ["127.0.0.1:0"]
tls = "plain"
max_connections = 20000

[listener.imaps]
protocol = "imap"
bind = ["127.0.0.1:0"]
tls = "implicit"
max_connections = 20000

[listener.pop3]
protocol = "pop3"
bind = ["127.0.0.1:0"]
tls = "plain"
max_connections = 20000

[listener.submission]
protocol = "submission"
bind = ["127.0.0.1:0"]
tls = "plain"
max_connections = 20000

[capabilities.imap]
# The plain listeners are loopback-only: LOGIN without TLS is what they are for here.
allow_plain_auth_without_tls = true

[capabilities.pop3]
allow_plain_auth_without_tls = true

[capabilities.submission]
allow_plain_auth_without_tls = true

[destination.dovecot]
host = "127.0.0.1"
proxy_protocol = false
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

[routing]
default_destination = "dovecot"

[mapping]
source = "file"

[mapping.file]
path = "$p/mappings.txt"
EOF
    chmod 0755 "$p"
    chmod 0644 "$p/postern.toml" "$p/mappings.txt"
    "$POSTERN" check-config "$p/postern.toml" >/dev/null
    local env=()
    [[ -n "${POSTERN_LOG:-}" ]] && env=(POSTERN_LOG="$POSTERN_LOG")
    env "${env[@]}" "$POSTERN" run --config "$p/postern.toml" 2>"$p/postern.log" &
    PIDS+=($!)
    SOCK=$p/control.sock
    if ! wait_for "every postern pool to be running" 30 "$POSTERN" status --socket "$SOCK"; then
        cat "$p/postern.log" >&2
        return 1
    fi
    local addrs
    addrs=$("$POSTERN" status --json --socket "$SOCK" | python3 -c '
import json, sys
r = json.load(sys.stdin)
a = {p["listener"]: p["addrs"][0] for p in r["pools"]}
print(a["imap"], a["imaps"], a["pop3"], a["submission"])')
    read -r PROXIED PROXIED_TLS PROXIED_POP3 PROXIED_SUBMISSION <<<"$addrs"
    note "postern (supervisor pid ${PIDS[-1]}, runs as $(ps -o user= -p "${PIDS[-1]}")): IMAP $PROXIED, IMAPS $PROXIED_TLS, POP3 $PROXIED_POP3, submission $PROXIED_SUBMISSION"
    # Is postern a proxy for each protocol yet? One real login through it says.
    local proto addr
    for proto in imap pop3 submission; do
        case $proto in
        imap) addr=$PROXIED ;;
        pop3) addr=$PROXIED_POP3 ;;
        submission) addr=$PROXIED_SUBMISSION ;;
        esac
        if ! "$BENCH" logins --protocol "$proto" --proxied "$addr" --password "$PASSWORD" --users 1 \
            --concurrency 1 --secs 0 --rounds 0 --warmup-secs 0 >/dev/null 2>"$p/probe.log"; then
            echo "bench: a login through postern's $proto listener failed:" >&2
            cat "$p/probe.log" >&2
            echo "--- postern log (tail) ---" >&2
            tail -n 20 "$p/postern.log" >&2
            return 1
        fi
    done
}

# True when the measurement $1 is in MEASURE.
wanted() { [[ ",$MEASURE," == *",$1,"* ]]; }

measure() {
    local r=$WORK/results proxied=() proxied_pop3=() proxied_submission=() peer
    if ((!DIRECT_ONLY)); then
        proxied=(--proxied "$PROXIED")
        proxied_pop3=(--proxied "$PROXIED_POP3")
        proxied_submission=(--proxied "$PROXIED_SUBMISSION")
    fi

    if wanted imap; then
        step "IMAP logins: $CLIENTS clients, $ROUNDS x ${LOGIN_SECS}s per side"
        "$BENCH" logins --direct "$DIRECT" "${proxied[@]}" --password "$PASSWORD" --users "$CLIENTS" \
            --concurrency "$CLIENTS" --secs "$LOGIN_SECS" --rounds "$ROUNDS" >"$r/logins.json"
        for peer in $(peers_measuring imap); do
            step "The same through $(peer_label "$peer")"
            "$BENCH" logins --direct "$DIRECT" --proxied "${PEER_ADDRS[$peer]}" --password "$PASSWORD" \
                --users "$CLIENTS" --concurrency "$CLIENTS" --secs "$LOGIN_SECS" --rounds "$ROUNDS" \
                >"$r/peer-$peer/logins.json"
        done
    fi

    if wanted pop3; then
        step "POP3 logins: $CLIENTS clients, $ROUNDS x ${LOGIN_SECS}s per side"
        "$BENCH" logins --protocol pop3 --direct "$DIRECT_POP3" "${proxied_pop3[@]}" \
            --password "$PASSWORD" --users "$CLIENTS" --concurrency "$CLIENTS" --secs "$LOGIN_SECS" \
            --rounds "$ROUNDS" >"$r/pop3-logins.json"
    fi

    if wanted submission; then
        step "Submission logins: $CLIENTS clients, $ROUNDS x ${LOGIN_SECS}s per side"
        "$BENCH" logins --protocol submission --direct "$DIRECT_SUBMISSION" "${proxied_submission[@]}" \
            --password "$PASSWORD" --users "$CLIENTS" --concurrency "$CLIENTS" --secs "$LOGIN_SECS" \
            --rounds "$ROUNDS" >"$r/submission-logins.json"
    fi

    if wanted fetch; then
        step "Relay: FETCH 1 BODY.PEEK[] of $MESSAGE_BYTES bytes, $ROUNDS x $FETCH_COUNT per side"
        "$BENCH" fetch --direct "$DIRECT" "${proxied[@]}" --user fetch --password "$PASSWORD" \
            --size "$MESSAGE_BYTES" --count "$FETCH_COUNT" --rounds "$ROUNDS" >"$r/fetch.json"
        for peer in $(peers_measuring fetch); do
            step "The same through $(peer_label "$peer")"
            "$BENCH" fetch --direct "$DIRECT" --proxied "${PEER_ADDRS[$peer]}" --user fetch \
                --password "$PASSWORD" --size "$MESSAGE_BYTES" --count "$FETCH_COUNT" \
                --rounds "$ROUNDS" >"$r/peer-$peer/fetch.json"
        done
    fi

    wanted idle || return 0
    if ((DIRECT_ONLY)); then
        step "Capacity: $IDLE_SESSIONS idle sessions held by Dovecot directly (nothing measured)"
        "$BENCH" idle --addr "$DIRECT" --password "$PASSWORD" --users "$CLIENTS" \
            --sessions "$IDLE_SESSIONS" >"$r/idle-direct.json"
        return
    fi
    step "Memory: $IDLE_SESSIONS idle sessions, plain client leg"
    "$BENCH" idle --addr "$PROXIED" --listener imap --password "$PASSWORD" --users "$CLIENTS" \
        --sessions "$IDLE_SESSIONS" --postern "$POSTERN" --socket "$SOCK" >"$r/idle-plain.json"
    # Let Dovecot and postern finish closing the first 5,000 before the next.
    sleep 3
    step "Memory: $IDLE_SESSIONS idle sessions, TLS client leg"
    "$BENCH" idle --addr "$PROXIED_TLS" --tls --ca "$WORK/tls/cert.pem" --server-name localhost \
        --listener imaps --password "$PASSWORD" --users "$CLIENTS" \
        --sessions "$IDLE_SESSIONS" --postern "$POSTERN" --socket "$SOCK" >"$r/idle-tls.json"
}

start_haproxy() {
    step "Peer: HAProxy as a blind TCP relay in front of the same Dovecot"
    if ! command -v haproxy >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
    fi
    local h=$WORK/haproxy port
    mkdir -p "$h"
    port=$(free_port)
    # Its defaults otherwise (one thread per CPU); splice both ways, as postern does.
    cat >"$h/haproxy.cfg" <<EOF
global
    maxconn 4000
defaults
    mode tcp
    option splice-auto
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend imap
    bind 127.0.0.1:$port
    default_backend dovecot
backend dovecot
    server dovecot $DIRECT
EOF
    haproxy -db -f "$h/haproxy.cfg" >"$h/haproxy.log" 2>&1 &
    PIDS+=($!)
    if ! wait_for "HAProxy on port $port" 10 port_open "$port"; then
        cat "$h/haproxy.log" >&2
        return 1
    fi
    PEER_ADDRS[haproxy]=127.0.0.1:$port
    note "$(haproxy -v | head -1) (pid ${PIDS[-1]}): IMAP ${PEER_ADDRS[haproxy]}"
}

start_splice_relay() {
    step "Peer: the splice floor (postern-bench splice-relay) in front of the same Dovecot"
    local out=$WORK/splice-relay.out
    "$BENCH" splice-relay --to "$DIRECT" >"$out" 2>"$WORK/splice-relay.log" &
    PIDS+=($!)
    wait_for "splice-relay to listen" 10 grep -q '^listening ' "$out" || return 1
    PEER_ADDRS[splice]=$(awk '/^listening /{print $2}' "$out")
    note "splice-relay (pid ${PIDS[-1]}): IMAP ${PEER_ADDRS[splice]}"
}

# peer_label NAME: how the steps and the report name a peer.
peer_label() {
    case $1 in
    haproxy) echo "HAProxy $(haproxy -v | head -1 | awk '{print $3}') as a blind TCP relay" ;;
    splice) echo "the splice floor (a blocking splice relay, a thread per direction)" ;;
    esac
}

# peers_measuring imap|fetch|all: the started peers that take part in that measurement
# (the splice floor is a relay-throughput reference only).
peers_measuring() {
    local peer
    for peer in "${!PEER_ADDRS[@]}"; do
        [[ $1 == imap && $peer == splice ]] && continue
        echo "$peer"
    done | sort
}

start_peers() {
    local peer
    for peer in ${PEER//,/ }; do
        # A peer that fails to start costs its rows, not postern's table.
        case $peer in
        haproxy) start_haproxy || note "HAProxy did not start: not measured" ;;
        splice) start_splice_relay || note "splice-relay did not start: not measured" ;;
        esac
        if [[ -n "${PEER_ADDRS[$peer]:-}" ]]; then
            mkdir -p "$WORK/results/peer-$peer"
        fi
    done
}

# report_rows DIR [ARGS...]: the report of the measurements found in DIR.
report_rows() {
    local r=$1 args=() flag file
    shift
    for flag in logins pop3-logins submission-logins fetch idle-plain idle-tls; do
        file=$r/$flag.json
        [[ -f "$file" ]] && args+=("--$flag" "$file")
    done
    "$BENCH" report "${args[@]}" "$@"
}

report() {
    local strict=()
    [[ "${STRICT:-0}" == 1 ]] && strict=(--strict)
    step "Results ($(nproc) CPUs, $(uname -r), $(sysctl -n net.ipv4.tcp_congestion_control) congestion control, Dovecot $(dovecot --version | cut -d' ' -f1), load average $(cut -d' ' -f1-3 /proc/loadavg))"
    local peer
    for peer in $(peers_measuring all); do
        # Through the peer, not postern, in these rows; the targets are postern's.
        echo "Peer: $(peer_label "$peer"), the same Dovecot and rounds:"
        report_rows "$WORK/results/peer-$peer" | grep -E '^- |^\| (IMAP logins|relay)' |
            grep -v 'not measured' | sed "s/through postern/through $peer/"
        echo
    done
    report_rows "$WORK/results" "${strict[@]}"
}

main() {
    install_and_build
    prioritize
    raise_limits
    make_workdir
    start_dovecot
    ((DIRECT_ONLY)) || start_postern
    start_peers
    measure
    report
}

main "$@"

#!/usr/bin/env bash
# Packaging tests, run by scripts/test.sh after `cargo test` (as root; otherwise it
# prints "skipped: ..." and exits 0). Each check prints PASS or FAIL; the exit status is
# the number of failures (capped at 1).
#
#   sudo packaging/test-packages.sh
#
# It builds both packages (scripts/package.sh), scores the units with
# `systemd-analyze security --offline=true`, runs lintian on the .deb and
# `rpm -qlp --scripts` on the .rpm, then installs the .deb on this machine: checks the
# account, the files and their modes, `postern check-config`, starts the installed
# binary as root on a free loopback port and checks from /proc that its workers run as
# the postern account, stops it with SIGTERM, purges the package and checks that
# nothing is left. The machine is left as it was: the package is purged and the
# process it started is stopped by PID, also when a check fails.
set -uo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

# Worst acceptable `systemd-analyze security` exposure of each unit.
MAX_EXPOSURE_SELF_BIND=2.5
MAX_EXPOSURE_ACTIVATED=1.8

passed=0
failed=0
pass() { printf 'PASS: packaging: %s\n' "$*"; passed=$((passed + 1)); }
fail() { printf 'FAIL: packaging: %s\n' "$*"; failed=$((failed + 1)); }
note() { printf '    %s\n' "$*"; }
# check DESCRIPTION COMMAND...: PASS when COMMAND succeeds; its output is shown on FAIL.
check() {
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then
        pass "$what"
    else
        fail "$what"
        [[ -n "$out" ]] && printf '%s\n' "$out" | sed 's/^/    | /'
    fi
}

if [[ $(id -u) -ne 0 ]]; then
    echo "skipped: packaging tests need root (they install and purge the .deb)"
    exit 0
fi
if dpkg-query -W -f='${db:Status-Status}' postern 2>/dev/null | grep -qx installed; then
    echo "skipped: packaging tests: a postern package is installed on this machine; they would replace and purge it"
    exit 0
fi
for tool in dpkg-deb lintian rpm systemd-analyze python3; do
    if ! command -v "$tool" >/dev/null; then
        fail "$tool is not installed (scripts/install-deps.sh installs it)"
        exit 1
    fi
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d /tmp/postern-packaging.XXXXXX)
chmod 0755 "$work"
sup_pid=""
notify_pid=""
installed=0
account_before=0
getent passwd postern >/dev/null && account_before=1

cleanup() {
    local pid
    for pid in "$sup_pid" "$notify_pid"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        fi
    done
    if ((installed)); then
        dpkg --purge postern >/dev/null 2>&1
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# ---- build ------------------------------------------------------------------------------
start=$SECONDS
out=${CARGO_TARGET_DIR}/packages
if PACKAGES_DIR=$out scripts/package.sh >"$work/package.log" 2>&1; then
    pass "scripts/package.sh built both packages ($((SECONDS - start))s)"
else
    fail "scripts/package.sh"
    tail -n 40 "$work/package.log" | sed 's/^/    | /'
    exit 1
fi
deb=$(ls "$out"/postern_*.deb 2>/dev/null | head -n1)
rpm_file=$(ls "$out"/postern-*.rpm 2>/dev/null | head -n1)
if [[ -f "$deb" && -f "$rpm_file" ]]; then
    pass "packages: $(basename "$deb") ($(du -h "$deb" | cut -f1)), $(basename "$rpm_file") ($(du -h "$rpm_file" | cut -f1))"
else
    fail "packages not found in $out"
    exit 1
fi

# ---- units ------------------------------------------------------------------------------
# exposure UNIT_FILE: the "Overall exposure level" number.
exposure() {
    systemd-analyze security --offline=true --no-pager "$1" 2>/dev/null |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'
}
score_check() {
    local unit=$1 max=$2 score
    score=$(exposure "$unit")
    if [[ -n "$score" ]] && python3 -c 'import sys; sys.exit(float(sys.argv[1]) > float(sys.argv[2]))' "$score" "$max"; then
        pass "systemd-analyze security $(basename "$unit"): $score <= $max"
    else
        fail "systemd-analyze security $(basename "$unit"): '${score:-no score}' > $max"
        systemd-analyze security --offline=true --no-pager "$unit" 2>&1 | grep -E '✗|Overall' | sed 's/^/    | /'
    fi
}
score_check packaging/systemd/postern.service "$MAX_EXPOSURE_SELF_BIND"
score_check packaging/systemd/postern-activated.service "$MAX_EXPOSURE_ACTIVATED"
check "postern.service: Type=notify, check-config before start, seccomp allowed, OOMPolicy=continue" \
    grep -qzE 'Type=notify.*NotifyAccess=main.*ExecStartPre=/usr/sbin/postern check-config /etc/postern/postern.toml.*OOMPolicy=continue.*WatchdogSec=.*SystemCallFilter=@system-service seccomp' \
    packaging/systemd/postern.service
check "postern-activated.service: User=postern, no capability" \
    bash -c 'grep -qx "User=postern" "$1" && grep -qx "CapabilityBoundingSet=" "$1" && ! grep -q "^User=root" "$1"' _ packaging/systemd/postern-activated.service
check "postern.socket: FileDescriptorName of the shipped listener, ipv6-only" \
    grep -qzE 'ListenStream=127.0.0.1:10143.*FileDescriptorName=imap-local.*BindIPv6Only=ipv6-only' packaging/systemd/postern.socket

# ---- lintian, rpm -----------------------------------------------------------------------
if lintian --fail-on error --tag-display-limit 0 "$deb" >"$work/lintian.log" 2>&1; then
    pass "lintian: no errors ($(grep -c '^W: ' "$work/lintian.log") warnings)"
    grep -E '^[WI]: ' "$work/lintian.log" | sed 's/^/    | /'
else
    fail "lintian reports errors"
    sed 's/^/    | /' "$work/lintian.log"
fi

rpm -qlvp --scripts "$rpm_file" >"$work/rpm.txt" 2>"$work/rpm.err"
rpm_files=(
    "-rwxr-xr-x root root /usr/sbin/postern"
    "-rw-r--r-- root root /usr/lib/systemd/system/postern.service"
    "-rw-r--r-- root root /usr/lib/systemd/system/postern.socket"
    "-rw-r--r-- root root /usr/lib/systemd/system/postern-activated.service"
    "-rw-r--r-- root root /usr/lib/sysusers.d/postern.conf"
    "-rw-r--r-- root root /usr/lib/tmpfiles.d/postern.conf"
    "-rw-r----- root postern /etc/postern/postern.toml"
    "-rw-r----- root postern /etc/postern/mappings.tsv"
    "-rw-r--r-- root root /usr/share/man/man8/postern.8.gz"
    "-rw-r--r-- root root /usr/share/man/man5/postern.toml.5.gz"
)
missing=()
for entry in "${rpm_files[@]}"; do
    read -r mode user group path <<<"$entry"
    awk -v m="$mode" -v u="$user" -v g="$group" -v p="$path" \
        '$1 == m && $3 == u && $4 == g && $NF == p { found = 1 } END { exit !found }' "$work/rpm.txt" ||
        missing+=("$entry")
done
if ((${#missing[@]} == 0)); then
    pass "rpm -qlp: ${#rpm_files[@]} expected files with their modes and owners"
else
    fail "rpm -qlp: missing or wrong: ${missing[*]}"
    sed 's/^/    | /' "$work/rpm.txt" "$work/rpm.err"
fi
scriptlets_ok=1
for s in preinstall postinstall preuninstall postuninstall; do
    grep -q "^$s scriptlet" "$work/rpm.txt" || scriptlets_ok=0
done
grep -q 'useradd -r -g postern' "$work/rpm.txt" || scriptlets_ok=0
if ((scriptlets_ok)); then
    pass "rpm --scripts: pre (creates the account), post, preun and postun scriptlets"
else
    fail "rpm --scripts: a scriptlet is missing"
    sed 's/^/    | /' "$work/rpm.txt"
fi
check "rpm: postern.toml and mappings.tsv are %config(noreplace)" \
    bash -c "[[ \$(rpm -qp --configfiles '$rpm_file' | sort | tr '\n' ' ') == '/etc/postern/mappings.tsv /etc/postern/postern.toml ' ]] && rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' '$rpm_file' | grep -q '^cn /etc/postern/postern.toml'"

# ---- install ----------------------------------------------------------------------------
if dpkg -i "$deb" >"$work/dpkg-i.log" 2>&1; then
    installed=1
    pass "dpkg -i $(basename "$deb")"
else
    installed=1
    fail "dpkg -i"
    sed 's/^/    | /' "$work/dpkg-i.log"
    exit 1
fi

if entry=$(getent passwd postern); then
    IFS=: read -r _ _ uid gid gecos home shell <<<"$entry"
    if ((uid < 1000)) && [[ "$home" == /nonexistent && "$shell" == /usr/sbin/nologin ]] &&
        [[ "$(getent group postern | cut -d: -f3)" == "$gid" ]]; then
        pass "account postern: system uid $uid, group postern ($gid), home $home, shell $shell"
    else
        fail "account postern: $entry"
    fi
else
    fail "account postern does not exist"
    uid=""
fi

modes_ok=1
while read -r path want; do
    got=$(stat -c '%U:%G:%a' "$path" 2>&1)
    if [[ "$got" != "$want" ]]; then
        note "$path: $got, want $want"
        modes_ok=0
    fi
done <<'EOF'
/usr/sbin/postern root:root:755
/etc/postern root:postern:750
/etc/postern/postern.toml root:postern:640
/etc/postern/mappings.tsv root:postern:640
/lib/systemd/system/postern.service root:root:644
/lib/systemd/system/postern.socket root:root:644
/lib/systemd/system/postern-activated.service root:root:644
/usr/lib/sysusers.d/postern.conf root:root:644
/usr/lib/tmpfiles.d/postern.conf root:root:644
/usr/share/man/man8/postern.8.gz root:root:644
/usr/share/man/man5/postern.toml.5.gz root:root:644
/run/postern root:root:755
EOF
if ((modes_ok)); then
    pass "files, owners and modes (stat -c %U:%G:%a): binary, /etc/postern 750 and its files 640 root:postern, units, sysusers, tmpfiles, man pages, /run/postern"
else
    fail "files, owners and modes"
fi
check "conffiles: /etc/postern/postern.toml and /etc/postern/mappings.tsv" \
    bash -c "dpkg-query -W -f='\${Conffiles}\n' postern | awk 'NF { print \$1 }' | sort | tr '\n' ' ' | grep -qx '/etc/postern/mappings.tsv /etc/postern/postern.toml '"
check "postern.service enabled (deb-systemd-helper), postern.socket not" \
    bash -c '[[ -L /etc/systemd/system/multi-user.target.wants/postern.service && ! -e /etc/systemd/system/sockets.target.wants/postern.socket ]]'
check "man pages: postern(8) and postern.toml(5) are roff" \
    bash -c 'zcat /usr/share/man/man8/postern.8.gz | grep -q "^\.TH POSTERN 8" && zcat /usr/share/man/man5/postern.toml.5.gz | grep -q "^\.TH POSTERN.TOML 5" && zcat /usr/share/man/man5/postern.toml.5.gz | grep -q "listener.<name>"'
check "/usr/sbin/postern check-config /etc/postern/postern.toml exits 0" \
    /usr/sbin/postern check-config /etc/postern/postern.toml
if systemd-analyze verify /lib/systemd/system/postern.service /lib/systemd/system/postern-activated.service \
    /lib/systemd/system/postern.socket >"$work/verify.log" 2>&1; then
    pass "systemd-analyze verify: the installed units"
else
    fail "systemd-analyze verify"
    sed 's/^/    | /' "$work/verify.log"
fi
score_check /lib/systemd/system/postern.service "$MAX_EXPOSURE_SELF_BIND"
score_check /lib/systemd/system/postern-activated.service "$MAX_EXPOSURE_ACTIVATED"

# ---- run the installed binary -----------------------------------------------------------
# The shipped configuration, on a free loopback port, with a private control socket (a
# postern.service that systemd may have started from the package keeps its own).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sock=$work/control.sock
sed -e "s|^bind = \[\"127.0.0.1:10143\"\]|bind = [\"127.0.0.1:$port\"]|" \
    -e 's|^#workers = 2|workers = 2|' \
    -e "s|^control_socket = .*|control_socket = \"$sock\"|" \
    /etc/postern/postern.toml >"$work/postern.toml"
chmod 0644 "$work/postern.toml"
# A stand-in for systemd's notification socket (Type=notify, WatchdogSec=), writable by
# the service account the supervisor drops to.
python3 - "$work/notify.sock" "$work/notify.log" <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
with open(sys.argv[2], "a", buffering=1) as log:
    while True:
        log.write(s.recv(4096).decode(errors="replace").strip().replace("\n", " ") + "\n")
PY
notify_pid=$!
deadline=$((SECONDS + 10))
until [[ -S "$work/notify.sock" ]] || ((SECONDS >= deadline)); do sleep 0.1; done
NOTIFY_SOCKET=$work/notify.sock WATCHDOG_USEC=1000000 \
    /usr/sbin/postern run --config "$work/postern.toml" >"$work/postern.log" 2>&1 &
sup_pid=$!
deadline=$((SECONDS + 30))
until /usr/sbin/postern status --socket "$sock" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)) || ! kill -0 "$sup_pid" 2>/dev/null; then
        break
    fi
    sleep 0.2
done
if /usr/sbin/postern status --socket "$sock" --json >"$work/status.json" 2>&1; then
    pass "postern run as root (pid $sup_pid) on 127.0.0.1:$port: postern status exits 0"
else
    fail "postern run: status never reported every pool running"
    sed 's/^/    | /' "$work/status.json" "$work/postern.log"
fi
# Every process from /proc: supervisor and workers run as the postern account.
if python3 - "$work/status.json" "${uid:-x}" "$sup_pid" "$port" >"$work/procs.txt" 2>&1 <<'PY'; then
import json, sys
report = json.load(open(sys.argv[1]))
uid, sup, port = sys.argv[2], int(sys.argv[3]), sys.argv[4]
def uids(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Uid:"):
            return line.split()[1:]
problems = []
if report["supervisor_pid"] != sup or report["user"] != "postern":
    problems.append(f"supervisor {report['supervisor_pid']} user {report['user']}")
pids = [sup]
for pool in report["pools"]:
    if pool["state"] != "running" or not any(a.endswith(f":{port}") for a in pool["addrs"]):
        problems.append(f"pool {pool['listener']}: {pool['state']} {pool['addrs']}")
    workers = [w for w in pool["workers"] if w["phase"] == "ready"]
    if len(workers) != 2:
        problems.append(f"pool {pool['listener']}: {len(workers)} ready workers, want 2")
    pids += [w["pid"] for w in workers]
for pid in pids:
    got = uids(pid)
    print(f"pid {pid}: Uid {' '.join(got)}")
    if got != [uid] * 4:
        problems.append(f"pid {pid} runs as uid {got}, want {uid}")
if problems:
    sys.exit("; ".join(problems))
PY
    pass "supervisor and its 2 workers run as postern (uid $uid, from /proc/PID/status)"
    sed 's/^/    /' "$work/procs.txt"
else
    fail "processes and their uids"
    sed 's/^/    | /' "$work/procs.txt"
fi
sleep 1.2 # two watchdog periods of WATCHDOG_USEC/2
kill -TERM "$sup_pid" 2>/dev/null
deadline=$((SECONDS + 40))
while kill -0 "$sup_pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.1
done
if kill -0 "$sup_pid" 2>/dev/null; then
    fail "postern still runs 40 s after SIGTERM; killing it"
    kill -KILL "$sup_pid"
    wait "$sup_pid" 2>/dev/null
else
    wait "$sup_pid"
    rc=$?
    if ((rc == 0)); then
        pass "SIGTERM: postern exited 0"
    else
        fail "SIGTERM: postern exited $rc"
        sed 's/^/    | /' "$work/postern.log"
    fi
fi
sup_pid=""
sleep 0.2
kill -TERM "$notify_pid" 2>/dev/null
wait "$notify_pid" 2>/dev/null
notify_pid=""
if grep -qx 'READY=1' "$work/notify.log" && grep -qx 'STATUS=2/2 workers ready' "$work/notify.log" &&
    (($(grep -cx 'WATCHDOG=1' "$work/notify.log") >= 2)) && grep -qx 'STOPPING=1' "$work/notify.log"; then
    pass "sd_notify: READY=1, STATUS=2/2 workers ready, WATCHDOG=1 every WatchdogSec/2, STOPPING=1"
else
    fail "sd_notify messages"
    sed 's/^/    | /' "$work/notify.log"
fi

# ---- purge ------------------------------------------------------------------------------
if dpkg --purge postern >"$work/purge.log" 2>&1; then
    installed=0
    pass "dpkg --purge postern"
else
    fail "dpkg --purge postern"
    sed 's/^/    | /' "$work/purge.log"
fi
left=()
dpkg-query -W postern >/dev/null 2>&1 && left+=("the package in dpkg's database")
for path in /usr/sbin/postern /etc/postern /run/postern /lib/systemd/system/postern.service \
    /lib/systemd/system/postern.socket /lib/systemd/system/postern-activated.service \
    /usr/lib/sysusers.d/postern.conf /usr/lib/tmpfiles.d/postern.conf /usr/share/doc/postern \
    /usr/share/man/man8/postern.8.gz /usr/share/man/man5/postern.toml.5.gz; do
    [[ -e "$path" || -L "$path" ]] && left+=("$path")
done
while read -r path; do
    left+=("$path")
done < <(find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \
    /var/lib/systemd/deb-systemd-helper-masked -name '*postern*' 2>/dev/null)
if ((account_before == 0)); then
    getent passwd postern >/dev/null && left+=("the postern account")
    getent group postern >/dev/null && left+=("the postern group")
fi
if [[ -n "${uid:-}" ]] && ps -eo uid= | awk -v u="$uid" '$1 == u { found = 1 } END { exit !found }'; then
    left+=("a process of uid $uid")
fi
if ((${#left[@]} == 0)); then
    pass "after purge nothing is left: files, /etc/postern, /run/postern, unit state, account, processes"
else
    fail "left after purge: ${left[*]}"
fi

echo "packaging: $passed passed, $failed failed"
((failed == 0))

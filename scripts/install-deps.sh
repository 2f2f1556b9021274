#!/usr/bin/env bash
# Installs everything postern's tests and demo need on Debian 12, as root. Idempotent:
# packages already installed are left alone, and `apt-get update` runs only when
# something is missing.
#
#   sudo scripts/install-deps.sh          # install
#   scripts/install-deps.sh --check       # list what is missing, change nothing (any user)
#
# Installing Dovecot does not start the system Dovecot: services are held back with a
# temporary policy-rc.d during the install (the tests and the demo run their own
# Dovecot instances on free loopback ports with private configs). A Dovecot that was
# already running is not touched.
#
# It also creates the throwaway system accounts the tests use (no home, no login):
#   postern-test  the account postern drops to in tests and in the demo
#   postern-mail  owner of the mail stored by the private Dovecot instances
set -euo pipefail

PACKAGES=(
    # the real backend
    dovecot-core dovecot-lmtpd dovecot-imapd dovecot-pop3d dovecot-submissiond
    dovecot-managesieved dovecot-sieve sieve-connect
    # real clients and tools the tests and the demo call
    python3 curl openssl iproute2 procps util-linux ca-certificates
    # systemd-socket-activate, the real activator for the socket-activation test
    systemd
    # building postern (the C parts of ring; cargo's git)
    gcc libc6-dev make pkg-config git
    # packaging tests: lint the .deb, read the .rpm, strip the binary for it
    lintian rpm binutils
)
ACCOUNTS=(postern-test postern-mail)
# rust-version in Cargo.toml
MIN_RUST="1.85"

log() { printf 'install-deps: %s\n' "$*" >&2; }

missing_packages() {
    local p status
    for p in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [[ "$status" == "installed" ]] || printf '%s\n' "$p"
    done
}

missing_accounts() {
    local a
    for a in "${ACCOUNTS[@]}"; do
        getent passwd "$a" >/dev/null || printf '%s\n' "$a"
    done
}

find_cargo() {
    if command -v cargo >/dev/null 2>&1; then
        command -v cargo
    elif [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
        printf '%s\n' "${CARGO_HOME:-$HOME/.cargo}/bin/cargo"
    fi
}

rust_ok() {
    local cargo version
    cargo=$(find_cargo)
    [[ -n "$cargo" ]] || return 1
    version=$("$cargo" --version 2>/dev/null | awk '{print $2}')
    [[ -n "$version" ]] || return 1
    # true when MIN_RUST <= version
    [[ "$(printf '%s\n%s\n' "$MIN_RUST" "$version" | sort -V | head -n1)" == "$MIN_RUST" ]]
}

if [[ "${1:-}" == "--check" ]]; then
    mapfile -t pkgs < <(missing_packages)
    mapfile -t accts < <(missing_accounts)
    ((${#pkgs[@]})) && log "missing packages: ${pkgs[*]}"
    ((${#accts[@]})) && log "missing accounts: ${accts[*]}"
    rust_ok || log "missing: Rust toolchain >= $MIN_RUST (cargo)"
    if ((${#pkgs[@]} == 0 && ${#accts[@]} == 0)) && rust_ok; then
        log "everything is installed"
        exit 0
    fi
    exit 1
fi

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (it installs packages and creates accounts); try: sudo $0"
    log "or '$0 --check' to see what is missing"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

mapfile -t pkgs < <(missing_packages)
if ((${#pkgs[@]})); then
    log "installing: ${pkgs[*]}"
    # Keep package scripts from starting services (Debian's policy-rc.d protocol),
    # unless the administrator already has a policy in place.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# temporary, from postern scripts/install-deps.sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
    if [[ -e "$policy" ]] && grep -q 'postern scripts/install-deps.sh' "$policy"; then
        rm -f "$policy"
        trap - EXIT
    fi
else
    log "packages: all present"
fi

for a in "${ACCOUNTS[@]}"; do
    if ! getent passwd "$a" >/dev/null; then
        log "creating system account $a"
        useradd --system --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --user-group "$a" ||
            getent passwd "$a" >/dev/null
    fi
done

if ! rust_ok; then
    # Debian 12's own rustc is older than postern's rust-version, so use rustup.
    log "no Rust toolchain >= $MIN_RUST found; installing one with rustup"
    if ! command -v curl >/dev/null; then
        log "curl is missing; cannot fetch rustup"
        exit 1
    fi
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --default-toolchain stable
    log "Rust installed in ${CARGO_HOME:-$HOME/.cargo}/bin"
fi

log "done"

#!/usr/bin/env bash
# The one test command: installs what the tests need (when root), then runs every test
# in the workspace with `cargo test`, then the packaging tests
# (packaging/test-packages.sh: build the .deb and .rpm, install, run, purge), and prints
# a summary.
#
#   sudo scripts/test.sh            # everything, including the tests that need root
#   scripts/test.sh                 # as a user: root-only tests print "skipped: ..."
#   scripts/test.sh -- proxy_protocol   # extra arguments go to `cargo test` (and leave
#                                       # the packaging tests out)
#
# Environment: CARGO_TARGET_DIR (default: target/), POSTERN_LOG (log filter for the
# postern processes the tests start), POSTERN_TEST_JOBS (test threads per binary),
# POSTERN_TEST_PACKAGES (1: run the packaging tests even with extra arguments; 0: never).
set -uo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf '==> %s\n' "$*"; }

if [[ $(id -u) -eq 0 ]]; then
    say "installing test dependencies (scripts/install-deps.sh)"
    scripts/install-deps.sh || { say "install-deps failed"; exit 1; }
else
    say "not root: dependencies are not installed, and tests that need root will be skipped"
    scripts/install-deps.sh --check || say "continuing without the dependencies listed above"
fi

# rustup installs into ~/.cargo/bin, which a fresh shell may not have on PATH.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { say "cargo not found; run scripts/install-deps.sh as root"; exit 1; }

# The committed Cargo.lock pins every dependency; build exactly that.
locked=()
if [[ -f "$root/Cargo.lock" ]]; then
    locked=(--locked)
fi

[[ "${1:-}" == "--" ]] && shift
extra=("$@")

test_args=(--show-output)
if [[ -n "${POSTERN_TEST_JOBS:-}" ]]; then
    test_args+=(--test-threads "$POSTERN_TEST_JOBS")
fi

say "cargo $(cargo --version | cut -d' ' -f2), running: cargo test --workspace --no-fail-fast ${locked[*]} ${extra[*]}"
log=$(mktemp /tmp/postern-test-log.XXXXXX)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
cargo test --workspace --no-fail-fast "${locked[@]}" "${extra[@]}" -- "${test_args[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

run_packages=1
if ((${#extra[@]})) && [[ "${POSTERN_TEST_PACKAGES:-}" != 1 ]]; then
    run_packages=0
fi
[[ "${POSTERN_TEST_PACKAGES:-}" == 0 ]] && run_packages=0
pkg_status=0
if ((run_packages)); then
    echo
    say "packaging tests: packaging/test-packages.sh"
    packaging/test-packages.sh 2>&1 | tee -a "$log"
    pkg_status=${PIPESTATUS[0]}
else
    say "packaging tests: not run (arguments were given; POSTERN_TEST_PACKAGES=1 runs them)"
fi
took=$(($(date +%s) - start))

# Summary from cargo's own "test result:" lines, plus the tests that skipped.
passed=0 failed=0 ignored=0
while read -r p f i; do
    passed=$((passed + p)) failed=$((failed + f)) ignored=$((ignored + i))
done < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' "$log")
skipped=$(grep -c '^skipped: ' "$log" || true)

echo
say "summary: $passed passed, $failed failed, $ignored ignored; $skipped skipped (printed 'skipped:'), ${took}s"
if grep -q '^packaging: [0-9]* passed' "$log"; then
    say "$(grep '^packaging: [0-9]* passed' "$log" | tail -n1)"
fi
if ((skipped > 0)); then
    grep '^skipped: ' "$log" | sort | uniq -c | sed 's/^/    /'
fi
if grep -q '^failures:' "$log"; then
    say "failed tests:"
    # cargo lists them, indented, right under a "failures:" line.
    awk '/^failures:$/ { f = 1; next } f && /^    [^ ]+$/ { print "  " $1 } /^$/ { f = 0 }' "$log" | sort -u
fi
if grep -q '^FAIL: packaging: ' "$log"; then
    say "failed packaging checks:"
    grep '^FAIL: packaging: ' "$log" | sed 's/^/  /'
fi
if ((status == 0 && pkg_status == 0)); then
    say "OK"
else
    say "FAILED (cargo test exit $status, packaging tests exit $pkg_status)"
    ((status == 0)) && status=$pkg_status
fi
exit "$status"

#!/usr/bin/env bash
# Builds postern's Debian and RPM packages: the one packaging command.
#
#   scripts/package.sh            # -> target/packages/postern_<v>-1_<arch>.deb, postern-<v>-1.<arch>.rpm
#
# It installs the two packagers with `cargo install --locked` when they are missing
# (pinned versions below), builds `cargo build --release --locked`, generates the man
# pages with the binary itself (`postern man`), and runs cargo-deb and
# cargo-generate-rpm with the metadata in Cargo.toml ([package.metadata.deb] and
# [package.metadata.generate-rpm]). Packaging files live in packaging/.
#
# Environment: CARGO_TARGET_DIR (default: target/); PACKAGES_DIR (default:
# $CARGO_TARGET_DIR/packages).
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf 'package: %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { say "cargo not found; run scripts/install-deps.sh as root"; exit 1; }

# installed_version TOOL: the version `cargo TOOL --version` reports, or nothing.
installed_version() { cargo "$1" --version 2>/dev/null | awk '{print $2}'; }

ensure_tool() {
    local crate=$1 tool=$2 version=$3
    if [[ "$(installed_version "$tool")" != "$version" ]]; then
        say "installing $crate $version (cargo install --locked)"
        cargo install --locked --quiet "$crate" --version "$version"
    fi
}
ensure_tool cargo-deb deb "$CARGO_DEB_VERSION"
ensure_tool cargo-generate-rpm generate-rpm "$CARGO_GENERATE_RPM_VERSION"

target=${CARGO_TARGET_DIR:-$root/target}
target=$(realpath -m "$target")
export CARGO_TARGET_DIR=$target
out=${PACKAGES_DIR:-$target/packages}
mkdir -p "$out"

say "cargo build --release --locked (target dir $target)"
cargo build --release --locked -p postern

release=$target/release
say "man pages: postern(8), postern.toml(5)"
rm -rf "$release/man"
"$release/postern" man --out "$release/man" >/dev/null
gzip -9 -n -f "$release/man/postern.8" "$release/man/postern.toml.5"

# cargo-deb strips its own copy; cargo-generate-rpm packages the file as it is.
mkdir -p "$release/pkg"
strip --strip-all -o "$release/pkg/postern" "$release/postern"

say "cargo deb"
rm -f "$out"/postern_*.deb "$out"/postern-*.rpm
cargo deb --no-build --locked -p postern --output "$out" >/dev/null
say "cargo generate-rpm"
cargo generate-rpm -p . --target-dir "$target" --output "$out" >/dev/null

for f in "$out"/postern_*.deb "$out"/postern-*.rpm; do
    say "built $f ($(du -h "$f" | cut -f1))"
done

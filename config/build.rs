//! Stamps a build id into the crate, so the supervisor and its workers can check at
//! handshake time that they come from the same build.
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    println!("cargo:rustc-env=POSTERN_BUILD_ID={stamp:x}");
    println!("cargo:rerun-if-changed=src");
}

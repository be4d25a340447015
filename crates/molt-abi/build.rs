//! Records what this build of `molt-abi` was compiled with, so the core and a
//! module can tell whether they were built alike (see `module.rs`).

use std::process::Command;

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown-target".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown rustc".into());
    println!("cargo:rustc-env=MOLT_BUILD_TARGET={target}");
    println!("cargo:rustc-env=MOLT_BUILD_RUSTC={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}

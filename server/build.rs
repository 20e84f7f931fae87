//! Records build facts for `GetIndexInfo`: the target triple, the cargo profile and the rustc
//! version, as compile-time environment variables.

use std::process::Command;

fn main() {
    let get = |name: &str| std::env::var(name).unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=TANDEM_BUILD_TARGET={}", get("TARGET"));
    println!("cargo:rustc-env=TANDEM_BUILD_PROFILE={}", get("PROFILE"));
    let rustc = get("RUSTC");
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".to_string(), |v| v.trim().to_string());
    println!("cargo:rustc-env=TANDEM_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-changed=build.rs");
}

//! Build-time work of the wockd crate: record the git revision for `wockd --version`
//! and the admin view, so a running server says exactly what it is; link flags.
use std::process::Command;

fn main() {
    let rev = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=WOCKD_GIT_REV={rev}");
    // Relative relocations packed (DT_RELR, glibc 2.36+, binutils 2.38+): the dynamic loader
    // reads a few KiB instead of ~0.9 MiB of `.rela.dyn` at every start, pages that stayed
    // resident in every wockd process.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    order_file();
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}

/// Release builds link the functions listed in `scripts/wockd.order` (those that run at start,
/// while idle and on a message's way; `scripts/order-file.sh` makes the list) first and side
/// by side: the kernel maps code 64 KiB around each page that runs, so scattered start-up code
/// kept ~7 MiB of the binary resident in an idle server, grouped it keeps ~1.7 MiB. Only with
/// lld (rustc's default linker on x86_64 Linux since 1.90); `WOCKD_NO_ORDER_FILE=1` turns it off.
fn order_file() {
    println!("cargo:rerun-if-changed=scripts/wockd.order");
    println!("cargo:rerun-if-env-changed=WOCKD_NO_ORDER_FILE");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = std::env::var("TARGET").unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    // A rustflag choosing another linker (or turning lld off) makes lld's flag an error.
    let other_linker = ["linker", "fuse-ld", "link-self-contained"]
        .iter()
        .any(|f| flags.contains(f))
        || std::env::vars().any(|(k, _)| k.starts_with("CARGO_TARGET_") && k.ends_with("_LINKER"));
    let off = std::env::var_os("WOCKD_NO_ORDER_FILE").is_some_and(|v| v != "0");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/wockd.order");
    if release
        && target == "x86_64-unknown-linux-gnu"
        && rustc_minor() >= 90
        && self_contained_lld()
        && !other_linker
        && !off
        && path.exists()
    {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            path.display()
        );
        // Names the compiler inlined away or renamed since the list was made are skipped.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// True when the toolchain ships the `ld.lld` wrapper rustc links with by default (official
/// builds do; a distribution's rustc may link with the system `ld`, which lacks the flag).
fn self_contained_lld() -> bool {
    rustc(&["--print", "sysroot"]).is_some_and(|root| {
        std::path::Path::new(root.trim())
            .join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld/ld.lld")
            .exists()
    })
}

/// The minor version of the rustc building this (1.x), 0 if unknown.
fn rustc_minor() -> u32 {
    rustc(&["--version"])
        .and_then(|v| v.split_whitespace().nth(1)?.split('.').nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// What the rustc building this prints with `args`.
fn rustc(args: &[&str]) -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Command::new(rustc).args(args).output().ok()?;
    String::from_utf8(out.stdout).ok()
}

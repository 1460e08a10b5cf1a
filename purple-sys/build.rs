//! Generates the libpurple bindings with bindgen against the system headers.
//!
//! pkg-config finds libpurple (and, through its `Requires:`, GLib), emits the
//! link flags, and hands us the include paths for clang. The bindings are
//! restricted to libpurple's own API (plus the few GLib types it pulls in) so
//! that bindgen and rustc stay fast.

use std::env;
use std::path::PathBuf;

/// Items whose names match this are bound; bindgen adds whatever they refer to.
/// `serv_*` (server.h) and `xmlnode*` (xmlnode.h) are libpurple API that predates
/// the `purple_` prefix.
const ALLOW: &str = "purple_.*|Purple.*|PURPLE_.*|_Purple.*|serv_.*|xmlnode.*|_xmlnode.*|wockd_.*|Wockd.*|proto_chat_entry";

fn main() {
    println!("cargo::rerun-if-changed=wrapper.h");
    println!("cargo::rerun-if-changed=shim.h");
    println!("cargo::rerun-if-changed=shim.c");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");

    let purple = match pkg_config::Config::new()
        .atleast_version("2.14")
        .probe("purple")
    {
        Ok(lib) => lib,
        Err(e) => panic!(
            "\n\npurple-sys: could not find libpurple >= 2.14 with pkg-config:\n{e}\n\n\
             Install the build dependencies with `scripts/install-deps.sh`\n\
             (on Debian/Ubuntu: apt-get install libpurple-dev libglib2.0-dev libclang-dev pkg-config).\n\n"
        ),
    };

    // Let dependents (`links = "purple"`) see the include paths as DEP_PURPLE_INCLUDE.
    let include = env::join_paths(&purple.include_paths).expect("include path with a separator");
    println!("cargo::metadata=include={}", include.to_string_lossy());

    // The va_list shim (see shim.h), compiled against the same headers.
    let mut cc = cc::Build::new();
    cc.file("shim.c").include(".").warnings(true);
    for p in &purple.include_paths {
        cc.include(p);
    }
    for (k, v) in &purple.defines {
        cc.define(k, v.as_deref());
    }
    cc.compile("wockd_purple_shim");

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_arg("-I.")
        .clang_args(
            purple
                .include_paths
                .iter()
                .map(|p| format!("-I{}", p.display())),
        )
        .clang_args(purple.defines.iter().map(|(k, v)| match v {
            Some(v) => format!("-D{k}={v}"),
            None => format!("-D{k}"),
        }))
        .allowlist_function(ALLOW)
        .allowlist_type(ALLOW)
        .allowlist_var(ALLOW)
        .allowlist_recursively(true)
        .layout_tests(false)
        .derive_default(true)
        .generate_comments(false)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .size_t_is_usize(true)
        // Re-run on bindgen's environment variables (LIBCLANG_PATH, BINDGEN_EXTRA_CLANG_ARGS…);
        // the system headers themselves only change with a package upgrade.
        .parse_callbacks(Box::new(
            bindgen::CargoCallbacks::new().rerun_on_header_files(false),
        ))
        .generate()
        .expect("bindgen failed to generate libpurple bindings (is libclang installed? see scripts/install-deps.sh)");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("bindings.rs");
    bindings
        .write_to_file(&out)
        .expect("could not write bindings.rs");
}

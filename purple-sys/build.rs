//! Generates the libpurple bindings with bindgen against the system headers.
//!
//! pkg-config finds libpurple (and, through its `Requires:`, GLib) and hands us
//! the include paths for clang. The bindings are restricted to libpurple's own
//! API (plus the few GLib types it pulls in) so that bindgen and rustc stay fast.
//!
//! libpurple is **not linked**: a process that does not run the IM transport
//! (the main wockd with `process = "separate"`, or the transport turned off)
//! must not map libpurple and the twenty-odd libraries it pulls in (libxml2,
//! ICU, libstdc++, GStreamer, D-Bus…). The functions wockd calls are listed in
//! `FUNCTIONS`; for each of them this script turns bindgen's `extern "C"`
//! declaration into a field of a table filled by `dlopen`/`dlsym` at run time
//! (`purple_sys::load`) and a free function of the same name and signature that
//! calls through the table, so calling code reads as with linked bindings.

use std::env;
use std::path::PathBuf;

/// The libpurple functions wockd calls. Each is looked up with `dlsym` when the
/// library is loaded, and a missing one makes `load` fail with its name, so the
/// list is the exact API surface wockd needs. Add a name here to call a new one.
const FUNCTIONS: &[&str] = &[
    "purple_account_add_buddy",
    "purple_account_connect",
    "purple_account_disconnect",
    "purple_account_get_connection",
    "purple_account_get_protocol_id",
    "purple_account_get_status_type_with_primitive",
    "purple_account_get_string",
    "purple_account_is_disconnected",
    "purple_account_new",
    "purple_account_option_get_default_bool",
    "purple_account_option_get_default_int",
    "purple_account_option_get_default_list_value",
    "purple_account_option_get_default_string",
    "purple_account_option_get_list",
    "purple_account_option_get_masked",
    "purple_account_option_get_setting",
    "purple_account_option_get_text",
    "purple_account_option_get_type",
    "purple_account_remove_buddy",
    "purple_account_set_bool",
    "purple_account_set_enabled",
    "purple_account_set_int",
    "purple_account_set_password",
    "purple_account_set_remember_password",
    "purple_account_set_status_list",
    "purple_account_set_string",
    "purple_account_user_split_get_default_value",
    "purple_account_user_split_get_separator",
    "purple_account_user_split_get_text",
    "purple_accounts_add",
    "purple_accounts_delete",
    "purple_accounts_find",
    "purple_accounts_set_ui_ops",
    "purple_blist_add_buddy",
    "purple_blist_add_group",
    "purple_blist_get_handle",
    "purple_blist_load",
    "purple_blist_new",
    "purple_blist_remove_buddy",
    "purple_buddy_get_account",
    "purple_buddy_get_alias",
    "purple_buddy_get_group",
    "purple_buddy_get_name",
    "purple_buddy_get_presence",
    "purple_buddy_icon_get_data",
    "purple_buddy_icon_get_extension",
    "purple_buddy_icon_unref",
    "purple_buddy_icons_find",
    "purple_buddy_new",
    "purple_certificate_destroy",
    "purple_certificate_export",
    "purple_certificate_find_pool",
    "purple_certificate_find_scheme",
    "purple_certificate_find_verifier",
    "purple_certificate_import",
    "purple_certificate_pool_contains",
    "purple_certificate_pool_delete",
    "purple_certificate_pool_retrieve",
    "purple_certificate_pool_store",
    "purple_certificate_register_verifier",
    "purple_certificate_unregister_verifier",
    "purple_certificate_verify_complete",
    "purple_connection_error_is_fatal",
    "purple_connection_error_reason",
    "purple_connection_get_account",
    "purple_connection_get_display_name",
    "purple_connection_get_protocol_data",
    "purple_connection_get_prpl",
    "purple_connection_get_state",
    "purple_connections_set_ui_ops",
    "purple_conv_chat_get_nick",
    "purple_conv_chat_get_users",
    "purple_conv_chat_send",
    "purple_conv_im_send",
    "purple_conversation_destroy",
    "purple_conversation_get_account",
    "purple_conversation_get_chat_data",
    "purple_conversation_get_im_data",
    "purple_conversation_get_name",
    "purple_conversation_get_type",
    "purple_conversation_new",
    "purple_conversations_get_handle",
    "purple_conversations_set_ui_ops",
    "purple_core_init",
    "purple_core_set_ui_ops",
    "purple_debug_set_enabled",
    "purple_debug_set_ui_ops",
    "purple_debug_set_unsafe",
    "purple_debug_set_verbose",
    "purple_dnsquery_get_host",
    "purple_dnsquery_get_port",
    "purple_dnsquery_set_ui_ops",
    "purple_eventloop_set_ui_ops",
    "purple_find_buddies",
    "purple_find_buddy",
    "purple_find_conversation_with_account",
    "purple_find_group",
    "purple_find_prpl",
    "purple_group_get_name",
    "purple_group_new",
    "purple_markup_html_to_xhtml",
    "purple_markup_strip_html",
    "purple_notify_set_ui_ops",
    "purple_prefs_set_bool",
    "purple_prefs_set_string",
    "purple_presence_get_active_status",
    "purple_presence_is_online",
    "purple_request_close",
    "purple_request_field_bool_get_default_value",
    "purple_request_field_bool_set_value",
    "purple_request_field_choice_get_default_value",
    "purple_request_field_choice_get_labels",
    "purple_request_field_choice_set_value",
    "purple_request_field_get_id",
    "purple_request_field_get_label",
    "purple_request_field_get_type",
    "purple_request_field_group_get_fields",
    "purple_request_field_int_get_default_value",
    "purple_request_field_int_set_value",
    "purple_request_field_is_required",
    "purple_request_field_string_get_default_value",
    "purple_request_field_string_is_masked",
    "purple_request_field_string_set_value",
    "purple_request_fields_get_groups",
    "purple_request_set_ui_ops",
    "purple_roomlist_get_fields",
    "purple_roomlist_get_list",
    "purple_roomlist_ref",
    "purple_roomlist_room_get_fields",
    "purple_roomlist_room_get_name",
    "purple_roomlist_room_get_type",
    "purple_roomlist_set_ui_ops",
    "purple_roomlist_unref",
    "purple_set_blist",
    "purple_signal_connect",
    "purple_srv_txt_query_set_ui_ops",
    "purple_status_get_attr_string",
    "purple_status_get_type",
    "purple_status_type_get_attr",
    "purple_status_type_get_id",
    "purple_status_type_get_primitive",
    "purple_util_set_user_dir",
    "purple_version_check",
    "serv_join_chat",
    "serv_send_typing",
];

/// Declarations not in `purple.h` that are bound too.
const EXTRA_DECLS: &str = r#"
unsafe extern "C" {
    /// `dbus-server.h` (not included by `purple.h`): unregisters libpurple's D-Bus service,
    /// which `purple_core_init` starts when the Debian build finds a session bus. A no-op when
    /// no bus was found.
    pub fn purple_dbus_uninit();
}
"#;

/// The soname `load` opens: libpurple 2.x has had ABI 0 since 2.0.
const SONAME: &str = "libpurple.so.0";

/// Types and constants whose names match this are bound; bindgen adds whatever they refer to.
/// `serv_*` (server.h) and `xmlnode*` (xmlnode.h) are libpurple API that predates
/// the `purple_` prefix.
const ALLOW: &str = "purple_.*|Purple.*|PURPLE_.*|_Purple.*|serv_.*|xmlnode.*|_xmlnode.*|wockd_.*|Wockd.*|proto_chat_entry";

fn main() {
    println!("cargo::rerun-if-changed=wrapper.h");
    println!("cargo::rerun-if-changed=shim.h");
    println!("cargo::rerun-if-changed=shim.c");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");

    // Include paths only: no link flags, libpurple is opened at run time.
    let purple = match pkg_config::Config::new()
        .atleast_version("2.14")
        .cargo_metadata(false)
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
        .allowlist_function(format!("wockd_.*|{}", FUNCTIONS.join("|")))
        .allowlist_type(ALLOW)
        .allowlist_var(ALLOW)
        // Variables would need linking; `load` reads the three version numbers with dlsym.
        .blocklist_item("purple_(major|minor|micro)_version")
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

    let code = format!("{bindings}{EXTRA_DECLS}");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("bindings.rs");
    std::fs::write(&out, dynamic(&code)).expect("could not write bindings.rs");
}

/// Rewrites bindgen's output so that every libpurple function is called through a table
/// loaded at run time. `wockd_*` functions (shim.c, linked statically) stay `extern "C"`.
fn dynamic(code: &str) -> String {
    use quote::{format_ident, quote};
    use syn::{FnArg, ForeignItem, Item};

    let file: syn::File = syn::parse_str(code).expect("bindgen output parses");
    let mut kept = Vec::new();
    let mut fns = Vec::new();
    for item in file.items {
        match item {
            Item::ForeignMod(mut block) => {
                let mut rest = Vec::new();
                for fi in block.items {
                    match fi {
                        ForeignItem::Fn(f) if !f.sig.ident.to_string().starts_with("wockd_") => {
                            fns.push(f)
                        }
                        other => rest.push(other),
                    }
                }
                if !rest.is_empty() {
                    block.items = rest;
                    kept.push(Item::ForeignMod(block));
                }
            }
            other => kept.push(other),
        }
    }
    let mut found: Vec<String> = fns.iter().map(|f| f.sig.ident.to_string()).collect();
    found.sort();
    let mut wanted: Vec<String> = FUNCTIONS.iter().map(|s| s.to_string()).collect();
    wanted.push("purple_dbus_uninit".into());
    wanted.sort();
    assert_eq!(
        found, wanted,
        "every listed function is declared once in the headers"
    );

    let mut fields = Vec::new();
    let mut loads = Vec::new();
    let mut wrappers = Vec::new();
    for f in &fns {
        let name = &f.sig.ident;
        assert!(
            f.sig.variadic.is_none(),
            "{name} is variadic: no wrapper possible"
        );
        let tys: Vec<_> = f
            .sig
            .inputs
            .iter()
            .map(|a| match a {
                FnArg::Typed(t) => t.ty.clone(),
                FnArg::Receiver(_) => unreachable!("extern fn with self"),
            })
            .collect();
        let args: Vec<_> = (0..tys.len()).map(|i| format_ident!("a{i}")).collect();
        let output = &f.sig.output;
        let ty = quote! { unsafe extern "C" fn(#(#tys),*) #output };
        let cname = syn::LitByteStr::new(
            format!("{name}\0").as_bytes(),
            proc_macro2::Span::call_site(),
        );
        let attrs = &f.attrs;
        fields.push(quote! { pub #name: #ty, });
        loads.push(quote! { #name: sym::<#ty>(lib, #cname)?, });
        wrappers.push(quote! {
            #(#attrs)*
            #[inline]
            pub unsafe fn #name(#(#args: #tys),*) #output {
                unsafe { (api().#name)(#(#args),*) }
            }
        });
    }
    let soname = SONAME;
    quote! {
        #(#kept)*

        /// libpurple's functions, as found by `dlsym` in the loaded library.
        pub struct Api {
            #(#fields)*
            pub major_version: u32,
            pub minor_version: u32,
            pub micro_version: u32,
        }

        /// The soname `load` opens.
        pub const SONAME: &str = #soname;

        /// Fills the table from `lib`; the error names the first symbol missing.
        unsafe fn load_api(lib: &::libloading::Library) -> Result<Api, String> {
            unsafe fn sym<T: Copy>(lib: &::libloading::Library, name: &[u8]) -> Result<T, String> {
                match unsafe { lib.get::<T>(name) } {
                    Ok(s) => Ok(*s),
                    Err(e) => Err(e.to_string()),
                }
            }
            unsafe fn var(lib: &::libloading::Library, name: &[u8]) -> Result<u32, String> {
                // SAFETY: the symbol is an `extern const guint` libpurple initialises statically.
                unsafe { sym::<*const u32>(lib, name).map(|p| *p) }
            }
            unsafe {
                Ok(Api {
                    #(#loads)*
                    major_version: var(lib, b"purple_major_version\0")?,
                    minor_version: var(lib, b"purple_minor_version\0")?,
                    micro_version: var(lib, b"purple_micro_version\0")?,
                })
            }
        }

        #(#wrappers)*
    }
    .to_string()
}

//! Builds the kernel's `lib/maple_tree.c` with the kernel's userspace
//! harness (`tools/testing/shared`, `tools/include`, liburcu) and our C
//! driver (`csrc/dp_maple.c`), from a kernel tree found at build time:
//!
//! 1. `KERNEL_SRC`, if set (it must then hold `lib/maple_tree.c`);
//! 2. else `target/kernel-src/linux-source-6.12`, the cache that
//!    `ci/kernel-src.sh` fills.
//!
//! Without either (or without liburcu's headers) nothing is compiled and
//! the crate gets `--cfg devpriv_kernel_oracle_missing`: it builds, and
//! every tree constructor reports the tree as unavailable.
//!
//! Flavours: debug builds (`opt-level` 0, as `cargo test`) compile the
//! check flavour: `-O1`, `CONFIG_DEBUG_MAPLE_TREE` (the kernel's own
//! `MT_BUG_ON` checks and `mt_validate()`), and `UBSan` trapping on the first
//! undefined behaviour (no runtime needed). `DEVPRIV_KERNEL_ASAN=1` adds
//! `AddressSanitizer` and `UBSan`'s runtime (messages instead of a bare trap);
//! it links the sanitizer runtime into this package's tests only, so use it
//! with `cargo test -p devpriv-kernel-oracle`. Optimised builds (release,
//! bench) compile the production configuration at `-O2`, no sanitizers.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

const MISSING: &str = "devpriv_kernel_oracle_missing";

/// The kernel files the build reads: a change to any rebuilds the tree.
const KERNEL_FILES: [&str; 4] = [
    "lib/maple_tree.c",
    "include/linux/maple_tree.h",
    "tools/testing/shared/linux.c",
    "tools/testing/shared/shared.h",
];

fn main() {
    println!("cargo::rustc-check-cfg=cfg({MISSING})");
    println!("cargo::rerun-if-env-changed=KERNEL_SRC");
    println!("cargo::rerun-if-env-changed=DEVPRIV_KERNEL_ASAN");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=csrc");

    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest.join("../..");
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    let ksrc = match env::var_os("KERNEL_SRC").filter(|s| !s.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("lib/maple_tree.c").is_file(),
                "KERNEL_SRC={} has no lib/maple_tree.c",
                dir.display()
            );
            dir
        }
        None => {
            let cache = workspace.join("target/kernel-src/linux-source-6.12");
            // The stamp appears when ci/kernel-src.sh finishes; until then
            // this always reruns (cheap), so a later extraction is seen.
            println!(
                "cargo::rerun-if-changed={}",
                cache.join(".devpriv-stamp").display()
            );
            cache
        }
    };
    if !ksrc.join("lib/maple_tree.c").is_file() {
        return missing("no kernel source (run ci/kernel-src.sh)");
    }
    if !have_header("urcu.h") {
        return missing(
            "no liburcu headers (run ci/kernel-src.sh, or apt-get install liburcu-dev)",
        );
    }
    for f in KERNEL_FILES {
        println!("cargo::rerun-if-changed={}", ksrc.join(f).display());
    }
    build(&ksrc);
}

/// `true` if the C compiler finds `<name>`.
fn have_header(name: &str) -> bool {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let probe = out.join("probe.c");
    fs::write(&probe, format!("#include <{name}>\n")).expect("OUT_DIR is writable");
    let compiler = cc::Build::new().cargo_metadata(false).get_compiler();
    compiler
        .to_command()
        .arg("-E")
        .arg(&probe)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn missing(why: &str) {
    println!("cargo::rustc-cfg={MISSING}");
    println!("cargo::rustc-env=DEVPRIV_KERNEL_ORACLE_MISSING={why}");
}

fn build(ksrc: &Path) {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    // The harness's generated headers (tools/testing/shared/shared.mk).
    let gen_dir = out.join("generated");
    fs::create_dir_all(&gen_dir).expect("OUT_DIR is writable");
    fs::copy(
        ksrc.join("tools/testing/shared/autoconf.h"),
        gen_dir.join("autoconf.h"),
    )
    .expect("tools/testing/shared/autoconf.h");
    fs::write(gen_dir.join("bit-length.h"), "#define CONFIG_64BIT 1\n").expect("write");
    fs::write(gen_dir.join("map-shift.h"), "#define XA_CHUNK_SHIFT 3\n").expect("write");

    let check = env::var("OPT_LEVEL").as_deref() == Ok("0");
    let asan = check && env::var("DEVPRIV_KERNEL_ASAN").as_deref() == Ok("1");
    let maple_c = ksrc.join("lib/maple_tree.c");

    let mut b = cc::Build::new();
    b.file("csrc/dp_maple.c")
        .file(ksrc.join("tools/testing/shared/linux.c"))
        .include("csrc")
        .include(&out)
        .include(ksrc.join("tools/testing/shared"))
        .include(ksrc.join("tools/include"))
        .define("_LGPL_SOURCE", None)
        .define(
            "DP_MAPLE_TREE_C",
            format!("\"{}\"", maple_c.display()).as_str(),
        )
        // The kernel is built with these; its code relies on them.
        .flag("-fno-strict-aliasing")
        .flag("-fno-strict-overflow")
        .flag("-fno-delete-null-pointer-checks")
        // Linked into executables only: thread-locals (liburcu's reader
        // state, ours) without __tls_get_addr calls, as in the harness's
        // own (non-PIC) build.
        .flag("-ftls-model=initial-exec")
        // Kernel code, not ours: its warnings are not ours to fix.
        .warnings(false)
        .flag("-w");
    if check {
        b.opt_level(1).debug(true).define("DP_CHECK", None);
        if asan {
            b.flag("-fsanitize=address,undefined")
                .flag("-fno-omit-frame-pointer")
                .define("DP_ASAN", None)
                .define("DP_UBSAN", None);
            // The runtimes, first among the dynamic libraries (ASan
            // insists on being loaded first); rustc links with
            // -nodefaultlibs, so -fsanitize alone would not add them.
            println!("cargo::rustc-link-lib=dylib=asan");
            println!("cargo::rustc-link-lib=dylib=ubsan");
        } else {
            b.flag("-fsanitize=undefined")
                .flag("-fsanitize-undefined-trap-on-error")
                .define("DP_UBSAN", None);
        }
    } else {
        b.opt_level(2).debug(false);
    }
    b.compile("devpriv_maple");
    println!("cargo::rustc-link-lib=urcu");
    println!("cargo::rustc-link-lib=pthread");
    println!(
        "cargo::rustc-env=DEVPRIV_KERNEL_ORACLE_SRC={}",
        ksrc.display()
    );
}

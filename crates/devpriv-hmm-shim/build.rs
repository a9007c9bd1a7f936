//! Compiles `csrc/variadic.c`: the variadic entry points (`open`,
//! `openat`, `ioctl`, `mremap`) that stable Rust cannot define. They
//! forward to non-variadic functions in `src/lib.rs`.

fn main() {
    println!("cargo::rerun-if-changed=csrc/variadic.c");
    cc::Build::new()
        .file("csrc/variadic.c")
        .warnings(true)
        .extra_warnings(true)
        .compile("devpriv_shim_variadic");
}

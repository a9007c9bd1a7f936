//! cargo-fuzz target `rangetree_ops`: see `devpriv_fuzz::run_rangetree_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = devpriv_fuzz::run_rangetree_ops(data) {
        panic!("rangetree_ops: {e}");
    }
});
